//! The `package` command, back on the offline machine: the prepared batch directory and
//! its CSR file read, the bundles' stations and signing key fixed (by the first run), the
//! carried certificate file checked whole against the batch, the key store opened, then
//! every certificate journaled and packaged and the manifest written (`air_gap::package`).
//! Nothing is written before every check passed; a re-run finishes what a crash left.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio_util::sync::CancellationToken;

use crate::air_gap::csrs::{read_csrs, CsrBatch, CsrFile, Signatures};
use crate::air_gap::package::{check_certificates, Expected, Importer};
use crate::batch_dir::journal::{JournalFiles, JournalStore};
use crate::batch_dir::spec::{check_same_batch, previous_spec, BatchSpec};
use crate::batch_dir::{BatchDir, BATCH_FILE, JOURNAL_FILE};
use crate::cli::PackageArgs;
use crate::core::carried::CSRS_FILE;
use crate::core::key_store::{StoreError, StoreKey, StoreReader, KEY_STORE_FILE};
use crate::core::sealed::Recipients;
use crate::error::UserError;
use crate::pipeline::custody::Custody;
use crate::pipeline::state::RunState;
use crate::pipeline::{BatchPlan, Packager};
use crate::trust::signature_files::{read_signer, BatchSigning};

/// Runs `claimfab package`; true when every device of the batch is ready.
pub fn run(args: PackageArgs) -> Result<bool> {
    let started = Instant::now();
    let (spec, csrs) = prepared_batch(&args.dir)?;
    let recipients =
        crate::trust::age_files::read_recipients(&args.encrypt_to, &args.encrypt_to_file)?;
    let signer = args.sign_with.as_deref().map(read_signer).transpose()?;
    let mut packaged = spec.clone();
    packaged.encrypt_to = recipients.to_strings();
    packaged.signed_by = signer.as_ref().map(|s| s.public().to_string());
    if packaged != spec && args.dir.join(JOURNAL_FILE).exists() {
        check_same_batch(&spec, &packaged, &args.dir)?;
    }
    let csr_file = CsrFile::open(&args.dir.join(CSRS_FILE), &csrs, Signatures::Trust)?;
    let batch_id = spec.batch_id.clone().unwrap_or_default();
    let expected = Expected {
        batch_id: &batch_id,
        csrs_sha256: &csrs.sha256,
        region: &spec.target.region,
        devices: &csrs.devices,
        csrs: &csr_file,
    };
    let (carried, checked_sha256) = check_certificates(&args.certificates, &expected)?;
    let store = open_store(&args, &batch_id)?;
    let dir = BatchDir::open(&args.dir)?;
    dir.sweep_temp_files()?;
    dir.make_bundles_dir()?;
    if packaged != spec {
        let json = serde_json::to_vec_pretty(&packaged).expect("spec serializes");
        dir.write_atomic(BATCH_FILE, &json, 0o644)?;
    }
    let signing = match signer {
        Some(signer) => Some(BatchSigning::start(&dir, Arc::new(signer))?),
        None => None,
    };
    let (log, replay) = JournalFiles.open(&dir.path(JOURNAL_FILE))?;
    let state = Arc::new(RunState::new(log, replay));
    let plan = plan(&packaged, &csrs, recipients, signing);
    let bar = crate::progress::stage_bar("package", carried);
    let packager = Arc::new(Packager {
        dir: Arc::new(dir),
        state: state.clone(),
        target: plan.target.clone(),
        devices: plan.devices.clone(),
        recipients: plan.recipients.clone(),
        key_algorithm: plan.key_algorithm,
        bar: bar.clone(),
        cancel: CancellationToken::new(),
    });
    let importer = Importer {
        expected,
        state: state.clone(),
        packager: packager.clone(),
    };
    let imported = importer.import(&args.certificates, &checked_sha256, store);
    bar.finish_and_clear();
    let outcome = packager.publish(&state, &plan, false, 0.0)?;
    imported?;
    let seconds = started.elapsed().as_secs_f64();
    crate::pipeline::execution::emit_summary(&args.dir, &outcome, seconds, &packager.outputs());
    crate::say!(
        "package {}: {} ready, {} pending (no certificate carried yet), of {} devices in {seconds:.1} s",
        args.dir.display(),
        outcome.ready,
        outcome.pending + outcome.failed,
        outcome.devices
    );
    for (what, path) in packager.outputs() {
        crate::say!("  {what}: {}", path.display());
    }
    if outcome.ready < outcome.devices {
        crate::say!("  the rest: re-run `claimfab register` on the online machine, carry its certificates.jsonl back, and package again");
    }
    Ok(outcome.ready == outcome.devices)
}

