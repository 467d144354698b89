//! The `batch` command: resolves the station, devices and flags into a [`BatchPlan`], checks
//! everything that can be checked (files, names, output directory, AWS credentials, the claim
//! policy, the account endpoints) before anything is created, then runs the pipeline and
//! prints the summary. Resuming is the same command on the same directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::aws::Iot;
use crate::cli::{BatchArgs, ClaimScopeArg};
use crate::cloud::{AwsError, Claims, EndpointKind, Inventory};
use crate::core::devices::{self, ClaimScope, Device};
use crate::core::greengrass::ProvisioningTarget;
use crate::core::sealed::Recipients;
use crate::core::signing::BatchSigner;
use crate::core::station::{KeyAlgorithm, LimitsSection, StationConfig};
use crate::core::{names, preflight};
use crate::error::UserError;
use crate::journal::{JournalFiles, JournalStore};
use crate::outdir::{self, BatchDir, Existing, BATCH_FILE, JOURNAL_FILE, MANIFEST_FILE};
use crate::pipeline::{BatchPlan, BatchRun, Outcome};
use crate::signing::BatchSigning;

/// What `batch.json` records about a batch, so a re-run can tell it is the same batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    pub format: u32,
    pub device_count: usize,
    /// SHA-256 over every serial and thing name, in order.
    pub devices_sha256: String,
    pub claim_policy: String,
    pub key_algorithm: KeyAlgorithm,
    pub target: ProvisioningTarget,
    /// One claim certificate per device, or one for the whole batch.
    #[serde(default)]
    pub claim_scope: ClaimScope,
    /// The stations (age X25519 recipients, canonical order) every bundle is encrypted to;
    /// empty: bundles are plain zips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encrypt_to: Vec<String>,
    /// The batch-signing public key (`claimfab-ed25519:...`) that signs this batch's
    /// `batch.json` and bundles; absent: the batch is not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

impl BatchSpec {
    /// The recipients bundles are encrypted to, `None` for plain bundles. A hand-edited
    /// `batch.json` with a bad one is refused, naming `dir`, the batch it came from.
    pub fn recipients(&self, dir: &Path) -> Result<Option<Recipients>, UserError> {
        if self.encrypt_to.is_empty() {
            return Ok(None);
        }
        Recipients::parse(self.encrypt_to.iter().map(String::as_str))
            .map(Some)
            .map_err(|e| {
                UserError::output_dir(
                    dir,
                    format!(
                        "{BATCH_FILE} encrypt_to: {e}; restore the {BATCH_FILE} claimfab wrote"
                    ),
                )
            })
    }
}

fn devices_fingerprint(devices: &[Device]) -> String {
    let mut hash = Sha256::new();
    for d in devices {
        hash.update(d.serial.as_bytes());
        hash.update(b"\0");
        hash.update(d.thing_name.as_bytes());
        hash.update(b"\n");
    }
    hex::encode(hash.finalize())
}

/// How a batch command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchResult {
    /// Every device is ready.
    Done,
    /// Some devices failed (listed in the summary).
    SomeFailed,
    /// Stopped by a signal before the end.
    Interrupted,
}

/// Resolves the device list from `--count`/`--first-serial` or `--devices`.
fn resolve_devices(args: &BatchArgs, station: &StationConfig) -> Result<Vec<Device>, UserError> {
    let pattern = station.thing_name_pattern();
    if let Some(file) = &args.devices {
        let bytes = std::fs::read(file).map_err(|e| UserError::Devices {
            file: file.clone(),
            line: 0,
            problem: format!("cannot read: {e}; check the path passed to --devices"),
        })?;
        return devices::parse_serials_csv(&bytes, &pattern).map_err(|p| UserError::Devices {
            file: file.clone(),
            line: p.line,
            problem: p.problem,
        });
    }
    let count = args.count.expect("clap requires --count or --devices");
    if !(1..=1_000_000).contains(&count) {
        return Err(UserError::Flag {
            flag: "--count",
            value: count.to_string(),
            problem: "must be 1 to 1000000 devices per batch".into(),
        });
    }
    let flag_error = |problem: String| UserError::Flag {
        flag: "--first-serial",
        value: args.first_serial.clone(),
        problem,
    };
    let serials = devices::counted_serials(&args.first_serial, count).map_err(flag_error)?;
    let numbered = serials
        .into_iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s))
        .collect();
    devices::devices_from_serials(numbered, &pattern).map_err(|p| flag_error(p.problem))
}

