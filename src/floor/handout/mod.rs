//! What a flashing station does against a batch directory that several stations on
//! several machines share over a network drive. `take` hands the station one bundle, exactly
//! once across every station (the claim marker made by link(2), see `floor`), extracted
//! under a device image or written to standard output; `flashed` records what became of it
//! in the station's own append-only log. A station that dies between the two gets the same
//! bundle back from its next `take`, never a second one.
//!
//! A take reads one queue record per device it passes (usually one), stats its claim marker
//! and bundle, and reads the one bundle it hands out: its cost does not grow with the batch.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::core::floor_records::{
    record_action, rfc3339, take_start, Claim, FloorEvent, LogRecord, PendingState, QueuedDevice,
    RecordAction, TakeStart,
};
use crate::core::names;
use crate::error::UserError;
use crate::floor::deliver::{self, BundleLayout, Target};
use crate::floor::Floor;
use crate::output::records::{Record, Taken, TakenFile};
use crate::trust::age_files::StationIdentity;
use crate::trust::signature_files::StationBatch;
use bundle::check_deliverable;

mod bundle;
mod claiming;

/// How a take ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeResult {
    /// A bundle was handed to the station (exit 0).
    HandedOut,
    /// Every ready bundle of the batch is handed out already (exit 3).
    NothingLeft,
    /// The bundle this station took before and never recorded, handed back (exit 4): the
    /// same identity, which a board may already carry.
    HandedBack,
}

/// One station at one batch directory's floor.
struct Station {
    floor: Floor,
    id: String,
    dir: std::path::PathBuf,
    /// The station's key, for a batch whose bundles are encrypted for its stations.
    identity: Option<StationIdentity>,
    /// `batch.json` as read once, checked against the batch keys the station trusts.
    batch: StationBatch,
    /// The four files a bundle of this batch holds, and their modes.
    layout: BundleLayout,
}

/// A bundle read for handing out or recording: its bytes, wiped on drop (they hold the key).
struct Bundle {
    serial: String,
    bytes: Zeroizing<Vec<u8>>,
    thing_name: String,
    certificate_id: String,
    /// What `claimfab verify` would find wrong with it.
    findings: Vec<String>,
}

/// What a station asks of `take`, every value already checked (the station id, the serial
/// as a serial, the target) but the batch's own files, which `take` checks.
pub struct TakeRequest {
    pub dir: PathBuf,
    pub station_id: String,
    /// Batch keys the station trusts: its station file's ([station] batch_keys) ...
    pub pinned_keys: Vec<String>,
    /// ... and those given with `--batch-key`.
    pub batch_keys: Vec<String>,
    pub identity: Option<PathBuf>,
    pub serial: Option<String>,
    pub target: Target,
    pub accept_other_host: bool,
}

/// What a station records with `flashed`.
pub struct FlashedRequest {
    pub dir: PathBuf,
    pub station_id: String,
    pub pinned_keys: Vec<String>,
    pub serial: String,
    pub event: FloorEvent,
}

/// `claimfab take`: checks the batch and the station's identity before it touches anything,
/// then hands back what the station holds, or claims the asked-for or next bundle, logs it
/// and delivers it.
pub fn take(request: TakeRequest) -> Result<TakeResult> {
    let station = open_for_take(&request)?;
    let (serial, target) = (request.serial.as_deref(), &request.target);
    let bundle = match station.start(serial)? {
        TakeStart::RecordFirst { pending } => return Err(station.record_first(&pending).into()),
        TakeStart::HandBack { serial: held, .. } if station.retired(&held)? => {
            station.floor.clear_pending(&station.id)?;
            eprintln!(
                "claimfab: {held}, which this station held, was retired meanwhile (close or revoke): not handed back"
            );
            station.take_fresh(serial, target)?
        }
        TakeStart::HandBack {
            serial: held,
            log_handout,
        } => {
            station.check_same_host(&held, request.accept_other_host)?;
            let bundle = station.hand_back(&held, log_handout, target)?;
            // Logged as handed out: it may have been delivered, and flashed, before.
            if !log_handout {
                hand_over(&station, &bundle, target, true)?;
                station.report_hand_back(&bundle);
                return Ok(TakeResult::HandedBack);
            }
            Some(bundle)
        }
        TakeStart::Fresh => station.take_fresh(serial, target)?,
    };
    let Some(bundle) = bundle else {
        // Whatever the pending note named, the station holds nothing.
        station.floor.clear_pending(&station.id)?;
        eprintln!(
            "claimfab: nothing left to take in {}: every ready bundle is handed out",
            station.dir.display()
        );
        let dir = station.dir.display().to_string();
        crate::output::emit(&Record::NothingLeft { dir: &dir });
        return Ok(TakeResult::NothingLeft);
    };
    hand_over(&station, &bundle, target, false)?;
    Ok(TakeResult::HandedOut)
}

