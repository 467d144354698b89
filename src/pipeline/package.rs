//! The package stage: each device's bundle zip (claim certificate, key, Amazon Root CA 1,
//! Greengrass config) built in memory, encrypted there to the batch's stations when it has
//! any, written atomically, then journaled. Also what recovery needs from the bundles on
//! disk: whether a certificate's bundle exists, adopting one a crash left unjournaled, and
//! reading a shared claim's key back from a bundle. The batch holds no identity: an
//! encrypted bundle cannot be read back, so one left unjournaled is never adopted (its
//! certificate is retired and the device gets a new key).

use std::sync::Arc;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::custody::Custody;
use super::state::{RunState, SCRATCH_FAILED};
use super::{BatchPlan, Outcome, RegisteredDevice, SharedClaim};
use crate::batch_dir::BatchDir;
use crate::cloud::NewCertificate;
use crate::core::bundle::{build_bundle, read_entry};
use crate::core::certificate::parse_certificate_pem;
use crate::core::devices::{Device, DeviceList};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::keys::PreparedDevice;
use crate::core::keys::{public_key_fingerprint, ClaimKey};
use crate::core::ledger::{CertificateRecord, Event, SharedBundle};
use crate::core::sealed::Recipients;
use crate::core::station_config::KeyAlgorithm;

/// When a bundle written is on disk for good.
#[derive(Clone, Copy)]
enum Durable {
    /// Before the write returns (its own fsyncs).
    Now,
    /// After the batch directory's next filesystem sync.
    AtNextSync,
}

/// Writes and reads the bundles of one batch directory.
pub struct Packager {
    pub dir: Arc<BatchDir>,
    pub state: Arc<RunState>,
    pub target: ProvisioningTarget,
    pub devices: Arc<DeviceList>,
    /// The stations every bundle is encrypted to; `None`: plain zips.
    pub recipients: Option<Recipients>,
    pub key_algorithm: KeyAlgorithm,
    pub bar: ProgressBar,
    pub cancel: CancellationToken,
}

/// `batch`: keys made here and kept only in memory and in their bundles.
impl Custody for Packager {
    type Key = ClaimKey;

    fn keys_outlive_runs(&self) -> bool {
        false
    }

    fn dir(&self) -> &BatchDir {
        &self.dir
    }

    fn prepare(&self, devices: &[Device]) -> Result<Vec<PreparedDevice>> {
        Ok(super::prepare(devices, self.key_algorithm))
    }

    fn deliver(&self, registered: RegisteredDevice) -> Result<()> {
        self.package(registered)
    }

    fn has_output(&self, serial: &str, cert: &CertificateRecord) -> Result<bool> {
        self.has_bundle(serial, cert)
    }

    fn output_missing(&self, _serial: &str, cert: &CertificateRecord) -> bool {
        self.bundle_missing(cert)
    }

    fn command(&self) -> &'static str {
        "batch"
    }

    fn outputs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        vec![
            ("manifest", self.dir.path(crate::batch_dir::MANIFEST_FILE)),
            ("bundles", self.dir.path(crate::batch_dir::BUNDLES_DIR)),
        ]
    }

    fn shared_claim(&self, cert: &CertificateRecord) -> Result<Option<SharedClaim>> {
        self.shared_claim_from_bundles(cert)
    }

    fn shared_claim_of(registered: RegisteredDevice) -> Result<SharedClaim> {
        Ok(SharedClaim {
            key: registered.prepared.key,
            certificate: registered.certificate,
        })
    }

    fn deliver_shared(&self, claim: &SharedClaim) -> Result<()> {
        self.package_shared(claim)
    }

    fn publish(
        &self,
        state: &RunState,
        plan: &BatchPlan,
        interrupted: bool,
        register_seconds: f64,
    ) -> Result<Outcome> {
        super::publish::write_manifest(&self.dir, state, plan, interrupted, register_seconds)
    }
}

impl Packager {
    /// One device's own bundle: written, then journaled.
    pub fn package(&self, registered: RegisteredDevice) -> Result<()> {
        let packaged = self.write_own_bundle(registered, Durable::Now)?;
        self.state.record(packaged)?;
        self.bar.inc(1);
        Ok(())
    }

