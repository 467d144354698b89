//! The floor's files, on a temporary directory: claims made once, lost replies and cut-short
//! markers settled, logs appended after a torn line, modes whatever the umask, links refused.

use super::*;
use std::os::unix::fs::PermissionsExt;
use time::OffsetDateTime;

fn floor() -> (tempfile::TempDir, Floor) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(BATCH_FILE), "{}").unwrap();
    let floor = Floor::open(dir.path()).unwrap();
    (dir, floor)
}

fn record(station: &str, serial: &str, event: FloorEvent) -> LogRecord {
    LogRecord {
        station: station.into(),
        time: "2026-11-26T00:00:00Z".into(),
        serial: serial.into(),
        certificate_id: "a".repeat(64),
        event,
    }
}

#[test]
fn a_serial_is_claimed_once() {
    let (_dir, floor) = floor();
    let now = OffsetDateTime::now_utc();
    assert!(floor.claim("s1", "SN1", now).unwrap());
    assert!(!floor.claim("s2", "SN1", now).unwrap());
    assert!(!floor.claim("s1", "SN1", now).unwrap());
    assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
    assert!(floor.is_claimed("SN1").unwrap());
    assert!(!floor.is_claimed("SN2").unwrap());
    let leftovers: Vec<_> = fs::read_dir(floor.path(HANDOUT_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        vec![std::ffi::OsString::from("SN1")],
        "no temporary files left"
    );
}

#[test]
fn queue_records_are_read_by_index() {
    let (_dir, floor) = floor();
    assert!(floor.open_queue().unwrap().is_none());
    floor.advance_cursor(7).unwrap();
    floor.write_queue(&queued(0..3)).unwrap();
    assert_eq!(floor.cursor(), 0, "a new queue starts from the beginning");
    let (queue, len) = floor.open_queue().unwrap().unwrap();
    assert_eq!(len, 3);
    assert_eq!(floor.queued(&queue, 2).unwrap().thing_name, "gg-SN2");
}

#[test]
fn logs_append_after_a_torn_line_and_read_back() {
    let (_dir, floor) = floor();
    floor
        .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
        .unwrap();
    let path = floor.path("stations/s1/log.csv");
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"s1,2026-11-26T00:00:01Z,SN2,");
    fs::write(&path, &bytes).unwrap();
    assert_eq!(
        floor.station_log("s1").unwrap().len(),
        1,
        "torn line ignored"
    );
    floor
        .append_log(&record("s1", "SN1", FloorEvent::Flashed))
        .unwrap();
    let log = floor.station_log("s1").unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(
        floor.recorded("s1", "SN1").unwrap().unwrap().event,
        FloorEvent::Flashed
    );
    floor
        .append_log(&record("s2", "SN3", FloorEvent::HandedOut))
        .unwrap();
    assert_eq!(floor.all_logs().unwrap().len(), 3);
}

#[test]
fn a_hand_edited_log_line_is_named() {
    let (_dir, floor) = floor();
    floor
        .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
        .unwrap();
    let path = floor.path("stations/s1/log.csv");
    let mut text = fs::read_to_string(&path).unwrap();
    text.push_str("s1,yesterday,SN2,x,burnt\n");
    fs::write(&path, text).unwrap();
    let err = floor.station_log("s1").unwrap_err().to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn pending_is_set_read_and_cleared() {
    let (_dir, floor) = floor();
    assert_eq!(floor.pending("s1").unwrap(), None);
    floor.set_pending("s1", "SN9").unwrap();
    assert_eq!(floor.pending("s1").unwrap().as_deref(), Some("SN9"));
    floor.clear_pending("s1").unwrap();
    floor.clear_pending("s1").unwrap();
    assert_eq!(floor.pending("s1").unwrap(), None);
}

#[test]
fn a_directory_without_a_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Err(err) = Floor::open(dir.path()) else {
        panic!("opened a floor without a batch")
    };
    assert!(
        err.to_string().contains("not a claimfab batch directory"),
        "{err}"
    );
}

