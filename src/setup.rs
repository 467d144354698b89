//! The `setup` command: brings an AWS account to the fleet-provisioning setup of AWS's guide
//! (token exchange role and its access policy, role alias, core devices' IoT policy, fleet
//! provisioning role, thing group, claimfab's claim-binding hook when asked for, AWS IoT's
//! permission to invoke the template's hook, provisioning template, claim policy),
//! idempotently. Each
//! resource is read, compared with its desired document (as JSON), and created, left, or
//! reported as drift (updated only with `--update-drifted`). `--plan` only reads. The
//! resolved ARNs and endpoints are recorded beside the station file for `batch`.

use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::aws::{AccountApi, AwsError, EndpointKind, FunctionInfo, FunctionSpec, TemplateSpec};
use crate::cli::SetupArgs;
use crate::core::setup::{
    self as desired, Account, HookPermission, THINGS_REGISTRATION_POLICY_ARN,
};
use crate::core::station::{CorePolicyVariant, SetupSection, StationConfig};
use crate::error::UserError;
use crate::settings::{endpoint_override, record_path, SetupRecord};

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

/// One line of the report.
struct Line {
    kind: &'static str,
    name: String,
    outcome: Outcome,
}

/// The run's report and mode.
struct Run<'a> {
    api: &'a AccountApi,
    plan: bool,
    update_drifted: bool,
    lines: Vec<Line>,
    /// Set while a drifted resource is being updated, so a failure names the update calls.
    updating: bool,
    /// The steps in order, for what was not reached.
    steps: Vec<(&'static str, &'static str)>,
}

/// The step at which setup stopped, with the permission it lacked.
struct Stop {
    kind: &'static str,
    name: String,
    action: &'static str,
    resource: String,
    error: AwsError,
}

/// The order of the steps, for reporting what was not reached.
const STEPS: [(&str, &str); 11] = [
    ("iam role", "token exchange role"),
    ("iam policy", "token exchange access policy"),
    ("iam attachment", "access policy on token exchange role"),
    ("iot role alias", "role alias"),
    ("iot policy", "core devices' policy"),
    ("iam role", "fleet provisioning role"),
    (
        "iam attachment",
        "AWSIoTThingsRegistration on fleet provisioning role",
    ),
    ("iot thing group", "thing group"),
    (
        "lambda permission",
        "AWS IoT may invoke the pre-provisioning hook",
    ),
    ("iot template", "provisioning template"),
    ("iot policy", "claim policy"),
];

/// The claim-binding hook's steps, which come after the thing group when it is asked for.
const CLAIM_BINDING_STEPS: [(&str, &str); 4] = [
    ("iam role", "claim-binding hook's role"),
    ("iam policy", "claim-binding hook's access policy"),
    ("iam attachment", "access policy on the hook's role"),
    ("lambda function", "claim-binding hook"),
];

/// The steps of this setup, in order.
fn steps(claim_binding: bool) -> Vec<(&'static str, &'static str)> {
    let mut steps = STEPS.to_vec();
    if claim_binding {
        steps.splice(8..8, CLAIM_BINDING_STEPS);
    }
    steps
}

impl Run<'_> {
    /// Decides and (unless planning) acts on one resource. `create` and `update` run only
    /// when needed.
    async fn settle<C, U>(
        &mut self,
        kind: &'static str,
        name: &str,
        found: Found,
        create: C,
        update: U,
    ) -> Result<(), AwsError>
    where
        C: std::future::Future<Output = Result<(), AwsError>>,
        U: std::future::Future<Output = Result<(), AwsError>>,
    {
        let outcome = match (found, self.plan) {
            (Found::Same, _) => Outcome::Unchanged,
            (Found::Missing, true) => Outcome::WouldCreate,
            (Found::Missing, false) => {
                create.await?;
                Outcome::Created
            }
            (Found::Differs(what), _) if !self.update_drifted => Outcome::Drift(what),
            (Found::Differs(what), true) => Outcome::WouldUpdate(what),
            (Found::Differs(_), false) => {
                self.updating = true;
                update.await?;
                self.updating = false;
                Outcome::Updated
            }
        };
        self.lines.push(Line {
            kind,
            name: name.to_string(),
            outcome,
        });
        Ok(())
    }

    fn print(&self, stopped: Option<&Stop>) {
        for line in &self.lines {
            let (word, detail) = match &line.outcome {
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
            crate::say!("  {word:<8} {} {}{detail}", line.kind, line.name);
        }
        if let Some(stop) = stopped {
            crate::say!("  FAILED   {} {}: {}", stop.kind, stop.name, stop.error);
            for (kind, what) in self.steps.iter().skip(self.lines.len() + 1) {
                crate::say!("  not yet  {kind} ({what})");
            }
        }
    }

    fn changes(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| !matches!(l.outcome, Outcome::Unchanged | Outcome::Drift(_)))
            .count()
    }

    fn drifts(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.outcome, Outcome::Drift(_)))
            .count()
    }
}

