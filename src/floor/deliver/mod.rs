//! Handing a bundle's files over at a flashing station: extracted under a device image's
//! root (`take --to PATH`), or the zip itself on standard output (`take --to -`, refused on a
//! terminal: it holds a claim key). Every entry is checked before anything is claimed or
//! written: a plain relative path, no link, a bundle-sized file, a consistent zip (no
//! duplicate names, no entries hidden from its directory), and no existing link or file in
//! the way under the root, so a hostile zip or image can put nothing outside it. Against the
//! batch's [`BundleLayout`] a bundle must hold exactly its four files (claim certificate,
//! claim key, root CA, Greengrass config) at the paths and modes `batch.json` names, so a
//! bundle written by anyone who can write the share lands nothing else in the image.
//!
//! Files are written to temporary names (`.claimfab-tmp-PID-N`, mode 0600 from the first
//! byte) beside their targets and renamed into place only once all are written. The
//! temporaries of a failed extraction are removed; those a crash left are swept from every
//! directory the next extraction writes to, so no image keeps a previous board's key.
//! Directories made under the root get mode 0755 and files their layout's mode (key 0600,
//! others 0644), set explicitly whatever the umask.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{Cursor, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::Result;
use zip::ZipArchive;

use crate::core::bundle::{entry_components, zip_path};
use crate::core::bundle_check::MAX_ENTRY_BYTES;
use crate::core::station_config::GreengrassSection;

mod extract;

pub use extract::{extract, extract_expected};

/// A bundle holds four files, plus perhaps entries for their directories; a zip with more
/// entries than this is no bundle (and cannot fill a disk with many capped entries).
const MAX_ENTRIES: usize = 32;

/// Where `take` puts the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The zip's bytes on standard output.
    Stdout,
    /// Extracted under this root (created if missing).
    Root(PathBuf),
}

/// Checks `--to` before anything is touched: `-` (standard output, not a terminal), an
/// existing writable directory, or a new one whose parent is.
pub fn check_target(to: &Path) -> Result<Target, String> {
    check_target_with(to, std::io::stdout().is_terminal())
}

/// [`check_target`], told whether standard output is a terminal.
fn check_target_with(to: &Path, stdout_is_terminal: bool) -> Result<Target, String> {
    if to.as_os_str() == "-" {
        // A key on a terminal ends up in its scrollback and in screen recordings.
        if stdout_is_terminal {
            return Err(
                "writes a claim key; redirect standard output to the flasher or a file".into(),
            );
        }
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

/// The four files every bundle of a batch holds: each zip entry's name (its on-device path
/// without the leading `/`) and the mode it carries and is extracted with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleLayout {
    entries: [(String, u32); 4],
}

impl BundleLayout {
    /// The layout of the bundles `core::bundle::build_bundle` makes for a batch whose
    /// `batch.json` has this `target.greengrass` section. Its paths are checked again here,
    /// as `batch.json` lies on the share: each a plain path, none twice, none inside another.
    pub fn new(greengrass: &GreengrassSection) -> Result<Self, String> {
        let g = greengrass;
        let paths = [
            ("claim_certificate_path", &g.claim_certificate_path, 0o644),
            ("claim_private_key_path", &g.claim_private_key_path, 0o600),
            ("root_ca_path", &g.root_ca_path, 0o644),
            ("config_path", &g.config_path, 0o644),
        ];
        for (key, path, _) in paths {
            entry_components(zip_path(path), None).map_err(|problem| {
                format!("batch.json's target.greengrass.{key} {path:?} cannot be a bundle entry ({problem}); restore the batch's own batch.json")
            })?;
        }
        let layout = Self {
            entries: paths.map(|(_, path, mode)| (zip_path(path).to_string(), mode)),
        };
        layout.check_distinct()?;
        Ok(layout)
    }

    /// Each entry's name and mode: certificate, key, root CA, config.
    pub fn entries(&self) -> &[(String, u32)] {
        &self.entries
    }

    /// No two files at one path, and no file where another's directory must be.
    fn check_distinct(&self) -> Result<(), String> {
        for (i, (a, _)) in self.entries.iter().enumerate() {
            for (b, _) in &self.entries[i + 1..] {
                if a == b || is_inside(a, b) || is_inside(b, a) {
                    return Err(format!("batch.json's target.greengrass puts two bundle files at {a:?} and {b:?}; restore the batch's own batch.json"));
                }
            }
        }
        Ok(())
    }

    /// The mode of the file at `name`, if the layout has one there.
    fn mode_of(&self, name: &str) -> Option<u32> {
        self.position(name).map(|i| self.entries[i].1)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(entry, _)| entry == name)
    }

    /// Whether `dir` (no trailing `/`) is a directory one of the four files lies in.
    fn is_parent(&self, dir: &str) -> bool {
        self.entries.iter().any(|(entry, _)| is_inside(entry, dir))
    }
}

/// Whether `path` lies under the directory `dir` (both zip entry names, no trailing `/`).
fn is_inside(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// "the batch's bundles hold exactly: a (0644), b (0600), ...", for refusals.
impl fmt::Display for BundleLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the batch's bundles hold exactly: ")?;
        for (i, (name, mode)) in self.entries.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} ({mode:04o})")?;
        }
        Ok(())
    }
}

