//! The register stage for one device: CreateCertificateFromCsr, the issued certificate
//! checked to carry the device's own key and its CSR's subject, then AttachPolicy, each
//! journaled before and after.
//! Retiring a certificate (set INACTIVE, journaled) lives here too: registration and
//! recovery both need it.

use std::sync::Arc;

use anyhow::Result;
use time::OffsetDateTime;

use super::state::RunState;
use super::RegisteredDevice;
use crate::cloud::{AwsError, Claims, NewCertificate, OutOfService};
use crate::core::certificate::{check_issued_for, check_subject_kept};
use crate::core::keys::PreparedDevice;
use crate::core::ledger::Event;

/// What became of one device in the register stage (`K`: its key, or `()` when kept
/// offline).
pub enum Registration<K> {
    /// Its certificate exists, is journaled and carries its key (the claim policy may still
    /// be missing: that is recorded as a failure and the next run attaches it).
    Registered(Box<RegisteredDevice<K>>),
    /// The create call may have made a certificate: reconcile before trying again.
    Uncertain(Box<PreparedDevice<K>>, String),
    /// A definite failure, with the reason for the summary.
    Failed(String),
    /// AWS issued a certificate that claim binding could not use (its subject is not the
    /// CSR's): the certificate is retired and the whole batch must stop before packaging.
    Halt(String),
}

/// Registers devices and retires certificates, journaling every step.
pub struct Registrar<A> {
    pub api: Arc<A>,
    pub state: Arc<RunState>,
    pub claim_policy: String,
}

impl<A: Claims> Registrar<A> {
    /// Journal, create, check, journal, attach, journal. `Err` is a local fault (journal).
    pub async fn register<K>(&self, prepared: PreparedDevice<K>) -> Result<Registration<K>> {
        let serial = prepared.device.serial.clone();
        self.state.record(Event::CreateRequested {
            serial: serial.clone(),
            public_key_sha256: prepared.public_key_sha256.clone(),
            at: OffsetDateTime::now_utc(),
        })?;
        match self
            .api
            .create_certificate_from_csr(&prepared.csr_pem)
            .await
        {
            Ok(certificate) => self.adopt(prepared, certificate).await,
            Err(e) if e.may_have_executed() => Ok(Registration::Uncertain(
                Box::new(prepared),
                format!("CreateCertificateFromCsr: {e}"),
            )),
            Err(e) => {
                self.state.record(Event::CreateAbandoned {
                    serial,
                    public_key_sha256: prepared.public_key_sha256.clone(),
                })?;
                let hint = match e {
                    AwsError::Throttled(_) => {
                        "; lower limits.create_certificate_from_csr_per_second or ask AWS for a higher quota"
                    }
                    _ => "",
                };
                Ok(Registration::Failed(format!(
                    "CreateCertificateFromCsr: {e}{hint}"
                )))
            }
        }
    }

    /// Records a certificate issued for `prepared`'s key, then attaches the claim policy. A
    /// certificate over another key is retired at once.
    pub async fn adopt<K>(
        &self,
        prepared: PreparedDevice<K>,
        certificate: NewCertificate,
    ) -> Result<Registration<K>> {
        let serial = prepared.device.serial.clone();
        let issued =
            match check_issued_for(&certificate.certificate_pem, &prepared.public_key_sha256) {
                Ok(issued) => issued,
                Err(problem) => {
                    // An active certificate over someone else's key must not stay active.
                    let why = "issued over the wrong public key";
                    self.abandon(&prepared, &certificate, why).await?;
                    return Ok(Registration::Failed(problem));
                }
            };
        if let Err(problem) = check_subject_kept(&certificate.certificate_pem, &prepared.csr_pem) {
            // Every claim AWS makes this way would be refused by the claim-binding hook after
            // shipping: retire this one, package nothing, and say so.
            let id = &certificate.certificate_id;
            let why = "AWS did not keep the CSR's subject";
            self.abandon(&prepared, &certificate, why).await?;
            return Ok(Registration::Halt(format!(
                "AWS did not keep the CSR's subject: certificate {} for {serial} {problem}; claim binding (setup.claim_binding) cannot work with such claims, so the batch stopped before packaging and set the certificate INACTIVE; check that AWS_ENDPOINT_URL points at AWS IoT",
                &id[..id.len().min(12)]
            )));
        }
        self.state.record(Event::Created {
            serial: serial.clone(),
            public_key_sha256: prepared.public_key_sha256.clone(),
            certificate_id: certificate.certificate_id.clone(),
            certificate_arn: certificate.certificate_arn.clone(),
            certificate_sha256: issued.sha256.clone(),
            not_after: issued.not_after,
            at: OffsetDateTime::now_utc(),
        })?;
        // Even if the attach fails, the key is in memory only: it is packaged anyway so it
        // is not lost, and the next run attaches the policy.
        self.attach_claim_policy(
            &serial,
            &certificate.certificate_id,
            &certificate.certificate_arn,
        )
        .await?;
        Ok(Registration::Registered(Box::new(RegisteredDevice {
            prepared,
            certificate,
            issued,
        })))
    }

    /// A certificate issued for `prepared` that must not be used: set INACTIVE, and the
    /// create abandoned in the journal (its key is forgotten with it).
    async fn abandon<K>(
        &self,
        prepared: &PreparedDevice<K>,
        certificate: &NewCertificate,
        why: &str,
    ) -> Result<()> {
        let serial = &prepared.device.serial;
        self.retire(serial, &certificate.certificate_id, why)
            .await?;
        self.state.record(Event::CreateAbandoned {
            serial: serial.clone(),
            public_key_sha256: prepared.public_key_sha256.clone(),
        })?;
        Ok(())
    }

    /// AttachPolicy, journaled; an AWS failure is recorded against the device.
    pub async fn attach_claim_policy(
        &self,
        serial: &str,
        certificate_id: &str,
        certificate_arn: &str,
    ) -> Result<()> {
        match self
            .api
            .attach_policy(&self.claim_policy, certificate_arn)
            .await
        {
            Ok(()) => self.state.record(Event::PolicyAttached {
                serial: serial.to_string(),
                certificate_id: certificate_id.to_string(),
            }),
            Err(e) => {
                self.state.fail(
                    serial,
                    format!(
                        "AttachPolicy {}: {e}; its bundle is kept, re-run to attach",
                        self.claim_policy
                    ),
                );
                Ok(())
            }
        }
    }

    /// Sets a certificate INACTIVE and journals that it no longer belongs to the device.
    pub async fn retire(&self, serial: &str, certificate_id: &str, reason: &str) -> Result<()> {
        match self
            .api
            .set_certificate_status(certificate_id, OutOfService::Inactive)
            .await
        {
            // Deleted by someone else: it cannot authenticate either way.
            Ok(()) | Err(AwsError::NotFound(_)) => {}
            Err(e) => anyhow::bail!(
                "cannot set certificate {certificate_id} of {serial} INACTIVE: {e}; re-run to retry"
            ),
        }
        self.state.record(Event::Retired {
            serial: serial.to_string(),
            certificate_id: certificate_id.to_string(),
            reason: reason.to_string(),
        })?;
        self.state.count_retired();
        Ok(())
    }
}
