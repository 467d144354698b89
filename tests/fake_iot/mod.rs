//! An in-memory AWS IoT for tests of crash recovery: implements claimfab's `Claims` and
//! `Inventory` seams over a table of certificates, issuing real X.509 certificates for CSRs
//! (signed by a throwaway CA) so that claimfab's own checks run unchanged. Any call can be
//! given a fault by API and call number: throttled (refused, nothing done, as AWS answers
//! once claimfab's own retries are spent) or its answer lost (done, the caller hears
//! nothing). And it can "crash": from the crash on, no request reaches it, as when the
//! process that would send it has died.
#![allow(dead_code)]

pub mod carried;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use claimfab::cloud::{
    AwsError, CertificateDescription, CertificateStatus, CertificateSummary, Claims, EndpointKind,
    Inventory, NewCertificate, OutOfService, TemplateInfo,
};
use claimfab::core::keys::{public_key_fingerprint, ClaimKey};
use claimfab::core::station_config::KeyAlgorithm;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

pub const ACCOUNT_ARN: &str = "arn:aws:iot:us-east-1:123456789012";

/// One certificate as AWS IoT keeps it.
#[derive(Debug, Clone)]
pub struct FakeCertificate {
    pub arn: String,
    pub pem: String,
    pub status: String,
    pub created_at: OffsetDateTime,
    pub policies: BTreeSet<String>,
    /// The CSR subject's CN (claimfab puts the thing name there).
    pub common_name: String,
    pub public_key_sha256: String,
}

/// What the fake does to one chosen call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Refused with a throttling error: nothing is done.
    Throttled,
    /// Done, and the answer lost on the way back.
    AnswerLost,
}

/// Whether the process under test is still alive; shared with the crashing journal.
#[derive(Default)]
pub struct Crash {
    dead: AtomicBool,
}

impl Crash {
    pub fn happen(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    pub fn revive(&self) {
        self.dead.store(false, Ordering::SeqCst);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }
}

/// The in-memory account.
pub struct FakeIot {
    pub certificates: Mutex<BTreeMap<String, FakeCertificate>>,
    pub crash: Arc<Crash>,
    /// Thing name -> attached principals (certificate ARNs), as a device's provisioning
    /// would leave them.
    pub things: Mutex<BTreeMap<String, Vec<String>>>,
    /// (API, 1-based number of the call to that API) -> what happens to it.
    faults: Mutex<BTreeMap<(&'static str, u64), Fault>>,
    /// How many of the chosen faults a call has met.
    faults_met: AtomicUsize,
    serials: AtomicUsize,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    ca_key: ClaimKey,
    ca_params: rcgen::CertificateParams,
}

impl FakeIot {
    pub fn new(crash: Arc<Crash>) -> Self {
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake AWS IoT CA");
        Self {
            certificates: Mutex::new(BTreeMap::new()),
            crash,
            things: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(BTreeMap::new()),
            faults_met: AtomicUsize::new(0),
            serials: AtomicUsize::new(1),
            calls: Mutex::new(BTreeMap::new()),
            ca_key: ClaimKey::generate(KeyAlgorithm::P256),
            ca_params,
        }
    }

    /// Loses the answers of these (1-based) CreateCertificateFromCsr calls.
    pub fn lose_create_answers(&self, calls: &[usize]) {
        for &call in calls {
            self.fault("CreateCertificateFromCsr", call as u64, Fault::AnswerLost);
        }
    }

    /// Gives the `call`-th (1-based) call to `api` a fault.
    pub fn fault(&self, api: &'static str, call: u64, fault: Fault) {
        self.faults.lock().unwrap().insert((api, call), fault);
    }

    /// How many of the chosen faults a call has met (a test whose fault was never met
    /// proved nothing).
    pub fn faults_met(&self) -> usize {
        self.faults_met.load(Ordering::SeqCst)
    }

    /// Every request from a dead process fails before reaching AWS; others are counted, and
    /// a throttled one goes no further. Returns the call's fault, if it has one, for
    /// [`FakeIot::answer`].
    fn request(&self, api: &'static str) -> Result<Option<Fault>, AwsError> {
        if self.crash.is_dead() {
            return Err(AwsError::Uncertain(
                "the process died before sending".into(),
            ));
        }
        let number = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(api).or_default();
            *count += 1;
            *count
        };
        let fault = self.faults.lock().unwrap().get(&(api, number)).copied();
        if fault.is_some() {
            self.faults_met.fetch_add(1, Ordering::SeqCst);
        }
        match fault {
            Some(Fault::Throttled) => Err(AwsError::Throttled(format!(
                "ThrottlingException: {api} call {number}"
            ))),
            fault => Ok(fault),
        }
    }

