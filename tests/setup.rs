//! End-to-end tests of `claimfab setup` against the local endpoint: from an empty account to a
//! working batch, idempotent re-runs, `--plan` after a partial setup, AccessDenied part-way,
//! and drift. Every resource is checked through the AWS API, documents parsed as JSON and
//! compared with what the AWS guide (corrected claim policy) says they must be.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::{json, Value};

const ACCOUNT: &str = "123456789012";

struct Setup {
    endpoint: Endpoint,
    rt: tokio::runtime::Runtime,
    work: tempfile::TempDir,
    station: PathBuf,
}

impl Setup {
    fn new(endpoint_options: &[&str]) -> Self {
        let work = tempfile::tempdir().unwrap();
        let station = work.path().join("line1.toml");
        std::fs::write(
            &station,
            "[provisioning]\nthing_group = \"LineOne\"\ntemplate = \"LineOneTemplate\"\n\
             [limits]\ncreate_certificate_from_csr_per_second = 200\nattach_policy_per_second = 200\n",
        )
        .unwrap();
        Self {
            endpoint: Endpoint::start_with(endpoint_options),
            rt: runtime(),
            work,
            station,
        }
    }

    fn setup(&self, extra: &[&str]) -> (i32, String, String) {
        run(self
            .endpoint
            .claimfab()
            .arg("setup")
            .arg("--station")
            .arg(&self.station)
            .args(extra))
    }

    fn batch(&self, count: usize) -> Command {
        let mut cmd = self.endpoint.claimfab();
        cmd.args(["batch", "--count", &count.to_string(), "--out"])
            .arg(self.work.path().join("batch"))
            .arg("--station")
            .arg(&self.station);
        cmd
    }

    async fn iam(&self) -> aws_sdk_iam::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.endpoint.url)
            .credentials_provider(aws_sdk_iot::config::Credentials::new(
                "t", "t", None, None, "tests",
            ))
            .load()
            .await;
        aws_sdk_iam::Client::new(&config)
    }
}

fn parse(document: &str) -> Value {
    let decoded = percent_encoding::percent_decode_str(document)
        .decode_utf8()
        .unwrap();
    serde_json::from_str(&decoded).unwrap_or_else(|_| serde_json::from_str(document).unwrap())
}

fn arn(kind: &str, rest: &str) -> String {
    format!("arn:aws:iot:{REGION}:{ACCOUNT}:{kind}/{rest}")
}

