//! The batch pipeline, as its stages: **prepare** (keys and CSRs, in parallel with rayon) ->
//! **register** (CreateCertificateFromCsr then AttachPolicy, concurrent under tokio and paced
//! per API) -> **package** (bundle zip written atomically) -> **manifest**. Each hand-off is
//! plain data ([`PreparedDevice`], [`RegisteredDevice`]). Every AWS call is journaled first,
//! and a run starts by recovering whatever an earlier, interrupted run left.
//!
//! [`BatchRun`] only orchestrates; each part has one job: [`register::Registrar`] (AWS calls
//! for one device), [`recover::Recovery`] (what a crash or a lost answer left),
//! [`package::Packager`] (bundles on disk), [`manifest`] (the CSV and the outcome), over a
//! shared [`state::RunState`] (journal + replayed state). Stopping is a cancellation token.
//!
//! In batch claim scope the register stage works on one stand-in for the whole batch (its
//! journal name is [`SHARED_CLAIM`]) and the package stage writes every device's bundle with
//! that one certificate and key; a re-run reads the key back from a bundle already written.
//!
//! With recipients, every bundle is encrypted to the stations (age) in memory before it is
//! written; the batch cannot read such bundles back (see [`package::Packager`]).

pub mod custody;
pub mod execution;
mod package;
pub mod preflight;
mod publish;
mod recover;
mod register;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use rayon::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::batch_dir::journal::EventLog;
use crate::batch_dir::BatchDir;
use crate::cloud::{Claims, NewCertificate};
use crate::core::certificate::IssuedCertificate;
use crate::core::devices::{ClaimScope, Device, DeviceList};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::keys::{prepare_device, ClaimKey, PreparedDevice};
use crate::core::ledger::{Replay, SHARED_CLAIM};
use crate::core::sealed::Recipients;
use crate::core::station_config::KeyAlgorithm;
use crate::progress::Progress;
pub use custody::Custody;

pub use package::Packager;
use recover::{Reconciler, Recovery};
use register::{Registrar, Registration};
use state::RunState;

/// How many devices the prepare stage keeps ready ahead of registration; bounds memory.
const PREPARE_AHEAD: usize = 512;
/// Rounds of reconciling and retrying creates whose outcome was unknown.
const UNCERTAIN_ROUNDS: usize = 3;
/// Unanswered creates in one pass beyond which AWS is taken to be unreachable: stop rather
/// than hold ever more keys in memory waiting for a verdict.
const UNCERTAIN_LIMIT: usize = 256;

/// What to make, fully resolved and validated.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub devices: Arc<DeviceList>,
    pub claim_policy: String,
    pub key_algorithm: KeyAlgorithm,
    pub target: ProvisioningTarget,
    pub claim_scope: ClaimScope,
    /// The stations every bundle is encrypted to; `None`: plain zips.
    pub recipients: Option<Recipients>,
    pub concurrency: usize,
    pub reconcile_after: Duration,
    /// Signs `batch.json` (already) and each ready bundle (with the manifest).
    pub signing: Option<crate::trust::signature_files::BatchSigning>,
}

/// Batch claim scope: the batch's one certificate and its key, which every bundle holds.
pub struct SharedClaim {
    pub key: ClaimKey,
    pub certificate: NewCertificate,
}

/// Output of the register stage for one device.
pub struct RegisteredDevice<K = ClaimKey> {
    pub prepared: PreparedDevice<K>,
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

/// AWS issued a certificate the batch must not package (see [`Registration::Halt`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Halted(String);

/// A create call whose outcome is unknown, with the key still in memory (or kept offline).
type Uncertain<K> = (Box<PreparedDevice<K>>, String);

/// Claim holders still to get a certificate: their positions in the list of holders (a
/// batch's own list is not copied).
struct Todo {
    holders: Arc<DeviceList>,
    /// Below `holders.len()`, which a batch keeps under 2^32.
    positions: Vec<u32>,
}

impl Todo {
    fn all(holders: DeviceList) -> Self {
        let positions = (0..holders.len() as u32).collect();
        Self {
            holders: Arc::new(holders),
            positions,
        }
    }

