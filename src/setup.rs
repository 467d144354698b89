//! The `setup` command: brings an AWS account to the fleet-provisioning setup of AWS's guide
//! (token exchange role and its access policy, role alias, core devices' IoT policy, fleet
//! provisioning role, thing group, claimfab's claim-binding hook when asked for, AWS IoT's
//! permission to invoke the template's hook, provisioning template, claim policy),
//! idempotently.
//!
//! The setup is a table of steps built once from the station (`steps`): each step is one
//! resource with its name in the report and its purpose. Its type (`Resource`, one impl
//! per type of AWS resource) says how to read, create and update it, and its `Kind` which
//! IAM action each of those calls needs. The one table drives the plan (`--plan` only
//! reads), the report, and the steps not reached after a failure. Each resource is read,
//! compared with its desired document (as JSON), and created, left, or reported as drift
//! (updated only with `--update-drifted`). Steps that need what an earlier one found (a
//! role's ARN, the hook function's ARN) read it from a `Context` the earlier step fills
//! in. The resolved ARNs and endpoints are recorded beside the station file for `batch`.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::aws::{
    AccountApi, AwsError, EndpointKind, FunctionInfo, FunctionSpec, PolicyInfo, RoleAliasInfo,
    RoleInfo, TemplateInfo, TemplateSpec,
};
use crate::cli::SetupArgs;
use crate::core::setup::{
    self as desired, Account, CorePolicy, HookPermission, THINGS_REGISTRATION_POLICY_ARN,
};
use crate::core::station::{CorePolicyVariant, StationConfig};
use crate::error::UserError;
use crate::settings::{endpoint_override, record_path, SetupRecord};

// ---------------------------------------------------------------------------------------
// Running the table

/// What became of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Created,
    Unchanged,
    Updated,
    Drift(String),
    WouldCreate,
    WouldUpdate(String),
}

/// What a resource looks like now, compared with what it should be.
enum Found {
    Missing,
    Same,
    Differs(String),
}

/// What the command line asks of every step.
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// Read only (`--plan`).
    plan: bool,
    /// Update what differs (`--update-drifted`); otherwise report it as drift.
    update_drifted: bool,
}

/// A call AWS refused: the IAM action it needed, on what, and AWS's answer.
struct Refused {
    action: &'static str,
    resource: String,
    error: AwsError,
}

/// What a failed call becomes, for `map_err`.
fn refused(action: &'static str, resource: String) -> impl FnOnce(AwsError) -> Refused {
    move |error| Refused {
        action,
        resource,
        error,
    }
}

/// The step at which setup stopped, and the call refused there.
struct Stop {
    kind: &'static str,
    name: String,
    refused: Refused,
}

/// The report: what became of each step reached, in the table's order.
struct Report<'s> {
    steps: &'s [Step],
    outcomes: Vec<Outcome>,
}

impl Report<'_> {
    fn print(&self, stopped: Option<&Stop>) {
        for (step, outcome) in self.steps.iter().zip(&self.outcomes) {
            let (word, detail) = match outcome {
                Outcome::Created => ("created", String::new()),
                Outcome::Unchanged => ("ok", String::new()),
                Outcome::Updated => ("updated", String::new()),
                Outcome::Drift(what) => (
                    "DRIFT",
                    format!(" ({what}; re-run with --update-drifted to update it)"),
                ),
                Outcome::WouldCreate => ("create", String::new()),
                Outcome::WouldUpdate(what) => ("update", format!(" ({what})")),
            };
            crate::say!("  {word:<8} {} {}{detail}", step.kind, step.name);
        }
        if let Some(stop) = stopped {
            let error = &stop.refused.error;
            crate::say!("  FAILED   {} {}: {error}", stop.kind, stop.name);
            // The failed step is the one after the last reached (none when the endpoints,
            // after every step, failed).
            for step in self.steps.iter().skip(self.outcomes.len() + 1) {
                crate::say!("  not yet  {} ({})", step.kind, step.purpose);
            }
        }
    }

    fn changes(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Unchanged | Outcome::Drift(_)))
            .count()
    }

    fn drifts(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Drift(_)))
            .count()
    }
}

