//! The kinds of AWS resource setup settles, one [`Resource`] impl each: role, IAM or IoT
//! policy, attachment, role alias, thing group, Lambda function and permission, provisioning
//! template. For each: how it is read through [`AccountApi`], compared with what the station
//! wants, created and updated; the loop that applies a mode is `settle`'s.

use super::settle::*;
use super::*;

/// An IAM role with its trust policy.
pub(super) struct Role {
    name: String,
    trust: Value,
}

impl Role {
    pub(super) fn new(name: &str, trust: Value) -> Self {
        let name = name.into();
        Self { name, trust }
    }
}

impl Resource for Role {
    type Current = RoleInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::ROLE
    }

    async fn read(&self, api: &impl AccountApi, _: &Context) -> Result<Option<RoleInfo>, AwsError> {
        api.get_role(&self.name).await
    }

    fn learn(&self, current: &RoleInfo, ctx: &mut Context) {
        ctx.roles.insert(self.name.clone(), current.arn.clone());
    }

    fn differs(&self, current: &RoleInfo, _: &Context) -> Option<String> {
        document_differs(&current.trust_policy, &self.trust, "trust policy")
    }

    async fn create(&self, api: &impl AccountApi, _: &Context) -> Result<(), AwsError> {
        let trust = self.trust.to_string();
        api.create_role(&self.name, &trust).await
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        _: &Context,
        _: &RoleInfo,
    ) -> Result<(), AwsError> {
        let trust = self.trust.to_string();
        api.update_trust_policy(&self.name, &trust).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.role(&self.name)
    }
}

/// A policy whose default version holds `document`: a customer-managed IAM policy, or an
/// IoT policy. The two differ only in their calls.
pub(super) struct Policy {
    service: Service,
    name: String,
    arn: String,
    document: Value,
}

/// Which API a [`Policy`] is in.
#[derive(Debug, Clone, Copy)]
pub(super) enum Service {
    Iam,
    Iot,
}

impl Policy {
    pub(super) fn new(account: &Account, service: Service, name: &str, document: Value) -> Self {
        let arn = match service {
            Service::Iam => account.iam_arn(&format!("policy/{name}")),
            Service::Iot => account.iot_arn(&format!("policy/{name}")),
        };
        let name = name.into();
        Self {
            service,
            name,
            arn,
            document,
        }
    }
}

impl Resource for Policy {
    type Current = PolicyInfo;

    fn kind(&self) -> &'static Kind {
        match self.service {
            Service::Iam => &Kind::IAM_POLICY,
            Service::Iot => &Kind::IOT_POLICY,
        }
    }

    async fn read(
        &self,
        api: &impl AccountApi,
        _: &Context,
    ) -> Result<Option<PolicyInfo>, AwsError> {
        match self.service {
            Service::Iam => api.get_iam_policy(&self.arn).await,
            Service::Iot => api.get_iot_policy(&self.name).await,
        }
    }

    fn differs(&self, current: &PolicyInfo, _: &Context) -> Option<String> {
        document_differs(&current.document, &self.document, "policy document")
    }

    async fn create(&self, api: &impl AccountApi, _: &Context) -> Result<(), AwsError> {
        let (name, document) = (&self.name, &self.document.to_string());
        match self.service {
            Service::Iam => api.create_iam_policy(name, document).await,
            Service::Iot => api.create_iot_policy(name, document).await,
        }
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        _: &Context,
        _: &PolicyInfo,
    ) -> Result<(), AwsError> {
        let document = &self.document.to_string();
        match self.service {
            Service::Iam => api.update_iam_policy(&self.arn, document).await,
            Service::Iot => api.update_iot_policy(&self.name, document).await,
        }
    }

    fn arn<'a>(&'a self, _: &'a Context) -> &'a str {
        &self.arn
    }
}

/// An IAM managed policy attached to a role.
pub(super) struct Attachment {
    role: String,
    policy_arn: String,
}

impl Attachment {
    pub(super) fn new(role: &str, policy_arn: &str) -> Self {
        let (role, policy_arn) = (role.into(), policy_arn.into());
        Self { role, policy_arn }
    }
}

impl Resource for Attachment {
    type Current = ();

