//! Recovery: what an interrupted run left, and creates whose answer was lost. Certificates
//! are found by the public key of their CSR ([`Reconciler`]); a certificate whose key died
//! with a run is retired, one whose key is still at hand is adopted, and half-done devices
//! (policy not attached, bundle not journaled) are finished.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::custody::Custody;
use super::register::{Registrar, Registration};
use super::state::{lock, RunState, SCRATCH_FAILED};
use super::{RegisteredDevice, SharedClaim, Uncertain};
use crate::cloud::{AwsError, Claims, NewCertificate};
use crate::core::certificate::{check_issued_for, parse_certificate_pem};
use crate::core::devices::DeviceList;
use crate::core::ledger::{CertificateRecord, Event, SHARED_CLAIM};
use crate::progress::Progress;

/// How far AWS's clock and ours may disagree when matching certificates by creation time.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(15);

/// Public key fingerprint -> serial, for the keys whose create call has no known answer.
pub type Keys = HashMap<String, String>;

/// Finds the certificates AWS made for given public keys.
pub struct Reconciler<A> {
    pub api: Arc<A>,
    pub state: Arc<RunState>,
    pub reconcile_after: Duration,
    pub progress: Arc<Progress>,
    pub cancel: CancellationToken,
    /// Certificates already described and found to be none of ours.
    pub not_ours: Mutex<HashSet<String>>,
}

impl<A: Claims> Reconciler<A> {
    /// Waits until the youngest unanswered create among `keys` is `reconcile_after` old
    /// (until then AWS may still be executing it, or not list it yet), then returns the
    /// ACTIVE certificates unknown to the journal whose key is one of `keys`, with the
    /// serial each belongs to. `None` if cancelled while waiting.
    pub async fn find(&self, keys: &Keys) -> Result<Option<Vec<(String, NewCertificate)>>> {
        let creates: Vec<OffsetDateTime> = self.state.read(|state| {
            state
                .unresolved_creates()
                .filter(|(_, u)| keys.contains_key(&u.public_key_sha256))
                .map(|(_, u)| u.at)
                .collect()
        });
        if let Some(youngest) = creates.iter().max() {
            if !self.settle(*youngest, keys.len()).await {
                return Ok(None);
            }
        }
        let oldest = creates.into_iter().min();
        let since = oldest.unwrap_or_else(OffsetDateTime::now_utc) - CLOCK_SKEW;
        self.certificates_for(keys, since).await.map(Some)
    }

    /// Sleeps until `youngest + reconcile_after`; false if cancelled meanwhile.
    async fn settle(&self, youngest: OffsetDateTime, count: usize) -> bool {
        let settle = time::Duration::try_from(self.reconcile_after).unwrap_or_default();
        let wait = (youngest + settle - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        if wait > time::Duration::seconds(1) {
            self.progress.println(&format!(
                "waiting {:.0} s before looking up {count} unanswered create call(s) in AWS (limits.reconcile_after_seconds)",
                wait.as_seconds_f64(),
            ));
        }
        let wait = Duration::try_from(wait).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            () = self.cancel.cancelled() => false,
        }
    }

    async fn certificates_for(
        &self,
        keys: &Keys,
        since: OffsetDateTime,
    ) -> Result<Vec<(String, NewCertificate)>> {
        let listed = self
            .api
            .certificates_created_since(since)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ListCertificates (to reconcile unanswered creates): {e}; re-run to retry"
                )
            })?;
        let known = self
            .state
            .read(|state| state.known_certificates())
            .context(SCRATCH_FAILED)?;
        let candidates: Vec<_> = {
            let not_ours = lock(&self.not_ours);
            listed
                .into_iter()
                .filter(|c| c.active)
                .filter(|c| !known.contains(c.certificate_id.as_str()))
                .filter(|c| !not_ours.contains(&c.certificate_id))
                .collect()
        };
        let mut found = Vec::new();
        for candidate in candidates {
            let pem = match self.api.describe_certificate(&candidate.certificate_id).await {
                Ok(description) => description.pem,
                Err(AwsError::NotFound(_)) => continue,
                Err(e) => anyhow::bail!(
                    "DescribeCertificate {} (to reconcile unanswered creates): {e}; re-run to retry",
                    candidate.certificate_id
                ),
            };
            let key = parse_certificate_pem(&pem).map(|c| c.public_key_sha256);
            match key.ok().and_then(|key| keys.get(&key)) {
                Some(serial) => found.push((
                    serial.clone(),
                    NewCertificate {
                        certificate_arn: candidate.certificate_arn,
                        certificate_id: candidate.certificate_id,
                        certificate_pem: pem,
                    },
                )),
                None => {
                    lock(&self.not_ours).insert(candidate.certificate_id);
                }
            }
        }
        Ok(found)
    }
}

/// What reconciling the creates of this run decided.
pub struct Resolved<K> {
    /// Devices whose certificate was found and adopted (or that failed definitely).
    pub registrations: Vec<(String, Registration<K>)>,
    /// Devices with no certificate in AWS: their create is abandoned, try again.
    pub retry: DeviceList,
    /// Still unknown (cancelled while waiting for AWS to settle).
    pub unresolved: Vec<Uncertain<K>>,
}

