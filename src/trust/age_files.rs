//! Bundle files at rest: read bounded, and sealed ones (`bundles/SERIAL.zip.age`) opened
//! with a station's age identity file. This is what a station calls: read its identity
//! once ([`StationIdentity::read`]), then open each bundle it takes
//! ([`StationIdentity::open_bundle`]); errors are one line naming the identity file and the
//! bundle. Also the recipients of `batch --encrypt-to`/`--encrypt-to-file`, and the
//! identity file `claimfab station-key` writes (mode 0600, never over an existing file).
//! Private key files (an identity, a batch-signing key) are refused when group or others
//! may read them ([`check_private_file`]). Files holding keys are read into buffers wiped on
//! drop and allocated once, never grown.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::core::sealed::{self, Identities, OpenError, Recipients};
use crate::error::UserError;

/// A bundle is a few KiB; a file far larger (or one that decrypts to more) is not one, and
/// is not read into memory.
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// An identity file is a few lines.
const MAX_IDENTITY_BYTES: u64 = 64 << 10;

/// Reads a bundle file (plain or sealed) into a buffer wiped on drop and allocated once,
/// refusing one too large to be a bundle. The error says what is wrong, after the path.
pub fn read_bundle_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let bytes =
        read_bounded(path, MAX_BUNDLE_BYTES).map_err(|e| format!("cannot be read ({e})"))?;
    bytes.ok_or_else(|| format!("is over {MAX_BUNDLE_BYTES} bytes: not a claimfab bundle"))
}

/// At most `limit` bytes of a file; `None` when it is longer.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    read_open_bounded(File::open(path)?, limit)
}

/// At most `limit` bytes of an open file, in one allocation of its size (plus one byte):
/// the buffer that may hold a key is never grown, which would leave an unwiped copy behind.
/// A pipe has no size: it gets room for `limit`. `None` when the file is longer than `limit`.
fn read_open_bounded(file: File, limit: u64) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let meta = file.metadata()?;
    let size = if meta.is_file() { meta.len() } else { limit };
    // One byte past what is expected: a full buffer means the file is longer than that.
    let room = size.min(limit).saturating_add(1);
    let bytes = sealed::read_fixed(file, usize::try_from(room).unwrap_or(usize::MAX))?;
    if (bytes.len() as u64) < room {
        return Ok(Some(bytes));
    }
    if size >= limit {
        return Ok(None);
    }
    Err(std::io::Error::other(
        "it grew while it was read; try again once nothing writes to it",
    ))
}

/// The one-line problem with a private key file of this `mode`, if group or others may
/// read or change it: another user could have copied or replaced the key. Names the file,
/// its mode and the fix, for callers with their own error (a flag, a station file).
pub fn private_mode_problem(path: &Path, mode: u32) -> Option<String> {
    (mode & 0o077 != 0).then(|| {
        format!(
            "is mode {:04o}, so its group or others can read or change it; a private key must be its owner's alone: run chmod 600 {}",
            mode & 0o7777,
            path.display()
        )
    })
}

/// Refuses a private key file (a station's identity, a batch-signing key) that group or
/// others may read or change: one line naming the file, its mode and `chmod 600 FILE`
/// (exit 2). A symbolic link is judged by the file it leads to, the one that is read.
pub fn check_private_file(path: &Path) -> Result<(), UserError> {
    let fail = |problem: String| UserError::Flag {
        flag: "key file",
        value: path.display().to_string(),
        problem,
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| fail(format!("cannot be read ({e}); check the path")))?;
    match private_mode_problem(path, meta.permissions().mode()) {
        Some(problem) => Err(fail(problem)),
        None => Ok(()),
    }
}

/// A station's age identity, read from its file (which errors name). Its `Debug` shows
/// the file and the public keys, never the secret.
#[derive(Debug)]
pub struct StationIdentity {
    file: PathBuf,
    identities: Identities,
}

