//! The floor's files under attack and under accident, end to end: a queue record naming a
//! path, a floor directory replaced by a symbolic link, a claim marker a crash left empty on
//! a share without hard links, and the modes the floor's files get. Each is done to a real
//! batch (made on the local AWS endpoint) and `claimfab take` and `claimfab close` are run
//! against it; the results are checked on the files themselves.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, Fixture};

/// A batch of `count` devices, made at the harness's high test rate.
fn batch(count: usize) -> Fixture {
    let fx = Fixture::new("");
    let (code, _, err) = run(&mut fx.batch(count));
    assert_eq!(code, 0, "{err}");
    fx
}

/// `claimfab take DIR --station ID --to TO`.
fn take(dir: &Path, station: &str, to: &Path) -> Command {
    let mut cmd = common::claimfab_without_endpoint();
    cmd.arg("take")
        .arg(dir)
        .args(["--station", station])
        .arg("--to")
        .arg(to);
    cmd
}

/// The lines of standard error that are not warnings (a station that pins no batch key is
/// warned on every take).
fn errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| !line.contains("warning:"))
        .collect()
}

/// Every file under `root` (links not followed) with its bytes, to show nothing changed.
fn files_under(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
        }
    }
    files
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

/// One queue record: serial and thing name, each padded to 128, as `claimfab batch` writes.
fn queue_record(serial: &str, thing_name: &str) -> String {
    format!("{serial:<128} {thing_name:<128}\n")
}

#[test]
fn a_queue_record_naming_a_path_is_refused_and_nothing_leaves_the_batch() {
    let fx = batch(3);
    let queue = fx.out.join("stations/queue");
    let mut text = std::fs::read_to_string(&queue).unwrap();
    let record = queue_record("../../evil", "gg-evil");
    assert_eq!(record.len(), 258, "the record width claimfab reads");
    text.replace_range(..record.len(), &record);
    std::fs::write(&queue, text).unwrap();
    let outside = files_under(fx.work.path());
    let to = fx.work.path().join("image");

    let (code, stdout, stderr) = run(&mut take(&fx.out, "st2", &to));
    assert!(code != 0 && code != 3, "refused: {code} {stderr}");
    assert_eq!(stdout, "");
    let errors = errors(&stderr);
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].contains("damaged at record 0"), "{stderr}");
    assert_eq!(
        files_under(fx.work.path()),
        outside,
        "nothing written anywhere"
    );
    assert!(!fx.work.path().join("evil").exists() && !to.exists());
    assert!(!fx.out.join("stations/st2").exists(), "no pending note");
}

/// Replaces `dir` by a symbolic link to a copy of it outside the batch; returns the copy.
fn link_away(fx: &Fixture, dir: &str) -> PathBuf {
    let away = fx
        .work
        .path()
        .join(format!("away-{}", dir.replace('/', "-")));
    std::fs::rename(fx.out.join(dir), &away).unwrap();
    symlink(&away, fx.out.join(dir)).unwrap();
    away
}

fn link_back(fx: &Fixture, dir: &str, away: &Path) {
    std::fs::remove_file(fx.out.join(dir)).unwrap();
    std::fs::rename(away, fx.out.join(dir)).unwrap();
}

