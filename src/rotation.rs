//! Rotation, for the `rotate` command: new claim certificates and bundles for the same devices and
//! config as an existing batch, in a new batch directory (a normal, resumable batch), then a
//! rotation report tying each device's old certificate to its new one. The old batch's
//! certificates are retired (set INACTIVE) only on explicit confirmation (`--retire-old`) or
//! once a `--retire-after` window has passed, when the same command is run again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::batch_dir::journal::JournalStore;
use crate::batch_dir::spec::{read_batch_dir, spec_difference, BatchSpec};
use crate::batch_dir::{self, BatchDir, Existing, BATCH_FILE, MANIFEST_FILE};
use crate::cloud::{Claims, Inventory, OutOfService};
use crate::core::devices::DeviceList;
use crate::core::manifest::DeviceStatus;
use crate::core::signing::BatchSigner;
use crate::core::station_config::LimitsSection;
use crate::error::UserError;
use crate::pipeline::execution::{BatchResult, Execution};
use crate::pipeline::preflight::preflight;

const ROTATION_FILE: &str = "rotation.json";
const REPORT_FILE: &str = "rotation.csv";

/// What `rotate` records in the new batch directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Rotation {
    old_batch: String,
    #[serde(with = "time::serde::rfc3339::option")]
    retire_not_before: Option<OffsetDateTime>,
    retired: bool,
}

/// One line of the rotation report.
#[derive(Debug, Serialize)]
struct ReportRow<'a> {
    serial: &'a str,
    thing_name: &'a str,
    old_certificate_id: &'a str,
    new_certificate_id: &'a str,
    old_status: &'a str,
    new_status: DeviceStatus,
}

/// A signed batch is rotated into a batch signed by the same key, which `--sign-with` must
/// be; an unsigned one stays unsigned.
fn rotation_signer(
    args: &RotateRequest,
    old_spec: &BatchSpec,
) -> Result<Option<Arc<BatchSigner>>, UserError> {
    let fail = |problem: String| UserError::Flag {
        flag: "--sign-with",
        value: args
            .sign_with
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        problem,
    };
    let signer = match &args.sign_with {
        Some(file) => Some(crate::trust::signature_files::read_signer(file)?),
        None => None,
    };
    let key = signer.as_ref().map(|s| s.public().to_string());
    match (&old_spec.signed_by, key) {
        (None, None) => Ok(None),
        (Some(wanted), Some(key)) if *wanted == key => Ok(signer.map(Arc::new)),
        (Some(wanted), _) => Err(fail(format!(
            "the batch is signed by {wanted}: pass that key's file, so the new batch is signed by it too"
        ))),
        (None, Some(_)) => Err(fail(
            "the batch is not signed; a rotation keeps that (sign new batches with `claimfab batch --sign-with`)".into(),
        )),
    }
}

/// What `rotate` is asked: every value plain, the flags already parsed.
#[derive(Debug, Clone)]
pub struct RotateRequest {
    /// The batch being rotated.
    pub old_dir: PathBuf,
    /// The new batch's directory.
    pub new_dir: PathBuf,
    /// Retire the old certificates once the new batch is complete.
    pub retire_old: bool,
    /// Retire them once this long has passed, on a later run.
    pub retire_after: Option<Duration>,
    /// The rate limits and concurrency the new batch, and the old one's retirement, run at.
    pub limits: LimitsSection,
    /// The batch-signing key file, for a signed old batch.
    pub sign_with: Option<PathBuf>,
}

/// What the new batch's directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NewBatch {
    /// Nothing yet: the rotation makes it.
    Fresh,
    /// This rotation's batch, begun by an earlier run.
    Resuming,
    /// This rotation's batch made in three stages (`prepare --rotate`, `register`,
    /// `package`): only the old claims' retirement is left to do here.
    AirGapped,
}

/// A rotation whose inputs are checked: the old batch read, the new directory valid.
pub struct Rotate<'a> {
    args: &'a RotateRequest,
    old_spec: BatchSpec,
    devices: DeviceList,
    new_batch: NewBatch,
    /// The batch-signing key, when the old batch is signed (the new one is signed with it).
    signer: Option<Arc<BatchSigner>>,
}

