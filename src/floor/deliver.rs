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
use std::fs::{self, File};
use std::io::{Cursor, IsTerminal, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use zeroize::Zeroizing;
use zip::ZipArchive;

use crate::core::bundle::{entry_components, extracted_mode, zip_path};
use crate::core::bundle_check::MAX_ENTRY_BYTES;
use crate::core::station_config::GreengrassSection;

/// A bundle holds four files, plus perhaps entries for their directories; a zip with more
/// entries than this is no bundle (and cannot fill a disk with many capped entries).
const MAX_ENTRIES: usize = 32;
/// Mode of the directories an extraction makes under the root.
const DIR_MODE: u32 = 0o755;
/// The name an extraction's temporary files start with, then `PID-N`.
const TEMP_PREFIX: &str = ".claimfab-tmp-";
/// Earlier claimfab versions extracted through `.tmp-` and six random letters or digits
/// (`batch_dir::replace_file_at`); a crash of one may have left such a file holding a key.
const LEGACY_TEMP_PREFIX: &str = ".tmp-";

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
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("entry {i} is unreadable ({e})"))?;
        let name = entry
            .name()
            .map_err(|e| format!("entry {i} has no readable name ({e})"))?;
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

/// Delivers the bundle's files under `root`, checked first by [`check_entries`]; each file
/// gets the mode [`extracted_mode`] gives it. It does not know the batch's layout: prefer
/// [`extract_expected`].
pub fn extract(zip: &[u8], root: &Path) -> Result<()> {
    check_entries(zip, &Target::Root(root.to_path_buf()))
        .map_err(|problem| cannot_extract(root, &problem))?;
    write_files(zip, root, &|_, unix_mode, contents| {
        extracted_mode(unix_mode, contents)
    })
}

/// Delivers the bundle's four files under `root`, checked first by [`check_expected`];
/// each file gets its layout's mode.
pub fn extract_expected(zip: &[u8], root: &Path, layout: &BundleLayout) -> Result<()> {
    check_expected(zip, &Target::Root(root.to_path_buf()), layout)
        .map_err(|problem| cannot_extract(root, &problem))?;
    // Every file has its place in the layout (checked); the key's mode is the safe fallback.
    write_files(zip, root, &|name, _, _| {
        layout.mode_of(name).unwrap_or(0o600)
    })
}

fn cannot_extract(root: &Path, problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot extract the bundle under {}: {problem}",
        root.display()
    )
}

/// The mode a file gets from its entry's name, zip mode and contents.
type ModeOf<'a> = &'a dyn Fn(&str, Option<u32>, &[u8]) -> u32;

/// One file of the bundle to write: its zip entry, its directory and its path.
struct Planned {
    index: usize,
    name: String,
    dir: PathBuf,
    target: PathBuf,
}

/// Writes a checked bundle's files under `root`: directories first, then the temporaries a
/// crash left swept from each directory a file goes to, then every file to a temporary
/// name, and only then each renamed into place.
fn write_files(zip: &[u8], root: &Path, mode_of: ModeOf<'_>) -> Result<()> {
    make_root(root)?;
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).context("the bundle is not a readable zip")?;
    let planned = plan(&mut archive, root)?;
    let dirs: BTreeSet<&Path> = planned.iter().map(|file| file.dir.as_path()).collect();
    for dir in &dirs {
        sweep_stale(dir)?;
    }
    let mut staged = Staged::default();
    for file in &planned {
        if let Err(e) = stage(&mut archive, file, mode_of, &mut staged) {
            return Err(staged.fail(format!("{e:#}")));
        }
    }
    staged.commit()?;
    // The new names made durable, each directory once.
    for dir in dirs {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Makes every directory the bundle's entries need, and lists its files.
fn plan(archive: &mut ZipArchive<Cursor<&[u8]>>, root: &Path) -> Result<Vec<Planned>> {
    let mut planned = Vec::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index(index)
            .context("a bundle entry is unreadable")?;
        let name = entry
            .name()
            .context("a bundle entry has no readable name")?
            .into_owned();
        let components = entry_components(&name, entry.unix_mode()).map_err(anyhow::Error::msg)?;
        let file = (!entry.is_dir()).then(|| components[components.len() - 1]);
        let dir = make_dirs(
            root,
            &components[..components.len() - usize::from(file.is_some())],
        )?;
        if let Some(file) = file {
            let target = dir.join(file);
            planned.push(Planned {
                index,
                name,
                dir,
                target,
            });
        }
    }
    Ok(planned)
}

