//! The package stage back on the offline machine. First the carried certificate file is
//! read whole and checked against the batch ([`check_certificates`]): nothing is written
//! unless every line is a device of this batch, in batch order, once, whose certificate
//! carries exactly the key and subject of the device's CSR. Then the key store is read in
//! batch order beside the certificate file ([`Importer`]): each certificate is journaled as
//! `batch` would have (created, policy attached), its bundle written by the same packager,
//! in parallel chunks; a re-run skips what is already packaged.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rayon::prelude::*;

use super::csrs::CsrFile;
use crate::cloud::NewCertificate;
use crate::core::carried::{CarriedReader, CertificateLine, CertificatesHeader, Kind};
use crate::core::certificate::{check_issued_for, check_subject_kept, IssuedCertificate};
use crate::core::devices::{Device, DeviceList};
use crate::core::key_store::StoreReader;
use crate::core::keys::{public_key_fingerprint, ClaimKey, PreparedDevice};
use crate::core::ledger::Event;
use crate::error::UserError;
use crate::pipeline::state::{RunState, SCRATCH_FAILED};
use crate::pipeline::{Packager, RegisteredDevice};

/// Bundles written in parallel per step; bounds the keys in memory.
const CHUNK: usize = 1024;

/// One device's events to journal, and the device to package (None: nothing to write),
/// with whether the journal already names its bundle (lost since): such a bundle is written
/// durably on its own, since a torn file at a journaled name would be trusted.
type Planned = (Vec<Event>, Option<(RegisteredDevice, bool)>);

/// What a certificate file must answer: this batch, and this CSR file.
pub struct Expected<'a> {
    pub batch_id: &'a str,
    pub csrs_sha256: &'a str,
    pub region: &'a str,
    pub devices: &'a DeviceList,
    pub csrs: &'a CsrFile,
}

/// Reads the certificate file whole and checks it (see the module doc); returns how many
/// devices it has a certificate for, and its checksum.
pub fn check_certificates(path: &Path, expected: &Expected) -> Result<(u64, String), UserError> {
    let fail = |line: u64, problem: String| UserError::Carried {
        file: path.to_path_buf(),
        line,
        problem,
    };
    let (reader, header) = open(path).map_err(|(line, problem)| fail(line, problem))?;
    check_header(&header, expected).map_err(|problem| fail(1, problem))?;
    let mut next_position = 0;
    let (count, sha256) = reader
        .check_to_end::<CertificateLine>(|_, line| {
            let position = expected
                .devices
                .position(&line.serial)
                .ok_or_else(|| format!("{} is not a device of this batch", line.serial))?;
            if position < next_position {
                return Err(format!("{} comes out of batch order, or twice: the file was edited; carry the file `claimfab register` wrote", line.serial));
            }
            next_position = position + 1;
            check_line(&line, position, expected).map(drop)
        })
        .map_err(|e| fail(e.line, e.problem))?;
    Ok((count, sha256))
}

type Opened = (CarriedReader<BufReader<File>>, CertificatesHeader);

fn open(path: &Path) -> Result<Opened, (u64, String)> {
    let file =
        File::open(path).map_err(|e| (0, format!("cannot be read ({e}); check the path")))?;
    CarriedReader::open(BufReader::new(file), Kind::Certificates).map_err(|e| (e.line, e.problem))
}

fn check_header(header: &CertificatesHeader, expected: &Expected) -> Result<(), String> {
    if header.batch_id != expected.batch_id {
        return Err(format!(
            "is for batch {}, not this one ({}): carry the certificates.jsonl `claimfab register` wrote for this batch",
            header.batch_id, expected.batch_id
        ));
    }
    if header.csrs_sha256 != expected.csrs_sha256 {
        return Err(format!(
            "answers a CSR file (sha256 {}) other than this batch's csrs.jsonl ({}): its certificates are for keys this machine never made; revoke them from the online machine (`claimfab revoke DIR --all` on register's directory) and register this batch's csrs.jsonl",
            header.csrs_sha256, expected.csrs_sha256
        ));
    }
    Ok(())
}

