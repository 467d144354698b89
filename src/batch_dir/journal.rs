//! The batch journal file: append-only JSON lines in the batch directory, written and
//! fsynced *before* each AWS call and after each result, so a re-run after a crash knows
//! every certificate that may exist; a crash-torn last line is cut off on open. Concurrent
//! appends share their fsyncs (group commit), and none returns before its line is durable. What the
//! events mean, and replaying them, is the ledger's (`core::ledger`). Commands reach the
//! file through [`EventLog`] and [`JournalStore`], so that tests can stop a run at any
//! journal point as a crash would.

use std::fs::{File, OpenOptions};
use std::io::BufReader;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use anyhow::{bail, Context, Result};

use super::record_pages::ScratchPages;
use crate::core::ledger::{Event, Replay, ReplayError};

/// The replayed state keeps its records' pages in a scratch file beside the journal; this
/// is what a command says when that file fails it.
pub const SCRATCH_FAILED: &str =
    "cannot keep the batch's state in its scratch file beside journal.jsonl; free disk space, then re-run";

/// Where a run's events go, each durable before `record` returns.
pub trait EventLog: Send + Sync {
    fn record(&self, event: &Event) -> Result<()>;

    /// Records `events` in order, all durable on return; a log may share one fsync among
    /// them (an error may leave a leading part of them recorded, as a crash would).
    fn record_all(&self, events: &[Event]) -> Result<()> {
        events.iter().try_for_each(|event| self.record(event))
    }
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

    fn record_all(&self, events: &[Event]) -> Result<()> {
        Journal::record_all(self, events)
    }
}

/// What the writers of one journal share: the lines waiting to be written, and how far
/// the file is durable. Appends (one line, or several recorded together) are numbered in the
/// order they were queued.
struct Commits {
    /// Lines queued and not yet written, in order.
    queued: Vec<u8>,
    /// The number of the last append queued.
    last_queued: u64,
    /// Appends up to this number are on disk (written and fsynced).
    durable: u64,
    /// Bytes of the file known to be complete lines.
    len: u64,
    /// A writer is writing and syncing a group now.
    syncing: bool,
    /// Set after a failed write: the tail may hold a partial line, so nothing more may be
    /// appended after it in this run.
    failed: bool,
}

/// The open journal file. Appends are made durable in groups: the first writer to find no
/// group in flight writes every queued line and fsyncs once, while the others wait; nobody
/// returns before the fsync that covers its own line.
pub struct Journal {
    path: PathBuf,
    /// Touched only by the writer of the group in flight.
    file: Mutex<File>,
    commits: Mutex<Commits>,
    committed: Condvar,
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
        let (replay, valid_len) = replay_and_repair(&file, path)?;
        if !existed {
            // The new file's name must survive a power cut too.
            if let Some(dir) = path.parent() {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("cannot sync directory {}", dir.display()))?;
            }
        }
        let commits = Commits {
            queued: Vec::new(),
            last_queued: 0,
            durable: 0,
            len: valid_len,
            syncing: false,
            failed: false,
        };
        let journal = Self {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            commits: Mutex::new(commits),
            committed: Condvar::new(),
        };
        Ok((journal, replay))
    }

    /// Appends one event durably: returns once the fsync that covers it is done. After a
    /// failed write every later append fails too, so no event can land after a partial line.
    pub fn record(&self, event: &Event) -> Result<()> {
        self.record_all(std::slice::from_ref(event))
    }

    /// Appends events in order, durably: one fsync covers them all (and whatever other
    /// writers queued meanwhile).
    pub fn record_all(&self, events: &[Event]) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let mut lines = Vec::new();
        for event in events {
            serde_json::to_writer(&mut lines, event).expect("journal events always serialize");
            lines.push(b'\n');
        }
        let mut commits = self.lock_commits();
        if commits.failed {
            return Err(self.failed_earlier());
        }
        commits.queued.extend_from_slice(&lines);
        commits.last_queued += 1;
        let mine = commits.last_queued;
        loop {
            if commits.durable >= mine {
                return Ok(());
            }
            if commits.failed {
                return Err(self.failed_earlier());
            }
            if commits.syncing {
                commits = self
                    .committed
                    .wait(commits)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            commits = self.write_group(commits)?;
        }
    }

    /// Writes and fsyncs every queued line as one group, the commits' lock released
    /// meanwhile; wakes the writers waiting on it.
    fn write_group<'a>(
        &'a self,
        mut commits: MutexGuard<'a, Commits>,
    ) -> Result<MutexGuard<'a, Commits>> {
        let group = std::mem::take(&mut commits.queued);
        let (last, offset) = (commits.last_queued, commits.len);
        commits.syncing = true;
        drop(commits);
        let written = {
            let file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            let result = file
                .write_all_at(&group, offset)
                .and_then(|()| file.sync_data());
            if result.is_err() {
                // Best effort: take the partial group back off.
                let _ = file.set_len(offset).and_then(|()| file.sync_data());
            }
            result
        };
        let mut commits = self.lock_commits();
        commits.syncing = false;
        match &written {
            Ok(()) => {
                commits.len += group.len() as u64;
                commits.durable = last;
            }
            Err(_) => commits.failed = true,
        }
        self.committed.notify_all();
        match written {
            Ok(()) => Ok(commits),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot append to journal {}; free disk space or fix permissions, then re-run",
                    self.path.display()
                )
            }),
        }
    }

    fn lock_commits(&self) -> MutexGuard<'_, Commits> {
        self.commits.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed_earlier(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "journal {} could not be written earlier in this run; free disk space or fix permissions, then re-run",
            self.path.display()
        )
    }
}

