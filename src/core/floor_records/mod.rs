//! The factory floor's records, as pure data: station ids, the hand-out queue's fixed-width
//! records (so a station finds the n-th bundle with one seek, whatever the batch size), the
//! claim marker a station leaves on the bundle it took (and on its certificate) and what a
//! marker's bytes say (complete, cut short, foreign), a station's pending note, and the lines
//! of a station's append-only log (handed out, flashed, spoiled). What a batch's devices have
//! become on the floor is folded from those logs here too, and so are the decisions `take`
//! and `flashed` make from a station's pending take, the claim marker and the log, and
//! whether a station may complete a marker a crash left incomplete.
//!
//! The queue has an index beside it, a hash table from serial to record, so `take --serial`
//! finds a device with two or three positioned reads whatever the batch size.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::manifest::{DeviceStatus, ManifestRow};

/// Longest serial and thing name (AWS IoT thing names are at most 128 characters, and a
/// serial is part of its thing name).
pub const NAME_WIDTH: usize = 128;
/// One queue record: serial and thing name, each space-padded to [`NAME_WIDTH`], a space
/// between and a newline after, so record `n` starts at byte `n * QUEUE_RECORD`.
pub const QUEUE_RECORD: usize = 2 * NAME_WIDTH + 2;

/// Checks a station id: 1 to 32 of `[A-Za-z0-9_-]`, starting with a letter or digit. It
/// names a directory on a shared drive, so nothing else is allowed.
pub fn check_station_id(id: &str) -> Result<(), String> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    let starts_well = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if id.is_empty() || id.len() > 32 || !starts_well || !id.chars().all(valid_char) {
        return Err(format!(
            "station id {id:?} must be 1 to 32 letters, digits, '-' or '_', starting with a letter or digit (e.g. line1-st2)"
        ));
    }
    Ok(())
}

/// A device in the hand-out queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedDevice {
    pub serial: String,
    pub thing_name: String,
}

/// Encodes one queue record. Serial and thing name are validated names (ASCII, at most
/// [`NAME_WIDTH`] characters), so the width always holds.
pub fn queue_record(device: &QueuedDevice) -> String {
    format!(
        "{:<width$} {:<width$}\n",
        device.serial,
        device.thing_name,
        width = NAME_WIDTH
    )
}

/// Decodes one queue record; `None` if it is not one (a damaged or foreign file, or a
/// serial or thing name that is not a valid AWS IoT thing name).
pub fn parse_queue_record(bytes: &[u8]) -> Option<QueuedDevice> {
    if bytes.len() != QUEUE_RECORD || bytes[QUEUE_RECORD - 1] != b'\n' {
        return None;
    }
    let text = std::str::from_utf8(&bytes[..QUEUE_RECORD - 1]).ok()?;
    let serial = text.get(..NAME_WIDTH)?.trim_end();
    let thing_name = text.get(NAME_WIDTH + 1..)?.trim_end();
    // Both become paths and AWS names: anything but a thing name (`../`, `/`) is damage.
    let valid = |name: &str| crate::core::names::check_thing_name(name).is_ok();
    if !valid(serial) || !valid(thing_name) {
        return None;
    }
    Some(QueuedDevice {
        serial: serial.to_string(),
        thing_name: thing_name.to_string(),
    })
}

/// One slot of the queue index: a queue record number plus one, little-endian; 0 is empty.
pub const INDEX_SLOT: usize = 4;

/// FNV-1a (64 bit) of a serial: the index's hash. Fixed here, since every claimfab that reads
/// a batch directory must place serials where the one that wrote it did.
pub fn serial_hash(serial: &str) -> u64 {
    serial.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The slots to look in for `serial`, in order, in an index of `slots` slots (linear
/// probing); every slot once at most.
pub fn index_probe(serial: &str, slots: usize) -> impl Iterator<Item = usize> {
    let start = if slots == 0 {
        0
    } else {
        (serial_hash(serial) % slots as u64) as usize
    };
    (0..slots).map(move |step| (start + step) % slots)
}

/// The queue index of `serials` (the queue's, in its order): at least twice as many slots as
/// records, so a look-up ends after a couple of probes.
pub fn queue_index(serials: impl ExactSizeIterator<Item = impl AsRef<str>>) -> Vec<u8> {
    let slots = (serials.len() * 2).next_power_of_two();
    let mut table = vec![0u8; slots * INDEX_SLOT];
    for (record, serial) in serials.enumerate() {
        let free = index_probe(serial.as_ref(), slots)
            .find(|slot| table[slot * INDEX_SLOT..][..INDEX_SLOT] == [0; INDEX_SLOT])
            .expect("the index has more slots than records");
        let value = u32::try_from(record + 1).expect("a queue holds fewer than 2^32 devices");
        table[free * INDEX_SLOT..][..INDEX_SLOT].copy_from_slice(&value.to_le_bytes());
    }
    table
}

/// The queue record an index slot points at; `None` for an empty slot.
pub fn index_slot(bytes: [u8; INDEX_SLOT]) -> Option<usize> {
    (u32::from_le_bytes(bytes) as usize).checked_sub(1)
}

/// What a station did with a bundle, as its log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FloorEvent {
    /// `claimfab take` handed the bundle to the station.
    HandedOut,
    /// The station flashed it onto its board.
    Flashed,
    /// The board failed; its claim must be retired.
    Spoiled,
}

impl FloorEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            FloorEvent::HandedOut => "handed-out",
            FloorEvent::Flashed => "flashed",
            FloorEvent::Spoiled => "spoiled",
        }
    }
}

