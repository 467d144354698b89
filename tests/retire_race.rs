//! `revoke` racing the flashing stations (issue 16, item 6): before its first AWS call and
//! its first journal event, revoke puts a closed marker on every selected bundle not handed
//! out, so a `take` meanwhile never hands out a claim being revoked; a bundle a station
//! already held is revoked all the same and its station named. Performed against the local
//! endpoint with UpdateCertificate failing until the test lets it through, so the takes run
//! while revoke is provably inside its AWS calls; and, in process, with every AWS call lost
//! (a revoke that dies there), then re-run to the end.

mod common;
mod fake_iot;

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use claimfab::batch_dir::journal::{EventLog, JournalFiles, JournalStore};
use claimfab::cloud::OutOfService;
use claimfab::core::ledger::{Event, Replay};
use claimfab::retirement::revoke::{Retirement, Selection};
use common::*;
use fake_iot::{Crash, FakeIot};

const CLOSED: &str = "(closed)";

/// The station named on a serial's claim marker, if it has one.
fn marker(dir: &Path, serial: &str) -> Option<String> {
    let bytes = std::fs::read(dir.join("handout").join(serial)).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    Some(json["station"].as_str().unwrap().to_string())
}

/// `claimfab take DIR --station ID --to (a fresh directory) [extra]`: (code, stdout,
/// stderr, the directory).
fn take(dir: &Path, station: &str, extra: &[&str]) -> (i32, String, String, PathBuf) {
    let to = dir.with_file_name(format!("image-{station}"));
    std::fs::create_dir_all(&to).unwrap();
    let (code, stdout, stderr) = run(claimfab_without_endpoint()
        .arg("take")
        .arg(dir)
        .args(["--station", station, "--to"])
        .arg(&to)
        .args(extra));
    (code, stdout, stderr, to)
}

/// The serials of the devices whose manifest status is `status`.
fn with_status(dir: &Path, status: &str) -> HashSet<String> {
    read_manifest(dir)
        .into_iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["serial"].clone())
        .collect()
}

/// Waits for a child with a deadline; its stdout.
fn finish(mut child: Child, within: Duration) -> (i32, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut stdout)
                .unwrap();
            return (status.code().unwrap_or(-1), stdout);
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("revoke did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_take_while_revoke_runs_never_gets_a_claim_being_revoked() {
    // Every UpdateCertificate fails (500, retried by claimfab) until the faults are cleared.
    let f = Fixture::with_faults("", &["--fail", "UpdateCertificate=1"]);
    let (code, stdout, stderr) = run(&mut f.batch(8));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let serials = counted(8);
    // Station st1 takes the first bundle and has not recorded it when revoke starts.
    let (code, stdout, stderr, _) = take(&f.out, "st1", &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with(&serials[0]), "{stdout}");
    let revoked: Vec<&str> = [0, 2, 3, 4].iter().map(|&i| serials[i].as_str()).collect();
    let child = f
        .endpoint
        .claimfab()
        .arg("revoke")
        .arg(&f.out)
        .args(["--devices", &revoked.join(","), "--detach"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Revoke is inside its first AWS call, which AWS has not executed.
    f.wait_for_events("status_requested", 1);
    assert_eq!(f.endpoint.stat("UpdateCertificate", "executed"), 0);
    assert_eq!(marker(&f.out, &serials[0]).as_deref(), Some("st1"));
    for serial in &revoked[1..] {
        assert_eq!(
            marker(&f.out, serial).as_deref(),
            Some(CLOSED),
            "{serial} closed before any AWS call"
        );
    }
    // A station asking for one by its label is refused, one line, nothing extracted.
    let (code, _, stderr, to) = take(&f.out, "st2", &["--serial", revoked[3]]);
    assert_eq!(code, 2, "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("claimfab: warning:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        stderr.contains(revoked[3]) && stderr.contains("is closed"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(&to).unwrap().count(),
        0,
        "nothing extracted"
    );
    // Stations taking the next bundle get every other one, and none being revoked.
    let mut handed = HashSet::new();
    for n in 3.. {
        let (code, stdout, stderr, _) = take(&f.out, &format!("st{n}"), &[]);
        if code == 3 {
            break;
        }
        assert_eq!(code, 0, "{stderr}");
        handed.insert(stdout.split_whitespace().next().unwrap().to_string());
    }
    let others: HashSet<String> = [1, 5, 6, 7].iter().map(|&i| serials[i].clone()).collect();
    assert_eq!(handed, others, "the free bundles, and only those");

    // AWS recovers: revoke finishes, names the station that held one, lists what it retired.
    f.endpoint.clear_faults();
    let (code, stdout) = finish(child, Duration::from_secs(90));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("{} (held by station st1)", serials[0])),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "1 selected bundle(s) were held by a station, retired all the same (a board flashed with one will not provision): {} at st1",
            serials[0]
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("4 claim(s) now REVOKED: {}", revoked.join(", "))),
        "{stdout}"
    );
    let rows = read_manifest(&f.out);
    let all = f.rt.block_on(f.endpoint.all_certificates());
    for row in &rows {
        let expected = if revoked.contains(&row["serial"].as_str()) {
            "REVOKED"
        } else {
            "ACTIVE"
        };
        assert_eq!(all[&row["certificate_id"]].0, expected, "{row:?}");
    }
    let names: HashSet<String> = revoked.iter().map(|s| s.to_string()).collect();
    assert_eq!(with_status(&f.out, "revoked"), names);
    // No board got a claim being revoked but st1's, taken before revoke began.
    for serial in &revoked[1..] {
        assert_eq!(marker(&f.out, serial).as_deref(), Some(CLOSED));
    }
    // st1 does not get its retired bundle back; nothing is left.
    let (code, _, stderr, _) = take(&f.out, "st1", &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("retired meanwhile"), "{stderr}");
}

