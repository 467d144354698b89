//! The batch pipeline, as its stages: **prepare** (keys and CSRs, in parallel with rayon) ->
//! **register** (CreateCertificateFromCsr then AttachPolicy, concurrent under tokio and paced
//! per API) -> **package** (bundle zip written atomically). Each hand-off is plain data
//! ([`PreparedDevice`], [`RegisteredDevice`]). Every AWS call is journaled first, and a run
//! starts by recovering whatever an earlier, interrupted run left: certificates whose create
//! outcome was unknown, and certificates whose key died with that run, which are retired.
//!
//! In batch claim scope the register stage works on one stand-in for the whole batch (its
//! journal name is [`SHARED_CLAIM`]) and the package stage writes every device's bundle with
//! that one certificate and key; a re-run reads the key back from a bundle already written.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::aws::{AwsError, Iot, NewCertificate};
use crate::core::bundle::{build_bundle, read_entry};
use crate::core::certificate::{check_issued_for, parse_certificate_pem, IssuedCertificate};
use crate::core::devices::{ClaimScope, Device};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::keys::{prepare_device, public_key_fingerprint, ClaimKey, PreparedDevice};
use crate::core::ledger::{CertificateRecord, DeviceRecord, Event, Replay, SHARED_CLAIM};
use crate::core::manifest::{DeviceStatus, ManifestRow, ManifestWriter};
use crate::core::station::KeyAlgorithm;
use crate::journal::Journal;
use crate::outdir::{BatchDir, MANIFEST_FILE};
use crate::progress::Progress;

/// How many devices the prepare stage keeps ready ahead of registration; bounds memory.
const PREPARE_AHEAD: usize = 512;
/// How far AWS's clock and ours may disagree when matching certificates by creation time.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(15);
/// Rounds of reconciling and retrying creates whose outcome was unknown.
const UNCERTAIN_ROUNDS: usize = 3;
/// Unanswered creates in one pass beyond which AWS is taken to be unreachable: stop rather
/// than hold ever more keys in memory waiting for a verdict.
const UNCERTAIN_LIMIT: usize = 256;

/// What to make, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub devices: Vec<Device>,
    pub claim_policy: String,
    pub key_algorithm: KeyAlgorithm,
    pub target: ProvisioningTarget,
    pub claim_scope: ClaimScope,
    pub concurrency: usize,
    pub reconcile_after: Duration,
}

/// Batch claim scope: the batch's one certificate and its key, which every bundle holds.
pub struct SharedClaim {
    pub key: ClaimKey,
    pub certificate: NewCertificate,
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
    /// Devices in the manifest, and how many are ready, failed and pending.
    pub devices: usize,
    pub ready: usize,
    pub failed: usize,
    pub pending: usize,
    pub failures: Vec<DeviceFailure>,
    pub interrupted: bool,
    pub retired: usize,
    pub register_seconds: f64,
}

/// The prepare stage: a key and a CSR per device, in parallel.
pub fn prepare(devices: &[Device], algorithm: KeyAlgorithm) -> Vec<PreparedDevice> {
    devices
        .par_iter()
        .map(|device| prepare_device(device.clone(), algorithm))
        .collect()
}

/// A create call whose outcome is unknown, with the key still in memory.
type Uncertain = (PreparedDevice, String);

