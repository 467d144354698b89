//! The manifest stage: `manifest.csv` written from the journal's state, one row per device
//! in batch order, streamed to the file (a row exists in memory only while it is written),
//! the stations' hand-out queue of the ready ones, and the run's outcome counted from the
//! same rows (each row also a `device` record with `--output json`).

use std::collections::HashMap;

use anyhow::Result;
use time::OffsetDateTime;

use super::state::RunState;
use super::{BatchPlan, DeviceFailure, Outcome};
use crate::batch_dir::{BatchDir, MANIFEST_FILE};
use crate::core::devices::Device;
use crate::core::floor_records::{fold_logs, overlay};
use crate::core::ledger::{DeviceRecord, Replay, SHARED_CLAIM};
use crate::core::manifest::{DeviceStatus, ManifestRow, ManifestWriter};
use crate::floor::Floor;
use crate::output::records::Record;

/// RFC 3339 in UTC, whole seconds.
fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

/// One device's row, from its journal record and whether it failed in this run.
fn row_of(
    device: &Device,
    state: &Replay,
    plan: &BatchPlan,
    failed: bool,
) -> std::io::Result<ManifestRow> {
    let view = state.device_view(&device.serial, plan.claim_scope)?;
    let record = view.as_ref();
    let status = DeviceRecord::manifest_status(record, failed);
    let mut row = ManifestRow::new(&device.serial, &device.thing_name, status);
    if let Some(cert) = record.and_then(|r| r.certificate.as_ref()) {
        row.certificate_id = cert.certificate_id.clone();
        row.certificate_arn = cert.certificate_arn.clone();
        row.certificate_sha256 = cert.certificate_sha256.clone();
        row.not_after = rfc3339(cert.not_after);
        row.created_at = rfc3339(cert.created_at);
        if let Some((bundle, sha)) = &cert.bundle {
            row.bundle = bundle.clone();
            row.bundle_sha256 = sha.clone();
        }
    }
    Ok(row)
}

/// Writes the manifest and returns the run's outcome.
pub fn write_manifest(
    dir: &BatchDir,
    state: &RunState,
    plan: &BatchPlan,
    interrupted: bool,
    register_seconds: f64,
) -> Result<Outcome> {
    let failures = state.failures();
    let shared_failed = failures.contains_key(SHARED_CLAIM);
    let floor = Floor::open(&dir.path(""))?;
    let logs = floor.all_logs()?;
    let floor_states = fold_logs(&logs);
    let mut counts: HashMap<DeviceStatus, usize> = HashMap::new();
    let mut ready: Vec<u32> = Vec::new();
    state.read(|replay| {
        dir.write_atomic_with(MANIFEST_FILE, 0o644, |file| {
            let mut manifest = ManifestWriter::new(file)?;
            for (position, device) in plan.devices.iter().enumerate() {
                let failed = shared_failed || failures.contains_key(&device.serial);
                let mut row = row_of(&device, replay, plan, failed)?;
                if let Some(state) = floor_states.get(&device.serial) {
                    overlay(&mut row, state);
                }
                *counts.entry(row.status).or_default() += 1;
                if let Some(signing) = &plan.signing {
                    signing.sign_row(dir, &row).map_err(std::io::Error::other)?;
                }
                if row.status == DeviceStatus::Ready {
                    ready.push(position as u32);
                }
                manifest.write(&row)?;
                let reason = failures
                    .get(&device.serial)
                    .or_else(|| failures.get(SHARED_CLAIM))
                    .filter(|_| failed);
                crate::output::emit(&Record::Device {
                    row: &row,
                    reason: reason.map(String::as_str),
                });
            }
            manifest.finish().map(drop)
        })
    })?;
    // The stations' hand-out queue follows: only ready bundles, signed first, may be taken.
    floor.write_queue_of(|| ready.iter().map(|&p| plan.devices.pair(p as usize)))?;
    let failures = lasting_failures(state, failures);
    let count = |status| counts.get(&status).copied().unwrap_or(0);
    Ok(Outcome {
        devices: plan.devices.len(),
        // Ready, or already on the factory floor: either way the device is done.
        ready: counts
            .iter()
            .filter(|(status, _)| status.is_live())
            .map(|(_, n)| n)
            .sum(),
        failed: count(DeviceStatus::Failed),
        pending: count(DeviceStatus::Pending),
        failures,
        interrupted,
        retired: state.retired(),
        register_seconds,
    })
}

/// This run's failures of devices that are still not ready, by serial.
fn lasting_failures(state: &RunState, failures: HashMap<String, String>) -> Vec<DeviceFailure> {
    let mut lasting: Vec<DeviceFailure> = state.read(|replay| {
        failures
            .into_iter()
            .filter(|(serial, _)| !replay.is_ready(serial))
            .map(|(serial, reason)| DeviceFailure { serial, reason })
            .collect()
    });
    lasting.sort_by(|a, b| a.serial.cmp(&b.serial));
    lasting
}
