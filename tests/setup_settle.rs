//! `claimfab setup` on an in-memory account (tests/fake_account), every scenario performed
//! and checked in the account's state and the calls made: from an empty account every
//! resource is created in dependency order and the record written; a re-run changes nothing;
//! drift is reported and left (exit value false) until `--update-drifted`; AccessDenied
//! part-way stops at that step with one line naming the action and resource, later steps
//! not reached, and a re-run after allowing finishes; `--plan` touches nothing; a create that
//! loses a race with another run ("already exists") settles the resource as found; a name
//! taken by a resource setup cannot read stops with the fix. (Throttling is retried below the
//! trait, by the call path: its own tests are in `aws::calls`.)

mod fake_account;

use std::path::PathBuf;

use claimfab::account_setup::{run_with, SetupRequest};
use claimfab::aws::AwsSettings;
use claimfab::core::station_config::StationConfig;
use fake_account::{FakeAccount, ACCOUNT, REGION};
use serde_json::Value;

/// The station: a thing group, a template name, and claimfab's claim-binding hook, so that
/// every kind of resource is among the steps.
const STATION: &str = "[provisioning]\nthing_group = \"LineOne\"\ntemplate = \"LineOneTemplate\"\n\
                       [setup]\nclaim_binding = true\n";

const CLAIM_POLICY: &str = "GreengrassProvisioningClaimPolicy";

/// The writes of a setup from an empty account, in the table's order.
const EVERY_CREATE: [&str; 15] = [
    "iam:CreateRole GreengrassV2TokenExchangeRole",
    "iam:CreatePolicy arn:aws:iam::123456789012:policy/GreengrassV2TokenExchangeRoleAccess",
    "iam:AttachRolePolicy GreengrassV2TokenExchangeRole",
    "iot:CreateRoleAlias GreengrassCoreTokenExchangeRoleAlias",
    "iot:CreatePolicy GreengrassV2IoTThingPolicy",
    "iam:CreateRole GreengrassFleetProvisioningRole",
    "iam:AttachRolePolicy GreengrassFleetProvisioningRole",
    "iot:CreateThingGroup LineOne",
    "iam:CreateRole ClaimfabClaimBindingRole",
    "iam:CreatePolicy arn:aws:iam::123456789012:policy/ClaimfabClaimBindingRoleAccess",
    "iam:AttachRolePolicy ClaimfabClaimBindingRole",
    "lambda:CreateFunction ClaimfabClaimBinding",
    "lambda:AddPermission arn:aws:lambda:eu-west-1:123456789012:function:ClaimfabClaimBinding",
    "iot:CreateProvisioningTemplate LineOneTemplate",
    "iot:CreatePolicy GreengrassProvisioningClaimPolicy",
];

struct Line {
    account: FakeAccount,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
}

impl Line {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (account, dir) = (FakeAccount::default(), tempfile::tempdir().unwrap());
        Self {
            account,
            dir,
            runtime,
        }
    }

    fn station_file(&self) -> PathBuf {
        self.dir.path().join("line1.toml")
    }

    /// `claimfab setup` with `flags` (`--plan`, `--update-drifted`).
    fn setup(&self, flags: &[&str]) -> anyhow::Result<bool> {
        let file = self.station_file();
        let station = StationConfig::parse(STATION, &file).unwrap();
        let request = SetupRequest {
            station_file: file,
            station,
            settings: AwsSettings::default(),
            endpoint_url: None,
            plan: flags.contains(&"--plan"),
            update_drifted: flags.contains(&"--update-drifted"),
        };
        self.runtime.block_on(run_with(&self.account, request))
    }

    /// The writes made by `run`, on top of those made before it.
    fn writes_of<T>(&self, run: impl FnOnce(&Self) -> T) -> (T, Vec<String>) {
        let before = self.account.writes().len();
        let result = run(self);
        (result, self.account.writes().split_off(before))
    }

    fn record(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.station_file().with_extension("setup.json"));
        text.ok().map(|text| serde_json::from_str(&text).unwrap())
    }
}

