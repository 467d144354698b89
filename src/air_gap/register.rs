//! The register stage on the online machine: the carried CSR file read and checked whole
//! before anything is created (`air_gap::csrs`), then the batch pipeline run over it with
//! the keys kept offline ([`OfflineKeys`]): each device's CSR read back from the batch
//! directory's copy of the file, each issued certificate kept in `certificates/SERIAL.pem`,
//! and at the end `certificates.jsonl` written for the offline machine. A crash loses no
//! key (there is none here): an unanswered create is looked up by its key and adopted, a
//! certificate whose file was lost is fetched again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::csrs::{CsrBatch, CsrFile, Signatures};
use crate::batch_dir::BatchDir;
use crate::core::carried::{
    CarriedWriter, CertificateLine, CertificatesHeader, Kind, CERTIFICATES_FILE, FORMAT_VERSION,
};
use crate::core::certificate::parse_certificate_pem;
use crate::core::devices::{Device, DeviceList};
use crate::core::keys::PreparedDevice;
use crate::core::ledger::CertificateRecord;
use crate::pipeline::custody::Custody;
use crate::pipeline::state::RunState;
use crate::pipeline::{BatchPlan, DeviceFailure, Outcome, RegisteredDevice, RunParts};

/// Where each device's issued certificate is kept in the online batch directory.
pub const CERTIFICATES_DIR: &str = "certificates";

/// `register`'s custody: keys stay on the offline machine; CSRs come from the batch
/// directory's copy of the carried file, certificates go to `certificates/`.
pub struct OfflineKeys {
    dir: Arc<BatchDir>,
    devices: Arc<DeviceList>,
    csrs: CsrFile,
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
            csrs: CsrFile::open(csrs, batch, Signatures::Verify)?,
            batch_id: batch.batch_id.clone(),
            csrs_sha256: batch.sha256.clone(),
            bar: parts.bar.clone(),
        })
    }

    fn certificate_file(serial: &str) -> String {
        format!("{CERTIFICATES_DIR}/{serial}.pem")
    }

    /// One device's CSR, read back from the batch's CSR file.
    fn csr_of(&self, device: &Device) -> Result<PreparedDevice<()>> {
        let position = (self.devices.position(&device.serial))
            .with_context(|| format!("{} is not in this batch", device.serial))?;
        let (line, csr) = self.csrs.line(position, &device.serial)?;
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

    fn command(&self) -> &'static str {
        "register"
    }

    fn outputs(&self) -> Vec<(&'static str, PathBuf)> {
        vec![("carry back", self.dir.path(CERTIFICATES_FILE))]
    }
}
