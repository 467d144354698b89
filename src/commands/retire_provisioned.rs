//! The `retire-provisioned` command: in each batch directory given, the claims of devices
//! that have provisioned (`retirement::provisioned`), REVOKED and detached, at the station's
//! limits and concurrency; idempotent, for nightly runs.

use anyhow::Result;

use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::spec::read_batch_dir;
use crate::cli::RetireProvisionedArgs;
use crate::cloud::Inventory;
use crate::retirement::close::retire;
use crate::retirement::provisioned::{provisioned, provisioned_selection};
use crate::settings::{connect_with_limits, station_limits};

/// Runs `claimfab retire-provisioned`; returns whether every claim found was retired.
pub async fn run(args: RetireProvisionedArgs) -> Result<bool> {
    let limits = station_limits(&args.limits)?;
    let concurrency = limits.concurrency as usize;
    let mut batches = Vec::new();
    for dir in &args.dirs {
        let (spec, rows) = read_batch_dir(dir)?;
        batches.push((dir, spec, rows));
    }
    let Some((_, first, _)) = batches.first() else {
        return Ok(true);
    };
    let iot = connect_with_limits(&args.aws, &first.target.region, &limits).await?;
    let things = iot
        .thing_names()
        .await
        .map_err(|e| anyhow::anyhow!("ListThings: {e}; retire-provisioned needs iot:ListThings"))?;
    let mut clean = true;
    for (dir, spec, rows) in &batches {
        let provisioned = provisioned(&iot, rows, &things, concurrency).await?;
        let Some(selection) = provisioned_selection(spec, rows, &provisioned) else {
            crate::say!(
                "{}: no claim of a provisioned device to retire",
                dir.display()
            );
            crate::output::emit(&crate::output::records::Record::RetirementSummary {
                dir: &dir.display().to_string(),
                retired: 0,
                failed: 0,
                held: &[],
            });
            continue;
        };
        crate::say!(
            "{}: retiring the claims of {} provisioned device(s)",
            dir.display(),
            provisioned.len()
        );
        let outcome = retire(dir, selection, concurrency, &iot, &JournalFiles).await?;
        outcome.say_retired("REVOKED", &dir.join(crate::batch_dir::MANIFEST_FILE));
        clean &= outcome.all_done();
    }
    Ok(clean)
}