/// The calls that update a drifted resource, for the create call that would have made it.
fn update_actions(create: &'static str) -> &'static str {
    match create {
        "iam:CreateRole" => "iam:UpdateAssumeRolePolicy",
        "iam:CreatePolicy" => "iam:CreatePolicyVersion, iam:ListPolicyVersions and iam:DeletePolicyVersion",
        "iot:CreatePolicy" => "iot:CreatePolicyVersion, iot:ListPolicyVersions and iot:DeletePolicyVersion",
        "iot:CreateRoleAlias" => "iot:UpdateRoleAlias",
        "iot:CreateProvisioningTemplate" => {
            "iot:CreateProvisioningTemplateVersion, iot:ListProvisioningTemplateVersions, iot:DeleteProvisioningTemplateVersion and iot:UpdateProvisioningTemplate"
        }
        other => other,
    }
}

fn compare_document(actual: &str, desired: &Value, what: &str) -> Found {
    if desired::same_document(actual, desired) {
        Found::Same
    } else {
        Found::Differs(format!("{what} differs from the desired one"))
    }
}

/// Runs `claimfab setup`. Exit: 0 done (or plan printed); 1 stopped part-way or drift left
/// in place; 2 bad input.
pub async fn run(args: SetupArgs) -> Result<bool> {
    let station = crate::settings::read_station(&args.station)?;
    let settings = crate::settings::aws_settings(&args.aws, Some(&station), None)?;

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

    crate::say!(
        "{} fleet provisioning in account {} region {}:",
        if args.plan { "plan for" } else { "setting up" },
        account.account_id,
        account.region
    );
    let mut run = Run {
        api: &api,
        plan: args.plan,
        update_drifted: args.update_drifted,
        lines: Vec::new(),
        updating: false,
        steps: steps(station.setup.claim_binding),
    };
    let result = apply(&mut run, &station, &account).await;
    match result {
        Ok(record) => {
            run.print(None);
            if args.plan {
                crate::say!(
                    "{} change(s) to make; nothing was touched (--plan)",
                    run.changes()
                );
                return Ok(true);
            }
            let mut record = record.expect("applied runs resolve every ARN");
            record.endpoint_url = endpoint_override(args.aws.endpoint_url.as_deref());
            let path = record_path(&args.station);
            write_record(&path, &record)?;
            if run.changes() == 0 && run.drifts() == 0 {
                crate::say!("nothing to change: the account already matches");
            } else if run.changes() == 0 {
                crate::say!("nothing changed");
            } else {
                crate::say!("{} change(s) made", run.changes());
            }
            crate::say!("recorded ARNs and endpoints in {}", path.display());
            if run.drifts() > 0 {
                crate::say!(
                    "{} resource(s) differ from the desired setup (see DRIFT above)",
                    run.drifts()
                );
                return Ok(false);
            }
            Ok(true)
        }
        Err(stop) => {
            run.print(Some(&stop));
            let cause = match stop.error {
                AwsError::AccessDenied(_) => format!(
                    "access denied; allow {} on {} for the AWS identity in use",
                    if run.updating { update_actions(stop.action) } else { stop.action },
                    stop.resource
                ),
                AwsError::Rejected(detail) if detail.contains("AlreadyExists") => format!(
                    "the name is taken by another resource ({detail}); rename it in the station file or remove the other resource"
                ),
                error => format!("{error}; check the network and the AWS identity"),
            };
            anyhow::bail!(
                "setup stopped at {} {}: {cause}, then re-run `claimfab setup` to continue",
                stop.kind,
                stop.name
            )
        }
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

/// Walks the resources in dependency order. Returns the record (None when planning).
async fn apply(
    run: &mut Run<'_>,
    station: &StationConfig,
    account: &Account,
) -> Result<Option<SetupRecord>, Stop> {
    let s = &station.setup;
    let p = &station.provisioning;

    // 1-3. Token exchange role, its access policy, attached.
    let trust = desired::token_exchange_trust_policy();
    let role_arn = ensure_role(run, account, &s.token_exchange_role, &trust).await?;
    let access =
        desired::token_exchange_access_policy(&account.partition, s.artifact_bucket.as_deref());
    let access_arn =
        ensure_iam_policy(run, account, &s.token_exchange_access_policy, &access).await?;
    let attachment = format!(
        "{} -> {}",
        s.token_exchange_access_policy, s.token_exchange_role
    );
    ensure_attached(
        run,
        &s.token_exchange_role,
        &access_arn,
        &attachment,
        &role_arn,
    )
    .await?;

    // 4. Role alias. 5. Core devices' IoT policy.
    let alias_arn = ensure_role_alias(run, account, station, &role_arn).await?;
    let (core_policy, core_policy_arn) = ensure_core_policy(run, account, station).await?;

    // 6. Fleet provisioning role, 7. with AWSIoTThingsRegistration.
    let fp_trust = desired::fleet_provisioning_trust_policy();
    let fp_role_arn = ensure_role(run, account, &s.fleet_provisioning_role, &fp_trust).await?;
    let attachment = format!("AWSIoTThingsRegistration -> {}", s.fleet_provisioning_role);
    let registration = THINGS_REGISTRATION_POLICY_ARN;
    ensure_attached(
        run,
        &s.fleet_provisioning_role,
        registration,
        &attachment,
        &fp_role_arn,
    )
    .await?;

    // 8. Thing group, when named.
    let thing_group_arn = ensure_thing_group(run, account, p.thing_group.as_deref()).await?;

    // The claim-binding hook, when asked for: its role and policy, and the function.
    let hook_arn = match s.claim_binding {
        true => Some(ensure_claim_binding(run, account, s).await?),
        false => s.pre_provisioning_hook_arn.clone(),
    };

    // 9. Permission for AWS IoT to invoke the pre-provisioning hook, if any.
    let template_arn = account.iot_arn(&format!("provisioningtemplate/{}", p.template));
    let hook = hook_arn.as_deref();
    ensure_hook_permission(run, hook, &p.template, &template_arn, account).await?;

    // 10. Provisioning template.
    let body =
        desired::provisioning_template_body(&core_policy, p.thing_group.is_some()).to_string();
    let spec = TemplateSpec {
        name: &p.template,
        body: &body,
        role_arn: &fp_role_arn,
        hook_arn: hook,
        description: &s.template_description,
    };
    ensure_template(run, &spec, &template_arn).await?;

    // 11. Claim policy, scoped to this template, region and account.
    let claim_arn = account.iot_arn(&format!("policy/{}", p.claim_policy));
    let claim = desired::claim_policy(account, &p.template);
    ensure_iot_policy(run, &p.claim_policy, &claim_arn, &claim).await?;

    if run.plan {
        return Ok(None);
    }
    let (data, credentials) = account_endpoints(run, station).await?;
    Ok(Some(SetupRecord {
        endpoint_url: None,
        region: account.region.clone(),
        account_id: account.account_id.clone(),
        iot_data_endpoint: data,
        iot_credential_endpoint: credentials,
        token_exchange_role_arn: role_arn,
        token_exchange_access_policy_arn: access_arn,
        role_alias_arn: alias_arn,
        core_policy_arn,
        fleet_provisioning_role_arn: fp_role_arn,
        thing_group_arn,
        template_arn,
        claim_policy_arn: claim_arn,
    }))
}

/// What a failed call at one step becomes: the step, and the action it lacked on what.
fn stop(
    kind: &'static str,
    name: &str,
    action: &'static str,
    resource: String,
) -> impl FnOnce(AwsError) -> Stop {
    let name = name.to_string();
    move |error| Stop {
        kind,
        name,
        action,
        resource,
        error,
    }
}

/// The role alias, pointing at the token exchange role with the station's duration;
/// returns its ARN.
async fn ensure_role_alias(
    run: &mut Run<'_>,
    account: &Account,
    station: &StationConfig,
    role_arn: &str,
) -> Result<String, Stop> {
    let api = run.api;
    let alias = &station.provisioning.role_alias;
    let alias_arn = account.role_alias_arn(alias);
    let seconds = station.setup.credential_duration_seconds as i32;
    let fail = stop(
        "iot role alias",
        alias,
        "iot:DescribeRoleAlias",
        alias_arn.clone(),
    );
    let found = match api.describe_role_alias(alias).await.map_err(fail)? {
        None => Found::Missing,
        Some(current) if current.role_arn != role_arn => {
            Found::Differs(format!("points at {}", current.role_arn))
        }
        Some(current) if current.credential_duration_seconds != seconds => Found::Differs(format!(
            "credential duration is {} s",
            current.credential_duration_seconds
        )),
        Some(_) => Found::Same,
    };
    let fail = stop(
        "iot role alias",
        alias,
        "iot:CreateRoleAlias",
        format!("{alias_arn}, and iam:PassRole on {role_arn}"),
    );
    run.settle(
        "iot role alias",
        alias,
        found,
        async {
            api.create_role_alias(alias, role_arn, seconds)
                .await
                .map(drop)
        },
        api.update_role_alias(alias, role_arn, seconds),
    )
    .await
    .map_err(fail)?;
    Ok(alias_arn)
}

/// The core devices' policy: one named policy (the guide's), or, least privilege, none here
/// because the template makes one per device. Returns how the template attaches it, and the
/// named policy's ARN.
async fn ensure_core_policy<'s>(
    run: &mut Run<'_>,
    account: &Account,
    station: &'s StationConfig,
) -> Result<(desired::CorePolicy<'s>, Option<String>), Stop> {
    let s = &station.setup;
    let core = desired::core_device_policy(
        account,
        s.core_policy_variant,
        &station.provisioning.role_alias,
    );
    match s.core_policy_variant {
        CorePolicyVariant::Guide => {
            let arn = account.iot_arn(&format!("policy/{}", s.core_policy));
            ensure_iot_policy(run, &s.core_policy, &arn, &core).await?;
            Ok((desired::CorePolicy::Named(&s.core_policy), Some(arn)))
        }
        CorePolicyVariant::LeastPrivilege => {
            run.lines.push(Line {
                kind: "iot policy",
                name: "(per device, made by the template)".into(),
                outcome: Outcome::Unchanged,
            });
            Ok((desired::CorePolicy::PerDevice(core), None))
        }
    }
}

/// The thing group devices join, when the station names one; returns its ARN.
async fn ensure_thing_group(
    run: &mut Run<'_>,
    account: &Account,
    group: Option<&str>,
) -> Result<Option<String>, Stop> {
    let Some(group) = group else {
        run.lines.push(Line {
            kind: "iot thing group",
            name: "(none named)".into(),
            outcome: Outcome::Unchanged,
        });
        return Ok(None);
    };
    let api = run.api;
    let arn = account.iot_arn(&format!("thinggroup/{group}"));
    let fail = stop(
        "iot thing group",
        group,
        "iot:DescribeThingGroup",
        arn.clone(),
    );
    let found = match api.thing_group_arn(group).await.map_err(fail)? {
        None => Found::Missing,
        Some(_) => Found::Same,
    };
    let fail = stop(
        "iot thing group",
        group,
        "iot:CreateThingGroup",
        arn.clone(),
    );
    run.settle(
        "iot thing group",
        group,
        found,
        async { api.create_thing_group(group).await.map(drop) },
        async { Ok(()) },
    )
    .await
    .map_err(fail)?;
    Ok(Some(arn))
}

/// The provisioning template as `spec` says: body, enabled, role, hook, description.
async fn ensure_template(
    run: &mut Run<'_>,
    spec: &TemplateSpec<'_>,
    template_arn: &str,
) -> Result<(), Stop> {
    let api = run.api;
    let name = spec.name;
    let fail = stop(
        "iot template",
        name,
        "iot:DescribeProvisioningTemplate",
        template_arn.into(),
    );
    let current = api.describe_template(name).await.map_err(fail)?;
    let body: Value = serde_json::from_str(spec.body).expect("desired body is JSON");
    let body_changed = current
        .as_ref()
        .is_some_and(|t| !desired::same_document(&t.body, &body));
    let found = match &current {
        None => Found::Missing,
        Some(_) if body_changed => Found::Differs("template body differs".into()),
        Some(t) if !t.enabled => Found::Differs("template is disabled".into()),
        Some(t) if t.role_arn != spec.role_arn => {
            Found::Differs(format!("provisioning role is {}", t.role_arn))
        }
        Some(t) if t.hook_arn.as_deref() != spec.hook_arn => {
            Found::Differs("pre-provisioning hook differs".into())
        }
        Some(t) if t.description != spec.description => {
            Found::Differs("description differs".into())
        }
        Some(_) => Found::Same,
    };
    let fail = stop(
        "iot template",
        name,
        "iot:CreateProvisioningTemplate",
        format!("{template_arn}, and iam:PassRole on {}", spec.role_arn),
    );
    run.settle(
        "iot template",
        name,
        found,
        async {
            use backon::{ConstantBuilder, Retryable};
            // IAM is eventually consistent: a role created seconds ago may not be assumable by
            // AWS IoT yet, and CreateProvisioningTemplate rejects it until it is.
            (|| api.create_template(spec))
                .retry(
                    ConstantBuilder::default()
                        .with_delay(std::time::Duration::from_secs(5))
                        .with_max_times(12),
                )
                .when(|e| matches!(e, AwsError::Rejected(m) if m.to_lowercase().contains("role")))
                .await
                .map(drop)
        },
        api.update_template(spec, body_changed),
    )
    .await
    .map_err(fail)
}

/// The account's data (ATS) and credential-provider endpoints, unless the station pins them.
async fn account_endpoints(
    run: &Run<'_>,
    station: &StationConfig,
) -> Result<(String, String), Stop> {
    let mut found = Vec::new();
    for (kind, name, pinned) in [
        (
            EndpointKind::DataAts,
            "iot:Data-ATS",
            &station.aws.iot_data_endpoint,
        ),
        (
            EndpointKind::CredentialProvider,
            "iot:CredentialProvider",
            &station.aws.iot_credential_endpoint,
        ),
    ] {
        let endpoint = match pinned {
            Some(host) => host.clone(),
            None => run.api.describe_endpoint(kind).await.map_err(stop(
                "iot endpoint",
                name,
                "iot:DescribeEndpoint",
                "*".into(),
            ))?,
        };
        found.push(endpoint);
    }
    let [data, credentials]: [String; 2] = found.try_into().expect("two endpoints");
    Ok((data, credentials))
}

/// The hook function's resource policy must let AWS IoT invoke it, for this template of this
/// account only (AWS's guide adds it; without it every device is refused).
async fn ensure_hook_permission(
    run: &mut Run<'_>,
    hook_arn: Option<&str>,
    template: &str,
    template_arn: &str,
    account: &Account,
) -> Result<(), Stop> {
    let kind = "lambda permission";
    let Some(function) = hook_arn else {
        run.lines.push(Line {
            kind,
            name: "(no pre-provisioning hook)".into(),
            outcome: Outcome::Unchanged,
        });
        return Ok(());
    };
    let api = run.api;
    let sid = desired::hook_permission_id(template);
    let name = format!("{sid} on {function}");
    let stop = |action: &'static str| {
        let name = name.clone();
        move |error| Stop {
            kind,
            name,
            action,
            resource: function.to_string(),
            error,
        }
    };
    let policy = api
        .function_policy(function)
        .await
        .map_err(stop("lambda:GetPolicy"))?;
    let found = match desired::hook_permission(
        policy.as_deref(),
        &sid,
        template_arn,
        &account.account_id,
    ) {
        HookPermission::Missing => Found::Missing,
        HookPermission::Same => Found::Same,
        HookPermission::Differs => Found::Differs(format!("statement {sid} differs")),
    };
    let add = || api.allow_iot_invoke(function, &sid, template_arn, &account.account_id);
    run.settle(kind, &name, found, add(), async {
        api.remove_permission(function, &sid).await?;
        add().await
    })
    .await
    .map_err(stop("lambda:AddPermission"))
}

/// An IAM role with this trust policy; returns its ARN (an existing role's own ARN, which may
/// have a path; else the ARN a created role gets).
async fn ensure_role(
    run: &mut Run<'_>,
    account: &Account,
    name: &str,
    trust: &Value,
) -> Result<String, Stop> {
    let api = run.api;
    let mut arn = account.iam_arn(&format!("role/{name}"));
    let stop = |action: &'static str, arn: &str| {
        let (name, arn) = (name.to_string(), arn.to_string());
        move |error| Stop {
            kind: "iam role",
            name,
            action,
            resource: arn,
            error,
        }
    };
    let found = match api
        .get_role(name)
        .await
        .map_err(stop("iam:GetRole", &arn))?
    {
        None => Found::Missing,
        Some(role) => {
            arn = role.arn.clone();
            compare_document(&role.trust_policy, trust, "trust policy")
        }
    };
    let text = trust.to_string();
    run.settle(
        "iam role",
        name,
        found,
        async { api.create_role(name, &text).await.map(drop) },
        api.update_trust_policy(name, &text),
    )
    .await
    .map_err(stop("iam:CreateRole", &arn))?;
    Ok(arn)
}