    /// One device's own bundle written, but not yet durable: returns the event to journal
    /// once [`BatchDir::sync_filesystem`] has made it so. For packaging many at once.
    pub fn write_unsynced(&self, registered: RegisteredDevice) -> Result<Event> {
        self.write_own_bundle(registered, Durable::AtNextSync)
    }

    fn write_own_bundle(&self, registered: RegisteredDevice, durable: Durable) -> Result<Event> {
        let device = &registered.prepared.device;
        let key_pem = registered.prepared.key.pkcs8_pem();
        let (bundle, bytes) = self.write_bundle(
            &device.serial,
            &device.thing_name,
            &registered.certificate.certificate_pem,
            &key_pem,
            durable,
        )?;
        Ok(Event::Packaged {
            serial: device.serial.clone(),
            certificate_id: registered.certificate.certificate_id.clone(),
            bundle,
            bundle_sha256: hex::encode(Sha256::digest(&*bytes)),
        })
    }

    /// Batch claim scope: writes the bundle of every device that has none holding the shared
    /// certificate (in parallel), journaling each. Starts no bundle once cancelled.
    pub fn package_shared(&self, claim: &SharedClaim) -> Result<()> {
        let certificate = &claim.certificate;
        let mut todo: Vec<Device> = Vec::new();
        for device in self.devices.iter() {
            let bundle = self.shared_bundle_of(&device.serial)?;
            if !bundle.is_some_and(|b| {
                b.certificate_id == certificate.certificate_id && self.dir.path(&b.bundle).is_file()
            }) {
                todo.push(device);
            }
        }
        self.bar
            .set_position((self.devices.len() - todo.len()) as u64);
        let key_pem = claim.key.pkcs8_pem();
        todo.par_iter().try_for_each(|device| {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            let (bundle, bytes) = self.write_bundle(
                &device.serial,
                &device.thing_name,
                &certificate.certificate_pem,
                &key_pem,
                Durable::Now,
            )?;
            self.state.record(Event::SharedPackaged {
                serial: device.serial.clone(),
                certificate_id: certificate.certificate_id.clone(),
                bundle,
                bundle_sha256: hex::encode(Sha256::digest(&*bytes)),
            })?;
            self.bar.inc(1);
            Ok(())
        })
    }

    /// Builds one device's bundle in memory, encrypts it to the stations if the batch has
    /// any, and writes it atomically; returns its name and the bytes written. Nothing
    /// unencrypted reaches the disk of an encrypted batch, not even a temp file.
    fn write_bundle(
        &self,
        serial: &str,
        thing_name: &str,
        certificate_pem: &str,
        key_pem: &str,
        durable: Durable,
    ) -> Result<(String, Zeroizing<Vec<u8>>)> {
        let zip = build_bundle(&self.target, thing_name, certificate_pem, key_pem);
        let bytes = match &self.recipients {
            Some(recipients) => Zeroizing::new(recipients.seal(&zip)),
            None => zip,
        };
        let bundle = self.bundle_name(serial);
        match durable {
            Durable::Now => self.dir.write_atomic(&bundle, &bytes, 0o600)?,
            Durable::AtNextSync => self.dir.write_atomic_unsynced(&bundle, &bytes, 0o600)?,
        }
        Ok((bundle, bytes))
    }

    fn bundle_name(&self, serial: &str) -> String {
        BatchDir::bundle_name(serial, self.recipients.is_some())
    }

    /// Whether the certificate's journaled bundle is on disk; a bundle written but never
    /// journaled (a crash in between) is adopted when it holds exactly this certificate.
    pub fn has_bundle(&self, serial: &str, cert: &CertificateRecord) -> Result<bool> {
        match &cert.bundle {
            Some((path, _)) => exists(&self.dir.path(path)),
            None => self.adopt_bundle_on_disk(serial, cert),
        }
    }

    /// Whether the certificate has no journaled bundle on disk.
    pub fn bundle_missing(&self, cert: &CertificateRecord) -> bool {
        match &cert.bundle {
            Some((path, _)) => !self.dir.path(path).is_file(),
            None => true,
        }
    }

