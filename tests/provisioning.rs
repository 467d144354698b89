//! Bundles proven on devices: `claimfab setup` and `claimfab batch` against the local
//! endpoint with its data plane (mosquitto over mTLS with AWS IoT policies enforced, and a
//! fleet-provisioning service speaking AWS's device provisioning MQTT API), then a device on
//! AWS's own IoT device SDK (scripts/local-aws/device.py) provisions with each bundle exactly
//! as the Java nucleus or nucleus lite would. Results are checked through the AWS API and
//! `claimfab audit`; failures must be AWS's own rejections, and batch preflight must refuse
//! what would fail on the device before anything is created.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
    for report in &reports {
        assert_packets_as_the_nucleus_sends(&line.endpoint, nucleus, report);
    }
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

/// What the broker itself logged of a device's claim connection: its two requests, and the
/// SUBSCRIBE packets its nucleus sends: four for the Java plugin (`accepted` and `rejected` of
/// each call), none for nucleus lite, which reads the answers AWS IoT returns to the
/// connection that asked without subscribing.
fn assert_packets_as_the_nucleus_sends(endpoint: &Endpoint, nucleus: &str, report: &Value) {
    let client = report["client_id"]
        .as_str()
        .expect("client_id in the report");
    assert_eq!(
        endpoint.packets_received("PUBLISH", client),
        2,
        "{client}: one certificate request and one RegisterThing"
    );
    let subscribes = if nucleus == "lite" { 0 } else { 4 };
    assert_eq!(
        endpoint.packets_received("SUBSCRIBE", client),
        subscribes,
        "{nucleus} device {client}"
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

/// The device's report says AWS IoT closed its connection (what it does on a denied publish
/// or subscribe).
fn assert_dropped(report: &Value) {
    let error = report["error"].as_str().unwrap_or_default();
    assert!(error.contains("closed the connection"), "{report}");
}

/// A claim policy without the create-from-csr topics: a lite device is dropped by AWS IoT
/// when it asks for its certificate, and preflight refuses a new lite batch beforehand.
#[test]
fn claim_policy_without_csr_topics_fails_lite_devices_and_preflight() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let report = refused_with_claim_policy(
        &line,
        "lite",
        &guide_claim_policy(),
        &[CLAIM, "create-from-csr"],
    );
    assert_dropped(&report);
}

/// With `policy` as the claim policy, a bundle of `line` (made before) fails when it asks for
/// its certificate, and preflight refuses a new batch in one line holding each of `expected`,
/// creating nothing. Returns the device's report.
fn refused_with_claim_policy(
    line: &Line,
    nucleus: &str,
    policy: &Value,
    expected: &[&str],
) -> Value {
    let bundles = &line.batch("batch", 1, "device").1;
    line.rt
        .block_on(replace_policy(&line.endpoint, CLAIM, policy));
    let report = line.endpoint.provision(nucleus, bundles).remove(0);
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
    report
}

/// A claim policy tightened by hand to the exact topics: Publish on the requests, Receive on
/// their `accepted` and `rejected` answers, and `Subscribe` on `subscribe` of those answers.
fn exact_claim_policy(receive: &[&str], subscribe: &[&str]) -> Value {
    let arn = |kind: &str, topic: &str| format!("arn:aws:iot:{REGION}:123456789012:{kind}/{topic}");
    let bases = [
        "$aws/certificates/create/json".to_string(),
        "$aws/certificates/create-from-csr/json".to_string(),
        format!("$aws/provisioning-templates/{TEMPLATE_NAME}/provision/json"),
    ];
    let answers = |kind: &str, which: &[&str]| -> Vec<String> {
        bases
            .iter()
            .flat_map(|b| which.iter().map(move |r| arn(kind, &format!("{b}/{r}"))))
            .collect()
    };
    let requests: Vec<String> = bases.iter().map(|b| arn("topic", b)).collect();
    let mut statements = vec![
        json!({"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}),
        json!({"Effect": "Allow", "Action": "iot:Publish", "Resource": requests}),
    ];
    if !receive.is_empty() {
        statements.push(json!({"Effect": "Allow", "Action": "iot:Receive", "Resource": answers("topic", receive)}));
    }
    if !subscribe.is_empty() {
        statements.push(json!({"Effect": "Allow", "Action": "iot:Subscribe", "Resource": answers("topicfilter", subscribe)}));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// A claim policy without any iot:Subscribe: nucleus lite (2.3 and later) never subscribes,
/// AWS IoT answers the connection that asked, so lite bundles provision and a lite batch
/// passes preflight; the Java plugin subscribes to its answers, so a Java device is dropped
/// when it does, and preflight refuses a Java batch beforehand.
#[test]
fn claim_policy_without_subscribe_serves_lite_and_refuses_java() {
    let policy = exact_claim_policy(&["accepted", "rejected"], &[]);

    let lite = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    lite.rt
        .block_on(replace_policy(&lite.endpoint, CLAIM, &policy));
    let (rows, bundles) = lite.batch("batch", 2, "device");
    let reports = lite.endpoint.provision("lite", &bundles);
    lite.rt
        .block_on(assert_provisioned(&lite.endpoint, &rows, &reports));

    let java = Line::new("[greengrass]\nnucleus = \"java\"\n");
    let report = refused_with_claim_policy(
        &java,
        "java",
        &policy,
        &["iot:Subscribe", "create/json/accepted"],
    );
    assert_dropped(&report);
}

/// A claim policy without iot:Receive on the answers: AWS IoT checks iot:Receive on every
/// message it delivers, the provisioning API's answers too, so a lite device (subscribed to
/// nothing) never gets its certificate, and preflight refuses a lite batch beforehand.
#[test]
fn claim_policy_without_receive_on_the_answers_fails_lite_devices_and_preflight() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let policy = exact_claim_policy(&["rejected"], &[]);
    let report = refused_with_claim_policy(
        &line,
        "lite",
        &policy,
        &["iot:Receive", "create-from-csr/json/accepted"],
    );
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains("no CreateCertificateFromCsr response"),
        "{report}"
    );
    assert_eq!(
        line.endpoint
            .packets_received("SUBSCRIBE", report["client_id"].as_str().unwrap()),
        0
    );
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

/// The claim policy as `setup` made it, with one more statement.
fn claim_policy_with(line: &Line, statement: Value) -> Value {
    let client = line.rt.block_on(line.endpoint.client());
    let current = line
        .rt
        .block_on(client.get_policy().policy_name(CLAIM).send())
        .unwrap();
    let mut document: Value = serde_json::from_str(current.policy_document().unwrap()).unwrap();
    document["Statement"]
        .as_array_mut()
        .unwrap()
        .push(statement);
    document
}

/// A Deny naming a policy variable the local data plane cannot resolve (the issuer of the
/// certificate, which AWS IoT resolves, and for which `*` matches every certificate AWS
/// issues) is not skipped: it denies, as AWS would. The device is dropped when it asks for
/// its certificate.
#[test]
fn a_deny_the_data_plane_cannot_evaluate_still_denies() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let (_, bundles) = line.batch("batch", 1, "device");
    let deny = json!({"Effect": "Deny", "Action": "iot:Publish",
        "Resource": format!("arn:aws:iot:{REGION}:123456789012:topic/$aws/certificates/*"),
        "Condition": {"StringLike": {"iot:Certificate.Issuer.CommonName": "*"}}});
    let policy = claim_policy_with(&line, deny);
    line.rt
        .block_on(replace_policy(&line.endpoint, CLAIM, &policy));
    let report = line.endpoint.provision("lite", &bundles).remove(0);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "create", "{report}");
    assert_dropped(&report);
}

/// A provisioning template using an intrinsic function AWS's guide does not document for
/// provisioning templates (`Fn::If`, CloudFormation's) is refused when it is made, with AWS's
/// error for a bad request naming the function.
#[test]
fn a_template_with_an_undocumented_intrinsic_is_refused() {
    let line = Line::new("");
    let body = json!({
        "Parameters": {"ThingName": {"Type": "String"}},
        "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {
            "ThingName": {"Fn::If": ["IsProd", {"Ref": "ThingName"}, "test"]}}}}
    });
    let client = line.rt.block_on(line.endpoint.client());
    let error = line
        .rt
        .block_on(
            client
                .create_provisioning_template()
                .template_name("WithIf")
                .template_body(body.to_string())
                .provisioning_role_arn("arn:aws:iam::123456789012:role/GreengrassProvisioningRole")
                .enabled(true)
                .send(),
        )
        .unwrap_err()
        .into_service_error();
    assert!(error.is_invalid_request_exception(), "{error:?}");
    assert!(format!("{error:?}").contains("Fn::If"), "{error:?}");
}

