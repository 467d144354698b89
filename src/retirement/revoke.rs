//! The revocation engine behind `revoke`, `close`, `retire-provisioned` and `rotate`: takes
//! claim certificates of a batch out of service (INACTIVE or REVOKED), optionally detaching
//! the claim policy and deleting them. Journaled like `batch` (intent before each status
//! change), locked, and safe to re-run after a crash: a device already in the asked state is
//! skipped. Devices are retired several at once (the station's concurrency), each one's
//! steps and journal events in order, every call at its API's pace. Before any AWS call, every selected bundle not yet
//! handed out gets a closed marker, so no station takes a claim being retired; one a station
//! already holds is retired all the same and named. The manifest's status column and the
//! hand-out queue follow. A batch made with `--claim-scope batch` has one certificate for
//! all its devices: it is revoked whole.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use futures::StreamExt;
use indicatif::ProgressBar;
use time::OffsetDateTime;

use crate::batch_dir::spec::BatchSpec;
use crate::cloud::{AwsError, CertificateStatus, Claims, OutOfService};
use crate::core::devices::{ClaimScope, DeviceList};
use crate::core::floor_records::CLOSED;
use crate::core::ledger::{CertificateRecord, DeviceRecord, Event, Replay, SHARED_CLAIM};
use crate::core::manifest::{self, DeviceStatus, ManifestRow};

use crate::batch_dir::journal::{EventLog, JournalStore, SCRATCH_FAILED};
use crate::batch_dir::{BatchDir, JOURNAL_FILE, MANIFEST_FILE};
use crate::error::UserError;
use crate::floor::Floor;
use crate::output::records::{HeldBundle, Record};

/// What to take out of service, and how: `claimfab revoke`'s request, which `close`,
/// `retire-provisioned` and `rotate` make too.
pub struct Retirement<'a> {
    pub dir: &'a Path,
    pub devices: Selection,
    pub status: OutOfService,
    pub detach: bool,
    pub delete: bool,
}

/// What a retirement did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The devices whose claim is now out of service (every device that carried a shared
    /// claim), in manifest order.
    pub retired: Vec<String>,
    /// How many selected claims AWS did not take out of service (re-run to retry).
    pub failed: usize,
    /// Selected bundles a station held (took, not yet recorded) when the floor was closed:
    /// (serial, station). Retired all the same: revoking is the security team's decision.
    pub held: Vec<(String, String)>,
}

impl Outcome {
    /// Whether every selected claim reached the asked state.
    pub fn all_done(&self) -> bool {
        self.failed == 0
    }

    /// The human summary of what was retired: a count, the first few serials and where the
    /// full list is (`see`).
    pub fn say_retired(&self, status: &str, see: &Path) {
        if self.retired.is_empty() {
            crate::say!("no claim taken out of service");
            return;
        }
        crate::say!(
            "{} claim(s) now {status}: {} (all of them: {})",
            self.retired.len(),
            first_few(self.retired.iter().map(String::as_str)),
            see.display()
        );
    }
}

/// How many serials a summary names before it says how many more there are.
const SUMMARY_NAMES: usize = 5;

/// `a, b, c, d, e and N more`: a long list kept to one short line.
pub fn first_few<'a>(items: impl ExactSizeIterator<Item = &'a str>) -> String {
    let total = items.len();
    let shown: Vec<&str> = items.take(SUMMARY_NAMES).collect();
    match total - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// A retirement whose batch directory was read and whose selection is valid.
pub struct Checked<'a> {
    request: &'a Retirement<'a>,
    spec: BatchSpec,
    rows: Vec<ManifestRow>,
    selected: Vec<String>,
    /// Devices retired at once; one unless [`Checked::with_concurrency`] says more.
    concurrency: usize,
}

impl<'a> Retirement<'a> {
    /// Reads the batch directory and checks the selection against its manifest.
    pub fn check(&'a self) -> Result<Checked<'a>, UserError> {
        let (spec, rows) = crate::batch_dir::spec::read_batch_dir(self.dir)?;
        let shared = spec.claim_scope == ClaimScope::Batch;
        let selected = select(self, &rows, shared)?;
        Ok(Checked {
            request: self,
            spec,
            rows,
            selected,
            concurrency: 1,
        })
    }
}

impl Checked<'_> {
    /// Retires up to `devices` devices at once (the station's `limits.concurrency`): the
    /// calls of all of them wait on their APIs' paces, so AWS's quotas, not each call's
    /// round trip, bound the run. One at a time (the default) makes every run's journal the
    /// same, as the crash-point tests need.
    pub fn with_concurrency(mut self, devices: usize) -> Self {
        self.concurrency = devices.max(1);
        self
    }

    /// The region the batch was made in.
    pub fn region(&self) -> &str {
        &self.spec.target.region
    }

