//! The `batch` command: the station file, the devices and the flags resolved and checked
//! into a [`BatchSpec`] (files, names, output directory, AWS credentials, the claim policy,
//! the template, the account endpoints) before anything is created, then the batch run
//! (`pipeline::execution`). Resuming is the same command on the same directory.

use std::sync::Arc;

use anyhow::Result;

use crate::aws::Iot;
use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::spec::{check_same_batch, devices_fingerprint, previous_spec, BatchSpec};
use crate::cli::{BatchArgs, ClaimScopeArg};
use crate::cloud::Inventory;
use crate::core::devices::{self, DeviceList};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::names;
use crate::core::sealed::Recipients;
use crate::core::station_config::StationConfig;
use crate::error::UserError;
use crate::pipeline::execution::{BatchResult, Execution};
use crate::pipeline::preflight::{preflight, resolve_endpoints};

/// Resolves the device list from `--count`/`--first-serial` or `--devices`.
fn resolve_devices(args: &BatchArgs, station: &StationConfig) -> Result<DeviceList, UserError> {
    let pattern = station.thing_name_pattern();
    if let Some(file) = &args.devices {
        let bytes = std::fs::read(file).map_err(|e| UserError::Devices {
            file: file.clone(),
            line: 0,
            problem: format!("cannot read: {e}; check the path passed to --devices"),
        })?;
        return devices::parse_serials_csv(&bytes, &pattern).map_err(|p| UserError::Devices {
            file: file.clone(),
            line: p.line,
            problem: p.problem,
        });
    }
    let count = args.count.expect("clap requires --count or --devices");
    if !(1..=1_000_000).contains(&count) {
        return Err(UserError::Flag {
            flag: "--count",
            value: count.to_string(),
            problem: "must be 1 to 1000000 devices per batch".into(),
        });
    }
    let flag_error = |problem: String| UserError::Flag {
        flag: "--first-serial",
        value: args.first_serial.clone(),
        problem,
    };
    DeviceList::counted(&args.first_serial, count, &pattern).map_err(|p| flag_error(p.problem))
}

fn check_override(
    flag: &'static str,
    value: &Option<String>,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), UserError> {
    match value {
        Some(v) => check(v).map_err(|problem| UserError::Flag {
            flag,
            value: v.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Runs `claimfab batch`.
pub async fn run(args: BatchArgs) -> Result<BatchResult> {
    let station = crate::settings::read_station(&args.station)?;
    let recipients = check_flags(&args, &station)?;
    let signer = crate::trust::signature_files::resolve_signer(
        args.sign_with.as_deref(),
        &station,
        &args.station,
    )?;
    let devices = resolve_devices(&args, &station)?;
    let previous = previous_spec(&args.out)?;

    let settings = crate::settings::aws_settings(&args.aws, Some(&station), None)?;
    let iot = Iot::connect(&settings, &station.limits)
        .await
        .map_err(UserError::Aws)?;
    let endpoint_url = crate::settings::endpoint_override(args.aws.endpoint_url.as_deref());
    let recorded = crate::settings::load_record(&args.station)?
        .filter(|r| r.region == iot.region() && r.endpoint_url == endpoint_url);
    let endpoints = resolve_endpoints(
        &iot,
        &station,
        previous.as_ref().map(|p| &p.target),
        recorded.as_ref(),
    )
    .await?;
    let mut spec = batch_spec(&args, &station, &devices, iot.region(), endpoints);
    spec.encrypt_to = recipients.to_strings();
    spec.signed_by = signer.as_ref().map(|s| s.public().to_string());
    if let Some(previous) = &previous {
        check_same_batch(previous, &spec, &args.out)?;
    }
    preflight(&iot, &spec, &devices).await?;
    let run = Execution {
        out: &args.out,
        spec: &spec,
        resuming: previous.is_some(),
        limits: &station.limits,
        journals: &JournalFiles,
        signer: signer.map(Arc::new),
    };
    run.execute(devices, Arc::new(iot)).await
}

/// Checks the flags against each other and the station; returns the stations bundles are
/// encrypted to.
fn check_flags(args: &BatchArgs, station: &StationConfig) -> Result<Recipients, UserError> {
    check_override(
        "--claim-policy",
        &args.claim_policy,
        names::check_policy_name,
    )?;
    check_override("--template", &args.template, names::check_template_name)?;
    check_claim_scope(args, station)?;
    let recipients =
        crate::trust::age_files::read_recipients(&args.encrypt_to, &args.encrypt_to_file)?;
    check_encryption_scope(args, &recipients)?;
    Ok(recipients)
}

/// What the batch is, from the station and the flags (unencrypted, unsigned).
fn batch_spec(
    args: &BatchArgs,
    station: &StationConfig,
    devices: &DeviceList,
    region: &str,
    (iot_data_endpoint, iot_credential_endpoint): (String, String),
) -> BatchSpec {
    let provisioning = &station.provisioning;
    BatchSpec {
        format: 1,
        device_count: devices.len(),
        devices_sha256: devices_fingerprint(devices),
        claim_policy: (args.claim_policy.clone())
            .unwrap_or_else(|| provisioning.claim_policy.clone()),
        key_algorithm: station.keys.algorithm,
        target: ProvisioningTarget {
            region: region.to_string(),
            iot_data_endpoint,
            iot_credential_endpoint,
            role_alias: provisioning.role_alias.clone(),
            template: (args.template.clone()).unwrap_or_else(|| provisioning.template.clone()),
            thing_group: provisioning.thing_group.clone(),
            greengrass: station.greengrass.clone(),
        },
        claim_scope: args.claim_scope.into(),
        encrypt_to: Vec::new(),
        signed_by: None,
    }
}

/// A station that binds claims to devices cannot make a claim shared by a batch.
fn check_claim_scope(args: &BatchArgs, station: &StationConfig) -> Result<(), UserError> {
    if station.setup.claim_binding && matches!(args.claim_scope, ClaimScopeArg::Batch) {
        return Err(UserError::Flag {
            flag: "--claim-scope",
            value: "batch".into(),
            problem: "this station binds claims to devices (setup.claim_binding) and its hook refuses a claim shared by a batch; use --claim-scope device".into(),
        });
    }
    let station_policy = &station.provisioning.claim_policy;
    match &args.claim_policy {
        Some(policy) if station.setup.claim_binding && policy != station_policy => {
            Err(UserError::Flag {
                flag: "--claim-policy",
                value: policy.clone(),
                problem: format!("this station binds claims to devices (setup.claim_binding): its hook admits only certificates carrying the station's claim policy {station_policy:?}, so every device of this batch would be refused; leave --claim-policy out, or set provisioning.claim_policy and re-run `claimfab setup`"),
            })
        }
        _ => Ok(()),
    }
}

/// A claim shared by the batch lives only in its bundles: a re-run after a crash reads its
/// key back from one, which it cannot do when they are encrypted to stations, and would
/// have to retire the claim of every bundle already handed out.
fn check_encryption_scope(args: &BatchArgs, recipients: &Recipients) -> Result<(), UserError> {
    if !recipients.is_empty() && matches!(args.claim_scope, ClaimScopeArg::Batch) {
        return Err(UserError::Flag {
            flag: "--claim-scope",
            value: "batch".into(),
            problem: "cannot be encrypted to stations: after a crash the batch could not read its shared claim key back from an encrypted bundle, and would retire the claim of bundles already handed out; use --claim-scope device with --encrypt-to".into(),
        });
    }
    Ok(())
}
