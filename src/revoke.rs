//! The `revoke` command: takes claim certificates of a batch out of service (INACTIVE or
//! REVOKED), optionally detaching the claim policy and deleting them. Journaled like `batch`
//! (intent before each status change), locked, and safe to re-run after a crash: a device
//! already in the asked state is skipped. The manifest's status column follows. A batch made
//! with `--claim-scope batch` has one certificate for all its devices: it is revoked whole.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

use crate::aws::Iot;
use crate::batch::BatchSpec;
use crate::cli::{AwsArgs, RevokeArgs, RevokeStatus};
use crate::cloud::{AwsError, CertificateStatus, Claims, OutOfService};
use crate::core::devices::ClaimScope;
use crate::core::floor::QueuedDevice;
use crate::core::ledger::{CertificateRecord, DeviceRecord, Event, Replay, SHARED_CLAIM};
use crate::core::manifest::{self, DeviceStatus, ManifestRow};
use crate::core::station::LimitsSection;
use crate::error::UserError;
use crate::floor::Floor;
use crate::journal::{EventLog, JournalFiles, JournalStore};
use crate::outdir::{BatchDir, JOURNAL_FILE, MANIFEST_FILE};

/// What to take out of service, and how: the typed form of `claimfab revoke`'s arguments,
/// which `rotate` also uses to retire the certificates it replaced.
pub struct Retirement<'a> {
    pub dir: &'a Path,
    pub devices: Selection,
    pub status: RevokeStatus,
    pub detach: bool,
    pub delete: bool,
}

/// Runs `claimfab revoke`; returns whether every selected device reached the asked state.
pub async fn run(args: RevokeArgs) -> Result<bool> {
    let request = Retirement {
        dir: &args.dir,
        devices: Selection::from_flags(args.devices.as_deref(), args.all)?,
        status: args.status,
        detach: args.detach,
        delete: args.delete,
    };
    retire(&request, &args.aws).await
}

/// Takes the selected certificates of a batch out of service; returns whether every one
/// reached the asked state. The request is checked before AWS is reached.
pub async fn retire(args: &Retirement<'_>, aws: &AwsArgs) -> Result<bool> {
    let checked = args.check()?;
    let region = &checked.spec.target.region;
    let settings = crate::settings::aws_settings(aws, None, Some(region))?;
    let iot = Iot::connect(&settings, &LimitsSection::default())
        .await
        .map_err(UserError::Aws)?;
    checked.carry_out(&iot, &JournalFiles).await
}

/// A retirement whose batch directory was read and whose selection is valid.
pub struct Checked<'a> {
    request: &'a Retirement<'a>,
    spec: BatchSpec,
    rows: Vec<ManifestRow>,
    selected: Vec<String>,
}

impl<'a> Retirement<'a> {
    /// Reads the batch directory and checks the selection against its manifest.
    pub fn check(&'a self) -> Result<Checked<'a>, UserError> {
        let (spec, rows) = crate::batch::read_batch_dir(self.dir)?;
        let shared = spec.claim_scope == ClaimScope::Batch;
        let selected = select(self, &rows, shared)?;
        Ok(Checked {
            request: self,
            spec,
            rows,
            selected,
        })
    }
}

impl Checked<'_> {
    /// Retires each selected device (journaled), then rewrites the manifest's statuses.
    pub async fn carry_out(
        mut self,
        api: &impl Claims,
        journals: &dyn JournalStore,
    ) -> Result<bool> {
        let dir = self.request.dir;
        let shared = self.spec.claim_scope == ClaimScope::Batch;
        let batch_dir = BatchDir::open(dir)?;
        let (journal, mut replay) = journals.open(&batch_dir.path(JOURNAL_FILE))?;
        let status = match self.request.status {
            RevokeStatus::Revoked => OutOfService::Revoked,
            RevokeStatus::Inactive => OutOfService::Inactive,
        };
        let plan = Revocation {
            api,
            journal: journal.as_ref(),
            claim_policy: &self.spec.claim_policy,
            status,
            detach: self.request.detach || self.request.delete,
            delete: self.request.delete,
        };
        let mut problems = 0;
        for serial in &self.selected {
            let who = if shared {
                format!("all {} devices (shared certificate)", self.rows.len())
            } else {
                serial.clone()
            };
            if !plan.report(&mut replay, serial, &who).await? {
                problems += 1;
            }
        }
        self.update_manifest(&batch_dir, &replay)?;
        crate::say!(
            "{} device(s) selected, {} failed; manifest: {}",
            if shared {
                self.rows.len()
            } else {
                self.selected.len()
            },
            problems,
            dir.join(MANIFEST_FILE).display()
        );
        if problems > 0 {
            crate::say!("re-run the same command to retry the failed devices");
        }
        Ok(problems == 0)
    }

