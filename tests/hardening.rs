//! Hardening of the commands that hold keys (issue 16, item 7): a station identity file that
//! group or others may read is refused by `take --identity` and `verify --identity` (exit 2,
//! one line naming the file, its mode and `chmod 600 FILE`, nothing changed), and a command
//! that holds keys runs with core dumps off, read from outside in /proc/PID/limits while a
//! `batch` is held up by a throttled endpoint. (That the process is also non-dumpable is
//! checked in src/harden.rs: /proc shows it to no one when the tests run as root.)

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// `claimfab station-key --out PATH`: the recipient it printed.
fn station_key(path: &Path) -> String {
    let (code, stdout, stderr) = run(claimfab_without_endpoint()
        .args(["station-key", "--out"])
        .arg(path));
    assert_eq!(code, 0, "{stderr}");
    stdout.trim().to_string()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether anything of the floor was written: claim markers or station files.
fn floor_touched(dir: &Path) -> bool {
    let names = |sub: &str| -> Vec<String> {
        std::fs::read_dir(dir.join(sub))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    !names("handout").is_empty()
        || names("stations")
            .iter()
            .any(|name| !["queue", "queue.index", "cursor"].contains(&name.as_str()))
}

#[test]
fn an_identity_file_others_may_read_is_refused_and_nothing_changes() {
    let f = Fixture::new("");
    let key = f.work.path().join("station.key");
    let recipient = station_key(&key);
    let (code, stdout, stderr) = run(f.batch(2).args(["--encrypt-to", &recipient]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let image = f.work.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let take = || {
        run(claimfab_without_endpoint()
            .arg("take")
            .arg(&f.out)
            .args(["--station", "st1", "--to"])
            .arg(&image)
            .arg("--identity")
            .arg(&key))
    };
    let verify = || {
        run(claimfab_without_endpoint()
            .arg("verify")
            .arg(&f.out)
            .arg("--identity")
            .arg(&key))
    };
    let manifest = std::fs::read(f.out.join("manifest.csv")).unwrap();
    for mode in [0o644, 0o640, 0o604] {
        chmod(&key, mode);
        let expected = format!(
            "claimfab: identity {0}: is mode {mode:04o}, so its group or others can read or change it; a private key must be its owner's alone: run chmod 600 {0}",
            key.display()
        );
        for (command, (code, stdout, stderr)) in [("take", take()), ("verify", verify())] {
            assert_eq!(code, 2, "{command} {mode:o}: {stdout}{stderr}");
            // One line, besides any warning (an unpinned batch key, say).
            let errors: Vec<&str> = stderr
                .lines()
                .filter(|l| !l.starts_with("claimfab: warning:"))
                .collect();
            assert_eq!(errors, [expected.as_str()], "{command}");
            assert!(stdout.is_empty(), "{command}: {stdout}");
        }
        assert!(!floor_touched(&f.out), "a refused take changed the floor");
        assert_eq!(std::fs::read_dir(&image).unwrap().count(), 0);
        assert_eq!(std::fs::read(f.out.join("manifest.csv")).unwrap(), manifest);
    }
    // The mode was all that was wrong.
    chmod(&key, 0o600);
    let (code, _, stderr) = verify();
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = take();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("SN000001 "), "{stdout}");
}

/// The (soft, hard) core-file size limit in a /proc/PID/limits text.
fn core_limit(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("a core file size line");
    let fields: Vec<&str> = line["Max core file size".len()..]
        .split_whitespace()
        .collect();
    (fields[0].to_string(), fields[1].to_string())
}

#[test]
fn a_batch_runs_with_core_dumps_off() {
    // The first certificate passes, the next waits on throttling: batch is busy with keys.
    let f = Fixture::with_faults("", &["--throttle", "CreateCertificateFromCsr=0.001"]);
    let mut child = f
        .batch(3)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.endpoint.stat("CreateCertificateFromCsr", "throttled") == 0 {
        assert!(Instant::now() < deadline, "batch never reached AWS");
        assert!(child.try_wait().unwrap().is_none(), "batch ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // The hard limit too, which claimfab inherits higher (unlimited, usually) and which
    // nothing in the process could raise again.
    let inherited = std::fs::read_to_string("/proc/self/limits").unwrap();
    assert_eq!(
        core_limit(&limits),
        ("0".to_string(), "0".to_string()),
        "{limits}\ninherited: {:?}",
        core_limit(&inherited)
    );
}
