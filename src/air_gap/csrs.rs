//! A carried CSR file, read and checked whole before anything is done with it
//! ([`read_csrs`]), then read back a device at a time by the offset of its line
//! ([`CsrFile`]): `register` sends its CSRs, `package` checks each certificate against its
//! device's CSR. Memory holds 8 bytes of offset per device, never the CSRs.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::batch_dir::spec::{devices_fingerprint, BatchSpec};
use crate::core::carried::{CarriedReader, CsrLine, CsrsHeader, Kind};
use crate::core::certificate::{csr_facts, CheckedCsr};
use crate::core::devices::{ClaimScope, DeviceList};
use crate::core::names;
use crate::core::station_config::KeyAlgorithm;
use crate::error::UserError;

/// A CSR file, checked whole: its batch, devices, and where each device's line is.
pub struct CsrBatch {
    pub batch_id: String,
    pub spec: BatchSpec,
    /// The end line's checksum: what `certificates.jsonl` names.
    pub sha256: String,
    pub devices: DeviceList,
    /// Byte offset of each device's line, then of the end line.
    pub offsets: Vec<u64>,
}

/// Whether a CSR file's signatures are checked: a carried one's are (`register`), the one
/// this machine wrote is only parsed (`package` checks certificates against the key store).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signatures {
    Verify,
    Trust,
}

/// Reads and checks a CSR file: its kind, version, batch, every line (serial and thing
/// name valid, no serial twice, CSR for the thing name and, unless trusted, signed by its
/// own key on the batch's curve), the device list against the batch's fingerprint, and its
/// end line.
pub fn read_csrs(path: &Path, signatures: Signatures) -> Result<CsrBatch, UserError> {
    let fail = |line: u64, problem: String| UserError::Carried {
        file: path.to_path_buf(),
        line,
        problem,
    };
    let file =
        File::open(path).map_err(|e| fail(0, format!("cannot be read ({e}); check the path")))?;
    let (mut reader, header): (_, CsrsHeader<BatchSpec>) =
        CarriedReader::open(BufReader::new(file), Kind::Csrs)
            .map_err(|e| fail(e.line, e.problem))?;
    check_header(&header).map_err(|problem| fail(1, problem))?;
    let spec = header.batch;
    let mut devices = DeviceList::default();
    let mut offsets = Vec::with_capacity(spec.device_count.min(1 << 20));
    while let Some(line) = reader
        .next_line::<CsrLine>()
        .map_err(|e| fail(e.line, e.problem))?
    {
        let at = reader.line_number();
        check_line(&line, spec.key_algorithm, signatures)
            .map_err(|problem| fail(at, format!("{}: {problem}", line.serial)))?;
        devices
            .push(&line.serial, &line.thing_name)
            .map_err(|e| fail(at, format!("{e}; carry the file `claimfab prepare` wrote")))?;
        offsets.push(reader.line_start());
    }
    offsets.push(reader.line_start());
    let sha256 = reader.sha256().expect("read to its end").to_string();
    if devices.len() != spec.device_count || devices_fingerprint(&devices) != spec.devices_sha256 {
        return Err(fail(
            reader.line_number(),
            "its devices are not the ones its header's batch was made for: the file was edited; carry the file `claimfab prepare` wrote".into(),
        ));
    }
    Ok(CsrBatch {
        batch_id: header.batch_id,
        spec,
        sha256,
        devices,
        offsets,
    })
}

fn check_header(header: &CsrsHeader<BatchSpec>) -> Result<(), String> {
    let spec = &header.batch;
    if spec.batch_id.as_deref() != Some(header.batch_id.as_str()) {
        return Err("its batch id and its batch's differ: the file was edited; carry the file `claimfab prepare` wrote".into());
    }
    if spec.claim_scope != ClaimScope::Device
        || !spec.encrypt_to.is_empty()
        || spec.signed_by.is_some()
    {
        return Err("its batch is not one `claimfab prepare` makes (one claim per device, bundles not yet sealed or signed)".into());
    }
    names::check_policy_name(&spec.claim_policy)?;
    names::check_template_name(&spec.target.template)?;
    names::check_region(&spec.target.region)
}

/// One device's line: its names valid, its CSR (signed by its own key) for its thing name.
fn check_line(
    line: &CsrLine,
    algorithm: KeyAlgorithm,
    signatures: Signatures,
) -> Result<(), String> {
    names::check_thing_name(&line.serial).map_err(|rule| format!("serial {rule}"))?;
    names::check_thing_name(&line.thing_name).map_err(|rule| format!("thing name {rule}"))?;
    let csr = csr_facts(&line.csr, verify_for(algorithm, signatures))?;
    if csr.common_name != line.thing_name {
        return Err(format!(
            "its CSR is for {:?}, not its thing name {:?}",
            csr.common_name, line.thing_name
        ));
    }
    Ok(())
}

/// A checked CSR file, open to read a device's line back by its position in the batch.
pub struct CsrFile {
    file: File,
    offsets: Vec<u64>,
    key_algorithm: KeyAlgorithm,
    signatures: Signatures,
}

fn verify_for(algorithm: KeyAlgorithm, signatures: Signatures) -> Option<KeyAlgorithm> {
    (signatures == Signatures::Verify).then_some(algorithm)
}

impl CsrFile {
    /// Opens `path`, which holds `batch` (it was read and checked as such).
    pub fn open(path: &Path, batch: &CsrBatch, signatures: Signatures) -> Result<Self> {
        Ok(Self {
            file: File::open(path).with_context(|| format!("cannot read {}", path.display()))?,
            offsets: batch.offsets.clone(),
            key_algorithm: batch.spec.key_algorithm,
            signatures,
        })
    }

    /// The line of the device at `position`, its serial checked against `serial`, and its
    /// CSR checked again (the file may have changed since it was read).
    pub fn line(&self, position: usize, serial: &str) -> Result<(CsrLine, CheckedCsr)> {
        let (start, end) = (self.offsets[position], self.offsets[position + 1]);
        let mut bytes = vec![0u8; (end - start) as usize];
        self.file
            .read_exact_at(&mut bytes, start)
            .context("cannot read the batch's CSR file back; re-run")?;
        let line = serde_json::from_slice(&bytes)
            .ok()
            .filter(|line: &CsrLine| line.serial == serial)
            .with_context(|| {
                format!("the batch's CSR file changed under it at {serial}; restore it")
            })?;
        let csr = csr_facts(&line.csr, verify_for(self.key_algorithm, self.signatures))
            .map_err(|problem| anyhow::anyhow!("{serial}: {problem}"))?;
        Ok((line, csr))
    }
}
