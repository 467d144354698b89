//! Claim markers: `handout/SERIAL` for a bundle taken and `handout-certificates/ID` for a
//! certificate handed out, each made exactly once by link(2) from the station's own record
//! (or an exclusive create where a share cannot hard-link), a lost reply settled by reading
//! the marker back, and a marker a crash left incomplete completed only by its maker.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand_core::RngCore;
use time::OffsetDateTime;

use crate::core::floor_records::{
    certificate_holder, check_certificate_id, may_complete, read_marker, CertificateClaim, Claim,
    CompletionFacts, Handout, CLOSED, UNKNOWN,
};

use super::files::{holds, modified, read_small, set_mode, sync_dir, write_new, Small};
use super::{
    check_component, check_serial, on, this_host, Floor, CERTIFICATES_DIR, FILE_MODE, HANDOUT_DIR,
};

/// A claim marker: `dir/name`, made from `dir/.name.STATION.claim` (the station's record,
/// written first: the evidence that it made the marker, should a crash leave it incomplete).
pub(super) struct Marker {
    dir: PathBuf,
    name: String,
    /// The name is the serial the record must name (a bundle's marker, not a certificate's).
    of_serial: bool,
}

impl Marker {
    pub(super) fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    pub(super) fn evidence(&self, station: &str) -> PathBuf {
        self.dir.join(format!(".{}.{station}.claim", self.name))
    }

    pub(super) fn serial(&self) -> Option<&str> {
        self.of_serial.then_some(self.name.as_str())
    }
}

/// A new claim's record, with its own random token.
pub(super) fn claim_record(station: &str, serial: &str, at: OffsetDateTime) -> Result<Vec<u8>> {
    let mut bits = [0u8; 16];
    rand_core::OsRng.try_fill_bytes(&mut bits).map_err(|e| {
        anyhow::anyhow!("cannot draw a random claim token ({e}); check the system's random source")
    })?;
    let handout = Handout {
        station: station.to_string(),
        serial: serial.to_string(),
        at,
        token: hex::encode(bits),
    };
    serde_json::to_vec(&handout).context("cannot encode a hand-out record")
}

/// Makes `marker` with `bytes` as `station`'s: true if this call did. The station's record
/// goes beside it first, and stays only if an error leaves the marker unsettled (the
/// evidence `complete_claim` needs); a lost race removes it at once.
pub(super) fn make_marker(marker: &Marker, station: &str, bytes: &[u8]) -> Result<bool> {
    let evidence = marker.evidence(station);
    write_new(&evidence, bytes)?;
    let claimed = link_exclusively(&evidence, &marker.path(), bytes)?;
    // Best effort: a record left over only makes a later completion of this marker refuse.
    let _ = fs::remove_file(&evidence);
    if claimed {
        sync_dir(&marker.dir);
    }
    Ok(claimed)
}

/// Links `unique` (holding `bytes`) to `marker` unless `marker` exists: true if the link
/// is ours. On NFS a lost reply can make a successful link report EEXIST; the marker's
/// content decides then (our record carries our token), not a link count the client may
/// have cached. A share that cannot hard-link gets an exclusive create instead.
pub(super) fn link_exclusively(unique: &Path, marker: &Path, bytes: &[u8]) -> Result<bool> {
    match fs::hard_link(unique, marker) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => holds(marker, bytes),
        // EPERM (1) or EOPNOTSUPP (95): this share has no hard links.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 95)) => create_exclusively(marker, bytes),
        Err(e) => Err(e).with_context(|| on(marker, "create")),
    }
}

/// Creates `marker` exclusively and writes `bytes` into it: visible before it is whole, so a
/// crash in between leaves it incomplete (see `Floor::complete_claim`). Read back at the end:
/// true only if it holds our record.
pub(super) fn create_exclusively(marker: &Path, bytes: &[u8]) -> Result<bool> {
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(marker)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e).with_context(|| on(marker, "create")),
    };
    set_mode(&file, FILE_MODE)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .with_context(|| on(marker, "write"))?;
    holds(marker, bytes)
}

