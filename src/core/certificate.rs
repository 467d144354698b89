//! What claimfab needs to know about a certificate AWS issued: that it carries the device's
//! own public key, its SHA-256 fingerprint and its expiry. Pure parsing, no trust decisions.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::core::keys::public_key_fingerprint;
use crate::core::station_config::KeyAlgorithm;

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

/// A distinguished name as (attribute OID, value) pairs, in order; a value that is not a
/// string is kept as hex.
fn name_attributes(name: &x509_parser::x509::X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .map(|attribute| {
            let value = attribute
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|_| hex::encode(attribute.attr_value().data));
            (attribute.attr_type().to_id_string(), value)
        })
        .collect()
}

/// Checks that a certificate AWS issued for a CSR carries exactly the CSR's subject (the
/// claim-binding hook identifies a claim's device by it). The error says what each holds.
pub fn check_subject_kept(certificate_pem: &str, csr_pem: &str) -> Result<(), String> {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;

    let (_, cert_pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| format!("certificate is not PEM: {e}"))?;
    let cert = cert_pem
        .parse_x509()
        .map_err(|e| format!("certificate does not parse as X.509: {e}"))?;
    let (_, csr_pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| format!("CSR is not PEM: {e}"))?;
    let (_, csr) = X509CertificationRequest::from_der(&csr_pem.contents)
        .map_err(|e| format!("CSR does not parse: {e}"))?;
    let asked = &csr.certification_request_info.subject;
    if name_attributes(cert.subject()) == name_attributes(asked) {
        return Ok(());
    }
    Err(format!(
        "has subject {:?} where its CSR asked for {:?}",
        cert.subject().to_string(),
        asked.to_string()
    ))
}

/// What a CSR carried from the air-gapped machine says, once its self-signature checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCsr {
    /// SHA-256 of its SubjectPublicKeyInfo DER, hex: the key a certificate must carry.
    pub public_key_sha256: String,
    /// Its subject's common name (claimfab puts the thing name there).
    pub common_name: String,
}

/// Parses a PEM CSR and checks it is signed by its own key on the batch's curve (a CSR
/// altered after signing, or made for another curve, is refused).
pub fn check_csr_pem(pem: &str, algorithm: KeyAlgorithm) -> Result<CheckedCsr, String> {
    csr_facts(pem, Some(algorithm))
}

/// Parses a PEM CSR; with `verify_for`, also checks its self-signature on that curve (a
/// CSR this machine wrote itself and only reads back need not be verified again).
pub fn csr_facts(pem: &str, verify_for: Option<KeyAlgorithm>) -> Result<CheckedCsr, String> {
    use aws_lc_rs::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1};
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::prelude::FromDer;

    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("CSR is not PEM: {e}"))?;
    if pem.label != "CERTIFICATE REQUEST" {
        return Err(format!("expected a CERTIFICATE REQUEST, got {}", pem.label));
    }
    let (_, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| format!("CSR does not parse: {e}"))?;
    let info = &csr.certification_request_info;
    if let Some(algorithm) = verify_for {
        let verification = match algorithm {
            KeyAlgorithm::P256 => &ECDSA_P256_SHA256_ASN1,
            KeyAlgorithm::P384 => &ECDSA_P384_SHA384_ASN1,
        };
        UnparsedPublicKey::new(verification, &info.subject_pki.subject_public_key.data)
            .verify(info.raw, &csr.signature_value.data)
            .map_err(|_| {
                format!("CSR's signature does not verify with its own {algorithm:?} key: it was altered or made for another key algorithm")
            })?;
    }
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("CSR has no common name")?;
    Ok(CheckedCsr {
        public_key_sha256: public_key_fingerprint(info.subject_pki.raw),
        common_name: common_name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::devices::Device;
    use crate::core::keys::{prepare_device, PreparedDevice};
    use crate::core::station_config::KeyAlgorithm;

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

    /// A certificate for `prepared`'s key with `subject_cn` as its subject, signed by a CA
    /// key of its own.
    fn issue(prepared: &PreparedDevice, subject_cn: &str) -> String {
        let ca = device("CA");
        let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), &ca.key);
        let mut params = rcgen::CertificateParams::default();
        params.serial_number = Some(rcgen::SerialNumber::from(7u64));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, subject_cn);
        params.signed_by(&prepared.key, &issuer).unwrap().pem()
    }

    fn device(thing_name: &str) -> PreparedDevice {
        let device = Device {
            serial: "SN1".into(),
            thing_name: thing_name.into(),
        };
        prepare_device(device, KeyAlgorithm::P256)
    }

    #[test]
    fn a_certificate_must_keep_its_csrs_subject() {
        let prepared = device("gg-SN1");
        let kept = issue(&prepared, "gg-SN1");
        check_subject_kept(&kept, &prepared.csr_pem).unwrap();
        let dropped = issue(&prepared, "AWS IoT Certificate");
        let e = check_subject_kept(&dropped, &prepared.csr_pem).unwrap_err();
        assert!(
            e.contains("AWS IoT Certificate") && e.contains("asked for \"CN=gg-SN1\""),
            "{e}"
        );
        assert!(check_subject_kept(&kept, "not a csr").is_err());
    }

    #[test]
    fn a_csr_checks_with_its_own_key_on_the_batch_curve_only() {
        let prepared = device("gg-SN1");
        let checked = check_csr_pem(&prepared.csr_pem, KeyAlgorithm::P256).unwrap();
        assert_eq!(checked.public_key_sha256, prepared.public_key_sha256);
        assert_eq!(checked.common_name, "gg-SN1");
        let e = check_csr_pem(&prepared.csr_pem, KeyAlgorithm::P384).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        // The same CSR with another subject: the signature no longer covers it.
        let other = device("gg-SN2");
        let (_, mine) = x509_parser::pem::parse_x509_pem(prepared.csr_pem.as_bytes()).unwrap();
        let (_, theirs) = x509_parser::pem::parse_x509_pem(other.csr_pem.as_bytes()).unwrap();
        let mut spliced = theirs.contents.clone();
        let at = spliced.windows(6).position(|w| w == b"gg-SN2").unwrap();
        spliced[at + 5] = b'1';
        assert_ne!(spliced, mine.contents);
        let pem = pem_of("CERTIFICATE REQUEST", &spliced);
        let e = check_csr_pem(&pem, KeyAlgorithm::P256).unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let e = check_csr_pem(AMAZON_ROOT_CA_1, KeyAlgorithm::P256).unwrap_err();
        assert!(e.contains("expected a CERTIFICATE REQUEST"), "{e}");
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_certificate_pem("hello").is_err());
    }
}