    /// An encrypted bundle is never adopted: without an identity the batch cannot tell
    /// which certificate it holds, so it is taken as absent (the certificate is retired, the
    /// device gets a new key and a new bundle over it): safe, at the cost of one certificate.
    fn adopt_bundle_on_disk(&self, serial: &str, cert: &CertificateRecord) -> Result<bool> {
        if self.recipients.is_some() {
            return Ok(false);
        }
        let bundle = self.bundle_name(serial);
        let Some(bytes) = self.read_bundle(&bundle)? else {
            return Ok(false);
        };
        let holds_cert = read_entry(&bytes, &self.target.greengrass.claim_certificate_path)
            .and_then(|pem| parse_certificate_pem(&pem).ok())
            .is_some_and(|parsed| parsed.sha256 == cert.certificate_sha256);
        if holds_cert {
            self.state.record(Event::Packaged {
                serial: serial.to_string(),
                certificate_id: cert.certificate_id.clone(),
                bundle,
                bundle_sha256: hex::encode(Sha256::digest(&bytes)),
            })?;
        }
        Ok(holds_cert)
    }

    /// Batch claim scope: the journaled bundle of a device holding a shared certificate.
    fn shared_bundle_of(&self, serial: &str) -> Result<Option<SharedBundle>> {
        let record = self.state.read(|state| state.record(serial));
        let record = record.context(SCRATCH_FAILED)?;
        Ok(record.and_then(|r| r.shared_bundle).map(|b| *b))
    }

    /// Batch claim scope: finds a bundle holding the shared certificate `cert` and its key
    /// (journaled bundles first, then any device's bundle on disk) and reads both back.
    pub fn shared_claim_from_bundles(
        &self,
        cert: &CertificateRecord,
    ) -> Result<Option<SharedClaim>> {
        let mut journaled = Vec::new();
        for device in self.devices.iter() {
            if let Some(bundle) = self.shared_bundle_of(&device.serial)? {
                if bundle.certificate_id == cert.certificate_id {
                    journaled.push(bundle.bundle);
                }
            }
        }
        let any = self.devices.iter().map(|d| self.bundle_name(&d.serial));
        for bundle in journaled.into_iter().chain(any) {
            if let Some(claim) = self.shared_claim_in(&bundle, cert)? {
                return Ok(Some(claim));
            }
        }
        Ok(None)
    }

    /// The shared claim in one bundle, if it holds `cert` and the key of `cert`.
    fn shared_claim_in(
        &self,
        bundle: &str,
        cert: &CertificateRecord,
    ) -> Result<Option<SharedClaim>> {
        let Some(bytes) = self.read_bundle(bundle)? else {
            return Ok(None);
        };
        let greengrass = &self.target.greengrass;
        let certificate_pem =
            read_entry(&bytes, &greengrass.claim_certificate_path).filter(|pem| {
                parse_certificate_pem(pem)
                    .is_ok_and(|parsed| parsed.sha256 == cert.certificate_sha256)
            });
        let key = read_entry(&bytes, &greengrass.claim_private_key_path)
            .and_then(|pem| ClaimKey::from_pkcs8_pem(&pem))
            .filter(|key| public_key_fingerprint(&key.public_key_der()) == cert.public_key_sha256);
        Ok(certificate_pem.zip(key).map(|(pem, key)| SharedClaim {
            key,
            certificate: NewCertificate {
                certificate_id: cert.certificate_id.clone(),
                certificate_arn: cert.certificate_arn.clone(),
                certificate_pem: pem.to_string(),
            },
        }))
    }

    /// A bundle's bytes (it holds a key: wiped when dropped); None if it does not exist. Other errors are reported, never taken
    /// as absence (that would retire a certificate whose bundle is fine).
    fn read_bundle(&self, bundle: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let path = self.dir.path(bundle);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot read {}; fix its permissions, then re-run",
                    path.display()
                )
            }),
        }
    }
}

/// Whether a file exists; errors other than "not found" are reported, never taken as absence
/// (that would retire a certificate whose bundle is fine).
fn exists(path: &std::path::Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| {
            format!(
                "cannot check {}; fix its permissions, then re-run",
                path.display()
            )
        }),
    }
}
