//! What a batch run knows while it runs: the journal's replayed state, kept in step with
//! every event the journal has made durable, and this run's own tallies (why devices failed,
//! how many certificates were retired), which are not journaled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};

use crate::batch_dir::journal::EventLog;
pub(crate) use crate::batch_dir::journal::SCRATCH_FAILED;
use crate::core::ledger::{Event, Replay};

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The journal and the state it replays to, shared by the parts of a run.
pub struct RunState {
    log: Box<dyn EventLog>,
    replay: Mutex<Replay>,
    failures: Mutex<HashMap<String, String>>,
    retired: AtomicUsize,
}

impl RunState {
    /// `replay` is what the journal held when it was opened.
    pub fn new(log: Box<dyn EventLog>, replay: Replay) -> Self {
        Self {
            log,
            replay: Mutex::new(replay),
            failures: Mutex::new(HashMap::new()),
            retired: AtomicUsize::new(0),
        }
    }

    /// Journals an event durably, then applies it to the state. The fsync may block, so an
    /// async runtime is told to move other work off this thread meanwhile.
    pub fn record(&self, event: Event) -> Result<()> {
        tokio::task::block_in_place(|| self.log.record(&event))?;
        lock(&self.replay).apply(event).context(SCRATCH_FAILED)
    }

    /// Journals events in order with one fsync for all, then applies them to the state.
    pub fn record_all(&self, events: Vec<Event>) -> Result<()> {
        tokio::task::block_in_place(|| self.log.record_all(&events))?;
        let mut replay = lock(&self.replay);
        events
            .into_iter()
            .try_for_each(|event| replay.apply(event))
            .context(SCRATCH_FAILED)
    }

    /// Reads the replayed state.
    pub fn read<T>(&self, look: impl FnOnce(&Replay) -> T) -> T {
        look(&lock(&self.replay))
    }

    /// Notes why a device did not finish in this run.
    pub fn fail(&self, serial: &str, reason: String) {
        lock(&self.failures).insert(serial.to_string(), reason);
    }

    pub fn failures(&self) -> HashMap<String, String> {
        lock(&self.failures).clone()
    }

    pub fn count_retired(&self) {
        self.retired.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retired(&self) -> usize {
        self.retired.load(Ordering::Relaxed)
    }
}