    /// Retires each selected device (journaled), then rewrites the manifest's statuses;
    /// returns whether every one reached the asked state.
    pub async fn carry_out(self, api: &impl Claims, journals: &dyn JournalStore) -> Result<bool> {
        self.execute(api, journals).await.map(|o| o.all_done())
    }

    /// Closes the floor to the selected bundles, retires each selected device (journaled),
    /// then rewrites the manifest's statuses and the hand-out queue.
    pub async fn execute(
        mut self,
        api: &impl Claims,
        journals: &dyn JournalStore,
    ) -> Result<Outcome> {
        let dir = self.request.dir;
        let batch_dir = BatchDir::open(dir)?;
        let (journal, replay) = journals.open(&batch_dir.path(JOURNAL_FILE))?;
        // Before the first journal event and the first AWS call: a crash anywhere after
        // leaves the bundles closed, and a re-run finds its markers in place.
        let held = self.close_floor()?;
        let plan = Revocation {
            dir: dir.display().to_string(),
            bar: crate::progress::stage_bar("retire", self.selected.len() as u64),
            api,
            journal: journal.as_ref(),
            replay: Mutex::new(replay),
            claim_policy: &self.spec.claim_policy,
            status: self.request.status,
            detach: self.request.detach || self.request.delete,
            delete: self.request.delete,
        };
        let retiring = self.retire_each(&plan, &held).await;
        plan.bar.finish_and_clear();
        let (retired, failed) = retiring?;
        let outcome = Outcome {
            retired: self.retired_devices(&retired),
            failed,
            held,
        };
        let replay = plan
            .replay
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        self.update_manifest(&batch_dir, &replay)?;
        say_held(&outcome.held);
        emit_outcome(dir, &outcome);
        crate::say!(
            "{} device(s) selected, {} failed; manifest: {}",
            match self.spec.claim_scope {
                ClaimScope::Batch => self.rows.len(),
                ClaimScope::Device => self.selected.len(),
            },
            outcome.failed,
            dir.join(MANIFEST_FILE).display()
        );
        if outcome.failed > 0 {
            crate::say!("re-run the same command to retry the failed devices (their bundles stay closed to the stations meanwhile)");
        }
        Ok(outcome)
    }