#[test]
fn floor_directories_that_are_links_are_refused_before_anything_goes_through_them() {
    let fx = batch(3);
    let first = fx.work.path().join("first");
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &first));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );

    for dir in ["handout", "stations", "bundles"] {
        let away = link_away(&fx, dir);
        let before = files_under(&away);
        let floor_before = files_under(&fx.out);
        let to = fx.work.path().join(format!("image-{dir}"));
        let (code, stdout, stderr) = run(&mut take(&fx.out, "st2", &to));
        assert_eq!(code, 2, "{dir}: {stderr}");
        assert_eq!(stdout, "");
        let errors = errors(&stderr);
        assert_eq!(errors.len(), 1, "one line: {stderr}");
        assert!(
            errors[0].contains(&format!("{dir} is a symbolic link"))
                && errors[0].contains("must be real directories"),
            "{stderr}"
        );
        assert_eq!(files_under(&away), before, "nothing written through {dir}");
        assert_eq!(
            files_under(&fx.out),
            floor_before,
            "nothing written in the batch"
        );
        assert!(!to.exists(), "nothing delivered");
        link_back(&fx, dir, &away);
    }

    // A station's own directory, too: its pending note and log stay where they are.
    let away = link_away(&fx, "stations/st1");
    let before = files_under(&away);
    let (code, _, stderr) = run(&mut take(&fx.out, "st1", &fx.work.path().join("again")));
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("stations/st1 is a symbolic link"),
        "{stderr}"
    );
    assert_eq!(files_under(&away), before);
    link_back(&fx, "stations/st1", &away);

    // Put back, the floor works as before.
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st2", &fx.work.path().join("ok")));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "{stderr}"
    );
}

#[test]
fn an_empty_marker_left_by_a_crash_blocks_no_take_and_no_close() {
    let fx = batch(3);
    // Station st1 stopped between creating SN000001's marker and writing it (a share
    // without hard links): its pending note names the serial, the marker is empty.
    std::fs::create_dir_all(fx.out.join("stations/st1")).unwrap();
    std::fs::write(fx.out.join("stations/st1/pending"), "SN000001\n").unwrap();
    std::fs::create_dir_all(fx.out.join("handout")).unwrap();
    std::fs::write(fx.out.join("handout/SN000001"), b"").unwrap();

    // Another station passes it over and gets the next bundle.
    let to = fx.work.path().join("image");
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st2", &to));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(fx.out.join("handout/SN000001")).unwrap(),
        b"",
        "left as it was: claimed, owner unknown"
    );

    // What take made has the floor's modes, whatever the umask.
    assert_eq!(mode(&fx.out.join("stations/st2")), 0o770);
    for file in [
        "handout/SN000002",
        "stations/st2/log.csv",
        "stations/st2/pending",
    ] {
        assert_eq!(mode(&fx.out.join(file)), 0o660, "{file}");
    }

    // close reads every marker it meets and does not stop at this one.
    let mut close = fx.endpoint.claimfab();
    close.arg("close").arg(&fx.out).arg("--yes");
    let (code, stdout, stderr) = run(&mut close);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(!stderr.contains("hand-out record"), "{stderr}");
}

#[test]
fn the_station_cut_short_mid_claim_gets_its_bundle_and_nobody_else_does() {
    let fx = batch(3);
    // st1 stopped between creating SN000001's marker and writing it: its pending note (with
    // this host), its record beside the marker, the marker empty.
    let host = claimfab::floor::this_host();
    std::fs::create_dir_all(fx.out.join("stations/st1")).unwrap();
    std::fs::write(
        fx.out.join("stations/st1/pending"),
        format!("SN000001\nhost={host}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(fx.out.join("handout")).unwrap();
    let record = r#"{"station":"st1","serial":"SN000001","at":"2026-11-26T08:00:00Z","token":"00112233445566778899aabbccddeeff"}"#;
    std::fs::write(fx.out.join("handout/.SN000001.st1.claim"), record).unwrap();
    std::fs::write(fx.out.join("handout/SN000001"), b"").unwrap();

    // Another station cannot complete it; st1 can, and gets that bundle back.
    let (code, stdout, _) = run(&mut take(&fx.out, "st2", &fx.work.path().join("st2")));
    assert_eq!((code, stdout.as_str()), (0, "SN000002 gg-SN000002\n"));
    let (_, stdout, stderr) = run(&mut take(&fx.out, "st1", &fx.work.path().join("st1")));
    assert_eq!(stdout, "SN000001 gg-SN000001\n", "{stderr}");
    assert_eq!(
        std::fs::read_to_string(fx.out.join("handout/SN000001")).unwrap(),
        record
    );
    assert!(!fx.out.join("handout/.SN000001.st1.claim").exists());
}