#[test]
fn a_queued_serial_is_found_through_the_index() {
    let (_dir, floor) = floor();
    let devices = queued(0..50);
    floor.write_queue(&devices).unwrap();
    let (queue, _) = floor.open_queue().unwrap().unwrap();
    for i in [0, 17, 49] {
        let found = floor.find_queued(&queue, &format!("SN{i}")).unwrap();
        assert_eq!(found.unwrap().thing_name, format!("gg-SN{i}"));
    }
    assert_eq!(floor.find_queued(&queue, "SN50").unwrap(), None);
    // A retired device leaves the queue, and the index with it.
    floor.write_queue(&queued(1..3)).unwrap();
    let (queue, len) = floor.open_queue().unwrap().unwrap();
    assert_eq!(len, 2);
    assert_eq!(floor.find_queued(&queue, "SN0").unwrap(), None);
    assert!(floor.find_queued(&queue, "SN2").unwrap().is_some());
}

#[test]
fn the_last_record_settles_a_serials_history() {
    let (_dir, floor) = floor();
    assert_eq!(floor.last_record("station1").unwrap(), None);
    floor
        .append_log(&record("station1", "SN1", FloorEvent::HandedOut))
        .unwrap();
    assert_eq!(
        floor.last_record("station1").unwrap().unwrap().serial,
        "SN1",
        "a station id that starts like the header is still a record"
    );
    floor
        .append_log(&record("station1", "SN1", FloorEvent::Flashed))
        .unwrap();
    floor
        .append_log(&record("station1", "SN2", FloorEvent::HandedOut))
        .unwrap();
    let sn2 = floor.history("station1", "SN2").unwrap();
    assert!(sn2.handed_out && sn2.outcome.is_none());
    let sn1 = floor.history("station1", "SN1").unwrap();
    assert_eq!(sn1.outcome.unwrap().event, FloorEvent::Flashed);
    assert_eq!(
        floor.history("station1", "SN3").unwrap(),
        SerialHistory::default()
    );
}

use super::files::write_new;
use super::fs::File;
use super::markers::{claim_record, create_exclusively, link_exclusively};
use crate::core::floor_records::CertificateClaim;
use crate::core::floor_records::Claim;
use crate::core::floor_records::FloorEvent;
use crate::core::floor_records::Handout;
use crate::core::floor_records::LogRecord;
use crate::core::floor_records::SerialHistory;
use crate::core::floor_records::CLOSED;
use crate::core::floor_records::UNKNOWN;
use std::os::unix::fs::symlink;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

/// The state a station leaves when it stops between creating its marker and writing it
/// on a share without hard links: its pending note, its record beside the marker, and
/// the marker empty.
fn cut_short(floor: &Floor, station: &str, serial: &str) -> Vec<u8> {
    floor.set_pending(station, serial).unwrap();
    let marker = floor.marker(serial, true).unwrap().unwrap();
    let bytes = claim_record(station, serial, OffsetDateTime::now_utc()).unwrap();
    write_new(&marker.evidence(station), &bytes).unwrap();
    File::create(marker.path()).unwrap();
    bytes
}

#[test]
fn a_lost_reply_is_settled_by_the_markers_content() {
    let (_dir, floor) = floor();
    let dir = floor.handout_dir(true).unwrap().unwrap();
    let ours = claim_record("s1", "SN1", OffsetDateTime::now_utc()).unwrap();
    let unique = dir.join(".SN1.s1.claim");
    write_new(&unique, &ours).unwrap();
    // The link was made but its reply lost: the retry sees EEXIST, and the content says ours.
    fs::hard_link(&unique, dir.join("SN1")).unwrap();
    assert!(link_exclusively(&unique, &dir.join("SN1"), &ours).unwrap());
    // Another station's marker, even one with the same station and time: its token differs.
    let mut theirs: Handout = serde_json::from_slice(&ours).unwrap();
    theirs.token = "f".repeat(32);
    fs::write(dir.join("SN2"), serde_json::to_vec(&theirs).unwrap()).unwrap();
    assert!(!link_exclusively(&unique, &dir.join("SN2"), &ours).unwrap());
    // The same holds where the share cannot hard-link: an exclusive create, read back.
    assert!(create_exclusively(&dir.join("SN3"), &ours).unwrap());
    assert_eq!(fs::read(dir.join("SN3")).unwrap(), ours);
    assert!(!create_exclusively(&dir.join("SN3"), &ours).unwrap());
    assert_eq!(mode(&dir.join("SN3")), 0o660);
}

