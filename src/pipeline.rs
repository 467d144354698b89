//! The batch pipeline, as its stages: **prepare** (keys and CSRs, in parallel with rayon) ->
//! **register** (CreateCertificateFromCsr then AttachPolicy, concurrent under tokio and paced
//! per API) -> **package** (bundle zip written atomically). Each hand-off is plain data
//! ([`PreparedDevice`], [`RegisteredDevice`]). Every AWS call is journaled first, and a run
//! starts by recovering whatever an earlier, interrupted run left: certificates whose create
//! outcome was unknown, and certificates whose key died with that run, which are retired.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use futures::StreamExt;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::aws::{Iot, NewCertificate};
use crate::core::bundle::{build_bundle, zip_path};
use crate::core::certificate::{check_issued_for, parse_certificate_pem, IssuedCertificate};
use crate::core::devices::Device;
use crate::core::greengrass::ProvisioningTarget;
use crate::core::keys::{prepare_device, PreparedDevice};
use crate::core::manifest::{DeviceStatus, ManifestRow};
use crate::core::station::KeyAlgorithm;
use crate::journal::{Event, Journal, Replay};
use crate::outdir::{BatchDir, MANIFEST_FILE};
use crate::progress::Progress;

/// How many devices the prepare stage keeps ready ahead of registration; bounds memory.
const PREPARE_AHEAD: usize = 512;
/// How far AWS's clock and ours may disagree when matching certificates by creation time.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(15);
/// Rounds of reconciling and retrying creates whose outcome was unknown.
const UNCERTAIN_ROUNDS: usize = 3;

/// What to make, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub devices: Vec<Device>,
    pub claim_policy: String,
    pub key_algorithm: KeyAlgorithm,
    pub target: ProvisioningTarget,
    pub concurrency: usize,
}

/// Output of the register stage for one device.
pub struct RegisteredDevice {
    pub prepared: PreparedDevice,
    pub certificate: NewCertificate,
    pub issued: IssuedCertificate,
}

/// Why one device did not finish in this run.
#[derive(Debug, Clone)]
pub struct DeviceFailure {
    pub serial: String,
    pub reason: String,
}

/// What a run produced.
pub struct Outcome {
    pub rows: Vec<ManifestRow>,
    pub failures: Vec<DeviceFailure>,
    pub interrupted: bool,
    pub retired: usize,
    pub register_seconds: f64,
}

/// The prepare stage: a key and a CSR per device, in parallel.
pub fn prepare(devices: Vec<Device>, algorithm: KeyAlgorithm) -> Vec<PreparedDevice> {
    devices
        .into_par_iter()
        .map(|device| prepare_device(device, algorithm))
        .collect()
}

enum RegisterError {
    /// The create call may have made a certificate; reconcile before retrying.
    Uncertain(Box<PreparedDevice>, String),
    /// The device failed for a definite reason.
    Failed(String),
}

/// One batch run over an open batch directory.
pub struct BatchRun {
    iot: Iot,
    dir: BatchDir,
    journal: Journal,
    state: Mutex<Replay>,
    plan: BatchPlan,
    progress: Progress,
    stop: AtomicBool,
    failures: Mutex<HashMap<String, String>>,
    retired: std::sync::atomic::AtomicUsize,
}

impl BatchRun {
    /// Ties the parts of a run together; `replay` is what the journal held at open.
    pub fn new(
        iot: Iot,
        dir: BatchDir,
        journal: Journal,
        replay: Replay,
        plan: BatchPlan,
    ) -> Arc<Self> {
        let todo = plan
            .devices
            .iter()
            .filter(|d| !replay.devices.get(&d.serial).is_some_and(|r| r.is_ready()))
            .count() as u64;
        Arc::new(Self {
            iot,
            dir,
            journal,
            state: Mutex::new(replay),
            plan,
            progress: Progress::new(todo),
            stop: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
            retired: Default::default(),
        })
    }