/// An ownership token is spent only by the connection that obtained it. Taken from one
/// device's connection (leaked through a log or a memory dump), it is refused with AWS's
/// error on another claim's connection and on a new connection of the same claim, even
/// under the same client id; the certificate it names stays inactive and on no thing.
#[test]
fn an_ownership_token_works_only_on_the_connection_that_obtained_it() {
    let line = Line::new("");
    let (rows, bundles) = line.batch("batch", 2, "device");
    let thing: &str = &rows[0]["thing_name"];
    let leaked = line.work.path().join("leaked");
    let client_id = "device-0001";
    let attempt =
        |bundle: &PathBuf, stop_after_create: bool, token_from: Option<&Path>, save: &Path| {
            line.endpoint.attack(&Attempt {
                nucleus: "java",
                bundle,
                as_cert: None,
                client_id: Some(client_id),
                common_name: thing,
                params: &[("ThingName", thing)],
                save,
                stop_after_create,
                token_from,
            })
        };
    let report = attempt(&bundles[0], true, None, &leaked);
    assert_eq!(report["ok"], true, "{report}");
    let certificate_id = std::fs::read_to_string(leaked.join("certificate_id.txt")).unwrap();
    let certificate_id = certificate_id.trim();

    for (who, bundle) in [
        ("another claim", &bundles[1]),
        ("the same claim", &bundles[0]),
    ] {
        let report = attempt(
            bundle,
            false,
            Some(&leaked),
            &line.work.path().join("unused"),
        );
        assert_eq!(report["ok"], false, "{who}: {report}");
        assert_eq!(report["stage"], "register", "{who}: {report}");
        assert_eq!(report["status_code"], 400, "{who}: {report}");
        assert_eq!(
            report["error_code"], "InvalidCertificateOwnershipToken",
            "{who}: {report}"
        );
    }
    let client = line.rt.block_on(line.endpoint.client());
    let described = line
        .rt
        .block_on(
            client
                .describe_certificate()
                .certificate_id(certificate_id)
                .send(),
        )
        .unwrap();
    let description = described.certificate_description().unwrap();
    assert_eq!(
        description.status().unwrap().as_str(),
        "INACTIVE",
        "never registered"
    );
    let things = line
        .rt
        .block_on(
            client
                .list_principal_things()
                .principal(description.certificate_arn().unwrap())
                .send(),
        )
        .unwrap();
    assert!(things.things().is_empty(), "{things:?}");
    let thing_made = line
        .rt
        .block_on(client.describe_thing().thing_name(thing).send());
    assert!(thing_made.is_err(), "no thing registered: {thing_made:?}");
}

