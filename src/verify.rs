//! The `verify` command (offline, for flashing stations and auditors): checks batch
//! directories against their manifests, both ways, and loose bundle zips on their own, and
//! prints one line per device. Exit 0 when nothing was found, 1 on any finding.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cli::VerifyArgs;
use crate::core::manifest::{self, DeviceStatus};
use crate::core::verify::check_bundle;
use crate::error::UserError;
use crate::outdir::{BUNDLES_DIR, MANIFEST_FILE};

/// One device's (or one loose zip's) result.
struct Report {
    label: String,
    findings: Vec<String>,
}

/// Runs `claimfab verify`; returns whether everything checked out.
pub fn run(args: VerifyArgs) -> Result<bool> {
    let now = OffsetDateTime::now_utc();
    let mut reports = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            reports.extend(verify_batch_dir(path, now)?);
        } else if path.is_file() {
            let bytes = read_bundle(path).map_err(|problem| UserError::Flag {
                flag: "verify",
                value: path.display().to_string(),
                problem,
            })?;
            let check = check_bundle(&bytes, None, now);
            reports.push(Report {
                label: path.display().to_string(),
                findings: check.findings,
            });
        } else {
            return Err(UserError::Flag {
                flag: "verify",
                value: path.display().to_string(),
                problem: "is neither a batch directory nor a bundle zip; check the path".into(),
            }
            .into());
        }
    }
    let failed = reports.iter().filter(|r| !r.findings.is_empty()).count();
    for report in &reports {
        if report.findings.is_empty() {
            crate::say!("ok      {}", report.label);
        } else {
            crate::say!("FAILED  {}: {}", report.label, report.findings.join("; "));
        }
    }
    crate::say!("{} checked, {} with findings", reports.len(), failed);
    Ok(failed == 0)
}

/// A bundle is a few KiB; a file far larger is not one and is not read into memory.
const MAX_BUNDLE_BYTES: u64 = 16 << 20;

/// Reads a bundle file, refusing one too large to be a bundle.
pub fn read_bundle(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot be read ({e})"))?;
    // It holds a private key: wiped when dropped (room for a bundle, so that growing the
    // buffer leaves no unwiped copy).
    let mut bytes = Zeroizing::new(Vec::with_capacity(16 * 1024));
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(format!(
            "is over {MAX_BUNDLE_BYTES} bytes: not a claimfab bundle"
        ));
    }
    Ok(bytes)
}

/// Checks every manifest row against its bundle, and every bundle against the manifest.
fn verify_batch_dir(dir: &Path, now: OffsetDateTime) -> Result<Vec<Report>> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = std::fs::read(&manifest_path).map_err(|e| {
        UserError::output_dir(
            dir,
            format!("has no readable {MANIFEST_FILE} ({e}); pass a batch directory or bundle zips"),
        )
    })?;
    let rows = manifest::from_csv(&text).map_err(|e| {
        UserError::output_dir(
            dir,
            format!("{MANIFEST_FILE} is not a claimfab manifest: {e}"),
        )
    })?;
    let mut reports: Vec<Report> = rows
        .par_iter()
        .map(|row| {
            let label = format!("{} ({})", row.serial, dir.display());
            let mut findings = Vec::new();
            if row.status != DeviceStatus::Ready {
                findings.push(
                    format!("manifest status is {:?}, not ready to flash", row.status)
                        .to_lowercase(),
                );
            }
            if row.bundle.is_empty() {
                return Report { label, findings };
            }
            match read_bundle(&dir.join(&row.bundle)) {
                Ok(bytes) => findings.extend(check_bundle(&bytes, Some(row), now).findings),
                Err(e) => findings.push(format!("{} {e}", row.bundle)),
            }
            Report { label, findings }
        })
        .collect();
    // The other way: every bundle on disk must be one the manifest names.
    let named: BTreeSet<PathBuf> = rows
        .iter()
        .filter(|r| !r.bundle.is_empty())
        .map(|r| dir.join(&r.bundle))
        .collect();
    let bundles_dir = dir.join(BUNDLES_DIR);
    if let Ok(entries) = std::fs::read_dir(&bundles_dir) {
        let mut extra: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "zip") && !named.contains(p))
            .collect();
        extra.sort();
        for path in extra {
            reports.push(Report {
                label: path.display().to_string(),
                findings: vec!["bundle is not in the manifest".into()],
            });
        }
    }
    Ok(reports)
}
