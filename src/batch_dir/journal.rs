//! The batch journal file: append-only JSON lines in the batch directory, written and
//! fsynced *before* each AWS call and after each result, so a re-run after a crash knows
//! every certificate that may exist; a crash-torn last line is cut off on open. What the
//! events mean, and replaying them, is the ledger's (`core::ledger`). Commands reach the
//! file through [`EventLog`] and [`JournalStore`], so that tests can stop a run at any
//! journal point as a crash would.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::core::ledger::{Event, Replay, ReplayError};

/// Where a run's events go, each durable before `record` returns.
pub trait EventLog: Send + Sync {
    fn record(&self, event: &Event) -> Result<()>;
}

/// Opens a batch directory's journal: its events so far and a log to append to.
pub trait JournalStore: Send + Sync {
    fn open(&self, path: &Path) -> Result<(Box<dyn EventLog>, Replay)>;
}

/// The journal files on disk.
pub struct JournalFiles;

impl JournalStore for JournalFiles {
    fn open(&self, path: &Path) -> Result<(Box<dyn EventLog>, Replay)> {
        let (journal, replay) = Journal::open(path)?;
        Ok((Box::new(journal), replay))
    }
}

impl EventLog for Journal {
    fn record(&self, event: &Event) -> Result<()> {
        Journal::record(self, event)
    }
}

/// The journal file and what is known about its tail.
struct JournalFile {
    file: File,
    /// Bytes known to be complete lines.
    len: u64,
    /// Set after a failed append: the tail may hold a partial line, so nothing more may be
    /// appended after it in this run.
    failed: bool,
}

/// The open journal file. Appends are serialized and each is fsynced before returning.
pub struct Journal {
    path: PathBuf,
    file: Mutex<JournalFile>,
}

impl Journal {
    /// Opens (creating if needed) the journal, replays what it holds, and cuts off a
    /// half-written last line so new events start on a clean line.
    pub fn open(path: &Path) -> Result<(Self, Replay)> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open journal {} for writing", path.display()))?;
        let (replay, valid_len) = match Replay::from_reader(BufReader::new(&file)) {
            Ok(replayed) => replayed,
            Err(ReplayError::Read(e)) => {
                return Err(e).with_context(|| format!("cannot read journal {}", path.display()))
            }
            Err(ReplayError::Damaged { line }) => bail!(
                "journal {} is damaged at line {line} (not a crash-torn last line); repair or remove that line, then re-run",
                path.display()
            ),
        };
        let context = || format!("cannot repair the torn end of journal {}", path.display());
        if valid_len < file.metadata().with_context(context)?.len() {
            file.set_len(valid_len).with_context(context)?;
            file.sync_all().with_context(context)?;
        }
        if !existed {
            // The new file's name must survive a power cut too.
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("cannot sync directory {}", dir.display()))?;
            }
        }
        Ok((
            Self {
                path: path.to_path_buf(),
                file: Mutex::new(JournalFile {
                    file,
                    len: valid_len,
                    failed: false,
                }),
            },
            replay,
        ))
    }

    /// Appends one event durably. After a failed append every later one fails too, so no
    /// event can land after a partial line.
    pub fn record(&self, event: &Event) -> Result<()> {
        let mut line = serde_json::to_vec(event).expect("journal events always serialize");
        line.push(b'\n');
        let mut journal = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if journal.failed {
            bail!(
                "journal {} could not be written earlier in this run; free disk space or fix permissions, then re-run",
                self.path.display()
            );
        }
        let len = journal.len;
        let written = {
            use std::io::{Seek, SeekFrom};
            let file = &mut journal.file;
            file.seek(SeekFrom::Start(len))
                .and_then(|_| file.write_all(&line))
                .and_then(|()| file.sync_data())
        };
        match written {
            Ok(()) => {
                journal.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                journal.failed = true;
                // Best effort: take the partial line back off.
                let _ = journal
                    .file
                    .set_len(len)
                    .and_then(|()| journal.file.sync_data());
                Err(e).with_context(|| {
                    format!(
                        "cannot append to journal {}; free disk space or fix permissions, then re-run",
                        self.path.display()
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ledger::tests::requested;

    #[test]
    fn reopening_cuts_the_torn_tail_and_appends_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let (journal, _) = Journal::open(&path).unwrap();
            journal.record(&requested("A", "k1")).unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"event\":\"crea");
        std::fs::write(&path, &bytes).unwrap();
        {
            let (journal, replay) = Journal::open(&path).unwrap();
            assert_eq!(replay.devices.len(), 1);
            journal.record(&requested("B", "k2")).unwrap();
        }
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(
            replay.devices.len(),
            2,
            "no corruption after the repaired tail"
        );
    }
}