    /// The manifest follows the journal for every device it names.
    fn update_manifest(&mut self, batch_dir: &BatchDir, replay: &Replay) -> Result<()> {
        for row in &mut self.rows {
            let view = replay.device_view(&row.serial, self.spec.claim_scope);
            let record = view.as_deref();
            if record.is_some_and(DeviceRecord::is_revoked) {
                let failed = row.status == DeviceStatus::Failed;
                row.status = DeviceRecord::manifest_status(record, failed);
            }
        }
        batch_dir.write_atomic(MANIFEST_FILE, &manifest::to_csv(&self.rows), 0o644)?;
        // A retired claim must not be handed to a station any more.
        let ready = self.rows.iter().filter(|r| r.status == DeviceStatus::Ready);
        Floor::open(self.request.dir)?.write_queue(ready.map(|r| QueuedDevice {
            serial: r.serial.clone(),
            thing_name: r.thing_name.clone(),
        }))
    }
}

/// Which devices to take out of service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every device of the batch (a shared batch: its one claim).
    All,
    /// These serials; each must be in the manifest.
    Serials(Vec<String>),
}

impl Selection {
    /// `--devices S,...` or `--all`, as `claimfab revoke` takes them.
    pub fn from_flags(devices: Option<&str>, all: bool) -> Result<Self, UserError> {
        match (devices, all) {
            (None, true) => Ok(Selection::All),
            (Some(list), false) => Ok(Selection::Serials(
                list.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            )),
            (devices, _) => Err(UserError::Flag {
                flag: "--devices",
                value: devices.unwrap_or_default().to_string(),
                problem: "give either --devices S,... or --all".into(),
            }),
        }
    }
}

/// The journal keys to revoke: the serials asked for (each must be in the manifest), every
/// device, or a shared batch's one claim.
fn select(
    args: &Retirement<'_>,
    rows: &[ManifestRow],
    shared: bool,
) -> Result<Vec<String>, UserError> {
    let dir = args.dir;
    match &args.devices {
        Selection::All if shared => Ok(vec![SHARED_CLAIM.to_string()]),
        Selection::All => Ok(rows.iter().map(|r| r.serial.clone()).collect()),
        Selection::Serials(list) if shared => Err(UserError::Flag {
            flag: "--devices",
            value: list.join(","),
            problem: format!(
                "{} shares one claim certificate among all its devices (--claim-scope batch), so one device cannot be revoked alone; use --all, or rotate the batch",
                dir.display()
            ),
        }),
        Selection::Serials(list) => {
            let known: HashSet<&str> = rows.iter().map(|r| r.serial.as_str()).collect();
            if let Some(unknown) = list.iter().find(|s| !known.contains(s.as_str())) {
                return Err(UserError::Flag {
                    flag: "--devices",
                    value: unknown.clone(),
                    problem: format!("is not a serial in {}", dir.join(MANIFEST_FILE).display()),
                });
            }
            Ok(list.clone())
        }
    }
}

/// What became of one device.
enum Revoked {
    /// It reached the asked state; what was done.
    Done(String),
    /// AWS refused or did not answer: re-run to retry.
    Failed(AwsError),
}

/// What to do to each selected device.
struct Revocation<'a, A> {
    api: &'a A,
    journal: &'a dyn EventLog,
    claim_policy: &'a str,
    status: OutOfService,
    detach: bool,
    delete: bool,
}

