//! Signed batches: what the machine that makes a batch vouches for, and how a station checks
//! it. A batch-signing key (Ed25519) signs the batch's `batch.json` (endpoints, template,
//! region, bundle layout, stations the bundles are encrypted to) and, per ready device, a
//! bundle record (serial, thing name, claim certificate id, bundle file and its SHA-256,
//! bound to that `batch.json` by its SHA-256). A station pins the public key in its own
//! station file, off the shared drive, and trusts nothing on the share that the key did not
//! sign. Pure: bytes in, bytes or verdicts out.
//!
//! Ed25519 through `ed25519-dalek` (RustCrypto, constant-time, its keys wiped on drop): small
//! keys and signatures that fit a station file line, deterministic signatures (a re-run signs
//! the same record to the same bytes), fast verification (a take verifies two signatures),
//! and strict verification that refuses malleable signatures and weak keys.

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// How a batch key is written in station files and on the command line.
const KEY_PREFIX: &str = "claimfab-ed25519:";
/// Domain separation: a signature over one kind of document never verifies as another.
const BATCH_CONTEXT: &[u8] = b"claimfab batch.json v1\n";
const BUNDLE_CONTEXT: &[u8] = b"claimfab bundle v1\n";
const FORMAT: u32 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The batch-signing key (private). Wiped when dropped.
pub struct BatchSigner(SigningKey);

/// A batch-signing public key, as stations pin it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchKey(VerifyingKey);

/// What a bundle's signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleRecord {
    /// SHA-256 (hex) of the `batch.json` this bundle belongs to.
    pub batch_sha256: String,
    pub serial: String,
    pub thing_name: String,
    /// The claim certificate's id (SHA-256 of its DER, hex).
    pub certificate_id: String,
    /// The bundle file, relative to the batch directory.
    pub bundle: String,
    /// SHA-256 (hex) of the bundle file as stored (encrypted bytes for an encrypted batch).
    pub bundle_sha256: String,
}

/// A signature file: `batch.json.sig`, or `bundles/SERIAL.sig`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile<T> {
    format: u32,
    key: String,
    #[serde(flatten)]
    signed: T,
    signature: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchDigest {
    batch_sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordField {
    record: BundleRecord,
}

/// Why a signature is not trusted. Each says what is wrong, not how to fix it: the shell
/// knows which file it read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("is not a claimfab signature file ({0})")]
    Unreadable(String),
    #[error("is signed by {0}, which this station does not trust")]
    UntrustedKey(String),
    #[error("has a signature that does not verify")]
    BadSignature,
}

impl BatchSigner {
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// Reads a PKCS#8 PEM Ed25519 private key (as `claimfab batch-key` writes it).
    pub fn from_pkcs8_pem(pem: &str) -> Option<Self> {
        SigningKey::from_pkcs8_pem(pem).ok().map(Self)
    }

    /// The key as PKCS#8 PEM, wiped when dropped.
    pub fn to_pkcs8_pem(&self) -> Zeroizing<String> {
        let pem = self
            .0
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .expect("an Ed25519 key always encodes");
        Zeroizing::new(pem.to_string())
    }

    pub fn public(&self) -> BatchKey {
        BatchKey(self.0.verifying_key())
    }

    /// `batch.json.sig` for these `batch.json` bytes.
    pub fn sign_batch(&self, batch_json: &[u8]) -> Vec<u8> {
        let signed = BatchDigest {
            batch_sha256: sha256_hex(batch_json),
        };
        let message = [BATCH_CONTEXT, signed.batch_sha256.as_bytes()].concat();
        self.file(signed, &message)
    }

    /// `bundles/SERIAL.sig` for one bundle record.
    pub fn sign_bundle(&self, record: &BundleRecord) -> Vec<u8> {
        let message = bundle_message(record);
        let signed = RecordField {
            record: record.clone(),
        };
        self.file(signed, &message)
    }

    fn file<T: Serialize>(&self, signed: T, message: &[u8]) -> Vec<u8> {
        let file = SignatureFile {
            format: FORMAT,
            key: self.public().to_string(),
            signed,
            signature: B64.encode(self.0.sign(message).to_bytes()),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).expect("a signature file serializes");
        bytes.push(b'\n');
        bytes
    }
}

fn bundle_message(record: &BundleRecord) -> Vec<u8> {
    let body = serde_json::to_vec(record).expect("a bundle record serializes");
    [BUNDLE_CONTEXT, &body].concat()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl std::fmt::Display for BatchKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{KEY_PREFIX}{}", B64.encode(self.0.as_bytes()))
    }
}

impl std::str::FromStr for BatchKey {
    type Err = String;

    /// `claimfab-ed25519:` and the key's 32 bytes in base64.
    fn from_str(text: &str) -> Result<Self, String> {
        let encoded = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| {
            format!(
                "is not a batch key (it starts with {KEY_PREFIX}; `claimfab batch-key` prints one)"
            )
        })?;
        let bytes: [u8; 32] = B64
            .decode(encoded)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("is not a batch key (not 32 bytes of base64 after the prefix)")?;
        VerifyingKey::from_bytes(&bytes)
            .ok()
            .filter(|key| !key.is_weak())
            .map(Self)
            .ok_or_else(|| "is not a valid Ed25519 public key".to_string())
    }
}

