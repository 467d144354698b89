//! End-to-end tests against a local endpoint that misbehaves the way AWS IoT can: throttling
//! (429), server faults before execution (500), responses lost after execution (500), and an
//! AttachPolicy that keeps failing. Every batch must still end with every invariant held.

mod common;

use common::*;

#[test]
fn a_throttling_endpoint_loses_no_device() {
    // claimfab is told the quota is 40/s but the endpoint allows 20/s: every excess request
    // is answered 429 and must be retried, not lost.
    let f = Fixture::with_faults(
        "[limits]\ncreate_certificate_from_csr_per_second = 40\nattach_policy_per_second = 40\nconcurrency = 16\nreconcile_after_seconds = 1\n",
        &["--throttle", "CreateCertificateFromCsr=20", "--throttle", "AttachPolicy=20"],
    );
    let (code, stdout, stderr) = run(&mut f.batch(120));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("120 ready, 0 failed"), "{stdout}");
    assert!(
        f.endpoint.stat("CreateCertificateFromCsr", "throttled") > 0,
        "throttling was exercised"
    );
    assert_eq!(
        f.endpoint.stat("CreateCertificateFromCsr", "executed"),
        120,
        "one certificate per device"
    );
    f.verify(120);
}

#[test]
fn failed_and_lost_create_responses_are_reconciled_without_duplicates() {
    let f = Fixture::with_faults(
        "",
        &[
            "--fail",
            "CreateCertificateFromCsr=0.1",
            "--lose-response",
            "CreateCertificateFromCsr=0.2",
            "--seed",
            "7",
        ],
    );
    let (code, stdout, stderr) = run(&mut f.batch(100));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        f.endpoint.stat("CreateCertificateFromCsr", "lost_response") > 0,
        "lost responses were exercised"
    );
    assert!(
        f.endpoint.stat("CreateCertificateFromCsr", "failed") > 0,
        "failures were exercised"
    );
    // A lost response's certificate is found and adopted, never made twice.
    let certificates = f.rt.block_on(f.endpoint.all_certificates());
    assert_eq!(
        certificates.len(),
        100,
        "exactly one certificate per device exists"
    );
    f.verify(100);
}

#[test]
fn attach_failures_keep_bundles_and_a_rerun_attaches_without_new_certificates() {
    let f = Fixture::with_faults(
        "[limits]\ncreate_certificate_from_csr_per_second = 200\nattach_policy_per_second = 200\nmax_attempts = 2\nreconcile_after_seconds = 1\n",
        &["--fail", "AttachPolicy=1.0"],
    );
    let (code, stdout, _) = run(&mut f.batch(20));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("0 ready, 20 failed"), "{stdout}");
    assert!(stdout.contains("AttachPolicy"), "{stdout}");
    let rows = read_manifest(&f.out);
    assert!(
        rows.iter()
            .all(|r| r["status"] == "failed" && !r["bundle"].is_empty()),
        "bundles kept"
    );

    // Still failing: the re-run retries the attach and must not make new certificates.
    let (code, stdout, _) = run(&mut f.batch(20));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        !stdout.contains("CreateCertificateFromCsr"),
        "no re-registration: {stdout}"
    );
    assert_eq!(f.rt.block_on(f.endpoint.all_certificates()).len(), 20);

    f.endpoint.clear_faults();
    let (code, stdout, _) = run(&mut f.batch(20));
    assert_eq!(code, 0, "{stdout}");
    assert!(!stdout.contains("CreateCertificateFromCsr"), "{stdout}");
    f.verify(20);
}