fn claim_policy_versions(line: &Line) -> Vec<String> {
    let state = line.account.state();
    state
        .iot_policies
        .get(CLAIM_POLICY)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn from_an_empty_account_every_resource_is_created_in_order_and_recorded() {
    let line = Line::new();
    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(done.unwrap(), "nothing left as drift");
    assert_eq!(writes, EVERY_CREATE);
    {
        let state = line.account.state();
        assert_eq!(state.roles.len(), 3);
        assert_eq!((state.iam_policies.len(), state.attachments.len()), (2, 3));
        assert_eq!(
            state.iot_policies.len(),
            2,
            "core devices' and claim policies"
        );
        assert!(state.thing_groups.contains("LineOne"));
        let template = &state.templates["LineOneTemplate"];
        let hook = &state.functions["ClaimfabClaimBinding"].arn;
        assert_eq!(template.hook_arn.as_ref(), Some(hook));
        assert_eq!(state.permissions[hook].len(), 1);
    }
    let record = line.record().expect("the record is written");
    assert_eq!(record["account_id"], ACCOUNT);
    assert_eq!(record["region"], REGION);
    let template = format!("arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/LineOneTemplate");
    assert_eq!(record["template_arn"], template.as_str());
    let data = format!("abc-ats.iot.{REGION}.amazonaws.com");
    assert_eq!(record["iot_data_endpoint"], data.as_str());
}

#[test]
fn a_rerun_changes_nothing() {
    let line = Line::new();
    assert!(line.setup(&[]).unwrap());
    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(done.unwrap());
    assert_eq!(writes, Vec::<String>::new(), "a re-run only reads");
    let (done, writes) = line.writes_of(|l| l.setup(&["--update-drifted"]));
    assert!(done.unwrap());
    assert!(writes.is_empty(), "nothing has drifted: {writes:?}");
}

#[test]
fn drift_is_reported_and_left_then_updated_only_when_asked() {
    let line = Line::new();
    assert!(line.setup(&[]).unwrap());
    let wide = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:*","Resource":"*"}]}"#;
    line.account
        .state()
        .iot_policies
        .get_mut(CLAIM_POLICY)
        .unwrap()
        .push(wide.into());

    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(
        !done.unwrap(),
        "drift left in place makes the exit value false"
    );
    assert!(
        writes.is_empty(),
        "a drift report writes nothing: {writes:?}"
    );
    assert_eq!(claim_policy_versions(&line).last().unwrap(), wide);

    let (done, writes) = line.writes_of(|l| l.setup(&["--update-drifted"]));
    assert!(done.unwrap());
    assert_eq!(writes, [format!("iot:CreatePolicyVersion {CLAIM_POLICY}")]);
    let versions = claim_policy_versions(&line);
    assert_eq!(versions.len(), 3, "a new default version");
    assert_eq!(versions[2], versions[0], "the desired document again");
}

#[test]
fn access_denied_part_way_stops_at_that_step_and_a_rerun_after_allowing_finishes() {
    let line = Line::new();
    let denied = "iot:CreateProvisioningTemplate";
    line.account.state().denied.insert(denied.into());
    let (result, writes) = line.writes_of(|l| l.setup(&[]));
    let error = result.unwrap_err().to_string();
    assert_eq!(error.lines().count(), 1, "{error}");
    let template = format!("arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/LineOneTemplate");
    let role = format!("arn:aws:iam::{ACCOUNT}:role/GreengrassFleetProvisioningRole");
    let fix = format!("allow {denied} on {template}, and iam:PassRole on {role}");
    assert!(
        error.starts_with("setup stopped at iot template LineOneTemplate"),
        "{error}"
    );
    assert!(error.contains(&fix), "{error}");
    assert!(error.contains("re-run `claimfab setup`"), "{error}");
    assert_eq!(writes, EVERY_CREATE[..14], "up to the refused call");
    let state = line.account.state();
    assert!(!state.iot_policies.contains_key(CLAIM_POLICY));
    let reached = |call: &String| call.ends_with(CLAIM_POLICY);
    assert!(
        !state.log.iter().any(reached),
        "the claim policy step is not reached"
    );
    drop(state);
    assert!(
        line.record().is_none(),
        "no record of a setup stopped part-way"
    );

    line.account.state().denied.clear();
    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(done.unwrap());
    assert_eq!(writes, EVERY_CREATE[13..], "only what was missing");
    assert!(line.record().is_some());
}

#[test]
fn plan_touches_nothing() {
    let line = Line::new();
    let (done, writes) = line.writes_of(|l| l.setup(&["--plan"]));
    assert!(done.unwrap());
    assert!(writes.is_empty(), "{writes:?}");
    assert!(line.account.state().roles.is_empty());
    assert!(line.record().is_none());

    // Part-way, and with drift: still nothing.
    line.account
        .state()
        .denied
        .insert("iot:CreatePolicy".into());
    assert!(line.setup(&[]).is_err());
    line.account.state().denied.clear();
    let (done, writes) = line.writes_of(|l| l.setup(&["--plan", "--update-drifted"]));
    assert!(done.unwrap());
    assert!(writes.is_empty(), "{writes:?}");
    assert!(line.account.state().templates.is_empty());
}

#[test]
fn a_create_that_loses_a_race_settles_the_resource_as_found() {
    let line = Line::new();
    let raced = [
        "iot:CreateRoleAlias",
        "iam:CreateRole",
        "lambda:CreateFunction",
    ];
    line.account.state().races = raced.iter().map(|a| a.to_string()).collect();
    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(
        done.unwrap(),
        "another run made them alike: nothing to report"
    );
    assert_eq!(
        writes, EVERY_CREATE,
        "one create each, answered \"already exists\""
    );
    let state = line.account.state();
    assert!(state.races.is_empty(), "every race was run");
    assert!(state
        .role_aliases
        .contains_key("GreengrassCoreTokenExchangeRoleAlias"));
    let template = &state.templates["LineOneTemplate"];
    let hook = &state.functions["ClaimfabClaimBinding"].arn;
    assert_eq!(
        template.hook_arn.as_ref(),
        Some(hook),
        "what the later steps learnt"
    );
    drop(state);
    let (done, writes) = line.writes_of(|l| l.setup(&[]));
    assert!(done.unwrap() && writes.is_empty(), "{writes:?}");
}

#[test]
fn a_name_taken_by_a_resource_setup_cannot_read_stops_with_the_fix() {
    let line = Line::new();
    // A policy of the same name under another path: GetPolicy by setup's ARN finds nothing,
    // CreatePolicy answers EntityAlreadyExists.
    let elsewhere =
        format!("arn:aws:iam::{ACCOUNT}:policy/factory/GreengrassV2TokenExchangeRoleAccess");
    line.account
        .state()
        .iam_policies
        .insert(elsewhere, vec!["{}".into()]);
    let error = line.setup(&[]).unwrap_err().to_string();
    let at = "setup stopped at iam policy GreengrassV2TokenExchangeRoleAccess";
    assert!(error.starts_with(at), "{error}");
    assert!(
        error.contains("the name is taken by another resource"),
        "{error}"
    );
    assert!(error.contains("EntityAlreadyExists"), "{error}");
    assert_eq!(line.account.writes(), EVERY_CREATE[..2]);
}

#[test]
fn the_fake_answers_with_aws_codes() {
    // The fake's refusals are read by the same code table as AWS's answers.
    let line = Line::new();
    line.account
        .state()
        .denied
        .insert("sts:GetCallerIdentity".into());
    let error = line.setup(&[]).unwrap_err().to_string();
    assert!(error.contains("access denied (AccessDenied:"), "{error}");
}
