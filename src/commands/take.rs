//! The `take` command: a flashing station's flags resolved into a [`TakeRequest`] (its id,
//! the batch keys it trusts, the serial and where the bundle goes, each checked), then one
//! bundle handed out by `floor::handout`.

use anyhow::Result;

use crate::cli::TakeArgs;
use crate::error::UserError;
use crate::floor::deliver;
use crate::floor::handout::{self, check_serial, TakeRequest, TakeResult};
use crate::settings::station_id;

/// Runs `claimfab take`.
pub fn run(args: TakeArgs) -> Result<TakeResult> {
    let (station_id, pinned_keys) = station_id(&args.station)?;
    if let Some(serial) = &args.serial {
        check_serial("--serial", serial)?;
    }
    let target = deliver::check_target(&args.to).map_err(|problem| UserError::Flag {
        flag: "--to",
        value: args.to.display().to_string(),
        problem,
    })?;
    if matches!(target, deliver::Target::Stdout) && crate::output::json() {
        return Err(UserError::Flag {
            flag: "--to",
            value: "-".into(),
            problem: "puts the bundle on standard output, where --output json puts its record; extract it with --to DIR, or drop --output json".into(),
        }
        .into());
    }
    handout::take(TakeRequest {
        dir: args.dir,
        station_id,
        pinned_keys,
        batch_keys: args.batch_keys,
        identity: args.identity,
        serial: args.serial,
        target,
        accept_other_host: args.accept_other_host,
    })
}