/// Replays the journal and cuts off a crash-torn last line; returns the replay and the
/// length of the complete lines.
fn replay_and_repair(file: &File, path: &Path) -> Result<(Replay, u64)> {
    let pages = ScratchPages::create_in(path.parent().unwrap_or(Path::new(".")))?;
    let (replay, valid_len) = match Replay::from_reader(BufReader::new(file), Box::new(pages)) {
        Ok(replayed) => replayed,
        Err(ReplayError::Read(e)) => {
            return Err(e).with_context(|| format!("cannot read journal {}", path.display()))
        }
        Err(ReplayError::Pages(e)) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot keep the state of journal {} in a scratch file beside it; free disk space, then re-run",
                    path.display()
                )
            })
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
    Ok((replay, valid_len))
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
            assert_eq!(replay.len(), 1);
            journal.record(&requested("B", "k2")).unwrap();
        }
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.len(), 2, "no corruption after the repaired tail");
    }

    #[test]
    fn concurrent_appends_are_all_durable_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        std::thread::scope(|scope| {
            for writer in 0..8 {
                let journal = &journal;
                scope.spawn(move || {
                    for n in 0..50 {
                        let serial = format!("W{writer}-{n}");
                        journal.record(&requested(&serial, &serial)).unwrap();
                    }
                });
            }
        });
        drop(journal);
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.len(), 400, "every event, each a whole line");
    }

    #[test]
    fn events_recorded_together_land_in_order_beside_single_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        std::thread::scope(|scope| {
            let journal = &journal;
            scope.spawn(move || {
                for n in 0..20 {
                    let group: Vec<Event> = (0..10)
                        .map(|i| format!("G{n}-{i}"))
                        .map(|serial| requested(&serial, &serial))
                        .collect();
                    journal.record_all(&group).unwrap();
                }
            });
            scope.spawn(move || {
                for n in 0..50 {
                    let serial = format!("S{n}");
                    journal.record(&requested(&serial, &serial)).unwrap();
                }
            });
        });
        journal.record_all(&[]).unwrap();
        drop(journal);
        let text = std::fs::read_to_string(&path).unwrap();
        let grouped: Vec<&str> = text.lines().filter(|l| l.contains("\"G")).collect();
        assert_eq!(grouped.len(), 200);
        assert!(grouped[0].contains("\"G0-0\"") && grouped[199].contains("\"G19-9\""));
        let (_, replay) = Journal::open(&path).unwrap();
        assert_eq!(replay.len(), 250, "every event, each a whole line");
    }
}