    /// Retires the selected devices, `concurrency` at once; returns those retired and how
    /// many failed. A local fault (the journal) stops new devices from starting, lets those
    /// in flight finish, and is returned.
    async fn retire_each<A: Claims>(
        &self,
        plan: &Revocation<'_, A>,
        held: &[(String, String)],
    ) -> Result<(HashSet<&str>, usize)> {
        let shared = self.spec.claim_scope == ClaimScope::Batch;
        let holders: &HashMap<&str, &str> = &held
            .iter()
            .map(|(serial, station)| (serial.as_str(), station.as_str()))
            .collect();
        let stop = AtomicBool::new(false);
        let mut verdicts = futures::stream::iter(&self.selected)
            .take_while(|_| std::future::ready(!stop.load(Ordering::Relaxed)))
            .map(|serial| async move {
                let held_by = holders.get(serial.as_str()).copied();
                let who = match held_by {
                    _ if shared => format!("all {} devices (shared certificate)", self.rows.len()),
                    Some(station) => format!("{serial} (held by station {station})"),
                    None => serial.clone(),
                };
                let verdict = plan.report(serial, &who, held_by).await;
                plan.bar.inc(1);
                (serial.as_str(), verdict)
            })
            .buffer_unordered(self.concurrency);
        let (mut retired, mut failed, mut first_error) = (HashSet::new(), 0, None);
        while let Some((serial, verdict)) = verdicts.next().await {
            match verdict {
                Ok(Verdict::Retired) => {
                    retired.insert(serial);
                }
                Ok(Verdict::Skipped) => {}
                Ok(Verdict::Failed) => failed += 1,
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok((retired, failed)),
        }
    }

    /// The devices whose claim this run found or left out of service, in manifest order: a
    /// shared claim is every device that carried it (live when the run began).
    fn retired_devices(&self, retired: &HashSet<&str>) -> Vec<String> {
        let shared = retired.contains(SHARED_CLAIM);
        self.rows
            .iter()
            .filter(|r| retired.contains(r.serial.as_str()) || (shared && r.status.is_live()))
            .map(|r| r.serial.clone())
            .collect()
    }

    /// The bundles a station could take and whose claim this run retires: every selected
    /// device with a live claim (a shared claim: every such device).
    fn floor_serials(&self) -> Vec<&str> {
        let selected: HashSet<&str> = self.selected.iter().map(String::as_str).collect();
        let all = selected.contains(SHARED_CLAIM);
        self.rows
            .iter()
            .filter(|r| r.status.is_live() && (all || selected.contains(r.serial.as_str())))
            .map(|r| r.serial.as_str())
            .collect()
    }

    /// Puts a closed marker on every selected bundle not handed out, so no station takes a
    /// claim being retired. Returns the selected bundles a station holds (took and has not
    /// recorded): retired all the same, and named in the report. Markers already there (a
    /// re-run after a crash, a `close`) are left as they are.
    fn close_floor(&self) -> Result<Vec<(String, String)>> {
        let floor = Floor::open(self.request.dir)?;
        let now = OffsetDateTime::now_utc();
        let status: HashMap<&str, DeviceStatus> = self
            .rows
            .iter()
            .map(|r| (r.serial.as_str(), r.status))
            .collect();
        let mut held = Vec::new();
        for serial in self.floor_serials() {
            let Some(station) = close_bundle(&floor, serial, now)? else {
                continue;
            };
            // Flashed or spoiled: the station is done with it, it holds nothing.
            if matches!(
                status.get(serial),
                Some(DeviceStatus::Ready | DeviceStatus::HandedOut)
            ) {
                held.push((serial.to_string(), station));
            }
        }
        Ok(held)
    }

    /// The manifest follows the journal for every device it names.
    fn update_manifest(&mut self, batch_dir: &BatchDir, replay: &Replay) -> Result<()> {
        for row in &mut self.rows {
            let view = replay.device_view(&row.serial, self.spec.claim_scope);
            let view = view.context(SCRATCH_FAILED)?;
            let record = view.as_ref();
            if record.is_some_and(DeviceRecord::is_revoked) {
                let failed = row.status == DeviceStatus::Failed;
                row.status = DeviceRecord::manifest_status(record, failed);
            }
        }
        batch_dir.write_atomic(MANIFEST_FILE, &manifest::to_csv(&self.rows), 0o644)?;
        // A retired claim must not be handed to a station any more.
        let ready = self.rows.iter().filter(|r| r.status == DeviceStatus::Ready);
        let mut queue = DeviceList::default();
        for row in ready {
            queue.push(&row.serial, &row.thing_name).with_context(|| {
                format!(
                    "{MANIFEST_FILE} names {} twice; restore the manifest claimfab wrote",
                    row.serial
                )
            })?;
        }
        Floor::open(self.request.dir)?.write_queue(&queue)
    }
}

/// Puts a closed marker on `serial`'s bundle unless it has a claim marker already; returns
/// the station whose marker it has, `None` when it is closed (now or before). A marker that
/// cannot be read does not stop a revocation: its station is reported as unknown.
fn close_bundle(floor: &Floor, serial: &str, now: OffsetDateTime) -> Result<Option<String>> {
    if !floor.is_claimed(serial)? && floor.claim(CLOSED, serial, now)? {
        return Ok(None);
    }
    Ok(match floor.handout(serial) {
        Ok(Some(marker)) if marker.station == CLOSED => None,
        Ok(Some(marker)) => Some(marker.station),
        Ok(None) | Err(_) => Some("unknown (unreadable claim marker)".into()),
    })
}

/// The `retirement_summary` record of one batch directory.
fn emit_outcome(dir: &Path, outcome: &Outcome) {
    let held: Vec<HeldBundle> = (outcome.held.iter())
        .map(|(serial, station)| HeldBundle { serial, station })
        .collect();
    crate::output::emit(&Record::RetirementSummary {
        dir: &dir.display().to_string(),
        retired: outcome.retired.len(),
        failed: outcome.failed,
        held: &held,
    });
}

/// Names the selected bundles a station held, retired all the same.
fn say_held(held: &[(String, String)]) {
    if held.is_empty() {
        return;
    }
    let named: Vec<String> = held
        .iter()
        .map(|(serial, station)| format!("{serial} at {station}"))
        .collect();
    crate::say!(
        "{} selected bundle(s) were held by a station, retired all the same (a board flashed with one will not provision): {}",
        held.len(),
        first_few(named.iter().map(String::as_str))
    );
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

/// How one selected device ended.
enum Verdict {
    /// Out of service in the asked state (now or before).
    Retired,
    /// Nothing to take out of service (no certificate).
    Skipped,
    /// AWS refused or did not answer: re-run to retry.
    Failed,
}

/// What became of one device.
enum Revoked {
    /// It reached the asked state; what was done.
    Done(String),
    /// AWS refused or did not answer: re-run to retry.
    Failed(AwsError),
}

/// What to do to each selected device, and the journal's state, which every device being
/// retired reads and extends (each only its own record).
struct Revocation<'a, A> {
    /// The batch directory, as the records of `--output json` name it.
    dir: String,
    /// One step per selected claim; hidden unless stderr is a terminal.
    bar: ProgressBar,
    api: &'a A,
    journal: &'a dyn EventLog,
    replay: Mutex<Replay>,
    claim_policy: &'a str,
    status: OutOfService,
    detach: bool,
    delete: bool,
}

impl<A: Claims> Revocation<'_, A> {
    /// The journal's state; held only between awaits, never across one.
    fn replay(&self) -> MutexGuard<'_, Replay> {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Journals an event durably, then applies it to the state.
    fn log(&self, event: Event) -> Result<()> {
        self.journal.record(&event)?;
        self.replay().apply(event).context(SCRATCH_FAILED)
    }

