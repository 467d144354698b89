//! A production line's AWS account for end-to-end tests on devices: a local endpoint with its
//! data plane (mosquitto over mTLS with AWS IoT policies enforced, the fleet-provisioning
//! service), set up by `claimfab setup` from a station file, and the checks tests make of
//! what devices did there, through the AWS API.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

pub const GROUP: &str = "LineOne";
pub const CORE_POLICY: &str = "GreengrassV2IoTThingPolicy";
pub const CLAIM: &str = "GreengrassProvisioningClaimPolicy";
pub const TEMPLATE_NAME: &str = "GreengrassFleetProvisioningTemplate";

/// A fresh account with its data plane, set up by `claimfab setup` from a station file.
pub struct Line {
    pub endpoint: Endpoint,
    pub rt: tokio::runtime::Runtime,
    pub work: tempfile::TempDir,
    pub station: PathBuf,
}

impl Line {
    pub fn new(station_extra: &str) -> Self {
        Self::start(station_extra, &[])
    }

    /// A line whose endpoint also takes launcher options (e.g. `--drop-csr-subject`).
    pub fn start(station_extra: &str, endpoint_options: &[&str]) -> Self {
        let work = tempfile::tempdir().unwrap();
        let station = work.path().join("line.toml");
        std::fs::write(
            &station,
            format!(
                "[provisioning]\nthing_group = \"{GROUP}\"\nthing_name_pattern = \"gg-{{serial}}\"\n{station_extra}\n\
                 [limits]\ncreate_certificate_from_csr_per_second = 200\nattach_policy_per_second = 200\n"
            ),
        )
        .unwrap();
        let line = Self {
            endpoint: Endpoint::start_with(&[&["--data-plane"], endpoint_options].concat()),
            rt: runtime(),
            work,
            station,
        };
        let (code, stdout, stderr) = line.setup();
        assert_eq!(code, 0, "setup: {stdout}\n{stderr}");
        line
    }

    /// `claimfab setup` of the line's station: exit code, stdout, stderr.
    pub fn setup(&self) -> (i32, String, String) {
        run(self
            .endpoint
            .claimfab()
            .arg("setup")
            .arg("--station")
            .arg(&self.station))
    }

    pub fn batch_command(&self, name: &str, count: usize, scope: &str) -> std::process::Command {
        let mut cmd = self.endpoint.claimfab();
        cmd.args([
            "batch",
            "--count",
            &count.to_string(),
            "--claim-scope",
            scope,
        ])
        .arg("--out")
        .arg(self.work.path().join(name))
        .arg("--station")
        .arg(&self.station);
        cmd
    }

    /// Makes a batch and returns its rows and bundle paths, in manifest order.
    pub fn batch(&self, name: &str, count: usize, scope: &str) -> (Vec<Row>, Vec<PathBuf>) {
        let (code, stdout, stderr) = run(&mut self.batch_command(name, count, scope));
        assert_eq!(code, 0, "batch: {stdout}\n{stderr}");
        let dir = self.work.path().join(name);
        let rows = read_manifest(&dir);
        let bundles = rows.iter().map(|r| dir.join(&r["bundle"])).collect();
        (rows, bundles)
    }

    /// `claimfab audit --check-things` of one batch: exit code and output.
    pub fn audit_checking_things(&self, name: &str) -> (i32, String) {
        let (code, stdout, stderr) = run(self
            .endpoint
            .claimfab()
            .args(["audit", "--check-things"])
            .arg(self.work.path().join(name)));
        (code, format!("{stdout}{stderr}"))
    }

    pub fn audit(&self, name: &str) -> (i32, String) {
        let (code, stdout, stderr) = run(self
            .endpoint
            .claimfab()
            .arg("audit")
            .arg(self.work.path().join(name)));
        (code, format!("{stdout}{stderr}"))
    }
}

/// Through the AWS API: each device's thing exists with its serial's name, is in the group,
/// and holds one ACTIVE device certificate (not its claim) carrying the core policy.
pub async fn assert_provisioned(endpoint: &Endpoint, rows: &[Row], reports: &[Value]) {
    let iot = endpoint.client().await;
    for (row, report) in rows.iter().zip(reports) {
        let thing = &row["thing_name"];
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["thing_name"], thing.as_str(), "{report}");
        iot.describe_thing().thing_name(thing).send().await.unwrap();
        let groups = iot
            .list_thing_groups_for_thing()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let groups: Vec<_> = groups
            .thing_groups()
            .iter()
            .filter_map(|g| g.group_name())
            .collect();
        assert_eq!(groups, [GROUP], "{thing}");
        let principals = iot
            .list_thing_principals()
            .thing_name(thing)
            .send()
            .await
            .unwrap();
        let principals = principals.principals();
        assert_eq!(principals.len(), 1, "{thing}: {principals:?}");
        let device_cert_id = principals[0].rsplit('/').next().unwrap();
        assert_ne!(device_cert_id, row["certificate_id"], "not the claim");
        assert_eq!(report["certificate_id"], device_cert_id, "{report}");
        let status = certificate_status(&iot, device_cert_id).await;
        assert_eq!(status, "ACTIVE", "{thing}");
        let policies = iot
            .list_attached_policies()
            .target(&principals[0])
            .send()
            .await
            .unwrap();
        let names: Vec<_> = policies
            .policies()
            .iter()
            .filter_map(|p| p.policy_name())
            .collect();
        assert_eq!(names, [CORE_POLICY], "{thing}");
    }
}

