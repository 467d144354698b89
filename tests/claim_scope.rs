//! End-to-end tests of `batch --claim-scope batch` (one claim certificate shared by a whole
//! batch) against the local endpoint, and of every lifecycle command on such a batch: one
//! registration counted at the endpoint, every bundle holding the same certificate and key
//! (openssl, x509-parser), resume after SIGKILL with the key read back from a bundle, a lost
//! key replaced, and verify, audit, revoke and rotate checked through the AWS API.

mod common;

use std::process::Stdio;

use aws_sdk_iot::types::CertificateStatus;
use common::*;

const SHARED: &[&str] = &["--claim-scope", "batch"];

fn certificate_status(f: &Fixture, id: &str) -> String {
    f.rt.block_on(f.endpoint.all_certificates())[id].0.clone()
}

fn only_certificate_id(dir: &std::path::Path) -> String {
    let rows = read_manifest(dir);
    let ids: std::collections::HashSet<&String> =
        rows.iter().map(|r| &r["certificate_id"]).collect();
    assert_eq!(
        ids.len(),
        1,
        "one certificate in {}: {ids:?}",
        dir.display()
    );
    ids.into_iter().next().unwrap().clone()
}

#[test]
fn a_shared_claim_is_registered_once_and_every_lifecycle_command_handles_it() {
    let f = Fixture::new("");
    let (code, stdout, stderr) = run(f.batch(25).args(SHARED));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("25 ready, 0 failed"), "{stdout}");
    assert_eq!(f.endpoint.stat("CreateCertificateFromCsr", "requests"), 1);
    assert_eq!(f.endpoint.stat("AttachPolicy", "requests"), 1);
    f.rt.block_on(verify_batch_scoped(&f.endpoint, &f.out, &counted(25), true));
    let old_id = only_certificate_id(&f.out);
    assert_eq!(f.rt.block_on(f.endpoint.all_certificates()).len(), 1);

    // A re-run is a no-op; the scope is part of the batch's identity.
    let (code, stdout, _) = run(f.batch(25).args(SHARED));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(f.endpoint.stat("CreateCertificateFromCsr", "requests"), 1);
    let (code, _, stderr) = run(&mut f.batch(25));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("claim scope was batch"), "{stderr}");

    let claimfab = |args: &[&str], dirs: &[&std::path::Path]| {
        let mut cmd = f.endpoint.claimfab();
        cmd.args(args).args(dirs);
        run(&mut cmd)
    };
    let (code, stdout, _) = claimfab(&["verify"], &[&f.out]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("25 checked, 0 with findings"), "{stdout}");
    let (code, stdout, _) = claimfab(&["audit"], &[&f.out]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("no drift"), "{stdout}");

    // Rotation keeps the scope: one new certificate, every report row names both.
    let new = f.work.path().join("rotated");
    let (code, stdout, stderr) = run(f
        .endpoint
        .claimfab()
        .arg("rotate")
        .arg(&f.out)
        .arg("--out")
        .arg(&new));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(f.endpoint.stat("CreateCertificateFromCsr", "requests"), 2);
    let new_id = only_certificate_id(&new);
    assert_ne!(new_id, old_id);
    let mut report = csv::Reader::from_path(new.join("rotation.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = report.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 25);
    for row in &rows {
        assert_eq!((&row[2], &row[3]), (old_id.as_str(), new_id.as_str()));
    }

    // One device of a shared batch cannot be revoked alone.
    let (code, _, stderr) = claimfab(&["revoke", "--devices", "SN000003"], &[&new]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--all") && stderr.contains("SN000003"),
        "{stderr}"
    );
    assert_eq!(certificate_status(&f, &new_id), "ACTIVE");

    // Revoking the old batch revokes its one certificate and every row follows.
    let (code, stdout, _) = claimfab(&["revoke", "--all", "--detach"], &[&f.out]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("all 25 devices"), "{stdout}");
    assert_eq!(f.endpoint.stat("UpdateCertificate", "requests"), 1);
    assert_eq!(certificate_status(&f, &old_id), "REVOKED");
    assert_eq!(certificate_status(&f, &new_id), "ACTIVE");
    assert!(read_manifest(&f.out)
        .iter()
        .all(|r| r["status"] == "revoked"));
    let targets = f.rt.block_on(f.endpoint.policy_targets(CLAIM_POLICY));
    assert!(
        !targets.iter().any(|arn| arn.ends_with(&old_id)),
        "{targets:?}"
    );
    let (code, stdout, _) = claimfab(&["audit"], &[&f.out, &new]);
    assert_eq!(code, 0, "revoked as the manifest says: {stdout}");
    // A batch re-run on the revoked batch makes nothing.
    let (code, stdout, _) = run(f.batch(25).args(SHARED));
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(f.endpoint.stat("CreateCertificateFromCsr", "requests"), 2);

    // Revoked behind the manifest's back: one finding for the whole batch.
    f.rt.block_on(async {
        f.endpoint
            .client()
            .await
            .update_certificate()
            .certificate_id(&new_id)
            .new_status(CertificateStatus::Revoked)
            .send()
            .await
            .unwrap();
    });
    let (code, stdout, _) = claimfab(&["audit", "--format", "json"], &[&new]);
    assert_eq!(code, 1, "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{stdout}");
    assert_eq!(findings[0]["certificate_id"], new_id.as_str());
    assert_eq!(
        findings[0]["problem"],
        "shared by 25 devices: manifest says ready but AWS says REVOKED"
    );
}

#[test]
fn a_shared_batch_killed_while_packaging_resumes_with_the_same_certificate() {
    let f = Fixture::new("");
    let count = 300;
    let mut child = f
        .batch(count)
        .args(SHARED)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    f.wait_for_events("shared_packaged", 5);
    child.kill().unwrap();
    child.wait().unwrap();
    let written = f.journal_events("shared_packaged");
    assert!(written < count, "killed before the end ({written} bundles)");

    let (code, stdout, stderr) = run(f.batch(count).args(SHARED));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stdout.contains("CreateCertificateFromCsr"),
        "the key came back from a bundle: {stdout}"
    );
    assert_eq!(f.endpoint.stat("CreateCertificateFromCsr", "requests"), 1);
    f.rt.block_on(verify_batch_scoped(
        &f.endpoint,
        &f.out,
        &counted(count),
        true,
    ));
}

#[test]
fn a_shared_certificate_whose_key_was_lost_is_retired_and_replaced() {
    let f = Fixture::new("");
    assert_eq!(run(f.batch(6).args(SHARED)).0, 0);
    let lost_id = only_certificate_id(&f.out);
    // As if the run died after AWS issued the certificate and before any bundle was written:
    // no bundle, no packaging in the journal.
    std::fs::remove_dir_all(f.out.join("bundles")).unwrap();
    let journal = std::fs::read_to_string(f.out.join("journal.jsonl")).unwrap();
    let kept: String = journal
        .lines()
        .filter(|l| !l.contains("\"shared_packaged\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(f.out.join("journal.jsonl"), kept).unwrap();

    let (code, stdout, stderr) = run(f.batch(6).args(SHARED));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("1 certificate(s) set INACTIVE"), "{stdout}");
    assert_eq!(certificate_status(&f, &lost_id), "INACTIVE");
    assert_ne!(only_certificate_id(&f.out), lost_id);
    f.rt.block_on(verify_batch_scoped(&f.endpoint, &f.out, &counted(6), true));
}
