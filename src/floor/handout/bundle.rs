//! Reading a bundle a station is about to hand out or record: its file (opened with the
//! station's identity when sealed), the manifest row and the signed record that vouch for
//! it, and what `verify` would find wrong with it; a bundle that is not what the batch says
//! is never delivered.

use anyhow::Result;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{serial_error, Bundle, Station};
use crate::core::bundle_check::{check_batch_config, check_bundle};
use crate::core::floor_records::QueuedDevice;
use crate::core::signing::{sha256_hex, BundleRecord};
use crate::error::UserError;
use crate::floor::deliver::{self, BundleLayout, Target};

/// What the signed record says that the bundle read does not match.
pub(super) fn vouched_for(record: &BundleRecord, stored: &[u8], bundle: &Bundle) -> Vec<String> {
    let mut problems = Vec::new();
    if sha256_hex(stored) != record.bundle_sha256 {
        problems.push(format!(
            "{} is not the file the batch signed (its SHA-256 differs)",
            record.bundle
        ));
    }
    if bundle.certificate_id != record.certificate_id {
        problems.push(format!(
            "holds claim certificate {}, not the signed {}",
            &bundle.certificate_id[..bundle.certificate_id.len().min(16)],
            &record.certificate_id[..record.certificate_id.len().min(16)]
        ));
    }
    if bundle.thing_name != record.thing_name {
        problems.push(format!(
            "is for thing {}, not the signed {}",
            bundle.thing_name, record.thing_name
        ));
    }
    problems
}

/// A bundle is handed out only if `claimfab verify` finds nothing wrong with it, it is the
/// queued device's (a bundle copied over another's is not), and its entries can be delivered
/// to `target`; checked before it is claimed.
pub(super) fn check_deliverable(
    bundle: &Bundle,
    queued: &QueuedDevice,
    target: &Target,
    layout: &BundleLayout,
) -> Result<(), UserError> {
    let problem = if !bundle.findings.is_empty() {
        bundle.findings.join("; ")
    } else if bundle.thing_name != queued.thing_name {
        format!(
            "holds the bundle of thing {}, but {} is queued as {} (a bundle copied over another's?)",
            bundle.thing_name, queued.serial, queued.thing_name
        )
    } else if let Err(problem) = deliver::check_expected(&bundle.bytes, target, layout) {
        problem
    } else {
        return Ok(());
    };
    Err(UserError::Flag {
        flag: "bundle",
        value: bundle.serial.clone(),
        problem: format!("{problem}; it is not handed out: check the batch with claimfab verify"),
    })
}

impl Station {
    /// Reads a serial's bundle and what it holds. The one place a bundle's bytes are read,
    /// so a reader that decrypts (`bundles/SN.zip.age` with an identity) slots in here. What
    /// must keep it from being handed out goes into its findings: what `claimfab verify`
    /// would find, a signature that does not vouch for it (signed batches), a config that is
    /// not the batch's.
    pub(super) fn read_bundle(&self, serial: &str) -> Result<Bundle> {
        let path = self.floor.bundle(serial);
        let record = self.batch.signed_record(serial);
        if self.floor.is_sealed() && self.identity.is_none() {
            // `flashed` of an encrypted batch: no key, so what the manifest recorded.
            return self.recorded_bundle(serial);
        }
        let stored = crate::trust::age_files::read_bundle_file(&path)
            .map_err(|problem| anyhow::anyhow!("{} {problem}", path.display()))?;
        let bytes = match &self.identity {
            Some(identity) if self.floor.is_sealed() => identity
                .decrypt(&stored)
                .map_err(|e| identity.refused(&path, &e))?,
            _ => stored.clone(),
        };
        let check = check_bundle(&bytes, None, OffsetDateTime::now_utc());
        let invalid = |what: &str| {
            UserError::output_dir(
                &self.dir,
                format!(
                    "bundle of {serial} has no {what}: {}; run claimfab verify {}",
                    check.findings.join("; "),
                    self.dir.display()
                ),
            )
        };
        let mut bundle = Bundle {
            serial: serial.to_string(),
            thing_name: check
                .thing_name
                .clone()
                .ok_or_else(|| invalid("thing name"))?,
            certificate_id: check
                .certificate_sha256
                .clone()
                .ok_or_else(|| invalid("claim certificate"))?,
            findings: check.findings,
            bytes,
        };
        match record {
            Ok(Some(record)) => bundle
                .findings
                .extend(vouched_for(&record, &stored, &bundle)),
            Ok(None) => {}
            Err(problem) => bundle.findings.push(problem),
        }
        let target = &self.batch.spec.target;
        if let Err(problem) = check_batch_config(&bundle.bytes, target, &bundle.thing_name) {
            bundle.findings.push(format!("the bundle {problem}"));
        }
        Ok(bundle)
    }

    /// A bundle of an encrypted batch, for `flashed` (which has no key to open it): its
    /// names and certificate id as the manifest records them.
    pub(super) fn recorded_bundle(&self, serial: &str) -> Result<Bundle> {
        let (_, rows) = crate::batch_dir::spec::read_batch_dir(&self.dir)?;
        let row = rows
            .into_iter()
            .find(|r| r.serial == serial)
            .ok_or_else(|| serial_error("SERIAL", serial, "is not in the batch".into()))?;
        Ok(Bundle {
            serial: row.serial,
            thing_name: row.thing_name,
            certificate_id: row.certificate_id,
            findings: Vec::new(),
            bytes: Zeroizing::new(Vec::new()),
        })
    }
}
