//! Reconciling batch manifests with what AWS IoT holds: certificates missing or in another
//! status than the manifest says, claim policies not attached, certificates attached to a
//! claim policy that no given manifest knows, and which devices have since provisioned
//! (their thing exists). Pure: manifests and AWS listings in, findings out. A certificate
//! shared by a whole batch (`--claim-scope batch`) is checked and reported once.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::core::ledger::CertificateStatus;
use crate::core::manifest::{DeviceStatus, ManifestRow};

/// One batch directory's manifest and claim policy.
pub struct BatchManifest {
    pub batch: String,
    pub claim_policy: String,
    pub rows: Vec<ManifestRow>,
}

/// What AWS holds, as read by full listings.
#[derive(Default)]
pub struct AwsView {
    /// Certificate id -> status.
    pub certificate_statuses: HashMap<String, CertificateStatus>,
    /// Claim policy -> ARNs it is attached to.
    pub policy_targets: HashMap<String, HashSet<String>>,
    pub thing_names: HashSet<String>,
    /// Device certificate ARN (a principal of a provisioned device's thing other than its
    /// claim) -> every thing it is attached to; read only when asked (`audit --check-things`).
    pub device_certificate_things: BTreeMap<String, Vec<String>>,
}

/// A difference between a manifest and AWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub batch: String,
    /// The device; empty for a certificate in no manifest, or shared by a whole batch.
    pub serial: String,
    pub certificate_id: String,
    pub problem: String,
}

/// How many devices of a batch have provisioned (their thing exists).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    pub batch: String,
    pub devices: usize,
    pub provisioned: usize,
    pub not_provisioned: Vec<String>,
}

/// Compares manifests with AWS.
pub fn reconcile(batches: &[BatchManifest], aws: &AwsView) -> (Vec<Finding>, Vec<Activation>) {
    let mut findings = Vec::new();
    let mut known_arns: HashSet<&str> = HashSet::new();
    for batch in batches {
        findings.extend(batch_findings(batch, aws, &mut known_arns));
    }
    findings.extend(unknown_certificates(batches, aws, &known_arns));
    findings.extend(certificates_on_several_things(batches, aws));
    let activation = batches.iter().map(|b| activation(b, aws)).collect();
    (findings, activation)
}

/// Each certificate of a batch against AWS, once however many devices share it; adds the
/// certificates' ARNs to `known_arns`.
fn batch_findings<'a>(
    batch: &'a BatchManifest,
    aws: &AwsView,
    known_arns: &mut HashSet<&'a str>,
) -> Vec<Finding> {
    let targets = aws.policy_targets.get(&batch.claim_policy);
    let mut findings = Vec::new();
    for (row, holders) in certificates(batch) {
        known_arns.insert(row.certificate_arn.as_str());
        let attached = targets.is_some_and(|t| t.contains(&row.certificate_arn));
        let status = aws.certificate_statuses.get(&row.certificate_id);
        findings.extend(
            certificate_problems(row, status, attached, &batch.claim_policy)
                .into_iter()
                .map(|problem| finding(batch, row, holders, problem)),
        );
    }
    findings
}

/// A problem of the certificate of `row`, which `holders` rows name: a device's own, or
/// the batch's shared one.
fn finding(batch: &BatchManifest, row: &ManifestRow, holders: usize, problem: String) -> Finding {
    let (serial, problem) = match holders {
        1 => (row.serial.clone(), problem),
        n => (String::new(), format!("shared by {n} devices: {problem}")),
    };
    Finding {
        batch: batch.batch.clone(),
        serial,
        certificate_id: row.certificate_id.clone(),
        problem,
    }
}

/// What is wrong with one manifest row's certificate, given its status in AWS (`None`: AWS
/// does not hold it) and whether the claim policy is attached to it.
fn certificate_problems(
    row: &ManifestRow,
    status: Option<&CertificateStatus>,
    attached: bool,
    claim_policy: &str,
) -> Vec<String> {
    let expected = match row.status {
        DeviceStatus::Ready
        | DeviceStatus::HandedOut
        | DeviceStatus::Flashed
        | DeviceStatus::Spoiled => CertificateStatus::Active,
        DeviceStatus::Inactive => CertificateStatus::Inactive,
        DeviceStatus::Revoked => CertificateStatus::Revoked,
        DeviceStatus::Deleted => {
            return status
                .map(|s| format!("manifest says deleted but AWS still holds it ({s})"))
                .into_iter()
                .collect()
        }
        // Unfinished devices: the batch's re-run reconciles them.
        DeviceStatus::Failed | DeviceStatus::Pending => return Vec::new(),
    };
    let Some(status) = status else {
        return vec!["certificate does not exist in AWS".into()];
    };
    let mut problems = Vec::new();
    if *status != expected {
        problems.push(format!(
            "manifest says {} but AWS says {status}",
            manifest_word(row.status)
        ));
    }
    if row.status.is_live() && !attached {
        problems.push(format!("claim policy {claim_policy} is not attached"));
    }
    problems
}

