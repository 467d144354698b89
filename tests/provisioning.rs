//! Bundles proven on devices: `claimfab setup` and `claimfab batch` against the local
//! endpoint with its data plane (mosquitto over mTLS with AWS IoT policies enforced, and a
//! fleet-provisioning service speaking AWS's device provisioning MQTT API), then a device on
//! AWS's own IoT device SDK (scripts/local-aws/device.py) provisions with each bundle exactly
//! as the Java nucleus or nucleus lite would. Results are checked through the AWS API and
//! `claimfab audit`; failures must be AWS's own rejections, and batch preflight must refuse
//! what would fail on the device before anything is created.

mod common;

use std::collections::BTreeSet;

use common::line::*;
use common::*;
use serde_json::{json, Value};

/// Every bundle of a batch provisions, for one nucleus and claim scope; audit then counts
/// every device provisioned.
fn every_bundle_provisions(nucleus: &str, scope: &str) {
    let line = Line::new(&format!("[greengrass]\nnucleus = \"{nucleus}\"\n"));
    let count = 6;
    let (rows, bundles) = line.batch("batch", count, scope);
    let reports = line.endpoint.provision(nucleus, &bundles);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows, &reports));
    if scope == "batch" {
        let claims: BTreeSet<_> = rows.iter().map(|r| &r["certificate_id"]).collect();
        assert_eq!(claims.len(), 1, "one shared claim");
    }
    let (code, audit) = line.audit("batch");
    assert_eq!(code, 0, "{audit}");
    assert!(
        audit.contains(&format!("{count} devices, {count} provisioned")),
        "{audit}"
    );
}

#[test]
fn java_device_scope_bundles_provision() {
    every_bundle_provisions("java", "device");
}

#[test]
fn java_batch_scope_bundles_provision() {
    every_bundle_provisions("java", "batch");
}

#[test]
fn lite_device_scope_bundles_provision() {
    every_bundle_provisions("lite", "device");
}

#[test]
fn lite_batch_scope_bundles_provision() {
    every_bundle_provisions("lite", "batch");
}

/// The guide's claim policy: only the CreateKeysAndCertificate topics, none for CSRs.
fn guide_claim_policy() -> Value {
    let topics = |kind: &str| {
        json!([
            format!("arn:aws:iot:{REGION}:123456789012:{kind}/$aws/certificates/create/*"),
            format!("arn:aws:iot:{REGION}:123456789012:{kind}/$aws/provisioning-templates/{TEMPLATE_NAME}/provision/*")
        ])
    };
    json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
        {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": topics("topic")},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": topics("topicfilter")}
    ]})
}

fn certificates_in(line: &Line) -> usize {
    line.rt.block_on(line.endpoint.all_certificates()).len()
}

/// A claim policy without the create-from-csr topics: a lite device is dropped by AWS IoT
/// when it asks for its certificate, and preflight refuses a new lite batch beforehand.
#[test]
fn claim_policy_without_csr_topics_fails_lite_devices_and_preflight() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    lite_is_refused_with_claim_policy(&line, &guide_claim_policy(), &[CLAIM, "create-from-csr"]);
}

/// With `policy` as the claim policy, a lite bundle of `line` (made before) is dropped when
/// it asks for its certificate, and preflight refuses a new lite batch in one line holding
/// each of `expected`, creating nothing.
fn lite_is_refused_with_claim_policy(line: &Line, policy: &Value, expected: &[&str]) {
    let bundles = &line.batch("batch", 1, "device").1;
    line.rt
        .block_on(replace_policy(&line.endpoint, CLAIM, policy));
    let report = &line.endpoint.provision("lite", bundles)[0];
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "create", "{report}");

    let before = certificates_in(line);
    let (code, _, stderr) = run(&mut line.batch_command("second", 2, "device"));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "{text}: {stderr}");
    }
    assert!(!line.work.path().join("second").exists());
    assert_eq!(certificates_in(line), before, "nothing created");
}

/// A claim policy tightened by hand to the exact answer topics (`.../accepted` and
/// `.../rejected`, the Java plugin's subscriptions): nucleus lite subscribes to
/// `<topic>/+`, so a lite device is dropped when it subscribes, and preflight refuses a new
/// lite batch beforehand.
#[test]
fn claim_policy_without_lites_subscriptions_fails_lite_devices_and_preflight() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let arn = |kind: &str, topic: &str| format!("arn:aws:iot:{REGION}:123456789012:{kind}/{topic}");
    let bases = [
        "$aws/certificates/create-from-csr/json".to_string(),
        format!("$aws/provisioning-templates/{TEMPLATE_NAME}/provision/json"),
    ];
    let answers = |kind: &str| -> Vec<String> {
        bases
            .iter()
            .flat_map(|b| ["accepted", "rejected"].map(|r| arn(kind, &format!("{b}/{r}"))))
            .collect()
    };
    let requests: Vec<String> = bases.iter().map(|b| arn("topic", b)).collect();
    let exact = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"},
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": requests},
        {"Effect": "Allow", "Action": "iot:Receive", "Resource": answers("topic")},
        {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": answers("topicfilter")}
    ]});
    lite_is_refused_with_claim_policy(&line, &exact, &["iot:Subscribe", "create-from-csr/json/+"]);
}