    /// Revokes one device and prints what became of it (a `retirement` record with
    /// `--output json`).
    async fn report(&self, serial: &str, who: &str, held_by: Option<&str>) -> Result<Verdict> {
        let record = self.replay().record(serial).context(SCRATCH_FAILED)?;
        let Some(cert) = record.and_then(|r| r.certificate) else {
            self.say(format_args!(
                "  skipped  {serial}: no certificate to revoke"
            ));
            self.emit(serial, None, "skipped", "no certificate to revoke", held_by);
            return Ok(Verdict::Skipped);
        };
        let id = &cert.certificate_id;
        let short = id.get(..16).unwrap_or(id);
        Ok(match self.revoke_one(serial, &cert).await? {
            Revoked::Done(done) => {
                self.say(format_args!("  ok       {who} {short}: {done}"));
                self.emit(serial, Some(id), "retired", &done, held_by);
                Verdict::Retired
            }
            Revoked::Failed(e) => {
                self.say(format_args!("  FAILED   {who} {short}: {e}"));
                self.emit(serial, Some(id), "failed", &e.to_string(), held_by);
                Verdict::Failed
            }
        })
    }

    /// A line of the report, printed with the progress bar out of its way.
    fn say(&self, line: std::fmt::Arguments<'_>) {
        self.bar.suspend(|| crate::say!("{line}"));
    }

    fn emit(
        &self,
        serial: &str,
        certificate_id: Option<&str>,
        result: &str,
        detail: &str,
        held_by: Option<&str>,
    ) {
        let shared = serial == SHARED_CLAIM;
        crate::output::emit(&Record::Retirement {
            dir: &self.dir,
            serial: (!shared).then_some(serial),
            shared_claim: shared,
            certificate_id,
            result,
            detail,
            held_by,
        });
    }

    /// One device: status (journaled before and after), then detach and delete when asked.
    /// `Err` is local (journal); AWS's failures are [`Revoked::Failed`].
    async fn revoke_one(&self, serial: &str, cert: &CertificateRecord) -> Result<Revoked> {
        if cert.deleted {
            return Ok(Revoked::Done("already deleted".into()));
        }
        let mut done = Vec::new();
        match self.set_status(serial, cert).await? {
            Revoked::Done(what) => done.push(what),
            failed => return Ok(failed),
        }
        let attached = self.replay().policy_attached(serial);
        if self.detach && attached {
            let detached = self
                .api
                .detach_policy(self.claim_policy, &cert.certificate_arn);
            if let Some(e) = self.settled(detached.await) {
                return Ok(Revoked::Failed(e));
            }
            self.log(Event::PolicyDetached {
                serial: serial.to_string(),
                certificate_id: cert.certificate_id.clone(),
            })?;
            done.push(format!("{} detached", self.claim_policy));
        }
        if self.delete {
            let deleted = self.api.delete_certificate(&cert.certificate_id);
            if let Some(e) = self.settled(deleted.await) {
                return Ok(Revoked::Failed(e));
            }
            self.log(Event::CertificateDeleted {
                serial: serial.to_string(),
                certificate_id: cert.certificate_id.clone(),
            })?;
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
    async fn set_status(&self, serial: &str, cert: &CertificateRecord) -> Result<Revoked> {
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
        self.log(Event::StatusRequested {
            serial: serial.to_string(),
            certificate_id: id.clone(),
            status: wanted.clone(),
        })?;
        if let Err(e) = self.api.set_certificate_status(id, self.status).await {
            if !self.already(id, &wanted, &e).await {
                return Ok(Revoked::Failed(e));
            }
        }
        self.log(Event::StatusChanged {
            serial: serial.to_string(),
            certificate_id: id.clone(),
            status: wanted.clone(),
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_of_serials_stays_one_short_line() {
        let names = |n: usize| (1..=n).map(|i| format!("SN{i}")).collect::<Vec<_>>();
        let list = |v: &[String]| first_few(v.iter().map(String::as_str));
        assert_eq!(list(&names(0)), "");
        assert_eq!(list(&names(3)), "SN1, SN2, SN3");
        assert_eq!(list(&names(5)), "SN1, SN2, SN3, SN4, SN5");
        assert_eq!(list(&names(500)), "SN1, SN2, SN3, SN4, SN5 and 495 more");
    }
}