/// One certificate line against its device's CSR line: the same thing name, a certificate
/// over the CSR's key with the CSR's subject, an ARN naming its id in the batch's region.
fn check_line(
    line: &CertificateLine,
    position: usize,
    expected: &Expected,
) -> Result<IssuedCertificate, String> {
    let serial = &line.serial;
    let (csr_line, csr) = expected
        .csrs
        .line(position, serial)
        .map_err(|e| format!("{e:#}"))?;
    if line.thing_name != csr_line.thing_name {
        return Err(format!(
            "{serial}: thing name {:?} is not the batch's {:?}",
            line.thing_name, csr_line.thing_name
        ));
    }
    let issued = check_issued_for(&line.certificate_pem, &csr.public_key_sha256)
        .map_err(|problem| format!("{serial}: {problem}"))?;
    check_subject_kept(&line.certificate_pem, &csr_line.csr)
        .map_err(|problem| format!("{serial}: the certificate {problem}"))?;
    let arn_ok = line
        .certificate_arn
        .starts_with(&format!("arn:aws:iot:{}:", expected.region))
        && line
            .certificate_arn
            .ends_with(&format!(":cert/{}", line.certificate_id));
    if !arn_ok || line.certificate_id.is_empty() {
        return Err(format!(
            "{serial}: ARN {:?} does not name certificate {:?} in {}",
            line.certificate_arn, line.certificate_id, expected.region
        ));
    }
    Ok(issued)
}

/// Journals and packages a checked certificate file with the keys of the key store.
pub struct Importer<'a> {
    pub expected: Expected<'a>,
    pub state: Arc<RunState>,
    pub packager: Arc<Packager>,
}