/// A customer-managed IAM policy whose default version holds `document`; returns its ARN.
async fn ensure_iam_policy(
    run: &mut Run<'_>,
    account: &Account,
    name: &str,
    document: &Value,
) -> Result<String, Stop> {
    let api = run.api;
    let arn = account.iam_arn(&format!("policy/{name}"));
    let stop = |action: &'static str| {
        let (name, arn) = (name.to_string(), arn.clone());
        move |error| Stop {
            kind: "iam policy",
            name,
            action,
            resource: arn,
            error,
        }
    };
    let found = match api
        .get_iam_policy(&arn)
        .await
        .map_err(stop("iam:GetPolicy"))?
    {
        None => Found::Missing,
        Some(policy) => compare_document(&policy.document, document, "policy document"),
    };
    let text = document.to_string();
    run.settle(
        "iam policy",
        name,
        found,
        async { api.create_iam_policy(name, &text).await.map(drop) },
        api.update_iam_policy(&arn, &text),
    )
    .await
    .map_err(stop("iam:CreatePolicy"))?;
    Ok(arn)
}

/// claimfab's claim-binding hook: an execution role that may only describe certificates and
/// write logs, and the function with the embedded code. Returns the function's ARN.
async fn ensure_claim_binding(
    run: &mut Run<'_>,
    account: &Account,
    s: &SetupSection,
) -> Result<String, Stop> {
    let role = &s.claim_binding_role;
    let role_arn = ensure_role(run, account, role, &desired::lambda_trust_policy()).await?;
    let policy = format!("{role}Access");
    let access = desired::claim_binding_access_policy(account, &s.claim_binding_function);
    let policy_arn = ensure_iam_policy(run, account, &policy, &access).await?;
    let label = format!("{policy} -> {role}");
    ensure_attached(run, role, &policy_arn, &label, &role_arn).await?;

    let package = desired::claim_binding_package();
    let spec = FunctionSpec {
        name: &s.claim_binding_function,
        package: &package,
        role_arn: &role_arn,
        handler: desired::CLAIM_BINDING_HANDLER,
        runtime: desired::CLAIM_BINDING_RUNTIME,
        timeout: desired::CLAIM_BINDING_TIMEOUT_SECONDS,
    };
    let mut arn = format!(
        "arn:{}:lambda:{}:{}:function:{}",
        account.partition, account.region, account.account_id, spec.name
    );
    let api = run.api;
    let stop = |action: &'static str, arn: &str| {
        let (name, arn) = (spec.name.to_string(), arn.to_string());
        move |error| Stop {
            kind: "lambda function",
            name,
            action,
            resource: arn,
            error,
        }
    };
    let current = api
        .get_function(spec.name)
        .await
        .map_err(stop("lambda:GetFunction", &arn))?;
    let found = match current {
        None => Found::Missing,
        Some(f) => {
            arn = f.arn.clone();
            function_differences(&f, &spec)
        }
    };
    let fail = stop(
        "lambda:CreateFunction",
        &format!("{arn}, and iam:PassRole on {role_arn}"),
    );
    run.settle(
        "lambda function",
        spec.name,
        found,
        async {
            use backon::{ConstantBuilder, Retryable};
            // A role created seconds ago may not be assumable by Lambda yet.
            (|| api.create_function(&spec))
                .retry(
                    ConstantBuilder::default()
                        .with_delay(std::time::Duration::from_secs(5))
                        .with_max_times(12),
                )
                .when(|e| matches!(e, AwsError::Rejected(m) if m.contains("cannot be assumed")))
                .await
                .map(drop)
        },
        api.update_function(&spec),
    )
    .await
    .map_err(fail)?;
    Ok(arn)
}

