//! The batch ledger: the events a batch journals (a create asked for and its answer, a
//! policy attached, a bundle written, a certificate retired or revoked) and their replay into
//! each device's state, from which a re-run after any crash knows what exists; and a
//! certificate's status (`CertificateStatus`, in AWS's spellings), which the journal records
//! and `core::reconcile` compares. Pure: events in (from any reader), state out; the file itself
//! is `batch_dir::journal`'s.

use std::io::BufRead;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::devices::ClaimScope;

pub mod records;

use records::{BundlePage, CertificatePage, Slot, SlotMut, Store};
pub use records::{MemoryPages, RecordPages};

/// The journal's name for a batch-scope batch's one shared claim certificate, in place of a
/// serial. Serials are thing-name characters, which never include `*`.
pub const SHARED_CLAIM: &str = "*batch";

/// A certificate's status, as AWS IoT's API (`CertificateStatus`) spells it, which is also
/// how the journal and AWS's listings write it. A spelling AWS adds later is kept as read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "String")]
pub enum CertificateStatus {
    Active,
    Inactive,
    Revoked,
    PendingTransfer,
    RegisterInactive,
    PendingActivation,
    /// None of the above: a status this build does not know, spelled as AWS spells it.
    Other(String),
}

impl CertificateStatus {
    /// Every status AWS documents.
    const KNOWN: [CertificateStatus; 6] = [
        CertificateStatus::Active,
        CertificateStatus::Inactive,
        CertificateStatus::Revoked,
        CertificateStatus::PendingTransfer,
        CertificateStatus::RegisterInactive,
        CertificateStatus::PendingActivation,
    ];

    /// The AWS spelling: ACTIVE, INACTIVE, REVOKED, ...
    pub fn as_str(&self) -> &str {
        match self {
            CertificateStatus::Active => "ACTIVE",
            CertificateStatus::Inactive => "INACTIVE",
            CertificateStatus::Revoked => "REVOKED",
            CertificateStatus::PendingTransfer => "PENDING_TRANSFER",
            CertificateStatus::RegisterInactive => "REGISTER_INACTIVE",
            CertificateStatus::PendingActivation => "PENDING_ACTIVATION",
            CertificateStatus::Other(spelling) => spelling,
        }
    }
}

impl From<&str> for CertificateStatus {
    fn from(spelling: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|status| status.as_str() == spelling)
            .unwrap_or_else(|| Self::Other(spelling.to_string()))
    }
}

impl From<String> for CertificateStatus {
    fn from(spelling: String) -> Self {
        match Self::from(spelling.as_str()) {
            Self::Other(_) => Self::Other(spelling),
            known => known,
        }
    }
}

