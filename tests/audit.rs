//! End-to-end tests of `claimfab audit` against the local endpoint: a clean batch, then a
//! certificate revoked behind the manifest's back, one attached to the claim policy out of
//! band, and a device that has provisioned.

mod common;

use common::*;

#[test]
fn audit_finds_out_of_band_changes_and_reports_activation() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(5)).0, 0);
    let audit = |format: &str| {
        run(f
            .endpoint
            .claimfab()
            .args(["audit", "--format", format])
            .arg(&f.out))
    };

    let (code, stdout, stderr) = audit("table");
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("5 devices, 0 provisioned"), "{stdout}");
    assert!(stdout.contains("no drift"), "{stdout}");

    let rows = read_manifest(&f.out);
    f.rt.block_on(async {
        let iot = f.endpoint.client().await;
        // Security revokes one certificate directly in AWS.
        iot.update_certificate()
            .certificate_id(&rows[1]["certificate_id"])
            .new_status(aws_sdk_iot::types::CertificateStatus::Revoked)
            .send()
            .await
            .unwrap();
        // Someone attaches the claim policy to a certificate made elsewhere.
        let stray = iot
            .create_keys_and_certificate()
            .set_as_active(true)
            .send()
            .await
            .unwrap();
        iot.attach_policy()
            .policy_name(CLAIM_POLICY)
            .target(stray.certificate_arn().unwrap())
            .send()
            .await
            .unwrap();
        // The first device has provisioned: its thing exists.
        iot.create_thing()
            .thing_name(&rows[0]["thing_name"])
            .send()
            .await
            .unwrap();
    });

    let (code, stdout, _) = audit("table");
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("5 devices, 1 provisioned, 4 not yet"),
        "{stdout}"
    );
    assert!(
        stdout.contains("manifest says ready but AWS says REVOKED"),
        "{stdout}"
    );
    assert!(stdout.contains("but in no given manifest"), "{stdout}");

    let (code, stdout, _) = audit("json");
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{stdout}");
    assert_eq!(findings[0]["serial"], rows[1]["serial"].as_str());
    assert_eq!(report["activation"][0]["provisioned"], 1);

    let (code, stdout, _) = audit("csv");
    assert_eq!(code, 1);
    let mut reader = csv::Reader::from_reader(stdout.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["batch", "serial", "certificate_id", "problem"]
    );
    assert_eq!(reader.records().count(), 2);
}