/// Checks every entry of the bundle against `target`, writing nothing: what [`extract`]
/// would refuse is refused here, before the bundle is claimed. It does not know the batch's
/// layout: prefer [`check_expected`].
pub fn check_entries(zip: &[u8], target: &Target) -> Result<(), String> {
    let mut archive = open_consistent(zip)?;
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..archive.len() {
        let (entry, name) = named_entry(&mut archive, i)?;
        let components = entry_components(&name, entry.unix_mode())?;
        if entry.size() > MAX_ENTRY_BYTES {
            return Err(format!(
                "entry {name:?} is over {MAX_ENTRY_BYTES} bytes: not a claimfab bundle"
            ));
        }
        let (parents, file) = match entry.is_dir() {
            true => (&components[..], None),
            false => (&components[..components.len() - 1], components.last()),
        };
        if let Target::Root(root) = target {
            in_the_way(root, parents, file)
                .map_err(|problem| format!("entry {name:?}: {problem}"))?;
        }
        dirs.extend((1..=parents.len()).map(|n| parents[..n].join("/")));
        files.extend(file.map(|_| components.join("/")));
    }
    match files.intersection(&dirs).next() {
        Some(both) => Err(format!(
            "entry {both:?} is both a file and a directory: not a claimfab bundle"
        )),
        None => Ok(()),
    }
}

/// An entry of a bundle zip read from memory.
type Entry<'a, 'z> = zip::read::ZipFile<'a, Cursor<&'z [u8]>>;

/// The `i`-th entry of a zip and its name, or why it cannot be read.
fn named_entry<'a, 'z>(
    archive: &'a mut ZipArchive<Cursor<&'z [u8]>>,
    i: usize,
) -> Result<(Entry<'a, 'z>, String), String> {
    let entry = archive
        .by_index(i)
        .map_err(|e| format!("entry {i} is unreadable ({e})"))?;
    let name = entry
        .name()
        .map_err(|e| format!("entry {i} has no readable name ({e})"))?
        .into_owned();
    Ok((entry, name))
}

/// Opens a zip that is small and says the same thing to every reader: a flasher reading
/// `--to -` as a stream sees the local headers, claimfab the central directory, so a name
/// twice or an entry hidden from the directory could land files claimfab never checked.
fn open_consistent(zip: &[u8]) -> Result<ZipArchive<Cursor<&[u8]>>, String> {
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("is not a readable zip ({e})"))?;
    if archive.len() > MAX_ENTRIES {
        return Err(format!(
            "has {} entries, more than the {MAX_ENTRIES} a bundle can: not a claimfab bundle",
            archive.len()
        ));
    }
    archive
        .validate_header_consistency()
        .map_err(|e| format!("is not a consistent zip ({e}): not a claimfab bundle"))?;
    Ok(archive)
}

/// [`check_entries`], then the batch's layout: exactly its four files, each at its mode,
/// and no directory entry but theirs. For `--to -` as much as for a root: the station's
/// flasher extracts what it is given.
pub fn check_expected(zip: &[u8], target: &Target, layout: &BundleLayout) -> Result<(), String> {
    check_entries(zip, target)?;
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("is not a readable zip ({e})"))?;
    let mut seen = [false; 4];
    for i in 0..archive.len() {
        let (entry, name) = named_entry(&mut archive, i)?;
        if entry.is_dir() && layout.is_parent(name.trim_end_matches('/')) {
            continue;
        }
        let Some(k) = layout.position(&name).filter(|_| !entry.is_dir()) else {
            return Err(format!(
                "entry {name:?} does not belong in a bundle; {layout}"
            ));
        };
        check_mode(&name, entry.unix_mode(), layout.entries[k].1, layout)?;
        seen[k] = true;
    }
    match seen.iter().position(|found| !found) {
        Some(k) => Err(format!("has no entry {:?}; {layout}", layout.entries[k].0)),
        None => Ok(()),
    }
}

/// A layout file's entry is a plain file at exactly the layout's mode: a key entry others
/// may read was not made by claimfab, and a flasher extracting `--to -` keeps zip modes.
fn check_mode(
    name: &str,
    unix_mode: Option<u32>,
    want: u32,
    layout: &BundleLayout,
) -> Result<(), String> {
    const FILE_TYPE: u32 = 0o170_000;
    const REGULAR: u32 = 0o100_000;
    match unix_mode {
        Some(mode) if mode & 0o7777 == want && matches!(mode & FILE_TYPE, 0 | REGULAR) => Ok(()),
        Some(mode) => Err(format!(
            "entry {name:?} has mode {mode:o}, not a plain file of mode {want:04o}; {layout}"
        )),
        None => Err(format!(
            "entry {name:?} carries no Unix mode, not {want:04o}; {layout}"
        )),
    }
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

/// The mode a file gets from its entry's name, zip mode and contents.
type ModeOf<'a> = &'a dyn Fn(&str, Option<u32>, &[u8]) -> u32;

#[cfg(test)]
mod tests;
