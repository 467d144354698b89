//! Writing a checked bundle's files under a device image's root: each to a temporary name
//! (mode 0600 from the first byte) beside its target, all renamed into place only once all
//! are written; the temporaries of a failed extraction removed, those a crash left swept.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use zeroize::Zeroizing;
use zip::ZipArchive;

use super::{check_entries, check_expected, BundleLayout, ModeOf, Target};
use crate::core::bundle::{entry_components, extracted_mode};
use crate::core::bundle_check::MAX_ENTRY_BYTES;

/// Mode of the directories an extraction makes under the root.
const DIR_MODE: u32 = 0o755;
/// The name an extraction's temporary files start with, then `PID-N`.
const TEMP_PREFIX: &str = ".claimfab-tmp-";
/// Earlier claimfab versions extracted through `.tmp-` and six random letters or digits
/// (`batch_dir::replace_file_at`); a crash of one may have left such a file holding a key.
const LEGACY_TEMP_PREFIX: &str = ".tmp-";
/// Numbers this process's temporary files.
static TEMP_COUNT: AtomicU64 = AtomicU64::new(0);

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

pub(super) fn cannot_extract(root: &Path, problem: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot extract the bundle under {}: {problem}",
        root.display()
    )
}

/// One file of the bundle to write: its zip entry, its directory and its path.
pub(super) struct Planned {
    index: usize,
    name: String,
    dir: PathBuf,
    target: PathBuf,
}

/// Writes a checked bundle's files under `root`: directories first, then the temporaries a
/// crash left swept from each directory a file goes to, then every file to a temporary
/// name, and only then each renamed into place.
pub(super) fn write_files(zip: &[u8], root: &Path, mode_of: ModeOf<'_>) -> Result<()> {
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
pub(super) fn plan(archive: &mut ZipArchive<Cursor<&[u8]>>, root: &Path) -> Result<Vec<Planned>> {
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
pub(super) fn stage(
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

/// A new file `.claimfab-tmp-PID-N` in `dir`, mode 0600 from its first byte. Made
/// exclusively: never through a link or into a file someone else placed there.
pub(super) fn create_temp(dir: &Path) -> std::io::Result<(File, PathBuf)> {
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
pub(super) fn is_temp_name(name: &str) -> bool {
    let legacy = name
        .strip_prefix(LEGACY_TEMP_PREFIX)
        .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()));
    name.starts_with(TEMP_PREFIX) || legacy
}

/// Removes the temporary files an extraction cut short by a crash left in `dir`: they may
/// hold a previous board's claim key, and nucleus lite reads every file in its config.d.
pub(super) fn sweep_stale(dir: &Path) -> Result<()> {
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
pub(super) struct Staged {
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

/// Creates the root if it is missing, at mode 0755.
pub(super) fn make_root(root: &Path) -> Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    set_dir_mode(root)
}

pub(super) fn set_dir_mode(dir: &Path) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Creates the directories `components` under `root` at mode 0755, refusing to pass through
/// a link.
pub(super) fn make_dirs(root: &Path, components: &[&str]) -> Result<PathBuf> {
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

impl Drop for Staged {
    fn drop(&mut self) {
        self.discard();
    }
}
