//! The register stage on the online machine: the carried CSR file read and checked whole
//! before anything is created ([`read_csrs`]), then the batch pipeline run over it with the
//! keys kept offline ([`OfflineKeys`]): each device's CSR read back from the batch
//! directory's copy of the file, each issued certificate kept in `certificates/SERIAL.pem`,
//! and at the end `certificates.jsonl` written for the offline machine. A crash loses no
//! key (there is none here): an unanswered create is looked up by its key and adopted, a
//! certificate whose file was lost is fetched again.

use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use crate::batch_dir::spec::{devices_fingerprint, BatchSpec};
use crate::batch_dir::BatchDir;
use crate::core::carried::{
    CarriedReader, CarriedWriter, CertificateLine, CertificatesHeader, CsrLine, CsrsHeader, Kind,
    CERTIFICATES_FILE, FORMAT_VERSION,
};
use crate::core::certificate::{check_csr_pem, parse_certificate_pem};
use crate::core::devices::{ClaimScope, Device, DeviceList};
use crate::core::keys::PreparedDevice;
use crate::core::ledger::CertificateRecord;
use crate::core::names;
use crate::core::station_config::KeyAlgorithm;
use crate::error::UserError;
use crate::pipeline::custody::Custody;
use crate::pipeline::state::RunState;
use crate::pipeline::{BatchPlan, DeviceFailure, Outcome, RegisteredDevice, RunParts};

/// Where each device's issued certificate is kept in the online batch directory.
pub const CERTIFICATES_DIR: &str = "certificates";

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

