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
//!
//! Here: the floor of one batch directory ([`Floor`]) and its directories; `queue`,
//! `markers` and `logs` are its files, `files` the write and read primitives they share;
//! `handout` is what a station does with them (take, flashed), `deliver` where a taken
//! bundle goes.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Result;

pub mod deliver;
mod files;
pub mod handout;
mod logs;
mod markers;
mod queue;

use crate::batch_dir::{BATCH_FILE, BUNDLES_DIR};
use crate::core::floor_records::clean_host;
use crate::core::names::check_thing_name;
use crate::error::UserError;
use files::make_dir;

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

#[cfg(test)]
mod tests;
