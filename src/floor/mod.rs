//! The factory floor's files in a batch directory, which stations on several machines share
//! over a network drive (NFS or SMB): the hand-out queue, a claim marker per bundle taken
//! and per certificate handed out, and per station its pending take and its append-only log.
//! No lock is taken: `flock` is not to be trusted on network drives. Exactly-once hand-out
//! rests on `link(2)`, atomic on NFS and local disks alike; a reply lost on NFS is settled by
//! reading the marker back (each claim's record carries a random token), never by a link
//! count the client may have cached. Where a share cannot hard-link, an exclusive create
//! stands in, and a marker a crash left incomplete is read as claimed, owner unknown, until
//! the station that made it completes it. Every other file is written to a temporary name
//! and renamed into place, atomic there too.
//!
//! ```text
//! DIR/stations/queue          ready devices in batch order, fixed-width records
//! DIR/stations/queue.index    serial -> queue record, a hash table (see core::floor_records)
//! DIR/stations/cursor         where the next take starts looking (a hint, may lag)
//! DIR/handout/SERIAL          the claim marker: who took the bundle, when (JSON)
//! DIR/handout-certificates/ID the certificate's marker: the serial it went out with (JSON)
//! DIR/stations/ID/pending     the serial station ID took and has not yet recorded, and host
//! DIR/stations/ID/log.csv     station ID's records: handed-out, flashed, spoiled
//! ```
//!
//! Anyone who can write the share can rewrite these files; what they cannot do is make a
//! station read or write outside the batch directory: every serial and station id is checked
//! before it becomes a path, and the floor's directories must be real directories (a
//! symbolic link is refused before anything is read through or written under it).
//!
//! Modes are set explicitly, whatever the umask: directories 0770 and files 0660. Stations
//! on several machines often run under different accounts that share the share's group; each
//! must read the others' markers and logs and make files in the same directories, and nobody
//! outside the group needs any of it. A share that fixes modes itself (SMB mount options)
//! keeps its own.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use rand_core::RngCore;
use time::OffsetDateTime;

pub mod deliver;
pub mod handout;

use crate::batch_dir::{BatchDir, BATCH_FILE, BUNDLES_DIR};
use crate::core::floor_records::{
    certificate_holder, check_certificate_id, clean_host, index_probe, index_slot, may_complete,
    parse_pending_note, parse_queue_record, pending_note_text, queue_index, queue_record,
    read_marker, CertificateClaim, Claim, CompletionFacts, FloorEvent, Handout, LogRecord,
    PendingNote, QueuedDevice, SerialHistory, CLOSED, INDEX_SLOT, LOG_COLUMNS, QUEUE_RECORD,
    UNKNOWN,
};
use crate::core::names::check_thing_name;
use crate::error::UserError;

pub const STATIONS_DIR: &str = "stations";
pub const QUEUE_FILE: &str = "stations/queue";
pub const INDEX_FILE: &str = "stations/queue.index";
pub const CURSOR_FILE: &str = "stations/cursor";
pub const HANDOUT_DIR: &str = "handout";
/// Beside `handout/`, not in it: `handout/` holds one entry per bundle taken, no more.
pub const CERTIFICATES_DIR: &str = "handout-certificates";
const LOG_FILE: &str = "log.csv";
const PENDING_FILE: &str = "pending";
/// Floor files: read and written by every station account of the share's group.
const FILE_MODE: u32 = 0o660;
/// Floor directories: the same, plus making and renaming files in them.
const DIR_MODE: u32 = 0o770;
/// Far more than a hand-out record or a pending note; a bigger file is none of ours.
const SMALL_FILE_LIMIT: u64 = 4096;

/// The floor files of one batch directory.
pub struct Floor {
    root: PathBuf,
    /// The batch's bundles are encrypted for its stations (`bundles/SN.zip.age`).
    sealed: bool,
    /// Floor directories found to be real directories, so each costs one `lstat` per Floor.
    real_dirs: Mutex<HashSet<PathBuf>>,
}

/// Context for an I/O error on a floor file: what failed and the usual fix.
fn on(path: &Path, what: &str) -> String {
    format!(
        "cannot {what} {}; check that the batch directory is reachable and writable",
        path.display()
    )
}

/// This machine's host name, as a pending note records it (from the kernel; "unknown" when
/// it cannot be read).
pub fn this_host() -> String {
    let read = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    let host = read("/proc/sys/kernel/hostname")
        .filter(|h| !h.is_empty())
        .or_else(|| read("/etc/hostname"))
        .unwrap_or_default();
    clean_host(&host)
}

/// A claim marker: `dir/name`, made from `dir/.name.STATION.claim` (the station's record,
/// written first: the evidence that it made the marker, should a crash leave it incomplete).
struct Marker {
    dir: PathBuf,
    name: String,
    /// The name is the serial the record must name (a bundle's marker, not a certificate's).
    of_serial: bool,
}

