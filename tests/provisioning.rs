//! Bundles proven on devices: `claimfab setup` and `claimfab batch` against the local
//! endpoint with its data plane (mosquitto over mTLS with AWS IoT policies enforced, and a
//! fleet-provisioning service speaking AWS's device provisioning MQTT API), then a device on
//! AWS's own IoT device SDK (scripts/dataplane/device.py) provisions with each bundle exactly
//! as the Java nucleus or nucleus lite would. Results are checked through the AWS API and
//! `claimfab audit`; failures must be AWS's own rejections, and batch preflight must refuse
//! what would fail on the device before anything is created.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use serde_json::{json, Value};

const GROUP: &str = "LineOne";
const CORE_POLICY: &str = "GreengrassV2IoTThingPolicy";
const CLAIM: &str = "GreengrassProvisioningClaimPolicy";
const TEMPLATE_NAME: &str = "GreengrassFleetProvisioningTemplate";

/// A fresh account with its data plane, set up by `claimfab setup` from a station file.
struct Line {
    endpoint: Endpoint,
    rt: tokio::runtime::Runtime,
    work: tempfile::TempDir,
    station: PathBuf,
}

impl Line {
    fn new(station_extra: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let station = work.path().join("line.toml");
        std::fs::write(
            &station,
            format!(
                "[provisioning]\nthing_group = \"{GROUP}\"\nthing_name_pattern = \"gg-{{serial}}\"\n{station_extra}\n\
                 [limits]\ncreate_certificate_from_csr_per_second = 200\nattach_policy_per_second = 200\n"
            ),
        )
        .unwrap();
        let line = Self {
            endpoint: Endpoint::start_with(&["--data-plane"]),
            rt: runtime(),
            work,
            station,
        };
        let (code, stdout, stderr) = run(line
            .endpoint
            .claimfab()
            .arg("setup")
            .arg("--station")
            .arg(&line.station));
        assert_eq!(code, 0, "setup: {stdout}\n{stderr}");
        line
    }

    fn batch_command(&self, name: &str, count: usize, scope: &str) -> std::process::Command {
        let mut cmd = self.endpoint.claimfab();
        cmd.args([
            "batch",
            "--count",
            &count.to_string(),
            "--claim-scope",
            scope,
        ])
        .arg("--out")
        .arg(self.work.path().join(name))
        .arg("--station")
        .arg(&self.station);
        cmd
    }

    /// Makes a batch and returns its rows and bundle paths, in manifest order.
    fn batch(&self, name: &str, count: usize, scope: &str) -> (Vec<Row>, Vec<PathBuf>) {
        let (code, stdout, stderr) = run(&mut self.batch_command(name, count, scope));
        assert_eq!(code, 0, "batch: {stdout}\n{stderr}");
        let dir = self.work.path().join(name);
        let rows = read_manifest(&dir);
        let bundles = rows.iter().map(|r| dir.join(&r["bundle"])).collect();
        (rows, bundles)
    }

    fn audit(&self, name: &str) -> (i32, String) {
        let (code, stdout, stderr) = run(self
            .endpoint
            .claimfab()
            .arg("audit")
            .arg(self.work.path().join(name)));
        (code, format!("{stdout}{stderr}"))
    }
}

/// Through the AWS API: each device's thing exists with its serial's name, is in the group,
/// and holds one ACTIVE device certificate (not its claim) carrying the core policy.
async fn assert_provisioned(endpoint: &Endpoint, rows: &[Row], reports: &[Value]) {
    let iot = endpoint.client().await;
    for (row, report) in rows.iter().zip(reports) {
        let thing = &row["thing_name"];
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["thing_name"], thing.as_str(), "{report}");
        iot.describe_thing().thing_name(thing).send().await.unwrap();
        let groups = iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let groups: Vec<_> = groups
            .thing_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .collect();
        assert_eq!(groups, [GROUP], "{thing}");
        let principals = iot
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let principals = principals.principals();
        assert_eq!(principals.len(), 1, "{thing}: {principals:?}");
        let device_cert_id = principals[0].rsplit('/').next().unwrap();
        assert_ne!(device_cert_id, row["certificate_id"], "not the claim");
        assert_eq!(report["certificate_id"], device_cert_id, "{report}");
        let status = certificate_status(&iot, device_cert_id).await;
        assert_eq!(status, "ACTIVE", "{thing}");
        let policies = iot
            .list_attached_policies()
            .target(&principals[0])
            .send()
            .await
            .unwrap();
        let names: Vec<_> = policies
            .policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect();
        assert_eq!(names, [CORE_POLICY], "{thing}");
    }
}

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