    fn len(&self) -> usize {
        self.positions.len()
    }

    fn devices(&self) -> impl Iterator<Item = Device> + '_ {
        self.positions.iter().map(|&p| self.holders.get(p as usize))
    }
}

/// What a run's custody is made from (see [`BatchRun::new`]).
pub struct RunParts {
    pub dir: Arc<BatchDir>,
    pub state: Arc<RunState>,
    /// The package stage's bar, which a custody's deliveries advance.
    pub bar: indicatif::ProgressBar,
    pub cancel: CancellationToken,
}

/// One batch run over an open batch directory: the stages, in order, over the parts.
pub struct BatchRun<A, C: Custody = Packager> {
    plan: BatchPlan,
    state: Arc<RunState>,
    registrar: Registrar<A>,
    custody: Arc<C>,
    reconciler: Reconciler<A>,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    interrupted: AtomicBool,
}

impl Packager {
    /// `batch`'s custody: keys made here, bundles written into the run's directory.
    pub fn for_run(parts: &RunParts, plan: &BatchPlan) -> Self {
        Packager {
            dir: parts.dir.clone(),
            state: parts.state.clone(),
            target: plan.target.clone(),
            devices: plan.devices.clone(),
            recipients: plan.recipients.clone(),
            key_algorithm: plan.key_algorithm,
            bar: parts.bar.clone(),
            cancel: parts.cancel.clone(),
        }
    }
}

impl<A: Claims, C: Custody> BatchRun<A, C> {
    /// Ties the parts of a run together; `replay` is what `log` held when opened, and
    /// `custody` makes the key-dependent part from the shared ones and the plan.
    pub fn new(
        api: Arc<A>,
        dir: BatchDir,
        log: Box<dyn EventLog>,
        replay: Replay,
        plan: BatchPlan,
        custody: impl FnOnce(&RunParts, &BatchPlan) -> Result<C>,
    ) -> Result<Arc<Self>> {
        let state = Arc::new(RunState::new(log, replay));
        let progress = Arc::new(Progress::new(0));
        let cancel = CancellationToken::new();
        let parts = RunParts {
            dir: Arc::new(dir),
            state: state.clone(),
            bar: progress.package.clone(),
            cancel: cancel.clone(),
        };
        let custody = Arc::new(custody(&parts, &plan)?);
        Ok(Arc::new(Self {
            registrar: Registrar {
                api: api.clone(),
                state: state.clone(),
                claim_policy: plan.claim_policy.clone(),
            },
            custody,
            reconciler: Reconciler {
                api,
                state: state.clone(),
                reconcile_after: plan.reconcile_after,
                progress: progress.clone(),
                cancel: cancel.clone(),
                not_ours: Mutex::new(Default::default()),
            },
            plan,
            state,
            progress,
            cancel,
            interrupted: AtomicBool::new(false),
        }))
    }