impl Marker {
    fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn evidence(&self, station: &str) -> PathBuf {
        self.dir.join(format!(".{}.{station}.claim", self.name))
    }

    fn serial(&self) -> Option<&str> {
        self.of_serial.then_some(self.name.as_str())
    }
}

impl Floor {
    /// The floor of a batch directory; refuses a directory that holds no batch, and floor
    /// directories that are not real directories.
    pub fn open(root: &Path) -> Result<Self, UserError> {
        if !root.join(BATCH_FILE).is_file() {
            return Err(UserError::output_dir(
                root,
                format!("is not a claimfab batch directory (no {BATCH_FILE}); pass the directory `claimfab batch --out` made"),
            ));
        }
        let floor = Self {
            root: root.to_path_buf(),
            sealed: batch_is_sealed(root)?,
            real_dirs: Mutex::new(HashSet::new()),
        };
        for dir in [STATIONS_DIR, HANDOUT_DIR, CERTIFICATES_DIR, BUNDLES_DIR] {
            if floor.lstat_dir(&root.join(dir))? {
                floor.known_real(&root.join(dir));
            }
        }
        Ok(floor)
    }

    /// Whether the batch's bundles are encrypted for its stations.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Whether `dir` exists as a real directory: a symbolic link or a file is refused.
    fn lstat_dir(&self, dir: &Path) -> Result<bool, UserError> {
        let name = dir.strip_prefix(&self.root).unwrap_or(dir).display();
        let refuse =
            |problem: String| UserError::output_dir(&self.root, format!("{name} {problem}"));
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.file_type().is_symlink() => Err(refuse(
                "is a symbolic link; the floor's directories must be real directories on the share".into(),
            )),
            Ok(meta) if meta.is_dir() => Ok(true),
            Ok(_) => Err(refuse(
                "is not a directory; the floor's directories must be real directories on the share: move it away".into(),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(refuse(format!(
                "cannot be checked ({e}); check that the batch directory is reachable"
            ))),
        }
    }

    /// Notes `dir` as a real directory, not to be checked again by this Floor.
    fn known_real(&self, dir: &Path) {
        let mut known = self.real_dirs.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(dir.to_path_buf());
    }

    fn is_known_real(&self, dir: &Path) -> bool {
        let known = self.real_dirs.lock().unwrap_or_else(|e| e.into_inner());
        known.contains(dir)
    }

    /// `dir` (under a directory already checked) as a real directory, made 0770 when absent
    /// and `create`; `None` when absent and not made.
    fn real_dir(&self, dir: PathBuf, create: bool) -> Result<Option<PathBuf>> {
        if self.is_known_real(&dir) {
            return Ok(Some(dir));
        }
        if !self.lstat_dir(&dir)? {
            if !create {
                return Ok(None);
            }
            make_dir(&dir)?;
            // Another station may have made it meanwhile: whoever did, it must be real.
            if !self.lstat_dir(&dir)? {
                anyhow::bail!("{} vanished as it was made", on(&dir, "create"));
            }
        }
        self.known_real(&dir);
        Ok(Some(dir))
    }

    fn stations_dir(&self, create: bool) -> Result<Option<PathBuf>> {
        self.real_dir(self.root.join(STATIONS_DIR), create)
    }

    /// `stations/ID/`, checked (and made when `create`); `None` when absent.
    fn station_dir(&self, station: &str, create: bool) -> Result<Option<PathBuf>> {
        check_component(station)?;
        match self.stations_dir(create)? {
            Some(stations) => self.real_dir(stations.join(station), create),
            None => Ok(None),
        }
    }

    fn handout_dir(&self, create: bool) -> Result<Option<PathBuf>> {
        self.real_dir(self.root.join(HANDOUT_DIR), create)
    }

    /// The claim marker of a serial; `None` when `handout/` does not exist yet.
    fn marker(&self, serial: &str, create: bool) -> Result<Option<Marker>> {
        check_serial(serial)?;
        Ok(self.handout_dir(create)?.map(|dir| Marker {
            dir,
            name: serial.to_string(),
            of_serial: true,
        }))
    }

    /// The marker of a certificate; `None` when its directory does not exist yet.
    fn certificate_marker(&self, certificate_id: &str, create: bool) -> Result<Option<Marker>> {
        check_certificate_id(certificate_id).map_err(|rule| {
            anyhow::anyhow!("{rule}; the bundle names no valid certificate: check the batch with claimfab verify")
        })?;
        let dir = self.real_dir(self.root.join(CERTIFICATES_DIR), create)?;
        Ok(dir.map(|dir| Marker {
            dir,
            name: certificate_id.to_string(),
            of_serial: false,
        }))
    }

    /// Replaces the queue with `devices` (the ready ones, in batch order) and its index, and
    /// resets the cursor, so a device made ready by a re-run is found again. The index goes
    /// first: a reader between the two renames may miss a serial, never find a wrong one.
    pub fn write_queue(&self, devices: impl Iterator<Item = QueuedDevice>) -> Result<()> {
        self.stations_dir(true)?;
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

    /// What the claim marker on a serial's bundle holds; `None` when it was not handed out.
    /// Never fails on what the marker holds: any marker means claimed.
    pub fn claim_state(&self, serial: &str) -> Result<Option<Claim>> {
        match self.marker(serial, false)? {
            Some(marker) => Ok(read_claim(&marker.path(), marker.serial())?.map(|(c, _)| c)),
            None => Ok(None),
        }
    }

    /// The claim marker on a serial's bundle, if it was handed out. A marker whose owner
    /// cannot be read (incomplete or foreign, see [`Floor::claim_state`]) comes back with
    /// station [`UNKNOWN`], the marker's modification time and no token, so callers that
    /// only name the holder keep working; deciding callers should use `claim_state`.
    pub fn handout(&self, serial: &str) -> Result<Option<Handout>> {
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(None);
        };
        let path = marker.path();
        Ok(match read_claim(&path, Some(serial))? {
            None => None,
            Some((Claim::Complete(handout), _)) => Some(handout),
            Some(_) => Some(Handout {
                station: UNKNOWN.to_string(),
                serial: serial.to_string(),
                at: modified(&path),
                token: String::new(),
            }),
        })
    }

    /// Whether the serial already carries a claim marker, whatever it holds (one `stat`).
    pub fn is_claimed(&self, serial: &str) -> Result<bool> {
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(false);
        };
        let path = marker.path();
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| on(&path, "check")),
        }
    }

    /// Tries to put `station`'s claim marker on `serial`: true if this call did, false if
    /// the serial was already claimed. The marker's content is complete before it appears
    /// (except on a share without hard links, see [`Floor::complete_claim`]).
    pub fn claim(&self, station: &str, serial: &str, at: OffsetDateTime) -> Result<bool> {
        check_component(station)?;
        let Some(marker) = self.marker(serial, true)? else {
            anyhow::bail!("{}", on(&self.path(HANDOUT_DIR), "create"));
        };
        make_marker(&marker, station, &claim_record(station, serial, at)?)
    }

    /// Completes the marker on `serial` as `station`'s when a crash left it incomplete (a
    /// share without hard links: the marker is created, then written). True when the marker
    /// is `station`'s whole record now: completed, or whole and `station`'s already. Only
    /// the station that made it may: its pending note names the serial and this host, its
    /// own record from before the claim is still there, and no other station's is; else
    /// false, and the marker stays claimed, owner unknown, for `close` to retire.
    pub fn complete_claim(&self, station: &str, serial: &str) -> Result<bool> {
        check_component(station)?;
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(false);
        };
        match read_claim(&marker.path(), marker.serial())? {
            Some((Claim::Complete(handout), _)) => Ok(handout.station == station),
            Some((Claim::Incomplete, _)) => self.complete_marker(&marker, station, serial),
            _ => Ok(false),
        }
    }

    /// Rewrites an incomplete `marker` with `station`'s record (its evidence, renamed over
    /// it) when the facts allow (see `core::floor_records::may_complete`); true when it did.
    fn complete_marker(&self, marker: &Marker, station: &str, serial: &str) -> Result<bool> {
        let note = self.pending_note(station)?;
        let evidence_path = marker.evidence(station);
        let evidence = read_claim(&evidence_path, Some(serial))?;
        let facts = CompletionFacts {
            station,
            serial,
            note: note.as_ref(),
            host: &this_host(),
            marker: &Claim::Incomplete,
            evidence: evidence.as_ref().map(|(claim, _)| claim),
            rival_evidence: self.rival_evidence(marker, station)?,
        };
        let Some((_, bytes)) = evidence.as_ref().filter(|_| may_complete(&facts)) else {
            return Ok(false);
        };
        fs::rename(&evidence_path, marker.path())
            .with_context(|| on(&marker.path(), "complete"))?;
        sync_dir(&marker.dir);
        holds(&marker.path(), bytes)
    }

    /// Whether a station other than `station` left its record beside `marker`: it may
    /// have made the marker, so nobody completes it. One `lstat` per station of the floor.
    fn rival_evidence(&self, marker: &Marker, station: &str) -> Result<bool> {
        let mut others = vec![CLOSED.to_string()];
        if let Some(dir) = self.stations_dir(false)? {
            for entry in fs::read_dir(&dir).with_context(|| on(&dir, "list"))? {
                let entry = entry.with_context(|| on(&dir, "list"))?;
                others.extend(entry.file_name().into_string().ok());
            }
        }
        Ok(others
            .iter()
            .filter(|other| *other != station && check_component(other).is_ok())
            .any(|other| fs::symlink_metadata(marker.evidence(other)).is_ok()))
    }

    /// Puts `station`'s marker on a certificate handed out with `serial`'s bundle, so a
    /// second bundle carrying it is found: `Ours` when it is (now, or before: a hand-back or
    /// a re-run), else who holds it. Call it once the serial is this station's.
    pub fn claim_certificate(
        &self,
        station: &str,
        serial: &str,
        certificate_id: &str,
    ) -> Result<CertificateClaim> {
        check_component(station)?;
        check_serial(serial)?;
        let Some(marker) = self.certificate_marker(certificate_id, true)? else {
            anyhow::bail!("{}", on(&self.path(CERTIFICATES_DIR), "create"));
        };
        // Looked at first: this station's own incomplete marker must keep its evidence.
        match read_claim(&marker.path(), None)? {
            Some((Claim::Incomplete, _)) => {
                return Ok(match self.complete_marker(&marker, station, serial)? {
                    true => CertificateClaim::Ours,
                    false => CertificateClaim::OwnerUnknown,
                })
            }
            Some((claim, _)) => return Ok(certificate_holder(&claim, serial)),
            None => {}
        }
        let bytes = claim_record(station, serial, OffsetDateTime::now_utc())?;
        if make_marker(&marker, station, &bytes)? {
            return Ok(CertificateClaim::Ours);
        }
        Ok(match read_claim(&marker.path(), None)? {
            Some((claim, _)) => certificate_holder(&claim, serial),
            None => CertificateClaim::OwnerUnknown,
        })
    }

    /// What the marker of a certificate holds; `None` when it was not handed out.
    pub fn certificate_claim_state(&self, certificate_id: &str) -> Result<Option<Claim>> {
        match self.certificate_marker(certificate_id, false)? {
            Some(marker) => Ok(read_claim(&marker.path(), None)?.map(|(c, _)| c)),
            None => Ok(None),
        }
    }

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

