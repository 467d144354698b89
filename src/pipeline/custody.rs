//! Where a run's keys are kept, which is what differs between `batch` and the air-gapped
//! `register`: how devices are prepared (keys made here, or CSRs read from the carried
//! file), what a registered device becomes (its bundle, or its certificate kept for the
//! carried answer), what recovery may assume about an earlier run's keys (lost with it, or
//! kept offline), and what the run publishes at its end.

use std::path::PathBuf;

use anyhow::Result;

use super::state::RunState;
use super::{BatchPlan, Outcome, RegisteredDevice, SharedClaim};
use crate::batch_dir::BatchDir;
use crate::core::devices::Device;
use crate::core::keys::PreparedDevice;
use crate::core::ledger::CertificateRecord;

/// The key-dependent parts of a run (see the module doc).
pub trait Custody: Send + Sync + 'static {
    /// What a prepared device carries besides its CSR: its key, or nothing (kept offline).
    type Key: Send + 'static;

    /// Whether a key outlives the run that registered it: if so, a certificate an earlier
    /// run created without recording is adopted; if not, it is retired (nobody has its key).
    fn keys_outlive_runs(&self) -> bool;

    /// The batch directory the run works in.
    fn dir(&self) -> &BatchDir;

    /// Prepared devices for `devices`, in order.
    fn prepare(&self, devices: &[Device]) -> Result<Vec<PreparedDevice<Self::Key>>>;

    /// What a registered device becomes, made durable and journaled.
    fn deliver(&self, registered: RegisteredDevice<Self::Key>) -> Result<()>;

    /// Whether a live certificate's output exists (one a crash left unjournaled may be
    /// adopted); if not, and keys do not outlive runs, the certificate is retired.
    fn has_output(&self, serial: &str, cert: &CertificateRecord) -> Result<bool>;

    /// Whether a live certificate still needs its output (cheap; no adoption).
    fn output_missing(&self, serial: &str, cert: &CertificateRecord) -> bool;

    /// Batch claim scope: the shared claim read back from what an earlier run delivered.
    fn shared_claim(&self, _cert: &CertificateRecord) -> Result<Option<SharedClaim>> {
        Ok(None)
    }

    /// Batch claim scope: the registered stand-in as the batch's shared claim.
    fn shared_claim_of(_registered: RegisteredDevice<Self::Key>) -> Result<SharedClaim> {
        anyhow::bail!("a claim shared by the batch is made only by `claimfab batch`")
    }

    /// Batch claim scope: every device's output holding the shared claim.
    fn deliver_shared(&self, _claim: &SharedClaim) -> Result<()> {
        anyhow::bail!("a claim shared by the batch is made only by `claimfab batch`")
    }

    /// The command a run of this custody is, for the summary (`batch`, `register`).
    fn command(&self) -> &'static str;

    /// What the run leaves for the operator, named for the summary.
    fn outputs(&self) -> Vec<(&'static str, PathBuf)>;

    /// The run's results written out (the manifest, or the carried certificates), and its
    /// outcome.
    fn publish(
        &self,
        state: &RunState,
        plan: &BatchPlan,
        interrupted: bool,
        register_seconds: f64,
    ) -> Result<Outcome>;
}
