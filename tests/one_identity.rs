//! One identity per board, even across crashes and mistakes at the flashing stations: a
//! bundle handed back after a crash says so (exit 4) instead of looking like a fresh take; a
//! hand-back on another machine than the one that took the bundle needs
//! `--accept-other-host`; a second bundle carrying a claim certificate already handed out
//! with another serial is never handed out. Checked on the floor's files and the station
//! logs, not only on claimfab's output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::line::with_claim_of;
use common::{run, Fixture};

fn batch(count: usize) -> Fixture {
    let fx = Fixture::new("");
    let (code, _, stderr) = run(&mut fx.batch(count));
    assert_eq!(code, 0, "{stderr}");
    fx
}

fn take(fx: &Fixture, station: &str, to: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::claimfab_without_endpoint();
    cmd.arg("take")
        .arg(&fx.out)
        .args(["--station", station, "--to"])
        .arg(to)
        .args(extra);
    cmd
}

fn flashed(fx: &Fixture, station: &str, serial: &str) -> (i32, String, String) {
    run(common::claimfab_without_endpoint()
        .arg("flashed")
        .arg(&fx.out)
        .args(["--station", station, serial]))
}

fn image(fx: &Fixture, name: &str) -> PathBuf {
    fx.work.path().join(name)
}

/// How many times the station logs record `serial` handed out.
fn handed_out(fx: &Fixture, serial: &str) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(fx.out.join("stations")).unwrap() {
        let log = entry.unwrap().path().join("log.csv");
        let Ok(mut reader) = csv::Reader::from_path(&log) else {
            continue;
        };
        for record in reader.records() {
            let record = record.unwrap();
            count += usize::from(&record[2] == serial && &record[4] == "handed-out");
        }
    }
    count
}

#[test]
fn a_bundle_handed_back_after_a_crash_says_so() {
    let fx = batch(2);
    let (code, stdout, stderr) = run(&mut take(&fx, "st1", &image(&fx, "a"), &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
    // The station's script died before `flashed`: the next take hands the same bundle back,
    // and says that this is the identity a board may already carry.
    let (code, stdout, stderr) = run(&mut take(&fx, "st1", &image(&fx, "b"), &[]));
    assert_eq!(code, 4, "{stderr}");
    assert_eq!(stdout, "SN000001 gg-SN000001\n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("handed to station st1 before and not recorded")
            && stderr.contains("claimfab flashed"),
        "{stderr}"
    );
    assert_eq!(handed_out(&fx, "SN000001"), 1, "logged once");
    assert_eq!(flashed(&fx, "st1", "SN000001").0, 0);
    let (code, stdout, stderr) = run(&mut take(&fx, "st1", &image(&fx, "c"), &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "{stderr}"
    );
}

#[test]
fn a_hand_back_on_another_host_needs_a_flag() {
    let fx = batch(2);
    let (code, _, stderr) = run(&mut take(&fx, "st1", &image(&fx, "a"), &[]));
    assert_eq!(code, 0, "{stderr}");
    // The same station id on a second machine: its pending take names the first host.
    let pending = fx.out.join("stations/st1/pending");
    let note = std::fs::read_to_string(&pending).unwrap();
    let (serial, host) = note.split_once('\n').unwrap();
    assert_eq!(serial, "SN000001");
    assert!(host.starts_with("host="), "{note}");
    std::fs::write(&pending, format!("{serial}\nhost=line2-station-pc\n")).unwrap();
    let to = image(&fx, "b");
    let (code, _, stderr) = run(&mut take(&fx, "st1", &to, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("line2-station-pc") && stderr.contains("--accept-other-host"),
        "{stderr}"
    );
    assert!(!to.exists(), "nothing handed out");
    let (code, stdout, stderr) = run(&mut take(&fx, "st1", &to, &["--accept-other-host"]));
    assert_eq!(
        (code, stdout.as_str()),
        (4, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
}

#[test]
fn a_second_bundle_carrying_a_handed_out_certificate_is_refused() {
    let fx = batch(3);
    // SN3's bundle rewritten with SN2's claim certificate and key (its own config and thing
    // name kept, so only the certificate gives it away).
    let bundles = fx.out.join("bundles");
    let forged = fx.work.path().join("forged.zip");
    with_claim_of(
        &bundles.join("SN000003.zip"),
        &bundles.join("SN000002.zip"),
        &forged,
    );
    std::fs::copy(&forged, bundles.join("SN000003.zip")).unwrap();
    let (code, stdout, stderr) = run(&mut take(
        &fx,
        "st1",
        &image(&fx, "a"),
        &["--serial", "SN000002"],
    ));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "{stderr}"
    );
    let to = image(&fx, "b");
    let (code, _, stderr) = run(&mut take(&fx, "st2", &to, &["--serial", "SN000003"]));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("SN000003") && stderr.contains("already handed out with SN000002"),
        "{stderr}"
    );
    assert!(!to.exists());
    assert!(!fx.out.join("handout/SN000003").exists(), "not claimed");
    assert_eq!(handed_out(&fx, "SN000003"), 0);
}
