//! Claims only their own device can use, proven with the attacks themselves on the local data
//! plane: a claim pulled out of one device cannot register another (neither directly nor by
//! minting a certificate named after the victim and using that as a claim), a device cannot
//! choose its thing group, a device certificate belongs to one thing, and a batch stops
//! before packaging when AWS would issue claims the hook cannot bind. Every outcome is
//! checked through the AWS API, not claimfab's own records.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::line::*;
use common::*;
use serde_json::{json, Value};

const BINDING: &str = "[setup]\nclaim_binding = true\n";

/// The hook is deployed as AWS's guide and the issue ask: invoke permission for this
/// account, its budget (memory, timeout), the station's claim policy in its environment; a
/// device provisions with its own claim and is refused with another's; a re-run of setup
/// changes nothing; a shared batch claim and another claim policy are refused up front.
fn own_claim_provisions_and_anothers_is_refused(nucleus: &str) {
    let line = Line::new(&format!("{BINDING}[greengrass]\nnucleus = \"{nucleus}\"\n"));
    line.rt.block_on(assert_hook_deployed(&line));
    let (code, stdout, _) = line.setup();
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("nothing to change"), "{stdout}");

    let (rows, bundles) = line.batch("batch", 2, "device");
    let stolen = line.work.path().join("stolen.zip");
    with_claim_of(&bundles[1], &bundles[0], &stolen);
    let report = &line
        .endpoint
        .provision(nucleus, std::slice::from_ref(&stolen))[0];
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "register", "{report}");
    assert_eq!(report["status_code"], 403, "{report}");
    let reports = line.endpoint.provision(nucleus, &bundles);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows, &reports));

    let (code, _, stderr) = run(&mut line.batch_command("shared", 2, "batch"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("setup.claim_binding"), "{stderr}");
    let (code, _, stderr) = run(line
        .batch_command("other-policy", 2, "device")
        .args(["--claim-policy", "SomeOtherClaimPolicy"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--claim-policy") && stderr.contains(CLAIM),
        "{stderr}"
    );
    assert!(!line.work.path().join("other-policy").exists());
}

/// Through the Lambda API: the hook is the template's, with the permission in the form of
/// AWS's own templates and the deployment the 5-second budget asks for.
async fn assert_hook_deployed(line: &Line) {
    let iot = line.endpoint.client().await;
    let template = iot
        .describe_provisioning_template()
        .template_name(TEMPLATE_NAME)
        .send()
        .await
        .unwrap();
    let hook = template.pre_provisioning_hook().unwrap().target_arn();
    let lambda = aws_sdk_lambda::Client::new(&line.endpoint.sdk_config().await);
    let function = lambda
        .get_function()
        .function_name("ClaimfabClaimBinding")
        .send()
        .await
        .unwrap();
    let config = function.configuration().unwrap();
    assert_eq!(config.function_arn(), Some(hook));
    assert_eq!(config.memory_size(), Some(512));
    assert_eq!(config.timeout(), Some(4));
    let environment = config.environment().unwrap().variables().unwrap();
    assert_eq!(environment["CLAIMFAB_CLAIM_POLICIES"], CLAIM);
    let policy = lambda
        .get_policy()
        .function_name("ClaimfabClaimBinding")
        .send()
        .await
        .unwrap();
    let policy: Value = serde_json::from_str(policy.policy().unwrap()).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Principal"]["Service"], "iot.amazonaws.com");
    // The account only: AWS documents no source ARN for hook invocations.
    assert_eq!(
        statement["Condition"],
        json!({"StringEquals": {"AWS:SourceAccount": "123456789012"}})
    );
}

#[test]
fn java_own_claim_provisions_and_anothers_is_refused() {
    own_claim_provisions_and_anothers_is_refused("java");
}

#[test]
fn lite_own_claim_provisions_and_anothers_is_refused() {
    own_claim_provisions_and_anothers_is_refused("lite");
}

/// A thing's groups and principals, to see that an attack left it as it was.
async fn thing_state(endpoint: &Endpoint, thing: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let iot = endpoint.client().await;
    let groups = iot
        .list_thing_groups_for_thing()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    let groups = groups
        .thing_groups()
        .iter()
        .filter_map(|g| g.group_name().map(str::to_string))
        .collect();
    let principals = iot
        .list_thing_principals()
        .thing_name(thing)
        .send()
        .await
        .unwrap();
    (groups, principals.principals().iter().cloned().collect())
}

async fn create_group(endpoint: &Endpoint, group: &str) {
    let iot = endpoint.client().await;
    iot.create_thing_group()
        .thing_group_name(group)
        .send()
        .await
        .unwrap();
}

/// The core policy as setup made it, without its Deny statements: the state of an account
/// set up before claimfab denied the provisioning API, or of a policy edited by hand.
async fn core_policy_without_deny(endpoint: &Endpoint) -> Value {
    let policy = endpoint
        .client()
        .await
        .get_policy()
        .policy_name(CORE_POLICY)
        .send()
        .await
        .unwrap();
    let mut document: Value = serde_json::from_str(policy.policy_document().unwrap()).unwrap();
    let statements = document["Statement"].as_array_mut().unwrap();
    let before = statements.len();
    statements.retain(|s| s["Effect"] != "Deny");
    assert_eq!(statements.len(), before - 1, "setup's policy had one Deny");
    document
}

/// The attack of issue 15, step by step, with a real claim of a batch made with claim
/// binding: the holder of device A's claim mints a certificate named after victim V and
/// registers it as A (asking for another thing group too), then uses that certificate as a
/// claim to register V. Refused where the certificate asks to register V: by the core
/// policy's Deny (dropped), and, with that Deny removed, by the hook (403, not a claim). V's
/// thing is untouched and A is only in the station's group.
fn the_claim_minting_attack_is_refused(nucleus: &str) {
    let line = Line::new(&format!("{BINDING}[greengrass]\nnucleus = \"{nucleus}\"\n"));
    line.rt.block_on(create_group(&line.endpoint, "Admins"));
    let (rows, bundles) = line.batch("batch", 2, "device");
    let (thing_a, thing_v) = (&rows[0]["thing_name"], &rows[1]["thing_name"]);
    let reports = line.endpoint.provision(nucleus, &bundles[1..]);
    assert_eq!(
        reports[0]["ok"], true,
        "the victim provisions: {}",
        reports[0]
    );
    let victim_before = line.rt.block_on(thing_state(&line.endpoint, thing_v));

    // Steps 1-3: A's genuine claim mints C2 with CN = V and registers it as A.
    let c2 = line.work.path().join("c2");
    let step = |as_cert: Option<&Path>, thing: &str, save: &Path| {
        line.endpoint.attack(&Attempt {
            nucleus,
            bundle: &bundles[0],
            as_cert,
            client_id: as_cert.map(|_| thing_a.as_str()),
            common_name: thing_v,
            params: &[("ThingName", thing), ("ThingGroupName", "Admins")],
            save,
            stop_after_create: false,
            token_from: None,
        })
    };
    let report = step(None, thing_a, &c2);
    assert_eq!(report["ok"], true, "A may register itself: {report}");
    let (groups_a, _) = line.rt.block_on(thing_state(&line.endpoint, thing_a));
    assert_eq!(
        groups_a,
        BTreeSet::from([GROUP.to_string()]),
        "the device does not choose its group"
    );

    // Step 4: C2 as a claim for V. The core policy denies the provisioning API.
    let c3 = line.work.path().join("c3");
    let report = step(Some(&c2), thing_v, &c3);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "create", "{report}");
    assert_eq!(report["dropped"], true, "{report}");

    // Without that Deny, the hook refuses: C2 is not a claim.
    line.rt.block_on(async {
        let document = core_policy_without_deny(&line.endpoint).await;
        replace_policy(&line.endpoint, CORE_POLICY, &document).await;
    });
    let report = step(Some(&c2), thing_v, &c3);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["stage"], "register", "{report}");
    assert_eq!(report["status_code"], 403, "{report}");

    let victim_after = line.rt.block_on(thing_state(&line.endpoint, thing_v));
    assert_eq!(victim_after, victim_before, "V's thing is untouched");
}

