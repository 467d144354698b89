//! Standard output for reports and summaries, in one of two forms (`--output`): human text
//! on standard output, or one JSON object per line on standard output (the records of
//! `records`, a versioned schema) with the human text moved to standard error. A closed pipe
//! (`claimfab revoke ... | head -1`) stops the output quietly, never the command: a run that
//! has begun retiring claims or writing bundles finishes (its manifest written), whoever
//! stopped reading; no panic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde::Serialize;

pub mod records;

use records::Record;

/// Set by [`silence`]: summaries are not written at all.
static SILENT: AtomicBool = AtomicBool::new(false);
/// Set once standard output is found closed: nothing more is written to it.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Set by [`set_format`]: records on standard output, human text on standard error.
static JSON: AtomicBool = AtomicBool::new(false);
/// The subcommand this process runs, named in every record.
static COMMAND: OnceLock<String> = OnceLock::new();

/// `--output`: who reads standard output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// People: summaries and reports as text.
    #[default]
    Text,
    /// Programs: one JSON object per line (schemas in the README); the text goes to
    /// standard error.
    Json,
}

/// Sets the process's output form and the subcommand its records name, once, before the
/// command runs.
pub fn set_format(format: OutputFormat, command: &str) {
    JSON.store(format == OutputFormat::Json, Ordering::Relaxed);
    let _ = COMMAND.set(command.to_string());
}

/// Whether standard output carries JSON records.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// One line of `--output json`: the command, its schema version, then the record's own
/// fields (its `type` first).
#[derive(Serialize)]
struct Line<'a> {
    command: &'a str,
    version: u32,
    #[serde(flatten)]
    record: &'a Record<'a>,
}

/// Writes one record as a JSON line on standard output when the output is JSON; nothing
/// otherwise (the text says the same).
pub fn emit(record: &Record) {
    if !json() || SILENT.load(Ordering::Relaxed) {
        return;
    }
    let line = Line {
        command: COMMAND.get().map_or("", String::as_str),
        version: records::SCHEMA_VERSION,
        record,
    };
    let mut text = serde_json::to_vec(&line).expect("records always serialize");
    text.push(b'\n');
    to_stdout(|out| out.write_all(&text));
}

/// Turns the human summaries off for the rest of the process: for a program that runs
/// claimfab's commands as a library (the crash-point tests), whose own output is its report.
/// The binary never calls it.
pub fn silence() {
    SILENT.store(true, Ordering::Relaxed);
}

/// Writes `text` to standard output (standard error when the output is JSON) and flushes
/// it.
pub fn write(text: std::fmt::Arguments<'_>) {
    if SILENT.load(Ordering::Relaxed) {
        return;
    }
    if json() {
        // Standard error gone: there is no one left to tell.
        let _ = std::io::stderr().lock().write_fmt(text);
        return;
    }
    to_stdout(|out| out.write_fmt(text));
}

/// Writes to standard output and flushes, unless it was found closed. A closed pipe, or
/// standard output gone another way, ends the writing, never the command: the reader left,
/// and there is no one to tell.
fn to_stdout(write: impl FnOnce(&mut std::io::StdoutLock) -> std::io::Result<()>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if write(&mut out).and_then(|()| out.flush()).is_err() {
        CLOSED.store(true, Ordering::Relaxed);
    }
}

/// `println!` that stops writing, quietly, once standard output is closed.
#[macro_export]
macro_rules! say {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes raw bytes (a bundle for a flashing script) to standard output and flushes them.
/// Unlike [`write`], a broken pipe is returned, not an exit 0: the caller must say the bytes
/// did not arrive.
pub fn write_bytes(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush())
}
