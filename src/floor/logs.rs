//! Each station's own files on the floor: its pending note (the serial it took and has not
//! yet recorded, and the host it took it on) and its append-only log (`stations/ID/log.csv`:
//! handed-out, flashed, spoiled), a crash-torn last line cut off before the next append.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use crate::core::floor_records::{
    parse_pending_note, pending_note_text, FloorEvent, LogRecord, PendingNote, SerialHistory,
    LOG_COLUMNS,
};
use crate::error::UserError;

use super::files::{read_small, set_mode, write_replacing, Small};
use super::{check_serial, on, this_host, Floor, FILE_MODE, LOG_FILE, PENDING_FILE, STATIONS_DIR};

/// Opens a station log to append to, made 0660 if new. An existing one must be the plain
/// file at that name (checked on the open file, so a link swapped in is caught too).
pub(super) fn open_log(path: &Path) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).append(true);
    match options.clone().create_new(true).mode(FILE_MODE).open(path) {
        Ok(file) => {
            set_mode(&file, FILE_MODE).with_context(|| on(path, "create"))?;
            return Ok(file);
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| on(path, "create")),
    }
    let file = options.open(path).with_context(|| on(path, "open"))?;
    let opened = file.metadata().with_context(|| on(path, "check"))?;
    let named = fs::symlink_metadata(path).with_context(|| on(path, "check"))?;
    if !named.is_file() || (named.dev(), named.ino()) != (opened.dev(), opened.ino()) {
        anyhow::bail!(
            "{} is not a plain file (a symbolic link?); a station log must be one: move it away",
            path.display()
        );
    }
    Ok(file)
}

/// How much of a log's end is read to find its last line: far more than a record.
pub(super) const TAIL_BYTES: u64 = 4096;

/// The last [`TAIL_BYTES`] of a file.
pub(super) fn read_tail(file: &mut File) -> std::io::Result<Vec<u8>> {
    let len = file.metadata()?.len();
    let start = len.saturating_sub(TAIL_BYTES);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(start))?;
    file.take(len - start).read_to_end(&mut tail)?;
    Ok(tail)
}

/// Cuts a crash-torn last line off an append-only file; returns the length kept.
pub(super) fn cut_torn_tail(file: &mut File) -> std::io::Result<u64> {
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
pub(super) fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
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

impl Floor {
    /// The serial `station` took and has not recorded yet.
    pub fn pending(&self, station: &str) -> Result<Option<String>> {
        Ok(self.pending_note(station)?.map(|note| note.serial))
    }

    /// `station`'s pending note: the serial and the host it was taken on. A note naming no
    /// serial (`../`, `/`) is refused: it would become a path.
    pub fn pending_note(&self, station: &str) -> Result<Option<PendingNote>> {
        let Some(dir) = self.station_dir(station, false)? else {
            return Ok(None);
        };
        let path = dir.join(PENDING_FILE);
        let refuse = |problem: &str| {
            UserError::output_dir(
                &self.root,
                format!("{STATIONS_DIR}/{station}/{PENDING_FILE} {problem}; it must not be edited: remove it (the station then holds nothing) and run take again"),
            )
        };
        match read_small(&path)? {
            Small::Absent => Ok(None),
            Small::Odd(why) => Err(refuse(why).into()),
            Small::Bytes(bytes) => parse_pending_note(&String::from_utf8_lossy(&bytes))
                .map_err(|problem| refuse(&problem).into()),
        }
    }

    /// Records, before claiming it, the serial `station` is about to take and this host: a
    /// crash between the claim and the station's record then loses nothing.
    pub fn set_pending(&self, station: &str, serial: &str) -> Result<()> {
        check_serial(serial)?;
        let Some(dir) = self.station_dir(station, true)? else {
            anyhow::bail!("{}", on(&self.path(STATIONS_DIR), "create"));
        };
        let note = pending_note_text(serial, &this_host());
        write_replacing(&dir.join(PENDING_FILE), note.as_bytes())
    }

    pub fn clear_pending(&self, station: &str) -> Result<()> {
        let Some(dir) = self.station_dir(station, false)? else {
            return Ok(());
        };
        let path = dir.join(PENDING_FILE);
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
        let Some(dir) = self.station_dir(&record.station, true)? else {
            anyhow::bail!("{}", on(&self.path(STATIONS_DIR), "create"));
        };
        let path = dir.join(LOG_FILE);
        let mut file = open_log(&path)?;
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
        match self.station_dir(station, false)? {
            Some(dir) => read_log(&dir.join(LOG_FILE)),
            None => Ok(Vec::new()),
        }
    }

    /// Every record of every station's log. A station directory that is a symbolic link is
    /// refused, as everywhere on the floor.
    pub fn all_logs(&self) -> Result<Vec<LogRecord>> {
        let Some(dir) = self.stations_dir(false)? else {
            return Ok(Vec::new());
        };
        let mut records = Vec::new();
        for entry in fs::read_dir(&dir).with_context(|| on(&dir, "list"))? {
            let entry = entry.with_context(|| on(&dir, "list"))?;
            let kind = entry
                .file_type()
                .with_context(|| on(&entry.path(), "check"))?;
            if kind.is_symlink() {
                self.lstat_dir(&entry.path())?;
            } else if kind.is_dir() {
                records.extend(read_log(&entry.path().join(LOG_FILE))?);
            }
        }
        Ok(records)
    }

    /// The last whole record of `station`'s log, from its tail alone.
    pub fn last_record(&self, station: &str) -> Result<Option<LogRecord>> {
        let Some(dir) = self.station_dir(station, false)? else {
            return Ok(None);
        };
        let path = dir.join(LOG_FILE);
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