/// A template that needs a parameter the bundles do not send: RegisterThing is rejected with
/// AWS's error, and preflight refuses a new batch beforehand.
#[test]
fn template_parameter_not_sent_fails_devices_and_preflight() {
    let line = Line::new("");
    let (_, bundles) = line.batch("batch", 1, "device");
    line.rt.block_on(async {
        let iot = line.endpoint.client().await;
        let current = iot
            .describe_provisioning_template()
            .template_name(TEMPLATE_NAME)
            .send()
            .await
            .unwrap();
        let mut body: Value = serde_json::from_str(current.template_body().unwrap()).unwrap();
        body["Parameters"]["SerialNumber"] = json!({"Type": "String"});
        body["Resources"]["MyThing"]["Properties"]["AttributePayload"] =
            json!({"serial": {"Ref": "SerialNumber"}});
        iot.create_provisioning_template_version()
            .template_name(TEMPLATE_NAME)
            .template_body(body.to_string())
            .set_as_default(true)
            .send()
            .await
            .unwrap();
    });
    let report = &line.endpoint.provision("java", &bundles)[0];
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "register", "{report}");
    assert_eq!(report["status_code"], 400, "{report}");
    assert!(
        report["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("SerialNumber"),
        "{report}"
    );

    let before = certificates_in(&line);
    let (code, _, stderr) = run(&mut line.batch_command("second", 2, "device"));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("\"SerialNumber\"") && stderr.contains(TEMPLATE_NAME),
        "{stderr}"
    );
    assert!(!line.work.path().join("second").exists());
    assert_eq!(certificates_in(&line), before, "nothing created");
}

/// A revoked claim and a claim whose policy was detached cannot connect; the others of the
/// batch still provision.
#[test]
fn revoked_or_detached_claims_are_refused() {
    let line = Line::new("");
    let (rows, bundles) = line.batch("batch", 3, "device");
    let (code, stdout, stderr) = run(line
        .endpoint
        .claimfab()
        .args(["revoke", "--devices", &rows[0]["serial"]])
        .arg(line.work.path().join("batch")));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    line.rt.block_on(async {
        line.endpoint
            .client()
            .await
            .detach_policy()
            .policy_name(CLAIM)
            .target(&rows[1]["certificate_arn"])
            .send()
            .await
            .unwrap();
    });
    let reports = line.endpoint.provision("java", &bundles);
    for report in &reports[..2] {
        assert_eq!(report["ok"], false, "{report}");
        assert_eq!(report["stage"], "connect", "{report}");
    }
    assert_eq!(reports[2]["ok"], true, "{}", reports[2]);
}

/// The least-privilege core policy is made per device by the template; with 128-character
/// thing names it would exceed AWS IoT's 2048-character limit, so preflight refuses.
#[test]
fn least_privilege_policy_too_long_for_the_thing_names_is_refused() {
    // Thing names gg-xxx...x00001: 128 characters, the longest AWS IoT allows.
    let long_prefix = "x".repeat(120);
    let line = Line::new("[setup]\ncore_policy_variant = \"least-privilege\"\n");
    // Short names fit and provision.
    let (rows, bundles) = line.batch("short", 1, "device");
    let report = &line.endpoint.provision("java", &bundles)[0];
    assert_eq!(report["ok"], true, "{report} {:?}", rows[0]);

    let before = certificates_in(&line);
    let (code, _, stderr) = run(line
        .endpoint
        .claimfab()
        .args(["batch", "--count", "2", "--first-serial"])
        .arg(format!("{long_prefix}00001"))
        .arg("--out")
        .arg(line.work.path().join("long"))
        .arg("--station")
        .arg(&line.station));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("2048"), "{stderr}");
    assert!(stderr.contains("(128 characters)"), "{stderr}");
    assert!(!line.work.path().join("long").exists());
    assert_eq!(certificates_in(&line), before, "nothing created");
}

#[test]
fn retire_provisioned_retires_exactly_the_claims_that_did_their_job() {
    let line = Line::new("");
    let (rows, bundles) = line.batch("batch", 6, "device");
    let reports = line.endpoint.provision("java", &bundles[..3]);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows[..3], &reports));
    let retire = || {
        run(line
            .endpoint
            .claimfab()
            .arg("retire-provisioned")
            .arg(line.work.path().join("batch")))
    };
    let (code, stdout, stderr) = retire();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("retiring the claims of 3 provisioned device(s)"),
        "{stdout}"
    );
    for (i, row) in rows.iter().enumerate() {
        let (status, attached) = line.rt.block_on(claim_state(&line.endpoint, row));
        if i < 3 {
            assert_eq!(
                (status.as_str(), attached),
                ("REVOKED", false),
                "{}",
                row["serial"]
            );
        } else {
            assert_eq!(
                (status.as_str(), attached),
                ("ACTIVE", true),
                "{}",
                row["serial"]
            );
        }
    }
    let manifest = read_manifest(&line.work.path().join("batch"));
    let statuses: Vec<&str> = manifest.iter().map(|r| r["status"].as_str()).collect();
    assert_eq!(
        statuses,
        ["revoked", "revoked", "revoked", "ready", "ready", "ready"]
    );
    // A nightly re-run changes nothing more.
    let (code, stdout, _) = retire();
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("no claim of a provisioned device to retire"),
        "{stdout}"
    );
    // The devices' own certificates are untouched: they still provisioned with them.
    let (code, audit) = line.audit("batch");
    assert!(
        audit.contains("6 devices, 3 provisioned"),
        "{code}: {audit}"
    );
}