enum RegisterError {
    /// The create call may have made a certificate; reconcile before retrying.
    Uncertain(Box<PreparedDevice>, String),
    /// The device failed for a definite reason.
    Failed(String),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    interrupted: AtomicBool,
    failures: Mutex<HashMap<String, String>>,
    retired: AtomicUsize,
    /// Certificates reconciliation already described and found to be none of ours.
    not_ours: Mutex<HashSet<String>>,
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
        Arc::new(Self {
            iot,
            dir,
            journal,
            state: Mutex::new(replay),
            plan,
            progress: Progress::new(0),
            stop: AtomicBool::new(false),
            interrupted: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
            retired: AtomicUsize::new(0),
            not_ours: Mutex::new(HashSet::new()),
        })
    }

    /// Asks the run to stop starting new devices; in-flight ones finish and are packaged.
    pub fn request_stop(&self, why: &str) {
        if !self.stop.swap(true, Ordering::SeqCst) {
            self.progress
                .println(&format!("stopping: {why}; finishing in-flight devices"));
        }
    }

    /// A signal asked the run to stop (first Ctrl-C or SIGTERM).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.request_stop("interrupted (press Ctrl-C again to abort at once)");
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Journals an event durably, then applies it to the in-memory state. The fsync may
    /// block, so the async runtime is told to move other work off this thread meanwhile.
    fn log(&self, event: Event) -> Result<()> {
        tokio::task::block_in_place(|| self.journal.record(&event))?;
        lock(&self.state).apply(event);
        Ok(())
    }

    fn fail(&self, serial: &str, reason: String) {
        lock(&self.failures).insert(serial.to_string(), reason);
    }

    /// Runs the batch to the end (or to a requested stop) and writes the manifest, also when
    /// a local fault ends the run early (the fault is returned after).
    pub async fn run(self: Arc<Self>) -> Result<Outcome> {
        let started = Instant::now();
        let result = self.clone().run_to_end().await;
        self.progress.finish();
        let outcome = self.write_manifest(started.elapsed().as_secs_f64())?;
        result.map(|()| outcome)
    }

    async fn run_to_end(self: Arc<Self>) -> Result<()> {
        self.dir.sweep_temp_files()?;
        self.recover().await?;
        let shared = match self.plan.claim_scope {
            ClaimScope::Device => None,
            ClaimScope::Batch => self.recover_shared().await?,
        };
        // After recovery every live certificate has its bundle (or, shared, its key back);
        // only holders without one get a new key. (A failed policy attach keeps its
        // certificate; a revoked one is never replaced by a batch.)
        let todo: Vec<Device> = {
            let state = lock(&self.state);
            self.claim_holders()
                .filter(|d| {
                    state
                        .devices
                        .get(&d.serial)
                        .is_none_or(|r| r.certificate.is_none())
                })
                .collect()
        };
        self.progress.prepare.set_length(todo.len() as u64);
        self.progress.register.set_length(todo.len() as u64);
        self.progress
            .package
            .set_length(match self.plan.claim_scope {
                ClaimScope::Device => todo.len(),
                ClaimScope::Batch => self.plan.devices.len(),
            } as u64);
        if let Some(shared) = shared {
            let run = self.clone();
            tokio::task::spawn_blocking(move || run.package_shared(&shared))
                .await
                .context("packaging thread panicked")??;
        }
        let mut uncertain = self.clone().run_stages(todo).await?;
        for _ in 0..UNCERTAIN_ROUNDS {
            if uncertain.is_empty() || self.stopping() {
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
        Ok(())
    }

    /// Who gets a claim certificate: each device, or in batch claim scope one stand-in for
    /// the batch (its CSR's CN names the provisioning template it is a claim for).
    fn claim_holders(&self) -> Box<dyn Iterator<Item = Device> + '_> {
        match self.plan.claim_scope {
            ClaimScope::Device => Box::new(self.plan.devices.iter().cloned()),
            ClaimScope::Batch => Box::new(std::iter::once(Device {
                serial: SHARED_CLAIM.to_string(),
                thing_name: format!("{} claim", self.plan.target.template),
            })),
        }
    }

    /// Streams devices through prepare -> register -> package and returns the devices whose
    /// create outcome is unknown. A local fault (disk, journal) stops new devices from
    /// starting, lets in-flight ones finish, and is returned.
    async fn run_stages(self: Arc<Self>, todo: Vec<Device>) -> Result<Vec<Uncertain>> {
        let (sender, receiver) = tokio::sync::mpsc::channel::<PreparedDevice>(PREPARE_AHEAD);
        let algorithm = self.plan.key_algorithm;
        let prepare_bar = self.progress.prepare.clone();
        let producer = tokio::task::spawn_blocking(move || {
            for chunk in todo.chunks(PREPARE_AHEAD / 2) {
                for prepared in prepare(chunk, algorithm) {
                    // A closed channel means the run is stopping: make no more keys.
                    if sender.blocking_send(prepared).is_err() {
                        return;
                    }
                    prepare_bar.inc(1);
                }
            }
        });
        let run = self.clone();
        let gate = self.clone();
        let results = futures::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|prepared| (prepared, rx))
        })
        .take_while(move |_| std::future::ready(!gate.stopping()))
        .map(|prepared| run.clone().register_and_package(prepared))
        .buffer_unordered(self.plan.concurrency);
        // Boxed so that dropping it below closes the channel and stops the key producer.
        let mut results = Box::pin(results);

        let mut uncertain = Vec::new();
        let mut first_error = None;
        while let Some(result) = results.next().await {
            match result {
                Ok(Some(pending)) => {
                    uncertain.push(pending);
                    if uncertain.len() >= UNCERTAIN_LIMIT {
                        self.request_stop(&format!(
                            "{UNCERTAIN_LIMIT} CreateCertificateFromCsr calls got no definite answer; check the network and AWS health"
                        ));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    self.request_stop("a local error occurred");
                    first_error.get_or_insert(error);
                }
            }
        }
        drop(results);
        producer.await.context("key generation thread panicked")?;
        match first_error {
            Some(error) => Err(error),
            None => Ok(uncertain),
        }
    }

    /// One device through register and package. `Ok(Some)` hands back a device whose create
    /// outcome is unknown; `Err` is a local failure (disk, journal).
    async fn register_and_package(
        self: Arc<Self>,
        prepared: PreparedDevice,
    ) -> Result<Option<Uncertain>> {
        let serial = prepared.device.serial.clone();
        match self.register(prepared).await? {
            Ok(registered) => {
                self.progress.register.inc(1);
                self.package_in_background(registered).await?;
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
                let reason = format!("CreateCertificateFromCsr: {e}");
                return Ok(Err(RegisterError::Uncertain(Box::new(prepared), reason)));
            }
            Err(e) => {
                self.log(Event::CreateAbandoned {
                    serial,
                    public_key_sha256: prepared.public_key_sha256.clone(),
                })?;
                let hint = match e {
                    AwsError::Throttled(_) => {
                        "; lower limits.create_certificate_from_csr_per_second or ask AWS for a higher quota"
                    }
                    _ => "",
                };
                return Ok(Err(RegisterError::Failed(format!(
                    "CreateCertificateFromCsr: {e}{hint}"
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
                    self.log(Event::CreateAbandoned {
                        serial,
                        public_key_sha256: prepared.public_key_sha256.clone(),
                    })?;
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
        // Even if the attach fails, the key is in memory only: package it anyway so it is
        // not lost, and let the next run attach the policy.
        self.attach_claim_policy(
            &serial,
            &certificate.certificate_id,
            &certificate.certificate_arn,
        )
        .await?;
        Ok(Ok(RegisteredDevice {
            prepared,
            certificate,
            issued,
        }))
    }

    /// AttachPolicy, journaled; a failure is recorded against the device.
    async fn attach_claim_policy(
        &self,
        serial: &str,
        certificate_id: &str,
        certificate_arn: &str,
    ) -> Result<()> {
        match self
            .iot
            .attach_policy(&self.plan.claim_policy, certificate_arn)
            .await
        {
            Ok(()) => self.log(Event::PolicyAttached {
                serial: serial.to_string(),
                certificate_id: certificate_id.to_string(),
            }),
            Err(e) => {
                self.fail(
                    serial,
                    format!(
                        "AttachPolicy {}: {e}; its bundle is kept, re-run to attach",
                        self.plan.claim_policy
                    ),
                );
                Ok(())
            }
        }
    }

    async fn package_in_background(self: Arc<Self>, registered: RegisteredDevice) -> Result<()> {
        let run = self.clone();
        tokio::task::spawn_blocking(move || run.package(registered))
            .await
            .context("packaging thread panicked")?
    }

    /// The package stage for one device: bundle zip, written atomically, then journaled. In
    /// batch claim scope, the shared certificate goes into every device's bundle.
    fn package(&self, registered: RegisteredDevice) -> Result<()> {
        if self.plan.claim_scope == ClaimScope::Batch {
            return self.package_shared(&SharedClaim {
                key: registered.prepared.key,
                certificate: registered.certificate,
            });
        }
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

    /// Batch claim scope: writes the bundle of every device that has none holding the shared
    /// certificate (in parallel), journaling each. Stops starting bundles when asked to stop.
    fn package_shared(&self, claim: &SharedClaim) -> Result<()> {
        let certificate = &claim.certificate;
        let todo: Vec<&Device> = {
            let state = lock(&self.state);
            self.plan
                .devices
                .iter()
                .filter(|d| {
                    let bundle = state
                        .devices
                        .get(&d.serial)
                        .and_then(|r| r.shared_bundle.as_ref());
                    !bundle.is_some_and(|b| {
                        b.certificate_id == certificate.certificate_id
                            && self.dir.path(&b.bundle).is_file()
                    })
                })
                .collect()
        };
        self.progress
            .package
            .set_position((self.plan.devices.len() - todo.len()) as u64);
        let key_pem = claim.key.pkcs8_pem();
        todo.par_iter().try_for_each(|device| {
            if self.stopping() {
                return Ok(());
            }
            let zip = build_bundle(
                &self.plan.target,
                &device.thing_name,
                &certificate.certificate_pem,
                &key_pem,
            );
            let bundle = BatchDir::bundle_name(&device.serial);
            self.dir.write_atomic(&bundle, &zip, 0o600)?;
            self.log(Event::SharedPackaged {
                serial: device.serial.clone(),
                certificate_id: certificate.certificate_id.clone(),
                bundle,
                bundle_sha256: hex::encode(Sha256::digest(&*zip)),
            })?;
            self.progress.package.inc(1);
            Ok(())
        })
    }

    /// Batch claim scope: the shared certificate's key survives only inside the bundles
    /// written with it, so a re-run reads it back from one. A certificate no bundle holds is
    /// retired (its key died with the earlier run). Attaches the claim policy if the earlier
    /// run could not.
    async fn recover_shared(&self) -> Result<Option<SharedClaim>> {
        let cert = {
            let state = lock(&self.state);
            state
                .devices
                .get(SHARED_CLAIM)
                .and_then(|r| r.certificate.clone())
        };
        let Some(cert) = cert.filter(|c| c.revoked_status.is_none() && !c.deleted) else {
            return Ok(None);
        };
        let claim = tokio::task::block_in_place(|| self.shared_claim_from_bundles(&cert))?;
        let Some(claim) = claim else {
            self.retire(
                SHARED_CLAIM,
                &cert.certificate_id,
                "its private key was lost before any bundle was written",
            )
            .await?;
            return Ok(None);
        };
        if !cert.policy_attached {
            self.attach_claim_policy(SHARED_CLAIM, &cert.certificate_id, &cert.certificate_arn)
                .await?;
        }
        Ok(Some(claim))
    }

    /// Finds a bundle holding the shared certificate `cert` and its key (journaled bundles
    /// first, then any device's bundle on disk) and reads both back.
    fn shared_claim_from_bundles(&self, cert: &CertificateRecord) -> Result<Option<SharedClaim>> {
        let candidates: Vec<String> = {
            let state = lock(&self.state);
            let journaled = self.plan.devices.iter().filter_map(|d| {
                let bundle = state.devices.get(&d.serial)?.shared_bundle.as_ref()?;
                (bundle.certificate_id == cert.certificate_id).then(|| bundle.bundle.clone())
            });
            let any = self
                .plan
                .devices
                .iter()
                .map(|d| BatchDir::bundle_name(&d.serial));
            journaled.chain(any).collect()
        };
        let greengrass = &self.plan.target.greengrass;
        for bundle in candidates {
            let Some(bytes) = self.read_bundle(&bundle)? else {
                continue;
            };
            let Some(certificate_pem) = read_entry(&bytes, &greengrass.claim_certificate_path)
                .filter(|pem| {
                    parse_certificate_pem(pem)
                        .is_ok_and(|parsed| parsed.sha256 == cert.certificate_sha256)
                })
            else {
                continue;
            };
            let key = read_entry(&bytes, &greengrass.claim_private_key_path)
                .and_then(|pem| ClaimKey::from_pkcs8_pem(&pem))
                .filter(|key| {
                    public_key_fingerprint(&key.public_key_der()) == cert.public_key_sha256
                });
            if let Some(key) = key {
                return Ok(Some(SharedClaim {
                    key,
                    certificate: NewCertificate {
                        certificate_id: cert.certificate_id.clone(),
                        certificate_arn: cert.certificate_arn.clone(),
                        certificate_pem: certificate_pem.to_string(),
                    },
                }));
            }
        }
        Ok(None)
    }

    /// A bundle's bytes; None if it does not exist. Other errors are reported, never taken
    /// as absence (that would retire a certificate whose bundle is fine).
    fn read_bundle(&self, bundle: &str) -> Result<Option<Vec<u8>>> {
        let path = self.dir.path(bundle);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot read {}; fix its permissions, then re-run",
                    path.display()
                )
            }),
        }
    }

    /// Sets a certificate INACTIVE and journals that it no longer belongs to the device.
    async fn retire(&self, serial: &str, certificate_id: &str, reason: &str) -> Result<()> {
        match self.iot.deactivate_certificate(certificate_id).await {
            // Deleted by someone else: it cannot authenticate either way.
            Ok(()) | Err(AwsError::NotFound(_)) => {}
            Err(e) => anyhow::bail!(
                "cannot set certificate {certificate_id} of {serial} INACTIVE: {e}; re-run to retry"
            ),
        }
        self.log(Event::Retired {
            serial: serial.to_string(),
            certificate_id: certificate_id.to_string(),
            reason: reason.to_string(),
        })?;
        self.retired.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the youngest unanswered create among `keys` is `reconcile_after` old:
    /// until then AWS may still be executing it, or not yet list its certificate.
    async fn let_creates_settle(&self, keys: &HashMap<String, String>) {
        let youngest = {
            let state = lock(&self.state);
            state
                .devices
                .values()
                .flat_map(|r| &r.unresolved_creates)
                .filter(|u| keys.contains_key(&u.public_key_sha256))
                .map(|u| u.at)
                .max()
        };
        let Some(youngest) = youngest else { return };
        let settle = time::Duration::try_from(self.plan.reconcile_after).unwrap_or_default();
        let wait = (youngest + settle - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        if wait > time::Duration::seconds(1) {
            self.progress.println(&format!(
                "waiting {:.0} s before looking up {} unanswered create call(s) in AWS (limits.reconcile_after_seconds)",
                wait.as_seconds_f64(),
                keys.len()
            ));
        }
        let wait = Duration::try_from(wait).unwrap_or_default();
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline && !self.stopping() {
            tokio::time::sleep(Duration::from_millis(200).min(wait)).await;
        }
    }

    /// Finds ACTIVE certificates in AWS, unknown to the journal, created since `since`, whose
    /// public key is one of `keys` (fingerprint -> serial).
    async fn find_certificates_for_keys(
        &self,
        keys: &HashMap<String, String>,
    ) -> Result<Vec<(String, NewCertificate)>> {
        let since = {
            let state = lock(&self.state);
            state
                .devices
                .values()
                .flat_map(|r| &r.unresolved_creates)
                .filter(|u| keys.contains_key(&u.public_key_sha256))
                .map(|u| u.at)
                .min()
                .unwrap_or_else(OffsetDateTime::now_utc)
                - CLOCK_SKEW
        };
        let listed = self
            .iot
            .certificates_created_since(since)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ListCertificates (to reconcile unanswered creates): {e}; re-run to retry"
                )
            })?;
        let candidates: Vec<_> = {
            let state = lock(&self.state);
            let known = state.known_certificates();
            let not_ours = lock(&self.not_ours);
            listed
                .into_iter()
                .filter(|c| c.active)
                .filter(|c| !known.contains(c.certificate_id.as_str()))
                .filter(|c| !not_ours.contains(&c.certificate_id))
                .collect()
        };
        let mut found = Vec::new();
        for candidate in candidates {
            let pem = match self.iot.certificate_pem(&candidate.certificate_id).await {
                Ok(pem) => pem,
                Err(AwsError::NotFound(_)) => continue,
                Err(e) => anyhow::bail!(
                    "DescribeCertificate {} (to reconcile unanswered creates): {e}; re-run to retry",
                    candidate.certificate_id
                ),
            };
            let key = parse_certificate_pem(&pem).map(|c| c.public_key_sha256);
            match key.ok().and_then(|key| keys.get(&key)) {
                Some(serial) => found.push((
                    serial.clone(),
                    NewCertificate {
                        certificate_arn: candidate.certificate_arn,
                        certificate_id: candidate.certificate_id,
                        certificate_pem: pem,
                    },
                )),
                None => {
                    lock(&self.not_ours).insert(candidate.certificate_id);
                }
            }
        }
        Ok(found)
    }

    /// Reconciles creates whose outcome was unknown while their keys are still in memory:
    /// a certificate found for a key is adopted (extra ones retired); a key with none is
    /// abandoned and the device gets a fresh try. Returns what is still unknown.
    async fn resolve_uncertain(
        self: Arc<Self>,
        uncertain: Vec<Uncertain>,
    ) -> Result<Vec<Uncertain>> {
        let keys: HashMap<String, String> = uncertain
            .iter()
            .map(|(p, _)| (p.public_key_sha256.clone(), p.device.serial.clone()))
            .collect();
        self.let_creates_settle(&keys).await;
        if self.stopping() {
            return Ok(uncertain);
        }
        let mut found: HashMap<String, Vec<NewCertificate>> = HashMap::new();
        for (serial, cert) in self.find_certificates_for_keys(&keys).await? {
            found.entry(serial).or_default().push(cert);
        }
        let mut retry = Vec::new();
        for (prepared, _) in uncertain {
            let serial = prepared.device.serial.clone();
            let Some(mut certs) = found.remove(&serial) else {
                self.log(Event::CreateAbandoned {
                    serial,
                    public_key_sha256: prepared.public_key_sha256.clone(),
                })?;
                retry.push(prepared.device.clone());
                continue;
            };
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
        self.clone().run_stages(retry).await
    }

    /// Repairs what an interrupted run left: certificates created but never journaled are
    /// found by key and retired (their keys died with that run); certificates whose bundle
    /// never reached the disk are retired; bundles on disk but not journaled are adopted;
    /// policies not yet attached to packaged devices are attached.
    async fn recover(&self) -> Result<()> {
        let unresolved: HashMap<String, String> = {
            let state = lock(&self.state);
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
            self.progress.println(&format!(
                "recovering: {} create call(s) of an interrupted run have no recorded answer",
                unresolved.len()
            ));
            self.let_creates_settle(&unresolved).await;
            if self.stopping() {
                return Ok(());
            }
            for (serial, cert) in self.find_certificates_for_keys(&unresolved).await? {
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
        let half_done: Vec<(String, CertificateRecord)> = {
            let state = lock(&self.state);
            self.plan
                .devices
                .iter()
                .filter_map(|d| {
                    let record = state.devices.get(&d.serial)?;
                    if record.is_revoked() {
                        return None;
                    }
                    let cert = record.certificate.as_ref()?;
                    (!cert.policy_attached || self.bundle_missing(cert))
                        .then(|| (d.serial.clone(), (**cert).clone()))
                })
                .collect()
        };
        for (serial, cert) in half_done {
            if self.stopping() {
                break;
            }
            let has_bundle = match &cert.bundle {
                Some((path, _)) => exists(&self.dir.path(path))?,
                None => self.adopt_bundle_on_disk(&serial, &cert)?,
            };
            if !has_bundle {
                self.retire(
                    &serial,
                    &cert.certificate_id,
                    "its private key was lost before the bundle was written",
                )
                .await?;
            } else if !cert.policy_attached {
                self.attach_claim_policy(&serial, &cert.certificate_id, &cert.certificate_arn)
                    .await?;
            }
        }
        Ok(())
    }

    fn bundle_missing(&self, cert: &CertificateRecord) -> bool {
        match &cert.bundle {
            Some((path, _)) => !self.dir.path(path).is_file(),
            None => true,
        }
    }

    /// A crash between writing a bundle and journaling it leaves a complete bundle on disk;
    /// adopt it if it holds exactly this certificate.
    fn adopt_bundle_on_disk(&self, serial: &str, cert: &CertificateRecord) -> Result<bool> {
        let bundle = BatchDir::bundle_name(serial);
        let Some(bytes) = self.read_bundle(&bundle)? else {
            return Ok(false);
        };
        let holds_cert = read_entry(&bytes, &self.plan.target.greengrass.claim_certificate_path)
            .and_then(|pem| parse_certificate_pem(&pem).ok())
            .is_some_and(|parsed| parsed.sha256 == cert.certificate_sha256);
        if holds_cert {
            self.log(Event::Packaged {
                serial: serial.to_string(),
                certificate_id: cert.certificate_id.clone(),
                bundle,
                bundle_sha256: hex::encode(Sha256::digest(&bytes)),
            })?;
        }
        Ok(holds_cert)
    }

    /// Writes `manifest.csv` from the journal's state: one row per device, in batch order,
    /// streamed to the file (a row exists in memory only while it is written).
    fn write_manifest(&self, register_seconds: f64) -> Result<Outcome> {
        let state = lock(&self.state);
        let failures = lock(&self.failures).clone();
        let rfc3339 = |t: OffsetDateTime| {
            t.to_offset(time::UtcOffset::UTC)
                .replace_nanosecond(0)
                .expect("0 is valid")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("UTC times format")
        };
        let scope = self.plan.claim_scope;
        let shared_failed = failures.contains_key(SHARED_CLAIM);
        let mut counts: HashMap<DeviceStatus, usize> = HashMap::new();
        let row_of = |device: &Device| {
            let view = state.device_view(&device.serial, scope);
            let record = view.as_deref();
            let failed = shared_failed || failures.contains_key(&device.serial);
            let status = DeviceRecord::manifest_status(record, failed);
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
            row
        };
        self.dir.write_atomic_with(MANIFEST_FILE, 0o644, |file| {
            let mut manifest = ManifestWriter::new(file)?;
            for device in &self.plan.devices {
                let row = row_of(device);
                *counts.entry(row.status).or_default() += 1;
                manifest.write(&row)?;
            }
            manifest.finish().map(drop)
        })?;
        let mut failures: Vec<DeviceFailure> = failures
            .into_iter()
            .filter(|(serial, _)| !state.devices.get(serial).is_some_and(|r| r.is_ready()))
            .map(|(serial, reason)| DeviceFailure { serial, reason })
            .collect();
        failures.sort_by(|a, b| a.serial.cmp(&b.serial));
        let count = |status| counts.get(&status).copied().unwrap_or(0);
        Ok(Outcome {
            devices: self.plan.devices.len(),
            ready: count(DeviceStatus::Ready),
            failed: count(DeviceStatus::Failed),
            pending: count(DeviceStatus::Pending),
            failures,
            interrupted: self.interrupted.load(Ordering::SeqCst),
            retired: self.retired.load(Ordering::Relaxed),
            register_seconds,
        })
    }

    /// Calls made to each AWS API in this run.
    pub fn api_calls(&self) -> Vec<(&'static str, u64)> {
        self.iot.call_counts()
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
