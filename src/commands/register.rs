//! The `register` command, on the online machine: the carried CSR file checked whole, the
//! batch directory checked to hold this batch (or nothing), AWS reached in the batch's
//! region, the account checked to be the one the batch was prepared for (its endpoints) and
//! ready (preflight), then the pipeline run with the keys kept offline
//! (`air_gap::register`). Resuming is the same command on the same directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use crate::air_gap::csrs::{read_csrs, CsrBatch, Signatures};
use crate::air_gap::register::OfflineKeys;
use crate::aws::Iot;
use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::spec::{check_same_batch, previous_spec};
use crate::cli::RegisterArgs;
use crate::cloud::{EndpointKind, Inventory};
use crate::core::carried::CSRS_FILE;
use crate::core::station_config::StationConfig;
use crate::error::UserError;
use crate::pipeline::execution::{BatchResult, Execution};
use crate::pipeline::preflight::preflight;

/// Runs `claimfab register`.
pub async fn run(args: RegisterArgs) -> Result<BatchResult> {
    let batch = read_csrs(&args.csrs, Signatures::Verify)?;
    let previous = previous_spec(&args.out)?;
    if let Some(previous) = &previous {
        check_same_batch(previous, &batch.spec, &args.out)?;
        check_same_csrs(&batch, &args.out)?;
    }
    let station = match &args.limits.station {
        Some(path) => Some(crate::settings::read_station(path)?),
        None => None,
    };
    let limits = station
        .as_ref()
        .map(|s| s.limits.clone())
        .unwrap_or_default();
    let region = &batch.spec.target.region;
    let iot = crate::settings::connect_with_limits(&args.aws, region, &limits).await?;
    if iot.region() != region {
        return Err(UserError::Flag {
            flag: "--region",
            value: iot.region().to_string(),
            problem: format!("the batch was prepared for {region}; register it there"),
        }
        .into());
    }
    check_endpoints(&iot, &batch, station.as_ref(), &args.csrs).await?;
    preflight(&iot, &batch.spec, &batch.devices).await?;
    let run = Execution {
        out: &args.out,
        spec: &batch.spec,
        resuming: previous.is_some(),
        limits: &limits,
        journals: &JournalFiles,
        signer: None,
    };
    let carried = args.csrs.clone();
    let custody = |parts: &crate::pipeline::RunParts, plan: &crate::pipeline::BatchPlan| {
        let kept = parts.dir.path(CSRS_FILE);
        if !kept.is_file() {
            // Streamed: a million devices' CSRs are half a gigabyte.
            parts.dir.write_atomic_with(CSRS_FILE, 0o644, |out| {
                std::io::copy(&mut std::fs::File::open(&carried)?, out).map(drop)
            })?;
        }
        OfflineKeys::new(parts, &batch, &kept, plan)
    };
    run.execute_in(batch.devices.clone(), Arc::new(iot), custody)
        .await
}

/// A directory that holds this batch must hold the very CSR file it began with.
fn check_same_csrs(batch: &CsrBatch, out: &Path) -> Result<(), UserError> {
    let kept = out.join(CSRS_FILE);
    if !kept.is_file() {
        return Ok(());
    }
    let previous = read_csrs(&kept, Signatures::Verify)?;
    if previous.sha256 != batch.sha256 {
        return Err(UserError::output_dir(
            out,
            format!("was registering another CSR file of this batch (sha256 {}); carry that one, or choose a new --out", previous.sha256),
        ));
    }
    Ok(())
}

/// The devices' config will name the endpoints the batch was prepared with: they must be
/// this account's (DescribeEndpoint), or the ones the given station pins.
async fn check_endpoints(
    iot: &Iot,
    batch: &CsrBatch,
    station: Option<&StationConfig>,
    csrs: &Path,
) -> Result<(), UserError> {
    let target = &batch.spec.target;
    for (prepared, pinned, kind, name) in [
        (
            &target.iot_data_endpoint,
            station.and_then(|s| s.aws.iot_data_endpoint.as_ref()),
            EndpointKind::DataAts,
            "data",
        ),
        (
            &target.iot_credential_endpoint,
            station.and_then(|s| s.aws.iot_credential_endpoint.as_ref()),
            EndpointKind::CredentialProvider,
            "credential",
        ),
    ] {
        if pinned == Some(prepared) {
            continue;
        }
        let actual = iot.describe_endpoint(kind).await.map_err(|e| {
            UserError::Aws(format!("DescribeEndpoint: {e}; allow iot:DescribeEndpoint, or pass --station with the endpoints the batch was prepared with"))
        })?;
        if actual != *prepared {
            return Err(UserError::Carried {
                file: csrs.to_path_buf(),
                line: 1,
                problem: format!("the batch was prepared for {name} endpoint {prepared}, but this account's is {actual}: prepare it again with this account's setup record, or register it in the account it was prepared for"),
            });
        }
    }
    Ok(())
}