impl std::fmt::Display for CertificateStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for CertificateStatus {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// About to call CreateCertificateFromCsr for this key. If no `Created` follows, a
    /// certificate for this key may exist in AWS anyway.
    CreateRequested {
        serial: String,
        public_key_sha256: String,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// AWS issued this certificate for the device's key.
    Created {
        serial: String,
        public_key_sha256: String,
        certificate_id: String,
        certificate_arn: String,
        certificate_sha256: String,
        #[serde(with = "time::serde::rfc3339")]
        not_after: OffsetDateTime,
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// A create whose outcome was unknown was checked against AWS: no certificate carries
    /// this key, and the key is discarded.
    CreateAbandoned {
        serial: String,
        public_key_sha256: String,
    },
    /// The claim policy is attached to the certificate.
    PolicyAttached {
        serial: String,
        certificate_id: String,
    },
    /// The bundle is on disk, complete, under its final name.
    Packaged {
        serial: String,
        certificate_id: String,
        bundle: String,
        bundle_sha256: String,
    },
    /// Batch claim scope: the device's bundle is on disk, complete, holding the batch's
    /// shared claim certificate `certificate_id` (journaled under [`SHARED_CLAIM`]).
    SharedPackaged {
        serial: String,
        certificate_id: String,
        bundle: String,
        bundle_sha256: String,
    },
    /// `claimfab revoke` is about to set this certificate's status.
    StatusRequested {
        serial: String,
        certificate_id: String,
        status: CertificateStatus,
    },
    /// The certificate's status is now `status` (INACTIVE or REVOKED), by `claimfab revoke`.
    StatusChanged {
        serial: String,
        certificate_id: String,
        status: CertificateStatus,
    },
    /// The claim policy was detached from the certificate.
    PolicyDetached {
        serial: String,
        certificate_id: String,
    },
    /// The certificate was deleted from AWS.
    CertificateDeleted {
        serial: String,
        certificate_id: String,
    },
    /// The certificate was set INACTIVE and is no longer the device's (its key was lost in a
    /// crash, or it was a duplicate).
    Retired {
        serial: String,
        certificate_id: String,
        reason: String,
    },
}

/// A create call whose outcome the journal does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnresolvedCreate {
    pub public_key_sha256: String,
    pub at: OffsetDateTime,
}

/// The device's live certificate, as the journal knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRecord {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_sha256: String,
    pub not_after: OffsetDateTime,
    pub public_key_sha256: String,
    pub created_at: OffsetDateTime,
    pub policy_attached: bool,
    pub bundle: Option<(String, String)>,
    /// Set by `claimfab revoke`: INACTIVE or REVOKED. None: as created (ACTIVE).
    pub revoked_status: Option<CertificateStatus>,
    pub deleted: bool,
}

/// A device's bundle holding the batch's shared claim certificate (batch claim scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBundle {
    pub certificate_id: String,
    pub bundle: String,
    pub bundle_sha256: String,
}

/// What the journal says about one device (or, under [`SHARED_CLAIM`], the shared claim), put
/// together from its slot and pages when asked for ([`Replay::record`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRecord {
    pub unresolved_creates: Vec<UnresolvedCreate>,
    pub certificate: Option<Box<CertificateRecord>>,
    pub retired: Vec<String>,
    /// Batch claim scope: the device's bundle and the shared certificate it holds.
    pub shared_bundle: Option<Box<SharedBundle>>,
}

impl DeviceRecord {
    /// Taken out of service by `claimfab revoke`: never repaired or re-registered by a batch.
    pub fn is_revoked(&self) -> bool {
        self.certificate
            .as_ref()
            .is_some_and(|c| c.revoked_status.is_some() || c.deleted)
    }

    /// The manifest status of a device with this record; `failed` if this run failed it.
    pub fn manifest_status(
        record: Option<&Self>,
        failed: bool,
    ) -> crate::core::manifest::DeviceStatus {
        use crate::core::manifest::DeviceStatus;
        match record.and_then(|r| r.certificate.as_ref()) {
            Some(c) if c.deleted => DeviceStatus::Deleted,
            Some(c) if c.revoked_status == Some(CertificateStatus::Revoked) => {
                DeviceStatus::Revoked
            }
            Some(c) if c.revoked_status.is_some() => DeviceStatus::Inactive,
            _ if record.is_some_and(|r| r.is_ready()) => DeviceStatus::Ready,
            _ if failed => DeviceStatus::Failed,
            _ => DeviceStatus::Pending,
        }
    }

    /// Ready to flash: certificate with policy and bundle, not revoked.
    pub fn is_ready(&self) -> bool {
        self.certificate.as_ref().is_some_and(|c| {
            c.policy_attached && c.bundle.is_some() && c.revoked_status.is_none() && !c.deleted
        })
    }
}

/// Every device's record, compactly (see [`records`]): what replaying a journal gives.
pub struct Replay {
    store: Store,
}

impl Default for Replay {
    fn default() -> Self {
        Self::new(Box::new(MemoryPages::default()))
    }
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Replay({} records)", self.store.len())
    }
}

impl Replay {
    /// An empty replay keeping its records' pages in `pages`.
    pub fn new(pages: Box<dyn RecordPages>) -> Self {
        Self {
            store: Store::new(pages),
        }
    }

