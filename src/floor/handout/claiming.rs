//! How a station claims a bundle on the floor: the next one in the queue or the one it names,
//! its claim marker first, then its certificate's, so a bundle and a claim certificate each
//! go out once; and why a serial cannot be taken (not queued, taken by another station).

use std::fs;

use anyhow::{Context, Result};
use time::OffsetDateTime;

use super::bundle::check_deliverable;
use super::{serial_error, Bundle, Station};
use crate::batch_dir::MANIFEST_FILE;
use crate::core::floor_records::{rfc3339, CertificateClaim, FloorEvent, Handout, CLOSED, UNKNOWN};
use crate::core::manifest::{self, DeviceStatus};
use crate::error::UserError;
use crate::floor::deliver::Target;

impl Station {
    /// The next bundle not handed out, from the cursor on; then, before saying nothing is
    /// left, from the start (a queue rewritten by batch or revoke may have left the cursor
    /// ahead of a bundle).
    pub(super) fn take_next(&self, target: &Target) -> Result<Option<Bundle>> {
        let Some((queue, len)) = self.floor.open_queue()? else {
            return Err(self.no_queue().into());
        };
        let cursor = self.floor.cursor().min(len);
        let mut skipped = 0;
        for index in (cursor..len).chain(0..cursor) {
            let device = self.floor.queued(&queue, index)?;
            if self.floor.is_claimed(&device.serial)?
                || !self.floor.bundle(&device.serial).is_file()
            {
                continue;
            }
            // A bundle that cannot be read or must not be handed out is reported and
            // passed over: one bad file does not stop the line.
            let bundle = match self.read_bundle(&device.serial).and_then(|b| {
                check_deliverable(&b, &device, target, &self.layout)?;
                self.claim_certificate(&b)??;
                Ok(b)
            }) {
                Ok(bundle) => bundle,
                Err(e) => {
                    eprintln!("claimfab: skipping {}: {e:#}", device.serial);
                    skipped += 1;
                    continue;
                }
            };
            if self.claim(&bundle)? {
                self.floor.advance_cursor(index + 1)?;
                return Ok(Some(bundle));
            }
        }
        if skipped > 0 {
            eprintln!(
                "claimfab: {skipped} bundle(s) of {} passed over (above); check the batch with claimfab verify",
                self.dir.display()
            );
        }
        Ok(None)
    }

    /// The bundle of `serial`, asked for by label: it must be queued (ready) and not taken.
    pub(super) fn take_serial(&self, serial: &str, target: &Target) -> Result<Bundle> {
        let Some((queue, _)) = self.floor.open_queue()? else {
            return Err(self.no_queue().into());
        };
        let Some(device) = self.floor.find_queued(&queue, serial)? else {
            return Err(self.not_queued(serial)?.into());
        };
        if let Some(marker) = self.floor.handout(serial)? {
            return Err(self.taken(&marker)?.into());
        }
        let bundle = self.read_bundle(serial)?;
        check_deliverable(&bundle, &device, target, &self.layout)?;
        self.claim_certificate(&bundle)??;
        if !self.claim(&bundle)? {
            let marker = self
                .floor
                .handout(serial)?
                .context("a claim marker vanished")?;
            return Err(self.taken(&marker)?.into());
        }
        Ok(bundle)
    }

    /// The bundle's claim certificate, claimed for its serial: a second bundle carrying a
    /// certificate already handed out with another serial is never handed out (one identity
    /// per board). `Err` says why not.
    pub(super) fn claim_certificate(&self, bundle: &Bundle) -> Result<Result<(), UserError>> {
        let id = &bundle.certificate_id;
        let problem = match self.floor.claim_certificate(&self.id, &bundle.serial, id)? {
            CertificateClaim::Ours => return Ok(Ok(())),
            CertificateClaim::HeldBy { serial, station } => format!(
                "carries claim certificate {}, already handed out with {serial} to station {station}: two boards would share one identity; check the batch with claimfab verify",
                &id[..id.len().min(16)]
            ),
            CertificateClaim::OwnerUnknown => format!(
                "carries claim certificate {}, already claimed by a take that was cut short; it is not handed out again",
                &id[..id.len().min(16)]
            ),
        };
        Ok(Err(serial_error("bundle", &bundle.serial, problem)))
    }

    /// Claims a bundle for this station (its certificate already claimed for its serial):
    /// pending first, so a crash after the claim loses nothing; then the claim marker; then
    /// the log. False if another station has it.
    pub(super) fn claim(&self, bundle: &Bundle) -> Result<bool> {
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

    pub(super) fn no_queue(&self) -> UserError {
        UserError::output_dir(
            &self.dir,
            "has no stations/queue (made by an older claimfab); re-run the same claimfab batch command on it to write the queue",
        )
    }

    /// Why `serial` is not queued, from the manifest (read only on this error path).
    pub(super) fn not_queued(&self, serial: &str) -> Result<UserError> {
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
    pub(super) fn taken(&self, marker: &Handout) -> Result<UserError> {
        let problem = match marker.station.as_str() {
            CLOSED => {
                Some("is closed: its claim is being retired (revoke or close); take another board")
            }
            UNKNOWN => {
                Some("is claimed by a take that was cut short (owner unknown); take another board")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Ok(serial_error("--serial", &marker.serial, problem.into()));
        }
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
