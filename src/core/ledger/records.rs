//! How the replayed ledger holds every device's record in little memory whatever the
//! batch's size: each serial interned once in one string, a small fixed-size [`Slot`] per
//! device, and the bulky parts that never change once written (certificate id, ARN,
//! fingerprints, dates; bundle name and fingerprint) appended as pages to a
//! [`RecordPages`]: an unlinked scratch file in the shell, a byte vector in tests. A record
//! is put back together ([`DeviceRecord`]) only when it is read.

use std::collections::HashMap;
use std::io;
use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::core::interned::Interner;

use super::{CertificateRecord, CertificateStatus, DeviceRecord, SharedBundle, UnresolvedCreate};

/// Append-only storage for the pages of the records. Pages are written once and read back
/// by the position `append` returned.
pub trait RecordPages: Send {
    /// Stores `bytes`; returns where they start.
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64>;
    /// Reads back the `len` bytes stored at `at`.
    fn read(&self, at: u64, len: usize) -> io::Result<Vec<u8>>;
}

/// Pages in memory: for tests and small replays.
#[derive(Default)]
pub struct MemoryPages(Vec<u8>);

impl RecordPages for MemoryPages {
    fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        let at = self.0.len() as u64;
        self.0.extend_from_slice(bytes);
        Ok(at)
    }

    fn read(&self, at: u64, len: usize) -> io::Result<Vec<u8>> {
        usize::try_from(at)
            .ok()
            .and_then(|at| self.0.get(at..at.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no such record page"))
    }
}

/// Where a page is: its start in the low 40 bits (a terabyte), its length in the high 24
/// (pages are a few hundred bytes; never zero, so `Option<PageRef>` is one word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRef(NonZeroU64);

const START_BITS: u32 = 40;

impl PageRef {
    fn new(at: u64, len: usize) -> io::Result<Self> {
        let fits = at < (1 << START_BITS) && (1..1 << (64 - START_BITS)).contains(&len);
        let packed = NonZeroU64::new(at | ((len as u64) << START_BITS)).filter(|_| fits);
        packed
            .map(Self)
            .ok_or_else(|| io::Error::other("record page out of range"))
    }

    fn at(self) -> u64 {
        self.0.get() & ((1 << START_BITS) - 1)
    }

    fn len(self) -> usize {
        (self.0.get() >> START_BITS) as usize
    }
}

/// The unchanging part of a device's certificate record, as paged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CertificatePage {
    pub certificate_id: String,
    pub certificate_arn: String,
    pub certificate_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub public_key_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A bundle written for a certificate, as paged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundlePage {
    pub certificate_id: String,
    pub bundle: String,
    pub bundle_sha256: String,
}

/// What only a few devices have: creates without an answer, retired certificates, a
/// status this build does not know.
#[derive(Debug, Default)]
pub struct Rare {
    pub unresolved_creates: Vec<UnresolvedCreate>,
    pub retired: Vec<String>,
    pub other_status: Option<String>,
}

/// One device's record in memory: three words and three bytes (its rare parts, if any, are
/// in [`Store`]'s map beside the slots).
#[derive(Debug, Default)]
pub struct Slot {
    /// The live certificate's page.
    pub certificate: Option<PageRef>,
    /// The live certificate's bundle.
    pub bundle: Option<PageRef>,
    /// Batch claim scope: the device's bundle holding the shared certificate.
    pub shared_bundle: Option<PageRef>,
    pub policy_attached: bool,
    pub deleted: bool,
    /// Set by `claimfab revoke`: 0 none, else 1 + the index in [`CertificateStatus::KNOWN`],
    /// or [`OTHER_STATUS`] with the spelling in the rare part.
    pub revoked: u8,
}

const OTHER_STATUS: u8 = u8::MAX;

impl Slot {
    /// Ready to flash, read from the slot alone: certificate with policy and bundle, not
    /// revoked.
    pub fn is_ready(&self) -> bool {
        self.certificate.is_some()
            && self.policy_attached
            && self.bundle.is_some()
            && self.revoked == 0
            && !self.deleted
    }
}

/// A device's slot open for change, with its rare part.
pub struct SlotMut<'a> {
    pub slot: &'a mut Slot,
    index: u32,
    rare: &'a mut HashMap<u32, Rare>,
}

impl SlotMut<'_> {
    pub fn rare_mut(&mut self) -> &mut Rare {
        self.rare.entry(self.index).or_default()
    }

    /// Gives back the rare part's memory once it holds nothing.
    pub fn shrink(&mut self) {
        if self.rare.get(&self.index).is_some_and(|r| {
            r.unresolved_creates.is_empty() && r.retired.is_empty() && r.other_status.is_none()
        }) {
            self.rare.remove(&self.index);
        }
    }

    pub fn set_revoked(&mut self, status: Option<CertificateStatus>) {
        self.slot.revoked = match status {
            None => 0,
            Some(CertificateStatus::Other(spelling)) => {
                self.rare_mut().other_status = Some(spelling);
                OTHER_STATUS
            }
            Some(known) => {
                let index = CertificateStatus::KNOWN.iter().position(|k| *k == known);
                index.map_or(0, |i| i as u8 + 1)
            }
        };
    }

    /// A new live certificate: nothing about the old one carries over.
    pub fn replace_certificate(&mut self, certificate: Option<PageRef>) {
        self.slot.certificate = certificate;
        self.slot.bundle = None;
        self.slot.policy_attached = false;
        self.slot.deleted = false;
        self.set_revoked(None);
        if let Some(rare) = self.rare.get_mut(&self.index) {
            rare.other_status = None;
        }
        self.shrink();
    }
}

