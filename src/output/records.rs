//! The records of `--output json`, one type per kind of line: the schema that station scripts
//! and MES integrations read (the README's "Output for programs" documents each). Every line
//! also carries `command` and `version`. Field names are stable: a new field may be added in
//! a release, none is renamed, retyped or removed without a new `version`.

use serde::Serialize;

use crate::core::manifest::ManifestRow;

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