    /// A read: throttled, or its answer lost, like any other call.
    fn read(&self, api: &'static str) -> Result<(), AwsError> {
        Self::answer(self.request(api)?, Ok(()))
    }

    /// The answer the caller hears of a call that was carried out.
    fn answer<T>(fault: Option<Fault>, result: Result<T, AwsError>) -> Result<T, AwsError> {
        match (fault, result) {
            (Some(Fault::AnswerLost), Ok(_)) => Err(AwsError::Uncertain(
                "connection reset after the request was sent".into(),
            )),
            (_, result) => result,
        }
    }

    fn with_certificate<T>(
        &self,
        id: &str,
        change: impl FnOnce(&mut FakeCertificate) -> Result<T, AwsError>,
    ) -> Result<T, AwsError> {
        let mut certificates = self.certificates.lock().unwrap();
        match certificates.get_mut(id) {
            Some(cert) => change(cert),
            None => Err(AwsError::NotFound(format!("certificate {id}"))),
        }
    }

    fn id_of_arn(arn: &str) -> String {
        arn.rsplit('/').next().unwrap_or_default().to_string()
    }

    /// Certifies the CSR's own key, as AWS does, with the CSR's subject.
    fn issue(&self, csr_pem: &str) -> Result<FakeCertificate, AwsError> {
        let bad = |e: String| AwsError::Rejected(format!("InvalidRequestException: {e}"));
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let (_, csr) = <x509_parser::certification_request::X509CertificationRequest as x509_parser::prelude::FromDer<x509_parser::error::X509Error>>::from_der(&pem.contents)
            .map_err(|e| bad(e.to_string()))?;
        let info = &csr.certification_request_info;
        let common_name = info
            .subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let subject_key = CsrKey {
            point: info.subject_pki.subject_public_key.data.to_vec(),
        };
        let mut params = rcgen::CertificateParams::default();
        let serial = self.serials.fetch_add(1, Ordering::SeqCst) as u64;
        params.serial_number = Some(rcgen::SerialNumber::from(serial));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name.as_str());
        let issuer = rcgen::Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params
            .signed_by(&subject_key, &issuer)
            .map_err(|e| bad(e.to_string()))?;
        let id = hex::encode(Sha256::digest(cert.der()));
        Ok(FakeCertificate {
            arn: format!("{ACCOUNT_ARN}:cert/{id}"),
            pem: cert.pem(),
            status: "ACTIVE".into(),
            created_at: OffsetDateTime::now_utc(),
            policies: BTreeSet::new(),
            common_name,
            public_key_sha256: public_key_fingerprint(info.subject_pki.raw),
        })
    }

    /// Certificates in a status, by id.
    pub fn with_status(&self, status: &str) -> BTreeMap<String, FakeCertificate> {
        self.certificates
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.status == status)
            .map(|(id, c)| (id.clone(), c.clone()))
            .collect()
    }
}

