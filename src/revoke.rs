//! The `revoke` command: takes claim certificates of a batch out of service (INACTIVE or
//! REVOKED), optionally detaching the claim policy and deleting them. Journaled like `batch`
//! (intent before each status change), locked, and safe to re-run after a crash: a device
//! already in the asked state is skipped. The manifest's status column follows. A batch made
//! with `--claim-scope batch` has one certificate for all its devices: it is revoked whole.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;

use crate::aws::{AwsError, Iot};

use crate::cli::{AwsArgs, RevokeArgs, RevokeStatus};
use crate::core::devices::ClaimScope;
use crate::core::ledger::{CertificateRecord, DeviceRecord, Event, Replay, SHARED_CLAIM};
use crate::core::manifest::{self, DeviceStatus, ManifestRow};
use crate::core::station::LimitsSection;
use crate::error::UserError;
use crate::journal::Journal;
use crate::outdir::{BatchDir, JOURNAL_FILE, MANIFEST_FILE};

/// What to take out of service, and how: the typed form of `claimfab revoke`'s arguments,
/// which `rotate` also uses to retire the certificates it replaced.
pub struct Retirement<'a> {
    pub dir: &'a Path,
    /// Comma-separated serials, or `None` with `all`.
    pub devices: Option<&'a str>,
    pub all: bool,
    pub status: RevokeStatus,
    pub detach: bool,
    pub delete: bool,
}

/// Runs `claimfab revoke`; returns whether every selected device reached the asked state.
pub async fn run(args: RevokeArgs) -> Result<bool> {
    let request = Retirement {
        dir: &args.dir,
        devices: args.devices.as_deref(),
        all: args.all,
        status: args.status,
        detach: args.detach,
        delete: args.delete,
    };
    retire(&request, &args.aws).await
}

/// Takes the selected certificates of a batch out of service; returns whether every one
/// reached the asked state.
pub async fn retire(args: &Retirement<'_>, aws: &AwsArgs) -> Result<bool> {
    let dir = args.dir;
    let (spec, mut rows) = crate::batch::read_batch_dir(dir)?;
    let shared = spec.claim_scope == ClaimScope::Batch;
    let selected = select(args, &rows, shared)?;
    let revoked = matches!(args.status, RevokeStatus::Revoked);
    let status_name = if revoked { "REVOKED" } else { "INACTIVE" };
    let detach = args.detach || args.delete;

    let settings = crate::settings::aws_settings(aws, None, Some(&spec.target.region))?;
    let iot = Iot::connect(&settings, &LimitsSection::default())
        .await
        .map_err(UserError::Aws)?;
    let batch_dir = BatchDir::open(dir)?;
    let (journal, mut replay) = Journal::open(&batch_dir.path(JOURNAL_FILE))?;
    let plan = Revocation {
        iot: &iot,
        journal: &journal,
        claim_policy: &spec.claim_policy,
        revoked,
        status_name,
        detach,
        delete: args.delete,
    };
    let mut problems = 0;
    for serial in &selected {
        let Some(cert) = replay
            .devices
            .get(serial)
            .and_then(|r| r.certificate.clone())
        else {
            crate::say!("  skipped  {serial}: no certificate to revoke");
            continue;
        };
        let short = cert
            .certificate_id
            .get(..16)
            .unwrap_or(&cert.certificate_id);
        let who = if shared {
            format!("all {} devices (shared certificate)", rows.len())
        } else {
            serial.clone()
        };
        match plan.revoke_one(&mut replay, serial, &cert).await? {
            Ok(done) => crate::say!("  ok       {who} {short}: {done}"),
            Err(e) => {
                problems += 1;
                crate::say!("  FAILED   {who} {short}: {e}");
            }
        }
    }

    // The manifest follows the journal for every device it names.
    for row in &mut rows {
        let view = replay.device_view(&row.serial, spec.claim_scope);
        let record = view.as_deref();
        if record.is_some_and(DeviceRecord::is_revoked) {
            row.status = DeviceRecord::manifest_status(record, row.status == DeviceStatus::Failed);
        }
    }
    batch_dir.write_atomic(MANIFEST_FILE, &manifest::to_csv(&rows), 0o644)?;
    crate::say!(
        "{} device(s) selected, {} failed; manifest: {}",
        if shared { rows.len() } else { selected.len() },
        problems,
        dir.join(MANIFEST_FILE).display()
    );
    if problems > 0 {
        crate::say!("re-run the same command to retry the failed devices");
    }
    Ok(problems == 0)
}

