//! The table of setup's steps, built once from the station: one [`Step`] a resource, in
//! dependency order (token exchange role, its access policy and attachment, role alias, core
//! devices' policy, fleet provisioning role and its managed policy, thing group, the
//! claim-binding hook's role, policy and function, AWS IoT's permission to invoke the hook,
//! template, claim policy), and the [`Context`] in which earlier steps leave what later ones
//! need.

use super::*;

/// One row of the table: a resource to settle, or none (the station asks for nothing of
/// this kind; the report still says so, in its place).
pub(super) struct Step {
    pub(super) kind: &'static str,
    /// The resource's name in the report.
    pub(super) name: String,
    /// What the step is for, in the list of steps not reached.
    pub(super) purpose: &'static str,
    pub(super) resource: Option<AnyResource>,
}

impl Step {
    fn new(purpose: &'static str, name: &str, resource: impl Into<AnyResource>) -> Self {
        let resource = resource.into();
        Self {
            kind: resource.kind().word,
            name: name.into(),
            purpose,
            resource: Some(resource),
        }
    }

    /// A step with nothing to do, reported as `ok` under `why`.
    fn none(kind: &'static Kind, purpose: &'static str, why: &str) -> Self {
        Self {
            kind: kind.word,
            name: why.into(),
            purpose,
            resource: None,
        }
    }
}

/// The steps of this station's setup, in dependency order.
pub(super) fn steps(station: &StationConfig, account: &Account, ctx: &Context) -> Vec<Step> {
    let p = &station.provisioning;
    let (core_step, core_policy) = core_policy(station, account);
    let mut steps = token_exchange_steps(station, account);
    steps.push(core_step);
    steps.extend(fleet_provisioning_steps(station, account));
    if station.setup.claim_binding {
        steps.extend(claim_binding_steps(station, account));
    }
    steps.push(hook_permission(station, account, ctx));
    let template = Template::new(station, account, core_policy);
    steps.push(Step::new("provisioning template", &p.template, template));
    // Scoped to this template, region and account.
    let claim = desired::claim_policy(account, &p.template);
    let claim = Policy::new(account, Service::Iot, &p.claim_policy, claim);
    steps.push(Step::new("claim policy", &p.claim_policy, claim));
    steps
}

/// The token exchange role, its access policy (attached), and the role alias devices use
/// to get its credentials.
fn token_exchange_steps(station: &StationConfig, account: &Account) -> Vec<Step> {
    let s = &station.setup;
    let access =
        desired::token_exchange_access_policy(&account.partition, s.artifact_bucket.as_deref());
    let mut steps = role_with_policy(
        [
            "token exchange role",
            "token exchange access policy",
            "access policy on token exchange role",
        ],
        account,
        (
            &s.token_exchange_role,
            desired::token_exchange_trust_policy(),
        ),
        (&s.token_exchange_access_policy, access),
    );
    let alias = RoleAlias::new(station, account);
    steps.push(Step::new(
        "role alias",
        &station.provisioning.role_alias,
        alias,
    ));
    steps
}

/// A role with its trust policy, a customer-managed policy, and the policy attached to the
/// role: three steps, each with its purpose.
fn role_with_policy(
    purposes: [&'static str; 3],
    account: &Account,
    (role, trust): (&str, Value),
    (policy, document): (&str, Value),
) -> Vec<Step> {
    let policy_arn = account.iam_arn(&format!("policy/{policy}"));
    let attachment = Attachment::new(role, &policy_arn);
    vec![
        Step::new(purposes[0], role, Role::new(role, trust)),
        Step::new(
            purposes[1],
            policy,
            Policy::new(account, Service::Iam, policy, document),
        ),
        Step::new(purposes[2], &format!("{policy} -> {role}"), attachment),
    ]
}

/// The core devices' policy: one named policy (the guide's), or, least privilege, none here
/// because the template makes one per device. Returns the step, and how the template
/// attaches the policy.
fn core_policy<'s>(station: &'s StationConfig, account: &Account) -> (Step, CorePolicy<'s>) {
    let s = &station.setup;
    let role_alias = &station.provisioning.role_alias;
    let core = desired::core_device_policy(account, s.core_policy_variant, role_alias);
    let purpose = "core devices' policy";
    match s.core_policy_variant {
        CorePolicyVariant::Guide => {
            let policy = Policy::new(account, Service::Iot, &s.core_policy, core);
            let step = Step::new(purpose, &s.core_policy, policy);
            (step, CorePolicy::Named(&s.core_policy))
        }
        CorePolicyVariant::LeastPrivilege => {
            let why = "(per device, made by the template)";
            let step = Step::none(&Kind::IOT_POLICY, purpose, why);
            (step, CorePolicy::PerDevice(core))
        }
    }
}

