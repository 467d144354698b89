//! The `rotate` command: the flags turned into a [`RotateRequest`] (the retire-after
//! window parsed, the rate limits and concurrency read from `--station`), then the rotation
//! checked, its preflight run against the account, and carried out by `rotation`.

use std::sync::Arc;

use anyhow::Result;

use crate::batch_dir::journal::JournalFiles;
use crate::cli::RotateArgs;
use crate::error::UserError;
use crate::rotation::{Rotate, RotateRequest};
use crate::settings::{connect_with_limits, station_limits};

/// Runs `claimfab rotate`; returns whether the rotation is complete and consistent.
pub async fn run(args: RotateArgs) -> Result<bool> {
    let request = RotateRequest {
        retire_after: parse_retire_after(args.retire_after.as_deref())?,
        // `--station` supplies only rate limits and concurrency; the rest is the old batch's.
        limits: station_limits(&args.limits)?,
        old_dir: args.dir,
        new_dir: args.out,
        retire_old: args.retire_old,
        sign_with: args.sign_with,
    };
    let rotation = Rotate::check(&request)?;
    let iot = connect_with_limits(&args.aws, rotation.region(), &request.limits).await?;
    rotation.preflight(&iot).await?;
    rotation.carry_out(Arc::new(iot), &JournalFiles).await
}

fn parse_retire_after(text: Option<&str>) -> Result<Option<std::time::Duration>, UserError> {
    text.map(|text| {
        humantime::parse_duration(text).map_err(|e| UserError::Flag {
            flag: "--retire-after",
            value: text.to_string(),
            problem: format!("{e}; use a duration like 7d, 12h or 30m"),
        })
    })
    .transpose()
}