/// Sets a new default version of an IoT policy.
async fn replace_policy(endpoint: &Endpoint, name: &str, document: &Value) {
    endpoint
        .client()
        .await
        .create_policy_version()
        .policy_name(name)
        .policy_document(document.to_string())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
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
    let (_, bundles) = line.batch("batch", 1, "device");
    line.rt
        .block_on(replace_policy(&line.endpoint, CLAIM, &guide_claim_policy()));
    let report = &line.endpoint.provision("lite", &bundles)[0];
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "create", "{report}");

    let before = certificates_in(&line);
    let (code, _, stderr) = run(&mut line.batch_command("second", 2, "device"));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(CLAIM) && stderr.contains("create-from-csr"),
        "{stderr}"
    );
    assert!(!line.work.path().join("second").exists());
    assert_eq!(certificates_in(&line), before, "nothing created");
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

/// A bundle whose claim files were swapped for another device's: the same config (thing
/// name), another device's claim certificate and key.
fn with_claim_of(bundle: &PathBuf, donor: &PathBuf, out: &PathBuf) {
    use std::io::{Read, Write};
    let claim_files = [
        "greengrass/v2/claim-certs/claim.pem.crt",
        "greengrass/v2/claim-certs/claim.private.pem.key",
    ];
    let mut own = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut other = zip::ZipArchive::new(std::fs::File::open(donor).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    for i in 0..own.len() {
        let name = own.by_index(i).unwrap().name().unwrap().to_string();
        let source = if claim_files.contains(&name.as_str()) {
            &mut other
        } else {
            &mut own
        };
        let mut entry = source.by_name(&name).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let options = zip::write::SimpleFileOptions::default()
            .unix_permissions(entry.unix_mode().unwrap_or(0o644));
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
}

/// With claims bound to their device, setup deploys claimfab's hook (function, least-
/// privilege role, invoke permission for this template only); a device is admitted with its
/// own claim and refused with another device's; a shared batch claim is refused up front.
#[test]
fn claims_bound_to_their_device() {
    let line = Line::new("[setup]\nclaim_binding = true\n");
    let (function_arn, hook_arn) = line.rt.block_on(async {
        let iot = line.endpoint.client().await;
        let template = iot
            .describe_provisioning_template()
            .template_name(TEMPLATE_NAME)
            .send()
            .await
            .unwrap();
        let hook = template
            .pre_provisioning_hook()
            .unwrap()
            .target_arn()
            .to_string();
        let lambda = aws_sdk_lambda::Client::new(&line.endpoint.sdk_config().await);
        let function = lambda
            .get_function()
            .function_name("ClaimfabClaimBinding")
            .send()
            .await
            .unwrap();
        let policy = lambda
            .get_policy()
            .function_name("ClaimfabClaimBinding")
            .send()
            .await
            .unwrap();
        let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Principal"]["Service"], "iot.amazonaws.com");
        // The form AWS's own templates use: the account only (AWS documents no source ARN
        // for hook invocations).
        assert_eq!(
            statement["Condition"],
            json!({"StringEquals": {"AWS:SourceAccount": "123456789012"}})
        );
        let arn = function
            .configuration()
            .unwrap()
            .function_arn()
            .unwrap()
            .to_string();
        (arn, hook)
    });
    assert_eq!(hook_arn, function_arn);
    // A second setup finds the deployed code unchanged.
    let (code, stdout, _) = run(line
        .endpoint
        .claimfab()
        .arg("setup")
        .arg("--station")
        .arg(&line.station));
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("nothing to change"), "{stdout}");

    let (rows, bundles) = line.batch("batch", 2, "device");
    let stolen = line.work.path().join("stolen.zip");
    with_claim_of(&bundles[1], &bundles[0], &stolen);
    let report = &line
        .endpoint
        .provision("java", std::slice::from_ref(&stolen))[0];
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "register", "{report}");
    assert_eq!(report["status_code"], 403, "{report}");
    let reports = line.endpoint.provision("java", &bundles);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows, &reports));

    let (code, _, stderr) = run(&mut line.batch_command("shared", 2, "batch"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("setup.claim_binding"), "{stderr}");
}

/// A certificate's status, through the AWS API.
async fn certificate_status(iot: &aws_sdk_iot::Client, id: &str) -> String {
    let description = iot
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
        .unwrap();
    let status = description
        .certificate_description()
        .and_then(|d| d.status());
    status.unwrap().as_str().to_string()
}

/// The claim's status in AWS and whether the claim policy is still attached to it.
async fn claim_state(endpoint: &Endpoint, row: &Row) -> (String, bool) {
    let iot = endpoint.client().await;
    let status = certificate_status(&iot, &row["certificate_id"]).await;
    let attached = endpoint
        .policy_targets(CLAIM)
        .await
        .contains(&row["certificate_arn"]);
    (status, attached)
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