/// A serial becomes a file name on the floor: only thing names pass.
fn check_serial(serial: &str) -> Result<()> {
    check_thing_name(serial).map_err(|rule| {
        anyhow::anyhow!("{serial:?} is not a serial ({rule}); it cannot name a file on the floor")
    })
}

/// A station id becomes a directory name: nothing that leaves its directory passes (ids are
/// checked by the commands; this also admits the floor's own names such as `(closed)`).
fn check_component(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        anyhow::bail!("{name:?} is not a station id; it cannot name a directory on the floor");
    }
    Ok(())
}

/// A new claim's record, with its own random token.
fn claim_record(station: &str, serial: &str, at: OffsetDateTime) -> Result<Vec<u8>> {
    let mut bits = [0u8; 16];
    rand_core::OsRng.try_fill_bytes(&mut bits).map_err(|e| {
        anyhow::anyhow!("cannot draw a random claim token ({e}); check the system's random source")
    })?;
    let handout = Handout {
        station: station.to_string(),
        serial: serial.to_string(),
        at,
        token: hex::encode(bits),
    };
    serde_json::to_vec(&handout).context("cannot encode a hand-out record")
}

/// Makes `marker` with `bytes` as `station`'s: true if this call did. The station's record
/// goes beside it first, and stays only if an error leaves the marker unsettled (the
/// evidence `complete_claim` needs); a lost race removes it at once.
fn make_marker(marker: &Marker, station: &str, bytes: &[u8]) -> Result<bool> {
    let evidence = marker.evidence(station);
    write_new(&evidence, bytes)?;
    let claimed = link_exclusively(&evidence, &marker.path(), bytes)?;
    // Best effort: a record left over only makes a later completion of this marker refuse.
    let _ = fs::remove_file(&evidence);
    if claimed {
        sync_dir(&marker.dir);
    }
    Ok(claimed)
}