/// Journals that check, at every event, that each of `serials` carries a claim marker:
/// the floor is closed before the first journal event.
struct Watching {
    dir: PathBuf,
    serials: Vec<String>,
    events: Arc<AtomicUsize>,
}

struct WatchingLog {
    inner: Box<dyn EventLog>,
    dir: PathBuf,
    serials: Vec<String>,
    events: Arc<AtomicUsize>,
}

impl JournalStore for Watching {
    fn open(&self, path: &Path) -> Result<(Box<dyn EventLog>, Replay)> {
        let (inner, replay) = JournalFiles.open(path)?;
        let log = WatchingLog {
            inner,
            dir: self.dir.clone(),
            serials: self.serials.clone(),
            events: self.events.clone(),
        };
        Ok((Box::new(log), replay))
    }
}

impl EventLog for WatchingLog {
    fn record(&self, event: &Event) -> Result<()> {
        for serial in &self.serials {
            let station = marker(&self.dir, serial);
            assert_eq!(station.as_deref(), Some(CLOSED), "{serial} at {event:?}");
        }
        self.events.fetch_add(1, Ordering::SeqCst);
        self.inner.record(event)
    }
}

#[test]
fn a_revoke_that_dies_at_its_first_aws_call_left_the_floor_closed_and_a_rerun_finishes() {
    let f = Fixture::new("");
    let (code, stdout, stderr) = run(&mut f.batch(4));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let serials = counted(4);
    let selected = vec![serials[1].clone(), serials[2].clone()];
    // An account no request reaches, as when the process dies as it sends the first one.
    let crash = Arc::new(Crash::default());
    crash.happen();
    let dead = FakeIot::new(crash);
    let watching = Watching {
        dir: f.out.clone(),
        serials: selected.clone(),
        events: Arc::new(AtomicUsize::new(0)),
    };
    let request = Retirement {
        dir: &f.out,
        devices: Selection::Serials(selected.clone()),
        status: OutOfService::Revoked,
        detach: true,
        delete: false,
    };
    claimfab::output::silence(); // the failures are asserted below, not printed
    let outcome =
        f.rt.block_on(request.check().unwrap().execute(&dead, &watching))
            .unwrap();
    assert_eq!(outcome.failed, 2);
    assert!(outcome.retired.is_empty() && outcome.held.is_empty());
    assert_eq!(
        watching.events.load(Ordering::SeqCst),
        2,
        "one status_requested per device, each after the floor was closed"
    );
    let (code, _, stderr, _) = take(&f.out, "st1", &["--serial", &selected[0]]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is closed"), "{stderr}");

    // The re-run finishes; the others stay free for the stations.
    let (code, stdout, _) = run(f.endpoint.claimfab().arg("revoke").arg(&f.out).args([
        "--devices",
        &selected.join(","),
        "--detach",
    ]));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains(&format!("2 claim(s) now REVOKED: {}", selected.join(", "))),
        "{stdout}"
    );
    assert_eq!(
        with_status(&f.out, "revoked"),
        selected.iter().cloned().collect()
    );
    let mut handed = HashSet::new();
    for station in ["st2", "st3", "st4"] {
        let (code, stdout, stderr, _) = take(&f.out, station, &[]);
        if code == 3 {
            break;
        }
        assert_eq!(code, 0, "{stderr}");
        handed.insert(stdout.split_whitespace().next().unwrap().to_string());
    }
    assert_eq!(
        handed,
        [serials[0].clone(), serials[3].clone()]
            .into_iter()
            .collect()
    );
}