    fn kind(&self) -> &'static Kind {
        &Kind::ATTACHMENT
    }

    async fn read(&self, api: &impl AccountApi, _: &Context) -> Result<Option<()>, AwsError> {
        match api.attached_role_policies(&self.role).await {
            Ok(arns) => Ok(arns.contains(&self.policy_arn).then_some(())),
            // A role that does not exist yet (planning) has nothing attached.
            Err(AwsError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, api: &impl AccountApi, _: &Context) -> Result<(), AwsError> {
        api.attach_role_policy(&self.role, &self.policy_arn).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.role(&self.role)
    }
}

/// The role alias, pointing at the token exchange role with the station's credential
/// duration.
pub(super) struct RoleAlias {
    name: String,
    arn: String,
    /// The token exchange role's name.
    role: String,
    seconds: i32,
}

impl RoleAlias {
    pub(super) fn new(station: &StationConfig, account: &Account) -> Self {
        let name = &station.provisioning.role_alias;
        Self {
            name: name.clone(),
            arn: account.role_alias_arn(name),
            role: station.setup.token_exchange_role.clone(),
            seconds: station.setup.credential_duration_seconds as i32,
        }
    }
}

impl Resource for RoleAlias {
    type Current = RoleAliasInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::ROLE_ALIAS
    }

    async fn read(
        &self,
        api: &impl AccountApi,
        _: &Context,
    ) -> Result<Option<RoleAliasInfo>, AwsError> {
        api.describe_role_alias(&self.name).await
    }

    fn differs(&self, current: &RoleAliasInfo, ctx: &Context) -> Option<String> {
        if current.role_arn != ctx.role(&self.role) {
            Some(format!("points at {}", current.role_arn))
        } else if current.credential_duration_seconds != self.seconds {
            let seconds = current.credential_duration_seconds;
            Some(format!("credential duration is {seconds} s"))
        } else {
            None
        }
    }

    async fn create(&self, api: &impl AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let role = ctx.role(&self.role);
        api.create_role_alias(&self.name, role, self.seconds).await
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
        _: &RoleAliasInfo,
    ) -> Result<(), AwsError> {
        let role = ctx.role(&self.role);
        api.update_role_alias(&self.name, role, self.seconds).await
    }

    fn arn<'a>(&'a self, _: &'a Context) -> &'a str {
        &self.arn
    }

    fn passes<'a>(&'a self, ctx: &'a Context) -> Option<&'a str> {
        Some(ctx.role(&self.role))
    }
}

/// The thing group devices join.
pub(super) struct ThingGroup {
    name: String,
    arn: String,
}

impl ThingGroup {
    pub(super) fn new(account: &Account, name: &str) -> Self {
        let arn = account.iot_arn(&format!("thinggroup/{name}"));
        let name = name.into();
        Self { name, arn }
    }
}

impl Resource for ThingGroup {
    type Current = String;

    fn kind(&self) -> &'static Kind {
        &Kind::THING_GROUP
    }

    async fn read(&self, api: &impl AccountApi, _: &Context) -> Result<Option<String>, AwsError> {
        api.thing_group_arn(&self.name).await
    }

    async fn create(&self, api: &impl AccountApi, _: &Context) -> Result<(), AwsError> {
        api.create_thing_group(&self.name).await
    }

    fn arn<'a>(&'a self, _: &'a Context) -> &'a str {
        &self.arn
    }
}

/// claimfab's claim-binding hook: the function with the embedded code, run as its role.
pub(super) struct Function {
    name: String,
    package: Vec<u8>,
    /// The execution role's name.
    role: String,
    /// The function's environment: which policies mark a claim.
    environment: BTreeMap<String, String>,
}

impl Function {
    pub(super) fn new(name: &str, role: &str, claim_policy: &str) -> Self {
        let package = desired::claim_binding_package();
        let (name, role) = (name.into(), role.into());
        let environment = BTreeMap::from([(
            desired::CLAIM_POLICIES_VARIABLE.to_string(),
            claim_policy.to_string(),
        )]);
        Self {
            name,
            package,
            role,
            environment,
        }
    }

    pub(super) fn spec<'a>(&'a self, ctx: &'a Context) -> FunctionSpec<'a> {
        FunctionSpec {
            name: &self.name,
            package: &self.package,
            role_arn: ctx.role(&self.role),
            handler: desired::CLAIM_BINDING_HANDLER,
            runtime: desired::CLAIM_BINDING_RUNTIME,
            timeout: desired::CLAIM_BINDING_TIMEOUT_SECONDS,
            memory_mb: desired::CLAIM_BINDING_MEMORY_MB,
            environment: &self.environment,
        }
    }
}

impl Resource for Function {
    type Current = FunctionInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::FUNCTION
    }

    async fn read(
        &self,
        api: &impl AccountApi,
        _: &Context,
    ) -> Result<Option<FunctionInfo>, AwsError> {
        api.get_function(&self.name).await
    }

    fn learn(&self, current: &FunctionInfo, ctx: &mut Context) {
        ctx.hook = Some(current.arn.clone());
    }

    fn differs(&self, current: &FunctionInfo, ctx: &Context) -> Option<String> {
        let spec = self.spec(ctx);
        let what = if current.code_sha256 != desired::lambda_code_sha256(spec.package) {
            "code differs"
        } else if current.role != spec.role_arn {
            "execution role differs"
        } else if current.handler != spec.handler || current.runtime != spec.runtime {
            "handler or runtime differs"
        } else if current.timeout != spec.timeout {
            "timeout differs"
        } else if current.memory_mb != spec.memory_mb {
            "memory size differs"
        } else if &current.environment != spec.environment {
            "environment differs"
        } else {
            return None;
        };
        Some(what.into())
    }

    async fn create(&self, api: &impl AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let spec = self.spec(ctx);
        while_role_settles(|| api.create_function(&spec)).await
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
        _: &FunctionInfo,
    ) -> Result<(), AwsError> {
        api.update_function(&self.spec(ctx)).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.hook()
    }

    fn passes<'a>(&'a self, ctx: &'a Context) -> Option<&'a str> {
        Some(ctx.role(&self.role))
    }
}