/// Sets a new default version of an IoT policy.
pub async fn replace_policy(endpoint: &Endpoint, name: &str, document: &Value) {
    endpoint
        .client()
        .await
        .create_policy_version()
        .policy_name(name)
        .policy_document(document.to_string())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
}

/// A bundle whose claim files were swapped for another device's: the same config (thing
/// name), another device's claim certificate and key.
pub fn with_claim_of(bundle: &PathBuf, donor: &PathBuf, out: &PathBuf) {
    use std::io::{Read, Write};
    // The station defaults of both nuclei, under their own roots.
    let claim_files = [
        "/claim-certs/claim.pem.crt",
        "/claim-certs/claim.private.pem.key",
    ];
    let mut own = zip::ZipArchive::new(std::fs::File::open(bundle).unwrap()).unwrap();
    let mut other = zip::ZipArchive::new(std::fs::File::open(donor).unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    let mut swapped = 0;
    for i in 0..own.len() {
        let name = own.by_index(i).unwrap().name().unwrap().to_string();
        let is_claim = claim_files.iter().any(|suffix| name.ends_with(suffix));
        swapped += usize::from(is_claim);
        let source = if is_claim { &mut other } else { &mut own };
        let mut entry = source.by_name(&name).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let options = zip::write::SimpleFileOptions::default()
            .unix_permissions(entry.unix_mode().unwrap_or(0o644));
        writer.start_file(name.as_str(), options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
    assert_eq!(swapped, 2, "claim certificate and key swapped");
}

/// A certificate's status, through the AWS API.
pub async fn certificate_status(iot: &aws_sdk_iot::Client, id: &str) -> String {
    let description = iot
        .describe_certificate()
        .certificate_id(id)
        .send()
        .await
        .unwrap();
    let status = description
        .certificate_description()
        .and_then(|d| d.status());
    status.unwrap().as_str().to_string()
}

/// The claim's status in AWS and whether the claim policy is still attached to it.
pub async fn claim_state(endpoint: &Endpoint, row: &Row) -> (String, bool) {
    let iot = endpoint.client().await;
    let status = certificate_status(&iot, &row["certificate_id"]).await;
    let attached = endpoint
        .policy_targets(CLAIM)
        .await
        .contains(&row["certificate_arn"]);
    (status, attached)
}

/// What an attacker holding a claim (or any certificate) asks of the data plane, as
/// scripts/local-aws/attacker.py does it with AWS's device SDK: connect, CreateCertificateFromCsr
/// for a CSR with `common_name`, then RegisterThing with `params` and the new certificate's
/// ownership token (or one obtained on another connection).
pub struct Attempt<'a> {
    pub nucleus: &'a str,
    /// The bundle whose config names the endpoint and template (and whose claim is used
    /// unless `as_cert` is given).
    pub bundle: &'a Path,
    /// Connect with the certificate and key a previous attempt saved there instead.
    pub as_cert: Option<&'a Path>,
    pub client_id: Option<&'a str>,
    pub common_name: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    /// Where the new certificate, key and ownership token are saved.
    pub save: &'a Path,
    /// End after CreateCertificateFromCsr (the token saved, never spent).
    pub stop_after_create: bool,
    /// Skip CreateCertificateFromCsr and register with the token an earlier attempt saved
    /// in this directory.
    pub token_from: Option<&'a Path>,
}

impl Endpoint {
    /// Runs one attempt; returns the attacker's JSON report.
    pub fn attack(&self, attempt: &Attempt<'_>) -> Value {
        let mut cmd = std::process::Command::new(repo().join(".venv/bin/python"));
        cmd.arg(repo().join("scripts/local-aws/attacker.py"))
            .args(["--nucleus", attempt.nucleus])
            .arg("--bundle")
            .arg(attempt.bundle)
            .args(["--csr-common-name", attempt.common_name])
            .arg("--save")
            .arg(attempt.save)
            .arg("--connect-to")
            .arg(self.data_plane_address())
            .arg("--root-ca")
            .arg(&self.ca_cert);
        if let Some(dir) = attempt.as_cert {
            cmd.arg("--as-cert").arg(dir);
        }
        if let Some(id) = attempt.client_id {
            cmd.args(["--client-id", id]);
        }
        if attempt.stop_after_create {
            cmd.args(["--stop-after", "create"]);
        }
        if let Some(dir) = attempt.token_from {
            cmd.arg("--token-from").arg(dir);
        }
        for (key, value) in attempt.params {
            cmd.arg("--param").arg(format!("{key}={value}"));
        }
        let output = cmd.output().expect("run attacker.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let line = stdout.lines().rfind(|l| l.starts_with('{'));
        serde_json::from_str(line.unwrap_or_default()).unwrap_or_else(|_| {
            panic!(
                "attacker.py gave no report: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }
}
