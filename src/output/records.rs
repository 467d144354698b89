//! The records of `--output json`, one type per kind of line: the schema that station scripts
//! and MES integrations read (the README's "Output for programs" documents each). Every line
//! also carries `command` and `version`. Field names are stable: a new field may be added in
//! a release, none is renamed, retyped or removed without a new `version`.

use serde::Serialize;

use crate::core::manifest::ManifestRow;
use crate::core::reconcile::{Activation, Finding, FloorReport};

/// The schema version every line carries; bumped only by an incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// One line of `--output json`, tagged by its `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record<'a> {
    /// `batch`, `package`, `register`: one per device of the batch, in batch order, with
    /// the manifest's columns (`register`: its own status words) and, if the device failed
    /// in this run, why.
    Device {
        #[serde(flatten)]
        row: &'a ManifestRow,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    /// `batch`, `package`, `register`: the run's outcome.
    Summary(&'a RunSummary),
    /// `prepare`: the keys made and the CSR file to carry.
    Prepared {
        dir: &'a str,
        devices: u64,
        key_store: &'a str,
        csrs: &'a str,
        csrs_sha256: &'a str,
        seconds: f64,
    },
    /// `take`: the bundle this station now holds.
    Taken(&'a Taken),
    /// `take`: nothing left in the batch (exit 3).
    NothingLeft { dir: &'a str },
    /// `flashed`: what was recorded for a board.
    Recorded {
        serial: &'a str,
        event: &'a str,
        station: &'a str,
        /// The same outcome was recorded before; nothing new was written.
        already_recorded: bool,
    },
    /// `verify`: one batch directory's manifest, or one bundle.
    Check {
        label: &'a str,
        ok: bool,
        findings: &'a [String],
        /// An encrypted bundle checked by its SHA-256 only (no `--identity`).
        contents_unchecked: bool,
    },
    /// `verify`: the counts.
    Checked {
        checked: usize,
        with_findings: usize,
    },
    /// `station-key`, `batch-key`: the public half of the key written to `file`.
    Key {
        file: &'a str,
        /// `station-key`: the age recipient (`age1...`); `batch-key`: the public key as
        /// `take --batch-key` and `[station] batch_keys` take it.
        public_key: &'a str,
    },
    /// `revoke`, `close`, `retire-provisioned`, `rotate` (retiring the old claims): what
    /// became of one device's claim, or of a batch's shared claim.
    Retirement {
        dir: &'a str,
        /// None for a batch's shared claim (`shared_claim`: every device carries it).
        serial: Option<&'a str>,
        shared_claim: bool,
        certificate_id: Option<&'a str>,
        /// `retired` (it reached the asked state), `failed` (AWS refused or did not
        /// answer: re-run to retry) or `skipped` (the device has no certificate).
        result: &'a str,
        /// What was done, or why it failed, in words.
        detail: &'a str,
        /// The station that held the bundle (took it, never recorded it), if one did.
        held_by: Option<&'a str>,
    },
    /// `close`: a claim its plan retires (without `--yes`, only planned), and why.
    ToRetire {
        dir: &'a str,
        serial: &'a str,
        certificate_id: &'a str,
        reason: &'a str,
    },
    /// The same commands: one batch directory's outcome.
    RetirementSummary {
        dir: &'a str,
        /// Devices whose claim is now out of service (each device of a shared claim).
        retired: usize,
        /// Claims AWS did not take out of service: re-run to retry.
        failed: usize,
        /// Selected bundles a station held, retired all the same.
        held: &'a [HeldBundle<'a>],
    },
    /// `rotate`: the rotation's state once its new batch is complete (its devices and the
    /// old claims' retirements come before, as `batch` and `revoke` records).
    Rotated {
        old_dir: &'a str,
        new_dir: &'a str,
        /// rotation.csv: each device's old and new certificate.
        report: &'a str,
        /// The old claims are retired (INACTIVE).
        old_retired: bool,
        /// With `--retire-after`: not before this time (RFC 3339).
        retire_not_before: Option<&'a str>,
    },
    /// `audit`: one batch directory: how many devices have provisioned (their thing exists)
    /// and what the stations did.
    Batch {
        activation: &'a Activation,
        floor: &'a FloorReport,
    },
    /// `audit`: one drift between a manifest and AWS.
    Finding(&'a Finding),
    /// `audit`: the counts (exit 1 when `findings` > 0).
    Audited { batches: usize, findings: usize },
    /// `setup`: one resource of the account's fleet-provisioning setup, in order.
    Step {
        /// e.g. `iam role`, `iot policy`, `iot template`.
        kind: &'a str,
        name: &'a str,
        /// `created`, `ok`, `updated`, `drift` (left as it is), `create` / `update` (with
        /// `--plan`), or `failed` (the run stopped here; the error is the detail).
        result: &'a str,
        detail: Option<&'a str>,
    },
    /// `setup`: the counts, and where the setup record was written.
    SetupSummary {
        account_id: &'a str,
        region: &'a str,
        plan: bool,
        changes: usize,
        drifts: usize,
        /// STATION.setup.json; none with `--plan`.
        record: Option<&'a str>,
    },
    /// `report`: the page written.
    FloorReport {
        file: &'a str,
        batches: usize,
        /// False with `--offline`: provisioning is marked unknown.
        provisioning_known: bool,
    },
    /// `man --out`: the pages written.
    ManPages { dir: &'a str, files: &'a [String] },
}

/// The outcome of a `batch`, `register` or `package` run.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    pub dir: String,
    pub devices: usize,
    pub ready: usize,
    pub failed: usize,
    pub pending: usize,
    /// Certificates set INACTIVE in this run (keys lost to a crash, duplicates).
    pub retired: usize,
    pub interrupted: bool,
    pub seconds: f64,
    /// What the run wrote, by name (`manifest`, `bundles`, `certificates`), as paths.
    pub outputs: std::collections::BTreeMap<&'static str, String>,
}

/// One bundle handed to a station by `take`.
#[derive(Debug, Serialize)]
pub struct Taken {
    pub serial: String,
    pub thing_name: String,
    pub certificate_id: String,
    pub station: String,
    /// RFC 3339 UTC.
    pub at: String,
    /// The station held this bundle from an earlier take that was never recorded: the same
    /// identity again (exit 4), not a new one.
    pub handed_back: bool,
    /// The files extracted under `--to`, each with its Unix mode (octal text, e.g. "0600").
    pub files: Vec<TakenFile>,
}

/// One file `take` extracted.
#[derive(Debug, Serialize)]
pub struct TakenFile {
    pub path: String,
    pub mode: String,
}

/// A bundle a station held when its claim was retired.
#[derive(Debug, Serialize)]
pub struct HeldBundle<'a> {
    pub serial: &'a str,
    pub station: &'a str,
}