/// One line of a station's log (`stations/ID/log.csv`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub station: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub serial: String,
    pub certificate_id: String,
    pub event: FloorEvent,
}

/// The columns of a station log, in order.
pub const LOG_COLUMNS: [&str; 5] = ["station", "time", "serial", "certificate_id", "event"];

/// What the claim marker on a taken bundle says (`handout/SERIAL`): who took it and when.
/// A certificate's marker holds the same record: the serial it was handed out with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handout {
    pub station: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// 128 random bits (hex), new for each claim: the claimer finds its own marker by
    /// content, never by a link count a network drive may cache. Empty in markers made
    /// before it existed.
    #[serde(default)]
    pub token: String,
}

/// The station `Floor::handout` names for a marker whose owner cannot be read (a take cut
/// short on a share without hard links, or an edited file). Not a valid station id, so no
/// station can have it.
pub const UNKNOWN: &str = "(unknown)";

/// What a claim marker holds. Every state counts as claimed: the bundle is never handed
/// out twice, whatever the marker says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A whole hand-out record for this serial.
    Complete(Handout),
    /// Empty, zero-filled or cut short: the residue of a take stopped between creating the
    /// marker and writing it (shares without hard links). The station that made it may
    /// complete it (`Floor::complete_claim`); for everyone else its owner is unknown.
    Incomplete,
    /// Something no claimfab writes (an edited or foreign file, another serial's record):
    /// owner unknown, never completed automatically. Says why.
    Foreign(String),
}

impl Claim {
    /// The station holding the bundle, [`UNKNOWN`] when the marker does not say.
    pub fn station(&self) -> &str {
        match self {
            Claim::Complete(handout) => &handout.station,
            _ => UNKNOWN,
        }
    }
}

/// Reads a claim marker's bytes. `serial` is the serial its name says (`None` for a
/// certificate's marker, whose record may name any serial).
pub fn read_marker(bytes: &[u8], serial: Option<&str>) -> Claim {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, 0 | b' ' | b'\n' | b'\r' | b'\t'))
        .map_or(0, |at| at + 1);
    if end == 0 {
        return Claim::Incomplete;
    }
    let handout: Handout = match serde_json::from_slice(&bytes[..end]) {
        Ok(handout) => handout,
        // A prefix of a record: a write cut short.
        Err(e) if e.is_eof() => return Claim::Incomplete,
        Err(e) => return Claim::Foreign(format!("not a hand-out record ({e})")),
    };
    if serial.is_some_and(|s| s != handout.serial) {
        return Claim::Foreign(format!("a hand-out record of serial {:?}", handout.serial));
    }
    if crate::core::names::check_thing_name(&handout.serial).is_err() {
        return Claim::Foreign("a hand-out record with no valid serial".into());
    }
    if handout.station != CLOSED && check_station_id(&handout.station).is_err() {
        return Claim::Foreign("a hand-out record with no valid station id".into());
    }
    Claim::Complete(handout)
}

/// What the facts on the share allow when a station asks to complete an incomplete marker
/// (see `Floor::complete_claim`).
#[derive(Debug, Clone, Copy)]
pub struct CompletionFacts<'a> {
    /// The station asking, and the serial it asks for.
    pub station: &'a str,
    pub serial: &'a str,
    /// The station's pending note and this machine's host name.
    pub note: Option<&'a PendingNote>,
    pub host: &'a str,
    /// The marker as it is now.
    pub marker: &'a Claim,
    /// The record the station wrote before trying to make the marker, still there (it is
    /// removed once the marker is whole, or at once by a station that lost the race).
    pub evidence: Option<&'a Claim>,
    /// Another station's such record for the same marker.
    pub rival_evidence: bool,
}

