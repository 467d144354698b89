//! Running a checked batch: the batch directory created or resumed, the pipeline run over
//! it with Ctrl-C handling, and the summary printed. Used by `batch` and `rotate` alike.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::custody::Custody;
use super::{BatchPlan, BatchRun, Outcome, Packager, RunParts};
use crate::batch_dir::journal::JournalStore;
use crate::batch_dir::spec::BatchSpec;
use crate::batch_dir::{BatchDir, BATCH_FILE, JOURNAL_FILE};
use crate::cloud::Claims;
use crate::core::devices::DeviceList;
use crate::core::signing::BatchSigner;
use crate::core::station_config::LimitsSection;
use crate::error::UserError;
use crate::output::records::{Record, RunSummary};
use crate::trust::signature_files::BatchSigning;

/// How a batch command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    /// Every device is ready.
    Done,
    /// Some devices failed (listed in the summary).
    SomeFailed,
    /// Stopped by a signal before the end.
    Interrupted,
}

/// A checked batch, ready to run: where, what, and how.
pub struct Execution<'a> {
    pub out: &'a Path,
    pub spec: &'a BatchSpec,
    /// Whether `out` already holds this batch (checked against `spec`).
    pub resuming: bool,
    pub limits: &'a LimitsSection,
    pub journals: &'a dyn JournalStore,
    /// The batch-signing key, for a batch whose spec is `signed_by` it.
    pub signer: Option<Arc<BatchSigner>>,
}

impl Execution<'_> {
    /// Creates (or resumes) the batch directory and runs the pipeline over it, with Ctrl-C
    /// handling and the summary. Everything must already be checked: from here on, things
    /// are created.
    pub async fn execute<A: Claims>(
        &self,
        devices: impl Into<DeviceList>,
        api: Arc<A>,
    ) -> Result<BatchResult> {
        let packager = |parts: &RunParts, plan: &BatchPlan| {
            parts.dir.make_bundles_dir()?;
            Ok(Packager::for_run(parts, plan))
        };
        self.execute_in(devices, api, packager).await
    }

    /// [`Self::execute`] with the keys kept by `custody` (see [`Custody`]).
    pub async fn execute_in<A: Claims, C: Custody>(
        &self,
        devices: impl Into<DeviceList>,
        api: Arc<A>,
        custody: impl FnOnce(&RunParts, &BatchPlan) -> Result<C>,
    ) -> Result<BatchResult> {
        let recipients = self.spec.recipients(self.out)?;
        let dir = self.open_dir()?;
        let signing = match &self.signer {
            Some(signer) => Some(BatchSigning::start(&dir, signer.clone())?),
            None => None,
        };
        let (journal, replay) = self.journals.open(&dir.path(JOURNAL_FILE))?;
        let plan = BatchPlan {
            devices: Arc::new(devices.into()),
            claim_policy: self.spec.claim_policy.clone(),
            key_algorithm: self.spec.key_algorithm,
            target: self.spec.target.clone(),
            claim_scope: self.spec.claim_scope,
            recipients,
            concurrency: self.limits.concurrency as usize,
            reconcile_after: std::time::Duration::from_secs(
                self.limits.reconcile_after_seconds.into(),
            ),
            signing,
        };
        let started = Instant::now();
        let batch = BatchRun::new(api, dir, journal, replay, plan, custody)?;
        let signals = tokio::spawn(stop_on_signals(batch.clone()));
        let outcome = batch.clone().run().await;
        // Wait for the aborted signal task to drop its handle on the run, so the directory
        // lock is released when this returns.
        signals.abort();
        let _ = signals.await;
        let outcome = outcome?;
        print_summary(self.out, &batch, &outcome, started.elapsed().as_secs_f64());
        Ok(if outcome.interrupted {
            BatchResult::Interrupted
        } else if outcome.failures.is_empty() {
            BatchResult::Done
        } else {
            BatchResult::SomeFailed
        })
    }

    /// Locks the batch directory; a new batch records its spec first.
    fn open_dir(&self) -> Result<BatchDir> {
        let dir = BatchDir::open(self.out)?;
        if !self.resuming && dir.path(BATCH_FILE).exists() {
            // Another claimfab started a batch here between our check and our lock.
            return Err(UserError::output_dir(
                self.out,
                "another claimfab started a batch here meanwhile; choose a new --out",
            )
            .into());
        }
        if !self.resuming {
            let json = serde_json::to_vec_pretty(self.spec).expect("spec serializes");
            dir.write_atomic(BATCH_FILE, &json, 0o644)?;
        }
        Ok(dir)
    }
}

/// First Ctrl-C or SIGTERM: stop starting devices, finish in-flight ones, write the
/// manifest. Second: exit at once (the journal makes that safe).
async fn stop_on_signals<A: Claims, C: Custody>(batch: Arc<BatchRun<A, C>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            batch.interrupt();
        } else {
            eprintln!("aborted; re-run the same command to finish the batch");
            std::process::exit(130);
        }
    }
}

/// The `summary` record of a run (`--output json`).
pub fn emit_summary(
    out: &Path,
    outcome: &Outcome,
    seconds: f64,
    outputs: &[(&'static str, std::path::PathBuf)],
) {
    crate::output::emit(&Record::Summary(&RunSummary {
        dir: out.display().to_string(),
        devices: outcome.devices,
        ready: outcome.ready,
        failed: outcome.failed,
        pending: outcome.pending,
        retired: outcome.retired,
        interrupted: outcome.interrupted,
        seconds,
        outputs: (outputs.iter())
            .map(|(what, path)| (*what, path.display().to_string()))
            .collect(),
    }));
}

fn print_summary<A: Claims, C: Custody>(
    out: &Path,
    batch: &BatchRun<A, C>,
    outcome: &Outcome,
    elapsed: f64,
) {
    emit_summary(out, outcome, elapsed, &batch.outputs());
    crate::say!(
        "{} {}: {} ready, {} failed, {} pending, of {} devices in {elapsed:.1} s",
        batch.command(),
        out.display(),
        outcome.ready,
        outcome.failed,
        outcome.pending,
        outcome.devices
    );
    let seconds = outcome.register_seconds.max(0.001);
    for (api, calls) in batch.api_calls() {
        // A rate says something only for the per-device calls.
        if calls >= 10 {
            crate::say!("  {api}: {calls} calls, {:.1}/s", calls as f64 / seconds);
        } else {
            crate::say!("  {api}: {calls} calls");
        }
    }
    if outcome.retired > 0 {
        crate::say!(
            "  {} certificate(s) set INACTIVE (keys lost in an interrupted run, duplicates, or wrong keys); see journal.jsonl",
            outcome.retired
        );
    }
    for failure in &outcome.failures {
        let who = match failure.serial.as_str() {
            crate::core::ledger::SHARED_CLAIM => {
                "the batch's shared claim certificate (every device)"
            }
            serial => serial,
        };
        crate::say!("  failed {who}: {}", failure.reason);
    }
    for (what, path) in batch.outputs() {
        crate::say!("  {what}: {}", path.display());
    }
    if outcome.interrupted || outcome.pending > 0 || !outcome.failures.is_empty() {
        crate::say!("  re-run the same command to finish the batch");
    }
}
