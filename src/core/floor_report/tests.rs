//! The floor report's counts, buckets and overdue list, and its HTML's escaping.

use std::collections::HashMap;

use time::macros::datetime;
use time::OffsetDateTime;

use super::html::{escape, render, Page};
use super::*;

fn row(n: usize, status: DeviceStatus) -> ManifestRow {
    ManifestRow::new(&format!("SN{n:06}"), &format!("gg-SN{n:06}"), status)
}

fn log(station: &str, n: usize, event: FloorEvent, at: OffsetDateTime) -> LogRecord {
    LogRecord {
        station: station.into(),
        time: rfc3339(at),
        serial: format!("SN{n:06}"),
        certificate_id: format!("cert{n}"),
        event,
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    crate::core::floor_records::rfc3339(t)
}

/// Ten devices: 1-6 taken by st1 or st2, 1-4 flashed (1 and 2 at 08:10, 3 and 4 at 10:20),
/// 5 spoiled by st2, 6 still at st2, 7-9 never taken, 10 revoked.
fn floor() -> (Vec<ManifestRow>, Vec<LogRecord>) {
    let mut rows: Vec<ManifestRow> = (1..=9).map(|n| row(n, DeviceStatus::Ready)).collect();
    rows.push(row(10, DeviceStatus::Revoked));
    let (early, late) = (
        datetime!(2026-12-01 08:10 UTC),
        datetime!(2026-12-01 10:20 UTC),
    );
    let mut logs = Vec::new();
    for n in 1..=6 {
        let station = if n <= 3 { "st1" } else { "st2" };
        logs.push(log(station, n, FloorEvent::HandedOut, early));
    }
    for (n, at) in [(1, early), (2, early), (3, late), (4, late)] {
        let station = if n <= 3 { "st1" } else { "st2" };
        logs.push(log(station, n, FloorEvent::Flashed, at));
    }
    logs.push(log("st2", 5, FloorEvent::Spoiled, late));
    // A record written twice (a crash between log and marker) counts once.
    logs.push(log("st1", 1, FloorEvent::Flashed, late));
    (rows, logs)
}

fn input<'a>(
    rows: &'a [ManifestRow],
    logs: &'a [LogRecord],
    provisioning: Provisioning<'a>,
) -> BatchInput<'a> {
    BatchInput {
        batch: "batches/<b>",
        rows,
        logs,
        provisioning,
        overdue_before: datetime!(2026-12-01 09:00 UTC),
        now: datetime!(2026-12-02 08:00 UTC),
    }
}

#[test]
fn the_funnel_counts_each_device_once_per_stage() {
    let (rows, logs) = floor();
    let things = HashMap::from([(
        "gg-SN000002".to_string(),
        Some(datetime!(2026-12-01 11:05 UTC)),
    )]);
    let report = batch_report(&input(&rows, &logs, Provisioning::Known(&things)));
    assert_eq!(
        report.funnel,
        Funnel {
            made: 10,
            handed_out: 6,
            flashed: 4,
            provisioned: Some(1),
            spoiled: 1,
            retired: 1,
        }
    );
    let st1 = &report.stations[0];
    assert_eq!(
        (
            st1.station.as_str(),
            st1.handed_out,
            st1.flashed,
            st1.spoiled
        ),
        ("st1", 3, 3, 0)
    );
    let st2 = &report.stations[1];
    assert_eq!((st2.handed_out, st2.flashed, st2.spoiled), (3, 1, 1));
    assert!((st2.spoil_rate - 0.5).abs() < 1e-9);
}

#[test]
fn buckets_run_hour_by_hour_from_the_first_event_to_the_last() {
    let (rows, logs) = floor();
    let things = HashMap::from([(
        "gg-SN000002".to_string(),
        Some(datetime!(2026-12-01 11:05 UTC)),
    )]);
    let report = batch_report(&input(&rows, &logs, Provisioning::Known(&things)));
    assert!(!report.daily);
    let counts: Vec<(u8, usize, Option<usize>)> = (report.buckets.iter())
        .map(|b| (b.start.hour(), b.flashed, b.provisioned))
        .collect();
    assert_eq!(
        counts,
        [
            (8, 2, Some(0)),
            (9, 0, Some(0)),
            (10, 2, Some(0)),
            (11, 0, Some(1))
        ]
    );
}

#[test]
fn a_batch_longer_than_two_weeks_is_drawn_per_day() {
    let rows: Vec<ManifestRow> = (1..=2).map(|n| row(n, DeviceStatus::Ready)).collect();
    let logs = vec![
        log(
            "st1",
            1,
            FloorEvent::Flashed,
            datetime!(2026-11-01 23:59 UTC),
        ),
        log(
            "st1",
            2,
            FloorEvent::Flashed,
            datetime!(2026-11-20 00:01 UTC),
        ),
    ];
    let report = batch_report(&input(&rows, &logs, Provisioning::Unknown));
    assert!(report.daily);
    assert_eq!(report.buckets.len(), 20);
    assert_eq!(report.buckets[0].start, datetime!(2026-11-01 00:00 UTC));
    assert_eq!(
        (report.buckets[0].flashed, report.buckets[19].flashed),
        (1, 1)
    );
}