/// Whether a station may complete an incomplete marker as its own: only the one that made
/// it, known by its pending note (written before the claim, on this machine) and by the
/// record it wrote before the claim and removes as soon as it loses one. Any doubt (two
/// stations' records, a note from another host) leaves the marker as it is: a bundle lost
/// to the floor is retired by close; a bundle on two boards cannot be undone.
pub fn may_complete(facts: &CompletionFacts) -> bool {
    let note_is_ours = facts.note.is_some_and(|note| {
        note.serial == facts.serial && note.host.as_deref().is_none_or(|h| h == facts.host)
    });
    let evidence_is_ours = matches!(
        facts.evidence,
        Some(Claim::Complete(h)) if h.station == facts.station && h.serial == facts.serial
    );
    *facts.marker == Claim::Incomplete && note_is_ours && evidence_is_ours && !facts.rival_evidence
}

/// Checks a certificate id as a file name: AWS's, 64 lowercase hex digits.
pub fn check_certificate_id(id: &str) -> Result<(), String> {
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if id.len() != 64 || !id.chars().all(hex) {
        return Err(format!(
            "certificate id {id:?} must be 64 lowercase hex digits (AWS's certificate id)"
        ));
    }
    Ok(())
}

/// Whose a certificate is on the floor, from its marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateClaim {
    /// Handed out with this serial (now, or before: a hand-back or a re-run).
    Ours,
    /// Handed out already with another serial's bundle: two bundles carry this certificate.
    HeldBy { serial: String, station: String },
    /// Its marker was left incomplete or is unreadable and is not this station's to
    /// complete: held, by a bundle unknown. Refuse as for `HeldBy`.
    OwnerUnknown,
}

/// Whose a certificate is, from its marker, for a station handing it out with `serial`.
pub fn certificate_holder(marker: &Claim, serial: &str) -> CertificateClaim {
    match marker {
        Claim::Complete(h) if h.serial == serial => CertificateClaim::Ours,
        Claim::Complete(h) => CertificateClaim::HeldBy {
            serial: h.serial.clone(),
            station: h.station.clone(),
        },
        _ => CertificateClaim::OwnerUnknown,
    }
}

/// A station's pending note (`stations/ID/pending`): the serial it is taking or holds, and
/// the machine it was taken on (`None` in notes made before hosts were noted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNote {
    pub serial: String,
    pub host: Option<String>,
}

/// A pending note's text: the serial on the first line (what older claimfabs read), then
/// `host=NAME`.
pub fn pending_note_text(serial: &str, host: &str) -> String {
    format!("{serial}\nhost={}\n", clean_host(host))
}

/// A host name as a note holds it: printable ASCII without spaces, `?` for anything else.
pub fn clean_host(host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    if host.is_empty() {
        "unknown".into()
    } else {
        host
    }
}

/// Reads a pending note; `Ok(None)` when empty. Its serial becomes a path, so anything but
/// a thing name is refused.
pub fn parse_pending_note(text: &str) -> Result<Option<PendingNote>, String> {
    let mut lines = text.lines().map(str::trim);
    let serial = match lines.next() {
        None | Some("") => return Ok(None),
        Some(serial) => serial,
    };
    crate::core::names::check_thing_name(serial)
        .map_err(|rule| format!("names {serial:?}, which is not a serial ({rule})"))?;
    let host = lines
        .filter_map(|line| line.strip_prefix("host="))
        .map(str::trim)
        .find(|host| !host.is_empty())
        .map(String::from);
    Ok(Some(PendingNote {
        serial: serial.to_string(),
        host,
    }))
}

/// Where one device stands on the floor, from every station's log: the last event wins,
/// except that a flashed or spoiled board is never "handed out" again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorState {
    pub event: FloorEvent,
    pub station: String,
    pub time: String,
}

/// Folds station logs into each serial's state.
pub fn fold_logs<'a>(
    records: impl IntoIterator<Item = &'a LogRecord>,
) -> HashMap<String, FloorState> {
    let mut states: HashMap<String, FloorState> = HashMap::new();
    for record in records {
        let state = FloorState {
            event: record.event,
            station: record.station.clone(),
            time: record.time.clone(),
        };
        match states.get(&record.serial) {
            Some(done)
                if done.event != FloorEvent::HandedOut && record.event == FloorEvent::HandedOut => {
            }
            _ => {
                states.insert(record.serial.clone(), state);
            }
        }
    }
    states
}

/// Shows a device's floor state in its manifest row: the station and time always, and the
/// status when the claim is live (a retired claim stays retired, whatever the floor did).
pub fn overlay(row: &mut ManifestRow, state: &FloorState) {
    row.station = state.station.clone();
    row.station_at = state.time.clone();
    if row.status.is_live() {
        row.status = match state.event {
            FloorEvent::HandedOut => DeviceStatus::HandedOut,
            FloorEvent::Flashed => DeviceStatus::Flashed,
            FloorEvent::Spoiled => DeviceStatus::Spoiled,
        };
    }
}

