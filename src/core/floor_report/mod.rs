//! The floor report for a shift supervisor (`claimfab report`), computed without I/O from what
//! `audit` reads: a batch's manifest rows, its stations' logs and, when AWS was asked, which
//! devices have provisioned and when. Per batch: the status funnel, flashed and provisioned
//! per hour (per day for a batch longer than two weeks), per-station counts and spoil rates,
//! and the boards flashed too long ago that have not provisioned. `html` renders it.

use std::collections::{BTreeMap, HashMap, HashSet};

use time::OffsetDateTime;

use crate::core::floor_records::{FloorEvent, LogRecord};
use crate::core::manifest::{DeviceStatus, ManifestRow};

pub mod html;

/// Hourly buckets up to this many; a longer batch is drawn per day.
const MAX_HOURS: i64 = 14 * 24;
/// The chart goes back at most this many days from the report's time.
const MAX_DAYS: i64 = 800;

/// What AWS says of the batch's devices, when it was asked.
pub enum Provisioning<'a> {
    /// Not asked (`--offline`): provisioning is unknown.
    Unknown,
    /// Thing name -> when its device certificate was created (None: provisioned, time not
    /// known). A device whose thing is absent has not provisioned.
    Known(&'a HashMap<String, Option<OffsetDateTime>>),
}

/// One batch's inputs.
pub struct BatchInput<'a> {
    /// The batch's directory, as given.
    pub batch: &'a str,
    pub rows: &'a [ManifestRow],
    pub logs: &'a [LogRecord],
    pub provisioning: Provisioning<'a>,
    /// A board flashed before this and not provisioned is overdue.
    pub overdue_before: OffsetDateTime,
    /// When the report is made: the chart ends here.
    pub now: OffsetDateTime,
}

/// How far the batch got: each count a number of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Funnel {
    /// Devices with a claim certificate and a bundle (the manifest's ready and after).
    pub made: usize,
    /// Handed to a station at least once (`take`).
    pub handed_out: usize,
    /// Recorded as flashed.
    pub flashed: usize,
    /// Flashed boards whose thing exists; None when provisioning is unknown.
    pub provisioned: Option<usize>,
    /// Recorded as spoiled.
    pub spoiled: usize,
    /// Claims out of service (INACTIVE, REVOKED or deleted).
    pub retired: usize,
}

/// Flashed and provisioned in one hour (or day).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: OffsetDateTime,
    pub flashed: usize,
    /// None when provisioning is unknown.
    pub provisioned: Option<usize>,
}

/// One station's work on the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StationCounts {
    pub station: String,
    pub handed_out: usize,
    pub flashed: usize,
    pub spoiled: usize,
    /// spoiled / (flashed + spoiled), 0 when it has recorded none.
    pub spoil_rate: f64,
}

/// A board flashed before the deadline whose device has not provisioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub serial: String,
    pub thing_name: String,
    pub station: String,
    pub flashed_at: OffsetDateTime,
}

/// The report of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    pub batch: String,
    pub devices: usize,
    pub funnel: Funnel,
    /// Whole hours, or whole days (`daily`), from the first flash or provisioning to the last;
    /// empty when there was none.
    pub buckets: Vec<Bucket>,
    pub daily: bool,
    /// Flashes and provisionings dated outside the batch's life (before its first
    /// certificate or 800 days before the report, or after the report was made): a clock
    /// wrong somewhere, or a hand-edited log. Counted in the funnel, not drawn.
    pub undrawn: usize,
    pub stations: Vec<StationCounts>,
    /// None when provisioning is unknown (nobody can say which boards are overdue).
    pub overdue: Option<Vec<Overdue>>,
}

/// The first time each serial met each floor event, and by which station.
struct FloorTimes<'a> {
    first: HashMap<(&'a str, FloorEvent), (&'a str, OffsetDateTime)>,
}