#[test]
fn each_claim_carries_its_own_token() {
    let (_dir, floor) = floor();
    let now = OffsetDateTime::now_utc();
    assert!(floor.claim("s1", "SN1", now).unwrap());
    assert!(floor.claim("s1", "SN2", now).unwrap());
    let token = |serial| floor.handout(serial).unwrap().unwrap().token;
    assert_eq!(token("SN1").len(), 32);
    assert!(token("SN1").chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(token("SN1"), token("SN2"));
}

#[test]
fn an_incomplete_marker_is_claimed_owner_unknown_never_an_error() {
    let (_dir, floor) = floor();
    fs::create_dir(floor.path(HANDOUT_DIR)).unwrap();
    for (serial, bytes) in [
        ("SN1", &b""[..]),
        ("SN2", &b"{\"station\":\"s1\",\"ser"[..]),
        ("SN3", &b"edited by hand"[..]),
    ] {
        fs::write(floor.path(HANDOUT_DIR).join(serial), bytes).unwrap();
        assert!(floor.is_claimed(serial).unwrap());
        let state = floor.claim_state(serial).unwrap().unwrap();
        assert_eq!(state.station(), UNKNOWN, "{state:?}");
        let handout = floor.handout(serial).unwrap().unwrap();
        assert_eq!(
            (handout.station.as_str(), handout.serial.as_str()),
            (UNKNOWN, serial)
        );
        assert!(!floor
            .claim("s2", serial, OffsetDateTime::now_utc())
            .unwrap());
        // Nobody without the evidence completes it.
        floor.set_pending("s2", serial).unwrap();
        assert!(!floor.complete_claim("s2", serial).unwrap());
    }
    assert_eq!(floor.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
    assert_eq!(floor.claim_state("SN2").unwrap(), Some(Claim::Incomplete));
    assert!(matches!(
        floor.claim_state("SN3").unwrap(),
        Some(Claim::Foreign(_))
    ));
    assert_eq!(floor.claim_state("SN4").unwrap(), None);
    // A link or a directory where a marker should be is claimed, and never read through.
    symlink("/etc/passwd", floor.path(HANDOUT_DIR).join("SN5")).unwrap();
    fs::create_dir(floor.path(HANDOUT_DIR).join("SN6")).unwrap();
    for serial in ["SN5", "SN6"] {
        assert!(matches!(
            floor.claim_state(serial).unwrap(),
            Some(Claim::Foreign(_))
        ));
        assert_eq!(floor.handout(serial).unwrap().unwrap().station, UNKNOWN);
    }
}

#[test]
fn the_station_that_was_cut_short_completes_its_marker() {
    let (_dir, floor) = floor();
    let bytes = cut_short(&floor, "s1", "SN1");
    assert_eq!(floor.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
    assert!(!floor.complete_claim("s2", "SN1").unwrap(), "not s2's");
    assert!(floor.complete_claim("s1", "SN1").unwrap());
    assert_eq!(fs::read(floor.path("handout/SN1")).unwrap(), bytes);
    assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
    assert!(
        !floor.path("handout/.SN1.s1.claim").exists(),
        "evidence used up"
    );
    assert_eq!(mode(&floor.path("handout/SN1")), 0o660);
    // Asked again (a re-run), the answer stands.
    assert!(floor.complete_claim("s1", "SN1").unwrap());
    assert!(!floor.complete_claim("s2", "SN1").unwrap());
}

#[test]
fn any_doubt_leaves_an_incomplete_marker_alone() {
    // Another station's record beside it: either may have made it.
    let (_a, a) = floor();
    cut_short(&a, "s1", "SN1");
    cut_short(&a, "s2", "SN1");
    assert!(!a.complete_claim("s1", "SN1").unwrap());
    assert!(!a.complete_claim("s2", "SN1").unwrap());
    // close's record counts too, though close has no station directory.
    let (_b, b) = floor();
    cut_short(&b, "s1", "SN1");
    let evidence = b.marker("SN1", false).unwrap().unwrap().evidence(CLOSED);
    fs::write(evidence, b"{}").unwrap();
    assert!(!b.complete_claim("s1", "SN1").unwrap());
    // The station moved on to another serial since.
    let (_c, c) = floor();
    cut_short(&c, "s1", "SN1");
    c.set_pending("s1", "SN2").unwrap();
    assert!(!c.complete_claim("s1", "SN1").unwrap());
    // Its note was written on another machine (one station id on two hosts).
    let (_d, d) = floor();
    cut_short(&d, "s1", "SN1");
    fs::write(d.path("stations/s1/pending"), "SN1\nhost=elsewhere\n").unwrap();
    assert!(!d.complete_claim("s1", "SN1").unwrap());
    assert_eq!(d.claim_state("SN1").unwrap(), Some(Claim::Incomplete));
}

#[test]
fn a_certificate_is_claimed_once_per_serial() {
    let (_dir, floor) = floor();
    let id = "ab".repeat(32);
    assert_eq!(floor.certificate_claim_state(&id).unwrap(), None);
    let ours = floor.claim_certificate("s1", "SN1", &id).unwrap();
    assert_eq!(ours, CertificateClaim::Ours);
    // A hand-back or a re-run of the same serial: still ours, whoever asks.
    assert_eq!(floor.claim_certificate("s1", "SN1", &id).unwrap(), ours);
    assert_eq!(floor.claim_certificate("s2", "SN1", &id).unwrap(), ours);
    // A second bundle carrying the same certificate.
    assert_eq!(
        floor.claim_certificate("s2", "SN2", &id).unwrap(),
        CertificateClaim::HeldBy {
            serial: "SN1".into(),
            station: "s1".into()
        }
    );
    let marker = floor.path(CERTIFICATES_DIR).join(&id);
    assert_eq!(mode(&marker), 0o660);
    assert_eq!(mode(&floor.path(CERTIFICATES_DIR)), 0o770);
    let names: Vec<_> = fs::read_dir(floor.path(CERTIFICATES_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from(&id)],
        "no temporary file left"
    );
    for bad in ["../../etc/passwd".to_string(), "AB".repeat(32)] {
        let err = floor.claim_certificate("s1", "SN1", &bad).unwrap_err();
        assert!(err.to_string().contains("64 lowercase hex"), "{err}");
    }
    assert!(floor.claim_certificate("s1", "../SN1", &id).is_err());
}

#[test]
fn a_certificate_marker_cut_short_is_completed_by_its_maker_only() {
    let (_dir, floor) = floor();
    let id = "cd".repeat(32);
    floor.set_pending("s1", "SN1").unwrap();
    let marker = floor.certificate_marker(&id, true).unwrap().unwrap();
    let bytes = claim_record("s1", "SN1", OffsetDateTime::now_utc()).unwrap();
    write_new(&marker.evidence("s1"), &bytes).unwrap();
    File::create(marker.path()).unwrap();
    assert_eq!(
        floor.claim_certificate("s2", "SN2", &id).unwrap(),
        CertificateClaim::OwnerUnknown
    );
    assert_eq!(
        floor.claim_certificate("s1", "SN1", &id).unwrap(),
        CertificateClaim::Ours
    );
    assert_eq!(fs::read(marker.path()).unwrap(), bytes);
}

#[test]
fn a_pending_note_names_the_host() {
    let (_dir, floor) = floor();
    floor.set_pending("s1", "SN9").unwrap();
    let text = fs::read_to_string(floor.path("stations/s1/pending")).unwrap();
    assert_eq!(text.lines().next(), Some("SN9"), "the serial comes first");
    let note = floor.pending_note("s1").unwrap().unwrap();
    assert_eq!(note.serial, "SN9");
    assert_eq!(note.host, Some(this_host()));
    assert!(!this_host().is_empty());
    // An old note still reads.
    fs::write(floor.path("stations/s1/pending"), "SN8\n").unwrap();
    assert_eq!(floor.pending("s1").unwrap().as_deref(), Some("SN8"));
    assert_eq!(floor.pending_note("s1").unwrap().unwrap().host, None);
}

#[test]
fn a_pending_note_naming_a_path_is_refused() {
    let (_dir, floor) = floor();
    floor.set_pending("s1", "SN1").unwrap();
    fs::write(floor.path("stations/s1/pending"), "../../etc/passwd\n").unwrap();
    let err = floor.pending("s1").unwrap_err().to_string();
    assert!(err.contains("not a serial") && !err.contains('\n'), "{err}");
    assert!(floor.set_pending("s1", "../x").is_err());
    assert!(floor.is_claimed("../x").is_err());
    assert!(floor.claim("s1", "a/b", OffsetDateTime::now_utc()).is_err());
    assert!(floor.set_pending("..", "SN1").is_err());
}

#[test]
fn floor_directories_that_are_links_are_refused() {
    for dir in [STATIONS_DIR, HANDOUT_DIR, CERTIFICATES_DIR, BUNDLES_DIR] {
        let (batch, _) = floor();
        let elsewhere = tempfile::tempdir().unwrap();
        symlink(elsewhere.path(), batch.path().join(dir)).unwrap();
        let Err(err) = Floor::open(batch.path()) else {
            panic!("{dir} followed")
        };
        let err = err.to_string();
        assert!(
            err.contains(&format!("{dir} is a symbolic link")) && !err.contains('\n'),
            "{err}"
        );
    }
    let (batch, _) = floor();
    fs::write(batch.path().join(HANDOUT_DIR), b"").unwrap();
    let Err(err) = Floor::open(batch.path()) else {
        panic!("a file taken for a directory")
    };
    assert!(err.to_string().contains("is not a directory"), "{err}");
}

#[test]
fn a_station_directory_that_is_a_link_is_refused() {
    let (_dir, floor) = floor();
    floor.set_pending("s1", "SN1").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::write(elsewhere.path().join("pending"), "SN2\n").unwrap();
    symlink(elsewhere.path(), floor.path("stations/s2")).unwrap();
    let refused = |result: Result<()>| {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("stations/s2 is a symbolic link"), "{err}");
    };
    refused(floor.pending("s2").map(drop));
    refused(floor.set_pending("s2", "SN3"));
    refused(floor.append_log(&record("s2", "SN3", FloorEvent::HandedOut)));
    refused(floor.clear_pending("s2"));
    refused(floor.all_logs().map(drop));
    let names: Vec<_> = fs::read_dir(elsewhere.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("pending")],
        "nothing written there"
    );
    assert_eq!(
        fs::read_to_string(elsewhere.path().join("pending")).unwrap(),
        "SN2\n"
    );
}

#[test]
fn a_log_that_is_a_link_is_not_appended_to() {
    let (_dir, floor) = floor();
    floor.set_pending("s1", "SN1").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("profile");
    fs::write(&target, "keep\n").unwrap();
    symlink(&target, floor.path("stations/s1/log.csv")).unwrap();
    let err = floor
        .append_log(&record("s1", "SN1", FloorEvent::HandedOut))
        .unwrap_err();
    assert!(err.to_string().contains("not a plain file"), "{err}");
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
}

#[test]
fn floor_files_and_directories_get_their_modes_whatever_the_umask() {
    let (_dir, floor) = floor();
    let now = OffsetDateTime::now_utc();
    floor.write_queue(&queued(0..2)).unwrap();
    floor.advance_cursor(1).unwrap();
    floor.set_pending("s1", "SN0").unwrap();
    assert!(floor.claim("s1", "SN0", now).unwrap());
    floor
        .append_log(&record("s1", "SN0", FloorEvent::HandedOut))
        .unwrap();
    for dir in [STATIONS_DIR, "stations/s1", HANDOUT_DIR] {
        assert_eq!(mode(&floor.path(dir)), 0o770, "{dir}");
    }
    for file in [
        QUEUE_FILE,
        INDEX_FILE,
        CURSOR_FILE,
        "handout/SN0",
        "stations/s1/pending",
        "stations/s1/log.csv",
    ] {
        assert_eq!(mode(&floor.path(file)), 0o660, "{file}");
    }
}

#[test]
fn a_cut_short_claims_evidence_is_replaced_not_followed() {
    let (_dir, floor) = floor();
    let dir = floor.handout_dir(true).unwrap().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("victim");
    fs::write(&target, "keep\n").unwrap();
    symlink(&target, dir.join(".SN1.s1.claim")).unwrap();
    assert!(floor.claim("s1", "SN1", OffsetDateTime::now_utc()).unwrap());
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep\n");
    assert_eq!(floor.handout("SN1").unwrap().unwrap().station, "s1");
}

/// The queue of devices SN{i}, thing gg-SN{i}, for each i.
fn queued(numbers: std::ops::Range<u32>) -> crate::core::devices::DeviceList {
    let mut list = crate::core::devices::DeviceList::default();
    for i in numbers {
        list.push(&format!("SN{i}"), &format!("gg-SN{i}")).unwrap();
    }
    list
}