/// What the template's things need: the role AWS IoT provisions them as (with AWS's
/// managed policy for it), and the thing group they join, when the station names one.
fn fleet_provisioning_steps(station: &StationConfig, account: &Account) -> Vec<Step> {
    let role = &station.setup.fleet_provisioning_role;
    let trust = desired::fleet_provisioning_trust_policy();
    let registration = Attachment::new(role, THINGS_REGISTRATION_POLICY_ARN);
    let label = format!("AWSIoTThingsRegistration -> {role}");
    let purpose = "AWSIoTThingsRegistration on fleet provisioning role";
    let group = match &station.provisioning.thing_group {
        Some(group) => Step::new("thing group", group, ThingGroup::new(account, group)),
        None => Step::none(&Kind::THING_GROUP, "thing group", "(none named)"),
    };
    vec![
        Step::new("fleet provisioning role", role, Role::new(role, trust)),
        Step::new(purpose, &label, registration),
        group,
    ]
}

/// claimfab's claim-binding hook: an execution role that may only describe certificates, list
/// a certificate's policies and write logs, and the function with the embedded code, told the
/// station's claim policy.
fn claim_binding_steps(station: &StationConfig, account: &Account) -> Vec<Step> {
    let s = &station.setup;
    let (role, function) = (&s.claim_binding_role, &s.claim_binding_function);
    let access = desired::claim_binding_access_policy(account, function);
    let mut steps = role_with_policy(
        [
            "claim-binding hook's role",
            "claim-binding hook's access policy",
            "access policy on the hook's role",
        ],
        account,
        (role, desired::lambda_trust_policy()),
        (&format!("{role}Access"), access),
    );
    let hook = Function::new(function, role, &station.provisioning.claim_policy);
    steps.push(Step::new("claim-binding hook", function, hook));
    steps
}

/// AWS IoT's permission to invoke the pre-provisioning hook, when there is one.
fn hook_permission(station: &StationConfig, account: &Account, ctx: &Context) -> Step {
    let purpose = "AWS IoT may invoke the pre-provisioning hook";
    let Some(hook) = &ctx.hook else {
        let why = "(no pre-provisioning hook)";
        return Step::none(&Kind::PERMISSION, purpose, why);
    };
    let permission = Permission::new(station, account);
    // Named with the hook's ARN as known before any step runs: for claimfab's own hook, the
    // ARN AWS gives a function of that name (the steps call with the ARN GetFunction
    // returns, which is the same).
    let name = format!("{} on {hook}", permission.sid);
    Step::new(purpose, &name, permission)
}

/// What later steps take from earlier ones. It starts with the ARNs that setup gives what
/// it makes; a step that finds its resource in place puts the ARN AWS has instead (an
/// existing role's may have a path).
pub(super) struct Context {
    /// Role name -> ARN.
    pub(super) roles: HashMap<String, String>,
    /// The template's pre-provisioning hook: the station's, or claimfab's claim-binding
    /// function.
    pub(super) hook: Option<String>,
}

impl Context {
    pub(super) fn new(station: &StationConfig, account: &Account) -> Self {
        let s = &station.setup;
        let roles = [
            &s.token_exchange_role,
            &s.fleet_provisioning_role,
            &s.claim_binding_role,
        ];
        let roles = roles
            .into_iter()
            .map(|name| (name.clone(), account.iam_arn(&format!("role/{name}"))))
            .collect();
        let hook = match s.claim_binding {
            true => Some(account.function_arn(&s.claim_binding_function)),
            false => s.pre_provisioning_hook_arn.clone(),
        };
        Self { roles, hook }
    }

    /// The ARN of a role setup makes.
    pub(super) fn role(&self, name: &str) -> &str {
        &self.roles[name]
    }

    /// The hook's ARN, for the steps that exist only when there is one.
    pub(super) fn hook(&self) -> &str {
        self.hook.as_deref().expect("a hook step without a hook")
    }
}