impl<'a> Rotate<'a> {
    /// Reads the old batch and checks the flags and the new directory; creates nothing.
    pub fn check(args: &'a RotateRequest) -> Result<Self> {
        let (old_spec, old_rows) = read_batch_dir(&args.old_dir)?;
        old_spec.recipients(&args.old_dir)?;
        check_new_directory(args)?;
        let new_batch = resuming_rotation(args, &old_spec)?;
        // An air-gapped batch was signed where it was packaged; nothing is signed here.
        let signer = match new_batch {
            NewBatch::AirGapped => None,
            _ => rotation_signer(args, &old_spec)?,
        };
        let mut devices = DeviceList::default();
        for row in &old_rows {
            devices.push(&row.serial, &row.thing_name).map_err(|e| {
                UserError::output_dir(
                    &args.old_dir,
                    format!("its {MANIFEST_FILE}: {e}; restore the manifest claimfab wrote"),
                )
            })?;
        }
        Ok(Self {
            args,
            old_spec,
            devices,
            new_batch,
            signer,
        })
    }

    /// The region the old batch, and so the new one, is made in.
    pub fn region(&self) -> &str {
        &self.old_spec.target.region
    }

    /// The new batch's preflight: the old batch's template and claim policy as they are now.
    pub async fn preflight(&self, iot: &impl Inventory) -> Result<(), UserError> {
        preflight(iot, &self.old_spec, &self.devices).await
    }

    /// Makes (or finishes) the new batch, then records the rotation, retires the old
    /// certificates when asked or due, and writes the report.
    pub async fn carry_out<A: Claims>(
        self,
        api: Arc<A>,
        journals: &dyn JournalStore,
    ) -> Result<bool> {
        if !self.new_batch_complete(api.clone(), journals).await? {
            return Ok(false);
        }
        // The new batch is complete: record the rotation once, then retire when allowed.
        let retire = Retire {
            api: api.as_ref(),
            journals,
        };
        let Some(rotation) = record_and_retire(self.args, retire).await? else {
            return Ok(false);
        };
        write_report(self.args, &rotation)?;
        Ok(true)
    }
}

impl Rotate<'_> {
    /// Makes or finishes the new batch here, or checks an air-gapped one is packaged in
    /// full; whether it is complete.
    async fn new_batch_complete<A: Claims>(
        &self,
        api: Arc<A>,
        journals: &dyn JournalStore,
    ) -> Result<bool> {
        if self.new_batch == NewBatch::AirGapped {
            let packaged = self.args.new_dir.join(MANIFEST_FILE).is_file();
            let done = packaged && {
                let (_, rows) = read_batch_dir(&self.args.new_dir)?;
                rows.iter().all(|row| row.status.is_live())
            };
            if !done {
                crate::say!(
                    "rotation incomplete: {} is air-gapped and not packaged in full; register and package it, then run this again",
                    self.args.new_dir.display()
                );
            }
            return Ok(done);
        }
        let new_batch = Execution {
            out: &self.args.new_dir,
            spec: &self.old_spec,
            resuming: self.new_batch == NewBatch::Resuming,
            limits: &self.args.limits,
            journals,
            signer: self.signer.clone(),
        };
        let done = new_batch.execute(self.devices.clone(), api).await? == BatchResult::Done;
        if !done {
            crate::say!("rotation incomplete: re-run the same command to finish the new batch");
        }
        Ok(done)
    }
}

/// How the old certificates are retired.
struct Retire<'a, A> {
    api: &'a A,
    journals: &'a dyn JournalStore,
}

/// The new batch must not be the old one: its report would tie every certificate to itself.
fn check_new_directory(args: &RotateRequest) -> Result<(), UserError> {
    let same = match (
        std::fs::canonicalize(&args.old_dir),
        std::fs::canonicalize(&args.new_dir),
    ) {
        (Ok(old), Ok(new)) => old == new,
        _ => false,
    };
    if same {
        return Err(UserError::Flag {
            flag: "--out",
            value: args.new_dir.display().to_string(),
            problem: format!(
                "is the batch being rotated ({}); give a new directory for the new batch",
                args.old_dir.display()
            ),
        });
    }
    Ok(())
}

/// What `--out` holds: nothing, this rotation's new batch begun here or made air-gapped;
/// any other batch is refused.
fn resuming_rotation(args: &RotateRequest, old_spec: &BatchSpec) -> Result<NewBatch, UserError> {
    let Existing::Batch(text) = batch_dir::inspect(&args.new_dir)? else {
        return Ok(NewBatch::Fresh);
    };
    let previous: BatchSpec = serde_json::from_str(&text).map_err(|e| {
        UserError::output_dir(
            &args.new_dir,
            format!("{BATCH_FILE} is unreadable ({e}); choose a new --out"),
        )
    })?;
    let air_gapped = previous.batch_id.is_some() && previous.batch_id != old_spec.batch_id;
    let unbatched = |spec: &BatchSpec| BatchSpec {
        batch_id: None,
        ..spec.clone()
    };
    if air_gapped && unbatched(&previous) == unbatched(old_spec) {
        return Ok(NewBatch::AirGapped);
    }
    if air_gapped && unbatched(&previous).target == old_spec.target {
        return Err(UserError::output_dir(
            &args.new_dir,
            format!(
                "is an air-gapped batch packaged unlike {} ({}): package it with the same --encrypt-to and --sign-with",
                args.old_dir.display(),
                spec_difference(old_spec, &previous)
            ),
        ));
    }
    if &previous != old_spec {
        return Err(UserError::output_dir(
            &args.new_dir,
            format!(
                "holds a batch that is not a rotation of {} ({}); choose a new --out",
                args.old_dir.display(),
                spec_difference(&previous, old_spec)
            ),
        ));
    }
    Ok(NewBatch::Resuming)
}