/// A marker (or a station's evidence) and what it holds, with its bytes; `None` if absent.
pub(super) fn read_claim(path: &Path, serial: Option<&str>) -> Result<Option<(Claim, Vec<u8>)>> {
    Ok(match read_small(path)? {
        Small::Absent => None,
        Small::Odd(why) => Some((Claim::Foreign(why.to_string()), Vec::new())),
        Small::Bytes(bytes) => Some((read_marker(&bytes, serial), bytes)),
    })
}

impl Floor {
    /// The claim marker of a serial; `None` when `handout/` does not exist yet.
    pub(super) fn marker(&self, serial: &str, create: bool) -> Result<Option<Marker>> {
        check_serial(serial)?;
        Ok(self.handout_dir(create)?.map(|dir| Marker {
            dir,
            name: serial.to_string(),
            of_serial: true,
        }))
    }

    /// The marker of a certificate; `None` when its directory does not exist yet.
    pub(super) fn certificate_marker(
        &self,
        certificate_id: &str,
        create: bool,
    ) -> Result<Option<Marker>> {
        check_certificate_id(certificate_id).map_err(|rule| {
            anyhow::anyhow!("{rule}; the bundle names no valid certificate: check the batch with claimfab verify")
        })?;
        let dir = self.real_dir(self.root.join(CERTIFICATES_DIR), create)?;
        Ok(dir.map(|dir| Marker {
            dir,
            name: certificate_id.to_string(),
            of_serial: false,
        }))
    }

    /// What the claim marker on a serial's bundle holds; `None` when it was not handed out.
    /// Never fails on what the marker holds: any marker means claimed.
    pub fn claim_state(&self, serial: &str) -> Result<Option<Claim>> {
        match self.marker(serial, false)? {
            Some(marker) => Ok(read_claim(&marker.path(), marker.serial())?.map(|(c, _)| c)),
            None => Ok(None),
        }
    }