/// A P-256 public key taken from a CSR, for rcgen to certify.
struct CsrKey {
    point: Vec<u8>,
}

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl Claims for FakeIot {
    async fn create_certificate_from_csr(&self, csr_pem: &str) -> Result<NewCertificate, AwsError> {
        let fault = self.request("CreateCertificateFromCsr")?;
        let cert = self.issue(csr_pem)?;
        let id = Self::id_of_arn(&cert.arn);
        let answer = NewCertificate {
            certificate_id: id.clone(),
            certificate_arn: cert.arn.clone(),
            certificate_pem: cert.pem.clone(),
        };
        self.certificates.lock().unwrap().insert(id, cert);
        Self::answer(fault, Ok(answer))
    }

    async fn attach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        let fault = self.request("AttachPolicy")?;
        let done = self.with_certificate(&Self::id_of_arn(certificate_arn), |c| {
            c.policies.insert(policy.to_string());
            Ok(())
        });
        Self::answer(fault, done)
    }

    async fn set_certificate_status(
        &self,
        certificate_id: &str,
        status: OutOfService,
    ) -> Result<(), AwsError> {
        let fault = self.request("UpdateCertificate")?;
        let done = self.with_certificate(certificate_id, |c| {
            if c.status == "REVOKED" {
                return Err(AwsError::Rejected(
                    "CertificateStateException: a REVOKED certificate cannot change status".into(),
                ));
            }
            c.status = CertificateStatus::from(status).to_string();
            Ok(())
        });
        Self::answer(fault, done)
    }

    async fn detach_policy(&self, policy: &str, certificate_arn: &str) -> Result<(), AwsError> {
        let fault = self.request("DetachPolicy")?;
        let done = self.with_certificate(&Self::id_of_arn(certificate_arn), |c| {
            c.policies.remove(policy);
            Ok(())
        });
        Self::answer(fault, done)
    }

    async fn delete_certificate(&self, certificate_id: &str) -> Result<(), AwsError> {
        let fault = self.request("DeleteCertificate")?;
        let mut certificates = self.certificates.lock().unwrap();
        let done = match certificates.get(certificate_id) {
            None => Err(AwsError::NotFound(format!("certificate {certificate_id}"))),
            Some(c) if c.status == "ACTIVE" || !c.policies.is_empty() => Err(AwsError::Rejected(
                "CertificateStateException: deactivate and detach first".into(),
            )),
            Some(_) => {
                certificates.remove(certificate_id);
                Ok(())
            }
        };
        Self::answer(fault, done)
    }

    async fn describe_certificate(
        &self,
        certificate_id: &str,
    ) -> Result<CertificateDescription, AwsError> {
        let fault = self.request("DescribeCertificate")?;
        let described = self.with_certificate(certificate_id, |c| {
            Ok(CertificateDescription {
                pem: c.pem.clone(),
                status: c.status.as_str().into(),
            })
        });
        Self::answer(fault, described)
    }

    async fn certificates_created_since(
        &self,
        since: OffsetDateTime,
    ) -> Result<Vec<CertificateSummary>, AwsError> {
        let fault = self.request("ListCertificates")?;
        let certificates = self.certificates.lock().unwrap();
        Self::answer(fault, Ok(()))?;
        Ok(certificates
            .iter()
            .filter(|(_, c)| c.created_at >= since)
            .map(|(id, c)| CertificateSummary {
                certificate_id: id.clone(),
                certificate_arn: c.arn.clone(),
                active: c.status == "ACTIVE",
            })
            .collect())
    }

    fn call_counts(&self) -> Vec<(&'static str, u64)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

impl Inventory for FakeIot {
    fn region(&self) -> &str {
        "us-east-1"
    }

    async fn describe_endpoint(&self, _kind: EndpointKind) -> Result<String, AwsError> {
        self.read("DescribeEndpoint")?;
        Ok("fake-ats.iot.us-east-1.amazonaws.com".into())
    }

    async fn policy_document(&self, _name: &str) -> Result<Option<String>, AwsError> {
        self.read("GetPolicy")?;
        Ok(None)
    }

    async fn provisioning_template(&self, _name: &str) -> Result<Option<TemplateInfo>, AwsError> {
        self.read("DescribeProvisioningTemplate")?;
        Ok(None)
    }

    async fn certificate_statuses(&self) -> Result<HashMap<String, CertificateStatus>, AwsError> {
        self.read("ListCertificates")?;
        let certificates = self.certificates.lock().unwrap();
        Ok(certificates
            .iter()
            .map(|(id, c)| (id.clone(), c.status.as_str().into()))
            .collect())
    }

    async fn certificate_creation_times(
        &self,
    ) -> Result<HashMap<String, OffsetDateTime>, AwsError> {
        self.read("ListCertificates")?;
        let certificates = self.certificates.lock().unwrap();
        Ok(certificates
            .values()
            .map(|c| (c.arn.clone(), c.created_at))
            .collect())
    }

    async fn policy_targets(&self, policy: &str) -> Result<Vec<String>, AwsError> {
        self.read("ListTargetsForPolicy")?;
        let certificates = self.certificates.lock().unwrap();
        Ok(certificates
            .values()
            .filter(|c| c.policies.contains(policy))
            .map(|c| c.arn.clone())
            .collect())
    }

    async fn thing_names(&self) -> Result<HashSet<String>, AwsError> {
        self.read("ListThings")?;
        Ok(self.things.lock().unwrap().keys().cloned().collect())
    }

    async fn thing_principals(&self, thing: &str) -> Result<Vec<String>, AwsError> {
        self.read("ListThingPrincipals")?;
        Ok(self
            .things
            .lock()
            .unwrap()
            .get(thing)
            .cloned()
            .unwrap_or_default())
    }

    async fn principal_things(&self, principal: &str) -> Result<Vec<String>, AwsError> {
        self.read("ListPrincipalThings")?;
        let things = self.things.lock().unwrap();
        let mut names: Vec<String> = things
            .iter()
            .filter(|(_, principals)| principals.iter().any(|p| p == principal))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }
}