/// Writes one file's contents to a new temporary file beside its target, at its mode.
fn stage(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    file: &Planned,
    mode_of: ModeOf<'_>,
    staged: &mut Staged,
) -> Result<()> {
    let mut entry = archive
        .by_index(file.index)
        .with_context(|| format!("bundle entry {} is unreadable", file.name))?;
    // It may be the key: wiped when dropped, sized to hold it without growing.
    let mut contents = Zeroizing::new(Vec::with_capacity(
        entry.size().min(MAX_ENTRY_BYTES) as usize
    ));
    (&mut entry)
        .take(MAX_ENTRY_BYTES + 1)
        .read_to_end(&mut contents)
        .with_context(|| format!("cannot read bundle entry {}", file.name))?;
    if contents.len() as u64 > MAX_ENTRY_BYTES {
        anyhow::bail!("bundle entry {} is over {MAX_ENTRY_BYTES} bytes", file.name);
    }
    let mode = mode_of(&file.name, entry.unix_mode(), &contents);
    let (mut temp, path) = create_temp(&file.dir)
        .with_context(|| format!("cannot create a temporary file in {}", file.dir.display()))?;
    staged.files.push((path, file.target.clone()));
    let context = || format!("cannot write {}", file.target.display());
    temp.write_all(&contents).with_context(context)?;
    // Set, not left to the umask the file was created under.
    temp.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(context)?;
    temp.sync_all().with_context(context)
}

/// Numbers this process's temporary files.
static TEMP_COUNT: AtomicU64 = AtomicU64::new(0);

/// A new file `.claimfab-tmp-PID-N` in `dir`, mode 0600 from its first byte. Made
/// exclusively: never through a link or into a file someone else placed there.
fn create_temp(dir: &Path) -> std::io::Result<(File, PathBuf)> {
    let mut attempts = 0;
    loop {
        let n = TEMP_COUNT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        let opened = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match opened {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 100 => {
                attempts += 1;
            }
            opened => return opened.map(|file| (file, path)),
        }
    }
}

/// Whether `name` is a temporary file of an extraction, this version's or an earlier one's.
fn is_temp_name(name: &str) -> bool {
    let legacy = name
        .strip_prefix(LEGACY_TEMP_PREFIX)
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    name.starts_with(TEMP_PREFIX) || legacy
}

/// Removes the temporary files an extraction cut short by a crash left in `dir`: they may
/// hold a previous board's claim key, and nucleus lite reads every file in its config.d.
fn sweep_stale(dir: &Path) -> Result<()> {
    let listing = fs::read_dir(dir).with_context(|| {
        format!(
            "cannot list {} to remove temporary files a crash may have left; fix its permissions",
            dir.display()
        )
    })?;
    for entry in listing {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir || !is_temp_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        fs::remove_file(entry.path()).with_context(|| {
            format!(
                "cannot remove {}, a temporary file a crashed take left (it may hold a claim key); remove it by hand",
                entry.path().display()
            )
        })?;
    }
    Ok(())
}

/// The temporary files of one extraction and the targets they replace, in order, and how
/// many are renamed into place. What is not renamed is removed on failure, and when dropped
/// (a panic), so no temporary key outlives the take.
#[derive(Default)]
struct Staged {
    files: Vec<(PathBuf, PathBuf)>,
    renamed: usize,
}

impl Staged {
    /// Renames every temporary file over its target, in order.
    fn commit(&mut self) -> Result<()> {
        while let Some((temp, target)) = self.files.get(self.renamed) {
            if let Err(e) = fs::rename(temp, target) {
                let problem = format!("cannot put {} in place ({e})", target.display());
                return Err(self.fail(problem));
            }
            self.renamed += 1;
        }
        Ok(())
    }