#[test]
fn java_claim_minting_attack_is_refused() {
    the_claim_minting_attack_is_refused("java");
}

#[test]
fn lite_claim_minting_attack_is_refused() {
    the_claim_minting_attack_is_refused("lite");
}

/// A provisioned device's certificate is attached to its thing exclusively: attaching it to
/// a second thing is refused as AWS refuses it. A certificate on two things (attached
/// non-exclusively, as before exclusive association) is named by `audit --check-things`.
#[test]
fn a_device_certificate_belongs_to_one_thing() {
    let line = Line::new("");
    let (rows, bundles) = line.batch("batch", 1, "device");
    let report = &line.endpoint.provision("java", &bundles)[0];
    assert_eq!(report["ok"], true, "{report}");
    let thing = &rows[0]["thing_name"];
    let (code, audit) = line.audit_checking_things("batch");
    assert_eq!(code, 0, "{audit}");

    line.rt.block_on(async {
        let iot = line.endpoint.client().await;
        let listed = iot
            .list_thing_principals_v2()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let [attachment] = listed.thing_principal_objects() else {
            panic!("one principal: {listed:?}")
        };
        let certificate = attachment.principal().to_string();
        assert_eq!(
            attachment.thing_principal_type().map(|t| t.as_str()),
            Some("EXCLUSIVE_THING")
        );
        iot.create_thing().thing_name("spare").send().await.unwrap();
        let refused = iot
            .attach_thing_principal()
            .thing_name("spare")
            .principal(&certificate)
            .send()
            .await;
        let error = refused.expect_err("a second thing is refused");
        assert!(
            format!("{:?}", error.into_service_error()).contains("InvalidRequest"),
            "AWS's error type"
        );
        // Attached to both things non-exclusively, as an older template or a hand would.
        iot.detach_thing_principal()
            .thing_name(thing)
            .principal(&certificate)
            .send()
            .await
            .unwrap();
        for name in [thing.as_str(), "spare"] {
            iot.attach_thing_principal()
                .thing_name(name)
                .principal(&certificate)
                .send()
                .await
                .unwrap();
        }
    });
    let (code, audit) = line.audit_checking_things("batch");
    assert_eq!(code, 1, "{audit}");
    // The table shows certificate ids by their first 16 digits.
    let device_certificate = &report["certificate_id"].as_str().unwrap()[..16];
    assert!(
        audit.contains(device_certificate)
            && audit.contains(&format!("attached to 2 things ({thing}, spare)")),
        "{audit}"
    );
}

/// An endpoint that does not keep the CSR's subject (a launcher switch): the batch retires
/// the first certificates it gets, writes no bundle and says why on one line.
#[test]
fn a_batch_stops_when_aws_drops_the_csr_subject() {
    let line = Line::start(BINDING, &["--drop-csr-subject"]);
    let (code, _, stderr) = run(&mut line.batch_command("batch", 5, "device"));
    assert_eq!(code, 1, "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("claimfab:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("AWS did not keep the CSR's subject")
            && errors[0].contains("AWS IoT Certificate")
            && errors[0].contains("claim binding"),
        "{stderr}"
    );
    let bundles = line.work.path().join("batch/bundles");
    let written = std::fs::read_dir(&bundles).map_or(0, |d| d.count());
    assert_eq!(written, 0, "no bundle written");
    let certificates = line.rt.block_on(line.endpoint.all_certificates());
    assert!(!certificates.is_empty(), "the batch did reach AWS");
    for (id, (status, _)) in &certificates {
        assert_eq!(status, "INACTIVE", "{id} retired");
    }
}
