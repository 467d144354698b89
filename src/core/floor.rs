//! The factory floor's records, as pure data: station ids, the hand-out queue's fixed-width
//! records (so a station finds the n-th bundle with one seek, whatever the batch size), the
//! claim marker a station leaves on the bundle it took, and the lines of a station's
//! append-only log (handed out, flashed, spoiled). What a batch's devices have become on the
//! floor is folded from those logs here too, and so are the decisions `take` and `flashed`
//! make from a station's pending take, the claim marker and the log.
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

/// Decodes one queue record; `None` if it is not one (a damaged or foreign file).
pub fn parse_queue_record(bytes: &[u8]) -> Option<QueuedDevice> {
    if bytes.len() != QUEUE_RECORD || bytes[QUEUE_RECORD - 1] != b'\n' {
        return None;
    }
    let text = std::str::from_utf8(&bytes[..QUEUE_RECORD - 1]).ok()?;
    let serial = text.get(..NAME_WIDTH)?.trim_end();
    let thing_name = text.get(NAME_WIDTH + 1..)?.trim_end();
    if serial.is_empty() || thing_name.is_empty() {
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
pub fn queue_index<'a>(serials: impl ExactSizeIterator<Item = &'a str>) -> Vec<u8> {
    let slots = (serials.len() * 2).next_power_of_two();
    let mut table = vec![0u8; slots * INDEX_SLOT];
    for (record, serial) in serials.enumerate() {
        let free = index_probe(serial, slots)
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handout {
    pub station: String,
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
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
mod tests {
    use super::*;

    fn test_row(status: DeviceStatus) -> ManifestRow {
        ManifestRow::new("A", "gg-A", status)
    }

    #[test]
    fn station_ids() {
        for good in ["st1", "line-2_station-10", "A", &"x".repeat(32)] {
            assert!(check_station_id(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-st",
            "st/1",
            "../x",
            "st 1",
            "é",
            &"x".repeat(33),
            "st.1",
        ] {
            let err = check_station_id(bad).unwrap_err();
            assert!(err.contains("1 to 32"), "{bad}: {err}");
        }
    }

    #[test]
    fn queue_records_have_a_fixed_width_and_round_trip() {
        let device = QueuedDevice {
            serial: "SN000001".into(),
            thing_name: "gg-SN000001".into(),
        };
        let record = queue_record(&device);
        assert_eq!(record.len(), QUEUE_RECORD);
        assert_eq!(parse_queue_record(record.as_bytes()), Some(device));
        let longest = QueuedDevice {
            serial: "s".repeat(NAME_WIDTH),
            thing_name: "t".repeat(NAME_WIDTH),
        };
        assert_eq!(queue_record(&longest).len(), QUEUE_RECORD);
        assert!(parse_queue_record(b"garbage\n").is_none());
        assert!(parse_queue_record(&[b' '; QUEUE_RECORD]).is_none());
    }

    fn record(serial: &str, station: &str, event: FloorEvent) -> LogRecord {
        LogRecord {
            station: station.into(),
            time: "2026-11-26T00:00:00Z".into(),
            serial: serial.into(),
            certificate_id: "c".repeat(64),
            event,
        }
    }

    #[test]
    fn the_floor_shows_in_live_rows_only() {
        let state = FloorState {
            event: FloorEvent::Spoiled,
            station: "st1".into(),
            time: "2026-11-26T08:00:00Z".into(),
        };
        let row = test_row;
        let mut ready = row(DeviceStatus::Ready);
        overlay(&mut ready, &state);
        assert_eq!(
            (ready.status, ready.station.as_str()),
            (DeviceStatus::Spoiled, "st1")
        );
        let mut revoked = row(DeviceStatus::Revoked);
        overlay(&mut revoked, &state);
        assert_eq!(revoked.status, DeviceStatus::Revoked);
        assert_eq!(revoked.station_at, "2026-11-26T08:00:00Z");
    }

    #[test]
    fn close_retires_every_live_claim_not_flashed() {
        let rows: Vec<ManifestRow> = [
            DeviceStatus::Ready,
            DeviceStatus::HandedOut,
            DeviceStatus::Flashed,
            DeviceStatus::Spoiled,
            DeviceStatus::Revoked,
            DeviceStatus::Failed,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, status)| ManifestRow {
            serial: format!("S{i}"),
            ..test_row(status)
        })
        .collect();
        let plan: Vec<(&str, CloseReason)> = close_plan(&rows)
            .into_iter()
            .map(|(row, reason)| (row.serial.as_str(), reason))
            .collect();
        assert_eq!(
            plan,
            vec![
                ("S0", CloseReason::NeverHandedOut),
                ("S1", CloseReason::NotRecorded),
                ("S3", CloseReason::Spoiled)
            ]
        );
        assert!(
            check_station_id(CLOSED).is_err(),
            "no station can be named {CLOSED}"
        );
    }

    #[test]
    fn the_last_event_wins_but_a_finished_board_stays_finished() {
        let logs = [
            record("A", "s1", FloorEvent::HandedOut),
            record("A", "s1", FloorEvent::Flashed),
            record("A", "s1", FloorEvent::HandedOut),
            record("B", "s2", FloorEvent::HandedOut),
            record("C", "s2", FloorEvent::HandedOut),
            record("C", "s2", FloorEvent::Spoiled),
        ];
        let states = fold_logs(&logs);
        assert_eq!(states["A"].event, FloorEvent::Flashed);
        assert_eq!(states["B"].event, FloorEvent::HandedOut);
        assert_eq!(states["C"].event, FloorEvent::Spoiled);
        assert_eq!(states["C"].station, "s2");
    }

    #[test]
    fn the_index_finds_every_serial_and_only_those() {
        let serials: Vec<String> = (0..1000).map(|i| format!("SN{i:06}")).collect();
        let table = queue_index(serials.iter().map(String::as_str));
        let slots = table.len() / INDEX_SLOT;
        assert_eq!(slots, 2048);
        let slot = |n: usize| index_slot(table[n * INDEX_SLOT..][..INDEX_SLOT].try_into().unwrap());
        let find = |serial: &str| {
            index_probe(serial, slots)
                .map(slot)
                .take_while(Option::is_some)
                .flatten()
                .find(|record| serials[*record] == serial)
        };
        for (record, serial) in serials.iter().enumerate() {
            assert_eq!(find(serial), Some(record));
        }
        assert_eq!(find("SN999999"), None);
        assert_eq!(queue_index(std::iter::empty()).len(), INDEX_SLOT);
        assert_eq!(index_probe("x", 0).count(), 0);
        // The hash is part of the on-disk format: it must never change.
        assert_eq!(serial_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(serial_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    fn history(handed_out: bool, outcome: Option<FloorEvent>) -> SerialHistory {
        SerialHistory {
            handed_out,
            outcome: outcome.map(|e| record("P", "s1", e)),
        }
    }

    fn mine(handed_out: bool, outcome: Option<FloorEvent>) -> PendingState {
        PendingState::Mine(history(handed_out, outcome))
    }

    #[test]
    fn take_hands_back_what_the_station_holds_and_nothing_else() {
        assert_eq!(take_start(None, None), TakeStart::Fresh);
        assert_eq!(take_start(Some("S"), None), TakeStart::Fresh);
        for settled in [
            PendingState::Unclaimed,
            PendingState::ClaimedByOther,
            mine(true, Some(FloorEvent::Flashed)),
            mine(true, Some(FloorEvent::Spoiled)),
        ] {
            assert_eq!(take_start(None, Some(("P", &settled))), TakeStart::Fresh);
            assert_eq!(
                take_start(Some("S"), Some(("P", &settled))),
                TakeStart::Fresh
            );
        }
        let back = |log_handout| TakeStart::HandBack {
            serial: "P".into(),
            log_handout,
        };
        assert_eq!(
            take_start(None, Some(("P", &mine(true, None)))),
            back(false)
        );
        assert_eq!(
            take_start(None, Some(("P", &mine(false, None)))),
            back(true)
        );
        assert_eq!(
            take_start(Some("P"), Some(("P", &mine(true, None)))),
            back(false)
        );
        assert_eq!(
            take_start(Some("S"), Some(("P", &mine(true, None)))),
            TakeStart::RecordFirst {
                pending: "P".into()
            }
        );
    }

    #[test]
    fn a_serial_is_recorded_once_with_one_outcome() {
        assert_eq!(
            record_action(FloorEvent::Flashed, &history(true, None)),
            RecordAction::Append { log_handout: false }
        );
        assert_eq!(
            record_action(FloorEvent::Spoiled, &history(false, None)),
            RecordAction::Append { log_handout: true }
        );
        assert_eq!(
            record_action(
                FloorEvent::Flashed,
                &history(true, Some(FloorEvent::Flashed))
            ),
            RecordAction::AlreadyRecorded
        );
        assert!(matches!(
            record_action(FloorEvent::Spoiled, &history(true, Some(FloorEvent::Flashed))),
            RecordAction::Conflict(done) if done.event == FloorEvent::Flashed
        ));
    }

    #[test]
    fn a_serials_history_from_the_log_or_its_last_line() {
        let log = [
            record("A", "s1", FloorEvent::HandedOut),
            record("A", "s1", FloorEvent::Flashed),
            record("B", "s1", FloorEvent::HandedOut),
        ];
        let a = SerialHistory::of(&log, "A");
        assert!(a.handed_out);
        assert_eq!(a.outcome.unwrap().event, FloorEvent::Flashed);
        assert_eq!(SerialHistory::of(&log, "C"), SerialHistory::default());
        assert_eq!(SerialHistory::from_last(&log[2], "A"), None);
        let b = SerialHistory::from_last(&log[2], "B").unwrap();
        assert!(b.handed_out && b.outcome.is_none());
        let a = SerialHistory::from_last(&log[1], "A").unwrap();
        assert_eq!(a.outcome.unwrap().event, FloorEvent::Flashed);
    }
}