/// Links `unique` (holding `bytes`) to `marker` unless `marker` exists: true if the link
/// is ours. On NFS a lost reply can make a successful link report EEXIST; the marker's
/// content decides then (our record carries our token), not a link count the client may
/// have cached. A share that cannot hard-link gets an exclusive create instead.
fn link_exclusively(unique: &Path, marker: &Path, bytes: &[u8]) -> Result<bool> {
    match fs::hard_link(unique, marker) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => holds(marker, bytes),
        // EPERM (1) or EOPNOTSUPP (95): this share has no hard links.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 95)) => create_exclusively(marker, bytes),
        Err(e) => Err(e).with_context(|| on(marker, "create")),
    }
}

/// Creates `marker` exclusively and writes `bytes` into it: visible before it is whole, so a
/// crash in between leaves it incomplete (see `Floor::complete_claim`). Read back at the end:
/// true only if it holds our record.
fn create_exclusively(marker: &Path, bytes: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(marker)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| on(marker, "create")),
    };
    set_mode(&file, FILE_MODE)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| on(marker, "write"))?;
    holds(marker, bytes)
}

/// Whether `path` holds exactly `bytes`: our own record, token and all.
fn holds(path: &Path, bytes: &[u8]) -> Result<bool> {
    Ok(matches!(read_small(path)?, Small::Bytes(found) if found == bytes))
}

