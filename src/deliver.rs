//! Handing a bundle's files over at a flashing station: extracted under a device image's
//! root (`take --to PATH`), or the zip itself on standard output (`take --to -`). Every
//! entry is checked before anything is claimed or written: a plain relative path, no link,
//! a bundle-sized file, and no existing link or file in the way under the root, so a hostile
//! zip or image can put nothing outside it. Files are written to a temporary name and renamed
//! into place (the key at mode 0600 from the first byte), so a crash leaves no half key file.

use std::fs::{self, File};
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use zeroize::Zeroizing;
use zip::ZipArchive;

use crate::core::bundle::{entry_components, extracted_mode};
use crate::core::verify::MAX_ENTRY_BYTES;
use crate::outdir::replace_file_at;

/// Where `take` puts the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The zip's bytes on standard output.
    Stdout,
    /// Extracted under this root (created if missing).
    Root(PathBuf),
}

/// Checks `--to` before anything is touched: `-`, an existing writable directory, or a new
/// one whose parent is.
pub fn check_target(to: &Path) -> Result<Target, String> {
    if to.as_os_str() == "-" {
        return Ok(Target::Stdout);
    }
    let writable = |dir: &Path| {
        tempfile::tempfile_in(dir).map(drop).map_err(|e| {
            format!("is not writable ({e}); fix its permissions or choose another --to")
        })
    };
    match fs::metadata(to) {
        Ok(meta) if meta.is_dir() => writable(to)?,
        Ok(_) => return Err("exists and is not a directory; pass the device image's root directory or - for standard output".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let parent = to.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(format!("its parent {} does not exist; create it or choose another --to", parent.display()));
            }
            writable(parent)?;
        }
        Err(e) => return Err(format!("cannot be read ({e}); choose another --to")),
    }
    Ok(Target::Root(to.to_path_buf()))
}

/// Checks every entry of the bundle against `target`, writing nothing: what [`deliver`]
/// would refuse is refused here, before the bundle is claimed.
pub fn check_entries(zip: &[u8], target: &Target) -> Result<(), String> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("is not a readable zip ({e})"))?;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable ({e})"))?;
        let name = entry
            .name()
            .map_err(|e| format!("entry {i} has no readable name ({e})"))?;
        let components = entry_components(&name, entry.unix_mode())?;
        if entry.size() > MAX_ENTRY_BYTES {
            return Err(format!(
                "entry {name:?} is over {MAX_ENTRY_BYTES} bytes: not a claimfab bundle"
            ));
        }
        if let Target::Root(root) = target {
            let (dirs, last) = match entry.is_dir() {
                true => (&components[..], None),
                false => (&components[..components.len() - 1], components.last()),
            };
            in_the_way(root, dirs, last).map_err(|problem| format!("entry {name:?}: {problem}"))?;
        }
    }
    Ok(())
}