/// Recovery of one run, over the parts it repairs with.
pub struct Recovery<'a, A, C> {
    pub registrar: &'a Registrar<A>,
    pub custody: &'a C,
    pub reconciler: &'a Reconciler<A>,
    pub devices: &'a DeviceList,
    pub progress: &'a Progress,
}

impl<A: Claims, C: Custody> Recovery<'_, A, C> {
    /// Repairs what an interrupted run left: certificates created but never journaled are
    /// found by key and retired (their keys died with that run), or, when keys outlive
    /// runs, handed back to be reconciled with this run's own; certificates whose bundle
    /// never reached the disk are retired; bundles on disk but not journaled are adopted;
    /// policies not yet attached to packaged devices are attached.
    pub async fn recover(&self) -> Result<Vec<Uncertain<C::Key>>> {
        let earlier = match self.custody.keys_outlive_runs() {
            true => self.earlier_creates()?,
            false => {
                self.retire_lost_creates().await?;
                Vec::new()
            }
        };
        let half_done = self.half_done()?;
        for (serial, cert) in half_done {
            if self.reconciler.cancel.is_cancelled() {
                break;
            }
            let has_output = self.custody.has_output(&serial, &cert)?;
            if !has_output && !self.custody.keys_outlive_runs() {
                let why = "its private key was lost before the bundle was written";
                self.registrar
                    .retire(&serial, &cert.certificate_id, why)
                    .await?;
                continue;
            }
            if !has_output {
                self.deliver_again(&serial, &cert).await?;
            }
            if !cert.policy_attached {
                self.registrar
                    .attach_claim_policy(&serial, &cert.certificate_id, &cert.certificate_arn)
                    .await?;
            }
        }
        Ok(earlier)
    }

    /// A certificate whose key is kept offline but whose output a crash lost: fetched
    /// again from AWS (DescribeCertificate), checked against the device's key, delivered.
    async fn deliver_again(&self, serial: &str, cert: &CertificateRecord) -> Result<()> {
        let id = &cert.certificate_id;
        let pem = match self.registrar.api.describe_certificate(id).await {
            Ok(description) => description.pem,
            Err(e) => anyhow::bail!(
                "DescribeCertificate {id} (the certificate of {serial}, to write it again): {e}; re-run to retry"
            ),
        };
        let position = self.devices.position(serial).with_context(|| {
            format!("the journal has a certificate for {serial}, which is not in this batch; restore the journal")
        })?;
        let prepared = (self.custody.prepare(&[self.devices.get(position)])?.pop())
            .context("prepare gave no device")?;
        let issued = check_issued_for(&pem, &prepared.public_key_sha256)
            .map_err(|problem| anyhow::anyhow!("certificate {id} of {serial}: {problem}"))?;
        if issued.sha256 != cert.certificate_sha256 {
            anyhow::bail!("AWS returned another certificate for {id} of {serial} than it issued; check AWS_ENDPOINT_URL");
        }
        let registered = RegisteredDevice {
            prepared,
            certificate: NewCertificate {
                certificate_id: id.clone(),
                certificate_arn: cert.certificate_arn.clone(),
                certificate_pem: pem,
            },
            issued,
        };
        tokio::task::block_in_place(|| self.custody.deliver(registered))
    }

    /// Creates journaled without an answer whose keys are kept offline: each device
    /// prepared again (its CSR), to be reconciled like a create of this run.
    fn earlier_creates(&self) -> Result<Vec<Uncertain<C::Key>>> {
        // One per device: its CSR, so every create of it was for the same key.
        let unresolved: Vec<(String, String)> = self.registrar.state.read(|state| {
            let by_serial: std::collections::BTreeMap<String, String> = state
                .unresolved_creates()
                .map(|(serial, u)| (serial.to_string(), u.public_key_sha256.clone()))
                .collect();
            by_serial.into_iter().collect()
        });
        let mut devices = Vec::new();
        for (serial, _) in &unresolved {
            let position = self.devices.position(serial).with_context(|| {
                format!("the journal has a create for {serial}, which is not in this batch; restore the journal")
            })?;
            devices.push(self.devices.get(position));
        }
        let prepared = self.custody.prepare(&devices)?;
        let mut earlier = Vec::new();
        for (prepared, (serial, key)) in prepared.into_iter().zip(&unresolved) {
            if prepared.public_key_sha256 != *key {
                anyhow::bail!("the journal's create for {serial} was for another key than its CSR now; restore the CSR file the batch began with");
            }
            let why = "an earlier run's CreateCertificateFromCsr had no recorded answer";
            earlier.push((Box::new(prepared), why.to_string()));
        }
        if !earlier.is_empty() {
            self.progress.println(&format!(
                "recovering: {} create call(s) of an interrupted run have no recorded answer; looking them up in AWS",
                earlier.len()
            ));
        }
        Ok(earlier)
    }

    /// Creates journaled without an answer: any certificate they made is retired (its key
    /// is gone), and each create is marked abandoned.
    async fn retire_lost_creates(&self) -> Result<()> {
        let unresolved: Keys = self.registrar.state.read(|state| {
            state
                .unresolved_creates()
                .map(|(serial, u)| (u.public_key_sha256.clone(), serial.to_string()))
                .collect()
        });
        if unresolved.is_empty() {
            return Ok(());
        }
        self.progress.println(&format!(
            "recovering: {} create call(s) of an interrupted run have no recorded answer",
            unresolved.len()
        ));
        let Some(found) = self.reconciler.find(&unresolved).await? else {
            return Ok(());
        };
        for (serial, cert) in found {
            let reason = "created by an interrupted run whose key was lost";
            self.registrar
                .retire(&serial, &cert.certificate_id, reason)
                .await?;
        }
        for (public_key_sha256, serial) in unresolved {
            self.registrar.state.record(Event::CreateAbandoned {
                serial,
                public_key_sha256,
            })?;
        }
        Ok(())
    }

    /// Live certificates of devices whose policy is not attached or whose bundle is missing.
    fn half_done(&self) -> Result<Vec<(String, CertificateRecord)>> {
        let mut half_done = Vec::new();
        for device in self.devices.iter() {
            let record = self.registrar.state.read(|state| {
                // Ready devices need only their bundle checked, which the slot alone
                // cannot tell: read the record either way, one device at a time.
                state
                    .has_certificate(&device.serial)
                    .then(|| state.record(&device.serial))
            });
            let Some(record) = record.transpose().context(SCRATCH_FAILED)?.flatten() else {
                continue;
            };
            if record.is_revoked() {
                continue;
            }
            if let Some(cert) = record.certificate {
                if !cert.policy_attached || self.custody.output_missing(&device.serial, &cert) {
                    half_done.push((device.serial.clone(), *cert));
                }
            }
        }
        Ok(half_done)
    }

    /// Batch claim scope: the shared certificate's key survives only inside the bundles
    /// written with it, so a re-run reads it back from one. A certificate no bundle holds is
    /// retired (its key died with the earlier run). Attaches the claim policy if the earlier
    /// run could not.
    pub async fn recover_shared(&self) -> Result<Option<SharedClaim>> {
        let cert = self
            .registrar
            .state
            .read(|state| state.record(SHARED_CLAIM))
            .context(SCRATCH_FAILED)?
            .and_then(|r| r.certificate);
        let Some(cert) = cert.filter(|c| c.revoked_status.is_none() && !c.deleted) else {
            return Ok(None);
        };
        let claim = tokio::task::block_in_place(|| self.custody.shared_claim(&cert))?;
        let Some(claim) = claim else {
            let reason = "its private key was lost before any bundle was written";
            self.registrar
                .retire(SHARED_CLAIM, &cert.certificate_id, reason)
                .await?;
            return Ok(None);
        };
        if !cert.policy_attached {
            self.registrar
                .attach_claim_policy(SHARED_CLAIM, &cert.certificate_id, &cert.certificate_arn)
                .await?;
        }
        Ok(Some(claim))
    }

    /// Reconciles creates of this run whose outcome was unknown, while their keys are still
    /// in memory: a certificate found for a key is adopted (extra ones retired); a key with
    /// none is abandoned and its device tried again.
    pub async fn resolve(&self, uncertain: Vec<Uncertain<C::Key>>) -> Result<Resolved<C::Key>> {
        let keys: Keys = uncertain
            .iter()
            .map(|(p, _)| (p.public_key_sha256.clone(), p.device.serial.clone()))
            .collect();
        let mut resolved = Resolved {
            registrations: Vec::new(),
            retry: DeviceList::default(),
            unresolved: Vec::new(),
        };
        let Some(certificates) = self.reconciler.find(&keys).await? else {
            resolved.unresolved = uncertain;
            return Ok(resolved);
        };
        let mut found: HashMap<String, Vec<NewCertificate>> = HashMap::new();
        for (serial, cert) in certificates {
            found.entry(serial).or_default().push(cert);
        }
        for (prepared, _) in uncertain {
            let serial = prepared.device.serial.clone();
            let Some(mut certs) = found.remove(&serial) else {
                self.registrar.state.record(Event::CreateAbandoned {
                    serial,
                    public_key_sha256: prepared.public_key_sha256.clone(),
                })?;
                let device = &prepared.device;
                // Each uncertain device is reconciled once per round: never twice here.
                let _ = resolved.retry.push(&device.serial, &device.thing_name);
                continue;
            };
            let keep = certs.remove(0);
            for duplicate in certs {
                let reason = "duplicate from a retried create";
                self.registrar
                    .retire(&serial, &duplicate.certificate_id, reason)
                    .await?;
            }
            let registration = self.registrar.adopt(*prepared, keep).await?;
            resolved.registrations.push((serial, registration));
        }
        Ok(resolved)
    }
}