/// The station at the batch's floor, with its identity when the bundles are sealed.
fn open_for_take(request: &TakeRequest) -> Result<Station> {
    let mut station = Station::open(
        &request.dir,
        request.station_id.clone(),
        &request.pinned_keys,
        &request.batch_keys,
    )?;
    station.warn_if_signed_but_unchecked();
    station.identity = match &request.identity {
        Some(file) => Some(station.check_identity(StationIdentity::read(file)?)?),
        None if station.floor.is_sealed() => {
            return Err(UserError::Flag {
                flag: "--identity",
                value: String::new(),
                problem: format!(
                    "is needed: the bundles of {} are encrypted for their stations; pass the station's key file",
                    request.dir.display()
                ),
            }
            .into())
        }
        None => None,
    };
    Ok(station)
}

/// `claimfab flashed`: records the outcome of a bundle this station holds, once.
pub fn flashed(request: FlashedRequest) -> Result<()> {
    let station = Station::open(&request.dir, request.station_id, &request.pinned_keys, &[])?;
    let (serial, event) = (&request.serial, request.event);
    station.check_holds(serial)?;
    let history = station.floor.history(&station.id, serial)?;
    match record_action(event, &history) {
        RecordAction::AlreadyRecorded => {
            station.clear_pending_if(serial)?;
            crate::say!("{serial} already recorded as {}", event.as_str());
            emit_recorded(&station, serial, event, true);
        }
        RecordAction::Conflict(done) => {
            return Err(serial_error(
                "SERIAL",
                serial,
                format!(
                "is already recorded as {} by station {} at {}; a board's outcome is recorded once",
                done.event.as_str(),
                done.station,
                done.time
            ),
            )
            .into())
        }
        RecordAction::Append { log_handout } => {
            let bundle = station.read_bundle(serial)?;
            if log_handout {
                station.log(&bundle, FloorEvent::HandedOut)?;
            }
            station.log(&bundle, event)?;
            station.clear_pending_if(serial)?;
            report_recorded(&station, serial, event);
            emit_recorded(&station, serial, event, false);
        }
    }
    Ok(())
}

fn emit_recorded(station: &Station, serial: &str, event: FloorEvent, already_recorded: bool) {
    crate::output::emit(&Record::Recorded {
        serial,
        event: event.as_str(),
        station: &station.id,
        already_recorded,
    });
}

fn report_recorded(station: &Station, serial: &str, event: FloorEvent) {
    match event {
        FloorEvent::Spoiled => crate::say!(
            "{serial} spoiled; retire its claim: claimfab revoke {} --devices {serial}",
            station.dir.display()
        ),
        _ => crate::say!("{serial} {}", event.as_str()),
    }
}

/// Delivers a claimed bundle: the zip on standard output (serial and thing name on standard
/// error), or extracted under the root (serial and thing name on standard output, or the
/// `taken` record with `--output json`).
fn hand_over(station: &Station, bundle: &Bundle, target: &Target, handed_back: bool) -> Result<()> {
    match target {
        Target::Stdout => {
            crate::output::write_bytes(&bundle.bytes).with_context(|| {
                format!(
                    "standard output closed before bundle {} was written; it stays this station's: run take again to get it back",
                    bundle.serial
                )
            })?;
            eprintln!("{} {}", bundle.serial, bundle.thing_name);
        }
        Target::Root(root) => {
            deliver::extract_expected(&bundle.bytes, root, &station.layout).with_context(|| {
                format!(
                    "bundle {} stays this station's: fix this and run take again to get it back",
                    bundle.serial
                )
            })?;
            crate::say!("{} {}", bundle.serial, bundle.thing_name);
            crate::output::emit(&Record::Taken(&taken(station, bundle, root, handed_back)));
        }
    }
    Ok(())
}

