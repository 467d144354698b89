//! The factory floor's files in a batch directory, which stations on several machines share
//! over a network drive (NFS or SMB): the hand-out queue, a claim marker per bundle taken,
//! and per station its pending take and its append-only log. No lock is taken: `flock` is
//! not to be trusted on network drives. Exactly-once hand-out rests on `link(2)`, atomic on
//! NFS and local disks alike, with the link-count check open(2) prescribes for a reply lost
//! on NFS; where a share cannot hard-link, on an exclusive create. Every other file is
//! written to a temporary name and renamed into place, atomic there too.
//!
//! ```text
//! DIR/stations/queue          ready devices in batch order, fixed-width records
//! DIR/stations/queue.index    serial -> queue record, a hash table (see core::floor)
//! DIR/stations/cursor         where the next take starts looking (a hint, may lag)
//! DIR/handout/SERIAL          the claim marker: who took the bundle, when (JSON)
//! DIR/stations/ID/pending     the serial station ID took and has not yet recorded
//! DIR/stations/ID/log.csv     station ID's records: handed-out, flashed, spoiled
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::core::floor::{
    index_probe, index_slot, parse_queue_record, queue_index, queue_record, FloorEvent, Handout,
    LogRecord, QueuedDevice, SerialHistory, INDEX_SLOT, LOG_COLUMNS, QUEUE_RECORD,
};
use crate::error::UserError;
use crate::outdir::{BatchDir, BATCH_FILE};

pub const STATIONS_DIR: &str = "stations";
pub const QUEUE_FILE: &str = "stations/queue";
pub const INDEX_FILE: &str = "stations/queue.index";
pub const CURSOR_FILE: &str = "stations/cursor";
pub const HANDOUT_DIR: &str = "handout";
const LOG_FILE: &str = "log.csv";
const PENDING_FILE: &str = "pending";

/// The floor files of one batch directory.
pub struct Floor {
    root: PathBuf,
    /// The batch's bundles are encrypted for its stations (`bundles/SN.zip.age`).
    sealed: bool,
}

/// Context for an I/O error on a floor file: what failed and the usual fix.
fn on(path: &Path, what: &str) -> String {
    format!(
        "cannot {what} {}; check that the batch directory is reachable and writable",
        path.display()
    )
}

impl Floor {
    /// The floor of a batch directory; refuses a directory that holds no batch.
    pub fn open(root: &Path) -> Result<Self, UserError> {
        if !root.join(BATCH_FILE).is_file() {
            return Err(UserError::output_dir(
                root,
                format!("is not a claimfab batch directory (no {BATCH_FILE}); pass the directory `claimfab batch --out` made"),
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            sealed: batch_is_sealed(root)?,
        })
    }

    /// Whether the batch's bundles are encrypted for its stations.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    fn station_dir(&self, station: &str) -> PathBuf {
        self.root.join(STATIONS_DIR).join(station)
    }

    fn marker(&self, serial: &str) -> PathBuf {
        self.root.join(HANDOUT_DIR).join(serial)
    }

