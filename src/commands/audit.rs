//! The `audit` command (online, for security teams): reads batch directories' manifests and
//! claim policies, lists what AWS IoT holds (certificates, claim-policy targets, things), and
//! reports drift and activation per batch as a table, JSON or CSV. Exit 1 on any drift.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::Result;

use crate::aws::Iot;
use crate::batch_dir::spec::BatchSpec;
use crate::cli::{AuditArgs, ReportFormat};
use crate::cloud::Inventory;
use crate::core::reconcile::{
    floor_report, reconcile, Activation, AwsView, BatchManifest, Finding, FloorReport,
};
use crate::core::station_config::LimitsSection;
use crate::error::UserError;
use crate::output::records::Record;

fn read_batch(dir: &Path) -> Result<(BatchSpec, BatchManifest)> {
    let (spec, rows) = crate::batch_dir::spec::read_batch_dir(dir)?;
    refresh_manifest(dir, &rows)?;
    let batch = BatchManifest {
        batch: dir.display().to_string(),
        claim_policy: spec.claim_policy.clone(),
        rows,
    };
    Ok((spec, batch))
}

/// Brings `manifest.csv` up to date with what the stations recorded since it was written
/// (statuses handed-out, flashed, spoiled, with station and time). Skipped while another
/// claimfab holds the batch directory: its own manifest will include them.
fn refresh_manifest(dir: &Path, rows: &[crate::core::manifest::ManifestRow]) -> Result<()> {
    let fresh = crate::core::manifest::to_csv(rows);
    if std::fs::read(dir.join(crate::batch_dir::MANIFEST_FILE)).is_ok_and(|old| old == fresh) {
        return Ok(());
    }
    match crate::batch_dir::BatchDir::open(dir) {
        Ok(batch) => batch.write_atomic(crate::batch_dir::MANIFEST_FILE, &fresh, 0o644),
        Err(e) if e.downcast_ref::<UserError>().is_some() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs `claimfab audit`; returns whether AWS and the manifests agree.
pub async fn run(args: AuditArgs) -> Result<bool> {
    let provision_within = crate::settings::provision_within(&args.provision_within)?;
    let mut batches = Vec::new();
    let mut regions = HashSet::new();
    for dir in &args.dirs {
        let (spec, batch) = read_batch(dir)?;
        regions.insert(spec.target.region.clone());
        batches.push(batch);
    }
    let region = crate::settings::batches_region(args.aws.region.as_ref(), regions)?;
    let settings = crate::settings::aws_settings(&args.aws, None, Some(&region))?;
    let iot = Iot::connect(&settings, &LimitsSection::default())
        .await
        .map_err(UserError::Aws)?;
    let mut view = list_aws(&iot, &batches).await?;
    if args.check_things {
        view.device_certificate_things = device_certificate_things(&iot, &batches, &view).await?;
    }
    let (findings, activation) = reconcile(&batches, &view);
    let overdue_before = time::OffsetDateTime::now_utc() - provision_within;
    let floor: Vec<FloorReport> = batches
        .iter()
        .map(|b| floor_report(b, &view, overdue_before))
        .collect();
    let report = Report {
        findings: &findings,
        activation: &activation,
        floor: &floor,
        provision_within: &args.provision_within,
    };
    crate::output::write(format_args!("{}", render(args.format, &report)));
    emit_report(&report);
    Ok(findings.is_empty())
}

/// The records of `--output json`: a `batch` per directory, a `finding` per finding, then
/// the counts.
fn emit_report(report: &Report<'_>) {
    for (activation, floor) in report.activation.iter().zip(report.floor) {
        crate::output::emit(&Record::Batch { activation, floor });
    }
    for finding in report.findings {
        crate::output::emit(&Record::Finding(finding));
    }
    crate::output::emit(&Record::Audited {
        batches: report.activation.len(),
        findings: report.findings.len(),
    });
}

/// What AWS holds that the audit compares with the manifests, by full listings.
async fn list_aws(iot: &impl Inventory, batches: &[BatchManifest]) -> Result<AwsView> {
    let listing = |what: &str, action: &str, e| {
        anyhow::anyhow!("{what}: {e}; the audit needs {action} for the AWS identity in use")
    };
    let certificate_statuses = iot
        .certificate_statuses()
        .await
        .map_err(|e| listing("ListCertificates", "iot:ListCertificates", e))?;
    let mut policy_targets = HashMap::new();
    for policy in batches
        .iter()
        .map(|b| b.claim_policy.clone())
        .collect::<HashSet<_>>()
    {
        let targets = iot
            .policy_targets(&policy)
            .await
            .map_err(|e| listing("ListTargetsForPolicy", "iot:ListTargetsForPolicy", e))?;
        policy_targets.insert(policy, targets.into_iter().collect());
    }
    let thing_names = iot
        .thing_names()
        .await
        .map_err(|e| listing("ListThings", "iot:ListThings", e))?;
    Ok(AwsView {
        certificate_statuses,
        policy_targets,
        thing_names,
        ..AwsView::default()
    })
}

/// For each provisioned device of the batches, the certificates on its thing other than the
/// batch's claims, and every thing each of them is attached to.
async fn device_certificate_things(
    iot: &impl Inventory,
    batches: &[BatchManifest],
    view: &AwsView,
) -> Result<BTreeMap<String, Vec<String>>> {
    let needs = |what: &str, action: &str, e| {
        anyhow::anyhow!(
            "{what}: {e}; audit --check-things needs {action} for the AWS identity in use"
        )
    };
    let claims: HashSet<&str> = batches
        .iter()
        .flat_map(|b| b.rows.iter().map(|r| r.certificate_arn.as_str()))
        .collect();
    let mut found = BTreeMap::new();
    let provisioned: Vec<_> = batches
        .iter()
        .flat_map(|b| &b.rows)
        .filter(|r| view.thing_names.contains(&r.thing_name))
        .collect();
    // Two paced calls per provisioned device: minutes for a large batch.
    let bar = crate::progress::stage_bar("things", provisioned.len() as u64);
    for row in provisioned {
        bar.inc(1);
        let thing = &row.thing_name;
        let principals = iot.thing_principals(thing).await.map_err(|e| {
            needs(
                &format!("ListThingPrincipals {thing}"),
                "iot:ListThingPrincipals",
                e,
            )
        })?;
        for principal in principals {
            if claims.contains(principal.as_str()) || found.contains_key(&principal) {
                continue;
            }
            let mut things = iot.principal_things(&principal).await.map_err(|e| {
                needs(
                    &format!("ListPrincipalThings {principal}"),
                    "iot:ListPrincipalThings",
                    e,
                )
            })?;
            things.sort();
            found.insert(principal, things);
        }
    }
    bar.finish_and_clear();
    Ok(found)
}

/// Everything the audit found, for rendering.
#[derive(serde::Serialize)]
struct Report<'a> {
    findings: &'a [Finding],
    activation: &'a [Activation],
    floor: &'a [FloorReport],
    #[serde(skip)]
    provision_within: &'a str,
}

/// The report in the chosen format.
fn render(format: ReportFormat, report: &Report<'_>) -> String {
    match format {
        ReportFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(report).expect("report serializes")
        ),
        ReportFormat::Csv => findings_csv(report.findings),
        ReportFormat::Table => table(report),
    }
}