impl StationIdentity {
    /// Reads an identity file as `claimfab station-key` or `age-keygen` writes it; one that
    /// group or others may read is refused (its mode is checked on the file opened).
    pub fn read(file: &Path) -> Result<Self, UserError> {
        let fail = |problem: String| UserError::Identity {
            file: file.to_path_buf(),
            problem,
        };
        let unreadable = |e: std::io::Error| {
            fail(format!(
                "cannot be read ({e}); check the path passed to --identity"
            ))
        };
        let opened = File::open(file).map_err(unreadable)?;
        let mode = opened.metadata().map_err(unreadable)?.permissions().mode();
        if let Some(problem) = private_mode_problem(file, mode) {
            return Err(fail(problem));
        }
        let bytes = read_open_bounded(opened, MAX_IDENTITY_BYTES)
            .map_err(unreadable)?
            .ok_or_else(|| {
                fail(format!(
                    "is over {MAX_IDENTITY_BYTES} bytes: not an age identity file"
                ))
            })?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| fail("is not text: not an age identity file".into()))?;
        let identities = sealed::parse_identities(text).map_err(fail)?;
        Ok(Self {
            file: file.to_path_buf(),
            identities,
        })
    }

    /// The identity file's path.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The identities themselves (to open an air-gapped batch's key store).
    pub fn into_identities(self) -> Identities {
        self.identities
    }

    /// Whether any of this file's identities is one of `recipients` (age public keys).
    pub fn is_among(&self, recipients: &[String]) -> bool {
        self.identities
            .recipients()
            .iter()
            .any(|mine| recipients.contains(mine))
    }

    /// Decrypts the bytes of sealed bundle `bundle` (plaintext bounded by
    /// [`MAX_BUNDLE_BYTES`], wiped on drop). The error is typed so a caller can tell a wrong
    /// identity from a damaged file; [`Self::refused`] makes it a one-line user error.
    pub fn decrypt(&self, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        sealed::open(&self.identities, sealed, MAX_BUNDLE_BYTES)
    }

    /// Reads and decrypts the sealed bundle at `bundle`: the bundle zip's bytes, wiped on
    /// drop. A wrong identity, a damaged or foreign file: one line naming this identity file
    /// and the bundle (exit code 2).
    pub fn open_bundle(&self, bundle: &Path) -> Result<Zeroizing<Vec<u8>>, UserError> {
        let sealed = read_bundle_file(bundle).map_err(|problem| UserError::Flag {
            flag: "bundle",
            value: bundle.display().to_string(),
            problem,
        })?;
        self.decrypt(&sealed).map_err(|e| self.refused(bundle, &e))
    }

    /// The user error for bundle `bundle` not opening with this identity.
    pub fn refused(&self, bundle: &Path, why: &OpenError) -> UserError {
        let fix = match why {
            OpenError::WrongIdentity => format!(
                "; it is encrypted to other stations (this identity's public key is {}): pass the identity of a station the batch was encrypted to",
                self.identities.recipients().join(", ")
            ),
            _ => "; check the bundle against its manifest with `claimfab verify`".into(),
        };
        UserError::Identity {
            file: self.file.clone(),
            problem: format!("cannot open bundle {}: it {why}{fix}", bundle.display()),
        }
    }
}

/// The recipients of `batch --encrypt-to` (repeated or comma-separated) and
/// `--encrypt-to-file` (recipients files), checked; empty when neither was given.
pub fn read_recipients(values: &[String], files: &[PathBuf]) -> Result<Recipients, UserError> {
    let mut recipients = Recipients::parse(values.iter().map(String::as_str)).map_err(|e| {
        let value = match &e {
            sealed::RecipientError::Bad { value, .. } => value.clone(),
            sealed::RecipientError::Secret => "AGE-SECRET-KEY-…".into(),
            sealed::RecipientError::Empty => String::new(),
        };
        UserError::Flag {
            flag: "--encrypt-to",
            value,
            problem: e.to_string(),
        }
    })?;
    for file in files {
        let fail = |problem: String| UserError::Flag {
            flag: "--encrypt-to-file",
            value: file.display().to_string(),
            problem,
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| fail(format!("cannot be read ({e}); check the path")))?;
        let listed = Recipients::parse_file(&text).map_err(fail)?;
        if listed.is_empty() {
            return Err(fail(
                "names no recipient; list one age1... key per line".into(),
            ));
        }
        recipients = recipients.join(listed);
    }
    Ok(recipients)
}

