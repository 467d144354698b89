//! File primitives for the floor's files on a shared drive: bounded reads of small files,
//! exclusive and atomic writes (temporary name, fsync, rename, directory fsync), directories
//! and files made with the floor's modes whatever the umask.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::{on, DIR_MODE, FILE_MODE, SMALL_FILE_LIMIT};
use anyhow::{Context, Result};
use time::OffsetDateTime;

/// Whether `path` holds exactly `bytes`: our own record, token and all.
pub(super) fn holds(path: &Path, bytes: &[u8]) -> Result<bool> {
    Ok(matches!(read_small(path)?, Small::Bytes(found) if found == bytes))
}

/// A small floor file (a marker, a pending note), read without following a link.
pub(super) enum Small {
    Absent,
    /// Not a regular file of a sensible size: why.
    Odd(&'static str),
    Bytes(Vec<u8>),
}

/// Reads a small floor file. A link, a directory, a FIFO or a huge file is reported, not
/// read: reading it could leave the batch directory, block or fill memory.
pub(super) fn read_small(path: &Path) -> Result<Small> {
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

/// When a file was last written (the epoch if the share will not say).
pub(super) fn modified(path: &Path) -> OffsetDateTime {
    fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .map_or(OffsetDateTime::UNIX_EPOCH, OffsetDateTime::from)
}

/// Makes a floor directory 0770 (a racer's is fine: the caller checks what is there).
pub(super) fn make_dir(dir: &Path) -> Result<()> {
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
pub(super) fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    match file.set_permissions(Permissions::from_mode(mode)) {
        Err(e) if matches!(e.raw_os_error(), Some(1 | 38 | 95)) => Ok(()),
        other => other,
    }
}

/// Writes a new file (0660) and syncs it; whatever was at that name is removed first, and a
/// link put there meanwhile is not followed (exclusive create).
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
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

pub(super) fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| on(path, "remove"))
        }
        _ => Ok(()),
    }
}

/// Replaces `path` atomically and durably: a temporary file beside it, synced, renamed over
/// it.
pub(super) fn write_replacing(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

/// Replaces `path` atomically (a temporary file beside it, 0660, renamed over it); durably
/// when `synced`. Its directory is made and checked by the caller.
pub(super) fn replace(path: &Path, bytes: &[u8], synced: bool) -> Result<()> {
    replace_streamed(path, synced, |file| file.write_all(bytes))
}

/// [`replace`], the content written by `write` through a buffer: a file of any size takes
/// no more memory than the buffer.
pub(super) fn replace_streamed(
    path: &Path,
    synced: bool,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".floor")
        .tempfile_in(dir)
        .with_context(|| on(dir, "write in"))?;
    set_mode(temp.as_file(), FILE_MODE)
        .and_then(|()| {
            let mut buffered = std::io::BufWriter::new(temp.as_file_mut());
            write(&mut buffered)?;
            buffered.flush()
        })
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
pub(super) fn sync_dir(dir: &Path) {
    let _ = File::open(dir).and_then(|d| d.sync_all());
}