/// The batch `prepare` made in `dir`: its spec and its CSR file, which must agree.
fn prepared_batch(dir: &Path) -> Result<(BatchSpec, CsrBatch), UserError> {
    let Some(spec) = previous_spec(dir)? else {
        return Err(UserError::output_dir(
            dir,
            "holds no batch: pass the directory `claimfab prepare` made",
        ));
    };
    if spec.batch_id.is_none() {
        return Err(UserError::output_dir(
            dir,
            "holds a batch made by `claimfab batch`, which has nothing to package",
        ));
    }
    let csrs = read_csrs(&dir.join(CSRS_FILE), Signatures::Trust)?;
    let unsealed = BatchSpec {
        encrypt_to: Vec::new(),
        signed_by: None,
        ..spec.clone()
    };
    if unsealed != csrs.spec {
        return Err(UserError::output_dir(dir, format!("its {BATCH_FILE} and {CSRS_FILE} are not the same batch: restore them as `claimfab prepare` wrote them")));
    }
    Ok((spec, csrs))
}

/// The key store, opened with the identity or the passphrase, checked to be this batch's.
fn open_store(
    args: &PackageArgs,
    batch_id: &str,
) -> Result<StoreReader<std::io::BufReader<std::fs::File>>, UserError> {
    let path = args.dir.join(KEY_STORE_FILE);
    let (key, flag, value) = match (&args.identity, &args.passphrase_file) {
        (Some(file), _) => {
            let identity = crate::trust::age_files::StationIdentity::read(file)?;
            (
                StoreKey::Identities(identity.into_identities()),
                "--identity",
                file.display().to_string(),
            )
        }
        (None, Some(file)) => (
            StoreKey::Passphrase(crate::trust::passphrase::from_file(file)?),
            "--passphrase-file",
            file.display().to_string(),
        ),
        (None, None) => (
            StoreKey::Passphrase(crate::trust::passphrase::prompt("--passphrase", false)?),
            "--passphrase",
            String::new(),
        ),
    };
    let fail = |problem: String| UserError::Flag {
        flag,
        value: value.clone(),
        problem,
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| fail(format!("cannot read {} ({e})", path.display())))?;
    let (store, store_batch) =
        StoreReader::open(std::io::BufReader::new(file), &key).map_err(|e| match e {
            StoreError::WrongKey => fail(format!(
                "does not open {}: it was encrypted to another key or passphrase",
                path.display()
            )),
            other => fail(format!("{} {other}", path.display())),
        })?;
    if store_batch != batch_id {
        return Err(fail(format!("{} is batch {store_batch}'s key store, not this batch's ({batch_id}): restore this batch's", path.display())));
    }
    Ok(store)
}

fn plan(
    spec: &BatchSpec,
    csrs: &CsrBatch,
    recipients: Recipients,
    signing: Option<BatchSigning>,
) -> BatchPlan {
    BatchPlan {
        devices: Arc::new(csrs.devices.clone()),
        claim_policy: spec.claim_policy.clone(),
        key_algorithm: spec.key_algorithm,
        target: spec.target.clone(),
        claim_scope: spec.claim_scope,
        recipients: (!recipients.is_empty()).then_some(recipients),
        concurrency: 16,
        reconcile_after: std::time::Duration::ZERO,
        signing,
    }
}
