//! What claimfab needs to know about a certificate AWS issued: that it carries the device's
//! own public key, its SHA-256 fingerprint and its expiry. Pure parsing, no trust decisions.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::core::keys::public_key_fingerprint;

/// A parsed certificate from CreateCertificateFromCsr or DescribeCertificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// SHA-256 of the DER certificate, hex (AWS uses the same value as the certificate id).
    pub sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo DER, hex.
    pub public_key_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Parses a PEM certificate.
pub fn parse_certificate_pem(pem: &str) -> Result<IssuedCertificate, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("certificate is not PEM: {e}"))?;
    if pem.label != "CERTIFICATE" {
        return Err(format!("expected a CERTIFICATE, got {}", pem.label));
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("certificate does not parse as X.509: {e}"))?;
    Ok(IssuedCertificate {
        sha256: hex::encode(Sha256::digest(&pem.contents)),
        public_key_sha256: public_key_fingerprint(cert.public_key().raw),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Parses an issued certificate and checks it carries the public key whose fingerprint is
/// `expected_public_key_sha256`.
pub fn check_issued_for(
    pem: &str,
    expected_public_key_sha256: &str,
) -> Result<IssuedCertificate, String> {
    let cert = parse_certificate_pem(pem)?;
    if cert.public_key_sha256 != expected_public_key_sha256 {
        return Err(format!(
            "the certificate AWS returned carries public key {} but the CSR's key is {}; \
             the endpoint did not certify this device's key",
            &cert.public_key_sha256[..16],
            &expected_public_key_sha256[..16]
        ));
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMAZON_ROOT_CA_1: &str = include_str!("AmazonRootCA1.pem");

    #[test]
    fn parses_fingerprint_and_expiry() {
        let cert = parse_certificate_pem(AMAZON_ROOT_CA_1).unwrap();
        assert_eq!(
            cert.sha256,
            "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e"
        );
        assert_eq!(cert.not_after.year(), 2038);
    }

    #[test]
    fn rejects_a_certificate_over_another_key() {
        let err = check_issued_for(AMAZON_ROOT_CA_1, &"0".repeat(64)).unwrap_err();
        assert!(err.contains("did not certify this device's key"), "{err}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_certificate_pem("hello").is_err());
    }
}
