//! Batch signatures on disk. On the machine that makes batches: the batch-signing key file
//! (`claimfab batch-key` writes it; read only when no one else can read it), and the
//! signature files a batch writes: `batch.json.sig`, and `bundles/SERIAL.sig` per ready
//! device. At a station: the batch keys it trusts, and the check of a batch and of one
//! bundle before it is handed out. What is signed, and how, is `core::signing`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::batch_dir::spec::BatchSpec;
use crate::batch_dir::{BatchDir, BATCH_FILE, BUNDLES_DIR};
use crate::core::manifest::{DeviceStatus, ManifestRow};
use crate::core::signing::{sha256_hex, BatchKey, BatchSigner, BundleRecord, TrustedKeys};
use crate::core::station_config::StationConfig;
use crate::error::UserError;

/// The signature of `batch.json`, beside it.
pub const BATCH_SIGNATURE_FILE: &str = "batch.json.sig";

/// The signature file of a serial's bundle.
pub fn bundle_signature_name(serial: &str) -> String {
    format!("{BUNDLES_DIR}/{serial}.sig")
}

/// Writes a new batch-signing key to `out` (mode 0600; an existing file is never replaced)
/// and returns its public key. A write that fails part-way removes the file.
pub fn write_signing_key(out: &Path) -> Result<BatchKey, UserError> {
    let signer = BatchSigner::generate();
    let pem = signer.to_pkcs8_pem();
    crate::trust::age_files::write_new_secret(out, pem.as_bytes(), "a batch-signing key")?;
    Ok(signer.public())
}

/// The batch-signing key: `--sign-with FILE`, else the station's `[signing] key_file`
/// (relative to the station file), else none.
pub fn resolve_signer(
    flag: Option<&Path>,
    station: &StationConfig,
    station_file: &Path,
) -> Result<Option<BatchSigner>, UserError> {
    let from_station = station.signing.key_file.as_ref().map(|file| {
        let base = station_file.parent().unwrap_or(Path::new("."));
        base.join(file)
    });
    match flag.map(Path::to_path_buf).or(from_station) {
        Some(file) => read_signer(&file).map(Some),
        None => Ok(None),
    }
}

/// Reads a batch-signing key file; refused when others may read it or it holds no key. The
/// mode is checked on the file opened, the one read.
pub fn read_signer(file: &Path) -> Result<BatchSigner, UserError> {
    use std::io::Read;
    let fail = |problem: String| UserError::Flag {
        flag: "--sign-with",
        value: file.display().to_string(),
        problem,
    };
    let mut opened = std::fs::File::open(file).map_err(|e| {
        fail(format!(
            "cannot be read ({e}); pass the file `claimfab batch-key` wrote"
        ))
    })?;
    let mode = opened
        .metadata()
        .map_err(|e| fail(format!("cannot be read ({e})")))?
        .permissions()
        .mode();
    if let Some(problem) = crate::trust::age_files::private_mode_problem(file, mode) {
        return Err(fail(problem));
    }
    // A PKCS#8 Ed25519 PEM is about 120 bytes: room once, never grown.
    let mut pem = zeroize::Zeroizing::new(String::with_capacity(4096));
    opened
        .by_ref()
        .take(4096)
        .read_to_string(&mut pem)
        .map_err(|e| fail(format!("cannot be read ({e})")))?;
    BatchSigner::from_pkcs8_pem(&pem).ok_or_else(|| {
        fail("is not a batch-signing key (an Ed25519 PKCS#8 PEM from `claimfab batch-key`)".into())
    })
}

/// A batch being signed: the key, and the SHA-256 of the `batch.json` it signed.
#[derive(Clone)]
pub struct BatchSigning {
    pub signer: std::sync::Arc<BatchSigner>,
    pub batch_sha256: String,
}

/// Names the public key only: the private key never reaches a log.
impl std::fmt::Debug for BatchSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchSigning({})", self.signer.public())
    }
}

impl BatchSigning {
    /// Signs `batch.json` as it is on disk (`batch.json.sig`), unless already signed so.
    pub fn start(dir: &BatchDir, signer: std::sync::Arc<BatchSigner>) -> Result<Self> {
        let path = dir.path(BATCH_FILE);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        write_if_changed(dir, BATCH_SIGNATURE_FILE, &signer.sign_batch(&bytes))?;
        Ok(Self {
            signer,
            batch_sha256: sha256_hex(&bytes),
        })
    }

