//! End-to-end tests of `claimfab rotate` against the local endpoint: a complete new batch for
//! the same devices, a report naming both certificates per device, and old certificates
//! retired only on confirmation or after the window.

mod common;

use common::*;

fn report(dir: &std::path::Path) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(dir.join("rotation.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            headers
                .iter()
                .map(String::from)
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

#[test]
fn rotate_makes_a_complete_new_batch_and_retires_old_certificates_only_when_confirmed() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(10)).0, 0);
    let new = f.work.path().join("rotated");
    let rotate = |extra: &[&str]| {
        run(f
            .endpoint
            .claimfab()
            .arg("rotate")
            .arg(&f.out)
            .arg("--out")
            .arg(&new)
            .arg("--station")
            .arg(&f.station)
            .args(extra))
    };

    let (code, stdout, stderr) = rotate(&[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("10 ready, 0 failed"), "{stdout}");
    assert!(stdout.contains("still active"), "{stdout}");
    let rows = report(&new);
    assert_eq!(rows.len(), 10);
    let old_manifest = read_manifest(&f.out);
    let new_manifest = read_manifest(&new);
    for ((row, old), new) in rows.iter().zip(&old_manifest).zip(&new_manifest) {
        assert_eq!(row["old_certificate_id"], old["certificate_id"]);
        assert_eq!(row["new_certificate_id"], new["certificate_id"]);
        assert_ne!(row["old_certificate_id"], row["new_certificate_id"]);
        assert_eq!(row["old_status"], "active");
        assert_eq!(row["new_status"], "ready");
    }
    let all = f.rt.block_on(f.endpoint.all_certificates());
    assert!(
        old_manifest
            .iter()
            .all(|r| all[&r["certificate_id"]].0 == "ACTIVE"),
        "old ones untouched"
    );

    let (code, stdout, _) = rotate(&["--retire-old"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        !stdout.contains("CreateCertificateFromCsr"),
        "the new batch is not made again: {stdout}"
    );
    assert!(report(&new).iter().all(|r| r["old_status"] == "inactive"));
    assert!(read_manifest(&f.out)
        .iter()
        .all(|r| r["status"] == "inactive"));
    // Now only the new batch's certificates are active: every invariant holds for it.
    f.rt.block_on(verify_batch(&f.endpoint, &new, &counted(10)));
}

#[test]
fn a_retire_after_window_retires_on_the_run_after_it() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(3)).0, 0);
    let new = f.work.path().join("rotated");
    let rotate = || {
        run(f
            .endpoint
            .claimfab()
            .args(["rotate", "--retire-after", "2s", "--out"])
            .arg(&new)
            .arg(&f.out))
    };
    let (code, stdout, _) = rotate();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("stay active until"), "{stdout}");
    assert!(read_manifest(&f.out).iter().all(|r| r["status"] == "ready"));
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (code, stdout, _) = rotate();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        read_manifest(&f.out)
            .iter()
            .all(|r| r["status"] == "inactive"),
        "{stdout}"
    );
}