    /// Replaces the queue with `devices` (the ready ones, in batch order) and its index, and
    /// resets the cursor, so a device made ready by a re-run is found again. The index goes
    /// first: a reader between the two renames may miss a serial, never find a wrong one.
    pub fn write_queue(&self, devices: impl Iterator<Item = QueuedDevice>) -> Result<()> {
        let devices: Vec<QueuedDevice> = devices.collect();
        let index = queue_index(devices.iter().map(|d| d.serial.as_str()));
        write_replacing(&self.path(INDEX_FILE), &index)?;
        let text: String = devices.iter().map(queue_record).collect();
        write_replacing(&self.path(QUEUE_FILE), text.as_bytes())?;
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
        let path = self.path(QUEUE_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| on(&path, "open")),
        };
        let len = file.metadata().with_context(|| on(&path, "read"))?.len();
        Ok(Some((file, len as usize / QUEUE_RECORD)))
    }

    /// Queue record `index`, read with one positioned read.
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
        replace(&self.path(CURSOR_FILE), to.to_string().as_bytes(), false)
    }

    /// The claim marker on a serial's bundle, if it was handed out.
    pub fn handout(&self, serial: &str) -> Result<Option<Handout>> {
        let path = self.marker(serial);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is not a claimfab hand-out record; it must not be edited",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| on(&path, "read")),
        }
    }

    /// Whether the serial already carries a claim marker (one `stat`).
    pub fn is_claimed(&self, serial: &str) -> Result<bool> {
        let path = self.marker(serial);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| on(&path, "check")),
        }
    }

    /// Tries to put `station`'s claim marker on `serial`: true if this call did, false if
    /// the serial was already claimed. The marker's content is complete before it appears.
    pub fn claim(&self, station: &str, serial: &str, at: OffsetDateTime) -> Result<bool> {
        let dir = self.root.join(HANDOUT_DIR);
        fs::create_dir_all(&dir).with_context(|| on(&dir, "create"))?;
        let handout = Handout {
            station: station.to_string(),
            serial: serial.to_string(),
            at,
        };
        let bytes = serde_json::to_vec(&handout).expect("a hand-out record serializes");
        let unique = dir.join(format!(
            ".{serial}.{station}.{}.{}.tmp",
            std::process::id(),
            at.unix_timestamp_nanos()
        ));
        write_synced(&unique, &bytes)?;
        let claimed = link_exclusively(&unique, &self.marker(serial), &bytes);
        let _ = fs::remove_file(&unique);
        let claimed = claimed?;
        if claimed {
            sync_dir(&dir);
        }
        Ok(claimed)
    }

    /// The serial `station` took and has not recorded yet.
    pub fn pending(&self, station: &str) -> Result<Option<String>> {
        let path = self.station_dir(station).join(PENDING_FILE);
        match fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| on(&path, "read")),
        }
    }

    /// Records, before claiming it, the serial `station` is about to take: a crash between
    /// the claim and the station's record then loses nothing.
    pub fn set_pending(&self, station: &str, serial: &str) -> Result<()> {
        let dir = self.station_dir(station);
        fs::create_dir_all(&dir).with_context(|| on(&dir, "create"))?;
        write_replacing(&dir.join(PENDING_FILE), serial.as_bytes())
    }

    pub fn clear_pending(&self, station: &str) -> Result<()> {
        let path = self.station_dir(station).join(PENDING_FILE);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| on(&path, "remove"))
            }
            _ => Ok(()),
        }
    }

    /// Appends one record to the station's log, durably; a line torn by a crash is cut off
    /// first, so every line stays whole.
    pub fn append_log(&self, record: &LogRecord) -> Result<()> {
        let dir = self.station_dir(&record.station);
        fs::create_dir_all(&dir).with_context(|| on(&dir, "create"))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| on(&path, "open"))?;
        let whole = cut_torn_tail(&mut file).with_context(|| on(&path, "repair"))?;
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        if whole == 0 {
            csv.write_record(LOG_COLUMNS)?;
        }
        csv.serialize(record)?;
        let line = csv.into_inner().map_err(|e| e.into_error())?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .with_context(|| on(&path, "append to"))
    }

    /// Every record of one station's log.
    pub fn station_log(&self, station: &str) -> Result<Vec<LogRecord>> {
        read_log(&self.station_dir(station).join(LOG_FILE))
    }

    /// Every record of every station's log.
    pub fn all_logs(&self) -> Result<Vec<LogRecord>> {
        let dir = self.root.join(STATIONS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| on(&dir, "list")),
        };
        let mut records = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| on(&dir, "list"))?;
            if entry.path().is_dir() {
                records.extend(read_log(&entry.path().join(LOG_FILE))?);
            }
        }
        Ok(records)
    }

    /// The last whole record of `station`'s log, from its tail alone.
    pub fn last_record(&self, station: &str) -> Result<Option<LogRecord>> {
        let path = self.station_dir(station).join(LOG_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| on(&path, "open")),
        };
        let tail = read_tail(&mut file).with_context(|| on(&path, "read"))?;
        let whole = tail.iter().rposition(|b| *b == b'\n').unwrap_or(0);
        let start = tail[..whole]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let line = &tail[start..whole];
        if line.is_empty() || line == LOG_COLUMNS.join(",").as_bytes() {
            return Ok(None);
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line);
        match reader.deserialize::<LogRecord>().next() {
            Some(Ok(record)) => Ok(Some(record)),
            _ => Err(anyhow::anyhow!(
                "{}: the last line is not a station log record; it must not be edited",
                path.display()
            )),
        }
    }

    /// What `station`'s log says of `serial`: from the last record when that settles it
    /// (the usual case: a station records the serial it holds), else from the whole log.
    pub fn history(&self, station: &str, serial: &str) -> Result<SerialHistory> {
        if let Some(history) = self
            .last_record(station)?
            .and_then(|last| SerialHistory::from_last(&last, serial))
        {
            return Ok(history);
        }
        Ok(SerialHistory::of(&self.station_log(station)?, serial))
    }

    /// The latest record of `serial` in `station`'s log that is not a hand-out, if any.
    pub fn recorded(&self, station: &str, serial: &str) -> Result<Option<LogRecord>> {
        Ok(self
            .station_log(station)?
            .into_iter()
            .rfind(|r| r.serial == serial && r.event != FloorEvent::HandedOut))
    }
}

