//! What a batch is, as `batch.json` records it ([`BatchSpec`]): written when a batch begins,
//! compared on every re-run so a batch resumes only with the inputs it began with, and read
//! by every command that works on a batch directory ([`read_batch_dir`]).

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batch_dir::{self, Existing, BATCH_FILE, MANIFEST_FILE};
use crate::core::devices::{ClaimScope, DeviceList};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::manifest::ManifestRow;
use crate::core::sealed::Recipients;
use crate::core::station_config::KeyAlgorithm;
use crate::error::UserError;

/// What `batch.json` records about a batch, so a re-run can tell it is the same batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub format: u32,
    pub device_count: usize,
    /// SHA-256 over every serial and thing name, in order.
    pub devices_sha256: String,
    pub claim_policy: String,
    pub key_algorithm: KeyAlgorithm,
    pub target: ProvisioningTarget,
    /// One claim certificate per device, or one for the whole batch.
    #[serde(default)]
    pub claim_scope: ClaimScope,
    /// The stations (age X25519 recipients, canonical order) every bundle is encrypted to;
    /// empty: bundles are plain zips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_to: Vec<String>,
    /// The batch-signing public key (`claimfab-ed25519:...`) that signs this batch's
    /// `batch.json` and bundles; absent: the batch is not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// An air-gapped batch's id, made by `prepare` (random): its carried files repeat it, so
    /// a file from another batch is refused. Absent for a batch made in one place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

impl BatchSpec {
    /// The recipients bundles are encrypted to, `None` for plain bundles. A hand-edited
    /// `batch.json` with a bad one is refused, naming `dir`, the batch it came from.
    pub fn recipients(&self, dir: &Path) -> Result<Option<Recipients>, UserError> {
        if self.encrypt_to.is_empty() {
            return Ok(None);
        }
        Recipients::parse(self.encrypt_to.iter().map(String::as_str))
            .map(Some)
            .map_err(|e| {
                UserError::output_dir(
                    dir,
                    format!(
                        "{BATCH_FILE} encrypt_to: {e}; restore the {BATCH_FILE} claimfab wrote"
                    ),
                )
            })
    }
}

/// SHA-256 over every serial and thing name, in order: what `devices_sha256` records.
pub fn devices_fingerprint(devices: &DeviceList) -> String {
    let mut hash = Sha256::new();
    for (serial, thing_name) in devices.pairs() {
        hash.update(serial.as_bytes());
        hash.update(b"\0");
        hash.update(thing_name.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// The spec of the batch already in `out`, if there is one.
pub fn previous_spec(out: &Path) -> Result<Option<BatchSpec>, UserError> {
    match batch_dir::inspect(out)? {
        Existing::Fresh => Ok(None),
        Existing::Batch(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            UserError::output_dir(
                out,
                format!("{BATCH_FILE} is unreadable ({e}); choose a new --out"),
            )
        }),
    }
}

/// A batch resumes only with the inputs it began with.
pub fn check_same_batch(
    previous: &BatchSpec,
    spec: &BatchSpec,
    out: &Path,
) -> Result<(), UserError> {
    if previous == spec {
        return Ok(());
    }
    Err(UserError::output_dir(
        out,
        format!(
            "holds a batch made with other inputs ({}); re-run with the same station, devices and flags to resume, or choose a new --out",
            spec_difference(previous, spec)
        ),
    ))
}

/// What differs between the batch in a directory and the one asked for, in a few words.
pub fn spec_difference(previous: &BatchSpec, current: &BatchSpec) -> String {
    if previous.devices_sha256 != current.devices_sha256 {
        return format!(
            "device list differs: {} devices then, {} now",
            previous.device_count, current.device_count
        );
    }
    if previous.claim_policy != current.claim_policy {
        return format!("claim policy was {:?}", previous.claim_policy);
    }
    if previous.key_algorithm != current.key_algorithm {
        return format!("key algorithm was {:?}", previous.key_algorithm);
    }
    if previous.claim_scope != current.claim_scope {
        return format!("claim scope was {:?}", previous.claim_scope).to_lowercase();
    }
    if previous.encrypt_to != current.encrypt_to {
        return match previous.encrypt_to.as_slice() {
            [] => "its bundles were not encrypted".to_string(),
            then => format!("its bundles were encrypted to {}", then.join(",")),
        };
    }
    if previous.signed_by != current.signed_by {
        return match &previous.signed_by {
            None => "it was not signed".to_string(),
            Some(key) => format!("it was signed by {key}: pass that key's file with --sign-with"),
        };
    }
    if previous.batch_id != current.batch_id {
        return match &previous.batch_id {
            Some(id) => format!("it is air-gapped batch {id}"),
            None => "it was made by `claimfab batch`".to_string(),
        };
    }
    if previous.target.region != current.target.region {
        return format!("region was {}", previous.target.region);
    }
    "station settings differ".to_string()
}

/// Reads a finished (or interrupted) batch directory: what the batch is and its manifest.
/// Errors are one line naming the directory and what is wrong with it.
pub fn read_batch_dir(dir: &Path) -> Result<(BatchSpec, Vec<ManifestRow>), UserError> {
    let fail = |problem: String| UserError::output_dir(dir, problem);
    let spec_text = std::fs::read_to_string(dir.join(BATCH_FILE)).map_err(|e| {
        fail(format!(
            "has no readable {BATCH_FILE} ({e}); pass a claimfab batch directory"
        ))
    })?;
    let spec: BatchSpec = serde_json::from_str(&spec_text)
        .map_err(|e| fail(format!("{BATCH_FILE} is not a claimfab batch ({e})")))?;
    let manifest_bytes = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
        fail(format!(
            "has no readable {MANIFEST_FILE} ({e}); re-run its batch to write it"
        ))
    })?;
    let mut rows = crate::core::manifest::from_csv(&manifest_bytes)
        .map_err(|e| fail(format!("{MANIFEST_FILE} is not a claimfab manifest: {e}")))?;
    // What the stations recorded since the manifest was written shows as well.
    let logs = crate::floor::Floor::open(dir)?
        .all_logs()
        .map_err(|e| fail(format!("has a station log claimfab cannot read: {e:#}")))?;
    let states = crate::core::floor_records::fold_logs(&logs);
    for row in &mut rows {
        if let Some(state) = states.get(&row.serial) {
            crate::core::floor_records::overlay(row, state);
        }
    }
    Ok((spec, rows))
}
