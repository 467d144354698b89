//! The batch directory: checked before anything is created, then made, locked against a
//! second claimfab, and written only through atomic replace (temp file, fsync, rename, fsync
//! of the directory). It holds `batch.json` (what the batch is), `journal.jsonl`,
//! `manifest.csv` and `bundles/`; `spec` says what a batch is and reads one back for every
//! command, `journal` is the batch's append-only journal file. The stations' files in the
//! same directory are `floor`'s.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::core::sealed::SEALED_SUFFIX;
use crate::error::UserError;

mod dir_sync;
pub mod journal;
mod record_pages;
pub mod spec;

use dir_sync::DirSync;

pub const BATCH_FILE: &str = "batch.json";
pub const JOURNAL_FILE: &str = "journal.jsonl";
pub const MANIFEST_FILE: &str = "manifest.csv";
pub const BUNDLES_DIR: &str = "bundles";
const LOCK_FILE: &str = ".lock";

/// What is at the output path before the batch starts.
#[derive(Debug)]
pub enum Existing {
    /// Nothing, or an empty directory: a new batch.
    Fresh,
    /// A batch started earlier; its `batch.json` text.
    Batch(String),
}

/// Checks, creating nothing, that `dir` can hold a batch.
pub fn inspect(dir: &Path) -> Result<Existing, UserError> {
    let fail = |problem: String| UserError::output_dir(dir, problem);
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(fail(
            "exists and is not a directory; choose another --out".into(),
        )),
        Ok(_) => inspect_existing(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => inspect_parent(dir),
        Err(e) => Err(fail(format!("cannot be read: {e}; choose another --out"))),
    }
}

/// An existing directory: a batch to resume, or one empty enough to start one in.
fn inspect_existing(dir: &Path) -> Result<Existing, UserError> {
    let fail = |problem: String| UserError::output_dir(dir, problem);
    let batch_file = dir.join(BATCH_FILE);
    if batch_file.exists() {
        let text = fs::read_to_string(&batch_file).map_err(|e| {
            fail(format!(
                "cannot read {BATCH_FILE}: {e}; fix its permissions"
            ))
        })?;
        check_writable(dir).map_err(fail)?;
        return Ok(Existing::Batch(text));
    }
    let entries = fs::read_dir(dir).map_err(|e| {
        fail(format!(
            "cannot list it: {e}; fix its permissions or choose another --out"
        ))
    })?;
    // A run that died between making the directory and writing batch.json leaves only
    // the lock file, an empty bundles/ and perhaps a temp file: still a fresh directory.
    let foreign = entries.filter_map(|e| e.ok()).any(|entry| {
        let name = entry.file_name();
        let empty_bundles =
            name == BUNDLES_DIR && fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none());
        let temp = name.to_string_lossy().starts_with(".tmp-");
        name != LOCK_FILE && !empty_bundles && !temp
    });
    if foreign {
        return Err(fail(
            "is not empty and holds no claimfab batch; choose a new or empty --out".into(),
        ));
    }
    check_writable(dir).map_err(fail)?;
    Ok(Existing::Fresh)
}

/// A directory still to be made: its parent must exist and be writable.
fn inspect_parent(dir: &Path) -> Result<Existing, UserError> {
    let fail = |problem: String| UserError::output_dir(dir, problem);
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(fail(format!(
            "its parent {} does not exist; create it or choose another --out",
            parent.display()
        )));
    }
    check_writable(parent).map_err(|problem| {
        fail(format!(
            "cannot be created in {}: {problem}",
            parent.display()
        ))
    })?;
    Ok(Existing::Fresh)
}

/// Proves `dir` is writable with an unnamed temporary file, which leaves nothing behind.
fn check_writable(dir: &Path) -> Result<(), String> {
    tempfile::tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("is not writable ({e}); fix its permissions or choose another --out"))
}

/// Replaces `target` with what `write` writes, atomically: a temp file beside it (created
/// 0600, so key material is never readable by others, even before the rename), given `mode`,
/// synced and renamed over it. The caller syncs the directory (once for many files).
pub fn replace_file_at(
    target: &Path,
    mode: u32,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    replace_file_synced_or_not(target, mode, true, write)
}

/// [`replace_file_at`], the temp file synced before its rename only if `sync` is set.
fn replace_file_synced_or_not(
    target: &Path,
    mode: u32,
    sync: bool,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let context = || format!("cannot write {}", target.display());
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(context)?;
    write(temp.as_file_mut()).with_context(context)?;
    if mode != 0o600 {
        temp.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .with_context(context)?;
    }
    if sync {
        temp.as_file().sync_all().with_context(context)?;
    }
    temp.persist(target)
        .map_err(|e| e.error)
        .with_context(context)?;
    Ok(())
}

/// An open, locked batch directory.
pub struct BatchDir {
    root: PathBuf,
    // Held for the life of the run: the OS releases the lock if the process dies.
    _lock: File,
    /// The shared fsyncs of the root and of `bundles/`, where files are replaced.
    root_sync: DirSync,
    bundles_sync: DirSync,
}

