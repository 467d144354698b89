//! The `batch` command: the station file, the devices and the flags resolved and checked
//! into a [`BatchSpec`] (files, names, output directory, AWS credentials, the claim policy,
//! the template, the account endpoints) before anything is created, then the batch run
//! (`pipeline::execution`). Resuming is the same command on the same directory.

use std::sync::Arc;

use anyhow::Result;

use crate::aws::Iot;
use crate::batch_dir::journal::JournalFiles;
use crate::batch_dir::spec::{check_same_batch, previous_spec};
use crate::batch_inputs::{batch_spec, resolve_devices, NameOverrides};
use crate::cli::{BatchArgs, ClaimScopeArg};
use crate::cloud::Inventory;
use crate::core::sealed::Recipients;
use crate::core::station_config::StationConfig;
use crate::error::UserError;
use crate::pipeline::execution::{BatchResult, Execution};
use crate::pipeline::preflight::{preflight, resolve_endpoints};

/// Runs `claimfab batch`.
pub async fn run(args: BatchArgs) -> Result<BatchResult> {
    let station = crate::settings::read_station(&args.station)?;
    let recipients = check_flags(&args, &station)?;
    let signer = crate::trust::signature_files::resolve_signer(
        args.sign_with.as_deref(),
        &station,
        &args.station,
    )?;
    let devices = resolve_devices(&args.devices, &station)?;
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
    let scope = args.claim_scope.into();
    let names = name_overrides(&args);
    let mut spec = batch_spec(&station, &devices, &names, scope, iot.region(), endpoints);
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
    name_overrides(args).check()?;
    check_claim_scope(args, station)?;
    let recipients =
        crate::trust::age_files::read_recipients(&args.encrypt_to, &args.encrypt_to_file)?;
    check_encryption_scope(args, &recipients)?;
    Ok(recipients)
}

fn name_overrides(args: &BatchArgs) -> NameOverrides<'_> {
    NameOverrides {
        claim_policy: &args.claim_policy,
        template: &args.template,
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