    /// How many devices (and the shared claim) the journal names.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// What the journal says about one device, if anything.
    pub fn record(&self, serial: &str) -> std::io::Result<Option<DeviceRecord>> {
        self.store.record_of(serial)
    }

    /// Whether the device has a live certificate (without reading its pages).
    pub fn has_certificate(&self, serial: &str) -> bool {
        self.store
            .slot(serial)
            .is_some_and(|s| s.certificate.is_some())
    }

    /// Whether the device's live certificate has the claim policy attached (without
    /// reading its pages).
    pub fn policy_attached(&self, serial: &str) -> bool {
        self.store
            .slot(serial)
            .is_some_and(|s| s.certificate.is_some() && s.policy_attached)
    }

    /// Whether the device is ready to flash (without reading its pages).
    pub fn is_ready(&self, serial: &str) -> bool {
        self.store.slot(serial).is_some_and(Slot::is_ready)
    }

    /// Every create whose outcome the journal does not know, with its device's serial.
    pub fn unresolved_creates(&self) -> impl Iterator<Item = (&str, &UnresolvedCreate)> {
        self.store.rare().flat_map(|(serial, rare)| {
            rare.unresolved_creates
                .iter()
                .map(move |create| (serial, create))
        })
    }

    /// Applies one event to the record of the device it names, by the event's family.
    pub fn apply(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::CreateRequested {
                serial,
                public_key_sha256,
                at,
            } => {
                let mut slot = self.store.slot_mut(&serial)?;
                slot.rare_mut().unresolved_creates.push(UnresolvedCreate {
                    public_key_sha256,
                    at,
                });
            }
            Event::Created {
                serial,
                public_key_sha256,
                certificate_id,
                certificate_arn,
                certificate_sha256,
                not_after,
                at,
            } => {
                let page = self.store.write(&CertificatePage {
                    certificate_id,
                    certificate_arn,
                    certificate_sha256,
                    not_after,
                    public_key_sha256: public_key_sha256.clone(),
                    created_at: at,
                })?;
                let mut slot = self.store.slot_mut(&serial)?;
                forget_create(&mut slot, &public_key_sha256);
                slot.replace_certificate(Some(page));
            }
            Event::CreateAbandoned {
                serial,
                public_key_sha256,
            } => forget_create(&mut self.store.slot_mut(&serial)?, &public_key_sha256),
            Event::Retired {
                serial,
                certificate_id,
                ..
            } => {
                if self.is_live(&serial, &certificate_id)? {
                    self.store.slot_mut(&serial)?.replace_certificate(None);
                }
                let mut slot = self.store.slot_mut(&serial)?;
                slot.rare_mut().retired.push(certificate_id);
            }
            event => self.apply_to_certificate(event)?,
        }
        Ok(())
    }

    /// Events about a certificate that change the device's record only while that
    /// certificate is still the device's: packaging and revocation. A status requested
    /// alone changes nothing (the re-run asks again), but names the device.
    fn apply_to_certificate(&mut self, event: Event) -> std::io::Result<()> {
        let (serial, certificate_id) = match &event {
            Event::SharedPackaged { .. } => return self.apply_shared(event),
            Event::PolicyAttached {
                serial,
                certificate_id,
            }
            | Event::Packaged {
                serial,
                certificate_id,
                ..
            }
            | Event::StatusRequested {
                serial,
                certificate_id,
                ..
            }
            | Event::StatusChanged {
                serial,
                certificate_id,
                ..
            }
            | Event::PolicyDetached {
                serial,
                certificate_id,
            }
            | Event::CertificateDeleted {
                serial,
                certificate_id,
            } => (serial, certificate_id),
            _ => return Ok(()),
        };
        self.store.slot_mut(serial)?;
        if !self.is_live(serial, certificate_id)? {
            return Ok(());
        }
        let bundle = match &event {
            Event::Packaged {
                certificate_id,
                bundle,
                bundle_sha256,
                ..
            } => Some(self.store.write(&BundlePage {
                certificate_id: certificate_id.clone(),
                bundle: bundle.clone(),
                bundle_sha256: bundle_sha256.clone(),
            })?),
            _ => None,
        };
        let mut slot = self.store.slot_mut(serial)?;
        match event {
            Event::PolicyAttached { .. } => slot.slot.policy_attached = true,
            Event::Packaged { .. } => slot.slot.bundle = bundle,
            Event::StatusChanged { status, .. } => slot.set_revoked(Some(status)),
            Event::PolicyDetached { .. } => slot.slot.policy_attached = false,
            Event::CertificateDeleted { .. } => slot.slot.deleted = true,
            _ => {}
        }
        Ok(())
    }

    /// Batch claim scope: the device's bundle holding the shared certificate.
    fn apply_shared(&mut self, event: Event) -> std::io::Result<()> {
        if let Event::SharedPackaged {
            serial,
            certificate_id,
            bundle,
            bundle_sha256,
        } = event
        {
            let page = self.store.write(&BundlePage {
                certificate_id,
                bundle,
                bundle_sha256,
            })?;
            self.store.slot_mut(&serial)?.slot.shared_bundle = Some(page);
        }
        Ok(())
    }

    /// Whether `certificate_id` is the device's live certificate: an event about a
    /// certificate since replaced changes nothing.
    fn is_live(&self, serial: &str, certificate_id: &str) -> std::io::Result<bool> {
        let Some(slot) = self.store.slot(serial) else {
            return Ok(false);
        };
        Ok(self.store.certificate_id(slot)?.as_deref() == Some(certificate_id))
    }

    /// Every certificate id the journal names: devices' certificates and retired ones.
    pub fn known_certificates(&self) -> std::io::Result<std::collections::HashSet<String>> {
        let mut known = std::collections::HashSet::new();
        for (_, slot) in self.store.iter() {
            known.extend(self.store.certificate_id(slot)?);
        }
        for (_, rare) in self.store.rare() {
            known.extend(rare.retired.iter().cloned());
        }
        Ok(known)
    }

    /// A device's record as the manifest sees it. In batch claim scope the certificate is
    /// the shared one, and the device's bundle counts only if it holds that certificate.
    pub fn device_view(
        &self,
        serial: &str,
        scope: ClaimScope,
    ) -> std::io::Result<Option<DeviceRecord>> {
        match scope {
            ClaimScope::Device => self.record(serial),
            ClaimScope::Batch => {
                let Some(shared) = self.record(SHARED_CLAIM)?.and_then(|r| r.certificate) else {
                    return Ok(None);
                };
                let bundle = self
                    .record(serial)?
                    .and_then(|r| r.shared_bundle)
                    .filter(|b| b.certificate_id == shared.certificate_id)
                    .map(|b| (b.bundle, b.bundle_sha256));
                Ok(Some(DeviceRecord {
                    certificate: Some(Box::new(CertificateRecord { bundle, ..*shared })),
                    ..DeviceRecord::default()
                }))
            }
        }
    }

    /// Replays a journal, a line at a time, keeping the records' pages in `pages`. Returns
    /// the state and the length of the valid prefix: lines a crash left half-written at the
    /// end (no valid line after them) are not part of it. A bad line with valid lines after
    /// it is corruption, reported with its line number.
    pub fn from_reader(
        mut reader: impl BufRead,
        pages: Box<dyn RecordPages>,
    ) -> Result<(Self, u64), ReplayError> {
        let mut replay = Replay::new(pages);
        let mut first_bad: Option<usize> = None;
        let mut valid_len = 0;
        let mut offset = 0;
        let mut line = Vec::new();
        for index in 0.. {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(ReplayError::Read)?;
            if read == 0 {
                break;
            }
            offset += read as u64;
            let complete = line.ends_with(b"\n");
            let text = std::str::from_utf8(&line).ok().map(str::trim);
            if text.is_some_and(str::is_empty) {
                continue;
            }
            match text.map(serde_json::from_str::<Event>) {
                Some(Ok(event)) if complete => {
                    if let Some(bad) = first_bad {
                        return Err(ReplayError::Damaged { line: bad + 1 });
                    }
                    replay.apply(event).map_err(ReplayError::Pages)?;
                    valid_len = offset;
                }
                _ => {
                    first_bad.get_or_insert(index);
                }
            }
        }
        Ok((replay, valid_len))
    }
}

