//! Directory fsyncs shared by concurrent writers (group commit for renames): a rename is
//! durable once its directory is fsynced, and one fsync that starts after several renames
//! covers them all. A writer returns only after an fsync that began after its own rename.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};

/// How far one directory's renames are durable.
#[derive(Default)]
struct Progress {
    /// Renames announced, numbered in order.
    renamed: u64,
    /// Renames up to this number are covered by a finished fsync.
    synced: u64,
    /// An fsync of the directory is running.
    syncing: bool,
}

/// The shared fsyncs of one directory.
pub struct DirSync {
    dir: PathBuf,
    progress: Mutex<Progress>,
    done: Condvar,
}

impl DirSync {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            progress: Mutex::new(Progress::default()),
            done: Condvar::new(),
        }
    }

    /// Makes a rename the caller has completed in this directory durable: returns after an
    /// fsync of the directory that began after it, its own or one a concurrent writer ran.
    pub fn renamed(&self) -> Result<()> {
        let mut progress = self.lock();
        progress.renamed += 1;
        let mine = progress.renamed;
        loop {
            if progress.synced >= mine {
                return Ok(());
            }
            if progress.syncing {
                progress = self.done.wait(progress).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            progress.syncing = true;
            let covered = progress.renamed;
            drop(progress);
            let synced = File::open(&self.dir).and_then(|d| d.sync_all());
            progress = self.lock();
            progress.syncing = false;
            if synced.is_ok() {
                progress.synced = progress.synced.max(covered);
            }
            self.done.notify_all();
            // A failed fsync fails its writer; a waiter runs the next one itself.
            synced.with_context(|| format!("cannot sync directory {}", self.dir.display()))?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_writer_returns_once_covered() {
        let dir = tempfile::tempdir().unwrap();
        let sync = DirSync::new(dir.path());
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..20 {
                        sync.renamed().unwrap();
                    }
                });
            }
        });
        let progress = sync.lock();
        assert_eq!((progress.renamed, progress.synced), (160, 160));
        assert!(!progress.syncing);
    }

    #[test]
    fn a_directory_that_cannot_be_synced_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let error = DirSync::new(&gone).renamed().unwrap_err();
        assert!(
            format!("{error:#}").contains("cannot sync directory"),
            "{error:#}"
        );
    }
}