/// Whether `batch.json` names recipients the bundles are encrypted to.
fn batch_is_sealed(root: &Path) -> Result<bool, UserError> {
    #[derive(serde::Deserialize)]
    struct Sealing {
        #[serde(default)]
        encrypt_to: Vec<String>,
    }
    let path = root.join(BATCH_FILE);
    let text = fs::read_to_string(&path)
        .map_err(|e| UserError::output_dir(root, format!("cannot read {BATCH_FILE} ({e})")))?;
    let sealing: Sealing = serde_json::from_str(&text).map_err(|e| {
        UserError::output_dir(root, format!("{BATCH_FILE} is not a claimfab batch ({e})"))
    })?;
    Ok(!sealing.encrypt_to.is_empty())
}

/// Links `unique` (holding `bytes`) to `marker` unless `marker` exists: true if the link
/// is ours. On NFS a lost reply can make a successful link report EEXIST, so as open(2)
/// advises, the link count of `unique` decides. A share that cannot hard-link gets an
/// exclusive create instead.
fn link_exclusively(unique: &Path, marker: &Path, bytes: &[u8]) -> Result<bool> {
    match fs::hard_link(unique, marker) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let links = fs::metadata(unique)
                .with_context(|| on(unique, "check"))?
                .nlink();
            Ok(links == 2)
        }
        // EPERM (1) or EOPNOTSUPP (95): this share has no hard links.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 95)) => {
            match OpenOptions::new().write(true).create_new(true).open(marker) {
                Ok(mut file) => {
                    file.write_all(bytes)
                        .and_then(|()| file.sync_all())
                        .with_context(|| on(marker, "write"))?;
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e).with_context(|| on(marker, "create")),
            }
        }
        Err(e) => Err(e).with_context(|| on(marker, "create")),
    }
}

/// Writes a new file and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(path).with_context(|| on(path, "create"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| on(path, "write"))
}

/// Replaces `path` atomically and durably: a temporary file beside it, synced, renamed over
/// it.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replaces `path` atomically (a temporary file beside it, renamed over it); durably when
/// `synced`.
fn replace(path: &Path, bytes: &[u8], synced: bool) -> Result<()> {
    let dir = path.parent().expect("floor files live in a directory");
    fs::create_dir_all(dir).with_context(|| on(dir, "create"))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".floor")
        .tempfile_in(dir)
        .with_context(|| on(dir, "write in"))?;
    temp.write_all(bytes)
        .and_then(|()| match synced {
            true => temp.as_file().sync_all(),
            false => Ok(()),
        })
        .with_context(|| on(path, "write"))?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| on(path, "replace"))?;
    if synced {
        sync_dir(dir);
    }
    Ok(())
}