/// Checks every resource of a complete setup through the AWS API.
async fn check_account(s: &Setup) {
    let iam = s.iam().await;
    let iot = s.endpoint.client().await;

    let role = iam
        .get_role()
        .role_name("GreengrassV2TokenExchangeRole")
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    let trust = parse(role.assume_role_policy_document().unwrap());
    assert_eq!(
        trust["Statement"][0]["Principal"]["Service"],
        "credentials.iot.amazonaws.com"
    );
    assert_eq!(trust["Statement"][0]["Action"], "sts:AssumeRole");
    let attached = iam
        .list_attached_role_policies()
        .role_name("GreengrassV2TokenExchangeRole")
        .send()
        .await
        .unwrap();
    let access_arn = format!("arn:aws:iam::{ACCOUNT}:policy/GreengrassV2TokenExchangeRoleAccess");
    assert!(attached
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn() == Some(access_arn.as_str())));
    let default_version = iam
        .get_policy()
        .policy_arn(&access_arn)
        .send()
        .await
        .unwrap()
        .policy
        .unwrap()
        .default_version_id
        .unwrap();
    let version = iam
        .get_policy_version()
        .policy_arn(&access_arn)
        .version_id(default_version)
        .send()
        .await
        .unwrap();
    let access = parse(version.policy_version.unwrap().document().unwrap());
    let actions = access["Statement"][0]["Action"].as_array().unwrap();
    for action in [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:DescribeLogStreams",
        "s3:GetBucketLocation",
    ] {
        assert!(actions.contains(&json!(action)), "{action}");
    }

    let alias = iot
        .describe_role_alias()
        .role_alias("GreengrassCoreTokenExchangeRoleAlias")
        .send()
        .await
        .unwrap();
    let alias = alias.role_alias_description.unwrap();
    assert_eq!(alias.role_arn(), Some(role.arn()));
    assert_eq!(alias.credential_duration_seconds(), Some(3600));

    let core = iot
        .get_policy()
        .policy_name("GreengrassV2IoTThingPolicy")
        .send()
        .await
        .unwrap();
    let core = parse(core.policy_document().unwrap());
    assert_eq!(
        core["Statement"][1]["Action"],
        "iot:AssumeRoleWithCertificate"
    );
    assert_eq!(
        core["Statement"][1]["Resource"],
        arn("rolealias", "GreengrassCoreTokenExchangeRoleAlias")
    );

    let fp_role = iam
        .get_role()
        .role_name("GreengrassFleetProvisioningRole")
        .send()
        .await
        .unwrap()
        .role
        .unwrap();
    assert_eq!(
        parse(fp_role.assume_role_policy_document().unwrap())["Statement"][0]["Principal"]
            ["Service"],
        "iot.amazonaws.com"
    );
    let attached = iam
        .list_attached_role_policies()
        .role_name("GreengrassFleetProvisioningRole")
        .send()
        .await
        .unwrap();
    assert!(attached
        .attached_policies()
        .iter()
        .any(|p| p.policy_arn()
            == Some("arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration")));

    iot.describe_thing_group()
        .thing_group_name("LineOne")
        .send()
        .await
        .expect("thing group exists");

    let template = iot
        .describe_provisioning_template()
        .template_name("LineOneTemplate")
        .send()
        .await
        .unwrap();
    assert_eq!(template.enabled(), Some(true));
    assert_eq!(template.provisioning_role_arn(), Some(fp_role.arn()));
    let body = parse(template.template_body().unwrap());
    let parameters: Vec<&String> = body["Parameters"].as_object().unwrap().keys().collect();
    assert_eq!(parameters, ["AWS::IoT::Certificate::Id", "ThingName"]);
    assert_eq!(
        body["Resources"]["MyThing"]["Properties"]["ThingGroups"],
        serde_json::json!(["LineOne"]),
        "the station's group is written into the template"
    );
    assert_eq!(
        body["Resources"]["MyCertificate"]["Properties"]["ThingPrincipalType"],
        "EXCLUSIVE_THING"
    );
    let resources = &body["Resources"];
    let types: Vec<&str> = ["MyThing", "MyPolicy", "MyCertificate"]
        .iter()
        .map(|r| resources[r]["Type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "AWS::IoT::Thing",
            "AWS::IoT::Policy",
            "AWS::IoT::Certificate"
        ]
    );
    assert_eq!(
        resources["MyPolicy"]["Properties"]["PolicyName"],
        "GreengrassV2IoTThingPolicy"
    );
    assert_eq!(
        resources["MyCertificate"]["Properties"]["CertificateId"]["Ref"],
        "AWS::IoT::Certificate::Id"
    );

    // The claim policy, exactly: connect; publish/receive on the three topic families,
    // create-from-csr included; subscribe on the same as topic filters.
    let claim = iot
        .get_policy()
        .policy_name("GreengrassProvisioningClaimPolicy")
        .send()
        .await
        .unwrap();
    let claim = parse(claim.policy_document().unwrap());
    let topics = |kind: &str| {
        let mut v = vec![
            arn(kind, "$aws/certificates/create/*"),
            arn(kind, "$aws/certificates/create-from-csr/*"),
            arn(
                kind,
                "$aws/provisioning-templates/LineOneTemplate/provision/*",
            ),
        ];
        v.sort();
        v
    };
    let resources_of = |statement: &Value| {
        let mut v: Vec<String> = statement["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let statements = claim["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 3);
    assert_eq!(statements[0]["Action"], "iot:Connect");
    assert_eq!(
        statements[0]["Resource"],
        arn("client", "*"),
        "Connect scoped to this account and region"
    );
    assert_eq!(resources_of(&statements[1]), topics("topic"));
    assert_eq!(resources_of(&statements[2]), topics("topicfilter"));
    assert_eq!(statements[2]["Action"], "iot:Subscribe");
}

fn record(station: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(station.with_extension("setup.json")).unwrap())
        .unwrap()
}

