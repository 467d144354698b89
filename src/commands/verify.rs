//! The `verify` command (offline, for flashing stations and auditors): checks batch
//! directories against their manifests, both ways, and loose bundle zips on their own, and
//! prints one line per device. Bundles encrypted to stations are decrypted with
//! `--identity` and checked in full; without it only their SHA-256 is checked against the
//! manifest, and the summary says so. Exit 0 when nothing was found, 1 on any finding, 2
//! for a bad path or an identity the bundles are not encrypted to.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::batch_dir::{BUNDLES_DIR, MANIFEST_FILE};
use crate::cli::VerifyArgs;
use crate::core::bundle_check::check_stored_bundle;
use crate::core::manifest::{self, ManifestRow};
use crate::core::sealed::{is_sealed, OpenError};
use crate::error::UserError;
use crate::output::records::Record;
use crate::trust::age_files::{read_bundle_file, StationIdentity};

/// One device's (or one loose zip's) result.
struct Report {
    label: String,
    findings: Vec<String>,
    /// An encrypted bundle whose contents were not checked (no identity).
    unopened: bool,
}

impl Report {
    fn new(label: String) -> Self {
        Self {
            label,
            findings: Vec::new(),
            unopened: false,
        }
    }
}

/// What verify works with: the time, and the station identity, if one was given.
struct Verifier {
    now: OffsetDateTime,
    identity: Option<StationIdentity>,
}

/// Runs `claimfab verify`; returns whether everything checked out.
pub fn run(args: VerifyArgs) -> Result<bool> {
    let verifier = Verifier {
        now: OffsetDateTime::now_utc(),
        identity: args
            .identity
            .as_deref()
            .map(StationIdentity::read)
            .transpose()?,
    };
    let mut reports = Vec::new();
    for path in &args.paths {
        if path.is_dir() {
            reports.extend(verifier.batch_dir(path)?);
        } else if path.is_file() {
            reports.push(verifier.loose(path)?);
        } else {
            return Err(UserError::Flag {
                flag: "verify",
                value: path.display().to_string(),
                problem: "is neither a batch directory nor a bundle zip; check the path".into(),
            }
            .into());
        }
    }
    print_reports(&reports);
    Ok(reports.iter().all(|r| r.findings.is_empty()))
}

fn print_reports(reports: &[Report]) {
    let failed = reports.iter().filter(|r| !r.findings.is_empty()).count();
    for report in reports {
        crate::output::emit(&Record::Check {
            label: &report.label,
            ok: report.findings.is_empty(),
            findings: &report.findings,
            contents_unchecked: report.unopened,
        });
        if report.findings.is_empty() {
            crate::say!("ok      {}", report.label);
        } else {
            crate::say!("FAILED  {}: {}", report.label, report.findings.join("; "));
        }
    }
    crate::say!("{} checked, {} with findings", reports.len(), failed);
    crate::output::emit(&Record::Checked {
        checked: reports.len(),
        with_findings: failed,
    });
    let unopened = reports.iter().filter(|r| r.unopened).count();
    if unopened > 0 {
        crate::say!(
            "{unopened} encrypted bundle(s): SHA-256 checked against the manifest, contents not checked (pass --identity FILE to check them)"
        );
    }
}

impl Verifier {
    /// A loose bundle file, checked on its own.
    fn loose(&self, path: &Path) -> Result<Report> {
        let bytes = read_bundle_file(path).map_err(|problem| UserError::Flag {
            flag: "verify",
            value: path.display().to_string(),
            problem,
        })?;
        let mut report = Report::new(path.display().to_string());
        self.check_file(&bytes, path, None, &mut report)?;
        if report.unopened {
            // Without a manifest nothing at all was checked.
            report.unopened = false;
            report
                .findings
                .push("encrypted: pass --identity FILE to check it".into());
        }
        Ok(report)
    }

    /// Checks one bundle file's bytes into `report`: a plain zip as it is, a sealed one
    /// decrypted with the identity, or without one only its sha256 against `row`. An
    /// identity that opens no bundle the manifest vouches for is the user's error.
    fn check_file(
        &self,
        file: &[u8],
        path: &Path,
        row: Option<&ManifestRow>,
        report: &mut Report,
    ) -> Result<(), UserError> {
        if !is_sealed(file) {
            let check = check_stored_bundle(file, Some(file), row, self.now);
            report.findings.extend(check.findings);
            return Ok(());
        }
        let Some(identity) = &self.identity else {
            let check = check_stored_bundle(file, None, row, self.now);
            report.findings.extend(check.findings);
            report.unopened = true;
            return Ok(());
        };
        let opened = identity.decrypt(file);
        let zip = match &opened {
            Ok(zip) => Some(zip.as_slice()),
            Err(e @ OpenError::WrongIdentity) if vouched(file, row) => {
                return Err(identity.refused(path, e));
            }
            Err(e) => {
                report
                    .findings
                    .push(format!("bundle cannot be opened: it {e}"));
                None
            }
        };
        let check = check_stored_bundle(file, zip, row, self.now);
        report.findings.extend(check.findings);
        Ok(())
    }
}

/// Whether the manifest vouches for these bytes (or there is no manifest): then a bundle the
/// identity cannot open was encrypted to other stations, not altered.
fn vouched(file: &[u8], row: Option<&ManifestRow>) -> bool {
    row.is_none_or(|row| hex::encode(Sha256::digest(file)) == row.bundle_sha256)
}

impl Verifier {
    /// Checks every manifest row against its bundle, and every bundle against the manifest.
    fn batch_dir(&self, dir: &Path) -> Result<Vec<Report>> {
        let text = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
            UserError::output_dir(
                dir,
                format!(
                    "has no readable {MANIFEST_FILE} ({e}); pass a batch directory or bundle zips"
                ),
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
            .map(|row| self.row(dir, row))
            .collect::<Result<_, _>>()?;
        reports.extend(unnamed_bundles(dir, &rows));
        Ok(reports)
    }

    /// One manifest row against its bundle.
    fn row(&self, dir: &Path, row: &ManifestRow) -> Result<Report, UserError> {
        let mut report = Report::new(format!("{} ({})", row.serial, dir.display()));
        if !row.status.is_live() {
            report.findings.push(
                format!("manifest status is {:?}, not ready to flash", row.status).to_lowercase(),
            );
        }
        if row.bundle.is_empty() {
            return Ok(report);
        }
        let path = dir.join(&row.bundle);
        match read_bundle_file(&path) {
            Ok(bytes) => self.check_file(&bytes, &path, Some(row), &mut report)?,
            Err(e) => report.findings.push(format!("{} {e}", row.bundle)),
        }
        Ok(report)
    }
}

/// The other way: every bundle on disk must be one the manifest names.
fn unnamed_bundles(dir: &Path, rows: &[ManifestRow]) -> Vec<Report> {
    let named: BTreeSet<PathBuf> = rows
        .iter()
        .filter(|r| !r.bundle.is_empty())
        .map(|r| dir.join(&r.bundle))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir.join(BUNDLES_DIR)) else {
        return Vec::new();
    };
    let mut extra: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_bundle_name(p) && !named.contains(p))
        .collect();
    extra.sort();
    extra
        .into_iter()
        .map(|path| Report {
            findings: vec!["bundle is not in the manifest".into()],
            ..Report::new(path.display().to_string())
        })
        .collect()
}

/// `NAME.zip` or, encrypted, `NAME.zip.age`.
fn is_bundle_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".zip") || n.ends_with(".zip.age"))
}