/// Runs `claimfab setup`. Exit: 0 done (or plan printed); 1 stopped part-way or drift left
/// in place; 2 bad input.
pub async fn run(args: SetupArgs) -> Result<bool> {
    let station = crate::settings::read_station(&args.station)?;
    let (api, account) = connect(&args, &station).await?;
    crate::say!(
        "{} fleet provisioning in account {} region {}:",
        if args.plan { "plan for" } else { "setting up" },
        account.account_id,
        account.region
    );
    let mode = Mode {
        plan: args.plan,
        update_drifted: args.update_drifted,
    };
    let mut ctx = Context::new(&station, &account);
    let steps = steps(&station, &account, &ctx);
    let mut report = Report {
        steps: &steps,
        outcomes: Vec::new(),
    };
    let applied = match apply(&api, mode, &mut report, &mut ctx).await {
        Ok(()) if args.plan => Ok(None),
        Ok(()) => account_endpoints(&api, &station).await.map(Some),
        Err(stop) => Err(stop),
    };
    match applied {
        Ok(None) => {
            report.print(None);
            let changes = report.changes();
            crate::say!("{changes} change(s) to make; nothing was touched (--plan)");
            Ok(true)
        }
        Ok(Some(endpoints)) => {
            report.print(None);
            let mut record = record(&station, &account, &ctx, endpoints);
            record.endpoint_url = endpoint_override(args.aws.endpoint_url.as_deref());
            finish(&report, &args.station, &record)
        }
        Err(stop) => {
            report.print(Some(&stop));
            Err(stopped(stop))
        }
    }
}

/// The account API, and the account and region the credentials in use are for.
async fn connect(args: &SetupArgs, station: &StationConfig) -> Result<(AccountApi, Account)> {
    let settings = crate::settings::aws_settings(&args.aws, Some(station), None)?;
    let api = AccountApi::connect(&settings, station.limits.max_attempts)
        .await
        .map_err(UserError::Aws)?;
    let caller = api.caller_arn().await.map_err(|e| {
        UserError::Aws(format!(
            "GetCallerIdentity: {e}; check the credentials, region and endpoint"
        ))
    })?;
    let account = Account::from_arn(&caller, api.region()).ok_or_else(|| {
        UserError::Aws(format!(
            "cannot read the account from the caller identity {caller:?}"
        ))
    })?;
    Ok((api, account))
}

/// Settles the steps in order, each outcome into the report, until one fails.
async fn apply(
    api: &AccountApi,
    mode: Mode,
    report: &mut Report<'_>,
    ctx: &mut Context,
) -> Result<(), Stop> {
    for step in report.steps {
        let outcome = match &step.resource {
            None => Outcome::Unchanged,
            Some(resource) => resource
                .settle(api, mode, ctx)
                .await
                .map_err(|refused| Stop {
                    kind: step.kind,
                    name: step.name.clone(),
                    refused,
                })?,
        };
        report.outcomes.push(outcome);
    }
    Ok(())
}

/// Writes the record of an applied run and sums the run up; false when drift was left.
fn finish(report: &Report<'_>, station: &Path, record: &SetupRecord) -> Result<bool> {
    let path = record_path(station);
    write_record(&path, record)?;
    let (changes, drifts) = (report.changes(), report.drifts());
    if changes == 0 && drifts == 0 {
        crate::say!("nothing to change: the account already matches");
    } else if changes == 0 {
        crate::say!("nothing changed");
    } else {
        crate::say!("{changes} change(s) made");
    }
    crate::say!("recorded ARNs and endpoints in {}", path.display());
    if drifts > 0 {
        crate::say!("{drifts} resource(s) differ from the desired setup (see DRIFT above)");
    }
    Ok(drifts == 0)
}

/// The error a stop becomes: what to allow (or fix), then re-run.
fn stopped(stop: Stop) -> anyhow::Error {
    let Refused {
        action,
        resource,
        error,
    } = stop.refused;
    let cause = match error {
        AwsError::AccessDenied(_) => {
            format!("access denied; allow {action} on {resource} for the AWS identity in use")
        }
        AwsError::Rejected(detail) if detail.contains("AlreadyExists") => format!(
            "the name is taken by another resource ({detail}); rename it in the station file or remove the other resource"
        ),
        error => format!("{error}; check the network and the AWS identity"),
    };
    anyhow::anyhow!(
        "setup stopped at {} {}: {cause}, then re-run `claimfab setup` to continue",
        stop.kind,
        stop.name
    )
}