    /// Signs the bundle of a ready row: what a station checks before handing it out.
    pub fn sign_row(&self, dir: &BatchDir, row: &ManifestRow) -> Result<()> {
        if row.status != DeviceStatus::Ready {
            return Ok(());
        }
        let record = BundleRecord {
            batch_sha256: self.batch_sha256.clone(),
            serial: row.serial.clone(),
            thing_name: row.thing_name.clone(),
            certificate_id: row.certificate_id.clone(),
            bundle: row.bundle.clone(),
            bundle_sha256: row.bundle_sha256.clone(),
        };
        let name = bundle_signature_name(&row.serial);
        write_if_changed(dir, &name, &self.signer.sign_bundle(&record))
    }
}

/// Signatures are deterministic: a re-run rewrites only what changed.
fn write_if_changed(dir: &BatchDir, relative: &str, bytes: &[u8]) -> Result<()> {
    if std::fs::read(dir.path(relative)).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    dir.write_atomic(relative, bytes, 0o644)
}

/// The batch keys a station trusts: its station file's and the `--batch-key` flags'.
pub fn trusted_keys(
    station_file_keys: &[String],
    flags: &[String],
) -> Result<TrustedKeys, UserError> {
    let mut keys = Vec::new();
    for text in station_file_keys.iter().chain(flags) {
        keys.push(
            text.parse::<BatchKey>()
                .map_err(|problem| UserError::Flag {
                    flag: "--batch-key",
                    value: text.clone(),
                    problem,
                })?,
        );
    }
    Ok(TrustedKeys::new(keys))
}

/// A batch as a station reads it: `batch.json` as read once (every later check uses these
/// bytes), checked against the trusted keys when there are any.
pub struct StationBatch {
    pub spec: BatchSpec,
    pub sha256: String,
    /// `None`: the station trusts no key, so nothing on the share is authenticated.
    trusted: Option<TrustedKeys>,
    dir: PathBuf,
}

impl StationBatch {
    pub fn open(dir: &Path, trusted: TrustedKeys) -> Result<Self, UserError> {
        let fail = |problem: String| UserError::output_dir(dir, problem);
        let bytes = std::fs::read(dir.join(BATCH_FILE))
            .map_err(|e| fail(format!("cannot read {BATCH_FILE} ({e})")))?;
        let trusted = (!trusted.is_empty()).then_some(trusted);
        if let Some(keys) = &trusted {
            let sig = std::fs::read(dir.join(BATCH_SIGNATURE_FILE)).map_err(|e| {
                fail(format!(
                    "is not signed ({BATCH_SIGNATURE_FILE}: {e}) but this station takes only signed batches; make the batch with --sign-with, or check that this is the batch directory the factory made"
                ))
            })?;
            keys.verify_batch(&bytes, &sig).map_err(|e| {
                fail(format!(
                    "{BATCH_SIGNATURE_FILE} {e}: {BATCH_FILE} is not what the batch-signing key signed; nothing is handed out (restore the batch directory from the machine that made it)"
                ))
            })?;
        }
        let spec: BatchSpec = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("{BATCH_FILE} is not a claimfab batch ({e})")))?;
        Ok(Self {
            spec,
            sha256: sha256_hex(&bytes),
            trusted,
            dir: dir.to_path_buf(),
        })
    }

    pub fn is_signed(&self) -> bool {
        self.trusted.is_some()
    }

    pub fn is_sealed(&self) -> bool {
        !self.spec.encrypt_to.is_empty()
    }

    /// The record the batch-signing key vouches for, for `serial`'s bundle (`None` when
    /// the station trusts no key). `Err` says why the bundle must not be handed out.
    pub fn signed_record(&self, serial: &str) -> Result<Option<BundleRecord>, String> {
        let Some(keys) = &self.trusted else {
            return Ok(None);
        };
        let name = bundle_signature_name(serial);
        let sig = std::fs::read(self.dir.join(&name))
            .map_err(|e| format!("has no signature ({name}: {e})"))?;
        let record = keys
            .verify_bundle(&sig)
            .map_err(|e| format!("{name} {e}"))?;
        let expected_file = BatchDir::bundle_name(serial, self.is_sealed());
        if record.batch_sha256 != self.sha256 {
            return Err(format!("{name} was signed for another batch"));
        }
        if record.serial != serial || record.bundle != expected_file {
            return Err(format!(
                "{name} vouches for {} ({}), not for {serial} ({expected_file})",
                record.serial, record.bundle
            ));
        }
        Ok(Some(record))
    }
}
