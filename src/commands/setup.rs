//! The `setup` command: the station file read and the AWS settings resolved into a
//! [`SetupRequest`], then the account brought to the fleet-provisioning setup by
//! `account_setup`. Exit: 0 done (or plan printed); 1 stopped part-way or drift left in
//! place; 2 bad input.

use anyhow::Result;

use crate::account_setup::{self, SetupRequest};
use crate::cli::SetupArgs;
use crate::settings::{aws_settings, endpoint_override, read_station};

/// Runs `claimfab setup`.
pub async fn run(args: SetupArgs) -> Result<bool> {
    let station = read_station(&args.station)?;
    let settings = aws_settings(&args.aws, Some(&station), None)?;
    account_setup::run(SetupRequest {
        endpoint_url: endpoint_override(args.aws.endpoint_url.as_deref()),
        station_file: args.station,
        station,
        settings,
        plan: args.plan,
        update_drifted: args.update_drifted,
    })
    .await
}