/// The `taken` record of a bundle extracted under `root`.
fn taken(station: &Station, bundle: &Bundle, root: &Path, handed_back: bool) -> Taken {
    let files = (station.layout.entries().iter())
        .map(|(name, mode)| TakenFile {
            path: root.join(name).display().to_string(),
            mode: format!("{mode:04o}"),
        })
        .collect();
    Taken {
        serial: bundle.serial.clone(),
        thing_name: bundle.thing_name.clone(),
        certificate_id: bundle.certificate_id.clone(),
        station: station.id.clone(),
        at: rfc3339(OffsetDateTime::now_utc()),
        handed_back,
        files,
    }
}

/// A serial names a file in the batch directory: only thing-name characters pass.
pub fn check_serial(flag: &'static str, serial: &str) -> Result<(), UserError> {
    names::check_thing_name(serial).map_err(|rule| {
        serial_error(
            flag,
            serial,
            format!("is not a serial ({rule}); pass the serial on the board's label"),
        )
    })
}

fn serial_error(flag: &'static str, serial: &str, problem: String) -> UserError {
    UserError::Flag {
        flag,
        value: serial.to_string(),
        problem,
    }
}

impl Station {
    fn open(
        dir: &Path,
        id: String,
        pinned: &[String],
        batch_keys: &[String],
    ) -> Result<Self, UserError> {
        let trusted = crate::trust::signature_files::trusted_keys(pinned, batch_keys)?;
        let floor = Floor::open(dir)?;
        let batch = StationBatch::open(dir, trusted)?;
        let layout = BundleLayout::new(&batch.spec.target.greengrass)
            .map_err(|problem| UserError::output_dir(dir, problem))?;
        if floor.is_sealed() != batch.is_sealed() {
            return Err(UserError::output_dir(
                dir,
                "batch.json changed while it was being read; try again, and check who writes the batch directory",
            ));
        }
        Ok(Self {
            floor,
            id,
            dir: dir.to_path_buf(),
            identity: None,
            batch,
            layout,
        })
    }

    /// An identity none of the batch's bundles is encrypted to opens nothing: refused once,
    /// before any bundle is tried.
    fn check_identity(&self, identity: StationIdentity) -> Result<StationIdentity, UserError> {
        let recipients = &self.batch.spec.encrypt_to;
        if !self.batch.is_sealed() || identity.is_among(recipients) {
            return Ok(identity);
        }
        Err(UserError::Identity {
            file: identity.file().to_path_buf(),
            problem: format!(
                "is not one of the stations the bundles of {} are encrypted to ({}): pass the identity of one of them",
                self.dir.display(),
                recipients.join(", ")
            ),
        })
    }

    /// A signed batch at a station that pins no batch key: its signatures go unchecked, so
    /// the station cannot tell its bundles from forged ones. Say so.
    fn warn_if_signed_but_unchecked(&self) {
        if let (false, Some(key)) = (self.batch.is_signed(), &self.batch.spec.signed_by) {
            eprintln!(
                "claimfab: warning: this batch is signed ({key}) but this station pins no batch key, so the signatures are not checked; add the key to [station] batch_keys (or pass --batch-key)"
            );
        }
    }

    /// A hand-back on another machine than the one that took the bundle: one station id on
    /// two hosts (or a moved station) would put one identity on two boards.
    fn check_same_host(&self, serial: &str, accepted: bool) -> Result<(), UserError> {
        let note = self.floor.pending_note(&self.id).ok().flatten();
        let Some(host) = note.and_then(|n| n.host) else {
            return Ok(());
        };
        let here = crate::floor::this_host();
        if accepted || host == here {
            return Ok(());
        }
        Err(serial_error(
            "--station",
            &self.id,
            format!(
                "took {serial} on host {host}, not on this one ({here}), and has not recorded it: is station id {} running on two machines? Record it there (claimfab flashed), or pass --accept-other-host to hand it back here",
                self.id
            ),
        ))
    }

    fn report_hand_back(&self, bundle: &Bundle) {
        eprintln!(
            "claimfab: {} was handed to station {} before and not recorded: if that board was flashed, run `claimfab flashed {} --station {} {}` first; this is the same identity, not a new one",
            bundle.serial,
            self.id,
            self.dir.display(),
            self.id,
            bundle.serial
        );
    }

