//! Unit tests of `floor_records`.
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
    assert_eq!(queue_index(std::iter::empty::<&str>()).len(), INDEX_SLOT);
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

fn handout(station: &str, serial: &str) -> Handout {
    Handout {
        station: station.into(),
        serial: serial.into(),
        at: time::macros::datetime!(2026-11-26 08:00 UTC),
        token: "0123456789abcdef0123456789abcdef".into(),
    }
}

#[test]
fn queue_records_naming_no_thing_are_refused() {
    let crafted = |serial: &str, thing_name: &str| {
        format!("{serial:<NAME_WIDTH$} {thing_name:<NAME_WIDTH$}\n")
    };
    for (serial, thing_name) in [
        ("../../etc/passwd", "gg-SN1"),
        ("SN1", "../../etc/passwd"),
        ("a/b", "gg-a"),
        ("SN.1", "gg-SN1"),
        ("..", "gg"),
    ] {
        let record = crafted(serial, thing_name);
        assert_eq!(record.len(), QUEUE_RECORD);
        assert_eq!(parse_queue_record(record.as_bytes()), None, "{serial}");
    }
    assert!(parse_queue_record(crafted("SN:1_a-b", "gg-SN:1_a-b").as_bytes()).is_some());
}

#[test]
fn a_marker_reads_as_complete_cut_short_or_foreign() {
    let whole = serde_json::to_vec(&handout("st1", "SN1")).unwrap();
    assert_eq!(
        read_marker(&whole, Some("SN1")),
        Claim::Complete(handout("st1", "SN1"))
    );
    assert_eq!(
        read_marker(&whole, None),
        Claim::Complete(handout("st1", "SN1")),
        "a certificate's marker names any serial"
    );
    // Every prefix of a record is what a crash mid-write leaves: incomplete, never an error.
    for cut in 0..whole.len() {
        assert_eq!(
            read_marker(&whole[..cut], Some("SN1")),
            Claim::Incomplete,
            "{cut}"
        );
    }
    assert_eq!(read_marker(&[0; 64], Some("SN1")), Claim::Incomplete);
    assert_eq!(read_marker(b" \n", Some("SN1")), Claim::Incomplete);
    let mut zero_tail = whole[..20].to_vec();
    zero_tail.extend([0; 40]);
    assert_eq!(read_marker(&zero_tail, Some("SN1")), Claim::Incomplete);
    // A marker from before tokens still reads.
    let old = br#"{"station":"st1","serial":"SN1","at":"2026-11-26T08:00:00Z"}"#;
    let Claim::Complete(old) = read_marker(old, Some("SN1")) else {
        panic!("an old marker is whole")
    };
    assert_eq!((old.station.as_str(), old.token.as_str()), ("st1", ""));
    let closed = serde_json::to_vec(&handout(CLOSED, "SN1")).unwrap();
    assert!(matches!(
        read_marker(&closed, Some("SN1")),
        Claim::Complete(_)
    ));
    // Anything else is foreign: claimed, owner unknown.
    let foreign = [
        serde_json::to_vec(&handout("st1", "SN2")).unwrap(),
        serde_json::to_vec(&handout("../st1", "SN1")).unwrap(),
        serde_json::to_vec(&handout(UNKNOWN, "SN1")).unwrap(),
        b"taken by Bob".to_vec(),
        b"[1, 2]".to_vec(),
        b"{\"station\":\"st1\"}".to_vec(),
    ];
    for bytes in foreign {
        let claim = read_marker(&bytes, Some("SN1"));
        assert!(matches!(claim, Claim::Foreign(_)), "{claim:?}");
        assert_eq!(claim.station(), UNKNOWN);
    }
    let bad_serial = serde_json::to_vec(&handout("st1", "a/b")).unwrap();
    assert!(matches!(read_marker(&bad_serial, None), Claim::Foreign(_)));
    assert!(
        check_station_id(UNKNOWN).is_err(),
        "no station is {UNKNOWN}"
    );
}