impl Importer<'_> {
    /// Reads the key store and the certificate file side by side, in batch order, and
    /// packages every device with a certificate whose bundle is not yet written.
    /// `checked_sha256` is the file's checksum as [`check_certificates`] read it.
    pub fn import(
        &self,
        certificates: &Path,
        checked_sha256: &str,
        mut store: StoreReader<impl Read>,
    ) -> Result<()> {
        let (mut reader, _) = open(certificates)
            .map_err(|(line, problem)| anyhow::anyhow!("line {line}: {problem}"))?;
        let mut next = reader.next_line::<CertificateLine>()?;
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut position = 0;
        while let Some((serial, key)) = store.next_key()? {
            if position == self.expected.devices.len() {
                anyhow::bail!("the key store holds more keys than the batch has devices ({serial} is extra): keys.age is from another run of prepare; restore this batch's");
            }
            let device = self.expected.devices.get(position);
            if device.serial != serial {
                anyhow::bail!("the key store holds {serial} where the batch has {}: keys.age is from another run of prepare; restore this batch's", device.serial);
            }
            position += 1;
            if next.as_ref().is_some_and(|line| line.serial == serial) {
                let line = next.take().expect("checked");
                next = reader.next_line::<CertificateLine>()?;
                chunk.push((device, line, key));
            }
            if chunk.len() == CHUNK {
                self.write(std::mem::take(&mut chunk))?;
            }
        }
        self.write(chunk)?;
        if let Some(line) = next {
            anyhow::bail!(
                "the key store has no key for {}: keys.age is cut short; restore this batch's",
                line.serial
            );
        }
        if reader.sha256() != Some(checked_sha256) {
            anyhow::bail!(
                "the certificate file changed while it was read; carry it again and re-run"
            );
        }
        Ok(())
    }

    /// What to journal for one device's certificate as `batch` would have (retiring another
    /// one the journal had for it), and the device to package unless its bundle is written.
    fn plan(&self, device: Device, line: CertificateLine, key: ClaimKey) -> Result<Planned> {
        // The first pass checked each certificate against its CSR; what is bundled is
        // checked against the key it is bundled with.
        let public_key_sha256 = public_key_fingerprint(&key.public_key_der());
        let issued = check_issued_for(&line.certificate_pem, &public_key_sha256).map_err(|_| {
            anyhow::anyhow!("the key store's key of {} is not the one its certificate carries: keys.age is from another run of prepare; restore this batch's", device.serial)
        })?;
        if line.thing_name != device.thing_name {
            anyhow::bail!(
                "{}: the certificate file changed while it was read; carry it again",
                device.serial
            );
        }
        let record = self.state.read(|state| state.record(&device.serial));
        let current = record.context(SCRATCH_FAILED)?.and_then(|r| r.certificate);
        if current
            .as_ref()
            .is_some_and(|c| c.revoked_status.is_some() || c.deleted)
        {
            return Ok((Vec::new(), None));
        }
        let serial = &device.serial;
        let mut events = Vec::new();
        let (policy_attached, bundle_missing, journaled) = match current {
            Some(current) if current.certificate_id == line.certificate_id => (
                current.policy_attached,
                self.packager.bundle_missing(&current),
                current.bundle.is_some(),
            ),
            other => {
                if let Some(other) = other {
                    events.push(Event::Retired {
                        serial: serial.clone(),
                        certificate_id: other.certificate_id,
                        reason: "replaced by another certificate registered for the device".into(),
                    });
                }
                events.push(Event::Created {
                    serial: serial.clone(),
                    public_key_sha256: public_key_sha256.clone(),
                    certificate_id: line.certificate_id.clone(),
                    certificate_arn: line.certificate_arn.clone(),
                    certificate_sha256: issued.sha256.clone(),
                    not_after: issued.not_after,
                    at: issued.not_before,
                });
                (false, true, false)
            }
        };
        if line.policy_attached && !policy_attached {
            events.push(Event::PolicyAttached {
                serial: serial.clone(),
                certificate_id: line.certificate_id.clone(),
            });
        }
        if !bundle_missing {
            return Ok((events, None));
        }
        let registered = RegisteredDevice {
            prepared: PreparedDevice {
                device,
                key,
                // Packaging needs the key and the certificate only.
                csr_pem: String::new(),
                public_key_sha256,
            },
            certificate: NewCertificate {
                certificate_id: line.certificate_id,
                certificate_arn: line.certificate_arn,
                certificate_pem: line.certificate_pem,
            },
            issued,
        };
        Ok((events, Some((registered, journaled))))
    }

    /// Journals a chunk's certificates (one fsync), writes their bundles in parallel
    /// without syncing each, syncs the filesystem once, then journals the bundles (one
    /// fsync): three waits on the disk per chunk instead of two or three per device. A
    /// crash before the last step leaves bundles unjournaled, which a re-run writes again.
    fn write(&self, chunk: Vec<(Device, CertificateLine, ClaimKey)>) -> Result<()> {
        let planned: Vec<Planned> = chunk
            .into_par_iter()
            .map(|(device, line, key)| self.plan(device, line, key))
            .collect::<Result<_>>()?;
        let (events, todo): (Vec<Vec<Event>>, Vec<_>) = planned.into_iter().unzip();
        self.state.record_all(events.concat())?;
        let (again, fresh): (Vec<_>, Vec<_>) = todo
            .into_iter()
            .flatten()
            .partition(|(_, journaled)| *journaled);
        again
            .into_par_iter()
            .try_for_each(|(registered, _)| self.packager.package(registered))?;
        let packaged: Vec<Event> = fresh
            .into_par_iter()
            .map(|(registered, _)| self.packager.write_unsynced(registered))
            .collect::<Result<_>>()?;
        if packaged.is_empty() {
            return Ok(());
        }
        self.packager.dir.sync_filesystem()?;
        let count = packaged.len() as u64;
        self.state.record_all(packaged)?;
        self.packager.bar.inc(count);
        Ok(())
    }
}