/// The journal keys to revoke: the serials asked for (each must be in the manifest), every
/// device, or a shared batch's one claim.
fn select(
    args: &Retirement<'_>,
    rows: &[ManifestRow],
    shared: bool,
) -> Result<Vec<String>, UserError> {
    let dir = args.dir;
    Ok(match (args.devices, args.all) {
        (Some(list), false) if shared => {
            return Err(UserError::Flag {
                flag: "--devices",
                value: list.to_string(),
                problem: format!(
                    "{} shares one claim certificate among all its devices (--claim-scope batch), so one device cannot be revoked alone; use --all, or rotate the batch",
                    dir.display()
                ),
            })
        }
        (None, true) if shared => vec![SHARED_CLAIM.to_string()],
        (Some(list), false) => {
            let known: HashMap<&str, ()> = rows.iter().map(|r| (r.serial.as_str(), ())).collect();
            let list: Vec<String> = list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            if let Some(unknown) = list.iter().find(|s| !known.contains_key(s.as_str())) {
                return Err(UserError::Flag {
                    flag: "--devices",
                    value: unknown.clone(),
                    problem: format!("is not a serial in {}", dir.join(MANIFEST_FILE).display()),
                });
            }
            list
        }
        (None, true) => rows.iter().map(|r| r.serial.clone()).collect(),
        (devices, _) => {
            return Err(UserError::Flag {
                flag: "--devices",
                value: devices.unwrap_or_default().to_string(),
                problem: "give either --devices S,... or --all".into(),
            })
        }
    })
}

/// What to do to each selected device.
struct Revocation<'a> {
    iot: &'a Iot,
    journal: &'a Journal,
    claim_policy: &'a str,
    revoked: bool,
    status_name: &'static str,
    detach: bool,
    delete: bool,
}

impl Revocation<'_> {
    fn log(&self, replay: &mut Replay, event: Event) -> Result<()> {
        self.journal.record(&event)?;
        replay.apply(event);
        Ok(())
    }

    /// One device: status (journaled before and after), then detach and delete when asked.
    /// The outer error is local (journal); the inner one is AWS's, reported per device.
    async fn revoke_one(
        &self,
        replay: &mut Replay,
        serial: &str,
        cert: &CertificateRecord,
    ) -> Result<Result<String, AwsError>> {
        let id = &cert.certificate_id;
        if cert.deleted {
            return Ok(Ok("already deleted".into()));
        }
        let event = |kind: fn(String, String) -> Event| kind(serial.to_string(), id.clone());
        let mut done = Vec::new();
        match cert.revoked_status.as_ref().map(|s| s.as_str()) {
            // AWS: a REVOKED certificate cannot change status again.
            Some("REVOKED") => done.push("already REVOKED".to_string()),
            Some(current) if current == self.status_name => done.push(format!("already {current}")),
            _ => {
                let status = crate::core::ledger::CertificateStatus::from(self.status_name);
                self.log(
                    replay,
                    Event::StatusRequested {
                        serial: serial.to_string(),
                        certificate_id: id.clone(),
                        status: status.clone(),
                    },
                )?;
                if let Err(e) = self.iot.set_certificate_status(id, self.revoked).await {
                    return Ok(Err(e));
                }
                self.log(
                    replay,
                    Event::StatusChanged {
                        serial: serial.to_string(),
                        certificate_id: id.clone(),
                        status,
                    },
                )?;
                done.push(self.status_name.to_string());
            }
        }
        let attached = replay.devices[serial]
            .certificate
            .as_ref()
            .is_some_and(|c| c.policy_attached);
        if self.detach && attached {
            match self
                .iot
                .detach_policy(self.claim_policy, &cert.certificate_arn)
                .await
            {
                Ok(()) | Err(AwsError::NotFound(_)) => {}
                Err(e) => return Ok(Err(e)),
            }
            self.log(
                replay,
                event(|serial, certificate_id| Event::PolicyDetached {
                    serial,
                    certificate_id,
                }),
            )?;
            done.push(format!("{} detached", self.claim_policy));
        }
        if self.delete {
            match self.iot.delete_certificate(id).await {
                Ok(()) | Err(AwsError::NotFound(_)) => {}
                Err(e) => return Ok(Err(e)),
            }
            self.log(
                replay,
                event(|serial, certificate_id| Event::CertificateDeleted {
                    serial,
                    certificate_id,
                }),
            )?;
            done.push("deleted".into());
        }
        Ok(Ok(done.join(", ")))
    }
}