/// The batch keys a station trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<BatchKey>);

impl TrustedKeys {
    pub fn new(keys: Vec<BatchKey>) -> Self {
        Self(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks `batch.json.sig` against these `batch.json` bytes.
    pub fn verify_batch(&self, batch_json: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
        let file: SignatureFile<BatchDigest> = read_file(sig)?;
        let message = [BATCH_CONTEXT, file.signed.batch_sha256.as_bytes()].concat();
        self.verify(&file.key, &message, &file.signature)?;
        if file.signed.batch_sha256 != sha256_hex(batch_json) {
            return Err(SignatureError::BadSignature);
        }
        Ok(())
    }

    /// Checks a bundle's signature file and returns the record it vouches for.
    pub fn verify_bundle(&self, sig: &[u8]) -> Result<BundleRecord, SignatureError> {
        let file: SignatureFile<RecordField> = read_file(sig)?;
        let record = file.signed.record;
        self.verify(&file.key, &bundle_message(&record), &file.signature)?;
        Ok(record)
    }

    fn verify(&self, key: &str, message: &[u8], signature: &str) -> Result<(), SignatureError> {
        let key: BatchKey = key
            .parse()
            .map_err(|e| SignatureError::Unreadable(format!("key {e}")))?;
        if !self.0.contains(&key) {
            return Err(SignatureError::UntrustedKey(key.to_string()));
        }
        let signature: [u8; 64] = B64
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(SignatureError::BadSignature)?;
        key.0
            .verify_strict(message, &Signature::from_bytes(&signature))
            .map_err(|_| SignatureError::BadSignature)
    }
}

fn read_file<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
) -> Result<SignatureFile<T>, SignatureError> {
    let file: SignatureFile<T> =
        serde_json::from_slice(bytes).map_err(|e| SignatureError::Unreadable(e.to_string()))?;
    if file.format != FORMAT {
        return Err(SignatureError::Unreadable(format!(
            "format {} (this claimfab reads {FORMAT})",
            file.format
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BundleRecord {
        BundleRecord {
            batch_sha256: sha256_hex(b"{}"),
            serial: "SN1".into(),
            thing_name: "gg-SN1".into(),
            certificate_id: "a".repeat(64),
            bundle: "bundles/SN1.zip".into(),
            bundle_sha256: "b".repeat(64),
        }
    }

    fn trusting(signer: &BatchSigner) -> TrustedKeys {
        TrustedKeys::new(vec![signer.public()])
    }

    #[test]
    fn a_signed_bundle_record_verifies_and_nothing_else_does() {
        let signer = BatchSigner::generate();
        let sig = signer.sign_bundle(&record());
        assert_eq!(trusting(&signer).verify_bundle(&sig), Ok(record()));
        assert_eq!(sig, signer.sign_bundle(&record()), "deterministic");

        // Another serial written into the file: the signature no longer verifies.
        let text = String::from_utf8(sig.clone()).unwrap();
        let forged = text.replace("\"SN1\"", "\"SN2\"");
        assert_eq!(
            trusting(&signer).verify_bundle(forged.as_bytes()),
            Err(SignatureError::BadSignature)
        );
        // Signed by another key, even a well-formed one.
        let other = BatchSigner::generate();
        let resigned = other.sign_bundle(&record());
        assert!(matches!(
            trusting(&signer).verify_bundle(&resigned),
            Err(SignatureError::UntrustedKey(_))
        ));
        assert!(matches!(
            trusting(&signer).verify_bundle(b"not json"),
            Err(SignatureError::Unreadable(_))
        ));
        // A batch signature is not a bundle signature.
        let batch_sig = signer.sign_batch(b"{}");
        assert!(trusting(&signer).verify_bundle(&batch_sig).is_err());
    }

    #[test]
    fn batch_json_signature_covers_its_bytes() {
        let signer = BatchSigner::generate();
        let batch = br#"{"encrypt_to":["age1..."]}"#;
        let sig = signer.sign_batch(batch);
        trusting(&signer).verify_batch(batch, &sig).unwrap();
        assert_eq!(
            trusting(&signer).verify_batch(br#"{"encrypt_to":[]}"#, &sig),
            Err(SignatureError::BadSignature),
            "encryption stripped from batch.json"
        );
        assert!(TrustedKeys::default().verify_batch(batch, &sig).is_err());
    }

    #[test]
    fn keys_round_trip_through_text_and_pem() {
        let signer = BatchSigner::generate();
        let text = signer.public().to_string();
        assert!(text.starts_with("claimfab-ed25519:"), "{text}");
        assert_eq!(text.parse::<BatchKey>(), Ok(signer.public()));
        let pem = signer.to_pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = BatchSigner::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(back.public(), signer.public());
        for bad in ["", "age1xyz", "claimfab-ed25519:", "claimfab-ed25519:AAAA"] {
            assert!(bad.parse::<BatchKey>().is_err(), "{bad}");
        }
        // The identity point is a weak key: refused.
        let weak = format!(
            "claimfab-ed25519:{}",
            B64.encode(
                [1u8]
                    .iter()
                    .chain([0u8; 31].iter())
                    .copied()
                    .collect::<Vec<u8>>()
            )
        );
        assert!(weak.parse::<BatchKey>().is_err());
        assert!(BatchSigner::from_pkcs8_pem("not a key").is_none());
    }
}