impl<A: Claims> Revocation<'_, A> {
    fn log(&self, replay: &mut Replay, event: Event) -> Result<()> {
        self.journal.record(&event)?;
        replay.apply(event);
        Ok(())
    }

    /// Revokes one device and prints what became of it; false if it failed.
    async fn report(&self, replay: &mut Replay, serial: &str, who: &str) -> Result<bool> {
        let Some(cert) = replay
            .devices
            .get(serial)
            .and_then(|r| r.certificate.clone())
        else {
            crate::say!("  skipped  {serial}: no certificate to revoke");
            return Ok(true);
        };
        let id = &cert.certificate_id;
        let short = id.get(..16).unwrap_or(id);
        Ok(match self.revoke_one(replay, serial, &cert).await? {
            Revoked::Done(done) => {
                crate::say!("  ok       {who} {short}: {done}");
                true
            }
            Revoked::Failed(e) => {
                crate::say!("  FAILED   {who} {short}: {e}");
                false
            }
        })
    }

    /// One device: status (journaled before and after), then detach and delete when asked.
    /// `Err` is local (journal); AWS's failures are [`Revoked::Failed`].
    async fn revoke_one(
        &self,
        replay: &mut Replay,
        serial: &str,
        cert: &CertificateRecord,
    ) -> Result<Revoked> {
        if cert.deleted {
            return Ok(Revoked::Done("already deleted".into()));
        }
        let mut done = Vec::new();
        match self.set_status(replay, serial, cert).await? {
            Revoked::Done(what) => done.push(what),
            failed => return Ok(failed),
        }
        let attached = replay.devices[serial]
            .certificate
            .as_ref()
            .is_some_and(|c| c.policy_attached);
        if self.detach && attached {
            let detached = self
                .api
                .detach_policy(self.claim_policy, &cert.certificate_arn);
            if let Some(e) = self.settled(detached.await) {
                return Ok(Revoked::Failed(e));
            }
            self.log(
                replay,
                Event::PolicyDetached {
                    serial: serial.to_string(),
                    certificate_id: cert.certificate_id.clone(),
                },
            )?;
            done.push(format!("{} detached", self.claim_policy));
        }
        if self.delete {
            let deleted = self.api.delete_certificate(&cert.certificate_id);
            if let Some(e) = self.settled(deleted.await) {
                return Ok(Revoked::Failed(e));
            }
            self.log(
                replay,
                Event::CertificateDeleted {
                    serial: serial.to_string(),
                    certificate_id: cert.certificate_id.clone(),
                },
            )?;
            done.push("deleted".into());
        }
        Ok(Revoked::Done(done.join(", ")))
    }

    /// The failure of a detach or delete, if any: NotFound means it is already done.
    fn settled(&self, result: Result<(), AwsError>) -> Option<AwsError> {
        match result {
            Ok(()) | Err(AwsError::NotFound(_)) => None,
            Err(e) => Some(e),
        }
    }

    /// The status change, journaled before and after, unless already there.
    async fn set_status(
        &self,
        replay: &mut Replay,
        serial: &str,
        cert: &CertificateRecord,
    ) -> Result<Revoked> {
        let wanted = CertificateStatus::from(self.status);
        match &cert.revoked_status {
            // AWS: a REVOKED certificate cannot change status again.
            Some(CertificateStatus::Revoked) => {
                return Ok(Revoked::Done("already REVOKED".to_string()))
            }
            Some(current) if *current == wanted => {
                return Ok(Revoked::Done(format!("already {current}")))
            }
            _ => {}
        }
        let id = &cert.certificate_id;
        self.log(
            replay,
            Event::StatusRequested {
                serial: serial.to_string(),
                certificate_id: id.clone(),
                status: wanted.clone(),
            },
        )?;
        if let Err(e) = self.api.set_certificate_status(id, self.status).await {
            if !self.already(id, &wanted, &e).await {
                return Ok(Revoked::Failed(e));
            }
        }
        self.log(
            replay,
            Event::StatusChanged {
                serial: serial.to_string(),
                certificate_id: id.clone(),
                status: wanted.clone(),
            },
        )?;
        Ok(Revoked::Done(wanted.to_string()))
    }

    /// Whether a refused status change found the certificate already in the status asked
    /// for: a run that died after AWS made the change but before journaling it, re-run (AWS
    /// refuses any change to a REVOKED certificate, even to REVOKED).
    async fn already(&self, id: &str, wanted: &CertificateStatus, error: &AwsError) -> bool {
        if !matches!(error, AwsError::Rejected(_)) {
            return false;
        }
        let described = self.api.describe_certificate(id).await;
        described.is_ok_and(|d| d.status == *wanted)
    }
}
