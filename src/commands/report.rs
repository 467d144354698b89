//! The `report` command: reads batch directories as `audit` does (manifest, station logs) and,
//! unless `--offline`, asks AWS which devices have provisioned and when (ListThings, then for
//! each flashed device with a thing its principals, dated by ListCertificates); renders the
//! floor report (`core::floor_report`) into one HTML file, written atomically.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use time::OffsetDateTime;

use crate::batch_dir::replace_file_at;
use crate::batch_dir::spec::read_batch_dir;
use crate::cli::ReportArgs;
use crate::cloud::Inventory;
use crate::core::floor_records::{FloorEvent, LogRecord};
use crate::core::floor_report::html::{render, Page};
use crate::core::floor_report::{batch_report, BatchInput, Provisioning};
use crate::core::manifest::ManifestRow;
use crate::error::UserError;
use crate::floor::Floor;
use crate::output::records::Record;
use crate::settings::{batches_region, connect_with_limits, provision_within, station_limits};

/// One batch directory as read.
struct Batch {
    dir: PathBuf,
    rows: Vec<ManifestRow>,
    logs: Vec<LogRecord>,
}

/// Runs `claimfab report`.
pub async fn run(args: ReportArgs) -> Result<()> {
    let within = provision_within(&args.provision_within)?;
    check_output(&args.html)?;
    let limits = station_limits(&args.limits)?;
    let mut batches = Vec::new();
    let mut regions = HashSet::new();
    for dir in &args.dirs {
        let (spec, rows) = read_batch_dir(dir)?;
        regions.insert(spec.target.region.clone());
        let logs = Floor::open(dir)?.all_logs()?;
        batches.push(Batch {
            dir: dir.clone(),
            rows,
            logs,
        });
    }
    let things = if args.offline {
        None
    } else {
        let region = batches_region(args.aws.region.as_ref(), regions)?;
        let iot = connect_with_limits(&args.aws, &region, &limits).await?;
        Some(provisioned(&iot, &batches).await?)
    };
    let now = OffsetDateTime::now_utc();
    let reports: Vec<_> = (batches.iter())
        .map(|batch| {
            batch_report(&BatchInput {
                batch: &batch.dir.display().to_string(),
                rows: &batch.rows,
                logs: &batch.logs,
                provisioning: things
                    .as_ref()
                    .map_or(Provisioning::Unknown, Provisioning::Known),
                overdue_before: now - within,
                now,
            })
        })
        .collect();
    let page = render(
        &Page {
            generated: now,
            provision_within: &args.provision_within,
        },
        &reports,
    );
    write_page(&args.html, page.as_bytes())?;
    crate::say!("floor report: {}", args.html.display());
    crate::output::emit(&Record::FloorReport {
        file: &args.html.display().to_string(),
        batches: reports.len(),
        provisioning_known: things.is_some(),
    });
    Ok(())
}

/// The output file's directory must exist, and the file must not be a directory.
fn check_output(html: &Path) -> Result<(), UserError> {
    let fail = |problem: &str| UserError::Flag {
        flag: "--html",
        value: html.display().to_string(),
        problem: problem.to_string(),
    };
    if html.is_dir() {
        return Err(fail("is a directory; name the file to write"));
    }
    let parent = html.parent().filter(|p| !p.as_os_str().is_empty());
    if parent.is_some_and(|p| !p.is_dir()) {
        return Err(fail(
            "is in a directory that does not exist; create it first",
        ));
    }
    Ok(())
}

fn write_page(html: &Path, page: &[u8]) -> Result<()> {
    replace_file_at(html, 0o644, |file| file.write_all(page))?;
    let dir = html.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Thing name -> when its device provisioned (its oldest certificate that is not one of the
/// batches' claims), for every flashed device of the batches whose thing exists.
async fn provisioned(
    iot: &impl Inventory,
    batches: &[Batch],
) -> Result<HashMap<String, Option<OffsetDateTime>>> {
    let needs = |what: &str, action: &str, e| {
        anyhow::anyhow!("{what}: {e}; the report needs {action} (or run it with --offline)")
    };
    let things = (iot.thing_names().await).map_err(|e| needs("ListThings", "iot:ListThings", e))?;
    let created = (iot.certificate_creation_times().await)
        .map_err(|e| needs("ListCertificates", "iot:ListCertificates", e))?;
    let claims: HashSet<&str> = (batches.iter())
        .flat_map(|b| b.rows.iter().map(|r| r.certificate_arn.as_str()))
        .collect();
    let flashed: HashSet<&str> = (batches.iter())
        .flat_map(|b| &b.logs)
        .filter(|record| record.event == FloorEvent::Flashed)
        .map(|record| record.serial.as_str())
        .collect();
    let to_date: Vec<&str> = (batches.iter())
        .flat_map(|b| &b.rows)
        .filter(|r| things.contains(&r.thing_name) && flashed.contains(r.serial.as_str()))
        .map(|r| r.thing_name.as_str())
        .collect();
    // One paced call per provisioned device: minutes for a large batch.
    let bar = crate::progress::stage_bar("things", to_date.len() as u64);
    // Only the batches' things: an account may hold many more.
    let mut provisioned: HashMap<String, Option<OffsetDateTime>> = (batches.iter())
        .flat_map(|b| &b.rows)
        .filter(|r| things.contains(&r.thing_name))
        .map(|r| (r.thing_name.clone(), None))
        .collect();
    for thing in to_date {
        let principals = iot.thing_principals(thing).await.map_err(|e| {
            needs(
                &format!("ListThingPrincipals {thing}"),
                "iot:ListThingPrincipals",
                e,
            )
        })?;
        let when = (principals.iter())
            .filter(|arn| !claims.contains(arn.as_str()))
            .filter_map(|arn| created.get(arn))
            .min();
        provisioned.insert(thing.to_string(), when.copied());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(provisioned)
}