    /// How this take begins, from the station's pending take.
    fn start(&self, requested: Option<&str>) -> Result<TakeStart> {
        let Some(pending) = self.floor.pending(&self.id)? else {
            return Ok(take_start(requested, None));
        };
        // A marker a crash left incomplete is completed when the evidence says it is ours.
        let mine = match self.floor.claim_state(&pending)? {
            None => None,
            Some(Claim::Complete(marker)) => Some(marker.station == self.id),
            Some(Claim::Incomplete) => Some(self.floor.complete_claim(&self.id, &pending)?),
            Some(Claim::Foreign(_)) => Some(false),
        };
        let state = match mine {
            None => PendingState::Unclaimed,
            Some(false) => PendingState::ClaimedByOther,
            Some(true) => PendingState::Mine(self.floor.history(&self.id, &pending)?),
        };
        Ok(take_start(requested, Some((&pending, &state))))
    }

    fn record_first(&self, pending: &str) -> UserError {
        UserError::Flag {
            flag: "--serial",
            value: pending.to_string(),
            problem: format!(
                "station {} still holds this bundle: record it first (claimfab flashed {} --station {} {pending}, with --spoiled if the board failed)",
                self.id,
                self.dir.display(),
                self.id
            ),
        }
    }

    /// The asked-for bundle, or the next one; `None` when nothing is left.
    fn take_fresh(&self, serial: Option<&str>, target: &Target) -> Result<Option<Bundle>> {
        match serial {
            Some(serial) => self.take_serial(serial, target).map(Some),
            None => self.take_next(target),
        }
    }

    /// Whether the claim of a bundle this station holds was retired since (by `close` or
    /// `revoke`): then it is not handed back. Reads the manifest, but only on this path
    /// (a take after a crash).
    fn retired(&self, serial: &str) -> Result<bool> {
        let (_, rows) = crate::batch_dir::spec::read_batch_dir(&self.dir)?;
        Ok(rows
            .iter()
            .find(|r| r.serial == serial)
            .is_some_and(|r| !r.status.is_live()))
    }

    /// The bundle this station took and has not recorded, again.
    fn hand_back(&self, serial: &str, log_handout: bool, target: &Target) -> Result<Bundle> {
        let bundle = self.read_bundle(serial)?;
        // Still queued unless the queue was rewritten since; then its own names.
        let queued = match self.floor.open_queue()? {
            Some((queue, _)) => self.floor.find_queued(&queue, serial)?,
            None => None,
        };
        let queued = queued.unwrap_or_else(|| QueuedDevice {
            serial: serial.to_string(),
            thing_name: bundle.thing_name.clone(),
        });
        check_deliverable(&bundle, &queued, target, &self.layout)?;
        self.claim_certificate(&bundle)??;
        if log_handout {
            self.log(&bundle, FloorEvent::HandedOut)?;
        }
        Ok(bundle)
    }

    fn log(&self, bundle: &Bundle, event: FloorEvent) -> Result<()> {
        self.floor.append_log(&LogRecord {
            station: self.id.clone(),
            time: rfc3339(OffsetDateTime::now_utc()),
            serial: bundle.serial.clone(),
            certificate_id: bundle.certificate_id.clone(),
            event,
        })
    }

    fn clear_pending_if(&self, serial: &str) -> Result<()> {
        if self.floor.pending(&self.id)?.as_deref() == Some(serial) {
            self.floor.clear_pending(&self.id)?;
        }
        Ok(())
    }

    /// `flashed` records only a bundle this station took.
    fn check_holds(&self, serial: &str) -> Result<()> {
        match self.floor.handout(serial)? {
            Some(marker) if marker.station == self.id => Ok(()),
            Some(marker) => Err(serial_error(
                "SERIAL",
                serial,
                format!(
                    "was handed out to station {} at {}, not to {}: record it at that station",
                    marker.station,
                    rfc3339(marker.at),
                    self.id
                ),
            )
            .into()),
            None => Err(serial_error(
                "SERIAL",
                serial,
                format!(
                    "was not handed out to any station: take it first (claimfab take {} --station {} --serial {serial} --to PATH)",
                    self.dir.display(),
                    self.id
                ),
            )
            .into()),
        }
    }
}