#[test]
fn from_an_empty_account_setup_then_batch_work_and_a_rerun_changes_nothing() {
    let s = Setup::new(&[]);
    let (code, stdout, stderr) = s.setup(&[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.matches("  created ").count(), 10, "{stdout}");
    s.rt.block_on(check_account(&s));
    let recorded = record(&s.station);
    assert_eq!(
        recorded["template_arn"],
        arn("provisioningtemplate", "LineOneTemplate")
    );
    assert!(recorded["iot_data_endpoint"]
        .as_str()
        .unwrap()
        .ends_with("-ats.iot.us-east-1.amazonaws.com"));

    let (code, stdout, _) = s.setup(&[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("nothing to change"), "{stdout}");
    // Ten resources, and the hook permission step with no hook named.
    assert_eq!(stdout.matches("  ok ").count(), 11, "{stdout}");
    let versions = s.rt.block_on(async {
        s.endpoint
            .client()
            .await
            .list_policy_versions()
            .policy_name("GreengrassProvisioningClaimPolicy")
            .send()
            .await
            .unwrap()
    });
    assert_eq!(
        versions.policy_versions().len(),
        1,
        "a re-run makes no new policy version"
    );

    // The batch needs nothing else: the claim policy exists and the endpoints are recorded.
    let (code, stdout, stderr) = run(&mut s.batch(5));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        !stdout.contains("DescribeEndpoint"),
        "endpoints come from the setup record: {stdout}"
    );
    let rows = read_manifest(&s.work.path().join("batch"));
    let files = unzip(&s.work.path().join("batch").join(&rows[0]["bundle"]));
    let config: serde_yaml_ng::Value =
        serde_yaml_ng::from_slice(&files["greengrass/v2/init-config/config.yaml"].0).unwrap();
    let plugin = &config["services"]["aws.greengrass.FleetProvisioningByClaim"]["configuration"];
    assert_eq!(
        plugin["provisioningTemplate"].as_str(),
        Some("LineOneTemplate")
    );
    assert_eq!(
        plugin["iotDataEndpoint"].as_str(),
        recorded["iot_data_endpoint"].as_str()
    );
}

#[test]
fn access_denied_part_way_reports_then_plan_shows_the_rest_and_a_rerun_completes() {
    let s = Setup::new(&["--deny", "CreateProvisioningTemplate"]);
    let (code, stdout, stderr) = s.setup(&[]);
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stdout.matches("  created ").count(), 8, "{stdout}");
    assert!(
        stdout.contains("FAILED   iot template LineOneTemplate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not yet  iot policy (claim policy)"),
        "{stdout}"
    );
    let error = stderr.trim_end();
    assert_eq!(error.lines().count(), 1, "{stderr}");
    let permission = format!(
        "allow iot:CreateProvisioningTemplate on {}, and iam:PassRole on arn:aws:iam::{ACCOUNT}:role/GreengrassFleetProvisioningRole",
        arn("provisioningtemplate", "LineOneTemplate")
    );
    assert!(error.contains(&permission), "{error}");
    assert!(error.contains("re-run `claimfab setup`"), "{error}");

    // --plan now shows only the missing parts, and touches nothing.
    let (code, stdout, _) = s.setup(&["--plan"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.matches("  ok ").count(), 9, "{stdout}");
    assert!(
        stdout.contains("  create   iot template LineOneTemplate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  create   iot policy GreengrassProvisioningClaimPolicy"),
        "{stdout}"
    );
    assert!(stdout.contains("2 change(s) to make"), "{stdout}");
    let claim = s.rt.block_on(async {
        s.endpoint
            .client()
            .await
            .get_policy()
            .policy_name("GreengrassProvisioningClaimPolicy")
            .send()
            .await
    });
    let not_found = |e: &aws_sdk_iot::error::SdkError<_, _>| {
        format!("{e:?}").contains("ResourceNotFoundException")
    };
    assert!(
        claim.as_ref().is_err_and(not_found),
        "--plan created no claim policy: {claim:?}"
    );
    let template = s.rt.block_on(async {
        s.endpoint
            .client()
            .await
            .describe_provisioning_template()
            .template_name("LineOneTemplate")
            .send()
            .await
    });
    assert!(
        template
            .as_ref()
            .is_err_and(|e| format!("{e:?}").contains("ResourceNotFoundException")),
        "--plan created no template: {template:?}"
    );

    s.endpoint.clear_faults();
    let (code, stdout, _) = s.setup(&[]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(stdout.matches("  created ").count(), 2, "{stdout}");
    s.rt.block_on(check_account(&s));
}

#[test]
fn drift_is_reported_and_updated_only_when_asked() {
    let s = Setup::new(&[]);
    assert_eq!(s.setup(&[]).0, 0);
    // Someone widens the claim policy by hand.
    s.rt.block_on(async {
        let wide = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]});
        s.endpoint.client().await.create_policy_version().policy_name("GreengrassProvisioningClaimPolicy")
            .policy_document(wide.to_string()).set_as_default(true).send().await.unwrap();
    });
    let (code, stdout, _) = s.setup(&[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("DRIFT    iot policy GreengrassProvisioningClaimPolicy"),
        "{stdout}"
    );
    assert!(stdout.contains("--update-drifted"), "{stdout}");
    let versions = || {
        s.rt.block_on(async {
            let iot = s.endpoint.client().await;
            let versions = iot
                .list_policy_versions()
                .policy_name("GreengrassProvisioningClaimPolicy")
                .send()
                .await
                .unwrap();
            let default = iot
                .get_policy()
                .policy_name("GreengrassProvisioningClaimPolicy")
                .send()
                .await
                .unwrap();
            (
                versions.policy_versions().len(),
                parse(default.policy_document().unwrap()),
            )
        })
    };
    let (count, document) = versions();
    assert_eq!(count, 2, "a drift report changes nothing");
    assert_eq!(
        document["Statement"][0]["Action"], "iot:*",
        "the hand-made version is still default"
    );
    let (code, stdout, _) = s.setup(&["--update-drifted"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("updated  iot policy GreengrassProvisioningClaimPolicy"),
        "{stdout}"
    );
    assert_eq!(
        versions().0,
        3,
        "--update-drifted adds a new default version"
    );
    s.rt.block_on(check_account(&s));
}

#[test]
fn a_bad_station_is_refused_before_anything_is_created() {
    let s = Setup::new(&[]);
    std::fs::write(&s.station, "[setup]\ncredential_duration_seconds = 60\n").unwrap();
    let (code, stdout, stderr) = s.setup(&[]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(
        line.contains("line1.toml")
            && line.contains("setup.credential_duration_seconds")
            && line.contains("900"),
        "{line}"
    );
    let roles =
        s.rt.block_on(async { s.iam().await.list_roles().send().await.unwrap() });
    assert!(roles.roles().is_empty(), "nothing created in IAM");
    assert!(!s.station.with_extension("setup.json").exists());
}

#[test]
fn least_privilege_gives_each_device_its_own_policy_through_the_template() {
    let s = Setup::new(&[]);
    let mut station = std::fs::read_to_string(&s.station).unwrap();
    station.push_str("[setup]\ncore_policy_variant = \"least-privilege\"\n");
    std::fs::write(&s.station, station).unwrap();
    let (code, stdout, stderr) = s.setup(&[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("iot policy (per device, made by the template)"),
        "{stdout}"
    );
    let (policy, template) = s.rt.block_on(async {
        let iot = s.endpoint.client().await;
        let policy = iot
            .get_policy()
            .policy_name("GreengrassV2IoTThingPolicy")
            .send()
            .await;
        let template = iot
            .describe_provisioning_template()
            .template_name("LineOneTemplate")
            .send()
            .await
            .unwrap();
        (policy, template)
    });
    assert!(policy.is_err(), "no fleet-wide core policy is made");
    let body = parse(template.template_body().unwrap());
    let join = &body["Resources"]["MyPolicy"]["Properties"]["PolicyDocument"]["Fn::Join"];
    assert!(
        join[1]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["Ref"] == "ThingName"),
        "{body}"
    );
    assert!(record(&s.station)["core_policy_arn"].is_null());
    assert!(s.setup(&[]).1.contains("nothing to change"));
}

#[test]
fn a_denied_update_of_a_drifted_resource_names_the_update_call() {
    let s = Setup::new(&["--deny", "UpdateRoleAlias"]);
    assert_eq!(s.setup(&[]).0, 0);
    // The station now asks for shorter device credentials: the role alias has drifted.
    let mut station = std::fs::read_to_string(&s.station).unwrap();
    station.push_str("[setup]\ncredential_duration_seconds = 900\n");
    std::fs::write(&s.station, station).unwrap();
    let (code, stdout, _) = s.setup(&[]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("DRIFT    iot role alias GreengrassCoreTokenExchangeRoleAlias (credential duration is 3600 s"), "{stdout}");
    let (code, _, stderr) = s.setup(&["--update-drifted"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("allow iot:UpdateRoleAlias on"), "{stderr}");
    assert!(
        stderr.contains(
            "iam:PassRole on arn:aws:iam::123456789012:role/GreengrassV2TokenExchangeRole"
        ),
        "{stderr}"
    );
}