/// The hook function's resource policy must let AWS IoT invoke it, for this template of this
/// account only (AWS's guide adds it; without it every device is refused).
pub(super) struct Permission {
    pub(super) sid: String,
    account_id: String,
}

impl Permission {
    pub(super) fn new(station: &StationConfig, account: &Account) -> Self {
        Self {
            sid: desired::hook_permission_id(&station.provisioning.template),
            account_id: account.account_id.clone(),
        }
    }
}

impl Resource for Permission {
    type Current = HookPermission;

    fn kind(&self) -> &'static Kind {
        &Kind::PERMISSION
    }

    async fn read(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
    ) -> Result<Option<HookPermission>, AwsError> {
        let policy = api.function_policy(ctx.hook()).await?;
        Ok(
            match desired::hook_permission(policy.as_deref(), &self.sid, &self.account_id) {
                HookPermission::Missing => None,
                found => Some(found),
            },
        )
    }

    fn differs(&self, current: &HookPermission, _: &Context) -> Option<String> {
        (*current == HookPermission::Differs).then(|| format!("statement {} differs", self.sid))
    }

    async fn create(&self, api: &impl AccountApi, ctx: &Context) -> Result<(), AwsError> {
        api.allow_iot_invoke(ctx.hook(), &self.sid, &self.account_id)
            .await
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
        _: &HookPermission,
    ) -> Result<(), AwsError> {
        api.remove_permission(ctx.hook(), &self.sid).await?;
        self.create(api, ctx).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.hook()
    }
}

/// The provisioning template: body, enabled, role, hook and description as desired.
pub(super) struct Template {
    name: String,
    arn: String,
    body: Value,
    /// `body` as the text AWS is given.
    text: String,
    /// The fleet provisioning role's name.
    role: String,
    description: String,
}

impl Template {
    pub(super) fn new(
        station: &StationConfig,
        account: &Account,
        core_policy: CorePolicy<'_>,
    ) -> Self {
        let p = &station.provisioning;
        let body = desired::provisioning_template_body(&TemplateShape {
            core_policy,
            thing_group: p.thing_group.as_deref(),
            exclusive_thing: station.setup.exclusive_thing_association,
        });
        Self {
            name: p.template.clone(),
            arn: account.iot_arn(&format!("provisioningtemplate/{}", p.template)),
            text: body.to_string(),
            body,
            role: station.setup.fleet_provisioning_role.clone(),
            description: station.setup.template_description.clone(),
        }
    }

    pub(super) fn spec<'a>(&'a self, ctx: &'a Context) -> TemplateSpec<'a> {
        TemplateSpec {
            name: &self.name,
            body: &self.text,
            role_arn: ctx.role(&self.role),
            hook_arn: ctx.hook.as_deref(),
            description: &self.description,
        }
    }

    pub(super) fn body_differs(&self, current: &TemplateInfo) -> bool {
        !desired::same_document(&current.body, &self.body)
    }
}

impl Resource for Template {
    type Current = TemplateInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::TEMPLATE
    }

    async fn read(
        &self,
        api: &impl AccountApi,
        _: &Context,
    ) -> Result<Option<TemplateInfo>, AwsError> {
        api.describe_template(&self.name).await
    }

    fn differs(&self, current: &TemplateInfo, ctx: &Context) -> Option<String> {
        let spec = self.spec(ctx);
        let what = if self.body_differs(current) {
            "template body differs".into()
        } else if !current.enabled {
            "template is disabled".into()
        } else if current.role_arn != spec.role_arn {
            format!("provisioning role is {}", current.role_arn)
        } else if current.hook_arn.as_deref() != spec.hook_arn {
            "pre-provisioning hook differs".into()
        } else if current.description != spec.description {
            "description differs".into()
        } else {
            return None;
        };
        Some(what)
    }

    async fn create(&self, api: &impl AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let spec = self.spec(ctx);
        while_role_settles(|| api.create_template(&spec)).await
    }

    async fn update(
        &self,
        api: &impl AccountApi,
        ctx: &Context,
        current: &TemplateInfo,
    ) -> Result<(), AwsError> {
        let body_changed = self.body_differs(current);
        api.update_template(&self.spec(ctx), body_changed).await
    }

    fn arn<'a>(&'a self, _: &'a Context) -> &'a str {
        &self.arn
    }

    fn passes<'a>(&'a self, ctx: &'a Context) -> Option<&'a str> {
        Some(ctx.role(&self.role))
    }
}
