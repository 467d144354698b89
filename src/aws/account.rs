//! [`AccountClient`]: the calls of `claimfab setup` ([`AccountApi`]) against IAM, AWS IoT,
//! Lambda and STS. Like [`Iot`](super::Iot), every request goes through
//! [`Calls::call`](super::calls::Calls::call), paced, counted and retried there with the
//! SDK's own retries off; composite updates (a new default policy or template version, room
//! made for it first) are made of such calls.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_sdk_iot::types::ProvisioningHook;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{Environment, FunctionCode, Runtime};

use super::calls::{Api, Calls};
use super::config::{load_config, AwsSettings};
use super::errors::found;
use super::iot::{describe_endpoint, describe_template};
use super::versions::{version_to_drop, Version};
use crate::cloud::{
    AccountApi, AwsError, EndpointKind, FunctionInfo, FunctionSpec, PolicyInfo, RoleAliasInfo,
    RoleInfo, TemplateInfo, TemplateSpec,
};
use crate::core::station_config::LimitsSection;

/// The IAM, IoT, Lambda and STS clients of the one-time account setup.
pub struct AccountClient {
    iot: aws_sdk_iot::Client,
    iam: aws_sdk_iam::Client,
    lambda: aws_sdk_lambda::Client,
    sts: aws_sdk_sts::Client,
    region: String,
    calls: Calls,
}

impl AccountClient {
    /// Connects like [`Iot::connect`](super::Iot::connect), each client with the SDK's
    /// retries off.
    pub async fn connect(settings: &AwsSettings, limits: &LimitsSection) -> Result<Self, String> {
        let (config, region) = load_config(settings, limits.max_attempts).await?;
        let off = RetryConfig::disabled;
        let iot = aws_sdk_iot::config::Builder::from(&config).retry_config(off());
        let iam = aws_sdk_iam::config::Builder::from(&config).retry_config(off());
        let lambda = aws_sdk_lambda::config::Builder::from(&config).retry_config(off());
        let sts = aws_sdk_sts::config::Builder::from(&config).retry_config(off());
        Ok(Self {
            iot: aws_sdk_iot::Client::from_conf(iot.build()),
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            lambda: aws_sdk_lambda::Client::from_conf(lambda.build()),
            sts: aws_sdk_sts::Client::from_conf(sts.build()),
            region,
            calls: Calls::new(limits),
        })
    }

    /// Requests sent so far per API, every attempt counted.
    pub fn call_counts(&self) -> Vec<(&'static str, u64)> {
        self.calls.counts()
    }
}

/// A Lambda function's environment variables.
fn lambda_environment(variables: &BTreeMap<String, String>) -> Environment {
    let variables = variables.clone().into_iter().collect();
    Environment::builder()
        .set_variables(Some(variables))
        .build()
}

/// The template's pre-provisioning hook, when it has one.
fn hook(arn: Option<&str>) -> Option<ProvisioningHook> {
    arn.and_then(|arn| ProvisioningHook::builder().target_arn(arn).build().ok())
}

impl AccountApi for AccountClient {
    fn region(&self) -> &str {
        &self.region
    }

    async fn caller_arn(&self) -> Result<String, AwsError> {
        let output = call!(
            self.calls,
            GetCallerIdentity,
            self.sts.get_caller_identity()
        )?;
        output
            .arn
            .ok_or_else(|| AwsError::Uncertain("GetCallerIdentity returned no ARN".into()))
    }

    async fn describe_endpoint(&self, kind: EndpointKind) -> Result<String, AwsError> {
        describe_endpoint(&self.iot, &self.calls, kind).await
    }

    async fn get_role(&self, name: &str) -> Result<Option<RoleInfo>, AwsError> {
        let output = found(call!(
            self.calls,
            GetRole,
            self.iam.get_role().role_name(name)
        ))?;
        Ok(output.and_then(|o| o.role).map(|role| RoleInfo {
            arn: role.arn,
            trust_policy: role.assume_role_policy_document.unwrap_or_default(),
        }))
    }