/// Why a journal could not be replayed.
#[derive(Debug)]
pub enum ReplayError {
    Read(std::io::Error),
    /// The records' scratch pages could not be written or read back.
    Pages(std::io::Error),
    /// A bad line (1-based) with valid lines after it: not a crash-torn tail.
    Damaged {
        line: usize,
    },
}

/// Drops the unresolved create for this key.
fn forget_create(slot: &mut SlotMut<'_>, public_key_sha256: &str) {
    slot.rare_mut()
        .unresolved_creates
        .retain(|u| u.public_key_sha256 != public_key_sha256);
    slot.shrink();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    pub(crate) fn requested(serial: &str, key: &str) -> Event {
        Event::CreateRequested {
            serial: serial.into(),
            public_key_sha256: key.into(),
            at: datetime!(2026-11-23 20:00 UTC),
        }
    }

    fn created(serial: &str, key: &str, id: &str) -> Event {
        Event::Created {
            serial: serial.into(),
            public_key_sha256: key.into(),
            certificate_id: id.into(),
            certificate_arn: format!("arn:cert/{id}"),
            certificate_sha256: id.into(),
            not_after: datetime!(2049-12-31 23:59:59 UTC),
            at: datetime!(2026-11-23 20:00:01 UTC),
        }
    }

    fn record(replay: &Replay, serial: &str) -> DeviceRecord {
        replay.record(serial).unwrap().unwrap()
    }

    fn lines(events: &[Event]) -> Vec<String> {
        events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect()
    }

    fn replay(lines: Vec<String>) -> Result<Replay, String> {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        Replay::from_reader(text.as_bytes(), Box::<MemoryPages>::default())
            .map(|(replay, _)| replay)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn full_lifecycle_is_ready() {
        let replay = replay(lines(&[
            requested("A", "k1"),
            created("A", "k1", "c1"),
            Event::PolicyAttached {
                serial: "A".into(),
                certificate_id: "c1".into(),
            },
            Event::Packaged {
                serial: "A".into(),
                certificate_id: "c1".into(),
                bundle: "bundles/A.zip".into(),
                bundle_sha256: "x".into(),
            },
        ]))
        .unwrap();
        let a = replay.record("A").unwrap().unwrap();
        assert!(a.is_ready());
        assert!(a.unresolved_creates.is_empty());
    }

    #[test]
    fn request_without_result_is_unresolved() {
        let replay = replay(lines(&[requested("A", "k1")])).unwrap();
        assert_eq!(record(&replay, "A").unresolved_creates.len(), 1);
        assert!(!record(&replay, "A").is_ready());
    }

    #[test]
    fn retiring_clears_the_live_certificate() {
        let replay = replay(lines(&[
            requested("A", "k1"),
            created("A", "k1", "c1"),
            Event::Retired {
                serial: "A".into(),
                certificate_id: "c1".into(),
                reason: "r".into(),
            },
            requested("A", "k2"),
            created("A", "k2", "c2"),
        ]))
        .unwrap();
        let a = replay.record("A").unwrap().unwrap();
        assert_eq!(a.certificate.as_ref().unwrap().certificate_id, "c2");
        assert_eq!(a.retired, ["c1"]);
        assert!(replay.known_certificates().unwrap().contains("c1"));
    }

    #[test]
    fn events_about_a_replaced_certificate_change_nothing() {
        let replay = replay(lines(&[
            created("A", "k1", "c1"),
            created("A", "k2", "c2"),
            Event::PolicyAttached {
                serial: "A".into(),
                certificate_id: "c1".into(),
            },
            Event::StatusChanged {
                serial: "A".into(),
                certificate_id: "c1".into(),
                status: CertificateStatus::Revoked,
            },
            Event::StatusChanged {
                serial: "A".into(),
                certificate_id: "c2".into(),
                status: CertificateStatus::Other("QUARANTINED".into()),
            },
        ]))
        .unwrap();
        let cert = record(&replay, "A").certificate.unwrap();
        assert_eq!(cert.certificate_id, "c2");
        assert!(!cert.policy_attached);
        assert_eq!(
            cert.revoked_status,
            Some(CertificateStatus::Other("QUARANTINED".into()))
        );
        assert!(!replay.policy_attached("A") && !replay.is_ready("A"));
    }

    #[test]
    fn a_large_replay_reads_every_record_back() {
        let mut events = Vec::new();
        for n in 0..3000 {
            let serial = format!("SN{n:05}");
            let id = format!("c{n}");
            events.push(requested(&serial, &id));
            events.push(created(&serial, &id, &id));
            events.push(Event::PolicyAttached {
                serial: serial.clone(),
                certificate_id: id.clone(),
            });
            events.push(Event::Packaged {
                serial: serial.clone(),
                certificate_id: id,
                bundle: format!("bundles/{serial}.zip"),
                bundle_sha256: format!("b{n}"),
            });
        }
        let replay = replay(lines(&events)).unwrap();
        assert_eq!(replay.len(), 3000);
        assert_eq!(replay.unresolved_creates().count(), 0);
        for n in [0, 1234, 2999] {
            let serial = format!("SN{n:05}");
            assert!(replay.is_ready(&serial));
            let cert = record(&replay, &serial).certificate.unwrap();
            assert_eq!(cert.certificate_id, format!("c{n}"));
            assert_eq!(cert.bundle.unwrap().1, format!("b{n}"));
        }
    }

    #[test]
    fn torn_last_line_is_ignored_but_a_bad_middle_line_is_not() {
        let mut good = lines(&[requested("A", "k1")]);
        good.push("{\"event\":\"crea".into());
        assert!(replay(good.clone()).is_ok());
        good.push(serde_json::to_string(&requested("B", "k2")).unwrap());
        assert_eq!(replay(good).unwrap_err(), "Damaged { line: 2 }");
    }

    #[test]
    fn valid_prefix_excludes_a_torn_tail_with_or_without_newline_or_nuls() {
        let first = format!(
            "{}\n",
            serde_json::to_string(&requested("A", "k1")).unwrap()
        );
        for tail in [
            "{\"event\":\"cre",
            "{\"event\":\"cre\n",
            "\0\0\0\0",
            "\0\0\n\0",
        ] {
            let bytes = format!("{first}{tail}");
            let (replay, valid) =
                Replay::from_reader(bytes.as_bytes(), Box::<MemoryPages>::default()).unwrap();
            assert_eq!(valid, first.len() as u64, "{tail:?}");
            assert_eq!(record(&replay, "A").unresolved_creates.len(), 1);
        }
    }

    /// A journal as `claimfab` wrote it before statuses were typed: the shape of a real
    /// journal's lines, ids shortened. One line of each kind of event.
    const OLD_JOURNAL: &str = r#"{"event":"create_requested","serial":"A","public_key_sha256":"k1","at":"2026-11-25T22:53:40.776171038Z"}
{"event":"created","serial":"A","public_key_sha256":"k1","certificate_id":"c1","certificate_arn":"arn:aws:iot:us-east-1:123456789012:cert/c1","certificate_sha256":"c1","not_after":"2049-12-31T23:59:59Z","at":"2026-11-25T22:53:40.786171038Z"}
{"event":"policy_attached","serial":"A","certificate_id":"c1"}
{"event":"packaged","serial":"A","certificate_id":"c1","bundle":"bundles/A.zip","bundle_sha256":"b1"}
{"event":"status_requested","serial":"A","certificate_id":"c1","status":"REVOKED"}
{"event":"status_changed","serial":"A","certificate_id":"c1","status":"REVOKED"}
{"event":"policy_detached","serial":"A","certificate_id":"c1"}
{"event":"created","serial":"B","public_key_sha256":"k2","certificate_id":"c2","certificate_arn":"arn:aws:iot:us-east-1:123456789012:cert/c2","certificate_sha256":"c2","not_after":"2049-12-31T23:59:59Z","at":"2026-11-25T22:53:41Z"}
{"event":"status_changed","serial":"B","certificate_id":"c2","status":"INACTIVE"}
{"event":"created","serial":"C","public_key_sha256":"k3","certificate_id":"c3","certificate_arn":"arn:aws:iot:us-east-1:123456789012:cert/c3","certificate_sha256":"c3","not_after":"2049-12-31T23:59:59Z","at":"2026-11-25T22:53:42Z"}
{"event":"certificate_deleted","serial":"C","certificate_id":"c3"}
{"event":"retired","serial":"C","certificate_id":"c0","reason":"duplicate"}
{"event":"create_requested","serial":"D","public_key_sha256":"k4","at":"2026-11-25T22:53:43Z"}
{"event":"create_abandoned","serial":"D","public_key_sha256":"k4"}
{"event":"shared_packaged","serial":"E","certificate_id":"c5","bundle":"bundles/E.zip","bundle_sha256":"b5"}
"#;

    #[test]
    fn status_spellings_round_trip_as_aws_writes_them() {
        for spelling in [
            "ACTIVE",
            "INACTIVE",
            "REVOKED",
            "PENDING_TRANSFER",
            "REGISTER_INACTIVE",
            "PENDING_ACTIVATION",
            "SOME_FUTURE_STATUS",
        ] {
            let json = format!("\"{spelling}\"");
            let status: CertificateStatus = serde_json::from_str(&json).unwrap();
            assert_eq!(status.to_string(), spelling);
            assert_eq!(serde_json::to_string(&status).unwrap(), json);
        }
        assert_eq!(
            CertificateStatus::from("INACTIVE"),
            CertificateStatus::Inactive
        );
        assert_eq!(
            CertificateStatus::from("REVOKED"),
            CertificateStatus::Revoked
        );
        assert_eq!(
            CertificateStatus::from("revoked".to_string()),
            CertificateStatus::Other("revoked".into())
        );
    }

    #[test]
    fn an_old_journal_replays_and_its_lines_keep_their_shape() {
        for line in OLD_JOURNAL.lines() {
            let event: Event = serde_json::from_str(line).unwrap();
            assert_eq!(serde_json::to_string(&event).unwrap(), line);
        }
        let (replay, valid) =
            Replay::from_reader(OLD_JOURNAL.as_bytes(), Box::<MemoryPages>::default()).unwrap();
        assert_eq!(valid, OLD_JOURNAL.len() as u64);
        let status = |serial: &str| {
            DeviceRecord::manifest_status(replay.record(serial).unwrap().as_ref(), false)
        };
        let a = record(&replay, "A").certificate.unwrap();
        assert_eq!(a.revoked_status, Some(CertificateStatus::Revoked));
        assert!(!a.policy_attached && a.bundle.is_some());
        assert_eq!(status("A"), crate::core::manifest::DeviceStatus::Revoked);
        assert_eq!(status("B"), crate::core::manifest::DeviceStatus::Inactive);
        assert_eq!(status("C"), crate::core::manifest::DeviceStatus::Deleted);
        assert_eq!(record(&replay, "C").retired, ["c0"]);
        assert!(record(&replay, "D").unresolved_creates.is_empty());
        let e = record(&replay, "E").shared_bundle.unwrap();
        assert_eq!(
            (e.certificate_id.as_str(), e.bundle.as_str()),
            ("c5", "bundles/E.zip")
        );
    }
}
