//! What the one-time account setup needs of AWS: [`AccountApi`], the reads and writes of
//! IAM (roles, managed policies, attachments), AWS IoT (role alias, policies, thing group,
//! endpoints, provisioning template), Lambda (the claim-binding hook and its resource
//! policy) and STS (who the caller is), with the shapes they read and write. No SDK types:
//! `aws::AccountClient` implements it against AWS, tests in memory.
//!
//! Every call answers with an [`AwsError`] whose kind comes from AWS's error code, so setup
//! decides on the kind (absent, already there, refused) and never on a message.

use std::collections::BTreeMap;

use super::{AwsError, EndpointKind, TemplateInfo};

/// An IAM role as setup sees it.
#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub arn: String,
    /// The trust policy, as IAM returns it (URL-encoded JSON).
    pub trust_policy: String,
}

/// A policy (IAM managed or IoT) and its default version's document.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub arn: String,
    pub document: String,
}

/// An IoT role alias.
#[derive(Debug, Clone)]
pub struct RoleAliasInfo {
    pub arn: String,
    pub role_arn: String,
    pub credential_duration_seconds: i32,
}

/// The desired settings of a provisioning template.
#[derive(Debug, Clone)]
pub struct TemplateSpec<'a> {
    pub name: &'a str,
    pub body: &'a str,
    pub role_arn: &'a str,
    pub hook_arn: Option<&'a str>,
    pub description: &'a str,
}

/// A Lambda function as setup compares it.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub arn: String,
    pub code_sha256: String,
    pub role: String,
    pub handler: String,
    pub runtime: String,
    pub timeout: i32,
    pub memory_mb: i32,
    pub environment: BTreeMap<String, String>,
}

/// The desired Lambda function.
#[derive(Debug, Clone)]
pub struct FunctionSpec<'a> {
    pub name: &'a str,
    pub package: &'a [u8],
    pub role_arn: &'a str,
    pub handler: &'a str,
    pub runtime: &'a str,
    pub timeout: i32,
    pub memory_mb: i32,
    pub environment: &'a BTreeMap<String, String>,
}

/// The calls of `claimfab setup`. Reads answer `None` for a resource that is not there;
/// creates answer [`AwsError::AlreadyExists`] (Lambda: [`AwsError::Conflict`]) for one that
/// is. Setup runs its steps one after another on one task, so the futures need not be
/// `Send`.
#[allow(async_fn_in_trait)]
pub trait AccountApi {
    /// The region calls go to.
    fn region(&self) -> &str;

    /// STS GetCallerIdentity: the caller's ARN, which names partition and account.
    async fn caller_arn(&self) -> Result<String, AwsError>;

    /// IoT DescribeEndpoint.
    async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError>;

    // ---- IAM ----

    /// GetRole.
    async fn get_role(&self, name: &str) -> Result<Option<RoleInfo>, AwsError>;

    /// CreateRole.
    async fn create_role(&self, name: &str, trust_policy: &str) -> Result<(), AwsError>;

    /// UpdateAssumeRolePolicy.
    async fn update_trust_policy(&self, role: &str, trust_policy: &str) -> Result<(), AwsError>;

    /// GetPolicy + GetPolicyVersion (default) of a customer-managed policy.
    async fn get_iam_policy(&self, arn: &str) -> Result<Option<PolicyInfo>, AwsError>;

    /// CreatePolicy.
    async fn create_iam_policy(&self, name: &str, document: &str) -> Result<(), AwsError>;

    /// CreatePolicyVersion as the default, the oldest non-default version deleted first
    /// when the policy already keeps the most AWS allows.
    async fn update_iam_policy(&self, arn: &str, document: &str) -> Result<(), AwsError>;

    /// ListAttachedRolePolicies, as ARNs.
    async fn attached_role_policies(&self, role: &str) -> Result<Vec<String>, AwsError>;

    /// AttachRolePolicy.
    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), AwsError>;

    // ---- IoT ----

    /// DescribeRoleAlias.
    async fn describe_role_alias(&self, alias: &str) -> Result<Option<RoleAliasInfo>, AwsError>;

    /// CreateRoleAlias.
    async fn create_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError>;

    /// UpdateRoleAlias.
    async fn update_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError>;

    /// GetPolicy: ARN and default version's document.
    async fn get_iot_policy(&self, name: &str) -> Result<Option<PolicyInfo>, AwsError>;

    /// CreatePolicy.
    async fn create_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError>;

    /// CreatePolicyVersion as the default, making room first like [`Self::update_iam_policy`].
    async fn update_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError>;

    /// DescribeThingGroup, as its ARN.
    async fn thing_group_arn(&self, name: &str) -> Result<Option<String>, AwsError>;

    /// CreateThingGroup.
    async fn create_thing_group(&self, name: &str) -> Result<(), AwsError>;

    /// DescribeProvisioningTemplate.
    async fn describe_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError>;

    /// CreateProvisioningTemplate, enabled.
    async fn create_template(&self, spec: &TemplateSpec<'_>) -> Result<(), AwsError>;

    /// Brings an existing template to `spec`: a new default version for the body when it
    /// changed (making room first), then description, role, hook and enabled.
    async fn update_template(&self, spec: &TemplateSpec<'_>, body: bool) -> Result<(), AwsError>;

    // ---- Lambda ----

    /// GetFunction.
    async fn get_function(&self, name: &str) -> Result<Option<FunctionInfo>, AwsError>;

    /// CreateFunction.
    async fn create_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError>;

    /// UpdateFunctionCode, then UpdateFunctionConfiguration (role, handler, runtime, timeout,
    /// memory, environment), the latter again while the code update is still in progress.
    async fn update_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError>;

    /// GetPolicy: the function's resource policy, `None` when it has none.
    async fn function_policy(&self, function_arn: &str) -> Result<Option<String>, AwsError>;

    /// AddPermission: AWS IoT may invoke the function on behalf of `account_id` only
    /// (against the confused-deputy problem; see `core::account_documents::HookPermission`).
    async fn allow_iot_invoke(
        &self,
        function_arn: &str,
        statement_id: &str,
        account_id: &str,
    ) -> Result<(), AwsError>;

    /// RemovePermission (to replace a statement that differs).
    async fn remove_permission(
        &self,
        function_arn: &str,
        statement_id: &str,
    ) -> Result<(), AwsError>;
}
