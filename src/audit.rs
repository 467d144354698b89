//! The `audit` command (online, for security teams): reads batch directories' manifests and
//! claim policies, lists what AWS IoT holds (certificates, claim-policy targets, things), and
//! reports drift and activation per batch as a table, JSON or CSV. Exit 1 on any drift.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::Result;

use crate::aws::Iot;
use crate::batch::BatchSpec;
use crate::cli::{AuditArgs, ReportFormat};
use crate::cloud::Inventory;
use crate::core::audit::{reconcile, Activation, AwsView, BatchManifest, Finding};
use crate::core::station::LimitsSection;
use crate::error::UserError;

fn read_batch(dir: &Path) -> Result<(BatchSpec, BatchManifest), UserError> {
    let (spec, rows) = crate::batch::read_batch_dir(dir)?;
    let batch = BatchManifest {
        batch: dir.display().to_string(),
        claim_policy: spec.claim_policy.clone(),
        rows,
    };
    Ok((spec, batch))
}

/// Runs `claimfab audit`; returns whether AWS and the manifests agree.
pub async fn run(args: AuditArgs) -> Result<bool> {
    let mut batches = Vec::new();
    let mut regions = HashSet::new();
    for dir in &args.dirs {
        let (spec, batch) = read_batch(dir)?;
        regions.insert(spec.target.region.clone());
        batches.push(batch);
    }
    let region =
        match (&args.aws.region, regions.len()) {
            (Some(region), _) => region.clone(),
            (None, 1) => regions.into_iter().next().expect("one region"),
            (None, _) => return Err(UserError::Aws(
                "the batches are in different regions; audit one region at a time or pass --region"
                    .into(),
            )
            .into()),
        };
    let settings = crate::settings::aws_settings(&args.aws, None, Some(&region))?;
    let iot = Iot::connect(&settings, &LimitsSection::default())
        .await
        .map_err(UserError::Aws)?;
    let view = list_aws(&iot, &batches).await?;
    let (findings, activation) = reconcile(&batches, &view);
    crate::output::write(format_args!(
        "{}",
        render(args.format, &findings, &activation)
    ));
    Ok(findings.is_empty())
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
    })
}

/// The report in the chosen format.
fn render(format: ReportFormat, findings: &[Finding], activation: &[Activation]) -> String {
    match format {
        ReportFormat::Json => {
            let report = serde_json::json!({"findings": findings, "activation": activation});
            format!(
                "{}\n",
                serde_json::to_string_pretty(&report).expect("report serializes")
            )
        }
        ReportFormat::Csv => {
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
        ReportFormat::Table => {
            let mut out = String::new();
            for a in activation {
                out.push_str(&format!(
                    "batch {}: {} devices, {} provisioned, {} not yet\n",
                    a.batch,
                    a.devices,
                    a.provisioned,
                    a.devices - a.provisioned
                ));
            }
            if findings.is_empty() {
                out.push_str("no drift: every certificate is as its manifest says\n");
            } else {
                out.push_str(&format!("{} finding(s):\n", findings.len()));
                for f in findings {
                    let who = if f.serial.is_empty() { "-" } else { &f.serial };
                    out.push_str(&format!(
                        "  {who:<12} {:<16} {}\n",
                        f.certificate_id.get(..16).unwrap_or(&f.certificate_id),
                        f.problem
                    ));
                }
            }
            out
        }
    }
}