    /// Removes the temporary files not renamed, and says so, and which targets were
    /// replaced already, after `problem`.
    fn fail(&mut self, problem: String) -> anyhow::Error {
        let left: Vec<String> = self
            .discard()
            .iter()
            .map(|path| path.display().to_string())
            .collect();
        let removed = match left.as_slice() {
            [] => "this take's temporary files are removed".to_string(),
            left => format!(
                "remove by hand {} (may hold the claim key)",
                left.join(", ")
            ),
        };
        let replaced: Vec<String> = self.files[..self.renamed]
            .iter()
            .map(|(_, target)| target.display().to_string())
            .collect();
        let replaced = match replaced.as_slice() {
            [] => "nothing under --to was replaced".to_string(),
            done => format!("already replaced: {}", done.join(", ")),
        };
        anyhow::anyhow!("{problem}; {removed}; {replaced}")
    }

    /// Removes the temporary files not renamed; returns those that could not be.
    fn discard(&mut self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for (temp, _) in self.files.drain(self.renamed..) {
            match fs::remove_file(&temp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => left.push(temp),
                _ => {}
            }
        }
        left
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Creates the root if it is missing, at mode 0755.
fn make_root(root: &Path) -> Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    set_dir_mode(root)
}

fn set_dir_mode(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Creates the directories `components` under `root` at mode 0755, refusing to pass through
/// a link.
fn make_dirs(root: &Path, components: &[&str]) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    for component in components {
        path.push(component);
        match fs::create_dir(&path) {
            Ok(()) => set_dir_mode(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
        // Whoever made it, it must be a real directory, not a link to one.
        if !fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            anyhow::bail!("{} is a link or a file, not a directory; claimfab writes only into real directories under --to", path.display());
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bundle::build_bundle;
    use crate::core::greengrass::ProvisioningTarget;
    use crate::core::station_config::Nucleus;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    const KEY: &str = "greengrass/v2/claim-certs/claim.private.pem.key";
    const CERT: &str = "greengrass/v2/claim-certs/claim.pem.crt";
    const CA: &str = "greengrass/v2/AmazonRootCA1.pem";
    const CONFIG: &str = "greengrass/v2/init-config/config.yaml";

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut buffer = Vec::new();
        let mut zip = zip::ZipWriter::new(Cursor::new(&mut buffer));
        for (name, contents, mode) in entries {
            let options = SimpleFileOptions::default()
                .compression_method(CompressionMethod::Stored)
                .unix_permissions(*mode);
            if name.ends_with('/') {
                zip.add_directory(*name, options).unwrap();
            } else {
                zip.start_file(*name, options).unwrap();
                zip.write_all(contents).unwrap();
            }
        }
        zip.finish().unwrap();
        buffer
    }

    fn target(nucleus: Nucleus) -> ProvisioningTarget {
        ProvisioningTarget {
            region: "us-east-1".into(),
            iot_data_endpoint: "abc-ats.iot.us-east-1.amazonaws.com".into(),
            iot_credential_endpoint: "abc.credentials.iot.us-east-1.amazonaws.com".into(),
            role_alias: "Alias".into(),
            template: "Template".into(),
            thing_group: None,
            greengrass: GreengrassSection::defaults_for(nucleus),
        }
    }

    fn java_layout() -> BundleLayout {
        BundleLayout::new(&GreengrassSection::defaults_for(Nucleus::Java)).unwrap()
    }

    /// A Java bundle's four files, at their modes, plus `extra`, minus `without`.
    fn bundle_with(extra: &[(&str, &[u8], u32)], without: &str) -> Vec<u8> {
        let mut entries: Vec<(&str, &[u8], u32)> = vec![
            (CERT, b"-----BEGIN CERTIFICATE-----", 0o644),
            (KEY, b"-----BEGIN PRIVATE KEY-----", 0o600),
            (CA, b"CA", 0o644),
            (CONFIG, b"services: {}", 0o644),
        ];
        entries.retain(|(name, _, _)| *name != without);
        entries.extend_from_slice(extra);
        zip_of(&entries)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
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
        assert_eq!(mode(&root.join("gg/claim.key")), 0o600);
        assert_eq!(mode(&root.join("gg/ca.pem")), 0o644);
        assert_eq!(mode(&root.join("gg")), 0o755);
        assert_eq!(fs::read(root.join("gg/ca.pem")).unwrap(), b"CA");
        extract(&zip, &root).unwrap();
        assert_eq!(
            names_in(&root.join("gg")).len(),
            2,
            "a second delivery replaces, leaves no temporary file"
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
        assert_eq!(
            check_target_with(Path::new("-"), false).unwrap(),
            Target::Stdout
        );
        assert!(check_target(&dir.path().join("new")).is_ok());
        assert!(!dir.path().join("new").exists(), "nothing created");
        let err = check_target(&dir.path().join("no/such/dir")).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        fs::write(dir.path().join("file"), "x").unwrap();
        let err = check_target(&dir.path().join("file")).unwrap_err();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn a_key_is_not_written_to_a_terminal() {
        let err = check_target_with(Path::new("-"), true).unwrap_err();
        assert_eq!(
            err,
            "writes a claim key; redirect standard output to the flasher or a file"
        );
        let dir = tempfile::tempdir().unwrap();
        assert!(
            check_target_with(dir.path(), true).is_ok(),
            "only - is refused"
        );
    }

    #[test]
    fn the_layout_is_what_build_bundle_writes() {
        for nucleus in [Nucleus::Java, Nucleus::Lite] {
            let target = target(nucleus);
            let layout = BundleLayout::new(&target.greengrass).unwrap();
            let zip = build_bundle(&target, "gg-1", "CERT", "-----BEGIN PRIVATE KEY-----");
            let mut archive = ZipArchive::new(Cursor::new(&zip[..])).unwrap();
            let mut written: Vec<(String, u32)> = (0..archive.len())
                .map(|i| {
                    let entry = archive.by_index(i).unwrap();
                    (
                        entry.name().unwrap().into_owned(),
                        entry.unix_mode().unwrap() & 0o7777,
                    )
                })
                .collect();
            written.sort();
            let mut expected = layout.entries().to_vec();
            expected.sort();
            assert_eq!(written, expected, "{nucleus:?}");
            check_expected(&zip, &Target::Stdout, &layout).unwrap();
            let dir = tempfile::tempdir().unwrap();
            extract_expected(&zip, dir.path(), &layout).unwrap();
            for (name, want) in layout.entries() {
                assert_eq!(mode(&dir.path().join(name)), *want, "{name}");
            }
        }
        assert_eq!(
            java_layout().to_string(),
            format!("the batch's bundles hold exactly: {CERT} (0644), {KEY} (0600), {CA} (0644), {CONFIG} (0644)")
        );
    }

    #[test]
    fn a_file_the_layout_does_not_name_is_refused_before_anything_is_written() {
        let layout = java_layout();
        for extra in [
            "etc/ld.so.preload",
            "root/.ssh/authorized_keys",
            "etc/passwd",
            "greengrass/v2/extra.pem",
        ] {
            let zip = bundle_with(&[(extra, b"/tmp/evil.so", 0o644)], "");
            let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
            assert!(
                err.contains(&format!("entry {extra:?} does not belong in a bundle")),
                "{err}"
            );
            assert!(err.contains("the batch's bundles hold exactly: greengrass/v2/claim-certs/claim.pem.crt (0644)"), "{err}");
            assert_eq!(err.lines().count(), 1);
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("image");
            let err = extract_expected(&zip, &root, &layout)
                .unwrap_err()
                .to_string();
            assert!(err.contains(extra), "{err}");
            assert!(!root.exists(), "nothing written for {extra}");
        }
    }

    #[test]
    fn a_missing_file_is_refused() {
        let layout = java_layout();
        for missing in [CERT, KEY, CA, CONFIG] {
            let zip = bundle_with(&[], missing);
            let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "has no entry {missing:?}; the batch's bundles hold exactly"
                )),
                "{err}"
            );
        }
    }

    #[test]
    fn only_the_files_own_directories_may_have_entries() {
        let layout = java_layout();
        let parents = bundle_with(
            &[
                ("greengrass/", b"", 0o755),
                ("greengrass/v2/claim-certs/", b"", 0o755),
            ],
            "",
        );
        check_expected(&parents, &Target::Stdout, &layout).unwrap();
        let dir = tempfile::tempdir().unwrap();
        extract_expected(&parents, dir.path(), &layout).unwrap();
        for other in [
            "etc/",
            "greengrass/v2/claim-certs/extra/",
            "greengrass/v2/claim-certs/claim.pem.crt.d/",
        ] {
            let zip = bundle_with(&[(other, b"", 0o755)], "");
            let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
            assert!(
                err.contains(&format!("entry {other:?} does not belong")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_key_others_may_read_is_refused() {
        let layout = java_layout();
        let zip = zip_of(&[
            (CERT, b"C", 0o644),
            (KEY, b"K", 0o644),
            (CA, b"CA", 0o644),
            (CONFIG, b"x", 0o644),
        ]);
        let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
        assert!(
            err.contains(&format!(
                "entry {KEY:?} has mode 100644, not a plain file of mode 0600"
            )),
            "{err}"
        );
        let zip_ca_exec = zip_of(&[
            (CERT, b"C", 0o644),
            (KEY, b"K", 0o600),
            (CA, b"CA", 0o755),
            (CONFIG, b"x", 0o644),
        ]);
        let err = check_expected(&zip_ca_exec, &Target::Stdout, &layout).unwrap_err();
        assert!(err.contains("not a plain file of mode 0644"), "{err}");
    }

    #[test]
    fn a_layout_from_a_tampered_batch_json_is_refused() {
        let mut g = GreengrassSection::defaults_for(Nucleus::Java);
        g.config_path = "/greengrass/../etc/ld.so.preload".into();
        let err = BundleLayout::new(&g).unwrap_err();
        assert!(err.contains("target.greengrass.config_path"), "{err}");
        let mut g = GreengrassSection::defaults_for(Nucleus::Java);
        g.root_ca_path = g.claim_certificate_path.clone();
        assert!(BundleLayout::new(&g)
            .unwrap_err()
            .contains("two bundle files"));
        let mut g = GreengrassSection::defaults_for(Nucleus::Java);
        g.root_ca_path = format!("{}/ca.pem", g.claim_certificate_path);
        assert!(BundleLayout::new(&g)
            .unwrap_err()
            .contains("two bundle files"));
    }

    #[test]
    fn a_name_twice_or_a_file_that_is_a_directory_is_refused() {
        // Two entries under one name: one the checks read, one a flasher may extract.
        let mut zip = zip_of(&[("gg/x1", b"good", 0o644), ("gg/x2", b"evil", 0o644)]);
        while let Some(at) = zip.windows(5).position(|w| w == b"gg/x2") {
            zip[at..at + 5].copy_from_slice(b"gg/x1");
        }
        let err = check_entries(&zip, &Target::Stdout).unwrap_err();
        assert!(err.contains("not a consistent zip"), "{err}");
        let zip = zip_of(&[("a/b", b"file", 0o644), ("a/b/c", b"under it", 0o644)]);
        let err = check_entries(&zip, &Target::Stdout).unwrap_err();
        assert!(
            err.contains("entry \"a/b\" is both a file and a directory"),
            "{err}"
        );
        let many: Vec<(String, &[u8], u32)> = (0..=MAX_ENTRIES)
            .map(|i| (format!("f{i}"), &b"x"[..], 0o644))
            .collect();
        let many: Vec<(&str, &[u8], u32)> =
            many.iter().map(|(n, c, m)| (n.as_str(), *c, *m)).collect();
        let err = check_entries(&zip_of(&many), &Target::Stdout).unwrap_err();
        assert!(err.contains("more than the 32 a bundle can"), "{err}");
    }

    /// What a crash in the middle of an earlier extraction leaves: a temporary file holding
    /// the previous board's key, beside where the key goes.
    #[test]
    fn temporaries_a_crash_left_are_swept_before_extracting() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("greengrass/v2/claim-certs");
        fs::create_dir_all(&certs).unwrap();
        let stale = [".claimfab-tmp-4242-0", ".claimfab-tmp-1-7", ".tmp-Ab12Cd"];
        for name in &stale {
            fs::write(
                certs.join(name),
                "-----BEGIN PRIVATE KEY----- previous board",
            )
            .unwrap();
        }
        let bystanders = [".tmp-toolong1", ".tmpAb12Cd", "notes.txt"];
        for name in bystanders {
            fs::write(certs.join(name), "not ours").unwrap();
        }
        fs::create_dir(certs.join(".claimfab-tmp-dir")).unwrap();
        extract_expected(&bundle_with(&[], ""), dir.path(), &java_layout()).unwrap();
        let left = names_in(&certs);
        for name in &stale {
            assert!(!left.contains(*name), "{name} swept: {left:?}");
        }
        for name in bystanders.iter().chain(&[
            ".claimfab-tmp-dir",
            "claim.pem.crt",
            "claim.private.pem.key",
        ]) {
            assert!(left.contains(*name), "{name} kept: {left:?}");
        }
        assert_eq!(
            fs::read(certs.join("claim.private.pem.key")).unwrap(),
            b"-----BEGIN PRIVATE KEY-----"
        );
        // extract, which knows no layout, sweeps as well.
        fs::write(certs.join(".claimfab-tmp-9-9"), "key").unwrap();
        extract(&bundle_with(&[], ""), dir.path()).unwrap();
        assert!(!certs.join(".claimfab-tmp-9-9").exists());
    }

    #[test]
    fn an_entry_that_cannot_be_read_leaves_no_temporary_and_replaces_nothing() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("gg")).unwrap();
        fs::write(dir.path().join("gg/a"), "previous").unwrap();
        let mut zip = zip_of(&[
            ("gg/a", b"-----BEGIN PRIVATE KEY-----", 0o600),
            ("gg/b", b"SOMETHING-STORED", 0o644),
        ]);
        // Corrupt the stored data of the last entry: its checksum no longer matches.
        let at = zip
            .windows(16)
            .position(|w| w == b"SOMETHING-STORED")
            .unwrap();
        zip[at] = b'X';
        let err = extract(&zip, dir.path()).unwrap_err().to_string();
        assert!(err.contains("cannot read bundle entry gg/b"), "{err}");
        assert!(
            err.contains(
                "this take's temporary files are removed; nothing under --to was replaced"
            ),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        assert_eq!(
            names_in(&dir.path().join("gg")),
            BTreeSet::from(["a".to_string()])
        );
        assert_eq!(fs::read(dir.path().join("gg/a")).unwrap(), b"previous");
    }

    #[test]
    fn a_rename_that_fails_part_way_names_what_was_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let gg = dir.path().join("gg");
        // A directory appeared where the second file goes, after the checks.
        fs::create_dir_all(gg.join("b")).unwrap();
        fs::write(gg.join("b/inside"), "x").unwrap();
        let zip = zip_of(&[
            ("gg/a", b"A", 0o644),
            ("gg/b", b"-----BEGIN PRIVATE KEY-----", 0o600),
        ]);
        let err = write_files(&zip, dir.path(), &|_, _, _| 0o600)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot put {} in place", gg.join("b").display())),
            "{err}"
        );
        assert!(
            err.ends_with(&format!(
                "this take's temporary files are removed; already replaced: {}",
                gg.join("a").display()
            )),
            "{err}"
        );
        assert_eq!(
            names_in(&gg),
            BTreeSet::from(["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn temporary_names_are_recognised() {
        for name in [".claimfab-tmp-1-0", ".claimfab-tmp-", ".tmp-abcDE1"] {
            assert!(is_temp_name(name), "{name}");
        }
        for name in [
            ".tmp-abc",
            ".tmp-abcdefg",
            ".tmp-abc.de",
            "claim.pem.crt",
            ".tmpabcdef",
            "x.claimfab-tmp-1",
        ] {
            assert!(!is_temp_name(name), "{name}");
        }
    }
}