    /// The command this run is, for the summary.
    pub fn command(&self) -> &'static str {
        self.custody.command()
    }

    /// What the run leaves for the operator, named for the summary.
    pub fn outputs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        self.custody.outputs()
    }

    /// Asks the run to stop starting new devices; in-flight ones finish and are packaged.
    pub fn request_stop(&self, why: &str) {
        if !self.cancel.is_cancelled() {
            self.cancel.cancel();
            self.progress
                .println(&format!("stopping: {why}; finishing in-flight devices"));
        }
    }

    /// A signal asked the run to stop (first Ctrl-C or SIGTERM).
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.request_stop("interrupted (press Ctrl-C again to abort at once)");
    }

    /// Calls made to each AWS API in this run.
    pub fn api_calls(&self) -> Vec<(&'static str, u64)> {
        self.registrar.api.call_counts()
    }

    fn recovery(&self) -> Recovery<'_, A, C> {
        Recovery {
            registrar: &self.registrar,
            custody: &*self.custody,
            reconciler: &self.reconciler,
            devices: &self.plan.devices,
            progress: &self.progress,
        }
    }

    /// Runs the batch to the end (or to a requested stop) and writes the manifest, also when
    /// a local fault ends the run early (the fault is returned after).
    pub async fn run(self: Arc<Self>) -> Result<Outcome> {
        let started = Instant::now();
        let result = self.run_to_end().await;
        self.progress.finish();
        let outcome = self.custody.publish(
            &self.state,
            &self.plan,
            self.interrupted.load(Ordering::SeqCst),
            started.elapsed().as_secs_f64(),
        )?;
        result.map(|()| outcome)
    }

    async fn run_to_end(&self) -> Result<()> {
        self.custody.dir().sweep_temp_files()?;
        let earlier = self.recovery().recover().await?;
        let shared = match self.plan.claim_scope {
            ClaimScope::Device => None,
            ClaimScope::Batch => self.recovery().recover_shared().await?,
        };
        let todo = self.without_certificate(&earlier);
        self.set_bar_lengths(todo.len());
        if let Some(shared) = shared {
            self.package_shared(shared).await?;
        }
        let mut uncertain = self.run_stages(todo).await?;
        // An earlier run's unanswered creates whose keys are kept offline: reconciled with
        // this run's own.
        uncertain.extend(earlier);
        for _ in 0..UNCERTAIN_ROUNDS {
            if uncertain.is_empty() || self.cancel.is_cancelled() {
                break;
            }
            uncertain = self.resolve_uncertain(uncertain).await?;
        }
        for (prepared, reason) in uncertain {
            self.state.fail(
                &prepared.device.serial,
                format!(
                    "{reason}; whether AWS created its certificate is unknown: re-run to reconcile"
                ),
            );
        }
        Ok(())
    }

    /// After recovery every live certificate has its bundle (or, shared, its key back); only
    /// holders without one get a new key, but for those whose earlier create is still to be
    /// reconciled (`earlier`). (A failed policy attach keeps its certificate; a revoked one
    /// is never replaced by a batch.)
    fn without_certificate(&self, earlier: &[Uncertain<C::Key>]) -> Todo {
        let holders = self.claim_holders();
        let pending: std::collections::HashSet<&str> = earlier
            .iter()
            .map(|(p, _)| p.device.serial.as_str())
            .collect();
        let positions = self.state.read(|state| {
            (holders.serials().enumerate())
                .filter(|(_, serial)| !state.has_certificate(serial))
                .filter(|(_, serial)| !pending.contains(serial.as_ref()))
                .map(|(position, _)| position as u32)
                .collect()
        });
        Todo { holders, positions }
    }

    fn set_bar_lengths(&self, todo: usize) {
        self.progress.prepare.set_length(todo as u64);
        self.progress.register.set_length(todo as u64);
        let packages = match self.plan.claim_scope {
            ClaimScope::Device => todo,
            ClaimScope::Batch => self.plan.devices.len(),
        };
        self.progress.package.set_length(packages as u64);
    }

    /// Who gets a claim certificate: each device, or in batch claim scope one stand-in for
    /// the batch (its CSR's CN names the provisioning template it is a claim for).
    fn claim_holders(&self) -> Arc<DeviceList> {
        match self.plan.claim_scope {
            ClaimScope::Device => self.plan.devices.clone(),
            ClaimScope::Batch => Arc::new(DeviceList::from(vec![Device {
                serial: SHARED_CLAIM.to_string(),
                thing_name: format!("{} claim", self.plan.target.template),
            }])),
        }
    }

    /// Streams devices through prepare -> register -> package and returns the devices whose
    /// create outcome is unknown. A local fault (disk, journal), or a certificate that claim
    /// binding could not use, stops new devices from starting, lets in-flight ones finish,
    /// and is returned.
    async fn run_stages(&self, todo: Todo) -> Result<Vec<Uncertain<C::Key>>> {
        let (sender, receiver) =
            tokio::sync::mpsc::channel::<PreparedDevice<C::Key>>(PREPARE_AHEAD);
        let producer = self.spawn_key_producer(todo, sender);
        let results = futures::stream::unfold(receiver, |mut rx| async move {
            rx.recv().await.map(|prepared| (prepared, rx))
        })
        .take_while(|_| std::future::ready(!self.cancel.is_cancelled()))
        .map(|prepared| self.register_and_package(prepared))
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
                    self.request_stop(match error.is::<Halted>() {
                        true => "AWS issued a claim that claim binding cannot use",
                        false => "a local error occurred",
                    });
                    first_error.get_or_insert(error);
                }
            }
        }
        drop(results);
        let produced = producer.await.context("key generation thread panicked")?;
        first_error.or(produced.err()).map_or(Ok(uncertain), Err)
    }

    /// The prepare stage on a blocking thread, a chunk at a time, feeding `sender`.
    fn spawn_key_producer(
        &self,
        todo: Todo,
        sender: tokio::sync::mpsc::Sender<PreparedDevice<C::Key>>,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let custody = self.custody.clone();
        let bar = self.progress.prepare.clone();
        tokio::task::spawn_blocking(move || {
            let mut devices = todo.devices().peekable();
            while devices.peek().is_some() {
                let chunk: Vec<Device> = devices.by_ref().take(PREPARE_AHEAD / 2).collect();
                for prepared in custody.prepare(&chunk)? {
                    // A closed channel means the run is stopping: make no more keys.
                    if sender.blocking_send(prepared).is_err() {
                        return Ok(());
                    }
                    bar.inc(1);
                }
            }
            Ok(())
        })
    }

    /// One device through register and package. `Ok(Some)` hands back a device whose create
    /// outcome is unknown; `Err` is a local failure (disk, journal).
    async fn register_and_package(
        &self,
        prepared: PreparedDevice<C::Key>,
    ) -> Result<Option<Uncertain<C::Key>>> {
        let serial = prepared.device.serial.clone();
        let registration = self.registrar.register(prepared).await?;
        self.settle(&serial, registration).await
    }

    /// Acts on one device's registration: package it, hand it back as uncertain, or record
    /// its failure.
    async fn settle(
        &self,
        serial: &str,
        registration: Registration<C::Key>,
    ) -> Result<Option<Uncertain<C::Key>>> {
        match registration {
            Registration::Registered(registered) => {
                self.progress.register.inc(1);
                self.package(*registered).await?;
                Ok(None)
            }
            Registration::Uncertain(prepared, reason) => Ok(Some((prepared, reason))),
            Registration::Failed(reason) => {
                self.state.fail(serial, reason);
                Ok(None)
            }
            Registration::Halt(reason) => {
                self.state.fail(serial, reason.clone());
                Err(Halted(reason).into())
            }
        }
    }

    /// Delivers one registered device on a blocking thread; in batch claim scope its
    /// certificate is the shared one and goes into every device's bundle.
    async fn package(&self, registered: RegisteredDevice<C::Key>) -> Result<()> {
        match self.plan.claim_scope {
            ClaimScope::Batch => self.package_shared(C::shared_claim_of(registered)?).await,
            ClaimScope::Device => {
                let custody = self.custody.clone();
                tokio::task::spawn_blocking(move || custody.deliver(registered))
                    .await
                    .context("packaging thread panicked")?
            }
        }
    }

    async fn package_shared(&self, claim: SharedClaim) -> Result<()> {
        let custody = self.custody.clone();
        tokio::task::spawn_blocking(move || custody.deliver_shared(&claim))
            .await
            .context("packaging thread panicked")?
    }

    /// One round of reconciling unknown creates: adopted devices are packaged, devices with
    /// no certificate go through the stages again. Returns what is still unknown.
    async fn resolve_uncertain(
        &self,
        uncertain: Vec<Uncertain<C::Key>>,
    ) -> Result<Vec<Uncertain<C::Key>>> {
        let resolved = self.recovery().resolve(uncertain).await?;
        if !resolved.unresolved.is_empty() {
            return Ok(resolved.unresolved);
        }
        for (serial, registration) in resolved.registrations {
            // A registration from reconciling is never uncertain again.
            self.settle(&serial, registration).await?;
        }
        Box::pin(self.run_stages(Todo::all(resolved.retry))).await
    }
}