/// Certificates attached to a batch's claim policy that no given manifest names.
fn unknown_certificates(
    batches: &[BatchManifest],
    aws: &AwsView,
    known_arns: &HashSet<&str>,
) -> Vec<Finding> {
    let mut policies: Vec<&String> = batches.iter().map(|b| &b.claim_policy).collect();
    policies.sort();
    policies.dedup();
    let mut findings = Vec::new();
    for policy in policies {
        let mut unknown: Vec<&String> = aws
            .policy_targets
            .get(policy)
            .into_iter()
            .flatten()
            .filter(|arn| arn.contains(":cert/") && !known_arns.contains(arn.as_str()))
            .collect();
        unknown.sort();
        findings.extend(unknown.into_iter().map(|arn| Finding {
            batch: String::new(),
            serial: String::new(),
            certificate_id: arn.rsplit('/').next().unwrap_or_default().to_string(),
            problem: format!("attached to claim policy {policy} but in no given manifest"),
        }));
    }
    findings
}

/// Device certificates attached to more than one thing, each reported once, against the
/// first device of the given batches whose thing holds it: a certificate that is another
/// thing's too lets one device act as another (the template attaches it exclusively, so it
/// was attached by hand or before exclusive association).
fn certificates_on_several_things(batches: &[BatchManifest], aws: &AwsView) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (arn, things) in &aws.device_certificate_things {
        if things.len() < 2 {
            continue;
        }
        let holder = batches.iter().find_map(|batch| {
            let row = batch.rows.iter().find(|r| things.contains(&r.thing_name))?;
            Some((batch, row))
        });
        let Some((batch, row)) = holder else {
            continue;
        };
        findings.push(Finding {
            batch: batch.batch.clone(),
            serial: row.serial.clone(),
            certificate_id: arn.rsplit('/').next().unwrap_or_default().to_string(),
            problem: format!(
                "device certificate attached to {} things ({}): detach it from every thing but {}",
                things.len(),
                things.join(", "),
                row.thing_name
            ),
        });
    }
    findings
}

/// How many of a batch's devices have provisioned (their thing exists).
fn activation(batch: &BatchManifest, aws: &AwsView) -> Activation {
    let not_provisioned: Vec<String> = batch
        .rows
        .iter()
        .filter(|r| !aws.thing_names.contains(&r.thing_name))
        .map(|r| r.serial.clone())
        .collect();
    Activation {
        batch: batch.batch.clone(),
        devices: batch.rows.len(),
        provisioned: batch.rows.len() - not_provisioned.len(),
        not_provisioned,
    }
}

/// A batch on the factory floor: how many bundles stations flashed or spoiled, how many
/// are out at a station or were never handed out, how many devices provisioned, and which
/// were flashed before `overdue_before` yet have not provisioned (a board that may never
/// reach the network, or a claim that does not work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloorReport {
    pub batch: String,
    pub flashed: usize,
    pub spoiled: usize,
    pub handed_out: usize,
    pub never_handed_out: usize,
    pub provisioned: usize,
    pub flashed_not_provisioned: Vec<String>,
}

/// Counts a batch's floor states (its rows carry them, see `core::floor_records::overlay`).
pub fn floor_report(
    batch: &BatchManifest,
    aws: &AwsView,
    overdue_before: time::OffsetDateTime,
) -> FloorReport {
    let count = |status| batch.rows.iter().filter(|r| r.status == status).count();
    let overdue = |row: &&ManifestRow| {
        let flashed_at = time::OffsetDateTime::parse(
            &row.station_at,
            &time::format_description::well_known::Rfc3339,
        );
        flashed_at.is_ok_and(|at| at < overdue_before) && !aws.thing_names.contains(&row.thing_name)
    };
    FloorReport {
        batch: batch.batch.clone(),
        flashed: count(DeviceStatus::Flashed),
        spoiled: count(DeviceStatus::Spoiled),
        handed_out: count(DeviceStatus::HandedOut),
        never_handed_out: count(DeviceStatus::Ready),
        provisioned: batch
            .rows
            .iter()
            .filter(|r| aws.thing_names.contains(&r.thing_name))
            .count(),
        flashed_not_provisioned: batch
            .rows
            .iter()
            .filter(|r| r.status == DeviceStatus::Flashed)
            .filter(overdue)
            .map(|r| r.serial.clone())
            .collect(),
    }
}

