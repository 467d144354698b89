//! The commands a flashing station runs against a batch directory that several stations on
//! several machines share over a network drive. `take` hands the station one bundle, exactly
//! once across every station (the claim marker made by link(2), see floor.rs), extracted
//! under a device image or written to standard output; `flashed` records what became of it
//! in the station's own append-only log. A station that dies between the two gets the same
//! bundle back from its next `take`, never a second one.
//!
//! A take reads one queue record per device it passes (usually one), stats its claim marker
//! and bundle, and reads the one bundle it hands out: its cost does not grow with the batch.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::cli::{FlashedArgs, StationArgs, TakeArgs};
use crate::core::floor::{
    check_station_id, record_action, rfc3339, take_start, FloorEvent, Handout, LogRecord,
    PendingState, RecordAction, TakeStart,
};
use crate::core::manifest::{self, DeviceStatus};
use crate::core::names;
use crate::core::verify::check_bundle;
use crate::deliver::{self, Target};
use crate::error::UserError;
use crate::floor::Floor;
use crate::outdir::MANIFEST_FILE;
use crate::sealed::StationIdentity;

/// How a take ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeResult {
    /// A bundle was handed to the station (exit 0).
    HandedOut,
    /// Every ready bundle of the batch is handed out already (exit 3).
    NothingLeft,
}

/// One station at one batch directory's floor.
struct Station {
    floor: Floor,
    id: String,
    dir: std::path::PathBuf,
    /// The station's key, for a batch whose bundles are encrypted for its stations.
    identity: Option<StationIdentity>,
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

/// `claimfab take`: checks every input before it touches anything, then hands back what the
/// station holds, or claims the asked-for or next bundle, logs it and delivers it.
pub fn take(args: TakeArgs) -> Result<TakeResult> {
    let mut station = Station::open(&args.dir, &args.station)?;
    station.identity = match &args.identity {
        Some(file) => Some(StationIdentity::read(file)?),
        None if station.floor.is_sealed() => {
            return Err(UserError::Flag {
                flag: "--identity",
                value: String::new(),
                problem: format!(
                    "is needed: the bundles of {} are encrypted for their stations; pass the station's key file",
                    args.dir.display()
                ),
            }
            .into())
        }
        None => None,
    };
    if let Some(serial) = &args.serial {
        check_serial("--serial", serial)?;
    }
    let target = deliver::check_target(&args.to).map_err(|problem| UserError::Flag {
        flag: "--to",
        value: args.to.display().to_string(),
        problem,
    })?;
    let bundle = match station.start(args.serial.as_deref())? {
        TakeStart::RecordFirst { pending } => return Err(station.record_first(&pending).into()),
        TakeStart::HandBack { serial, .. } if station.retired(&serial)? => {
            station.floor.clear_pending(&station.id)?;
            eprintln!(
                "claimfab: {serial}, which this station held, was retired meanwhile (close or revoke): not handed back"
            );
            station.take_fresh(args.serial.as_deref(), &target)?
        }
        TakeStart::HandBack {
            serial,
            log_handout,
        } => Some(station.hand_back(&serial, log_handout, &target)?),
        TakeStart::Fresh => station.take_fresh(args.serial.as_deref(), &target)?,
    };
    let Some(bundle) = bundle else {
        // Whatever the pending note named, the station holds nothing.
        station.floor.clear_pending(&station.id)?;
        eprintln!(
            "claimfab: nothing left to take in {}: every ready bundle is handed out",
            station.dir.display()
        );
        return Ok(TakeResult::NothingLeft);
    };
    hand_over(&bundle, &target)?;
    Ok(TakeResult::HandedOut)
}

/// `claimfab flashed`: records the outcome of a bundle this station holds, once.
pub fn flashed(args: FlashedArgs) -> Result<()> {
    let station = Station::open(&args.dir, &args.station)?;
    let serial = &args.serial;
    check_serial("SERIAL", serial)?;
    let event = if args.spoiled {
        FloorEvent::Spoiled
    } else {
        FloorEvent::Flashed
    };
    station.check_holds(serial)?;
    let history = station.floor.history(&station.id, serial)?;
    match record_action(event, &history) {
        RecordAction::AlreadyRecorded => {
            station.clear_pending_if(serial)?;
            crate::say!("{serial} already recorded as {}", event.as_str());
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
        }
    }
    Ok(())
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
/// error), or extracted under the root (serial and thing name on standard output).
fn hand_over(bundle: &Bundle, target: &Target) -> Result<()> {
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
            deliver::extract(&bundle.bytes, root).with_context(|| {
                format!(
                    "bundle {} stays this station's: fix this and run take again to get it back",
                    bundle.serial
                )
            })?;
            crate::say!("{} {}", bundle.serial, bundle.thing_name);
        }
    }
    Ok(())
}

