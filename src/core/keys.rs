//! Claim keys and CSRs, made locally: an EC key (P-256 or P-384) made and used by AWS-LC
//! (aws-lc-rs: audited, and fast enough that a key and a CSR cost tens of microseconds), its
//! PKCS#8 document kept as generated in a buffer wiped on drop (AWS-LC wipes its own copy
//! when the key is freed), and a PKCS#10 CSR whose subject CN is the thing name, signed by
//! that key (rcgen). Only the CSR and the public key ever leave this module for the network.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING,
};
use p256::pkcs8::der::pem::LineEnding;
use p256::pkcs8::SecretDocument;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::core::devices::Device;
use crate::core::station_config::KeyAlgorithm;

/// A claim private key. Its secret is wiped when it is dropped; `Debug` never shows it.
pub struct ClaimKey {
    algorithm: KeyAlgorithm,
    pair: EcdsaKeyPair,
    /// The PKCS#8 v1 DER document, as generated or read.
    pkcs8_der: Zeroizing<Vec<u8>>,
    /// The public key as SubjectPublicKeyInfo DER.
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let curve = match self.algorithm {
            KeyAlgorithm::P256 => "P-256",
            KeyAlgorithm::P384 => "P-384",
        };
        write!(f, "ClaimKey({curve}, secret redacted)")
    }
}

fn signing_algorithm(algorithm: KeyAlgorithm) -> &'static EcdsaSigningAlgorithm {
    match algorithm {
        KeyAlgorithm::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
        KeyAlgorithm::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
    }
}

impl ClaimKey {
    /// Draws a fresh key from AWS-LC's CSPRNG (seeded by the operating system).
    pub fn generate(algorithm: KeyAlgorithm) -> Self {
        let pair = EcdsaKeyPair::generate(signing_algorithm(algorithm))
            .expect("AWS-LC makes an EC key whenever the OS gives it randomness");
        let pkcs8 = pair
            .to_pkcs8v1()
            .expect("an in-memory EC key always encodes as PKCS#8");
        Self::new(algorithm, pair, Zeroizing::new(pkcs8.as_ref().to_vec()))
    }

    fn new(algorithm: KeyAlgorithm, pair: EcdsaKeyPair, pkcs8_der: Zeroizing<Vec<u8>>) -> Self {
        let spki_der = pair
            .public_key()
            .as_der()
            .expect("an in-memory EC public key always encodes as SPKI")
            .as_ref()
            .to_vec();
        Self {
            algorithm,
            pair,
            pkcs8_der,
            spki_der,
        }
    }

    /// Reads a PKCS#8 PEM private key (P-256 or P-384), as [`Self::pkcs8_pem`] writes it.
    pub fn from_pkcs8_pem(pkcs8_pem: &str) -> Option<Self> {
        let (label, document) = SecretDocument::from_pem(pkcs8_pem).ok()?;
        if label != "PRIVATE KEY" {
            return None;
        }
        Self::from_pkcs8_der(Zeroizing::new(document.as_bytes().to_vec()))
    }

    /// Reads a PKCS#8 DER private key (P-256 or P-384), as [`Self::pkcs8_der`] gives it.
    pub fn from_pkcs8_der(der: Zeroizing<Vec<u8>>) -> Option<Self> {
        [KeyAlgorithm::P256, KeyAlgorithm::P384]
            .into_iter()
            .find_map(|algorithm| {
                let pair = EcdsaKeyPair::from_pkcs8(signing_algorithm(algorithm), &der).ok()?;
                Some(Self::new(algorithm, pair, der.clone()))
            })
    }

    /// The key's curve.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The private key as PKCS#8 PEM (`BEGIN PRIVATE KEY`), in a buffer wiped on drop.
    pub fn pkcs8_pem(&self) -> Zeroizing<String> {
        SecretDocument::try_from(self.pkcs8_der.as_slice())
            .and_then(|document| document.to_pem("PRIVATE KEY", LineEnding::LF))
            .expect("a PKCS#8 document always encodes as PEM")
    }

    /// The private key as the PKCS#8 DER document (secret: copy it only into buffers wiped
    /// on drop).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8_der
    }

    /// The public key as X.509 SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.spki_der.clone()
    }
}

impl rcgen::PublicKeyData for ClaimKey {
    fn der_bytes(&self) -> &[u8] {
        // The uncompressed point, which is what rcgen puts in the SubjectPublicKeyInfo.
        self.pair.public_key().as_ref()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self.algorithm {
            KeyAlgorithm::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        }
    }
}

impl rcgen::SigningKey for ClaimKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let signature = self
            .pair
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| rcgen::Error::RingUnspecified)?;
        Ok(signature.as_ref().to_vec())
    }
}

