//! The replayed ledger's record pages on disk ([`ScratchPages`]): an unlinked scratch file
//! beside the journal, so that a batch's per-device state takes disk, not memory. The file
//! has no name and vanishes when the run ends, however it ends; the journal stays the only
//! record that lasts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::core::ledger::RecordPages;

/// Appends are gathered in memory up to this size, then written in one call.
const WRITE_BUFFER: usize = 256 * 1024;

/// Record pages in an unlinked file; the newest appends are still in a write buffer.
pub struct ScratchPages {
    file: File,
    /// Bytes of the file written so far.
    written: u64,
    /// Appends after `written`, not yet in the file.
    pending: Vec<u8>,
}

impl ScratchPages {
    /// A new, nameless scratch file in `dir` (the batch directory: the same disk as the
    /// bundles, never a small tmpfs).
    pub fn create_in(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).with_context(|| {
            format!(
                "cannot create a scratch file in {}; free disk space or fix permissions",
                dir.display()
            )
        })?;
        Ok(Self {
            file,
            written: 0,
            pending: Vec::with_capacity(WRITE_BUFFER),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.pending, self.written)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }
}

impl RecordPages for ScratchPages {
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        if self.pending.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        let at = self.written + self.pending.len() as u64;
        self.pending.extend_from_slice(bytes);
        Ok(at)
    }

    fn read(&self, at: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0; len];
        match at.checked_sub(self.written) {
            // Pages are appended whole, so one is either all written or all pending.
            Some(offset) => {
                let start = usize::try_from(offset).map_err(io::Error::other)?;
                let page = start
                    .checked_add(len)
                    .and_then(|end| self.pending.get(start..end))
                    .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no such page"))?;
                bytes.copy_from_slice(page);
            }
            None => self.file.read_exact_at(&mut bytes, at)?,
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_read_back_from_the_buffer_and_from_the_file_and_leave_no_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut pages = ScratchPages::create_in(dir.path()).unwrap();
        let written: Vec<(u64, Vec<u8>)> = (0..5000u32)
            .map(|n| {
                let page = format!("page {n} {}", "x".repeat((n % 300) as usize)).into_bytes();
                (pages.append(&page).unwrap(), page)
            })
            .collect();
        assert!(pages.written > 0, "some pages reached the file");
        for (at, page) in &written {
            assert_eq!(&pages.read(*at, page.len()).unwrap(), page);
        }
        assert!(pages.read(u64::MAX / 2, 10).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
