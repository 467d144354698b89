//! Account setup, for the `setup` command: brings an AWS account to the fleet-provisioning setup of AWS's guide
//! (token exchange role and its access policy, role alias, core devices' IoT policy, fleet
//! provisioning role, thing group, claimfab's claim-binding hook when asked for, AWS IoT's
//! permission to invoke the template's hook, provisioning template, claim policy),
//! idempotently, through the [`AccountApi`] trait: [`run`] connects to AWS, [`run_with`]
//! runs on any implementation (tests use one in memory).
//!
//! The setup is a table of steps built once from the station (`steps`): each step is one
//! resource with its name in the report and its purpose. Its type (`Resource`, one impl
//! per type of AWS resource, in `resources`) says how to read, create and update it, and its
//! `Kind` which IAM action each of those calls needs. The one table drives the plan
//! (`--plan` only reads), the report, and the steps not reached after a failure. Each
//! resource is read, compared with its desired document (as JSON), and created, left, or
//! reported as drift (updated only with `--update-drifted`), by the one loop in `settle`.
//! Steps that need what an earlier one found (a role's ARN, the hook function's ARN) read it
//! from a `Context` the earlier step fills in. The resolved ARNs and endpoints are recorded
//! beside the station file for `batch`. Decisions on a failed call use the kind AWS's error
//! code gave it ([`AwsError`]), never its message.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::aws::{AccountClient, AwsSettings};
use crate::cloud::{
    AccountApi, AwsError, EndpointKind, FunctionInfo, FunctionSpec, PolicyInfo, RoleAliasInfo,
    RoleInfo, TemplateInfo, TemplateSpec,
};
use crate::core::account_documents::{
    self as desired, Account, CorePolicy, HookPermission, TemplateShape,
    THINGS_REGISTRATION_POLICY_ARN,
};
use crate::core::station_config::{CorePolicyVariant, StationConfig};
use crate::error::UserError;
use crate::settings::{record_path, SetupRecord};

mod resources;
mod settle;
mod steps;

use resources::*;
use settle::{AnyResource, Kind};
use steps::{steps, Context, Step};

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

/// The `step` record of one resource (`--output json`).
fn emit_step(kind: &str, name: &str, result: &str, detail: Option<&str>) {
    crate::output::emit(&crate::output::records::Record::Step {
        kind,
        name,
        result,
        detail,
    });
}

/// The `setup_summary` record of a run.
fn emit_summary(
    account: &Account,
    plan: bool,
    changes: usize,
    drifts: usize,
    record: Option<&Path>,
) {
    crate::output::emit(&crate::output::records::Record::SetupSummary {
        account_id: &account.account_id,
        region: &account.region,
        plan,
        changes,
        drifts,
        record: record.map(|p| p.display().to_string()).as_deref(),
    });
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
            let what = match outcome {
                Outcome::Drift(what) | Outcome::WouldUpdate(what) => Some(what.as_str()),
                _ => None,
            };
            emit_step(step.kind, &step.name, &word.to_lowercase(), what);
        }
        if let Some(stop) = stopped {
            let error = &stop.refused.error;
            crate::say!("  FAILED   {} {}: {error}", stop.kind, stop.name);
            emit_step(stop.kind, &stop.name, "failed", Some(&error.to_string()));
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

/// What `setup` is asked, every value resolved: the station (read and checked), the file it
/// came from (the record is written beside it), and how to reach AWS.
pub struct SetupRequest {
    pub station_file: PathBuf,
    pub station: StationConfig,
    pub settings: AwsSettings,
    /// The endpoint override in use, recorded so `batch` uses the record only against the
    /// same endpoint.
    pub endpoint_url: Option<String>,
    /// Read only: print the plan.
    pub plan: bool,
    /// Update what differs instead of reporting it as drift.
    pub update_drifted: bool,
}

/// Carries out `claimfab setup` against AWS; returns false when drift was left in place.
pub async fn run(args: SetupRequest) -> Result<bool> {
    let api = AccountClient::connect(&args.settings, &args.station.limits)
        .await
        .map_err(UserError::Aws)?;
    run_with(&api, args).await
}

/// Carries out `claimfab setup` through `api`; returns false when drift was left in place.
pub async fn run_with(api: &impl AccountApi, args: SetupRequest) -> Result<bool> {
    let station = &args.station;
    let account = account(api).await?;
    let verb = if args.plan { "plan for" } else { "setting up" };
    let (id, region) = (&account.account_id, &account.region);
    crate::say!("{verb} fleet provisioning in account {id} region {region}:");
    let mode = Mode {
        plan: args.plan,
        update_drifted: args.update_drifted,
    };
    let mut ctx = Context::new(station, &account);
    let steps = steps(station, &account, &ctx);
    let mut report = Report {
        steps: &steps,
        outcomes: Vec::new(),
    };
    let applied = match apply(api, mode, &mut report, &mut ctx).await {
        Ok(()) if args.plan => Ok(None),
        Ok(()) => account_endpoints(api, station).await.map(Some),
        Err(stop) => Err(stop),
    };
    match applied {
        Ok(None) => {
            report.print(None);
            let changes = report.changes();
            crate::say!("{changes} change(s) to make; nothing was touched (--plan)");
            emit_summary(&account, true, changes, report.drifts(), None);
            Ok(true)
        }
        Ok(Some(endpoints)) => {
            report.print(None);
            let mut record = record(station, &account, &ctx, endpoints);
            record.endpoint_url = args.endpoint_url.clone();
            finish(&report, &args.station_file, &record, &account)
        }
        Err(stop) => {
            report.print(Some(&stop));
            Err(stopped(stop))
        }
    }
}

/// The account and region the credentials in use are for.
async fn account(api: &impl AccountApi) -> Result<Account> {
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
    Ok(account)
}

/// Settles the steps in order, each outcome into the report, until one fails.
async fn apply(
    api: &impl AccountApi,
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
fn finish(
    report: &Report<'_>,
    station: &Path,
    record: &SetupRecord,
    account: &Account,
) -> Result<bool> {
    let path = record_path(station);
    write_record(&path, record)?;
    let (changes, drifts) = (report.changes(), report.drifts());
    emit_summary(account, false, changes, drifts, Some(&path));
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
        AwsError::AlreadyExists(detail) => format!(
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
    api: &impl AccountApi,
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
    api: &impl AccountApi,
    kind: EndpointKind,
    pinned: &Option<String>,
) -> Result<String, Stop> {
    if let Some(host) = pinned {
        return Ok(host.clone());
    }
    let name = kind.endpoint_type();
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
    use std::io::Write;
    // A bare file name lives in the working directory.
    let path = match path.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new(".").join(path),
        _ => path.to_path_buf(),
    };
    let json = serde_json::to_vec_pretty(record).expect("record serializes");
    crate::batch_dir::replace_file_at(&path, 0o644, |file| file.write_all(&json))
}