/// The pages and the slots' serials; reads and writes pages as JSON.
pub struct Store {
    serials: Interner,
    slots: Vec<Slot>,
    /// The rare parts, by slot number: the few devices that have one.
    rare: HashMap<u32, Rare>,
    pages: Box<dyn RecordPages>,
}

impl Store {
    pub fn new(pages: Box<dyn RecordPages>) -> Self {
        Self {
            serials: Interner::default(),
            slots: Vec::new(),
            rare: HashMap::new(),
            pages,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slot(&self, serial: &str) -> Option<&Slot> {
        self.serials.find(serial).map(|i| &self.slots[i])
    }

    /// The device's slot, made if it has none.
    pub fn slot_mut(&mut self, serial: &str) -> io::Result<SlotMut<'_>> {
        let (index, new) = self.serials.intern(serial).map_err(io::Error::other)?;
        if new {
            self.slots.push(Slot::default());
        }
        Ok(SlotMut {
            slot: &mut self.slots[index],
            // The interner numbers names in a u32.
            index: index as u32,
            rare: &mut self.rare,
        })
    }

    /// Every device's serial and slot, in the order they first appeared.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Slot)> {
        (0..self.slots.len()).map(|i| (self.serials.name(i), &self.slots[i]))
    }

    /// The devices that have a rare part, with it, in no particular order.
    pub fn rare(&self) -> impl Iterator<Item = (&str, &Rare)> {
        self.rare
            .iter()
            .map(|(&i, rare)| (self.serials.name(i as usize), rare))
    }

    /// The device's record, put back together, if the journal names it.
    pub fn record_of(&self, serial: &str) -> io::Result<Option<DeviceRecord>> {
        self.serials
            .find(serial)
            .map(|i| self.record(i as u32))
            .transpose()
    }

    fn revoked_status(&self, index: u32) -> Option<CertificateStatus> {
        match self.slots[index as usize].revoked {
            0 => None,
            OTHER_STATUS => self
                .rare
                .get(&index)
                .and_then(|r| r.other_status.clone())
                .map(CertificateStatus::Other),
            n => CertificateStatus::KNOWN.get(n as usize - 1).cloned(),
        }
    }

    pub fn write<T: Serialize>(&mut self, page: &T) -> io::Result<PageRef> {
        let bytes = serde_json::to_vec(page).map_err(io::Error::other)?;
        let at = self.pages.append(&bytes)?;
        PageRef::new(at, bytes.len())
    }

    pub fn read<T: for<'de> Deserialize<'de>>(&self, page: PageRef) -> io::Result<T> {
        let bytes = self.pages.read(page.at(), page.len())?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The live certificate's id, read from its page.
    pub fn certificate_id(&self, slot: &Slot) -> io::Result<Option<String>> {
        slot.certificate
            .map(|page| self.read::<CertificatePage>(page).map(|c| c.certificate_id))
            .transpose()
    }

    /// The record of slot `index`, put back together from its pages.
    fn record(&self, index: u32) -> io::Result<DeviceRecord> {
        let slot = &self.slots[index as usize];
        let certificate = match slot.certificate {
            None => None,
            Some(page) => Some(Box::new(self.certificate(index, page)?)),
        };
        let shared_bundle = match slot.shared_bundle {
            None => None,
            Some(page) => {
                let b: BundlePage = self.read(page)?;
                Some(Box::new(SharedBundle {
                    certificate_id: b.certificate_id,
                    bundle: b.bundle,
                    bundle_sha256: b.bundle_sha256,
                }))
            }
        };
        let rare = self.rare.get(&index);
        Ok(DeviceRecord {
            unresolved_creates: rare
                .map(|r| r.unresolved_creates.clone())
                .unwrap_or_default(),
            certificate,
            retired: rare.map(|r| r.retired.clone()).unwrap_or_default(),
            shared_bundle,
        })
    }

    fn certificate(&self, index: u32, page: PageRef) -> io::Result<CertificateRecord> {
        let slot = &self.slots[index as usize];
        let c: CertificatePage = self.read(page)?;
        let bundle = match slot.bundle {
            None => None,
            Some(page) => self
                .read::<BundlePage>(page)
                .map(|b| Some((b.bundle, b.bundle_sha256)))?,
        };
        Ok(CertificateRecord {
            certificate_id: c.certificate_id,
            certificate_arn: c.certificate_arn,
            certificate_sha256: c.certificate_sha256,
            not_after: c.not_after,
            public_key_sha256: c.public_key_sha256,
            created_at: c.created_at,
            policy_attached: slot.policy_attached,
            bundle,
            revoked_status: self.revoked_status(index),
            deleted: slot.deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_refs_pack_start_and_length_and_refuse_what_does_not_fit() {
        let page = PageRef::new(123_456_789, 300).unwrap();
        assert_eq!((page.at(), page.len()), (123_456_789, 300));
        assert!(PageRef::new(1 << START_BITS, 1).is_err());
        assert!(PageRef::new(0, 0).is_err());
        assert!(PageRef::new(0, 1 << 24).is_err());
        assert_eq!(std::mem::size_of::<Option<PageRef>>(), 8);
    }

    #[test]
    fn memory_pages_refuse_a_read_past_the_end() {
        let mut pages = MemoryPages::default();
        let at = pages.append(b"abc").unwrap();
        assert_eq!(pages.read(at, 3).unwrap(), b"abc");
        assert!(pages.read(at, 4).is_err());
        assert!(pages.read(u64::MAX, 1).is_err());
    }

    #[test]
    fn a_slot_stays_small() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }
}
