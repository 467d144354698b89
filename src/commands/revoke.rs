//! The `revoke` command: the flags turned into a [`Retirement`] (which devices, which
//! status, detach, delete), checked against the batch directory before AWS is reached, then
//! carried out by `retirement::revoke` at the station's limits and concurrency, and
//! summarised.

use anyhow::Result;

use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::MANIFEST_FILE;
use crate::cli::RevokeArgs;
use crate::cloud::OutOfService;
use crate::retirement::revoke::{Retirement, Selection};
use crate::settings::{connect_with_limits, station_limits};

/// Runs `claimfab revoke`; returns whether every selected device reached the asked state.
pub async fn run(args: RevokeArgs) -> Result<bool> {
    let request = Retirement {
        dir: &args.dir,
        devices: Selection::from_flags(args.devices.as_deref(), args.all)?,
        status: args.status.into(),
        detach: args.detach,
        delete: args.delete,
    };
    let limits = station_limits(&args.limits)?;
    let checked = request
        .check()?
        .with_concurrency(limits.concurrency as usize);
    let region = checked.region().to_owned();
    let iot = connect_with_limits(&args.aws, &region, &limits).await?;
    let outcome = checked.execute(&iot, &JournalFiles).await?;
    let status = match request.status {
        OutOfService::Revoked => "REVOKED",
        OutOfService::Inactive => "INACTIVE",
    };
    outcome.say_retired(status, &args.dir.join(MANIFEST_FILE));
    Ok(outcome.all_done())
}
