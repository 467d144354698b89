//! The prepare stage on the offline machine: every device's key and CSR made in parallel, a
//! chunk at a time (memory does not grow with the batch), each key written only into the
//! encrypted key store and each CSR into the carried file. Both files are replaced
//! atomically, the key store first: `csrs.jsonl` exists only once its keys are durable.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;
use indicatif::ProgressBar;

use crate::batch_dir::spec::BatchSpec;
use crate::batch_dir::BatchDir;
use crate::core::carried::{CarriedWriter, CsrLine, CsrsHeader, Kind, CSRS_FILE, FORMAT_VERSION};
use crate::core::devices::{Device, DeviceList};
use crate::core::key_store::{StoreLock, StoreWriter, KEY_STORE_FILE};
use crate::pipeline::prepare;

/// Devices made per parallel step: enough to keep every core busy, few enough to bound memory.
const CHUNK: usize = 4096;

/// What a prepare run made.
pub struct Prepared {
    pub devices: usize,
    pub seconds: f64,
    /// The CSR file's checksum (its end line's `sha256`).
    pub csrs_sha256: String,
}

/// Makes the keys and CSRs of `devices` into `dir`'s key store and CSR file. `spec` carries
/// the batch id.
pub fn prepare_batch(
    dir: &BatchDir,
    spec: &BatchSpec,
    devices: &DeviceList,
    lock: &StoreLock,
    bar: &ProgressBar,
) -> Result<Prepared> {
    let started = Instant::now();
    let batch_id = spec
        .batch_id
        .clone()
        .expect("an air-gapped batch has an id");
    let header = CsrsHeader {
        claimfab: Kind::Csrs.tag().to_string(),
        version: FORMAT_VERSION,
        batch_id: batch_id.clone(),
        batch: spec.clone(),
    };
    let mut csrs_sha256 = String::new();
    dir.write_atomic_with(CSRS_FILE, 0o644, |out| {
        let mut csrs = CarriedWriter::new(out, Kind::Csrs, &header)?;
        dir.write_atomic_with(KEY_STORE_FILE, 0o600, |store_out| {
            let mut store = StoreWriter::new(store_out, lock, &batch_id)?;
            write_devices(devices, spec, &mut store, &mut csrs, bar)?;
            store.finish().map(drop)
        })
        .map_err(std::io::Error::other)?;
        csrs_sha256 = csrs.finish()?.1;
        Ok(())
    })?;
    Ok(Prepared {
        devices: devices.len(),
        seconds: started.elapsed().as_secs_f64(),
        csrs_sha256,
    })
}

/// Keys and CSRs a chunk at a time: made in parallel, written in batch order.
fn write_devices(
    devices: &DeviceList,
    spec: &BatchSpec,
    store: &mut StoreWriter<impl Write>,
    csrs: &mut CarriedWriter<impl Write>,
    bar: &ProgressBar,
) -> std::io::Result<()> {
    let mut all = devices.iter().peekable();
    while all.peek().is_some() {
        let chunk: Vec<Device> = all.by_ref().take(CHUNK).collect();
        for prepared in prepare(&chunk, spec.key_algorithm) {
            store.add(&prepared.device.serial, &prepared.key)?;
            csrs.line(&CsrLine {
                serial: prepared.device.serial,
                thing_name: prepared.device.thing_name,
                csr: prepared.csr_pem,
            })?;
        }
        bar.inc(chunk.len() as u64);
    }
    Ok(())
}