/// A small floor file (a marker, a pending note), read without following a link.
enum Small {
    Absent,
    /// Not a regular file of a sensible size: why.
    Odd(&'static str),
    Bytes(Vec<u8>),
}

/// Reads a small floor file. A link, a directory, a FIFO or a huge file is reported, not
/// read: reading it could leave the batch directory, block or fill memory.
fn read_small(path: &Path) -> Result<Small> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Small::Absent),
        Err(e) => return Err(e).with_context(|| on(path, "check")),
    };
    if meta.file_type().is_symlink() {
        return Ok(Small::Odd("is a symbolic link"));
    }
    if !meta.is_file() {
        return Ok(Small::Odd("is not a regular file"));
    }
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Small::Absent),
        Err(e) => return Err(e).with_context(|| on(path, "open")),
    };
    let mut bytes = Vec::new();
    file.take(SMALL_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .with_context(|| on(path, "read"))?;
    if bytes.len() as u64 > SMALL_FILE_LIMIT {
        return Ok(Small::Odd("is larger than any claimfab record"));
    }
    Ok(Small::Bytes(bytes))
}

/// A marker (or a station's evidence) and what it holds, with its bytes; `None` if absent.
fn read_claim(path: &Path, serial: Option<&str>) -> Result<Option<(Claim, Vec<u8>)>> {
    Ok(match read_small(path)? {
        Small::Absent => None,
        Small::Odd(why) => Some((Claim::Foreign(why.to_string()), Vec::new())),
        Small::Bytes(bytes) => Some((read_marker(&bytes, serial), bytes)),
    })
}

/// When a file was last written (the epoch if the share will not say).
fn modified(path: &Path) -> OffsetDateTime {
    fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .map_or(OffsetDateTime::UNIX_EPOCH, OffsetDateTime::from)
}

/// Opens a station log to append to, made 0660 if new. An existing one must be the plain
/// file at that name (checked on the open file, so a link swapped in is caught too).
fn open_log(path: &Path) -> Result<File> {
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

/// Makes a floor directory 0770 (a racer's is fine: the caller checks what is there).
fn make_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => File::open(dir)
            .and_then(|d| set_mode(&d, DIR_MODE))
            .with_context(|| on(dir, "create")),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).with_context(|| on(dir, "create")),
    }
}

/// Gives a file we just made its mode, past the umask. A share that fixes modes itself
/// (EPERM, EOPNOTSUPP, ENOSYS from chmod) keeps its own.
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    match file.set_permissions(Permissions::from_mode(mode)) {
        Err(e) if matches!(e.raw_os_error(), Some(1 | 38 | 95)) => Ok(()),
        other => other,
    }
}

/// Writes a new file (0660) and syncs it; whatever was at that name is removed first, and a
/// link put there meanwhile is not followed (exclusive create).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    remove_if_present(path)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .with_context(|| on(path, "create"))?;
    set_mode(&file, FILE_MODE)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| on(path, "write"))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| on(path, "remove"))
        }
        _ => Ok(()),
    }
}