/// A serial names a file in the batch directory: only thing-name characters pass.
fn check_serial(flag: &'static str, serial: &str) -> Result<(), UserError> {
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

/// The station's id from `--station ID`, or from the `[station]` section of
/// `--station-config FILE`.
fn station_id(args: &StationArgs) -> Result<String, UserError> {
    if let Some(id) = &args.station {
        check_station_id(id).map_err(|rule| {
            let hint = if id.contains('/') || id.ends_with(".toml") {
                "; --station takes a station id here: pass a station file as --station-config FILE"
            } else {
                ""
            };
            UserError::Flag {
                flag: "--station",
                value: id.clone(),
                problem: format!("{rule}{hint}"),
            }
        })?;
        return Ok(id.clone());
    }
    let file = args
        .station_config
        .as_deref()
        .expect("clap requires --station or --station-config");
    let config = crate::settings::read_station(file)?;
    config.station.map(|s| s.id).ok_or_else(|| {
        UserError::station(
            file,
            "has no [station] section naming the station; add one with its id (see station-config/example.toml) or pass --station ID",
        )
    })
}

impl Station {
    fn open(dir: &Path, args: &StationArgs) -> Result<Self, UserError> {
        let id = station_id(args)?;
        Ok(Self {
            floor: Floor::open(dir)?,
            id,
            dir: dir.to_path_buf(),
            identity: None,
        })
    }

    /// How this take begins, from the station's pending take.
    fn start(&self, requested: Option<&str>) -> Result<TakeStart> {
        let Some(pending) = self.floor.pending(&self.id)? else {
            return Ok(take_start(requested, None));
        };
        let state = match self.floor.handout(&pending)? {
            None => PendingState::Unclaimed,
            Some(marker) if marker.station != self.id => PendingState::ClaimedByOther,
            Some(_) => PendingState::Mine(self.floor.history(&self.id, &pending)?),
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
        let (_, rows) = crate::batch::read_batch_dir(&self.dir)?;
        Ok(rows
            .iter()
            .find(|r| r.serial == serial)
            .is_some_and(|r| !r.status.is_live()))
    }

    /// The bundle this station took and has not recorded, again.
    fn hand_back(&self, serial: &str, log_handout: bool, target: &Target) -> Result<Bundle> {
        let bundle = self.read_bundle(serial)?;
        check_deliverable(&bundle, target)?;
        if log_handout {
            self.log(&bundle, FloorEvent::HandedOut)?;
        }
        Ok(bundle)
    }

    /// The next bundle not handed out, from the cursor on; then, before saying nothing is
    /// left, from the start (a queue rewritten by batch or revoke may have left the cursor
    /// ahead of a bundle).
    fn take_next(&self, target: &Target) -> Result<Option<Bundle>> {
        let Some((queue, len)) = self.floor.open_queue()? else {
            return Err(self.no_queue().into());
        };
        let cursor = self.floor.cursor().min(len);
        for index in (cursor..len).chain(0..cursor) {
            let device = self.floor.queued(&queue, index)?;
            if self.floor.is_claimed(&device.serial)?
                || !self.floor.bundle(&device.serial).is_file()
            {
                continue;
            }
            let bundle = self.read_bundle(&device.serial)?;
            check_deliverable(&bundle, target)?;
            if self.claim(&bundle)? {
                self.floor.advance_cursor(index + 1)?;
                return Ok(Some(bundle));
            }
        }
        Ok(None)
    }

    /// The bundle of `serial`, asked for by label: it must be queued (ready) and not taken.
    fn take_serial(&self, serial: &str, target: &Target) -> Result<Bundle> {
        let Some((queue, _)) = self.floor.open_queue()? else {
            return Err(self.no_queue().into());
        };
        if self.floor.find_queued(&queue, serial)?.is_none() {
            return Err(self.not_queued(serial)?.into());
        }
        if let Some(marker) = self.floor.handout(serial)? {
            return Err(self.taken(&marker)?.into());
        }
        let bundle = self.read_bundle(serial)?;
        check_deliverable(&bundle, target)?;
        if !self.claim(&bundle)? {
            let marker = self
                .floor
                .handout(serial)?
                .context("a claim marker vanished")?;
            return Err(self.taken(&marker)?.into());
        }
        Ok(bundle)
    }

    /// Claims a bundle for this station: pending first, so a crash after the claim loses
    /// nothing; then the claim marker; then the log. False if another station has it.
    fn claim(&self, bundle: &Bundle) -> Result<bool> {
        self.floor.set_pending(&self.id, &bundle.serial)?;
        if !self
            .floor
            .claim(&self.id, &bundle.serial, OffsetDateTime::now_utc())?
        {
            return Ok(false);
        }
        self.log(bundle, FloorEvent::HandedOut)?;
        Ok(true)
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

    /// Reads a serial's bundle and what it holds. The one place a bundle's bytes are read,
    /// so a reader that decrypts (`bundles/SN.zip.age` with an identity) slots in here.
    fn read_bundle(&self, serial: &str) -> Result<Bundle> {
        let path = self.floor.bundle(serial);
        let bytes = match &self.identity {
            Some(identity) if self.floor.is_sealed() => identity.open_bundle(&path)?,
            // `flashed` of an encrypted batch: no key, so what the manifest recorded.
            None if self.floor.is_sealed() => return self.recorded_bundle(serial),
            _ => crate::sealed::read_bundle_file(&path)
                .map_err(|problem| anyhow::anyhow!("{} {problem}", path.display()))?,
        };
        let check = check_bundle(&bytes, None, OffsetDateTime::now_utc());
        let invalid = |what: &str| {
            UserError::output_dir(
                &self.dir,
                format!(
                    "bundle of {serial} has no {what}: {}; run claimfab verify {}",
                    check.findings.join("; "),
                    self.dir.display()
                ),
            )
        };
        Ok(Bundle {
            serial: serial.to_string(),
            thing_name: check
                .thing_name
                .clone()
                .ok_or_else(|| invalid("thing name"))?,
            certificate_id: check
                .certificate_sha256
                .clone()
                .ok_or_else(|| invalid("claim certificate"))?,
            findings: check.findings,
            bytes,
        })
    }

    /// A bundle of an encrypted batch, for `flashed` (which has no key to open it): its
    /// names and certificate id as the manifest records them.
    fn recorded_bundle(&self, serial: &str) -> Result<Bundle> {
        let (_, rows) = crate::batch::read_batch_dir(&self.dir)?;
        let row = rows
            .into_iter()
            .find(|r| r.serial == serial)
            .ok_or_else(|| serial_error("SERIAL", serial, "is not in the batch".into()))?;
        Ok(Bundle {
            serial: row.serial,
            thing_name: row.thing_name,
            certificate_id: row.certificate_id,
            findings: Vec::new(),
            bytes: Zeroizing::new(Vec::new()),
        })
    }

    fn no_queue(&self) -> UserError {
        UserError::output_dir(
            &self.dir,
            "has no stations/queue (made by an older claimfab); re-run the same claimfab batch command on it to write the queue",
        )
    }

    /// Why `serial` is not queued, from the manifest (read only on this error path).
    fn not_queued(&self, serial: &str) -> Result<UserError> {
        let path = self.dir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rows = manifest::from_csv(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a claimfab manifest: {e}", path.display()))?;
        let problem = match rows.iter().find(|row| row.serial == serial) {
            None => format!(
                "is not in the batch {} (not in its manifest); check the label and the batch directory",
                self.dir.display()
            ),
            Some(row) if row.status != DeviceStatus::Ready => format!(
                "is not in the batch's hand-out queue: its status is {}, not ready to flash",
                format!("{:?}", row.status).to_lowercase()
            ),
            Some(_) => "is ready in the manifest but not in the stations' queue (being rewritten by batch or revoke?); try again".into(),
        };
        Ok(serial_error("--serial", serial, problem))
    }

    /// Who has `marker`'s bundle, and whether it is flashed or spoiled already.
    fn taken(&self, marker: &Handout) -> Result<UserError> {
        let history = self.floor.history(&marker.station, &marker.serial)?;
        let problem = match history.outcome {
            Some(done) => format!(
                "is already {} by station {} at {}",
                done.event.as_str(),
                done.station,
                done.time
            ),
            None => format!(
                "is already handed out to station {} at {} (not recorded yet)",
                marker.station,
                rfc3339(marker.at)
            ),
        };
        Ok(serial_error("--serial", &marker.serial, problem))
    }
}

/// A bundle is handed out only if `claimfab verify` finds nothing wrong with it and its
/// entries can be delivered to `target`; checked before it is claimed.
fn check_deliverable(bundle: &Bundle, target: &Target) -> Result<(), UserError> {
    let problem = if !bundle.findings.is_empty() {
        bundle.findings.join("; ")
    } else if let Err(problem) = deliver::check_entries(&bundle.bytes, target) {
        problem
    } else {
        return Ok(());
    };
    Err(UserError::Flag {
        flag: "bundle",
        value: bundle.serial.clone(),
        problem: format!("{problem}; it is not handed out: check the batch with claimfab verify"),
    })
}
