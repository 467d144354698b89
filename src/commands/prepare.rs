//! The `prepare` command, on the air-gapped machine: the station and the devices resolved
//! and checked as `batch` does, the region and endpoints the bundles will name taken from
//! the station or its setup record (nothing is asked of AWS), the key store's lock (age
//! recipients or a passphrase), then the keys and CSRs (`air_gap::prepare`). Re-running it
//! on a prepared directory changes nothing; on one a crash left half-made, it makes the
//! keys again (no CSR of theirs was carried: `csrs.jsonl` is written last).

use std::path::Path;

use anyhow::Result;

use crate::air_gap::prepare::prepare_batch;
use crate::batch_dir::spec::{check_same_batch, previous_spec, read_batch_dir, BatchSpec};
use crate::batch_dir::{BatchDir, BATCH_FILE};
use crate::batch_inputs::{batch_spec, resolve_devices, NameOverrides};
use crate::cli::{DeviceArgs, PrepareArgs};
use crate::core::carried::CSRS_FILE;
use crate::core::devices::{ClaimScope, DeviceList};
use crate::core::key_store::{StoreLock, KEY_STORE_FILE};
use crate::core::names;
use crate::core::station_config::StationConfig;
use crate::error::UserError;
use crate::progress::stage_bar;

/// Runs `claimfab prepare`.
pub fn run(args: PrepareArgs) -> Result<()> {
    let (mut spec, devices) = match &args.rotate {
        Some(old) => rotation_of(old)?,
        None => new_batch(&args)?,
    };
    let previous = previous_spec(&args.out)?;
    if let Some(previous) = &previous {
        if already_prepared(previous, &mut spec, &args.out)? {
            return Ok(());
        }
    } else {
        spec.batch_id = Some(new_batch_id());
    }
    let lock = store_lock(&args)?;
    let dir = BatchDir::open(&args.out)?;
    dir.sweep_temp_files()?;
    if previous.is_none() {
        let json = serde_json::to_vec_pretty(&spec).expect("spec serializes");
        dir.write_atomic(BATCH_FILE, &json, 0o644)?;
    }
    let bar = stage_bar("prepare", devices.len() as u64);
    let prepared = prepare_batch(&dir, &spec, &devices, &lock, &bar);
    bar.finish_and_clear();
    let prepared = prepared?;
    crate::output::emit(&crate::output::records::Record::Prepared {
        dir: &args.out.display().to_string(),
        devices: prepared.devices as u64,
        key_store: &args.out.join(KEY_STORE_FILE).display().to_string(),
        csrs: &args.out.join(CSRS_FILE).display().to_string(),
        csrs_sha256: &prepared.csrs_sha256,
        seconds: prepared.seconds,
    });
    crate::say!(
        "prepared {} devices in {:.1} s ({:.0} devices/s)",
        prepared.devices,
        prepared.seconds,
        prepared.devices as f64 / prepared.seconds.max(1e-9)
    );
    crate::say!(
        "  keys (encrypted, stay here): {}",
        args.out.join(KEY_STORE_FILE).display()
    );
    crate::say!(
        "  carry to the online machine: {} (sha256 {})",
        args.out.join(CSRS_FILE).display(),
        prepared.csrs_sha256
    );
    crate::say!("  there: claimfab register {CSRS_FILE} --out DIR");
    Ok(())
}

/// A new batch from the station and the flags.
fn new_batch(args: &PrepareArgs) -> Result<(BatchSpec, DeviceList), UserError> {
    let station_file = args.station.as_deref().expect("clap requires --station");
    let station = crate::settings::read_station(station_file)?;
    let names = NameOverrides {
        claim_policy: &args.claim_policy,
        template: &args.template,
    };
    names.check()?;
    let which = DeviceArgs {
        count: args.count,
        first_serial: args.first_serial.clone(),
        csv: args.csv.clone(),
    };
    let devices = resolve_devices(&which, &station)?;
    let (region, endpoints) = offline_target(args, station_file, &station)?;
    let scope = ClaimScope::Device;
    let spec = batch_spec(&station, &devices, &names, scope, &region, endpoints);
    Ok((spec, devices))
}

