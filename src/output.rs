//! Standard output for reports and summaries. A closed pipe (`claimfab audit | head -1`) ends
//! the process quietly with exit code 0, as ripgrep does, instead of a panic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by [`silence`]: summaries are not written at all.
static SILENT: AtomicBool = AtomicBool::new(false);

/// Turns the human summaries off for the rest of the process: for a program that runs
/// claimfab's commands as a library (the crash-point tests), whose own output is its report.
/// The binary never calls it.
pub fn silence() {
    SILENT.store(true, Ordering::Relaxed);
}

/// Writes `text` to standard output and flushes it; on a broken pipe, exits 0.
pub fn write(text: std::fmt::Arguments<'_>) {
    if SILENT.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        // Standard output is gone some other way: there is no one left to tell.
        Err(_) => {}
    }
}

/// `println!` that ends quietly on a broken pipe.
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
