//! An AWS account in memory, as `claimfab setup` sees it through [`AccountApi`]: IAM roles,
//! managed policies (with versions) and attachments, AWS IoT role aliases, policies (with
//! versions), thing groups and provisioning templates, Lambda functions and their resource
//! policies. It answers like AWS, with AWS's error codes read by [`AwsError::from_code`]:
//! reads find nothing (`None`), a create of a name taken answers EntityAlreadyExists /
//! ResourceAlreadyExistsException / ResourceConflictException. Faults a test turns on:
//! `deny` an IAM action (AccessDenied, as AWS answers an identity without the permission),
//! and `race` a create action (another run makes the resource just before this one's create,
//! which is then answered "already exists"). Every call is logged as its IAM action and
//! resource, so tests assert what was called, in what order, and what the account holds.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use claimfab::cloud::{
    AccountApi, AwsError, EndpointKind, FunctionInfo, FunctionSpec, PolicyInfo, RoleAliasInfo,
    RoleInfo, TemplateInfo, TemplateSpec,
};
use claimfab::core::account_documents::lambda_code_sha256;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// What the account holds, and the faults in force.
#[derive(Default)]
pub struct State {
    /// Role name -> trust policy.
    pub roles: BTreeMap<String, String>,
    /// IAM policy ARN -> its versions' documents, the last the default.
    pub iam_policies: BTreeMap<String, Vec<String>>,
    /// (role name, policy ARN).
    pub attachments: BTreeSet<(String, String)>,
    /// Alias -> (role ARN, credential seconds).
    pub role_aliases: BTreeMap<String, (String, i32)>,
    /// IoT policy name -> its versions' documents, the last the default.
    pub iot_policies: BTreeMap<String, Vec<String>>,
    pub thing_groups: BTreeSet<String>,
    pub templates: BTreeMap<String, TemplateInfo>,
    pub functions: BTreeMap<String, FunctionInfo>,
    /// Function ARN -> statement id -> statement.
    pub permissions: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// IAM actions answered AccessDenied.
    pub denied: BTreeSet<String>,
    /// Create actions another run gets in before (once each).
    pub races: BTreeSet<String>,
    /// Every call, as "action resource", in order.
    pub log: Vec<String>,
}

/// The account; `state()` to arrange and to look.
#[derive(Default)]
pub struct FakeAccount {
    state: Mutex<State>,
}

fn error(code: &str, status: u16, message: String) -> AwsError {
    AwsError::from_code(code, Some(status), format!("{code}: {message}"))
}

fn iam_arn(resource: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:{resource}")
}

fn iot_arn(resource: &str) -> String {
    format!("arn:aws:iot:{REGION}:{ACCOUNT}:{resource}")
}

/// A name in the account's name space: absent, or taken.
fn vacant<T>(taken: Option<T>, code: &str, status: u16, name: &str) -> Result<(), AwsError> {
    match taken {
        None => Ok(()),
        Some(_) => Err(error(code, status, format!("{name} already exists"))),
    }
}

impl FakeAccount {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Logs the call and answers AccessDenied when the action is denied.
    fn allow(&self, action: &str, resource: &str) -> Result<MutexGuard<'_, State>, AwsError> {
        let mut state = self.state();
        state.log.push(format!("{action} {resource}"));
        if state.denied.contains(action) {
            let message = format!("not authorized to perform: {action} on resource: {resource}");
            return Err(error("AccessDenied", 403, message));
        }
        Ok(state)
    }

    /// Logs and checks a create; when another run races it, lets that run make the resource
    /// first (`make`), and answers as AWS then does.
    fn create(
        &self,
        action: &str,
        resource: &str,
        make: impl Fn(&mut State) -> Result<(), AwsError>,
    ) -> Result<(), AwsError> {
        let mut state = self.allow(action, resource)?;
        if state.races.remove(action) {
            make(&mut state)?;
        }
        make(&mut state)
    }

    /// The writes made so far (every call but reads), in order.
    pub fn writes(&self) -> Vec<String> {
        let reads = ["Get", "Describe", "List"];
        let state = self.state();
        let is_read = |call: &&String| {
            let action = call.split([':', ' ']).nth(1).unwrap_or_default();
            reads.iter().any(|r| action.starts_with(r))
        };
        state.log.iter().filter(|c| !is_read(c)).cloned().collect()
    }
}

/// Adds a version as the default, AWS's limit of five kept by dropping the oldest.
fn new_version(versions: &mut Vec<String>, document: &str) {
    if versions.len() == 5 {
        versions.remove(0);
    }
    versions.push(document.to_string());
}

/// The default version of a policy.
fn policy(arn: String, versions: Option<&Vec<String>>) -> Option<PolicyInfo> {
    let document = versions?.last()?.clone();
    Some(PolicyInfo { arn, document })
}

fn template(spec: &TemplateSpec<'_>) -> TemplateInfo {
    TemplateInfo {
        arn: iot_arn(&format!("provisioningtemplate/{}", spec.name)),
        body: spec.body.into(),
        enabled: true,
        role_arn: spec.role_arn.into(),
        hook_arn: spec.hook_arn.map(String::from),
        description: spec.description.into(),
    }
}

fn function(spec: &FunctionSpec<'_>) -> FunctionInfo {
    FunctionInfo {
        arn: format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", spec.name),
        code_sha256: lambda_code_sha256(spec.package),
        role: spec.role_arn.into(),
        handler: spec.handler.into(),
        runtime: spec.runtime.into(),
        timeout: spec.timeout,
        memory_mb: spec.memory_mb,
        environment: spec.environment.clone(),
    }
}

fn not_found(what: &str) -> AwsError {
    error(
        "ResourceNotFoundException",
        404,
        format!("{what} not found"),
    )
}

mod api;