/// The station name on the claim markers `claimfab close` puts on bundles never handed
/// out, so no station takes them while their claims are retired. Not a valid station id,
/// so no station can have it.
pub const CLOSED: &str = "(closed)";

/// Why `claimfab close` retires a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloseReason {
    /// Ready, never handed to a station.
    NeverHandedOut,
    /// Handed to a station that never recorded flashing it.
    NotRecorded,
    /// The station recorded its board as spoiled.
    Spoiled,
}

impl CloseReason {
    pub fn describe(self) -> &'static str {
        match self {
            CloseReason::NeverHandedOut => "never handed out",
            CloseReason::NotRecorded => "handed out, never recorded as flashed",
            CloseReason::Spoiled => "spoiled",
        }
    }
}

/// The claims a finished batch no longer needs: every live claim not recorded as flashed.
pub fn close_plan(rows: &[ManifestRow]) -> Vec<(&ManifestRow, CloseReason)> {
    rows.iter()
        .filter_map(|row| {
            let reason = match row.status {
                DeviceStatus::Ready => CloseReason::NeverHandedOut,
                DeviceStatus::HandedOut => CloseReason::NotRecorded,
                DeviceStatus::Spoiled => CloseReason::Spoiled,
                _ => return None,
            };
            Some((row, reason))
        })
        .collect()
}

/// What one station's log says of one serial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SerialHistory {
    /// The log has its `handed-out` record.
    pub handed_out: bool,
    /// Its `flashed` or `spoiled` record, the latest if several.
    pub outcome: Option<LogRecord>,
}

impl SerialHistory {
    /// From a whole station log.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a LogRecord>, serial: &str) -> Self {
        let mut history = Self::default();
        for record in records.into_iter().filter(|r| r.serial == serial) {
            match record.event {
                FloorEvent::HandedOut => history.handed_out = true,
                _ => history.outcome = Some(record.clone()),
            }
        }
        history
    }

    /// From the log's last record alone, when that settles it: a station records only the
    /// serial it holds, so if the last record is about `serial`, nothing later is.
    pub fn from_last(last: &LogRecord, serial: &str) -> Option<Self> {
        (last.serial == serial).then(|| Self {
            handed_out: true,
            outcome: (last.event != FloorEvent::HandedOut).then(|| last.clone()),
        })
    }
}

/// Where the serial a station has pending stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingState {
    /// No claim marker: the station stopped before its claim.
    Unclaimed,
    /// Another station's marker: the claim was lost to it.
    ClaimedByOther,
    /// This station's marker; what its log says of the serial.
    Mine(SerialHistory),
}

/// How `take` begins, given the station's pending take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeStart {
    /// Nothing of this station's is outstanding: take afresh. A pending note naming a serial
    /// the station does not hold, or has recorded, is stale: the next claim replaces it.
    Fresh,
    /// Hand `serial` back: the station took it and has not recorded it. `log_handout` when
    /// its log lacks the hand-out (the station stopped between the claim and the log).
    HandBack { serial: String, log_handout: bool },
    /// Refused: another serial was asked for while `pending` is outstanding.
    RecordFirst { pending: String },
}

/// Decides how `take` begins: `requested` is `--serial`, `pending` the station's pending
/// serial with its state.
pub fn take_start(requested: Option<&str>, pending: Option<(&str, &PendingState)>) -> TakeStart {
    let Some((serial, state)) = pending else {
        return TakeStart::Fresh;
    };
    match state {
        PendingState::Mine(history) if history.outcome.is_none() => match requested {
            Some(other) if other != serial => TakeStart::RecordFirst {
                pending: serial.to_string(),
            },
            _ => TakeStart::HandBack {
                serial: serial.to_string(),
                log_handout: !history.handed_out,
            },
        },
        _ => TakeStart::Fresh,
    }
}

/// What `flashed` does with a serial this station holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordAction {
    /// Append the outcome; first the hand-out when the log lacks it.
    Append { log_handout: bool },
    /// The same outcome is recorded already: nothing to do.
    AlreadyRecorded,
    /// The other outcome is recorded: refused.
    Conflict(LogRecord),
}

/// Decides what recording `event` for a serial with `history` does.
pub fn record_action(event: FloorEvent, history: &SerialHistory) -> RecordAction {
    match &history.outcome {
        None => RecordAction::Append {
            log_handout: !history.handed_out,
        },
        Some(done) if done.event == event => RecordAction::AlreadyRecorded,
        Some(done) => RecordAction::Conflict(done.clone()),
    }
}

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("UTC times format")
}

#[cfg(test)]
mod tests;
