//! The hand-out queue on the floor: the ready devices in batch order as fixed-width records
//! (`stations/queue`), the serial index a `take --serial` probes (`stations/queue.index`),
//! and the cursor where the next take starts looking (a hint that may lag).

use std::borrow::Cow;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::batch_dir::BatchDir;
use crate::core::devices::DeviceList;
use crate::core::floor_records::{
    index_probe, index_slot, parse_queue_record, queue_index, queue_record, QueuedDevice,
    INDEX_SLOT, QUEUE_RECORD,
};

use super::files::{replace, replace_streamed, write_replacing};
use super::{on, Floor, CURSOR_FILE, INDEX_FILE, QUEUE_FILE};

impl Floor {
    /// Replaces the queue with `devices` (the ready ones, in batch order) and its index, and
    /// resets the cursor, so a device made ready by a re-run is found again. The index goes
    /// first: a reader between the two renames may miss a serial, never find a wrong one.
    pub fn write_queue(&self, devices: &DeviceList) -> Result<()> {
        self.write_queue_of(|| devices.pairs())
    }

    /// [`Floor::write_queue`] with the devices (serial, thing name) as `devices()` yields
    /// them, read twice (the index, then the queue), so that no list of them is made.
    pub fn write_queue_of<'a, I>(&self, devices: impl Fn() -> I) -> Result<()>
    where
        I: ExactSizeIterator<Item = (Cow<'a, str>, Cow<'a, str>)>,
    {
        self.stations_dir(true)?;
        let index = queue_index(devices().map(|(serial, _)| serial));
        write_replacing(&self.path(INDEX_FILE), &index)?;
        // Streamed: a million-device queue is a quarter of a gigabyte of fixed-width records.
        replace_streamed(&self.path(QUEUE_FILE), true, |file| {
            devices().try_for_each(|(serial, thing_name)| {
                let record = queue_record(&QueuedDevice {
                    serial: serial.to_string(),
                    thing_name: thing_name.to_string(),
                });
                file.write_all(record.as_bytes())
            })
        })?;
        match fs::remove_file(self.path(CURSOR_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| on(&self.path(CURSOR_FILE), "reset"))
            }
            _ => Ok(()),
        }
    }

    /// The queue file, open for reading, and how many records it holds; `None` when the
    /// batch has written none yet.
    pub fn open_queue(&self) -> Result<Option<(File, usize)>> {
        if self.stations_dir(false)?.is_none() {
            return Ok(None);
        }
        let path = self.path(QUEUE_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| on(&path, "open")),
        };
        let len = file.metadata().with_context(|| on(&path, "read"))?.len();
        Ok(Some((file, len as usize / QUEUE_RECORD)))
    }

    /// Queue record `index`, read with one positioned read. A record whose serial or thing
    /// name is not a thing name (`../`, `/`) is damage, refused before it becomes a path.
    pub fn queued(&self, queue: &File, index: usize) -> Result<QueuedDevice> {
        let mut record = [0u8; QUEUE_RECORD];
        let path = self.path(QUEUE_FILE);
        queue
            .read_exact_at(&mut record, (index * QUEUE_RECORD) as u64)
            .with_context(|| on(&path, "read"))?;
        parse_queue_record(&record).ok_or_else(|| {
            anyhow::anyhow!(
                "{} is damaged at record {index}; re-run `claimfab batch` on this directory to rewrite it",
                path.display()
            )
        })
    }

    /// The queued device with this serial, through the index: a few positioned reads,
    /// whatever the batch size. `None` when it is not queued (not ready, retired, unknown).
    pub fn find_queued(&self, queue: &File, serial: &str) -> Result<Option<QueuedDevice>> {
        let path = self.path(INDEX_FILE);
        let index = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| on(&path, "open")),
        };
        let slots =
            index.metadata().with_context(|| on(&path, "read"))?.len() as usize / INDEX_SLOT;
        for slot in index_probe(serial, slots) {
            let mut bytes = [0u8; INDEX_SLOT];
            index
                .read_exact_at(&mut bytes, (slot * INDEX_SLOT) as u64)
                .with_context(|| on(&path, "read"))?;
            let Some(record) = index_slot(bytes) else {
                return Ok(None);
            };
            // A record past the end or another serial: a queue rewritten meanwhile, or a
            // collision; either way, look on.
            match self.queued(queue, record) {
                Ok(device) if device.serial == serial => return Ok(Some(device)),
                _ => continue,
            }
        }
        Ok(None)
    }

    /// The bundle file of a serial.
    pub fn bundle(&self, serial: &str) -> PathBuf {
        self.root.join(BatchDir::bundle_name(serial, self.sealed))
    }

    /// Where to start looking for the next bundle not handed out (0 when unknown).
    pub fn cursor(&self) -> usize {
        fs::read_to_string(self.path(CURSOR_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Moves the hint on. Racing stations may move it back a little; that costs a few
    /// checks of markers already there, never a double hand-out. Not synced: a hint lost to
    /// a power cut only makes the next take start further back.
    pub fn advance_cursor(&self, to: usize) -> Result<()> {
        self.stations_dir(true)?;
        replace(&self.path(CURSOR_FILE), to.to_string().as_bytes(), false)
    }
}