/// The findings as CSV, one per line.
fn findings_csv(findings: &[Finding]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(["batch", "serial", "certificate_id", "problem"])
        .expect("in-memory CSV");
    for f in findings {
        writer
            .write_record([&f.batch, &f.serial, &f.certificate_id, &f.problem])
            .expect("in-memory CSV");
    }
    String::from_utf8(writer.into_inner().expect("in-memory CSV")).expect("UTF-8")
}

/// The human table: per batch its activation and floor, then the findings.
fn table(report: &Report<'_>) -> String {
    let mut out = String::new();
    for (a, f) in report.activation.iter().zip(report.floor) {
        out.push_str(&format!(
            "batch {}: {} devices, {} provisioned, {} not yet\n",
            a.batch,
            a.devices,
            a.provisioned,
            a.devices - a.provisioned
        ));
        out.push_str(&format!(
            "  floor: {} flashed, {} spoiled, {} at a station, {} never handed out\n",
            f.flashed, f.spoiled, f.handed_out, f.never_handed_out
        ));
        if !f.flashed_not_provisioned.is_empty() {
            out.push_str(&format!(
                "  flashed over {} ago and not provisioned: {}\n",
                report.provision_within,
                f.flashed_not_provisioned.join(", ")
            ));
        }
    }
    if report.findings.is_empty() {
        out.push_str("no drift: every certificate is as its manifest says\n");
        return out;
    }
    out.push_str(&format!("{} finding(s):\n", report.findings.len()));
    for f in report.findings {
        let who = if f.serial.is_empty() { "-" } else { &f.serial };
        out.push_str(&format!(
            "  {who:<12} {:<16} {}\n",
            f.certificate_id.get(..16).unwrap_or(&f.certificate_id),
            f.problem
        ));
    }
    out
}