/// `scripts/local-aws/eavesdropper.py` holding the claim of `bundle`: connected and subscribed
/// to every provisioning answer topic once started, listening until stopped.
struct Listener {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Listener {
    fn start(line: &Line, bundle: &Path) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        let mut child = Command::new(repo().join(".venv/bin/python"))
            .arg(repo().join("scripts/local-aws/eavesdropper.py"))
            .args(["--nucleus", "lite", "--bundle"])
            .arg(bundle)
            .arg("--connect-to")
            .arg(line.endpoint.data_plane_address())
            .arg("--root-ca")
            .arg(&line.endpoint.ca_cert)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run eavesdropper.py");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert_eq!(first.trim(), "listening", "the listener is subscribed");
        Self { child, stdout }
    }

    /// Stops listening; its report.
    fn stop(mut self) -> Value {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        self.child.wait().unwrap();
        serde_json::from_str(rest.lines().last().unwrap_or_default())
            .unwrap_or_else(|_| panic!("no report from eavesdropper.py: {rest}"))
    }
}

/// With a batch-scope claim every board holds the same certificate, so a claim taken from
/// one board lets its holder subscribe to exactly the topics the others' answers come on.
/// AWS IoT returns an answer only on the connection that asked: a listener subscribed to
/// every provisioning answer topic hears nothing while the other boards provision (their
/// certificates and ownership tokens), and does hear the answer to its own request.
#[test]
fn no_answer_reaches_another_connection_than_the_one_that_asked() {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let (rows, bundles) = line.batch("batch", 4, "batch");
    let listener = Listener::start(&line, &bundles[0]);

    let reports = line.endpoint.provision("lite", &bundles[1..]);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows[1..], &reports));

    let report = listener.stop();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(
        report["foreign"],
        json!([]),
        "heard others' answers: {report}"
    );
    assert_eq!(
        report["own_answer"], "$aws/certificates/create-from-csr/json/accepted",
        "{report}"
    );
}