/// Replaces `path` atomically and durably: a temporary file beside it, synced, renamed over
/// it.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replaces `path` atomically (a temporary file beside it, 0660, renamed over it); durably
/// when `synced`. Its directory is made and checked by the caller.
fn replace(path: &Path, bytes: &[u8], synced: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".floor")
        .tempfile_in(dir)
        .with_context(|| on(dir, "write in"))?;
    set_mode(temp.as_file(), FILE_MODE)
        .and_then(|()| temp.write_all(bytes))
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

    use std::os::unix::fs::symlink;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The state a station leaves when it stops between creating its marker and writing it
    /// on a share without hard links: its pending note, its record beside the marker, and
    /// the marker empty.
    fn cut_short(floor: &Floor, station: &str, serial: &str) -> Vec<u8> {
        floor.set_pending(station, serial).unwrap();
        let marker = floor.marker(serial, true).unwrap().unwrap();
        let bytes = claim_record(station, serial, OffsetDateTime::now_utc()).unwrap();
        write_new(&marker.evidence(station), &bytes).unwrap();
        File::create(marker.path()).unwrap();
        bytes
    }

    #[test]
    fn a_lost_reply_is_settled_by_the_markers_content() {
        let (_dir, floor) = floor();
        let dir = floor.handout_dir(true).unwrap().unwrap();
        let ours = claim_record("s1", "SN1", OffsetDateTime::now_utc()).unwrap();
        let unique = dir.join(".SN1.s1.claim");
        write_new(&unique, &ours).unwrap();
        // The link was made but its reply lost: the retry sees EEXIST, and the content says ours.
        fs::hard_link(&unique, dir.join("SN1")).unwrap();
        assert!(link_exclusively(&unique, &dir.join("SN1"), &ours).unwrap());
        // Another station's marker, even one with the same station and time: its token differs.
        let mut theirs: Handout = serde_json::from_slice(&ours).unwrap();
        theirs.token = "f".repeat(32);
        fs::write(dir.join("SN2"), serde_json::to_vec(&theirs).unwrap()).unwrap();
        assert!(!link_exclusively(&unique, &dir.join("SN2"), &ours).unwrap());
        // The same holds where the share cannot hard-link: an exclusive create, read back.
        assert!(create_exclusively(&dir.join("SN3"), &ours).unwrap());
        assert_eq!(fs::read(dir.join("SN3")).unwrap(), ours);
        assert!(!create_exclusively(&dir.join("SN3"), &ours).unwrap());
        assert_eq!(mode(&dir.join("SN3")), 0o660);
    }

    #[test]
    fn each_claim_carries_its_own_token() {
        let (_dir, floor) = floor();
        let now = OffsetDateTime::now_utc();
        assert!(floor.claim("s1", "SN1", now).unwrap());
        assert!(floor.claim("s1", "SN2", now).unwrap());
        let token = |serial| floor.handout(serial).unwrap().unwrap().token;
        assert_eq!(token("SN1").len(), 32);
        assert!(token("SN1").chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(token("SN1"), token("SN2"));
    }

    #[test]
    fn an_incomplete_marker_is_claimed_owner_unknown_never_an_error() {
        let (_dir, floor) = floor();
        fs::create_dir(floor.path(HANDOUT_DIR)).unwrap();
        for (serial, bytes) in [
            ("SN1", &b""[..]),
            ("SN2", &b"{\"station\":\"s1\",\"ser"[..]),
            ("SN3", &b"edited by hand"[..]),
        ] {
            fs::write(floor.path(HANDOUT_DIR).join(serial), bytes).unwrap();
            assert!(floor.is_claimed(serial).unwrap());
            let state = floor.claim_state(serial).unwrap().unwrap();
            assert_eq!(state.station(), UNKNOWN, "{state:?}");
            let handout = floor.handout(serial).unwrap().unwrap();
            assert_eq!(
                (handout.station.as_str(), handout.serial.as_str()),
                (UNKNOWN, serial)
            );
            assert!(!floor
                .claim("s2", serial, OffsetDateTime::now_utc())
                .unwrap());
            // Nobody without the evidence completes it.
            floor.set_pending("s2", serial).unwrap();
            assert!(!floor.complete_claim("s2", serial).unwrap());
        }
        assert_eq!(floor.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
        assert_eq!(floor.claim_state("SN2").unwrap(), Some(Claim::Incomplete));
        assert!(matches!(
            floor.claim_state("SN3").unwrap(),
            Some(Claim::Foreign(_))
        ));
        assert_eq!(floor.claim_state("SN4").unwrap(), None);
        // A link or a directory where a marker should be is claimed, and never read through.
        symlink("/etc/passwd", floor.path(HANDOUT_DIR).join("SN5")).unwrap();
        fs::create_dir(floor.path(HANDOUT_DIR).join("SN6")).unwrap();
        for serial in ["SN5", "SN6"] {
            assert!(matches!(
                floor.claim_state(serial).unwrap(),
                Some(Claim::Foreign(_))
            ));
            assert_eq!(floor.handout(serial).unwrap().unwrap().station, UNKNOWN);
        }
    }

    #[test]
    fn the_station_that_was_cut_short_completes_its_marker() {
        let (_dir, floor) = floor();
        let bytes = cut_short(&floor, "s1", "SN1");
        assert_eq!(floor.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
        assert!(!floor.complete_claim("s2", "SN1").unwrap(), "not s2's");
        assert!(floor.complete_claim("s1", "SN1").unwrap());
        assert_eq!(fs::read(floor.path("handout/SN1")).unwrap(), bytes);
        assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
        assert!(
            !floor.path("handout/.SN1.s1.claim").exists(),
            "evidence used up"
        );
        assert_eq!(mode(&floor.path("handout/SN1")), 0o660);
        // Asked again (a re-run), the answer stands.
        assert!(floor.complete_claim("s1", "SN1").unwrap());
        assert!(!floor.complete_claim("s2", "SN1").unwrap());
    }

    #[test]
    fn any_doubt_leaves_an_incomplete_marker_alone() {
        // Another station's record beside it: either may have made it.
        let (_a, a) = floor();
        cut_short(&a, "s1", "SN1");
        cut_short(&a, "s2", "SN1");
        assert!(!a.complete_claim("s1", "SN1").unwrap());
        assert!(!a.complete_claim("s2", "SN1").unwrap());
        // close's record counts too, though close has no station directory.
        let (_b, b) = floor();
        cut_short(&b, "s1", "SN1");
        let evidence = b.marker("SN1", false).unwrap().unwrap().evidence(CLOSED);
        fs::write(evidence, b"{}").unwrap();
        assert!(!b.complete_claim("s1", "SN1").unwrap());
        // The station moved on to another serial since.
        let (_c, c) = floor();
        cut_short(&c, "s1", "SN1");
        c.set_pending("s1", "SN2").unwrap();
        assert!(!c.complete_claim("s1", "SN1").unwrap());
        // Its note was written on another machine (one station id on two hosts).
        let (_d, d) = floor();
        cut_short(&d, "s1", "SN1");
        fs::write(d.path("stations/s1/pending"), "SN1\nhost=elsewhere\n").unwrap();
        assert!(!d.complete_claim("s1", "SN1").unwrap());
        assert_eq!(d.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
    }

    #[test]
    fn a_certificate_is_claimed_once_per_serial() {
        let (_dir, floor) = floor();
        let id = "ab".repeat(32);
        assert_eq!(floor.certificate_claim_state(&id).unwrap(), None);
        let ours = floor.claim_certificate("s1", "SN1", &id).unwrap();
        assert_eq!(ours, CertificateClaim::Ours);
        // A hand-back or a re-run of the same serial: still ours, whoever asks.
        assert_eq!(floor.claim_certificate("s1", "SN1", &id).unwrap(), ours);
        assert_eq!(floor.claim_certificate("s2", "SN1", &id).unwrap(), ours);
        // A second bundle carrying the same certificate.
        assert_eq!(
            floor.claim_certificate("s2", "SN2", &id).unwrap(),
            CertificateClaim::HeldBy {
                serial: "SN1".into(),
                station: "s1".into()
            }
        );
        let marker = floor.path(CERTIFICATES_DIR).join(&id);
        assert_eq!(mode(&marker), 0o660);
        assert_eq!(mode(&floor.path(CERTIFICATES_DIR)), 0o770);
        let names: Vec<_> = fs::read_dir(floor.path(CERTIFICATES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(&id)],
            "no temporary file left"
        );
        for bad in ["../../etc/passwd".to_string(), "AB".repeat(32)] {
            let err = floor.claim_certificate("s1", "SN1", &bad).unwrap_err();
            assert!(err.to_string().contains("64 lowercase hex"), "{err}");
        }
        assert!(floor.claim_certificate("s1", "../SN1", &id).is_err());
    }

    #[test]
    fn a_certificate_marker_cut_short_is_completed_by_its_maker_only() {
        let (_dir, floor) = floor();
        let id = "cd".repeat(32);
        floor.set_pending("s1", "SN1").unwrap();
        let marker = floor.certificate_marker(&id, true).unwrap().unwrap();
        let bytes = claim_record("s1", "SN1", OffsetDateTime::now_utc()).unwrap();
        write_new(&marker.evidence("s1"), &bytes).unwrap();
        File::create(marker.path()).unwrap();
        assert_eq!(
            floor.claim_certificate("s2", "SN2", &id).unwrap(),
            CertificateClaim::OwnerUnknown
        );
        assert_eq!(
            floor.claim_certificate("s1", "SN1", &id).unwrap(),
            CertificateClaim::Ours
        );
        assert_eq!(fs::read(marker.path()).unwrap(), bytes);
    }

    #[test]
    fn a_pending_note_names_the_host() {
        let (_dir, floor) = floor();
        floor.set_pending("s1", "SN9").unwrap();
        let text = fs::read_to_string(floor.path("stations/s1/pending")).unwrap();
        assert_eq!(text.lines().next(), Some("SN9"), "the serial comes first");
        let note = floor.pending_note("s1").unwrap().unwrap();
        assert_eq!(note.serial, "SN9");
        assert_eq!(note.host, Some(this_host()));
        assert!(!this_host().is_empty());
        // An old note still reads.
        fs::write(floor.path("stations/s1/pending"), "SN8\n").unwrap();
        assert_eq!(floor.pending("s1").unwrap().as_deref(), Some("SN8"));
        assert_eq!(floor.pending_note("s1").unwrap().unwrap().host, None);
    }

    #[test]
    fn a_pending_note_naming_a_path_is_refused() {
        let (_dir, floor) = floor();
        floor.set_pending("s1", "SN1").unwrap();
        fs::write(floor.path("stations/s1/pending"), "../../etc/passwd\n").unwrap();
        let err = floor.pending("s1").unwrap_err().to_string();
        assert!(err.contains("not a serial") && !err.contains('\n'), "{err}");
        assert!(floor.set_pending("s1", "../x").is_err());
        assert!(floor.is_claimed("../x").is_err());
        assert!(floor.claim("s1", "a/b", OffsetDateTime::now_utc()).is_err());
        assert!(floor.set_pending("..", "SN1").is_err());
    }

    #[test]
    fn floor_directories_that_are_links_are_refused() {
        for dir in [STATIONS_DIR, HANDOUT_DIR, CERTIFICATES_DIR, BUNDLES_DIR] {
            let (batch, _) = floor();
            let elsewhere = tempfile::tempdir().unwrap();
            symlink(elsewhere.path(), batch.path().join(dir)).unwrap();
            let Err(err) = Floor::open(batch.path()) else {
                panic!("{dir} followed")
            };
            let err = err.to_string();
            assert!(
                err.contains(&format!("{dir} is a symbolic link")) && !err.contains('\n'),
                "{err}"
            );
        }
        let (batch, _) = floor();
        fs::write(batch.path().join(HANDOUT_DIR), b"").unwrap();
        let Err(err) = Floor::open(batch.path()) else {
            panic!("a file taken for a directory")
        };
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    #[test]
    fn a_station_directory_that_is_a_link_is_refused() {
        let (_dir, floor) = floor();
        floor.set_pending("s1", "SN1").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("pending"), "SN2\n").unwrap();
        symlink(elsewhere.path(), floor.path("stations/s2")).unwrap();
        let refused = |result: Result<()>| {
            let err = result.unwrap_err().to_string();
            assert!(err.contains("stations/s2 is a symbolic link"), "{err}");
        };
        refused(floor.pending("s2").map(drop));
        refused(floor.set_pending("s2", "SN3"));
        refused(floor.append_log(&record("s2", "SN3", FloorEvent::HandedOut)));
        refused(floor.clear_pending("s2"));
        refused(floor.all_logs().map(drop));
        let names: Vec<_> = fs::read_dir(elsewhere.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("pending")],
            "nothing written there"
        );
        assert_eq!(
            fs::read_to_string(elsewhere.path().join("pending")).unwrap(),
            "SN2\n"
        );
    }

    #[test]
    fn a_log_that_is_a_link_is_not_appended_to() {
        let (_dir, floor) = floor();
        floor.set_pending("s1", "SN1").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("profile");
        fs::write(&target, "keep\n").unwrap();
        symlink(&target, floor.path("stations/s1/log.csv")).unwrap();
        let err = floor
            .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
            .unwrap_err();
        assert!(err.to_string().contains("not a plain file"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    }

    #[test]
    fn floor_files_and_directories_get_their_modes_whatever_the_umask() {
        let (_dir, floor) = floor();
        let now = OffsetDateTime::now_utc();
        floor
            .write_queue((0..2).map(|i| QueuedDevice {
                serial: format!("SN{i}"),
                thing_name: format!("gg-SN{i}"),
            }))
            .unwrap();
        floor.advance_cursor(1).unwrap();
        floor.set_pending("s1", "SN0").unwrap();
        assert!(floor.claim("s1", "SN0", now).unwrap());
        floor
            .append_log(&record("s1", "SN0", FloorEvent::HandedOut))
            .unwrap();
        for dir in [STATIONS_DIR, "stations/s1", HANDOUT_DIR] {
            assert_eq!(mode(&floor.path(dir)), 0o770, "{dir}");
        }
        for file in [
            QUEUE_FILE,
            INDEX_FILE,
            CURSOR_FILE,
            "handout/SN0",
            "stations/s1/pending",
            "stations/s1/log.csv",
        ] {
            assert_eq!(mode(&floor.path(file)), 0o660, "{file}");
        }
    }

    #[test]
    fn a_cut_short_claims_evidence_is_replaced_not_followed() {
        let (_dir, floor) = floor();
        let dir = floor.handout_dir(true).unwrap().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = elsewhere.path().join("victim");
        fs::write(&target, "keep\n").unwrap();
        symlink(&target, dir.join(".SN1.s1.claim")).unwrap();
        assert!(floor.claim("s1", "SN1", OffsetDateTime::now_utc()).unwrap());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
        assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
    }
}