/// The account's data (ATS) and credential-provider endpoints, unless the station pins them.
async fn account_endpoints(
    api: &AccountApi,
    station: &StationConfig,
) -> Result<(String, String), Stop> {
    let aws = &station.aws;
    let data = endpoint(api, EndpointKind::DataAts, &aws.iot_data_endpoint).await?;
    let credentials = endpoint(
        api,
        EndpointKind::CredentialProvider,
        &aws.iot_credential_endpoint,
    )
    .await?;
    Ok((data, credentials))
}

/// One endpoint of the account, unless the station pins it.
async fn endpoint(
    api: &AccountApi,
    kind: EndpointKind,
    pinned: &Option<String>,
) -> Result<String, Stop> {
    if let Some(host) = pinned {
        return Ok(host.clone());
    }
    let name = match kind {
        EndpointKind::DataAts => "iot:Data-ATS",
        EndpointKind::CredentialProvider => "iot:CredentialProvider",
    };
    api.describe_endpoint(kind).await.map_err(|error| Stop {
        kind: "iot endpoint",
        name: name.into(),
        refused: refused("iot:DescribeEndpoint", "*".into())(error),
    })
}

/// The record `batch` reads: the ARNs resolved and the endpoints.
fn record(
    station: &StationConfig,
    account: &Account,
    ctx: &Context,
    (data, credentials): (String, String),
) -> SetupRecord {
    let (s, p) = (&station.setup, &station.provisioning);
    let guide = s.core_policy_variant == CorePolicyVariant::Guide;
    SetupRecord {
        endpoint_url: None,
        region: account.region.clone(),
        account_id: account.account_id.clone(),
        iot_data_endpoint: data,
        iot_credential_endpoint: credentials,
        token_exchange_role_arn: ctx.role(&s.token_exchange_role).into(),
        token_exchange_access_policy_arn: account
            .iam_arn(&format!("policy/{}", s.token_exchange_access_policy)),
        role_alias_arn: account.role_alias_arn(&p.role_alias),
        core_policy_arn: guide.then(|| account.iot_arn(&format!("policy/{}", s.core_policy))),
        fleet_provisioning_role_arn: ctx.role(&s.fleet_provisioning_role).into(),
        thing_group_arn: (p.thing_group.as_ref())
            .map(|group| account.iot_arn(&format!("thinggroup/{group}"))),
        template_arn: account.iot_arn(&format!("provisioningtemplate/{}", p.template)),
        claim_policy_arn: account.iot_arn(&format!("policy/{}", p.claim_policy)),
    }
}