/// Each certificate the batch's rows name, once, in row order: its first row and how many
/// rows name it (more than one in batch claim scope).
fn certificates(batch: &BatchManifest) -> Vec<(&ManifestRow, usize)> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut certificates: Vec<(&ManifestRow, usize)> = Vec::new();
    for row in batch.rows.iter().filter(|r| !r.certificate_id.is_empty()) {
        match index.get(row.certificate_id.as_str()) {
            Some(&i) => certificates[i].1 += 1,
            None => {
                index.insert(&row.certificate_id, certificates.len());
                certificates.push((row, 1));
            }
        }
    }
    certificates
}

/// How the manifest's status column spells a status.
fn manifest_word(status: DeviceStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_counted_and_overdue_boards_named() {
        let at = |status, serial: &str, time: &str| ManifestRow {
            station: "st1".into(),
            station_at: time.into(),
            ..row(serial, status)
        };
        let batch = BatchManifest {
            batch: "b".into(),
            claim_policy: "P".into(),
            rows: vec![
                at(DeviceStatus::Flashed, "A", "2026-11-20T00:00:00Z"),
                at(DeviceStatus::Flashed, "B", "2026-11-20T00:00:00Z"),
                at(DeviceStatus::Flashed, "C", "2026-11-26T00:00:00Z"),
                at(DeviceStatus::Spoiled, "D", "2026-11-20T00:00:00Z"),
                at(DeviceStatus::HandedOut, "E", "2026-11-20T00:00:00Z"),
                row("F", DeviceStatus::Ready),
            ],
        };
        let aws = AwsView {
            certificate_statuses: HashMap::new(),
            policy_targets: HashMap::new(),
            thing_names: ["gg-A".to_string()].into_iter().collect(),
            ..Default::default()
        };
        let cutoff = time::macros::datetime!(2026-11-25 0:00 UTC);
        let report = floor_report(&batch, &aws, cutoff);
        assert_eq!(
            (
                report.flashed,
                report.spoiled,
                report.handed_out,
                report.never_handed_out
            ),
            (3, 1, 1, 1)
        );
        assert_eq!(report.provisioned, 1);
        assert_eq!(
            report.flashed_not_provisioned,
            vec!["B".to_string()],
            "C is recent, A provisioned"
        );
    }

    fn row(serial: &str, status: DeviceStatus) -> ManifestRow {
        ManifestRow {
            certificate_id: format!("id-{serial}"),
            certificate_arn: format!("arn:aws:iot:r:1:cert/id-{serial}"),
            ..ManifestRow::new(serial, &format!("gg-{serial}"), status)
        }
    }

    /// Batch `b1` with claim policy `Claim`.
    fn one_batch(rows: Vec<ManifestRow>) -> [BatchManifest; 1] {
        [BatchManifest {
            batch: "b1".into(),
            claim_policy: "Claim".into(),
            rows,
        }]
    }

    fn statuses(pairs: &[(&str, &str)]) -> HashMap<String, CertificateStatus> {
        pairs
            .iter()
            .map(|&(id, status)| (id.to_string(), CertificateStatus::from(status)))
            .collect()
    }

    /// AWS holding these certificates, with no policy targets and no things.
    fn only_certificates(pairs: &[(&str, &str)]) -> AwsView {
        AwsView {
            certificate_statuses: statuses(pairs),
            ..Default::default()
        }
    }

    /// The findings' problems, in order.
    fn problems(batches: &[BatchManifest], aws: &AwsView) -> Vec<String> {
        let (findings, _) = reconcile(batches, aws);
        findings.into_iter().map(|f| f.problem).collect()
    }

    #[test]
    fn finds_each_kind_of_drift_and_counts_activation() {
        let batches = one_batch(vec![
            row("A", DeviceStatus::Ready),
            row("B", DeviceStatus::Ready),
            row("C", DeviceStatus::Ready),
            row("D", DeviceStatus::Ready),
        ]);
        let aws = AwsView {
            certificate_statuses: statuses(&[
                ("id-A", "ACTIVE"),
                ("id-B", "REVOKED"),
                ("id-C", "ACTIVE"),
                ("id-X", "ACTIVE"),
            ]),
            policy_targets: HashMap::from([(
                "Claim".into(),
                HashSet::from([
                    "arn:aws:iot:r:1:cert/id-A".to_string(),
                    "arn:aws:iot:r:1:cert/id-B".to_string(),
                    "arn:aws:iot:r:1:cert/id-X".to_string(),
                ]),
            )]),
            thing_names: HashSet::from(["gg-A".to_string()]),
            ..Default::default()
        };
        let (findings, activation) = reconcile(&batches, &aws);
        let problems: Vec<(String, String)> = findings
            .iter()
            .map(|f| (f.serial.clone(), f.problem.clone()))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "B".into(),
                    "manifest says ready but AWS says REVOKED".into()
                ),
                ("C".into(), "claim policy Claim is not attached".into()),
                ("D".into(), "certificate does not exist in AWS".into()),
                (
                    "".into(),
                    "attached to claim policy Claim but in no given manifest".into()
                ),
            ]
        );
        assert_eq!(findings[3].certificate_id, "id-X");
        assert_eq!(activation[0].provisioned, 1);
        assert_eq!(activation[0].not_provisioned, ["B", "C", "D"]);
    }

    #[test]
    fn revoked_and_deleted_rows_are_checked_against_their_own_status() {
        let batches = one_batch(vec![
            row("A", DeviceStatus::Revoked),
            row("B", DeviceStatus::Deleted),
            row("C", DeviceStatus::Inactive),
            row("D", DeviceStatus::Deleted),
            row("E", DeviceStatus::Failed),
        ]);
        let aws =
            only_certificates(&[("id-A", "REVOKED"), ("id-C", "ACTIVE"), ("id-D", "REVOKED")]);
        assert_eq!(
            problems(&batches, &aws),
            [
                "manifest says inactive but AWS says ACTIVE",
                "manifest says deleted but AWS still holds it (REVOKED)",
            ]
        );
    }

    #[test]
    fn a_device_certificate_on_two_things_is_named_once() {
        let batches = one_batch(vec![
            row("A", DeviceStatus::Ready),
            row("B", DeviceStatus::Ready),
        ]);
        let own = |id: &str| format!("arn:aws:iot:r:1:cert/{id}");
        let aws = AwsView {
            certificate_statuses: statuses(&[("id-A", "ACTIVE"), ("id-B", "ACTIVE")]),
            policy_targets: HashMap::from([(
                "Claim".into(),
                HashSet::from([own("id-A"), own("id-B")]),
            )]),
            thing_names: HashSet::from(["gg-A".to_string(), "gg-B".to_string()]),
            device_certificate_things: BTreeMap::from([
                (own("dev-A"), vec!["gg-A".to_string(), "gg-B".to_string()]),
                (own("dev-B"), vec!["gg-B".to_string()]),
            ]),
        };
        let (findings, _) = reconcile(&batches, &aws);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].serial, "A");
        assert_eq!(findings[0].certificate_id, "dev-A");
        assert_eq!(
            findings[0].problem,
            "device certificate attached to 2 things (gg-A, gg-B): detach it from every thing but gg-A"
        );
    }

    #[test]
    fn a_shared_certificate_is_reported_once_for_the_batch() {
        let shared = |serial: &str| ManifestRow {
            certificate_id: "id-S".into(),
            certificate_arn: "arn:aws:iot:r:1:cert/id-S".into(),
            ..row(serial, DeviceStatus::Ready)
        };
        let batches = one_batch(vec![shared("A"), shared("B"), shared("C")]);
        let aws = AwsView {
            certificate_statuses: statuses(&[("id-S", "REVOKED")]),
            policy_targets: HashMap::from([(
                "Claim".into(),
                HashSet::from(["arn:aws:iot:r:1:cert/id-S".to_string()]),
            )]),
            thing_names: HashSet::from(["gg-B".to_string()]),
            ..Default::default()
        };
        let (findings, activation) = reconcile(&batches, &aws);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].serial, "");
        assert_eq!(
            findings[0].problem,
            "shared by 3 devices: manifest says ready but AWS says REVOKED"
        );
        assert_eq!(activation[0].provisioned, 1);
    }

    #[test]
    fn a_status_this_build_does_not_know_is_reported_as_aws_spells_it() {
        let batches = one_batch(vec![
            row("A", DeviceStatus::Inactive),
            row("B", DeviceStatus::Inactive),
        ]);
        let aws =
            only_certificates(&[("id-A", "PENDING_TRANSFER"), ("id-B", "SOME_FUTURE_STATUS")]);
        assert_eq!(
            problems(&batches, &aws),
            [
                "manifest says inactive but AWS says PENDING_TRANSFER",
                "manifest says inactive but AWS says SOME_FUTURE_STATUS",
            ]
        );
    }
}