/// A rotation of the batch in `old`: its devices and configuration, new keys. Its
/// stations and signing key are the new batch's package's to give again.
fn rotation_of(old: &Path) -> Result<(BatchSpec, DeviceList), UserError> {
    let (old_spec, rows) = read_batch_dir(old)?;
    if old_spec.claim_scope != ClaimScope::Device {
        return Err(UserError::output_dir(old, "shares one claim across the batch, which has no air-gapped form; rotate it with `claimfab rotate`"));
    }
    let mut devices = DeviceList::default();
    for row in &rows {
        devices.push(&row.serial, &row.thing_name).map_err(|e| {
            UserError::output_dir(
                old,
                format!("its manifest: {e}; restore the manifest claimfab wrote"),
            )
        })?;
    }
    let spec = BatchSpec {
        encrypt_to: Vec::new(),
        signed_by: None,
        batch_id: None,
        ..old_spec
    };
    Ok((spec, devices))
}

/// A directory that already holds this batch: done if its CSR file exists (true), else to
/// be made again with the batch's id. Another batch there is refused.
fn already_prepared(
    previous: &BatchSpec,
    spec: &mut BatchSpec,
    out: &Path,
) -> Result<bool, UserError> {
    if previous.batch_id.is_none() {
        return Err(UserError::output_dir(
            out,
            "holds a batch made by `claimfab batch`, not an air-gapped one; choose a new --out",
        ));
    }
    spec.batch_id = previous.batch_id.clone();
    check_same_batch(previous, spec, out)?;
    if out.join(CSRS_FILE).is_file() {
        crate::say!(
            "{} is already prepared: carry {} to the online machine",
            out.display(),
            out.join(CSRS_FILE).display()
        );
        return Ok(true);
    }
    Ok(false)
}

/// A batch id: 128 random bits, hex.
fn new_batch_id() -> String {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("the OS gives randomness");
    hex::encode(bytes)
}

/// The region and the data and credential endpoints, without AWS: the flag or the
/// station's, else the setup record beside the station file, else AWS_REGION (region only).
fn offline_target(
    args: &PrepareArgs,
    station_file: &Path,
    station: &StationConfig,
) -> Result<(String, (String, String)), UserError> {
    let record = crate::settings::load_record(station_file)?;
    let region = args
        .region
        .clone()
        .or_else(|| station.aws.region.clone())
        .or_else(|| record.as_ref().map(|r| r.region.clone()))
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .ok_or_else(|| UserError::Flag {
            flag: "--region",
            value: String::new(),
            problem: "no region: pass --region, or set the station's aws.region".into(),
        })?;
    names::check_region(&region).map_err(|problem| UserError::Flag {
        flag: "--region",
        value: region.clone(),
        problem,
    })?;
    let record = record.filter(|r| r.region == region);
    let endpoint = |pinned: &Option<String>, recorded: Option<&String>, key: &str| {
        pinned.clone().or_else(|| recorded.cloned()).ok_or_else(|| {
            UserError::station(
                station_file,
                format!("no aws.{key} for {region}, and this machine cannot ask AWS: copy the station's setup record ({}) from the machine that ran `claimfab setup`, or set aws.{key}", crate::settings::record_path(station_file).display()),
            )
        })
    };
    let data = endpoint(
        &station.aws.iot_data_endpoint,
        record.as_ref().map(|r| &r.iot_data_endpoint),
        "iot_data_endpoint",
    )?;
    let credentials = endpoint(
        &station.aws.iot_credential_endpoint,
        record.as_ref().map(|r| &r.iot_credential_endpoint),
        "iot_credential_endpoint",
    )?;
    Ok((region, (data, credentials)))
}

/// What the key store is encrypted to: the recipients, or a passphrase.
fn store_lock(args: &PrepareArgs) -> Result<StoreLock, UserError> {
    if let Some(file) = &args.passphrase_file {
        return crate::trust::passphrase::from_file(file).map(StoreLock::Passphrase);
    }
    if args.passphrase {
        return crate::trust::passphrase::prompt("--passphrase", true).map(StoreLock::Passphrase);
    }
    let recipients =
        crate::trust::age_files::read_recipients(&args.encrypt_to, &args.encrypt_to_file)?;
    if recipients.is_empty() {
        return Err(UserError::Flag {
            flag: "--encrypt-to",
            value: String::new(),
            problem: "the keys must be encrypted at rest: pass --encrypt-to age1..., --encrypt-to-file FILE or --passphrase".into(),
        });
    }
    Ok(StoreLock::Recipients(recipients))
}