    async fn create_role(&self, name: &str, trust_policy: &str) -> Result<(), AwsError> {
        let request = self.iam.create_role().role_name(name);
        let request = request.assume_role_policy_document(trust_policy);
        call!(self.calls, CreateRole, request.clone()).map(drop)
    }

    async fn update_trust_policy(&self, role: &str, trust_policy: &str) -> Result<(), AwsError> {
        let request = self.iam.update_assume_role_policy().role_name(role);
        let request = request.policy_document(trust_policy);
        call!(self.calls, UpdateAssumeRolePolicy, request.clone()).map(drop)
    }

    async fn get_iam_policy(&self, arn: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let request = self.iam.get_policy().policy_arn(arn);
        let policy = found(call!(self.calls, IamGetPolicy, request.clone()))?;
        let Some(policy) = policy.and_then(|o| o.policy) else {
            return Ok(None);
        };
        let version = policy.default_version_id.unwrap_or_else(|| "v1".into());
        let request = self.iam.get_policy_version().policy_arn(arn);
        let output = call!(
            self.calls,
            GetPolicyVersion,
            request.clone().version_id(&version)
        )?;
        let document = output.policy_version.and_then(|v| v.document);
        Ok(Some(PolicyInfo {
            arn: arn.to_string(),
            document: document.unwrap_or_default(),
        }))
    }