/// How a deployed function differs from the desired one.
fn function_differences(current: &FunctionInfo, spec: &FunctionSpec<'_>) -> Found {
    let code = desired::lambda_code_sha256(spec.package);
    let what = if current.code_sha256 != code {
        "code differs"
    } else if current.role != spec.role_arn {
        "execution role differs"
    } else if current.handler != spec.handler || current.runtime != spec.runtime {
        "handler or runtime differs"
    } else if current.timeout != spec.timeout {
        "timeout differs"
    } else {
        return Found::Same;
    };
    Found::Differs(what.into())
}

/// An IoT policy whose default version should hold `document`.
async fn ensure_iot_policy(
    run: &mut Run<'_>,
    name: &str,
    arn: &str,
    document: &Value,
) -> Result<(), Stop> {
    let api = run.api;
    let stop = |action: &'static str| {
        let (name, arn) = (name.to_string(), arn.to_string());
        move |error| Stop {
            kind: "iot policy",
            name,
            action,
            resource: arn,
            error,
        }
    };
    let found = match api
        .get_iot_policy(name)
        .await
        .map_err(stop("iot:GetPolicy"))?
    {
        None => Found::Missing,
        Some(policy) => compare_document(&policy.document, document, "policy document"),
    };
    let text = document.to_string();
    run.settle(
        "iot policy",
        name,
        found,
        async { api.create_iot_policy(name, &text).await.map(drop) },
        api.update_iot_policy(name, &text),
    )
    .await
    .map_err(stop("iot:CreatePolicy"))
}

/// An IAM managed policy attached to a role.
async fn ensure_attached(
    run: &mut Run<'_>,
    role: &str,
    policy_arn: &str,
    label: &str,
    role_arn: &str,
) -> Result<(), Stop> {
    let api = run.api;
    let stop = |action: &'static str| {
        let (label, role_arn) = (label.to_string(), role_arn.to_string());
        move |error| Stop {
            kind: "iam attachment",
            name: label,
            action,
            resource: role_arn,
            error,
        }
    };
    // A role that does not exist yet (planning) has nothing attached.
    let attached = match api.attached_role_policies(role).await {
        Ok(arns) => arns,
        Err(AwsError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(stop("iam:ListAttachedRolePolicies")(e)),
    };
    let found = if attached.iter().any(|a| a == policy_arn) {
        Found::Same
    } else {
        Found::Missing
    };
    run.settle(
        "iam attachment",
        label,
        found,
        api.attach_role_policy(role, policy_arn),
        async { Ok(()) },
    )
    .await
    .map_err(stop("iam:AttachRolePolicy"))
}