fn write_record(path: &Path, record: &SetupRecord) -> Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let context = || {
        format!(
            "cannot write {}; fix the directory's permissions, then re-run",
            path.display()
        )
    };
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .with_context(context)?;
    temp.write_all(&serde_json::to_vec_pretty(record).expect("record serializes"))
        .with_context(context)?;
    std::fs::File::set_permissions(
        temp.as_file(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(context)?;
    temp.as_file().sync_all().with_context(context)?;
    temp.persist(path)
        .map_err(|e| e.error)
        .with_context(context)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The table

/// One row of the table: a resource to settle, or none (the station asks for nothing of
/// this kind; the report still says so, in its place).
struct Step {
    kind: &'static str,
    /// The resource's name in the report.
    name: String,
    /// What the step is for, in the list of steps not reached.
    purpose: &'static str,
    resource: Option<Box<dyn Settle>>,
}

impl Step {
    fn new<R: Resource + 'static>(purpose: &'static str, name: &str, resource: R) -> Self {
        Self {
            kind: resource.kind().word,
            name: name.into(),
            purpose,
            resource: Some(Box::new(resource)),
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
fn steps(station: &StationConfig, account: &Account, ctx: &Context) -> Vec<Step> {
    let p = &station.provisioning;
    let (core_step, core_policy) = core_policy(station, account);
    let mut steps = token_exchange_steps(station, account);
    steps.push(core_step);
    steps.extend(fleet_provisioning_steps(station, account));
    if station.setup.claim_binding {
        steps.extend(claim_binding_steps(station, account));
    }
    steps.push(hook_permission(station, account, ctx));
    let template = Template::new(station, account, &core_policy);
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

/// claimfab's claim-binding hook: an execution role that may only describe certificates and
/// write logs, and the function with the embedded code.
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
    let hook = Function::new(function, role);
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
struct Context {
    /// Role name -> ARN.
    roles: HashMap<String, String>,
    /// The template's pre-provisioning hook: the station's, or claimfab's claim-binding
    /// function.
    hook: Option<String>,
}

impl Context {
    fn new(station: &StationConfig, account: &Account) -> Self {
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
    fn role(&self, name: &str) -> &str {
        &self.roles[name]
    }

    /// The hook's ARN, for the steps that exist only when there is one.
    fn hook(&self) -> &str {
        self.hook.as_deref().expect("a hook step without a hook")
    }
}

// ---------------------------------------------------------------------------------------
// The kinds of resources

/// A kind of resource: the report's word for it, and the IAM actions of the calls that read,
/// create and update one, named when AWS refuses the call.
struct Kind {
    word: &'static str,
    read: &'static str,
    create: &'static str,
    /// For a kind that is right whenever present (attachment, thing group), the create
    /// call again: one is never updated.
    update: &'static str,
}

// One row a kind: the report's word, then the calls that read, create and update one.
#[rustfmt::skip]
impl Kind {
    const ROLE:        Kind = Kind::new("iam role",          "iam:GetRole",                      "iam:CreateRole",                 "iam:UpdateAssumeRolePolicy");
    const IAM_POLICY:  Kind = Kind::new("iam policy",        "iam:GetPolicy",                    "iam:CreatePolicy",               IAM_POLICY_VERSION);
    const ATTACHMENT:  Kind = Kind::new("iam attachment",    "iam:ListAttachedRolePolicies",     "iam:AttachRolePolicy",           "iam:AttachRolePolicy");
    const ROLE_ALIAS:  Kind = Kind::new("iot role alias",    "iot:DescribeRoleAlias",            "iot:CreateRoleAlias",            "iot:UpdateRoleAlias");
    const IOT_POLICY:  Kind = Kind::new("iot policy",        "iot:GetPolicy",                    "iot:CreatePolicy",               IOT_POLICY_VERSION);
    const THING_GROUP: Kind = Kind::new("iot thing group",   "iot:DescribeThingGroup",           "iot:CreateThingGroup",           "iot:CreateThingGroup");
    const FUNCTION:    Kind = Kind::new("lambda function",   "lambda:GetFunction",               "lambda:CreateFunction",          "lambda:CreateFunction");
    const PERMISSION:  Kind = Kind::new("lambda permission", "lambda:GetPolicy",                 "lambda:AddPermission",           "lambda:AddPermission");
    const TEMPLATE:    Kind = Kind::new("iot template",      "iot:DescribeProvisioningTemplate", "iot:CreateProvisioningTemplate", TEMPLATE_VERSION);
}

impl Kind {
    const fn new(
        word: &'static str,
        read: &'static str,
        create: &'static str,
        update: &'static str,
    ) -> Self {
        Self {
            word,
            read,
            create,
            update,
        }
    }
}

/// Updating a policy or a template is a new default version, room made for it first (and
/// for a template, its settings).
const IAM_POLICY_VERSION: &str =
    "iam:CreatePolicyVersion, iam:ListPolicyVersions and iam:DeletePolicyVersion";
const IOT_POLICY_VERSION: &str =
    "iot:CreatePolicyVersion, iot:ListPolicyVersions and iot:DeletePolicyVersion";
const TEMPLATE_VERSION: &str = "iot:CreateProvisioningTemplateVersion, iot:ListProvisioningTemplateVersions, iot:DeleteProvisioningTemplateVersion and iot:UpdateProvisioningTemplate";

/// One kind of AWS resource: how setup reads it, tells whether it is as desired, and creates
/// or updates it. The steps hold the names and desired documents.
trait Resource {
    /// What AWS has.
    type Current;

    /// The kind: the report's word for it, and the actions a refused call names.
    fn kind(&self) -> &'static Kind;

    /// The resource as AWS has it; `None` when there is none.
    async fn read(
        &self,
        api: &AccountApi,
        ctx: &Context,
    ) -> Result<Option<Self::Current>, AwsError>;

    /// Takes from the resource found what later steps need.
    fn learn(&self, _current: &Self::Current, _ctx: &mut Context) {}

    /// How the resource found differs from the desired one; by default, not at all (being
    /// there is all that counts).
    fn differs(&self, _current: &Self::Current, _ctx: &Context) -> Option<String> {
        None
    }

    async fn create(&self, api: &AccountApi, ctx: &Context) -> Result<(), AwsError>;

    async fn update(
        &self,
        _api: &AccountApi,
        _ctx: &Context,
        _current: &Self::Current,
    ) -> Result<(), AwsError> {
        unreachable!("{} never differs, so is never updated", self.kind().word)
    }

    /// The ARN a refused call names.
    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str;

    /// The role that creating or updating the resource passes to AWS, which then also
    /// needs iam:PassRole on it.
    fn passes<'a>(&'a self, _ctx: &'a Context) -> Option<&'a str> {
        None
    }
}

/// Reads a resource, compares it, and, unless planning, creates or updates it as the mode
/// says. Returns what became of it, or the call AWS refused.
async fn settle<R: Resource>(
    resource: &R,
    api: &AccountApi,
    mode: Mode,
    ctx: &mut Context,
) -> Result<Outcome, Refused> {
    let current = (resource.read(api, ctx).await)
        .map_err(refused(resource.kind().read, resource.arn(ctx).into()))?;
    let found = match &current {
        None => Found::Missing,
        Some(current) => {
            resource.learn(current, ctx);
            (resource.differs(current, ctx)).map_or(Found::Same, Found::Differs)
        }
    };
    let ctx = &*ctx;
    let target = match resource.passes(ctx) {
        Some(role) => format!("{}, and iam:PassRole on {role}", resource.arn(ctx)),
        None => resource.arn(ctx).into(),
    };
    Ok(match (found, mode.plan) {
        (Found::Same, _) => Outcome::Unchanged,
        (Found::Missing, true) => Outcome::WouldCreate,
        (Found::Missing, false) => {
            (resource.create(api, ctx).await).map_err(refused(resource.kind().create, target))?;
            Outcome::Created
        }
        (Found::Differs(what), _) if !mode.update_drifted => Outcome::Drift(what),
        (Found::Differs(what), true) => Outcome::WouldUpdate(what),
        (Found::Differs(_), false) => {
            let current = current.as_ref().expect("what differs was found");
            (resource.update(api, ctx, current).await)
                .map_err(refused(resource.kind().update, target))?;
            Outcome::Updated
        }
    })
}

/// A resource of any kind, as the table holds it. (A [`Resource`] has a type of its own and
/// async methods, so it cannot be a trait object; this boxes the future of [`settle`].)
trait Settle {
    fn settle<'a>(
        &'a self,
        api: &'a AccountApi,
        mode: Mode,
        ctx: &'a mut Context,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refused>> + 'a>>;
}

impl<R: Resource> Settle for R {
    fn settle<'a>(
        &'a self,
        api: &'a AccountApi,
        mode: Mode,
        ctx: &'a mut Context,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Refused>> + 'a>> {
        Box::pin(settle(self, api, mode, ctx))
    }
}

/// Whether a document read back from AWS says something else than the desired one.
fn document_differs(actual: &str, desired: &Value, what: &str) -> Option<String> {
    (!desired::same_document(actual, desired))
        .then(|| format!("{what} differs from the desired one"))
}

/// Runs a create that passes a role, again every 5 s for a minute while AWS refuses the role
/// (as `not_yet` reads the refusal): IAM is eventually consistent, and a role created seconds
/// ago may not be assumable yet.
async fn while_role_settles<T, F>(
    create: impl FnMut() -> F,
    not_yet: fn(&str) -> bool,
) -> Result<(), AwsError>
where
    F: Future<Output = Result<T, AwsError>>,
{
    use backon::{ConstantBuilder, Retryable};
    let pace = ConstantBuilder::default()
        .with_delay(Duration::from_secs(5))
        .with_max_times(12);
    (create.retry(pace))
        .when(|e| matches!(e, AwsError::Rejected(m) if not_yet(m)))
        .await
        .map(drop)
}

/// An IAM role with its trust policy.
struct Role {
    name: String,
    trust: Value,
}

impl Role {
    fn new(name: &str, trust: Value) -> Self {
        let name = name.into();
        Self { name, trust }
    }
}

impl Resource for Role {
    type Current = RoleInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::ROLE
    }

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<RoleInfo>, AwsError> {
        api.get_role(&self.name).await
    }

    fn learn(&self, current: &RoleInfo, ctx: &mut Context) {
        ctx.roles.insert(self.name.clone(), current.arn.clone());
    }

    fn differs(&self, current: &RoleInfo, _: &Context) -> Option<String> {
        document_differs(&current.trust_policy, &self.trust, "trust policy")
    }

    async fn create(&self, api: &AccountApi, _: &Context) -> Result<(), AwsError> {
        let trust = self.trust.to_string();
        api.create_role(&self.name, &trust).await.map(drop)
    }

    async fn update(&self, api: &AccountApi, _: &Context, _: &RoleInfo) -> Result<(), AwsError> {
        let trust = self.trust.to_string();
        api.update_trust_policy(&self.name, &trust).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.role(&self.name)
    }
}

/// A policy whose default version holds `document`: a customer-managed IAM policy, or an
/// IoT policy. The two differ only in their calls.
struct Policy {
    service: Service,
    name: String,
    arn: String,
    document: Value,
}

/// Which API a [`Policy`] is in.
#[derive(Debug, Clone, Copy)]
enum Service {
    Iam,
    Iot,
}

impl Policy {
    fn new(account: &Account, service: Service, name: &str, document: Value) -> Self {
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

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<PolicyInfo>, AwsError> {
        match self.service {
            Service::Iam => api.get_iam_policy(&self.arn).await,
            Service::Iot => api.get_iot_policy(&self.name).await,
        }
    }

    fn differs(&self, current: &PolicyInfo, _: &Context) -> Option<String> {
        document_differs(&current.document, &self.document, "policy document")
    }

    async fn create(&self, api: &AccountApi, _: &Context) -> Result<(), AwsError> {
        let (name, document) = (&self.name, &self.document.to_string());
        let created = match self.service {
            Service::Iam => api.create_iam_policy(name, document).await,
            Service::Iot => api.create_iot_policy(name, document).await,
        };
        created.map(drop)
    }

    async fn update(&self, api: &AccountApi, _: &Context, _: &PolicyInfo) -> Result<(), AwsError> {
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
struct Attachment {
    role: String,
    policy_arn: String,
}

impl Attachment {
    fn new(role: &str, policy_arn: &str) -> Self {
        let (role, policy_arn) = (role.into(), policy_arn.into());
        Self { role, policy_arn }
    }
}

impl Resource for Attachment {
    type Current = ();

    fn kind(&self) -> &'static Kind {
        &Kind::ATTACHMENT
    }

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<()>, AwsError> {
        match api.attached_role_policies(&self.role).await {
            Ok(arns) => Ok(arns.contains(&self.policy_arn).then_some(())),
            // A role that does not exist yet (planning) has nothing attached.
            Err(AwsError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn create(&self, api: &AccountApi, _: &Context) -> Result<(), AwsError> {
        api.attach_role_policy(&self.role, &self.policy_arn).await
    }

    fn arn<'a>(&'a self, ctx: &'a Context) -> &'a str {
        ctx.role(&self.role)
    }
}

/// The role alias, pointing at the token exchange role with the station's credential
/// duration.
struct RoleAlias {
    name: String,
    arn: String,
    /// The token exchange role's name.
    role: String,
    seconds: i32,
}

impl RoleAlias {
    fn new(station: &StationConfig, account: &Account) -> Self {
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

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<RoleAliasInfo>, AwsError> {
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

    async fn create(&self, api: &AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let role = ctx.role(&self.role);
        let created = api.create_role_alias(&self.name, role, self.seconds).await;
        created.map(drop)
    }

    async fn update(
        &self,
        api: &AccountApi,
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
struct ThingGroup {
    name: String,
    arn: String,
}

impl ThingGroup {
    fn new(account: &Account, name: &str) -> Self {
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

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<String>, AwsError> {
        api.thing_group_arn(&self.name).await
    }

    async fn create(&self, api: &AccountApi, _: &Context) -> Result<(), AwsError> {
        api.create_thing_group(&self.name).await.map(drop)
    }

    fn arn<'a>(&'a self, _: &'a Context) -> &'a str {
        &self.arn
    }
}

/// claimfab's claim-binding hook: the function with the embedded code, run as its role.
struct Function {
    name: String,
    package: Vec<u8>,
    /// The execution role's name.
    role: String,
}

impl Function {
    fn new(name: &str, role: &str) -> Self {
        let package = desired::claim_binding_package();
        let (name, role) = (name.into(), role.into());
        Self {
            name,
            package,
            role,
        }
    }

    fn spec<'a>(&'a self, ctx: &'a Context) -> FunctionSpec<'a> {
        FunctionSpec {
            name: &self.name,
            package: &self.package,
            role_arn: ctx.role(&self.role),
            handler: desired::CLAIM_BINDING_HANDLER,
            runtime: desired::CLAIM_BINDING_RUNTIME,
            timeout: desired::CLAIM_BINDING_TIMEOUT_SECONDS,
        }
    }
}

impl Resource for Function {
    type Current = FunctionInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::FUNCTION
    }

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<FunctionInfo>, AwsError> {
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
        } else {
            return None;
        };
        Some(what.into())
    }

    async fn create(&self, api: &AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let spec = self.spec(ctx);
        let not_yet = |m: &str| m.contains("cannot be assumed");
        while_role_settles(|| api.create_function(&spec), not_yet).await
    }

    async fn update(
        &self,
        api: &AccountApi,
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
struct Permission {
    sid: String,
    template_arn: String,
    account_id: String,
}

impl Permission {
    fn new(station: &StationConfig, account: &Account) -> Self {
        let template = &station.provisioning.template;
        Self {
            sid: desired::hook_permission_id(template),
            template_arn: account.iot_arn(&format!("provisioningtemplate/{template}")),
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
        api: &AccountApi,
        ctx: &Context,
    ) -> Result<Option<HookPermission>, AwsError> {
        let policy = api.function_policy(ctx.hook()).await?;
        let (template, account) = (&self.template_arn, &self.account_id);
        Ok(
            match desired::hook_permission(policy.as_deref(), &self.sid, template, account) {
                HookPermission::Missing => None,
                found => Some(found),
            },
        )
    }

    fn differs(&self, current: &HookPermission, _: &Context) -> Option<String> {
        (*current == HookPermission::Differs).then(|| format!("statement {} differs", self.sid))
    }

    async fn create(&self, api: &AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let (template, account) = (&self.template_arn, &self.account_id);
        api.allow_iot_invoke(ctx.hook(), &self.sid, template, account)
            .await
    }

    async fn update(
        &self,
        api: &AccountApi,
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
struct Template {
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
    fn new(station: &StationConfig, account: &Account, core_policy: &CorePolicy<'_>) -> Self {
        let p = &station.provisioning;
        let body = desired::provisioning_template_body(core_policy, p.thing_group.is_some());
        Self {
            name: p.template.clone(),
            arn: account.iot_arn(&format!("provisioningtemplate/{}", p.template)),
            text: body.to_string(),
            body,
            role: station.setup.fleet_provisioning_role.clone(),
            description: station.setup.template_description.clone(),
        }
    }

    fn spec<'a>(&'a self, ctx: &'a Context) -> TemplateSpec<'a> {
        TemplateSpec {
            name: &self.name,
            body: &self.text,
            role_arn: ctx.role(&self.role),
            hook_arn: ctx.hook.as_deref(),
            description: &self.description,
        }
    }

    fn body_differs(&self, current: &TemplateInfo) -> bool {
        !desired::same_document(&current.body, &self.body)
    }
}

impl Resource for Template {
    type Current = TemplateInfo;

    fn kind(&self) -> &'static Kind {
        &Kind::TEMPLATE
    }

    async fn read(&self, api: &AccountApi, _: &Context) -> Result<Option<TemplateInfo>, AwsError> {
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

    async fn create(&self, api: &AccountApi, ctx: &Context) -> Result<(), AwsError> {
        let spec = self.spec(ctx);
        let not_yet = |m: &str| m.to_lowercase().contains("role");
        while_role_settles(|| api.create_template(&spec), not_yet).await
    }

    async fn update(
        &self,
        api: &AccountApi,
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