    async fn create_iam_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let request = self.iam.create_policy().policy_name(name);
        let request = request.policy_document(document);
        call!(self.calls, IamCreatePolicy, request.clone()).map(drop)
    }

    async fn update_iam_policy(&self, arn: &str, document: &str) -> Result<(), AwsError> {
        let list = self.iam.list_policy_versions().policy_arn(arn);
        let versions = call!(self.calls, IamListPolicyVersions, list.clone())?.versions;
        let versions = versions.unwrap_or_default().into_iter();
        if let Some(oldest) = version_to_drop(versions.map(Version::parts)) {
            let delete = self.iam.delete_policy_version().policy_arn(arn);
            call!(
                self.calls,
                IamDeletePolicyVersion,
                delete.clone().version_id(&oldest)
            )?;
        }
        let create = self.iam.create_policy_version().policy_arn(arn);
        let create = create.policy_document(document).set_as_default(true);
        call!(self.calls, IamCreatePolicyVersion, create.clone()).map(drop)
    }

    async fn attached_role_policies(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let request = self.iam.list_attached_role_policies().role_name(role);
        let output = call!(self.calls, ListAttachedRolePolicies, request.clone())?;
        let attached = output.attached_policies.unwrap_or_default();
        Ok(attached.into_iter().filter_map(|p| p.policy_arn).collect())
    }

    async fn attach_role_policy(&self, role: &str, policy_arn: &str) -> Result<(), AwsError> {
        let request = self.iam.attach_role_policy().role_name(role);
        call!(
            self.calls,
            AttachRolePolicy,
            request.clone().policy_arn(policy_arn)
        )
        .map(drop)
    }

    async fn describe_role_alias(&self, alias: &str) -> Result<Option<RoleAliasInfo>, AwsError> {
        let request = self.iot.describe_role_alias().role_alias(alias);
        let output = found(call!(self.calls, DescribeRoleAlias, request.clone()))?;
        let description = output.and_then(|o| o.role_alias_description);
        Ok(description.map(|d| RoleAliasInfo {
            arn: d.role_alias_arn.unwrap_or_default(),
            role_arn: d.role_arn.unwrap_or_default(),
            credential_duration_seconds: d.credential_duration_seconds.unwrap_or(3600),
        }))
    }

    async fn create_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError> {
        let request = self
            .iot
            .create_role_alias()
            .role_alias(alias)
            .role_arn(role);
        let request = request.credential_duration_seconds(secs);
        call!(self.calls, CreateRoleAlias, request.clone()).map(drop)
    }

    async fn update_role_alias(&self, alias: &str, role: &str, secs: i32) -> Result<(), AwsError> {
        let request = self
            .iot
            .update_role_alias()
            .role_alias(alias)
            .role_arn(role);
        let request = request.credential_duration_seconds(secs);
        call!(self.calls, UpdateRoleAlias, request.clone()).map(drop)
    }

    async fn get_iot_policy(&self, name: &str) -> Result<Option<PolicyInfo>, AwsError> {
        let request = self.iot.get_policy().policy_name(name);
        let output = found(call!(self.calls, GetPolicy, request.clone()))?;
        Ok(output.map(|o| PolicyInfo {
            arn: o.policy_arn.unwrap_or_default(),
            document: o.policy_document.unwrap_or_default(),
        }))
    }

    async fn create_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let request = self.iot.create_policy().policy_name(name);
        let request = request.policy_document(document);
        call!(self.calls, CreatePolicy, request.clone()).map(drop)
    }

    async fn update_iot_policy(&self, name: &str, document: &str) -> Result<(), AwsError> {
        let list = self.iot.list_policy_versions().policy_name(name);
        let versions = call!(self.calls, ListPolicyVersions, list.clone())?.policy_versions;
        let versions = versions.unwrap_or_default().into_iter();
        if let Some(oldest) = version_to_drop(versions.map(Version::parts)) {
            let delete = self.iot.delete_policy_version().policy_name(name);
            let delete = delete.policy_version_id(oldest);
            call!(self.calls, DeletePolicyVersion, delete.clone())?;
        }
        let create = self.iot.create_policy_version().policy_name(name);
        let create = create.policy_document(document).set_as_default(true);
        call!(self.calls, CreatePolicyVersion, create.clone()).map(drop)
    }

    async fn thing_group_arn(&self, name: &str) -> Result<Option<String>, AwsError> {
        let request = self.iot.describe_thing_group().thing_group_name(name);
        let output = found(call!(self.calls, DescribeThingGroup, request.clone()))?;
        Ok(output.and_then(|o| o.thing_group_arn))
    }

    async fn create_thing_group(&self, name: &str) -> Result<(), AwsError> {
        let request = self.iot.create_thing_group().thing_group_name(name);
        call!(self.calls, CreateThingGroup, request.clone()).map(drop)
    }

    async fn describe_template(&self, name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        let describe = || describe_template(&self.iot, name);
        self.calls
            .call(Api::DescribeProvisioningTemplate, describe)
            .await
    }

    async fn create_template(&self, spec: &TemplateSpec<'_>) -> Result<(), AwsError> {
        let request = (self.iot.create_provisioning_template())
            .template_name(spec.name)
            .description(spec.description)
            .template_body(spec.body)
            .enabled(true)
            .provisioning_role_arn(spec.role_arn)
            .set_pre_provisioning_hook(hook(spec.hook_arn));
        call!(self.calls, CreateProvisioningTemplate, request.clone()).map(drop)
    }

    async fn update_template(&self, spec: &TemplateSpec<'_>, body: bool) -> Result<(), AwsError> {
        if body {
            self.new_template_version(spec).await?;
        }
        let hook = hook(spec.hook_arn);
        let request = (self.iot.update_provisioning_template())
            .template_name(spec.name)
            .description(spec.description)
            .enabled(true)
            .provisioning_role_arn(spec.role_arn)
            .set_remove_pre_provisioning_hook(hook.is_none().then_some(true))
            .set_pre_provisioning_hook(hook);
        call!(self.calls, UpdateProvisioningTemplate, request.clone()).map(drop)
    }

    async fn get_function(&self, name: &str) -> Result<Option<FunctionInfo>, AwsError> {
        let request = self.lambda.get_function().function_name(name);
        let output = found(call!(self.calls, GetFunction, request.clone()))?;
        Ok(output.and_then(|o| o.configuration).map(|c| FunctionInfo {
            arn: c.function_arn.unwrap_or_default(),
            code_sha256: c.code_sha256.unwrap_or_default(),
            role: c.role.unwrap_or_default(),
            handler: c.handler.unwrap_or_default(),
            runtime: c.runtime.map(|r| r.as_str().into()).unwrap_or_default(),
            timeout: c.timeout.unwrap_or_default(),
            memory_mb: c.memory_size.unwrap_or_default(),
            environment: (c.environment.and_then(|e| e.variables))
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }))
    }

    async fn create_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError> {
        let code = FunctionCode::builder().zip_file(Blob::new(spec.package));
        let request = (self.lambda.create_function())
            .function_name(spec.name)
            .runtime(Runtime::from(spec.runtime))
            .role(spec.role_arn)
            .handler(spec.handler)
            .timeout(spec.timeout)
            .memory_size(spec.memory_mb)
            .environment(lambda_environment(spec.environment))
            .code(code.build());
        call!(self.calls, CreateFunction, request.clone()).map(drop)
    }

    async fn update_function(&self, spec: &FunctionSpec<'_>) -> Result<(), AwsError> {
        let code = self.lambda.update_function_code().function_name(spec.name);
        let code = code.zip_file(Blob::new(spec.package));
        call!(self.calls, UpdateFunctionCode, code.clone())?;
        let request = (self.lambda.update_function_configuration())
            .function_name(spec.name)
            .runtime(Runtime::from(spec.runtime))
            .role(spec.role_arn)
            .handler(spec.handler)
            .timeout(spec.timeout)
            .memory_size(spec.memory_mb)
            .environment(lambda_environment(spec.environment));
        use backon::{ConstantBuilder, Retryable};
        // Lambda refuses a configuration update while the code update is still in progress.
        let pace = ConstantBuilder::default().with_delay(Duration::from_secs(2));
        (|| async { call!(self.calls, UpdateFunctionConfiguration, request.clone()) })
            .retry(pace.with_max_times(30))
            .when(|e| matches!(e, AwsError::Conflict(_)))
            .await
            .map(drop)
    }

    async fn function_policy(&self, function_arn: &str) -> Result<Option<String>, AwsError> {
        let request = self.lambda.get_policy().function_name(function_arn);
        let output = found(call!(self.calls, LambdaGetPolicy, request.clone()))?;
        Ok(output.and_then(|o| o.policy))
    }

    async fn allow_iot_invoke(
        &self,
        function_arn: &str,
        statement_id: &str,
        account_id: &str,
    ) -> Result<(), AwsError> {
        let request = (self.lambda.add_permission())
            .function_name(function_arn)
            .statement_id(statement_id)
            .action("lambda:InvokeFunction")
            .principal("iot.amazonaws.com")
            .source_account(account_id);
        call!(self.calls, AddPermission, request.clone()).map(drop)
    }

    async fn remove_permission(
        &self,
        function_arn: &str,
        statement_id: &str,
    ) -> Result<(), AwsError> {
        let request = self.lambda.remove_permission().function_name(function_arn);
        let request = request.statement_id(statement_id);
        call!(self.calls, RemovePermission, request.clone()).map(drop)
    }
}

impl AccountClient {
    /// A new default version of a template's body, the oldest non-default version deleted
    /// first when the template already keeps the most AWS allows.
    async fn new_template_version(&self, spec: &TemplateSpec<'_>) -> Result<(), AwsError> {
        let list = self.iot.list_provisioning_template_versions();
        let list = list.template_name(spec.name);
        let versions = call!(self.calls, ListProvisioningTemplateVersions, list.clone())?;
        let versions = versions.versions.unwrap_or_default().into_iter();
        if let Some(oldest) = version_to_drop(versions.map(Version::parts)) {
            let delete = self.iot.delete_provisioning_template_version();
            let delete = delete.template_name(spec.name).version_id(oldest);
            call!(
                self.calls,
                DeleteProvisioningTemplateVersion,
                delete.clone()
            )?;
        }
        let create = self.iot.create_provisioning_template_version();
        let create = create.template_name(spec.name).template_body(spec.body);
        let create = create.set_as_default(true);
        call!(
            self.calls,
            CreateProvisioningTemplateVersion,
            create.clone()
        )
        .map(drop)
    }
}
