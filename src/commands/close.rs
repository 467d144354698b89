//! The `close` command: the plan for a finished batch (every claim never flashed, and every
//! spoiled one) printed, and with `--yes` carried out by `retirement::close`: the floor
//! closed to those bundles first, then their claims REVOKED and detached.

use std::collections::HashSet;

use anyhow::Result;

use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::spec::read_batch_dir;
use crate::cli::CloseArgs;
use crate::core::floor_records::close_plan;
use crate::core::manifest::DeviceStatus;
use crate::output::records::Record;
use crate::retirement::close::{
    close_selection, retire, stop_the_floor, write_close_report, CLOSE_REPORT,
};
use crate::settings::{connect_with_limits, station_limits};

/// Runs `claimfab close`; returns whether every claim to retire was retired.
pub async fn run(args: CloseArgs) -> Result<bool> {
    let limits = station_limits(&args.limits)?;
    let (spec, rows) = read_batch_dir(&args.dir)?;
    let plan = close_plan(&rows);
    let selection = close_selection(&args.dir, &spec, &rows, &plan)?;
    for (row, reason) in &plan {
        crate::say!("  retire  {:<24} {}", row.serial, reason.describe());
        crate::output::emit(&Record::ToRetire {
            dir: &args.dir.display().to_string(),
            serial: &row.serial,
            certificate_id: &row.certificate_id,
            reason: reason.describe(),
        });
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
    let iot = connect_with_limits(&args.aws, &spec.target.region, &limits).await?;
    let concurrency = limits.concurrency as usize;
    let outcome = retire(&args.dir, selection, concurrency, &iot, &JournalFiles).await?;
    let retired: HashSet<&str> = outcome.retired.iter().map(String::as_str).collect();
    let done: Vec<_> = plan
        .iter()
        .filter(|(row, _)| retired.contains(row.serial.as_str()))
        .collect();
    write_close_report(&args.dir, &done)?;
    outcome.say_retired("REVOKED", &args.dir.join(CLOSE_REPORT));
    Ok(outcome.all_done())
}
