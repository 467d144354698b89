//! Retiring claims that are no longer needed, each a claim key that could still register a
//! device: what `claimfab close` retires (a finished batch: every claim never flashed, and
//! every spoiled one), how it closes the floor first and what it reports in `close.csv`; and
//! [`retire`], which it shares with `retire-provisioned` (`provisioned.rs`). Both take claims out of service as `revoke` does (REVOKED, claim policy
//! detached; journaled, resumable: re-run after a crash) and are safe to re-run at any time.
//! Like `revoke`, they close the floor to a claim before retiring it; `close.csv` and the
//! summaries list what was retired, not what was planned.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use time::OffsetDateTime;

use crate::batch_dir::journal::JournalStore;
use crate::batch_dir::spec::BatchSpec;
use crate::batch_dir::BatchDir;
use crate::cloud::{Claims, OutOfService};
use crate::core::devices::ClaimScope;
use crate::core::floor_records::{Claim, CloseReason, CLOSED};
use crate::core::manifest::{DeviceStatus, ManifestRow};
use crate::error::UserError;
use crate::floor::Floor;
use crate::retirement::revoke::{Outcome, Retirement, Selection};

pub const CLOSE_REPORT: &str = "close.csv";

/// What close retires: the planned serials, or a shared batch's one claim when no device
/// was flashed with it. `None` when there is nothing to do.
pub fn close_selection(
    dir: &Path,
    spec: &BatchSpec,
    rows: &[ManifestRow],
    plan: &[(&ManifestRow, CloseReason)],
) -> Result<Option<Selection>, UserError> {
    if plan.is_empty() {
        return Ok(None);
    }
    if spec.claim_scope == ClaimScope::Device {
        return Ok(Some(Selection::Serials(
            plan.iter().map(|(row, _)| row.serial.clone()).collect(),
        )));
    }
    let flashed = rows
        .iter()
        .filter(|r| r.status == DeviceStatus::Flashed)
        .count();
    if flashed > 0 {
        return Err(UserError::output_dir(
            dir,
            format!("shares one claim among its devices and {flashed} were flashed with it; retiring it would stop them provisioning: run `claimfab retire-provisioned` once they have"),
        ));
    }
    Ok(Some(Selection::All))
}

/// Puts a closed marker on every bundle never handed out, so no station takes one while
/// its claim is retired. One a station took since the plan was made is left to it.
pub fn stop_the_floor(
    dir: &Path,
    selection: Selection,
    plan: &[(&ManifestRow, CloseReason)],
) -> Result<Selection> {
    let Selection::Serials(serials) = selection else {
        return Ok(selection);
    };
    let floor = Floor::open(dir)?;
    let never_handed_out: HashSet<&str> = plan
        .iter()
        .filter(|(_, reason)| *reason == CloseReason::NeverHandedOut)
        .map(|(row, _)| row.serial.as_str())
        .collect();
    let now = OffsetDateTime::now_utc();
    let mut keep = Vec::with_capacity(serials.len());
    for serial in serials {
        if never_handed_out.contains(serial.as_str()) && !floor.claim(CLOSED, &serial, now)? {
            // A marker a cut-short take left incomplete, or one claimfab did not write, names
            // no station that could flash the bundle: its claim is retired with the rest (a
            // later hand-back refuses a retired claim).
            if let Some(Claim::Complete(handout)) = floor.claim_state(&serial)? {
                if handout.station != CLOSED {
                    let taker = handout.station;
                    crate::say!("  left    {serial:<24} taken by station {taker} during close");
                    continue;
                }
            }
        }
        keep.push(serial);
    }
    Ok(Selection::Serials(keep))
}

/// One line of `close.csv`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
struct Closed {
    serial: String,
    certificate_id: String,
    reason: String,
}

/// Writes `close.csv`: each claim close retired, and why. Lines of an earlier run (one that
/// failed part-way, re-run) are kept, so the file lists everything the batch's close retired.
pub fn write_close_report(dir: &Path, retired: &[&(&ManifestRow, CloseReason)]) -> Result<()> {
    let path = dir.join(CLOSE_REPORT);
    let now = retired.iter().map(|(row, reason)| Closed {
        serial: row.serial.clone(),
        certificate_id: row.certificate_id.clone(),
        reason: reason.describe().to_string(),
    });
    let lines = merge_close_lines(earlier_close_report(&path), now.collect());
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["serial", "certificate_id", "reason"])?;
    for line in &lines {
        writer.write_record([&line.serial, &line.certificate_id, &line.reason])?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    BatchDir::open(dir)?.write_atomic(CLOSE_REPORT, &bytes, 0o644)?;
    crate::say!("close report: {}", path.display());
    Ok(())
}

/// An earlier run's lines, then this run's; a serial in both keeps this run's line.
fn merge_close_lines(mut earlier: Vec<Closed>, now: Vec<Closed>) -> Vec<Closed> {
    let serials: HashSet<&str> = now.iter().map(|line| line.serial.as_str()).collect();
    earlier.retain(|line| !serials.contains(line.serial.as_str()));
    earlier.extend(now);
    earlier
}

/// The lines of an earlier `close.csv`; none when there is none. One that cannot be read
/// (not claimfab's) is replaced: the journal and the manifest still say what was retired.
fn earlier_close_report(path: &Path) -> Vec<Closed> {
    let Ok(mut reader) = csv::Reader::from_path(path) else {
        return Vec::new();
    };
    let lines: Result<Vec<Closed>, _> = reader.deserialize().collect();
    lines.unwrap_or_else(|_| {
        crate::say!(
            "{} is not a close report claimfab wrote: rewritten with this run's lines",
            path.display()
        );
        Vec::new()
    })
}

/// Takes the selected claims out of service as `revoke --status revoked --detach` does,
/// `concurrency` devices at once.
pub async fn retire(
    dir: &Path,
    devices: Selection,
    concurrency: usize,
    api: &impl Claims,
    journals: &dyn JournalStore,
) -> Result<Outcome> {
    let request = Retirement {
        dir,
        devices,
        status: OutOfService::Revoked,
        detach: true,
        delete: false,
    };
    let checked = request.check()?.with_concurrency(concurrency);
    checked.execute(api, journals).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(serial: &str, reason: &str) -> Closed {
        Closed {
            serial: serial.into(),
            certificate_id: format!("id-{serial}"),
            reason: reason.into(),
        }
    }

    #[test]
    fn a_rerun_adds_to_the_close_report_and_loses_no_line() {
        let earlier = vec![line("SN1", "spoiled"), line("SN2", "never handed out")];
        let now = vec![line("SN3", "spoiled"), line("SN2", "spoiled")];
        assert_eq!(
            merge_close_lines(earlier, now),
            [
                line("SN1", "spoiled"),
                line("SN3", "spoiled"),
                line("SN2", "spoiled")
            ]
        );
    }

    #[test]
    fn a_close_report_is_read_back_and_a_foreign_one_is_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CLOSE_REPORT);
        assert!(earlier_close_report(&path).is_empty());
        std::fs::write(&path, "serial,certificate_id,reason\nSN1,abc,spoiled\n").unwrap();
        assert_eq!(
            earlier_close_report(&path),
            [Closed {
                serial: "SN1".into(),
                certificate_id: "abc".into(),
                reason: "spoiled".into()
            }]
        );
        std::fs::write(&path, "not,a\nclose report,at,all,really\n").unwrap();
        assert!(earlier_close_report(&path).is_empty());
    }
}