impl BatchDir {
    /// Creates (if needed) and locks the batch directory.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            return Err(UserError::output_dir(
                root,
                "is in use by another claimfab process; wait for it to finish",
            )
            .into());
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
            root_sync: DirSync::new(root),
            bundles_sync: DirSync::new(&root.join(BUNDLES_DIR)),
        })
    }

    /// Creates `bundles/` if it is missing, durably: only a directory that holds bundles
    /// has one (register's, whose keys are elsewhere, has none).
    pub fn make_bundles_dir(&self) -> Result<()> {
        let bundles = self.root.join(BUNDLES_DIR);
        match fs::create_dir(&bundles) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && bundles.is_dir() => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", bundles.display()))
            }
        }
        // A new entry in the root, made durable as a rename is; also when an earlier run
        // made it and died before its sync.
        self.root_sync.renamed()
    }

    /// Absolute path of a file in the batch directory.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Relative path of a device's bundle: `bundles/SERIAL.zip`, or `bundles/SERIAL.zip.age`
    /// when it is sealed for its stations.
    pub fn bundle_name(serial: &str, sealed: bool) -> String {
        let suffix = if sealed { SEALED_SUFFIX } else { "" };
        format!("{BUNDLES_DIR}/{serial}.zip{suffix}")
    }

    /// Replaces `relative` with `bytes` atomically and durably, with Unix `mode`. The bytes go
    /// straight to the file, through no buffer of ours: a bundle holds a private key, and a
    /// copy in a buffer would outlive the caller's wiped one.
    pub fn write_atomic(&self, relative: &str, bytes: &[u8], mode: u32) -> Result<()> {
        self.replace_file(relative, mode, |file| file.write_all(bytes))
    }

    /// [`Self::write_atomic`] without the fsyncs: until [`Self::sync_filesystem`] returns,
    /// a crash may leave `relative` empty or torn, so nothing may count on it before then.
    /// For many files at once, one filesystem sync instead of two fsyncs each.
    pub fn write_atomic_unsynced(&self, relative: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let target = self.root.join(relative);
        replace_file_synced_or_not(&target, mode, false, |file| file.write_all(bytes))
    }

    /// Makes every bundle written so far durable, files and renames: one `syncfs` of the
    /// filesystem holding `bundles/` (which may be mounted apart from the root).
    pub fn sync_filesystem(&self) -> Result<()> {
        let bundles = self.root.join(BUNDLES_DIR);
        File::open(&bundles)
            .and_then(|dir| rustix::fs::syncfs(&dir).map_err(std::io::Error::from))
            .with_context(|| {
                format!(
                    "cannot sync the filesystem holding {}; check the disk (dmesg), then re-run",
                    bundles.display()
                )
            })
    }

    /// [`Self::write_atomic`] for contents produced a piece at a time by `write` (through a
    /// buffer), so large files are never held in memory whole. Not for key material.
    pub fn write_atomic_with(
        &self,
        relative: &str,
        mode: u32,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        self.replace_file(relative, mode, |file| {
            let mut buffered = std::io::BufWriter::new(file);
            write(&mut buffered).and_then(|()| buffered.flush())
        })
    }

    /// Writes a temp file beside `relative` with `write`, sets `mode`, syncs it, renames it
    /// over `relative` and syncs the directory (one fsync shared by concurrent writers in
    /// the root or in `bundles/`).
    fn replace_file(
        &self,
        relative: &str,
        mode: u32,
        write: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> Result<()> {
        let target = self.root.join(relative);
        replace_file_at(&target, mode, write)?;
        let dir = target.parent().unwrap_or(&self.root);
        if dir == self.root {
            self.root_sync.renamed()
        } else if dir == self.root.join(BUNDLES_DIR) {
            self.bundles_sync.renamed()
        } else {
            DirSync::new(dir).renamed()
        }
    }

    /// Removes temp files a crash may have left behind.
    pub fn sweep_temp_files(&self) -> Result<()> {
        for dir in [self.root.clone(), self.root.join(BUNDLES_DIR)] {
            let entries = match fs::read_dir(&dir) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != self.root => continue,
                listed => listed.with_context(|| format!("cannot list {}", dir.display()))?,
            };
            for entry in entries {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    fs::remove_file(entry.path())
                        .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_missing_and_empty_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            inspect(&tmp.path().join("new")).unwrap(),
            Existing::Fresh
        ));
        assert!(!tmp.path().join("new").exists(), "inspect creates nothing");
        assert!(matches!(inspect(tmp.path()).unwrap(), Existing::Fresh));
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_left_before_batch_json_was_written_is_fresh() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BatchDir::open(tmp.path()).unwrap();
        dir.make_bundles_dir().unwrap();
        dir.make_bundles_dir().unwrap();
        drop(dir);
        assert!(matches!(inspect(tmp.path()).unwrap(), Existing::Fresh));
        fs::write(tmp.path().join("bundles/x.zip"), "x").unwrap();
        assert!(inspect(tmp.path()).is_err());
    }

    #[test]
    fn refuses_foreign_content_and_missing_parents() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("other.txt"), "x").unwrap();
        let err = inspect(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        let err = inspect(&tmp.path().join("a/b")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        let err = inspect(&tmp.path().join("other.txt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = BatchDir::open(tmp.path()).unwrap();
        dir.make_bundles_dir().unwrap();
        dir.write_atomic("bundles/a.zip", b"secret", 0o600).unwrap();
        dir.write_atomic("manifest.csv", b"rows", 0o644).unwrap();
        let mode = |p: &str| {
            fs::metadata(tmp.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("bundles/a.zip"), 0o600);
        assert_eq!(mode("manifest.csv"), 0o644);
        let leftovers = fs::read_dir(tmp.path().join("bundles")).unwrap().count();
        assert_eq!(leftovers, 1);
    }

    #[test]
    fn second_open_is_refused_while_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = BatchDir::open(tmp.path()).unwrap();
        let err = BatchDir::open(tmp.path()).err().unwrap().to_string();
        assert!(err.contains("in use"), "{err}");
    }
}