/// A listener connected with a batch claim while `change` is made to the account (given the
/// line and the batch's one row); the line and the listener's report, 3 s later.
fn listen_while(change: impl FnOnce(&Line, &Row)) -> (Line, Value) {
    let line = Line::new("[greengrass]\nnucleus = \"lite\"\n");
    let (rows, bundles) = line.batch("batch", 1, "batch");
    let listener = Listener::start(&line, &bundles[0]);
    change(&line, &rows[0]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let report = listener.stop();
    (line, report)
}

/// A claim made INACTIVE while a connection uses it: AWS IoT "disconnects all devices that
/// used that certificate to connect"; the data plane closes the connection (the broker logs
/// it) without waiting for it to do anything.
#[test]
fn a_connection_whose_claim_is_made_inactive_is_closed() {
    let (line, report) = listen_while(|line, row| {
        line.rt
            .block_on(async {
                let client = line.endpoint.client().await;
                client
                    .update_certificate()
                    .certificate_id(&row["certificate_id"])
                    .new_status(aws_sdk_iot::types::CertificateStatus::Inactive)
                    .send()
                    .await
            })
            .unwrap();
    });
    assert_eq!(report["dropped_while_listening"], true, "{report}");
    let client_id = report["client_id"].as_str().unwrap();
    let log = std::fs::read_to_string(line.endpoint.broker_log()).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(client_id) && l.contains("administrative action")),
        "the broker closed {client_id}"
    );
}

/// The claim policy detached while a connection is open: the next request is decided on
/// the account as it is now (AWS takes "a few minutes"; the data plane, the strict side, none),
/// so the publish is refused and the connection dropped.
#[test]
fn a_policy_detached_from_a_live_connection_applies_at_once() {
    let (_line, report) = listen_while(|line, row| {
        line.rt
            .block_on(async {
                let client = line.endpoint.client().await;
                client
                    .detach_policy()
                    .policy_name(CLAIM)
                    .target(&row["certificate_arn"])
                    .send()
                    .await
            })
            .unwrap();
    });
    assert_eq!(report["dropped_while_listening"], false, "{report}");
    assert_eq!(report["own_answer"], Value::Null, "{report}");
    assert_dropped(&report);
}