#[test]
fn overdue_boards_are_the_flashed_before_the_deadline_without_a_thing() {
    let (rows, logs) = floor();
    let things = HashMap::from([("gg-SN000002".to_string(), None)]);
    let report = batch_report(&input(&rows, &logs, Provisioning::Known(&things)));
    let overdue: Vec<&str> = (report.overdue.as_ref().unwrap().iter())
        .map(|o| o.serial.as_str())
        .collect();
    // 1 flashed at 08:10, no thing; 2 has its thing; 3 and 4 flashed after 09:00.
    assert_eq!(overdue, ["SN000001"]);
    assert_eq!(report.overdue.unwrap()[0].station, "st1");
}

#[test]
fn offline_provisioning_is_unknown_not_zero() {
    let (rows, logs) = floor();
    let report = batch_report(&input(&rows, &logs, Provisioning::Unknown));
    assert_eq!(report.funnel.provisioned, None);
    assert_eq!(report.overdue, None);
    assert!(report.buckets.iter().all(|b| b.provisioned.is_none()));
    let page = render(
        &Page {
            generated: datetime!(2026-12-02 08:00 UTC),
            provision_within: "24h",
        },
        &[report],
    );
    assert!(
        page.contains("data-metric=\"provisioned\">unknown<"),
        "{page}"
    );
    assert!(page.contains("data-unknown=\"true\""));
}

#[test]
fn text_from_the_shared_drive_is_escaped_and_the_page_needs_nothing_else() {
    let mut rows = vec![row(1, DeviceStatus::Ready)];
    rows[0].thing_name = "<img src=x onerror=alert(1)>".into();
    let logs = vec![log(
        "<script>",
        1,
        FloorEvent::Flashed,
        datetime!(2026-12-01 08:00 UTC),
    )];
    let things = HashMap::new();
    let report = batch_report(&input(&rows, &logs, Provisioning::Known(&things)));
    let page = render(
        &Page {
            generated: datetime!(2026-12-02 08:00 UTC),
            provision_within: "\"24h\"",
        },
        &[report],
    );
    assert!(
        !page.contains("<script") && !page.contains("<img"),
        "{page}"
    );
    assert!(page.contains("&lt;script&gt;") && page.contains("batches/&lt;b&gt;"));
    for external in [
        "http://", "https://", " src=\"", " href=", "@import", "url(",
    ] {
        assert!(!page.contains(external), "{external} in the page");
    }
    assert_eq!(escape("a&'\""), "a&amp;&#39;&quot;");
}

#[test]
fn a_log_dated_outside_the_batch_life_is_counted_but_not_drawn() {
    let mut rows: Vec<ManifestRow> = (1..=3).map(|n| row(n, DeviceStatus::Ready)).collect();
    for row in &mut rows {
        row.created_at = "2026-12-01T07:00:00Z".into();
    }
    let logs = vec![
        log(
            "st1",
            1,
            FloorEvent::Flashed,
            datetime!(2026-12-01 08:10 UTC),
        ),
        log(
            "st1",
            2,
            FloorEvent::Flashed,
            datetime!(9999-12-31 23:00 UTC),
        ),
        log(
            "st1",
            3,
            FloorEvent::Flashed,
            datetime!(1970-01-01 00:00 UTC),
        ),
    ];
    let report = batch_report(&input(&rows, &logs, Provisioning::Unknown));
    assert_eq!(report.funnel.flashed, 3);
    assert_eq!(report.undrawn, 2);
    assert_eq!(
        report.buckets.len(),
        1,
        "one hour drawn, not a million days"
    );
    assert_eq!(report.buckets[0].flashed, 1);
}

#[test]
fn hostile_times_and_foreign_serials_neither_panic_nor_count() {
    let rows: Vec<ManifestRow> = (1..=2).map(|n| row(n, DeviceStatus::Ready)).collect();
    let mut logs = vec![log(
        "st1",
        1,
        FloorEvent::Flashed,
        datetime!(2026-12-01 08:10 UTC),
    )];
    // Year -1 once in UTC, a time that does not read, a serial of no device of the batch.
    for (time, serial) in [
        ("0000-01-01T00:00:00+01:00", "SN000002"),
        ("yesterday", "SN000002"),
        ("2026-12-01T08:00:00Z", "SN999999"),
    ] {
        let mut record = log(
            "st9",
            2,
            FloorEvent::Flashed,
            datetime!(2026-12-01 08:00 UTC),
        );
        (record.time, record.serial) = (time.into(), serial.into());
        logs.push(record);
    }
    let things = HashMap::new();
    let report = batch_report(&input(&rows, &logs, Provisioning::Known(&things)));
    assert_eq!(report.funnel.flashed, 1);
    assert_eq!(report.stations.len(), 1, "st9's records count nowhere");
    let page = render(
        &Page {
            generated: datetime!(2026-12-02 08:00 UTC),
            provision_within: "24h",
        },
        &[report],
    );
    assert!(page.contains("SN000001"));
}