impl<'a> FloorTimes<'a> {
    /// The records of the batch's own devices whose time reads as a time.
    fn of(logs: &'a [LogRecord], serials: &HashSet<&str>) -> Self {
        let mut first: HashMap<(&str, FloorEvent), (&str, OffsetDateTime)> = HashMap::new();
        for (record, at) in dated(logs, serials) {
            let key = (record.serial.as_str(), record.event);
            let earlier = first.get(&key).is_some_and(|(_, t)| *t <= at);
            if !earlier {
                first.insert(key, (record.station.as_str(), at));
            }
        }
        Self { first }
    }

    fn count(&self, event: FloorEvent) -> usize {
        self.first.keys().filter(|(_, e)| *e == event).count()
    }

    fn flashed(&self, serial: &'a str) -> Option<&(&'a str, OffsetDateTime)> {
        self.first.get(&(serial, FloorEvent::Flashed))
    }
}

/// An RFC 3339 time, in UTC and within years 1 to 9999 (so it can be written back); a log
/// or manifest on the shared drive may hold anything.
fn parse_time(text: &str) -> Option<OffsetDateTime> {
    let at = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let at = at.checked_to_offset(time::UtcOffset::UTC)?;
    (1..=9999).contains(&at.year()).then_some(at)
}

/// The log records of the batch's own devices, each with its time; the rest (another
/// batch's serial, a time that does not read) are left out of every count.
fn dated<'a: 's, 's>(
    logs: &'a [LogRecord],
    serials: &'s HashSet<&'s str>,
) -> impl Iterator<Item = (&'a LogRecord, OffsetDateTime)> + 's {
    (logs.iter())
        .filter(|record| serials.contains(record.serial.as_str()))
        .filter_map(|record| Some((record, parse_time(&record.time)?)))
}

/// The report of one batch (see the module doc).
pub fn batch_report(input: &BatchInput) -> BatchReport {
    let serials: HashSet<&str> = input.rows.iter().map(|r| r.serial.as_str()).collect();
    let floor = FloorTimes::of(input.logs, &serials);
    let known = match input.provisioning {
        Provisioning::Known(things) => Some(things),
        Provisioning::Unknown => None,
    };
    let flashed_provisioned = |things: &HashMap<String, Option<OffsetDateTime>>| {
        (input.rows.iter())
            .filter(|row| floor.flashed(&row.serial).is_some())
            .filter(|row| things.contains_key(&row.thing_name))
            .count()
    };
    let funnel = Funnel {
        made: (input.rows.iter())
            .filter(|row| !matches!(row.status, DeviceStatus::Failed | DeviceStatus::Pending))
            .count(),
        handed_out: floor.count(FloorEvent::HandedOut),
        flashed: floor.count(FloorEvent::Flashed),
        provisioned: known.map(flashed_provisioned),
        spoiled: floor.count(FloorEvent::Spoiled),
        retired: (input.rows.iter())
            .filter(|row| {
                matches!(
                    row.status,
                    DeviceStatus::Inactive | DeviceStatus::Revoked | DeviceStatus::Deleted
                )
            })
            .count(),
    };
    let (buckets, daily, undrawn) = buckets(input, &floor, known);
    BatchReport {
        batch: input.batch.to_string(),
        devices: input.rows.len(),
        funnel,
        buckets,
        daily,
        undrawn,
        stations: stations(input.logs, &serials),
        overdue: known.map(|things| overdue(input, &floor, things)),
    }
}

/// Flashes and provisionings per hour (or per day), every bucket between the first and
/// the last present, empty ones included; only those within the batch's life are drawn (a
/// log's time is a station's word: a year 9999 must not make a million buckets). Also how
/// many were left out.
fn buckets(
    input: &BatchInput,
    floor: &FloorTimes,
    known: Option<&HashMap<String, Option<OffsetDateTime>>>,
) -> (Vec<Bucket>, bool, usize) {
    let flashes: Vec<OffsetDateTime> = (floor.first.iter())
        .filter(|((_, event), _)| *event == FloorEvent::Flashed)
        .map(|(_, (_, at))| *at)
        .collect();
    let provisionings: Vec<OffsetDateTime> = known.map_or_else(Vec::new, |things| {
        let batch: HashSet<&str> = input.rows.iter().map(|r| r.thing_name.as_str()).collect();
        (things.iter())
            .filter(|(thing, _)| batch.contains(thing.as_str()))
            .filter_map(|(_, at)| *at)
            .collect()
    });
    let born = (input.rows.iter())
        .filter_map(|row| parse_time(&row.created_at))
        .min();
    let oldest = input.now - time::Duration::days(MAX_DAYS);
    let from = born.map_or(oldest, |born| born.max(oldest));
    let life = |at: &&OffsetDateTime| **at >= from && **at <= input.now;
    let undrawn = (flashes.iter().chain(&provisionings))
        .filter(|at| !life(at))
        .count();
    let flashes: Vec<&OffsetDateTime> = flashes.iter().filter(life).collect();
    let provisionings: Vec<&OffsetDateTime> = provisionings.iter().filter(life).collect();
    let all = flashes.iter().chain(&provisionings);
    let (Some(first), Some(last)) = (all.clone().min(), all.max()) else {
        return (Vec::new(), false, undrawn);
    };
    let hours = (**last - **first).whole_hours() + 1;
    let (daily, width) = if hours > MAX_HOURS {
        (true, 24 * 3600)
    } else {
        (false, 3600)
    };
    let start = first.unix_timestamp() - first.unix_timestamp().rem_euclid(width);
    let index = |at: &&OffsetDateTime| ((at.unix_timestamp() - start) / width) as usize;
    let count = index(last) + 1;
    let mut flashed = vec![0; count];
    let mut provisioned = vec![0; count];
    flashes.iter().for_each(|at| flashed[index(at)] += 1);
    provisionings
        .iter()
        .for_each(|at| provisioned[index(at)] += 1);
    let buckets = (0..count)
        .map(|i| Bucket {
            start: OffsetDateTime::from_unix_timestamp(start + i as i64 * width)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            flashed: flashed[i],
            provisioned: known.map(|_| provisioned[i]),
        })
        .collect();
    (buckets, daily, undrawn)
}

/// Per station, by name: what it took, flashed and spoiled (each serial once per event).
fn stations(logs: &[LogRecord], serials: &HashSet<&str>) -> Vec<StationCounts> {
    let mut seen: HashSet<(&str, &str, FloorEvent)> = HashSet::new();
    let mut counts: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for (record, _) in dated(logs, serials) {
        if !seen.insert((&record.station, &record.serial, record.event)) {
            continue;
        }
        let slot = match record.event {
            FloorEvent::HandedOut => 0,
            FloorEvent::Flashed => 1,
            FloorEvent::Spoiled => 2,
        };
        counts.entry(&record.station).or_default()[slot] += 1;
    }
    (counts.into_iter())
        .map(|(station, [handed_out, flashed, spoiled])| StationCounts {
            station: station.to_string(),
            handed_out,
            flashed,
            spoiled,
            spoil_rate: match flashed + spoiled {
                0 => 0.0,
                recorded => spoiled as f64 / recorded as f64,
            },
        })
        .collect()
}

/// The boards flashed before the deadline whose thing does not exist, oldest first.
fn overdue(
    input: &BatchInput,
    floor: &FloorTimes,
    things: &HashMap<String, Option<OffsetDateTime>>,
) -> Vec<Overdue> {
    let mut overdue: Vec<Overdue> = (input.rows.iter())
        .filter(|row| !things.contains_key(&row.thing_name))
        .filter_map(|row| {
            let (station, at) = floor.flashed(&row.serial)?;
            (*at < input.overdue_before).then(|| Overdue {
                serial: row.serial.clone(),
                thing_name: row.thing_name.clone(),
                station: station.to_string(),
                flashed_at: *at,
            })
        })
        .collect();
    overdue.sort_by(|a, b| (a.flashed_at, &a.serial).cmp(&(b.flashed_at, &b.serial)));
    overdue
}

#[cfg(test)]
mod tests;