/// Reads and checks a CSR file: its kind, version, batch, every line (serial and thing
/// name valid, no serial twice, CSR signed by its own key on the batch's curve, for the
/// thing name), the device list against the batch's fingerprint, and its end line.
pub fn read_csrs(path: &Path) -> Result<CsrBatch, UserError> {
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
        check_line(&line, spec.key_algorithm)
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

/// One device's line: its names valid, its CSR signed by its own key, for its thing name.
fn check_line(line: &CsrLine, algorithm: KeyAlgorithm) -> Result<(), String> {
    names::check_thing_name(&line.serial).map_err(|rule| format!("serial {rule}"))?;
    names::check_thing_name(&line.thing_name).map_err(|rule| format!("thing name {rule}"))?;
    let csr = check_csr_pem(&line.csr, algorithm)?;
    if csr.common_name != line.thing_name {
        return Err(format!(
            "its CSR is for {:?}, not its thing name {:?}",
            csr.common_name, line.thing_name
        ));
    }
    Ok(())
}

/// `register`'s custody: keys stay on the offline machine; CSRs come from the batch
/// directory's copy of the carried file, certificates go to `certificates/`.
pub struct OfflineKeys {
    dir: Arc<BatchDir>,
    devices: Arc<DeviceList>,
    offsets: Arc<Vec<u64>>,
    csrs: File,
    key_algorithm: KeyAlgorithm,
    batch_id: String,
    csrs_sha256: String,
    bar: ProgressBar,
}

impl OfflineKeys {
    /// The custody of a run over `batch`, whose CSR file is `csrs` in the batch directory.
    pub fn new(parts: &RunParts, batch: &CsrBatch, csrs: &Path, plan: &BatchPlan) -> Result<Self> {
        let certificates = parts.dir.path(CERTIFICATES_DIR);
        std::fs::create_dir_all(&certificates)
            .with_context(|| format!("cannot create {}", certificates.display()))?;
        Ok(Self {
            dir: parts.dir.clone(),
            devices: plan.devices.clone(),
            offsets: Arc::new(batch.offsets.clone()),
            csrs: File::open(csrs).with_context(|| format!("cannot read {}", csrs.display()))?,
            key_algorithm: batch.spec.key_algorithm,
            batch_id: batch.batch_id.clone(),
            csrs_sha256: batch.sha256.clone(),
            bar: parts.bar.clone(),
        })
    }

    fn certificate_file(serial: &str) -> String {
        format!("{CERTIFICATES_DIR}/{serial}.pem")
    }

    /// One device's CSR line, read back from the file at its offset and checked again.
    fn csr_of(&self, device: &Device) -> Result<PreparedDevice<()>> {
        let position = (self.devices.position(&device.serial))
            .with_context(|| format!("{} is not in this batch", device.serial))?;
        let (start, end) = (self.offsets[position], self.offsets[position + 1]);
        let mut bytes = vec![0u8; (end - start) as usize];
        self.csrs
            .read_exact_at(&mut bytes, start)
            .context("cannot read the batch's CSR file back; re-run")?;
        let line: CsrLine = serde_json::from_slice(&bytes)
            .ok()
            .filter(|line: &CsrLine| line.serial == device.serial)
            .with_context(|| {
                format!(
                    "the batch's CSR file changed under it at {}; restore it",
                    device.serial
                )
            })?;
        let csr = check_csr_pem(&line.csr, self.key_algorithm)
            .map_err(|problem| anyhow::anyhow!("{}: {problem}", device.serial))?;
        Ok(PreparedDevice {
            device: device.clone(),
            key: (),
            csr_pem: line.csr,
            public_key_sha256: csr.public_key_sha256,
        })
    }

    /// The certificate kept for a device, if it is the journaled one.
    fn kept_certificate(&self, serial: &str, cert: &CertificateRecord) -> Result<Option<String>> {
        let path = self.dir.path(&Self::certificate_file(serial));
        let pem = match std::fs::read_to_string(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let ours = parse_certificate_pem(&pem).is_ok_and(|c| c.sha256 == cert.certificate_sha256);
        Ok(ours.then_some(pem))
    }

    /// `certificates.jsonl`: every device with a live certificate, in batch order.
    fn write_certificates(&self, state: &RunState) -> Result<usize> {
        let header = CertificatesHeader {
            claimfab: Kind::Certificates.tag().to_string(),
            version: FORMAT_VERSION,
            batch_id: self.batch_id.clone(),
            csrs_sha256: self.csrs_sha256.clone(),
        };
        let mut written = 0;
        self.dir
            .write_atomic_with(CERTIFICATES_FILE, 0o644, |out| {
                let mut file = CarriedWriter::new(out, Kind::Certificates, &header)?;
                for device in self.devices.iter() {
                    let Some(line) = self
                        .line_of(&device, state)
                        .map_err(std::io::Error::other)?
                    else {
                        continue;
                    };
                    file.line(&line)?;
                    written += 1;
                }
                file.finish().map(drop)
            })?;
        Ok(written)
    }

    fn line_of(&self, device: &Device, state: &RunState) -> Result<Option<CertificateLine>> {
        let record = state.read(|replay| replay.record(&device.serial))?;
        let Some(cert) = record
            .filter(|r| !r.is_revoked())
            .and_then(|r| r.certificate)
        else {
            return Ok(None);
        };
        let pem = self.kept_certificate(&device.serial, &cert)?.with_context(|| {
            format!("the certificate of {} is missing from {CERTIFICATES_DIR}/; re-run register to fetch it again", device.serial)
        })?;
        Ok(Some(CertificateLine {
            serial: device.serial.clone(),
            thing_name: device.thing_name.clone(),
            certificate_id: cert.certificate_id.clone(),
            certificate_arn: cert.certificate_arn.clone(),
            certificate_pem: pem,
            policy_attached: cert.policy_attached,
        }))
    }
}

impl Custody for OfflineKeys {
    type Key = ();

    fn keys_outlive_runs(&self) -> bool {
        true
    }

    fn dir(&self) -> &BatchDir {
        &self.dir
    }

    fn prepare(&self, devices: &[Device]) -> Result<Vec<PreparedDevice<()>>> {
        devices.iter().map(|device| self.csr_of(device)).collect()
    }

    fn deliver(&self, registered: RegisteredDevice<()>) -> Result<()> {
        let serial = &registered.prepared.device.serial;
        let pem = registered.certificate.certificate_pem.as_bytes();
        self.dir
            .write_atomic(&Self::certificate_file(serial), pem, 0o644)?;
        self.bar.inc(1);
        Ok(())
    }

    fn has_output(&self, serial: &str, cert: &CertificateRecord) -> Result<bool> {
        Ok(self.kept_certificate(serial, cert)?.is_some())
    }

    fn output_missing(&self, serial: &str, _cert: &CertificateRecord) -> bool {
        !self.dir.path(&Self::certificate_file(serial)).is_file()
    }

    fn publish(
        &self,
        state: &RunState,
        plan: &BatchPlan,
        interrupted: bool,
        register_seconds: f64,
    ) -> Result<Outcome> {
        self.write_certificates(state)?;
        // Registered: a live certificate with the claim policy; the rest failed in this run
        // or are still to do.
        let ready = state.read(|replay| {
            (plan.devices.serials())
                .filter(|serial| replay.policy_attached(serial))
                .count()
        });
        let mut failures: Vec<DeviceFailure> = state.read(|replay| {
            (state.failures().into_iter())
                .filter(|(serial, _)| !replay.policy_attached(serial))
                .map(|(serial, reason)| DeviceFailure { serial, reason })
                .collect()
        });
        failures.sort_by(|a, b| a.serial.cmp(&b.serial));
        Ok(Outcome {
            devices: plan.devices.len(),
            ready,
            failed: failures.len(),
            pending: plan.devices.len() - ready - failures.len(),
            failures,
            interrupted,
            retired: state.retired(),
            register_seconds,
        })
    }

    fn outputs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("carry back", self.dir.path(CERTIFICATES_FILE))]
    }
}
