//! Retiring claims that are no longer needed, each a claim key that could still register a
//! device: `claimfab close` (a finished batch: every claim never flashed, and every spoiled
//! one) and `claimfab retire-provisioned` (claims whose device has provisioned: they have
//! done their job). Both take claims out of service as `revoke` does (REVOKED, claim policy
//! detached; journaled, resumable: re-run after a crash) and are safe to re-run at any time.
//! Like `revoke`, they close the floor to a claim before retiring it; `close.csv` and the
//! summaries list what was retired, not what was planned.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;
use time::OffsetDateTime;

use crate::aws::Iot;
use crate::batch::BatchSpec;
use crate::cli::{AwsArgs, CloseArgs, RetireProvisionedArgs, RevokeStatus};
use crate::cloud::{Claims, Inventory};
use crate::core::devices::ClaimScope;
use crate::core::floor::{close_plan, Claim, CloseReason, CLOSED};
use crate::core::manifest::{DeviceStatus, ManifestRow};
use crate::core::station::LimitsSection;
use crate::error::UserError;
use crate::floor::Floor;
use crate::journal::{JournalFiles, JournalStore};
use crate::outdir::BatchDir;
use crate::revoke::{Outcome, Retirement, Selection};

const CLOSE_REPORT: &str = "close.csv";

/// Runs `claimfab close`; returns whether every claim to retire was retired.
pub async fn close(args: CloseArgs) -> Result<bool> {
    let (spec, rows) = crate::batch::read_batch_dir(&args.dir)?;
    let plan = close_plan(&rows);
    let selection = close_selection(&args.dir, &spec, &rows, &plan)?;
    for (row, reason) in &plan {
        crate::say!("  retire  {:<24} {}", row.serial, reason.describe());
    }
    crate::say!(
        "{} claim(s) to retire in {} ({} flashed stay active)",
        plan.len(),
        args.dir.display(),
        rows.iter()
            .filter(|r| r.status == DeviceStatus::Flashed)
            .count()
    );
    if !args.yes {
        crate::say!(
            "nothing changed: re-run with --yes to retire them (REVOKED, claim policy detached)"
        );
        return Ok(true);
    }
    let Some(selection) = selection else {
        return Ok(true);
    };
    let selection = stop_the_floor(&args.dir, selection, &plan)?;
    let iot = connect(&args.aws, &spec).await?;
    let outcome = retire(&args.dir, selection, &iot, &JournalFiles).await?;
    let retired: HashSet<&str> = outcome.retired.iter().map(String::as_str).collect();
    let done: Vec<_> = plan
        .iter()
        .filter(|(row, _)| retired.contains(row.serial.as_str()))
        .collect();
    write_close_report(&args.dir, &done)?;
    outcome.say_retired("REVOKED", &args.dir.join(CLOSE_REPORT));
    Ok(outcome.all_done())
}

/// What close retires: the planned serials, or a shared batch's one claim when no device
/// was flashed with it. `None` when there is nothing to do.
fn close_selection(
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
fn stop_the_floor(
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
fn write_close_report(dir: &Path, retired: &[&(&ManifestRow, CloseReason)]) -> Result<()> {
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

/// Connects to the batch's region (unless a flag or the environment says otherwise).
async fn connect(aws: &AwsArgs, spec: &BatchSpec) -> Result<Iot> {
    let settings = crate::settings::aws_settings(aws, None, Some(&spec.target.region))?;
    Ok(Iot::connect(&settings, &LimitsSection::default())
        .await
        .map_err(UserError::Aws)?)
}

/// Takes the selected claims out of service as `revoke --status revoked --detach` does.
pub async fn retire(
    dir: &Path,
    devices: Selection,
    api: &impl Claims,
    journals: &dyn JournalStore,
) -> Result<Outcome> {
    let request = Retirement {
        dir,
        devices,
        status: RevokeStatus::Revoked,
        detach: true,
        delete: false,
    };
    request.check()?.execute(api, journals).await
}

/// Runs `claimfab retire-provisioned`; returns whether every claim found was retired.
pub async fn retire_provisioned(args: RetireProvisionedArgs) -> Result<bool> {
    let mut batches = Vec::new();
    for dir in &args.dirs {
        let (spec, rows) = crate::batch::read_batch_dir(dir)?;
        batches.push((dir, spec, rows));
    }
    let Some((_, first, _)) = batches.first() else {
        return Ok(true);
    };
    let iot = connect(&args.aws, first).await?;
    let things = iot
        .thing_names()
        .await
        .map_err(|e| anyhow::anyhow!("ListThings: {e}; retire-provisioned needs iot:ListThings"))?;
    let mut clean = true;
    for (dir, spec, rows) in &batches {
        let provisioned = provisioned(&iot, rows, &things).await?;
        let Some(selection) = provisioned_selection(spec, rows, &provisioned) else {
            crate::say!(
                "{}: no claim of a provisioned device to retire",
                dir.display()
            );
            continue;
        };
        crate::say!(
            "{}: retiring the claims of {} provisioned device(s)",
            dir.display(),
            provisioned.len()
        );
        let outcome = retire(dir, selection, &iot, &JournalFiles).await?;
        outcome.say_retired("REVOKED", &dir.join(crate::outdir::MANIFEST_FILE));
        clean &= outcome.all_done();
    }
    Ok(clean)
}

/// The serials whose claim is still live and whose thing exists with a certificate other
/// than the claim (the device's own, from provisioning).
async fn provisioned(
    iot: &impl Inventory,
    rows: &[ManifestRow],
    things: &HashSet<String>,
) -> Result<HashSet<String>> {
    let mut provisioned = HashSet::new();
    for row in rows
        .iter()
        .filter(|r| r.status.is_live() && things.contains(&r.thing_name))
    {
        let attached = iot.thing_principals(&row.thing_name).await.map_err(|e| {
            anyhow::anyhow!(
                "ListThingPrincipals {}: {e}; retire-provisioned needs iot:ListThingPrincipals",
                row.thing_name
            )
        })?;
        if attached.iter().any(|arn| *arn != row.certificate_arn) {
            provisioned.insert(row.serial.clone());
        }
    }
    Ok(provisioned)
}

/// What to retire: the provisioned devices' own claims, or a shared batch's claim once
/// every device of it has provisioned.
fn provisioned_selection(
    spec: &BatchSpec,
    rows: &[ManifestRow],
    provisioned: &HashSet<String>,
) -> Option<Selection> {
    if provisioned.is_empty() {
        return None;
    }
    match spec.claim_scope {
        ClaimScope::Device => {
            let mut serials: Vec<String> = provisioned.iter().cloned().collect();
            serials.sort();
            Some(Selection::Serials(serials))
        }
        ClaimScope::Batch => {
            let live = rows.iter().filter(|r| r.status.is_live()).count();
            (provisioned.len() == live).then_some(Selection::All)
        }
    }
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