/// The output of the prepare stage for one device: its key (secret, memory only), its CSR
/// and the fingerprint of its public key, which ties an issued certificate back to it. An
/// air-gapped batch registers CSRs whose keys stay on another machine: its `K` is `()`.
#[derive(Debug)]
pub struct PreparedDevice<K = ClaimKey> {
    pub device: Device,
    pub key: K,
    pub csr_pem: String,
    /// SHA-256 of the public key's SubjectPublicKeyInfo DER, hex.
    pub public_key_sha256: String,
}

/// Reads a PKCS#8 PEM private key (P-256 or P-384) and returns its public key's fingerprint,
/// as [`public_key_fingerprint`]. The parsed key is wiped when this returns.
pub fn private_key_fingerprint(pkcs8_pem: &str) -> Option<String> {
    ClaimKey::from_pkcs8_pem(pkcs8_pem).map(|key| public_key_fingerprint(&key.public_key_der()))
}

/// SHA-256 of a SubjectPublicKeyInfo, hex: the identity of a key pair across CSR and cert.
pub fn public_key_fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// Makes a key and a CSR (subject CN = thing name) for one device.
pub fn prepare_device(device: Device, algorithm: KeyAlgorithm) -> PreparedDevice {
    let key = ClaimKey::generate(algorithm);
    let mut params = rcgen::CertificateParams::default();
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, device.thing_name.as_str());
    params.distinguished_name = subject;
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .expect("a CSR over a thing name (validated ASCII) always serializes");
    let public_key_sha256 = public_key_fingerprint(&key.public_key_der());
    PreparedDevice {
        device,
        key,
        csr_pem,
        public_key_sha256,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    fn device() -> Device {
        Device {
            serial: "SN1".into(),
            thing_name: "gg-SN1".into(),
        }
    }

    fn check_csr(prepared: &PreparedDevice, curve_oid: &str) {
        let (_, pem) = x509_parser::pem::parse_x509_pem(prepared.csr_pem.as_bytes()).unwrap();
        assert_eq!(pem.label, "CERTIFICATE REQUEST");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
                .unwrap();
        let info = &csr.certification_request_info;
        let signature = csr.signature_value.data.as_ref();
        match prepared.key.algorithm() {
            KeyAlgorithm::P256 => {
                use p256::ecdsa::signature::Verifier;
                use p256::pkcs8::DecodePublicKey;
                let key =
                    p256::ecdsa::VerifyingKey::from_public_key_der(info.subject_pki.raw).unwrap();
                let sig = p256::ecdsa::Signature::from_der(signature).unwrap();
                key.verify(info.raw, &sig)
                    .expect("CSR self-signature verifies");
            }
            KeyAlgorithm::P384 => {
                use p384::ecdsa::signature::Verifier;
                use p384::pkcs8::DecodePublicKey;
                let key =
                    p384::ecdsa::VerifyingKey::from_public_key_der(info.subject_pki.raw).unwrap();
                let sig = p384::ecdsa::Signature::from_der(signature).unwrap();
                key.verify(info.raw, &sig)
                    .expect("CSR self-signature verifies");
            }
        }
        let cn = info
            .subject
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "gg-SN1");
        assert_eq!(
            info.subject_pki.raw,
            prepared.key.public_key_der().as_slice()
        );
        let params = info.subject_pki.algorithm.parameters.as_ref().unwrap();
        assert_eq!(params.as_oid().unwrap().to_id_string(), curve_oid);
    }

    #[test]
    fn p256_csr_is_self_signed_with_thing_name_cn() {
        let prepared = prepare_device(device(), KeyAlgorithm::P256);
        check_csr(&prepared, "1.2.840.10045.3.1.7");
    }

    #[test]
    fn p384_csr_is_self_signed_with_thing_name_cn() {
        let prepared = prepare_device(device(), KeyAlgorithm::P384);
        check_csr(&prepared, "1.3.132.0.34");
    }

    #[test]
    fn private_key_is_pkcs8_and_debug_hides_it() {
        let prepared = prepare_device(device(), KeyAlgorithm::P256);
        let pem = prepared.key.pkcs8_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let shown = format!("{prepared:?}");
        assert!(!shown.contains("PRIVATE KEY"));
        assert!(shown.contains("secret redacted"));
    }

    #[test]
    fn private_key_fingerprint_matches_the_public_key() {
        for algorithm in [KeyAlgorithm::P256, KeyAlgorithm::P384] {
            let prepared = prepare_device(device(), algorithm);
            let pem = prepared.key.pkcs8_pem();
            assert_eq!(
                private_key_fingerprint(&pem).unwrap(),
                prepared.public_key_sha256
            );
        }
        assert!(private_key_fingerprint(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_none());
    }

    #[test]
    fn keys_are_fresh_each_time() {
        let a = prepare_device(device(), KeyAlgorithm::P256);
        let b = prepare_device(device(), KeyAlgorithm::P256);
        assert_ne!(a.public_key_sha256, b.public_key_sha256);
    }
}