    /// The claim marker on a serial's bundle, if it was handed out. A marker whose owner
    /// cannot be read (incomplete or foreign, see [`Floor::claim_state`]) comes back with
    /// station [`UNKNOWN`], the marker's modification time and no token, so callers that
    /// only name the holder keep working; deciding callers should use `claim_state`.
    pub fn handout(&self, serial: &str) -> Result<Option<Handout>> {
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(None);
        };
        let path = marker.path();
        Ok(match read_claim(&path, Some(serial))? {
            None => None,
            Some((Claim::Complete(handout), _)) => Some(handout),
            Some(_) => Some(Handout {
                station: UNKNOWN.to_string(),
                serial: serial.to_string(),
                at: modified(&path),
                token: String::new(),
            }),
        })
    }

    /// Whether the serial already carries a claim marker, whatever it holds (one `stat`).
    pub fn is_claimed(&self, serial: &str) -> Result<bool> {
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(false);
        };
        let path = marker.path();
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| on(&path, "check")),
        }
    }

    /// Tries to put `station`'s claim marker on `serial`: true if this call did, false if
    /// the serial was already claimed. The marker's content is complete before it appears
    /// (except on a share without hard links, see [`Floor::complete_claim`]).
    pub fn claim(&self, station: &str, serial: &str, at: OffsetDateTime) -> Result<bool> {
        check_component(station)?;
        let Some(marker) = self.marker(serial, true)? else {
            anyhow::bail!("{}", on(&self.path(HANDOUT_DIR), "create"));
        };
        make_marker(&marker, station, &claim_record(station, serial, at)?)
    }

    /// Completes the marker on `serial` as `station`'s when a crash left it incomplete (a
    /// share without hard links: the marker is created, then written). True when the marker
    /// is `station`'s whole record now: completed, or whole and `station`'s already. Only
    /// the station that made it may: its pending note names the serial and this host, its
    /// own record from before the claim is still there, and no other station's is; else
    /// false, and the marker stays claimed, owner unknown, for `close` to retire.
    pub fn complete_claim(&self, station: &str, serial: &str) -> Result<bool> {
        check_component(station)?;
        let Some(marker) = self.marker(serial, false)? else {
            return Ok(false);
        };
        match read_claim(&marker.path(), marker.serial())? {
            Some((Claim::Complete(handout), _)) => Ok(handout.station == station),
            Some((Claim::Incomplete, _)) => self.complete_marker(&marker, station, serial),
            _ => Ok(false),
        }
    }

    /// Rewrites an incomplete `marker` with `station`'s record (its evidence, renamed over
    /// it) when the facts allow (see `core::floor_records::may_complete`); true when it did.
    pub(super) fn complete_marker(
        &self,
        marker: &Marker,
        station: &str,
        serial: &str,
    ) -> Result<bool> {
        let note = self.pending_note(station)?;
        let evidence_path = marker.evidence(station);
        let evidence = read_claim(&evidence_path, Some(serial))?;
        let facts = CompletionFacts {
            station,
            serial,
            note: note.as_ref(),
            host: &this_host(),
            marker: &Claim::Incomplete,
            evidence: evidence.as_ref().map(|(claim, _)| claim),
            rival_evidence: self.rival_evidence(marker, station)?,
        };
        let Some((_, bytes)) = evidence.as_ref().filter(|_| may_complete(&facts)) else {
            return Ok(false);
        };
        fs::rename(&evidence_path, marker.path())
            .with_context(|| on(&marker.path(), "complete"))?;
        sync_dir(&marker.dir);
        holds(&marker.path(), bytes)
    }

    /// Whether a station other than `station` left its record beside `marker`: it may
    /// have made the marker, so nobody completes it. One `lstat` per station of the floor.
    pub(super) fn rival_evidence(&self, marker: &Marker, station: &str) -> Result<bool> {
        let mut others = vec![CLOSED.to_string()];
        if let Some(dir) = self.stations_dir(false)? {
            for entry in fs::read_dir(&dir).with_context(|| on(&dir, "list"))? {
                let entry = entry.with_context(|| on(&dir, "list"))?;
                others.extend(entry.file_name().into_string().ok());
            }
        }
        Ok(others
            .iter()
            .filter(|other| *other != station && check_component(other).is_ok())
            .any(|other| fs::symlink_metadata(marker.evidence(other)).is_ok()))
    }

    /// Puts `station`'s marker on a certificate handed out with `serial`'s bundle, so a
    /// second bundle carrying it is found: `Ours` when it is (now, or before: a hand-back or
    /// a re-run), else who holds it. Call it once the serial is this station's.
    pub fn claim_certificate(
        &self,
        station: &str,
        serial: &str,
        certificate_id: &str,
    ) -> Result<CertificateClaim> {
        check_component(station)?;
        check_serial(serial)?;
        let Some(marker) = self.certificate_marker(certificate_id, true)? else {
            anyhow::bail!("{}", on(&self.path(CERTIFICATES_DIR), "create"));
        };
        // Looked at first: this station's own incomplete marker must keep its evidence.
        match read_claim(&marker.path(), None)? {
            Some((Claim::Incomplete, _)) => {
                return Ok(match self.complete_marker(&marker, station, serial)? {
                    true => CertificateClaim::Ours,
                    false => CertificateClaim::OwnerUnknown,
                })
            }
            Some((claim, _)) => return Ok(certificate_holder(&claim, serial)),
            None => {}
        }
        let bytes = claim_record(station, serial, OffsetDateTime::now_utc())?;
        if make_marker(&marker, station, &bytes)? {
            return Ok(CertificateClaim::Ours);
        }
        Ok(match read_claim(&marker.path(), None)? {
            Some((claim, _)) => certificate_holder(&claim, serial),
            None => CertificateClaim::OwnerUnknown,
        })
    }

    /// What the marker of a certificate holds; `None` when it was not handed out.
    pub fn certificate_claim_state(&self, certificate_id: &str) -> Result<Option<Claim>> {
        match self.certificate_marker(certificate_id, false)? {
            Some(marker) => Ok(read_claim(&marker.path(), None)?.map(|(c, _)| c)),
            None => Ok(None),
        }
    }
}