/// An existing link, or a file where a directory must go (or the reverse), under `root`.
fn in_the_way(root: &Path, dirs: &[&str], file: Option<&&str>) -> Result<(), String> {
    let mut path = root.to_path_buf();
    for dir in dirs {
        path.push(dir);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{} is a link or a file, not a directory; claimfab writes only into real directories under --to", path.display())),
            Err(_) => return Ok(()),
        }
    }
    if let Some(file) = file {
        path.push(file);
        if let Ok(meta) = fs::symlink_metadata(&path) {
            if !meta.is_file() {
                return Err(format!(
                    "{} is a link or a directory; claimfab replaces only plain files under --to",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Delivers the bundle's files under `root`, entries checked again as they are written.
pub fn extract(zip: &[u8], root: &Path) -> Result<()> {
    check_entries(zip, &Target::Root(root.to_path_buf())).map_err(|problem| {
        anyhow::anyhow!(
            "cannot extract the bundle under {}: {problem}",
            root.display()
        )
    })?;
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).context("the bundle is not a readable zip")?;
    let mut dirs = std::collections::BTreeSet::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .context("a bundle entry is unreadable")?;
        let name = entry
            .name()
            .context("a bundle entry has no readable name")?
            .into_owned();
        let components = entry_components(&name, entry.unix_mode()).map_err(anyhow::Error::msg)?;
        let dir = make_dirs(
            root,
            &components[..components.len() - usize::from(!entry.is_dir())],
        )?;
        if entry.is_dir() {
            continue;
        }
        // It may be the key: wiped when dropped.
        let mut contents = Zeroizing::new(Vec::with_capacity(
            entry.size().min(MAX_ENTRY_BYTES) as usize
        ));
        (&mut entry)
            .take(MAX_ENTRY_BYTES)
            .read_to_end(&mut contents)
            .with_context(|| format!("cannot read bundle entry {name}"))?;
        let mode = extracted_mode(entry.unix_mode(), &contents);
        let path = dir.join(components[components.len() - 1]);
        replace_file_at(&path, mode, |file| file.write_all(&contents))?;
        dirs.insert(dir);
    }
    // The new names made durable, each directory once.
    for dir in dirs {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Creates the directories `components` under `root`, refusing to pass through a link.
fn make_dirs(root: &Path, components: &[&str]) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for component in components {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => anyhow::bail!("{} is a link or a file, not a directory; claimfab writes only into real directories under --to", path.display()),
            Err(_) => match fs::create_dir(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
                _ => {}
            },
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use zip::write::SimpleFileOptions;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut buffer = Vec::new();
        let mut zip = zip::ZipWriter::new(Cursor::new(&mut buffer));
        for (name, contents, mode) in entries {
            let options = SimpleFileOptions::default().unix_permissions(*mode);
            zip.start_file(*name, options).unwrap();
            zip.write_all(contents).unwrap();
        }
        zip.finish().unwrap();
        buffer
    }

    #[test]
    fn files_land_under_the_root_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("image");
        let zip = zip_of(&[
            ("gg/claim.key", b"-----BEGIN PRIVATE KEY-----", 0o600),
            ("gg/ca.pem", b"CA", 0o644),
        ]);
        check_entries(&zip, &Target::Root(root.clone())).unwrap();
        extract(&zip, &root).unwrap();
        let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("gg/claim.key"), 0o600);
        assert_eq!(mode("gg/ca.pem"), 0o644);
        assert_eq!(fs::read(root.join("gg/ca.pem")).unwrap(), b"CA");
        extract(&zip, &root).unwrap();
        let names: Vec<_> = fs::read_dir(root.join("gg"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "a second delivery replaces, leaves no temporary file: {names:?}"
        );
    }

    #[test]
    fn nothing_goes_outside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("image");
        for name in ["../evil", "/etc/evil", "gg/../../evil"] {
            let zip = zip_of(&[(name, b"x", 0o644)]);
            let err = check_entries(&zip, &Target::Stdout).unwrap_err();
            assert!(err.contains("not a plain relative path"), "{name}: {err}");
            assert!(extract(&zip, &root).is_err());
        }
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("gg")).unwrap();
        let zip = zip_of(&[("gg/evil", b"x", 0o644)]);
        let err = check_entries(&zip, &Target::Root(root.clone())).unwrap_err();
        assert!(err.contains("is a link or a file"), "{err}");
        assert!(extract(&zip, &root).is_err());
        assert!(!dir.path().join("evil").exists());
        assert!(check_entries(b"not a zip", &Target::Stdout).is_err());
    }

    #[test]
    fn the_target_is_checked_before_anything() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_target(Path::new("-")).unwrap(), Target::Stdout);
        assert!(check_target(&dir.path().join("new")).is_ok());
        assert!(!dir.path().join("new").exists(), "nothing created");
        let err = check_target(&dir.path().join("no/such/dir")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        fs::write(dir.path().join("file"), "x").unwrap();
        let err = check_target(&dir.path().join("file")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }
}