    /// Asks the run to stop starting new devices; in-flight ones finish and are packaged.
    pub fn request_stop(&self) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            self.progress.println(
                "stopping: finishing in-flight devices (press Ctrl-C again to abort at once)",
            );
        }
    }

    fn log(&self, event: Event) -> Result<()> {
        self.journal.record(&event)?;
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .apply(event);
        Ok(())
    }

    fn fail(&self, serial: &str, reason: String) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial.to_string(), reason);
    }

    /// Runs the batch to the end (or to a requested stop) and writes the manifest.
    pub async fn run(self: Arc<Self>) -> Result<Outcome> {
        self.dir.sweep_temp_files()?;
        self.recover().await?;
        let todo: Vec<Device> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.plan
                .devices
                .iter()
                .filter(|d| !state.devices.get(&d.serial).is_some_and(|r| r.is_ready()))
                .cloned()
                .collect()
        };
        for bar in [
            &self.progress.prepare,
            &self.progress.register,
            &self.progress.package,
        ] {
            bar.set_length(todo.len() as u64);
        }
        let started = Instant::now();
        let mut uncertain = self.clone().run_stages(todo).await?;
        for _ in 0..UNCERTAIN_ROUNDS {
            if uncertain.is_empty() || self.stop.load(Ordering::SeqCst) {
                break;
            }
            uncertain = self.clone().resolve_uncertain(uncertain).await?;
        }
        for (prepared, reason) in uncertain {
            self.fail(
                &prepared.device.serial,
                format!(
                    "{reason}; whether AWS created its certificate is unknown: re-run to reconcile"
                ),
            );
        }
        let register_seconds = started.elapsed().as_secs_f64();
        self.progress.finish();
        let outcome = self.write_manifest(register_seconds)?;
        Ok(outcome)
    }

    /// Streams devices through prepare -> register -> package. Returns the devices whose
    /// create outcome is unknown, keys still in memory.
    async fn run_stages(
        self: Arc<Self>,
        todo: Vec<Device>,
    ) -> Result<Vec<(PreparedDevice, String)>> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<PreparedDevice>(PREPARE_AHEAD);
        let algorithm = self.plan.key_algorithm;
        let prepare_bar = self.progress.prepare.clone();
        let producer = tokio::task::spawn_blocking(move || {
            for chunk in todo.chunks(PREPARE_AHEAD / 2) {
                for prepared in prepare(chunk.to_vec(), algorithm) {
                    if sender.blocking_send(prepared).is_err() {
                        return;
                    }
                    prepare_bar.inc(1);
                }
            }
        });
        let devices = futures::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|prepared| (prepared, rx))
        });
        let concurrency = self.plan.concurrency;
        let run = self.clone();
        let results: Vec<Result<Option<(PreparedDevice, String)>>> = devices
            .map(|prepared| run.clone().register_and_package(prepared))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        producer.await.context("key generation thread panicked")?;
        let mut uncertain = Vec::new();
        for result in results {
            if let Some(pending) = result? {
                uncertain.push(pending);
            }
        }
        Ok(uncertain)
    }

    /// One device through register and package. `Ok(Some)` hands back a device whose create
    /// outcome is unknown; `Err` is a local failure (disk, journal) that stops the run.
    async fn register_and_package(
        self: Arc<Self>,
        prepared: PreparedDevice,
    ) -> Result<Option<(PreparedDevice, String)>> {
        if self.stop.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let serial = prepared.device.serial.clone();
        match self.register(prepared).await? {
            Ok(registered) => {
                self.progress.register.inc(1);
                self.clone().package_in_background(registered).await?;
                Ok(None)
            }
            Err(RegisterError::Uncertain(prepared, reason)) => Ok(Some((*prepared, reason))),
            Err(RegisterError::Failed(reason)) => {
                self.fail(&serial, reason);
                Ok(None)
            }
        }
    }

    /// The register stage for one device: journal, create, check, journal, attach, journal.
    async fn register(
        &self,
        prepared: PreparedDevice,
    ) -> Result<std::result::Result<RegisteredDevice, RegisterError>> {
        let serial = prepared.device.serial.clone();
        self.log(Event::CreateRequested {
            serial: serial.clone(),
            public_key_sha256: prepared.public_key_sha256.clone(),
            at: OffsetDateTime::now_utc(),
        })?;
        let certificate = match self
            .iot
            .create_certificate_from_csr(&prepared.csr_pem)
            .await
        {
            Ok(certificate) => certificate,
            Err(e) if e.may_have_executed() => {
                return Ok(Err(RegisterError::Uncertain(
                    Box::new(prepared),
                    format!("CreateCertificateFromCsr: {e}"),
                )))
            }
            Err(e) => {
                self.log(Event::CreateAbandoned {
                    serial: serial.clone(),
                    public_key_sha256: prepared.public_key_sha256.clone(),
                })?;
                return Ok(Err(RegisterError::Failed(format!(
                    "CreateCertificateFromCsr: {e}"
                ))));
            }
        };
        Ok(self
            .adopt(prepared, certificate)
            .await?
            .map_err(RegisterError::Failed))
    }

    /// Records a certificate issued for `prepared`'s key, then attaches the claim policy.
    /// The inner error is a definite per-device failure.
    async fn adopt(
        &self,
        prepared: PreparedDevice,
        certificate: NewCertificate,
    ) -> Result<std::result::Result<RegisteredDevice, String>> {
        let serial = prepared.device.serial.clone();
        let issued =
            match check_issued_for(&certificate.certificate_pem, &prepared.public_key_sha256) {
                Ok(issued) => issued,
                Err(problem) => {
                    // An active certificate over someone else's key must not stay active.
                    self.retire(
                        &serial,
                        &certificate.certificate_id,
                        "issued over the wrong public key",
                    )
                    .await?;
                    return Ok(Err(problem));
                }
            };
        self.log(Event::Created {
            serial: serial.clone(),
            public_key_sha256: prepared.public_key_sha256.clone(),
            certificate_id: certificate.certificate_id.clone(),
            certificate_arn: certificate.certificate_arn.clone(),
            certificate_sha256: issued.sha256.clone(),
            not_after: issued.not_after,
            at: OffsetDateTime::now_utc(),
        })?;
        let registered = RegisteredDevice {
            prepared,
            certificate,
            issued,
        };
        match self
            .iot
            .attach_policy(
                &self.plan.claim_policy,
                &registered.certificate.certificate_arn,
            )
            .await
        {
            Ok(()) => {
                self.log(Event::PolicyAttached {
                    serial,
                    certificate_id: registered.certificate.certificate_id.clone(),
                })?;
            }
            // The key is in memory only: package it anyway so it is not lost, and let the
            // next run attach the policy.
            Err(e) => self.fail(
                &serial,
                format!(
                    "AttachPolicy {}: {e}; its bundle is kept, re-run to attach",
                    self.plan.claim_policy
                ),
            ),
        }
        Ok(Ok(registered))
    }

    async fn package_in_background(self: Arc<Self>, registered: RegisteredDevice) -> Result<()> {
        let run = self.clone();
        tokio::task::spawn_blocking(move || run.package(registered))
            .await
            .context("packaging thread panicked")?
    }

    /// The package stage for one device: bundle zip, written atomically, then journaled.
    fn package(&self, registered: RegisteredDevice) -> Result<()> {
        let device = &registered.prepared.device;
        let key_pem = registered.prepared.key.pkcs8_pem();
        let zip = build_bundle(
            &self.plan.target,
            &device.thing_name,
            &registered.certificate.certificate_pem,
            &key_pem,
        );
        let bundle = BatchDir::bundle_name(&device.serial);
        self.dir.write_atomic(&bundle, &zip, 0o600)?;
        self.log(Event::Packaged {
            serial: device.serial.clone(),
            certificate_id: registered.certificate.certificate_id.clone(),
            bundle,
            bundle_sha256: hex::encode(Sha256::digest(&*zip)),
        })?;
        self.progress.package.inc(1);
        Ok(())
    }

    /// Sets a certificate INACTIVE and journals that it no longer belongs to the device.
    async fn retire(&self, serial: &str, certificate_id: &str, reason: &str) -> Result<()> {
        self.iot
            .deactivate_certificate(certificate_id)
            .await
            .map_err(|e| anyhow::anyhow!("cannot deactivate certificate {certificate_id} of {serial}: {e}; re-run to retry"))?;
        self.log(Event::Retired {
            serial: serial.to_string(),
            certificate_id: certificate_id.to_string(),
            reason: reason.to_string(),
        })?;
        self.retired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Finds certificates in AWS, unknown to the journal, created since `since`, whose public
    /// key is one of `keys` (fingerprint -> serial).
    async fn find_certificates_for_keys(
        &self,
        keys: &HashMap<String, String>,
        since: OffsetDateTime,
    ) -> Result<Vec<(String, NewCertificate)>> {
        let candidates = self
            .iot
            .certificates_created_since(since)
            .await
            .map_err(|e| {
                anyhow::anyhow!("ListCertificates (to reconcile an interrupted run): {e}")
            })?;
        let known: HashSet<String> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            candidates
                .iter()
                .filter(|c| state.known_certificates.contains(&c.certificate_id))
                .map(|c| c.certificate_id.clone())
                .collect()
        };
        let mut found = Vec::new();
        for candidate in candidates
            .into_iter()
            .filter(|c| !known.contains(&c.certificate_id))
        {
            let pem = self
                .iot
                .certificate_pem(&candidate.certificate_id)
                .await
                .map_err(|e| {
                    anyhow::anyhow!("DescribeCertificate {}: {e}", candidate.certificate_id)
                })?;
            let Ok(parsed) = parse_certificate_pem(&pem) else {
                continue;
            };
            if let Some(serial) = keys.get(&parsed.public_key_sha256) {
                found.push((
                    serial.clone(),
                    NewCertificate {
                        certificate_arn: candidate.certificate_arn,
                        certificate_id: candidate.certificate_id,
                        certificate_pem: pem,
                    },
                ));
            }
        }
        Ok(found)
    }

    /// Reconciles creates whose outcome was unknown while their keys are still in memory:
    /// a certificate found for a key is adopted (extra ones retired); a key with none is
    /// abandoned and the device gets a fresh try. Returns what is still unknown.
    async fn resolve_uncertain(
        self: Arc<Self>,
        uncertain: Vec<(PreparedDevice, String)>,
    ) -> Result<Vec<(PreparedDevice, String)>> {
        let since = self
            .earliest_unresolved_create()
            .unwrap_or_else(OffsetDateTime::now_utc)
            - CLOCK_SKEW;
        let keys: HashMap<String, String> = uncertain
            .iter()
            .map(|(p, _)| (p.public_key_sha256.clone(), p.device.serial.clone()))
            .collect();
        let mut found: HashMap<String, Vec<NewCertificate>> = HashMap::new();
        for (serial, cert) in self.find_certificates_for_keys(&keys, since).await? {
            found.entry(serial).or_default().push(cert);
        }
        let mut retry = Vec::new();
        for (prepared, _) in uncertain {
            let serial = prepared.device.serial.clone();
            match found.remove(&serial) {
                Some(mut certs) => {
                    let keep = certs.remove(0);
                    for duplicate in certs {
                        self.retire(
                            &serial,
                            &duplicate.certificate_id,
                            "duplicate from a retried create",
                        )
                        .await?;
                    }
                    match self.adopt(prepared, keep).await? {
                        Ok(registered) => {
                            self.progress.register.inc(1);
                            self.clone().package_in_background(registered).await?;
                        }
                        Err(reason) => self.fail(&serial, reason),
                    }
                }
                None => {
                    self.log(Event::CreateAbandoned {
                        serial: serial.clone(),
                        public_key_sha256: prepared.public_key_sha256.clone(),
                    })?;
                    retry.push(prepared.device.clone());
                }
            }
        }
        self.clone().run_stages(retry).await
    }

    fn earliest_unresolved_create(&self) -> Option<OffsetDateTime> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .devices
            .values()
            .flat_map(|r| r.unresolved_creates.iter().map(|u| u.at))
            .min()
    }

    /// Repairs what an interrupted run left: certificates created but never journaled are
    /// found by key and retired (their keys died with that run); certificates whose bundle
    /// never reached the disk are retired; bundles on disk but not journaled are adopted;
    /// policies not yet attached to packaged devices are attached.
    async fn recover(&self) -> Result<()> {
        let unresolved: HashMap<String, String> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state
                .devices
                .iter()
                .flat_map(|(serial, r)| {
                    r.unresolved_creates
                        .iter()
                        .map(move |u| (u.public_key_sha256.clone(), serial.clone()))
                })
                .collect()
        };
        if !unresolved.is_empty() {
            let since = self.earliest_unresolved_create().expect("non-empty") - CLOCK_SKEW;
            self.progress.println(&format!(
                "recovering: {} create call(s) of an interrupted run had no recorded answer; checking AWS",
                unresolved.len()
            ));
            for (serial, cert) in self.find_certificates_for_keys(&unresolved, since).await? {
                self.retire(
                    &serial,
                    &cert.certificate_id,
                    "created by an interrupted run whose key was lost",
                )
                .await?;
            }
            for (public_key_sha256, serial) in unresolved {
                self.log(Event::CreateAbandoned {
                    serial,
                    public_key_sha256,
                })?;
            }
        }
        let half_done: Vec<(String, crate::journal::CertificateRecord)> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.plan
                .devices
                .iter()
                .filter_map(|d| {
                    let record = state.devices.get(&d.serial)?;
                    let cert = record.certificate.as_ref()?;
                    let bundle_ok = cert
                        .bundle
                        .as_ref()
                        .is_some_and(|(path, _)| self.dir.path(path).is_file());
                    (!bundle_ok || !cert.policy_attached).then(|| (d.serial.clone(), cert.clone()))
                })
                .collect()
        };
        for (serial, cert) in half_done {
            let bundle = BatchDir::bundle_name(&serial);
            let has_bundle = match &cert.bundle {
                Some((path, _)) => self.dir.path(path).is_file(),
                None => self.adopt_bundle_on_disk(&serial, &cert, &bundle)?,
            };
            if !has_bundle {
                self.retire(
                    &serial,
                    &cert.certificate_id,
                    "its private key was lost before the bundle was written",
                )
                .await?;
                continue;
            }
            if !cert.policy_attached {
                match self
                    .iot
                    .attach_policy(&self.plan.claim_policy, &cert.certificate_arn)
                    .await
                {
                    Ok(()) => self.log(Event::PolicyAttached {
                        serial: serial.clone(),
                        certificate_id: cert.certificate_id.clone(),
                    })?,
                    Err(e) => self.fail(
                        &serial,
                        format!("AttachPolicy {}: {e}", self.plan.claim_policy),
                    ),
                }
            }
        }
        Ok(())
    }

    /// A crash between writing a bundle and journaling it leaves a complete bundle on disk;
    /// adopt it if it holds exactly this certificate.
    fn adopt_bundle_on_disk(
        &self,
        serial: &str,
        cert: &crate::journal::CertificateRecord,
        bundle: &str,
    ) -> Result<bool> {
        let path = self.dir.path(bundle);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(false);
        };
        let cert_entry = zip_path(&self.plan.target.greengrass.claim_certificate_path);
        let holds_cert = zip::ZipArchive::new(std::io::Cursor::new(&bytes))
            .ok()
            .and_then(|mut zip| {
                let mut pem = String::new();
                std::io::Read::read_to_string(&mut zip.by_name(cert_entry).ok()?, &mut pem).ok()?;
                parse_certificate_pem(&pem).ok()
            })
            .is_some_and(|parsed| parsed.sha256 == cert.certificate_sha256);
        if holds_cert {
            self.log(Event::Packaged {
                serial: serial.to_string(),
                certificate_id: cert.certificate_id.clone(),
                bundle: bundle.to_string(),
                bundle_sha256: hex::encode(Sha256::digest(&bytes)),
            })?;
        }
        Ok(holds_cert)
    }

    /// Writes `manifest.csv` from the journal's state: one row per device, in batch order.
    fn write_manifest(&self, register_seconds: f64) -> Result<Outcome> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rfc3339 = |t: OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC)
                .replace_nanosecond(0)
                .expect("0 is valid")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("UTC times format")
        };
        let mut rows = Vec::with_capacity(self.plan.devices.len());
        for device in &self.plan.devices {
            let record = state.devices.get(&device.serial);
            let ready = record.is_some_and(|r| r.is_ready());
            let status = if ready {
                DeviceStatus::Ready
            } else if failures.contains_key(&device.serial) {
                DeviceStatus::Failed
            } else {
                DeviceStatus::Pending
            };
            let mut row = ManifestRow {
                serial: device.serial.clone(),
                thing_name: device.thing_name.clone(),
                certificate_id: String::new(),
                certificate_arn: String::new(),
                certificate_sha256: String::new(),
                not_after: String::new(),
                bundle: String::new(),
                bundle_sha256: String::new(),
                status,
                created_at: String::new(),
            };
            if let Some(cert) = record.and_then(|r| r.certificate.as_ref()) {
                row.certificate_id = cert.certificate_id.clone();
                row.certificate_arn = cert.certificate_arn.clone();
                row.certificate_sha256 = cert.certificate_sha256.clone();
                row.not_after = rfc3339(cert.not_after);
                row.created_at = rfc3339(cert.created_at);
                if let Some((bundle, sha)) = &cert.bundle {
                    row.bundle = bundle.clone();
                    row.bundle_sha256 = sha.clone();
                }
            }
            rows.push(row);
        }
        self.dir
            .write_atomic(MANIFEST_FILE, &crate::core::manifest::to_csv(&rows), 0o644)?;
        let mut failures: Vec<DeviceFailure> = failures
            .into_iter()
            .filter(|(serial, _)| !state.devices.get(serial).is_some_and(|r| r.is_ready()))
            .map(|(serial, reason)| DeviceFailure { serial, reason })
            .collect();
        failures.sort_by(|a, b| a.serial.cmp(&b.serial));
        Ok(Outcome {
            rows,
            failures,
            interrupted: self.stop.load(Ordering::SeqCst),
            retired: self.retired.load(Ordering::Relaxed),
            register_seconds,
        })
    }

    /// Calls made to each AWS API in this run.
    pub fn api_calls(&self) -> Vec<(&'static str, u64)> {
        self.iot.call_counts()
    }
}