fn check_override(
    flag: &'static str,
    value: &Option<String>,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), UserError> {
    match value {
        Some(v) => check(v).map_err(|problem| UserError::Flag {
            flag,
            value: v.clone(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Turns an AWS error met during preflight into a one-line user error.
fn preflight_error(what: &str, action: &str, error: AwsError) -> UserError {
    let fix = match &error {
        AwsError::AccessDenied(_) => format!("allow {action} for the AWS identity in use"),
        AwsError::Uncertain(_) => {
            "check the network, --endpoint-url / AWS_ENDPOINT_URL and the region".to_string()
        }
        _ => "check the region and account".to_string(),
    };
    UserError::Aws(format!("{what}: {error}; {fix}"))
}

/// Checks, before anything is created, that the batch's devices will be able to provision:
/// the claim policy exists and allows what their nucleus asks for, and the template exists,
/// is enabled, reads exactly the parameters the bundles send, puts devices in the station's
/// thing group only, and makes per-device policies that fit AWS IoT's size limit for the
/// longest thing name.
pub async fn preflight(
    iot: &impl Inventory,
    spec: &BatchSpec,
    devices: &[Device],
) -> Result<(), UserError> {
    let (policy, target) = (&spec.claim_policy, &spec.target);
    let region = iot.region();
    let document = iot
        .policy_document(policy)
        .await
        .map_err(|e| preflight_error(&format!("GetPolicy {policy}"), "iot:GetPolicy", e))?
        .ok_or_else(|| UserError::Aws(format!(
            "claim policy {policy:?} does not exist in {region}; create it with `claimfab setup --station FILE` or pass --claim-policy"
        )))?;
    let name = &target.template;
    let template = iot
        .provisioning_template(name)
        .await
        .map_err(|e| {
            preflight_error(
                &format!("DescribeProvisioningTemplate {name}"),
                "iot:DescribeProvisioningTemplate",
                e,
            )
        })?
        .ok_or_else(|| UserError::Aws(format!(
            "provisioning template {name:?} does not exist in {region}; create it with `claimfab setup --station FILE` or pass --template"
        )))?;
    let Some(longest) = devices
        .iter()
        .map(|d| d.thing_name.as_str())
        .max_by_key(|n| n.len())
    else {
        return Ok(());
    };
    let view = preflight::TemplateView {
        name,
        arn: &template.arn,
        enabled: template.enabled,
        body: &template.body,
    };
    let sent = target.template_parameters(longest);
    let group = target.thing_group.as_deref();
    preflight::check_template(&view, &sent, longest, group).map_err(UserError::Aws)?;
    let prefix = preflight::arn_prefix(&template.arn).ok_or_else(|| {
        UserError::Aws(format!(
            "DescribeProvisioningTemplate {name}: unexpected ARN {:?}",
            template.arn
        ))
    })?;
    preflight::check_claim_policy(policy, &document, &prefix, target.greengrass.nucleus, name)
        .map_err(UserError::Aws)
}

/// Runs `claimfab batch`.
pub async fn run(args: BatchArgs) -> Result<BatchResult> {
    let station = crate::settings::read_station(&args.station)?;
    check_override(
        "--claim-policy",
        &args.claim_policy,
        names::check_policy_name,
    )?;
    check_override("--template", &args.template, names::check_template_name)?;
    check_claim_scope(&args, &station)?;
    let recipients = crate::sealed::read_recipients(&args.encrypt_to, &args.encrypt_to_file)?;
    check_encryption_scope(&args, &recipients)?;
    let signer =
        crate::signing::resolve_signer(args.sign_with.as_deref(), &station, &args.station)?;
    let devices = resolve_devices(&args, &station)?;
    let previous = previous_spec(&args.out)?;

    let settings = crate::settings::aws_settings(&args.aws, Some(&station), None)?;
    let iot = Iot::connect(&settings, &station.limits)
        .await
        .map_err(UserError::Aws)?;
    let endpoint_url = crate::settings::endpoint_override(args.aws.endpoint_url.as_deref());
    let recorded = crate::settings::load_record(&args.station)?
        .filter(|r| r.region == iot.region() && r.endpoint_url == endpoint_url);
    let (iot_data_endpoint, iot_credential_endpoint) = resolve_endpoints(
        &iot,
        &station,
        previous.as_ref().map(|p| &p.target),
        recorded.as_ref(),
    )
    .await?;

    let spec = BatchSpec {
        format: 1,
        device_count: devices.len(),
        devices_sha256: devices_fingerprint(&devices),
        claim_policy: args
            .claim_policy
            .clone()
            .unwrap_or_else(|| station.provisioning.claim_policy.clone()),
        key_algorithm: station.keys.algorithm,
        target: ProvisioningTarget {
            region: iot.region().to_string(),
            iot_data_endpoint,
            iot_credential_endpoint,
            role_alias: station.provisioning.role_alias.clone(),
            template: args
                .template
                .clone()
                .unwrap_or_else(|| station.provisioning.template.clone()),
            thing_group: station.provisioning.thing_group.clone(),
            greengrass: station.greengrass.clone(),
        },
        claim_scope: match args.claim_scope {
            ClaimScopeArg::Device => ClaimScope::Device,
            ClaimScopeArg::Batch => ClaimScope::Batch,
        },
        encrypt_to: recipients.to_strings(),
        signed_by: signer.as_ref().map(|s| s.public().to_string()),
    };
    if let Some(previous) = &previous {
        check_same_batch(previous, &spec, &args.out)?;
    }
    preflight(&iot, &spec, &devices).await?;
    let run = Execution {
        out: &args.out,
        spec: &spec,
        resuming: previous.is_some(),
        limits: &station.limits,
        journals: &JournalFiles,
        signer: signer.map(Arc::new),
    };
    run.execute(devices, Arc::new(iot)).await
}

/// A station that binds claims to devices cannot make a claim shared by a batch.
fn check_claim_scope(args: &BatchArgs, station: &StationConfig) -> Result<(), UserError> {
    if station.setup.claim_binding && matches!(args.claim_scope, ClaimScopeArg::Batch) {
        return Err(UserError::Flag {
            flag: "--claim-scope",
            value: "batch".into(),
            problem: "this station binds claims to devices (setup.claim_binding) and its hook refuses a claim shared by a batch; use --claim-scope device".into(),
        });
    }
    let station_policy = &station.provisioning.claim_policy;
    match &args.claim_policy {
        Some(policy) if station.setup.claim_binding && policy != station_policy => {
            Err(UserError::Flag {
                flag: "--claim-policy",
                value: policy.clone(),
                problem: format!("this station binds claims to devices (setup.claim_binding): its hook admits only certificates carrying the station's claim policy {station_policy:?}, so every device of this batch would be refused; leave --claim-policy out, or set provisioning.claim_policy and re-run `claimfab setup`"),
            })
        }
        _ => Ok(()),
    }
}

/// A claim shared by the batch lives only in its bundles: a re-run after a crash reads its
/// key back from one, which it cannot do when they are encrypted to stations, and would
/// have to retire the claim of every bundle already handed out.
fn check_encryption_scope(args: &BatchArgs, recipients: &Recipients) -> Result<(), UserError> {
    if !recipients.is_empty() && matches!(args.claim_scope, ClaimScopeArg::Batch) {
        return Err(UserError::Flag {
            flag: "--claim-scope",
            value: "batch".into(),
            problem: "cannot be encrypted to stations: after a crash the batch could not read its shared claim key back from an encrypted bundle, and would retire the claim of bundles already handed out; use --claim-scope device with --encrypt-to".into(),
        });
    }
    Ok(())
}

/// The spec of the batch already in `out`, if there is one.
fn previous_spec(out: &Path) -> Result<Option<BatchSpec>, UserError> {
    match outdir::inspect(out)? {
        Existing::Fresh => Ok(None),
        Existing::Batch(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            UserError::output_dir(
                out,
                format!("{BATCH_FILE} is unreadable ({e}); choose a new --out"),
            )
        }),
    }
}

/// A batch resumes only with the inputs it began with.
fn check_same_batch(previous: &BatchSpec, spec: &BatchSpec, out: &Path) -> Result<(), UserError> {
    if previous == spec {
        return Ok(());
    }
    Err(UserError::output_dir(
        out,
        format!(
            "holds a batch made with other inputs ({}); re-run with the same station, devices and flags to resume, or choose a new --out",
            spec_difference(previous, spec)
        ),
    ))
}

/// The data and credential endpoints: pinned by the station, else as the batch began, else
/// as `claimfab setup` recorded them for this region, else asked of DescribeEndpoint.
async fn resolve_endpoints(
    iot: &impl Inventory,
    station: &StationConfig,
    previous: Option<&ProvisioningTarget>,
    recorded: Option<&crate::settings::SetupRecord>,
) -> Result<(String, String), UserError> {
    let mut endpoints = Vec::new();
    for (pinned, previous, recorded, kind) in [
        (
            &station.aws.iot_data_endpoint,
            previous.map(|t| &t.iot_data_endpoint),
            recorded.map(|r| &r.iot_data_endpoint),
            EndpointKind::DataAts,
        ),
        (
            &station.aws.iot_credential_endpoint,
            previous.map(|t| &t.iot_credential_endpoint),
            recorded.map(|r| &r.iot_credential_endpoint),
            EndpointKind::CredentialProvider,
        ),
    ] {
        let endpoint = match pinned.clone().or_else(|| previous.or(recorded).cloned()) {
            Some(endpoint) => endpoint,
            None => iot
                .describe_endpoint(kind)
                .await
                .map_err(|e| preflight_error("DescribeEndpoint", "iot:DescribeEndpoint", e))?,
        };
        endpoints.push(endpoint);
    }
    let [data, credentials]: [String; 2] = endpoints.try_into().expect("two endpoints");
    Ok((data, credentials))
}

/// A checked batch, ready to run: where, what, and how.
pub struct Execution<'a> {
    pub out: &'a Path,
    pub spec: &'a BatchSpec,
    /// Whether `out` already holds this batch (checked against `spec`).
    pub resuming: bool,
    pub limits: &'a LimitsSection,
    pub journals: &'a dyn JournalStore,
    /// The batch-signing key, for a batch whose spec is `signed_by` it.
    pub signer: Option<Arc<BatchSigner>>,
}

impl Execution<'_> {
    /// Creates (or resumes) the batch directory and runs the pipeline over it, with Ctrl-C
    /// handling and the summary. Everything must already be checked: from here on, things
    /// are created.
    pub async fn execute<A: Claims>(
        &self,
        devices: Vec<Device>,
        api: Arc<A>,
    ) -> Result<BatchResult> {
        let recipients = self.spec.recipients(self.out)?;
        let dir = self.open_dir()?;
        let signing = match &self.signer {
            Some(signer) => Some(BatchSigning::start(&dir, signer.clone())?),
            None => None,
        };
        let (journal, replay) = self.journals.open(&dir.path(JOURNAL_FILE))?;
        let plan = BatchPlan {
            devices: devices.into(),
            claim_policy: self.spec.claim_policy.clone(),
            key_algorithm: self.spec.key_algorithm,
            target: self.spec.target.clone(),
            claim_scope: self.spec.claim_scope,
            recipients,
            concurrency: self.limits.concurrency as usize,
            reconcile_after: std::time::Duration::from_secs(
                self.limits.reconcile_after_seconds.into(),
            ),
            signing,
        };
        let started = Instant::now();
        let batch = BatchRun::new(api, dir, journal, replay, plan);
        let signals = tokio::spawn(stop_on_signals(batch.clone()));
        let outcome = batch.clone().run().await;
        // Wait for the aborted signal task to drop its handle on the run, so the directory
        // lock is released when this returns.
        signals.abort();
        let _ = signals.await;
        let outcome = outcome?;
        print_summary(self.out, &batch, &outcome, started.elapsed().as_secs_f64());
        Ok(if outcome.interrupted {
            BatchResult::Interrupted
        } else if outcome.failures.is_empty() {
            BatchResult::Done
        } else {
            BatchResult::SomeFailed
        })
    }

    /// Locks the batch directory; a new batch records its spec first.
    fn open_dir(&self) -> Result<BatchDir> {
        let dir = BatchDir::open(self.out)?;
        if !self.resuming && dir.path(BATCH_FILE).exists() {
            // Another claimfab started a batch here between our check and our lock.
            return Err(UserError::output_dir(
                self.out,
                "another claimfab started a batch here meanwhile; choose a new --out",
            )
            .into());
        }
        if !self.resuming {
            let json = serde_json::to_vec_pretty(self.spec).expect("spec serializes");
            dir.write_atomic(BATCH_FILE, &json, 0o644)?;
        }
        Ok(dir)
    }
}

pub fn spec_difference(previous: &BatchSpec, current: &BatchSpec) -> String {
    if previous.devices_sha256 != current.devices_sha256 {
        return format!(
            "device list differs: {} devices then, {} now",
            previous.device_count, current.device_count
        );
    }
    if previous.claim_policy != current.claim_policy {
        return format!("claim policy was {:?}", previous.claim_policy);
    }
    if previous.key_algorithm != current.key_algorithm {
        return format!("key algorithm was {:?}", previous.key_algorithm);
    }
    if previous.claim_scope != current.claim_scope {
        return format!("claim scope was {:?}", previous.claim_scope).to_lowercase();
    }
    if previous.encrypt_to != current.encrypt_to {
        return match previous.encrypt_to.as_slice() {
            [] => "its bundles were not encrypted".to_string(),
            then => format!("its bundles were encrypted to {}", then.join(",")),
        };
    }
    if previous.signed_by != current.signed_by {
        return match &previous.signed_by {
            None => "it was not signed".to_string(),
            Some(key) => format!("it was signed by {key}: pass that key's file with --sign-with"),
        };
    }
    if previous.target.region != current.target.region {
        return format!("region was {}", previous.target.region);
    }
    "station settings differ".to_string()
}

/// First Ctrl-C or SIGTERM: stop starting devices, finish in-flight ones, write the
/// manifest. Second: exit at once (the journal makes that safe).
async fn stop_on_signals<A: Claims>(batch: Arc<BatchRun<A>>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        if round == 0 {
            batch.interrupt();
        } else {
            eprintln!("aborted; re-run the same command to finish the batch");
            std::process::exit(130);
        }
    }
}

fn print_summary<A: Claims>(out: &Path, batch: &BatchRun<A>, outcome: &Outcome, elapsed: f64) {
    crate::say!(
        "batch {}: {} ready, {} failed, {} pending, of {} devices in {elapsed:.1} s",
        out.display(),
        outcome.ready,
        outcome.failed,
        outcome.pending,
        outcome.devices
    );
    let seconds = outcome.register_seconds.max(0.001);
    for (api, calls) in batch.api_calls() {
        // A rate says something only for the per-device calls.
        if calls >= 10 {
            crate::say!("  {api}: {calls} calls, {:.1}/s", calls as f64 / seconds);
        } else {
            crate::say!("  {api}: {calls} calls");
        }
    }
    if outcome.retired > 0 {
        crate::say!(
            "  {} certificate(s) set INACTIVE (keys lost in an interrupted run, duplicates, or wrong keys); see journal.jsonl",
            outcome.retired
        );
    }
    for failure in &outcome.failures {
        let who = match failure.serial.as_str() {
            crate::core::ledger::SHARED_CLAIM => {
                "the batch's shared claim certificate (every device)"
            }
            serial => serial,
        };
        crate::say!("  failed {who}: {}", failure.reason);
    }
    crate::say!("  manifest: {}", out.join(MANIFEST_FILE).display());
    crate::say!("  bundles:  {}", out.join(outdir::BUNDLES_DIR).display());
    if outcome.interrupted || outcome.pending > 0 || !outcome.failures.is_empty() {
        crate::say!("  re-run the same command to finish the batch");
    }
}

/// Reads a finished (or interrupted) batch directory: what the batch is and its manifest.
/// Errors are one line naming the directory and what is wrong with it.
pub fn read_batch_dir(
    dir: &Path,
) -> Result<(BatchSpec, Vec<crate::core::manifest::ManifestRow>), UserError> {
    let fail = |problem: String| UserError::output_dir(dir, problem);
    let spec_text = std::fs::read_to_string(dir.join(BATCH_FILE)).map_err(|e| {
        fail(format!(
            "has no readable {BATCH_FILE} ({e}); pass a claimfab batch directory"
        ))
    })?;
    let spec: BatchSpec = serde_json::from_str(&spec_text)
        .map_err(|e| fail(format!("{BATCH_FILE} is not a claimfab batch ({e})")))?;
    let manifest_bytes = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
        fail(format!(
            "has no readable {MANIFEST_FILE} ({e}); re-run its batch to write it"
        ))
    })?;
    let mut rows = crate::core::manifest::from_csv(&manifest_bytes)
        .map_err(|e| fail(format!("{MANIFEST_FILE} is not a claimfab manifest: {e}")))?;
    // What the stations recorded since the manifest was written shows as well.
    let logs = crate::floor::Floor::open(dir)?
        .all_logs()
        .map_err(|e| fail(format!("has a station log claimfab cannot read: {e:#}")))?;
    let states = crate::core::floor::fold_logs(&logs);
    for row in &mut rows {
        if let Some(state) = states.get(&row.serial) {
            crate::core::floor::overlay(row, state);
        }
    }
    Ok((spec, rows))
}