/// Records the rotation in the new batch (once) and retires the old certificates when asked
/// or due. `None` when some could not be retired (re-run).
async fn record_and_retire<A: Claims>(
    args: &RotateRequest,
    retire: Retire<'_, A>,
) -> Result<Option<Rotation>> {
    let rotation_path = args.new_dir.join(ROTATION_FILE);
    let mut rotation: Rotation = match std::fs::read_to_string(&rotation_path) {
        Ok(text) => serde_json::from_str(&text)?,
        Err(_) => Rotation {
            old_batch: args.old_dir.display().to_string(),
            retire_not_before: args.retire_after.map(|d| OffsetDateTime::now_utc() + d),
            retired: false,
        },
    };
    let due = rotation
        .retire_not_before
        .is_some_and(|t| t <= OffsetDateTime::now_utc());
    if !rotation.retired && (args.retire_old || due) {
        let old = crate::retirement::revoke::Retirement {
            dir: &args.old_dir,
            devices: crate::retirement::revoke::Selection::All,
            status: OutOfService::Inactive,
            detach: false,
            delete: false,
        };
        let concurrency = args.limits.concurrency as usize;
        let old = old.check()?.with_concurrency(concurrency);
        let retired = old.carry_out(retire.api, retire.journals);
        if !retired.await? {
            crate::say!("some old certificates could not be retired: re-run the same command");
            return Ok(None);
        }
        rotation.retired = true;
    }
    let dir = BatchDir::open(&args.new_dir)?;
    dir.write_atomic(ROTATION_FILE, &serde_json::to_vec_pretty(&rotation)?, 0o644)?;
    Ok(Some(rotation))
}

/// Writes `rotation.csv`, tying each device's old certificate to its new one, and says where
/// the old certificates stand.
fn write_report(args: &RotateRequest, rotation: &Rotation) -> Result<()> {
    let dir = BatchDir::open(&args.new_dir)?;
    let (_, old_rows) = read_batch_dir(&args.old_dir)?;
    let (_, new_rows) = read_batch_dir(&args.new_dir)?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    for (old, new) in old_rows.iter().zip(&new_rows) {
        let old_status = match old.status {
            DeviceStatus::Ready
            | DeviceStatus::HandedOut
            | DeviceStatus::Flashed
            | DeviceStatus::Spoiled => "active",
            DeviceStatus::Inactive => "inactive",
            DeviceStatus::Revoked => "revoked",
            DeviceStatus::Deleted => "deleted",
            DeviceStatus::Failed | DeviceStatus::Pending => "none",
        };
        writer.serialize(ReportRow {
            serial: &new.serial,
            thing_name: &new.thing_name,
            old_certificate_id: &old.certificate_id,
            new_certificate_id: &new.certificate_id,
            old_status,
            new_status: new.status,
        })?;
    }
    dir.write_atomic(REPORT_FILE, &writer.into_inner()?, 0o644)?;
    crate::say!("rotation report: {}", dir.path(REPORT_FILE).display());
    let retire_not_before = (rotation.retire_not_before).map(crate::core::floor_records::rfc3339);
    crate::output::emit(&crate::output::records::Record::Rotated {
        old_dir: &args.old_dir.display().to_string(),
        new_dir: &args.new_dir.display().to_string(),
        report: &dir.path(REPORT_FILE).display().to_string(),
        old_retired: rotation.retired,
        retire_not_before: retire_not_before.as_deref(),
    });
    match (rotation.retired, rotation.retire_not_before) {
        (true, _) => crate::say!("old certificates of {} are retired (INACTIVE)", args.old_dir.display()),
        (false, Some(t)) => crate::say!(
            "old certificates stay active until {t}; run this command again after then to retire them"
        ),
        (false, None) => crate::say!(
            "old certificates are still active: retire them with --retire-old once the new bundles are flashed"
        ),
    }
    Ok(())
}