/// Writes a new station identity to `out` (mode 0600; an existing file is never replaced)
/// and returns its recipient. A write that fails part-way removes the file.
pub fn write_station_key(out: &Path) -> Result<String, UserError> {
    let key = sealed::new_station_key(time::OffsetDateTime::now_utc());
    write_new_secret(out, key.identity_file.as_bytes(), "a station key")?;
    Ok(key.recipient)
}

/// Writes a new private key file `out` (`--out`): created at mode 0600, never over an
/// existing file (`what` names the key in that error), removed if the write fails.
pub fn write_new_secret(out: &Path, bytes: &[u8], what: &str) -> Result<(), UserError> {
    let fail = |problem: String| UserError::Flag {
        flag: "--out",
        value: out.display().to_string(),
        problem,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => fail(format!(
                "exists; {what} is never overwritten: choose a new path"
            )),
            _ => fail(format!("cannot be created ({e}); check the path")),
        })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(out);
        return Err(fail(format!("cannot be written ({e})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_station_key_file_opens_what_is_sealed_to_its_recipient() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("station.key");
        let recipient = write_station_key(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let err = write_station_key(&path).unwrap_err().to_string();
        assert!(err.contains("never overwritten"), "{err}");

        let identity = StationIdentity::read(&path).unwrap();
        let recipients = read_recipients(std::slice::from_ref(&recipient), &[]).unwrap();
        let bundle = tmp.path().join("SN1.zip.age");
        std::fs::write(&bundle, recipients.seal(b"zip bytes")).unwrap();
        assert_eq!(&**identity.open_bundle(&bundle).unwrap(), b"zip bytes");

        // Another station's identity: one line naming both files.
        let other_path = tmp.path().join("other.key");
        write_station_key(&other_path).unwrap();
        let other = StationIdentity::read(&other_path).unwrap();
        let err = other.open_bundle(&bundle).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("identity {}: ", other_path.display())),
            "{err}"
        );
        assert!(
            err.contains("SN1.zip.age") && err.contains("not encrypted to this identity"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn an_identity_others_may_read_is_refused_with_its_mode_and_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("station.key");
        write_station_key(&path).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = StationIdentity::read(&path).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "identity {0}: is mode {mode:04o}, so its group or others can read or change it; a private key must be its owner's alone: run chmod 600 {0}",
                    path.display()
                )
            );
            let err = check_private_file(&path).unwrap_err().to_string();
            assert!(err.starts_with("key file \""), "{err}");
            assert!(
                err.contains(&format!("chmod 600 {}", path.display())),
                "{err}"
            );
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            StationIdentity::read(&path).unwrap();
            check_private_file(&path).unwrap();
        }
        // A link is judged by the file it leads to.
        let link = tmp.path().join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        check_private_file(&link).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_private_file(&link).is_err());
        assert!(StationIdentity::read(&link).is_err());
        let err = check_private_file(&tmp.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn a_bundle_file_is_read_in_one_allocation_and_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("SN1.zip");
        std::fs::write(&path, vec![9u8; 70_000]).unwrap();
        let bytes = read_bundle_file(&path).unwrap();
        assert_eq!(bytes.len(), 70_000);
        assert_eq!(bytes.capacity(), 70_001, "sized from the file, never grown");
        assert!(read_bounded(&path, 69_999).unwrap().is_none());
        assert_eq!(read_bounded(&path, 70_000).unwrap().unwrap().len(), 70_000);
        std::fs::write(&path, b"").unwrap();
        assert!(read_bundle_file(&path).unwrap().is_empty());
    }

    #[test]
    fn bad_identity_and_recipient_files_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.key");
        let err = StationIdentity::read(&missing).err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("identity {}: cannot be read", missing.display())),
            "{err}"
        );
        let file = tmp.path().join("recipients.txt");
        std::fs::write(&file, "# none\n").unwrap();
        let err = read_recipients(&[], std::slice::from_ref(&file))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("recipients.txt") && err.contains("names no recipient"),
            "{err}"
        );
        let err = read_recipients(&["age1bad".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--encrypt-to \"age1bad\": "), "{err}");
        assert!(read_recipients(&[], &[]).unwrap().is_empty());
    }
}