/// Makes a directory's new names durable; best effort (some network shares refuse it, and
/// they commit names on the server anyway).
fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}

/// How much of a log's end is read to find its last line: far more than a record.
const TAIL_BYTES: u64 = 4096;

/// The last [`TAIL_BYTES`] of a file.
fn read_tail(file: &mut File) -> std::io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.take(len - start).read_to_end(&mut tail)?;
    Ok(tail)
}

/// Cuts a crash-torn last line off an append-only file; returns the length kept.
fn cut_torn_tail(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let start = len.saturating_sub(TAIL_BYTES);
    let tail = read_tail(file)?;
    if tail.last() == Some(&b'\n') {
        return Ok(len);
    }
    let keep = match tail.iter().rposition(|b| *b == b'\n') {
        Some(at) => start + at as u64 + 1,
        None if start == 0 => 0,
        None => return Ok(len), // a line over 4 KiB is not ours: leave it for the reader to name
    };
    file.set_len(keep)?;
    file.sync_data()?;
    Ok(keep)
}

/// Reads a station log; a torn last line (no newline) is ignored, any other bad line is an
/// error naming the file and line.
fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| on(path, "read")),
    };
    let whole = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    let mut reader = csv::Reader::from_reader(&bytes[..whole]);
    let mut records = Vec::new();
    for (index, record) in reader.deserialize::<LogRecord>().enumerate() {
        records.push(record.map_err(|e| {
            anyhow::anyhow!(
                "{} line {}: not a station log record ({e}); it must not be edited",
                path.display(),
                index + 2
            )
        })?);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor() -> (tempfile::TempDir, Floor) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(BATCH_FILE), "{}").unwrap();
        let floor = Floor::open(dir.path()).unwrap();
        (dir, floor)
    }

    fn record(station: &str, serial: &str, event: FloorEvent) -> LogRecord {
        LogRecord {
            station: station.into(),
            time: "2026-11-26T00:00:00Z".into(),
            serial: serial.into(),
            certificate_id: "a".repeat(64),
            event,
        }
    }

    #[test]
    fn a_serial_is_claimed_once() {
        let (_dir, floor) = floor();
        let now = OffsetDateTime::now_utc();
        assert!(floor.claim("s1", "SN1", now).unwrap());
        assert!(!floor.claim("s2", "SN1", now).unwrap());
        assert!(!floor.claim("s1", "SN1", now).unwrap());
        assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
        assert!(floor.is_claimed("SN1").unwrap());
        assert!(!floor.is_claimed("SN2").unwrap());
        let leftovers: Vec<_> = fs::read_dir(floor.path(HANDOUT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers,
            vec![std::ffi::OsString::from("SN1")],
            "no temporary files left"
        );
    }

    #[test]
    fn queue_records_are_read_by_index() {
        let (_dir, floor) = floor();
        assert!(floor.open_queue().unwrap().is_none());
        let devices = (0..3).map(|i| QueuedDevice {
            serial: format!("SN{i}"),
            thing_name: format!("gg-SN{i}"),
        });
        floor.advance_cursor(7).unwrap();
        floor.write_queue(devices).unwrap();
        assert_eq!(floor.cursor(), 0, "a new queue starts from the beginning");
        let (queue, len) = floor.open_queue().unwrap().unwrap();
        assert_eq!(len, 3);
        assert_eq!(floor.queued(&queue, 2).unwrap().thing_name, "gg-SN2");
    }

    #[test]
    fn logs_append_after_a_torn_line_and_read_back() {
        let (_dir, floor) = floor();
        floor
            .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
            .unwrap();
        let path = floor.path("stations/s1/log.csv");
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"s1,2026-11-26T00:00:01Z,SN2,");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            floor.station_log("s1").unwrap().len(),
            1,
            "torn line ignored"
        );
        floor
            .append_log(&record("s1", "SN1", FloorEvent::Flashed))
            .unwrap();
        let log = floor.station_log("s1").unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(
            floor.recorded("s1", "SN1").unwrap().unwrap().event,
            FloorEvent::Flashed
        );
        floor
            .append_log(&record("s2", "SN3", FloorEvent::HandedOut))
            .unwrap();
        assert_eq!(floor.all_logs().unwrap().len(), 3);
    }

    #[test]
    fn a_hand_edited_log_line_is_named() {
        let (_dir, floor) = floor();
        floor
            .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
            .unwrap();
        let path = floor.path("stations/s1/log.csv");
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str("s1,yesterday,SN2,x,burnt\n");
        fs::write(&path, text).unwrap();
        let err = floor.station_log("s1").unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn pending_is_set_read_and_cleared() {
        let (_dir, floor) = floor();
        assert_eq!(floor.pending("s1").unwrap(), None);
        floor.set_pending("s1", "SN9").unwrap();
        assert_eq!(floor.pending("s1").unwrap().as_deref(), Some("SN9"));
        floor.clear_pending("s1").unwrap();
        floor.clear_pending("s1").unwrap();
        assert_eq!(floor.pending("s1").unwrap(), None);
    }

    #[test]
    fn a_directory_without_a_batch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let Err(err) = Floor::open(dir.path()) else {
            panic!("opened a floor without a batch")
        };
        assert!(
            err.to_string().contains("not a claimfab batch directory"),
            "{err}"
        );
    }

    #[test]
    fn a_queued_serial_is_found_through_the_index() {
        let (_dir, floor) = floor();
        let devices = (0..50).map(|i| QueuedDevice {
            serial: format!("SN{i}"),
            thing_name: format!("gg-SN{i}"),
        });
        floor.write_queue(devices).unwrap();
        let (queue, _) = floor.open_queue().unwrap().unwrap();
        for i in [0, 17, 49] {
            let found = floor.find_queued(&queue, &format!("SN{i}")).unwrap();
            assert_eq!(found.unwrap().thing_name, format!("gg-SN{i}"));
        }
        assert_eq!(floor.find_queued(&queue, "SN50").unwrap(), None);
        // A retired device leaves the queue, and the index with it.
        floor
            .write_queue((1..3).map(|i| QueuedDevice {
                serial: format!("SN{i}"),
                thing_name: format!("gg-SN{i}"),
            }))
            .unwrap();
        let (queue, len) = floor.open_queue().unwrap().unwrap();
        assert_eq!(len, 2);
        assert_eq!(floor.find_queued(&queue, "SN0").unwrap(), None);
        assert!(floor.find_queued(&queue, "SN2").unwrap().is_some());
    }

    #[test]
    fn the_last_record_settles_a_serials_history() {
        let (_dir, floor) = floor();
        assert_eq!(floor.last_record("station1").unwrap(), None);
        floor
            .append_log(&record("station1", "SN1", FloorEvent::HandedOut))
            .unwrap();
        assert_eq!(
            floor.last_record("station1").unwrap().unwrap().serial,
            "SN1",
            "a station id that starts like the header is still a record"
        );
        floor
            .append_log(&record("station1", "SN1", FloorEvent::Flashed))
            .unwrap();
        floor
            .append_log(&record("station1", "SN2", FloorEvent::HandedOut))
            .unwrap();
        let sn2 = floor.history("station1", "SN2").unwrap();
        assert!(sn2.handed_out && sn2.outcome.is_none());
        let sn1 = floor.history("station1", "SN1").unwrap();
        assert_eq!(sn1.outcome.unwrap().event, FloorEvent::Flashed);
        assert_eq!(
            floor.history("station1", "SN3").unwrap(),
            SerialHistory::default()
        );
    }
}