#[test]
fn pending_notes_name_the_serial_then_the_host() {
    let text = pending_note_text("SN9", "line1-pc");
    assert_eq!(text, "SN9\nhost=line1-pc\n");
    let note = parse_pending_note(&text).unwrap().unwrap();
    assert_eq!(note.serial, "SN9");
    assert_eq!(note.host.as_deref(), Some("line1-pc"));
    // An old note: the serial alone.
    let old = parse_pending_note("SN9").unwrap().unwrap();
    assert_eq!((old.serial.as_str(), old.host), ("SN9", None));
    assert_eq!(parse_pending_note("").unwrap(), None);
    assert_eq!(parse_pending_note("\n").unwrap(), None);
    for bad in ["../../etc/passwd", "a/b", "SN 9"] {
        let err = parse_pending_note(bad).unwrap_err();
        assert!(err.contains("not a serial"), "{bad}: {err}");
    }
    assert_eq!(
        pending_note_text("SN9", "bad host\n"),
        "SN9\nhost=bad?host?\n"
    );
    assert_eq!(pending_note_text("SN9", ""), "SN9\nhost=unknown\n");
}

/// Station st1 completing the incomplete marker of SN1 it took on pc1, with its own
/// evidence: what each case varies.
fn with_our_facts(check: impl FnOnce(CompletionFacts<'_>, &PendingNote)) {
    let note = PendingNote {
        serial: "SN1".into(),
        host: Some("pc1".into()),
    };
    let ours = Claim::Complete(handout("st1", "SN1"));
    let facts = CompletionFacts {
        station: "st1",
        serial: "SN1",
        note: Some(&note),
        host: "pc1",
        marker: &Claim::Incomplete,
        evidence: Some(&ours),
        rival_evidence: false,
    };
    check(facts, &note)
}

#[test]
fn only_the_station_that_made_a_marker_completes_it() {
    with_our_facts(|facts, note| {
        assert!(may_complete(&facts));
        let old_note = PendingNote {
            host: None,
            ..note.clone()
        };
        assert!(may_complete(&CompletionFacts {
            note: Some(&old_note),
            ..facts
        }));
    });
}

#[test]
fn any_other_station_or_doubt_may_not_complete_a_marker() {
    with_our_facts(|facts, note| {
        let other_serial = PendingNote {
            serial: "SN2".into(),
            ..note.clone()
        };
        let theirs = Claim::Complete(handout("st2", "SN1"));
        let other_claim = Claim::Complete(handout("st1", "SN2"));
        let whole = Claim::Complete(handout("st2", "SN1"));
        for refused in [
            CompletionFacts {
                note: None,
                ..facts
            },
            CompletionFacts {
                note: Some(&other_serial),
                ..facts
            },
            CompletionFacts {
                host: "pc2",
                ..facts
            },
            CompletionFacts {
                evidence: None,
                ..facts
            },
            CompletionFacts {
                evidence: Some(&theirs),
                ..facts
            },
            CompletionFacts {
                evidence: Some(&other_claim),
                ..facts
            },
            CompletionFacts {
                evidence: Some(&Claim::Incomplete),
                ..facts
            },
            CompletionFacts {
                rival_evidence: true,
                ..facts
            },
            CompletionFacts {
                marker: &whole,
                ..facts
            },
            CompletionFacts {
                marker: &Claim::Foreign("edited".into()),
                ..facts
            },
        ] {
            assert!(!may_complete(&refused), "{refused:?}");
        }
    });
}

#[test]
fn a_certificate_is_held_by_the_serial_it_went_out_with() {
    assert!(check_certificate_id(&"0a".repeat(32)).is_ok());
    for bad in [
        "".to_string(),
        "0A".repeat(32),
        "0a".repeat(31),
        "../".repeat(21) + "a",
        "g".repeat(64),
    ] {
        assert!(check_certificate_id(&bad)
            .unwrap_err()
            .contains("64 lowercase hex"));
    }
    let marker = Claim::Complete(handout("st1", "SN1"));
    assert_eq!(certificate_holder(&marker, "SN1"), CertificateClaim::Ours);
    assert_eq!(
        certificate_holder(&marker, "SN2"),
        CertificateClaim::HeldBy {
            serial: "SN1".into(),
            station: "st1".into()
        }
    );
    assert_eq!(
        certificate_holder(&Claim::Incomplete, "SN1"),
        CertificateClaim::OwnerUnknown
    );
}
