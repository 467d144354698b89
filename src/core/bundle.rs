//! The per-device bundle: a zip whose entry paths mirror where each file lands on the device
//! (claim certificate, claim key, Amazon Root CA 1, Greengrass config). Built in memory; the
//! caller writes the bytes. Entries are stored uncompressed: no compressor buffer ever holds
//! a copy of the key, and no device pays for a compressor's set-up; the key carries mode 0600; the zip is written into one buffer sized for it
//! up front and never grown, so no copy of the key is left in freed memory.

use std::io::{Cursor, Seek, SeekFrom, Write};

use zeroize::Zeroizing;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::core::greengrass::ProvisioningTarget;

/// Amazon Root CA 1, the root AWS IoT's ATS endpoints chain to. Embedded so factories that are
/// offline never need to download it.
pub const AMAZON_ROOT_CA_1: &str = include_str!("AmazonRootCA1.pem");

/// One file of a bundle: its path on the device, its bytes and its Unix mode.
pub struct BundleEntry<'a> {
    pub device_path: &'a str,
    pub contents: &'a [u8],
    pub mode: u32,
}

/// The path inside the zip for a file that lands at `device_path` (leading `/` dropped).
pub fn zip_path(device_path: &str) -> &str {
    device_path.trim_start_matches('/')
}

/// Builds the zip bytes for one device. The returned buffer is wiped on drop, as it holds
/// the private key.
pub fn build_bundle(
    target: &ProvisioningTarget,
    thing_name: &str,
    certificate_pem: &str,
    private_key_pem: &str,
) -> Zeroizing<Vec<u8>> {
    let config = target.render_config(thing_name);
    let g = &target.greengrass;
    let entries = [
        BundleEntry {
            device_path: &g.claim_certificate_path,
            contents: certificate_pem.as_bytes(),
            mode: 0o644,
        },
        BundleEntry {
            device_path: &g.claim_private_key_path,
            contents: private_key_pem.as_bytes(),
            mode: 0o600,
        },
        BundleEntry {
            device_path: &g.root_ca_path,
            contents: AMAZON_ROOT_CA_1.as_bytes(),
            mode: 0o644,
        },
        BundleEntry {
            device_path: &g.config_path,
            contents: config.as_bytes(),
            mode: 0o644,
        },
    ];
    write_zip(&entries)
}

/// Reads the file that lands at `device_path` out of bundle zip bytes, as text, in a buffer
/// wiped on drop (it may be the key). None if the zip or the entry is unreadable.
pub fn read_entry(zip: &[u8], device_path: &str) -> Option<Zeroizing<String>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).ok()?;
    let mut entry = archive.by_name(zip_path(device_path)).ok()?;
    let mut text = Zeroizing::new(String::with_capacity(entry.size() as usize));
    std::io::Read::read_to_string(&mut entry, &mut text).ok()?;
    Some(text)
}

/// Unix file type bits of a zip entry's mode, and the type of a symbolic link.
const FILE_TYPE: u32 = 0o170_000;
const SYMLINK: u32 = 0o120_000;

/// Checks a zip entry's name before it is extracted under a device root: a relative path of
/// plain components (no `/` at the start, no `..` or `.`, no empty part, no backslash), and
/// no symbolic link. Returns its components.
pub fn entry_components(name: &str, unix_mode: Option<u32>) -> Result<Vec<&str>, String> {
    if unix_mode.is_some_and(|mode| mode & FILE_TYPE == SYMLINK) {
        return Err(format!("entry {name:?} is a symbolic link"));
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    let components: Vec<&str> = trimmed.split('/').collect();
    let bad = |c: &&str| c.is_empty() || *c == "." || *c == ".." || c.contains('\\');
    if name.starts_with('/') || components.iter().any(bad) {
        return Err(format!(
            "entry {name:?} is not a plain relative path (absolute, '..', '.', empty or '\\' part)"
        ));
    }
    Ok(components)
}

/// The mode a bundle file gets on the device image: 0600 for the claim key (its entry
/// allows no one else, or it holds a private key), 0644 for everything else.
pub fn extracted_mode(unix_mode: Option<u32>, contents: &[u8]) -> u32 {
    let private = unix_mode.is_some_and(|mode| mode & 0o077 == 0)
        || contents
            .windows(b"PRIVATE KEY-----".len())
            .any(|w| w == b"PRIVATE KEY-----");
    if private {
        0o600
    } else {
        0o644
    }
}

/// Room the zip of `entries` cannot outgrow: each file's bytes with deflate's worst-case
/// growth (5 bytes per 16 KiB block, far less than an eighth), its name twice (local and
/// central header) and headers with every extra field the zip crate may add, plus the end
/// records (zip64 included).
fn zip_capacity(entries: &[BundleEntry<'_>]) -> usize {
    const PER_ENTRY: usize = 512;
    const END_RECORDS: usize = 512;
    entries
        .iter()
        .map(|e| {
            let data = e.contents.len();
            data + data / 8 + 2 * zip_path(e.device_path).len() + PER_ENTRY
        })
        .sum::<usize>()
        + END_RECORDS
}

/// The bundle zip of `entries`, in a buffer wiped on drop. Should the size bound ever fall
/// short, the zip is written again into a buffer twice the size (the first one is wiped when
/// dropped) rather than let a buffer holding the key grow.
fn write_zip(entries: &[BundleEntry<'_>]) -> Zeroizing<Vec<u8>> {
    let mut capacity = zip_capacity(entries);
    loop {
        if let Some(zip) = write_zip_into(entries, capacity) {
            return zip;
        }
        capacity *= 2;
    }
}

/// The zip written into a buffer of exactly `capacity` bytes; `None` if it does not fit.
fn write_zip_into(entries: &[BundleEntry<'_>], capacity: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut buffer = Zeroizing::new(vec![0u8; capacity]);
    let mut out = FixedBuffer {
        bytes: &mut buffer[..],
        position: 0,
        end: 0,
        overflowed: false,
    };
    // Names are distinct device paths (the station file is checked) and the buffer never
    // refuses a write, so nothing here can fail.
    write_entries(&mut out, entries).expect("writing a bundle zip to memory cannot fail");
    if out.overflowed {
        return None;
    }
    let len = out.end;
    buffer.truncate(len);
    Some(buffer)
}

fn write_entries(
    out: &mut FixedBuffer<'_>,
    entries: &[BundleEntry<'_>],
) -> zip::result::ZipResult<()> {
    let mut zip = ZipWriter::new(out);
    for entry in entries {
        // Stored, every entry: four small text files gain a kilobyte or so from deflate,
        // which would cost a compressor's set-up per entry and per device.
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(entry.mode);
        zip.start_file(zip_path(entry.device_path), options)?;
        zip.write_all(entry.contents)?;
    }
    zip.finish()?;
    Ok(())
}

/// A writer into a slice that never grows: bytes past its end are dropped and the overflow
/// noted. It never fails a write, so the zip writer always finishes normally; a failed write
/// would leave it to finish again when dropped, complaining on standard error.
struct FixedBuffer<'a> {
    bytes: &'a mut [u8],
    position: usize,
    /// How far anything was written.
    end: usize,
    overflowed: bool,
}

impl Write for FixedBuffer<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let start = self.position.min(self.bytes.len());
        let fits = data.len().min(self.bytes.len() - start);
        self.bytes[start..start + fits].copy_from_slice(&data[..fits]);
        self.overflowed |= fits < data.len() || self.position > start;
        self.position += data.len();
        self.end = self.end.max(self.position);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for FixedBuffer<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let (base, offset) = match to {
            SeekFrom::Start(at) => (0, i128::from(at)),
            SeekFrom::Current(by) => (self.position, i128::from(by)),
            SeekFrom::End(by) => (self.end, i128::from(by)),
        };
        let at = usize::try_from(base as i128 + offset).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek out of range")
        })?;
        self.position = at;
        Ok(at as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::station_config::{GreengrassSection, Nucleus};
    use std::io::Read;

    fn target() -> ProvisioningTarget {
        ProvisioningTarget::example(GreengrassSection {
            nucleus: Nucleus::Java,
            ..GreengrassSection::default()
        })
    }

    #[test]
    fn bundle_mirrors_device_paths_with_modes() {
        let bytes = build_bundle(&target(), "gg-1", "CERT", "KEY");
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
        let mut names: Vec<String> = zip.file_names().map(|n| n.unwrap().to_string()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "greengrass/v2/AmazonRootCA1.pem",
                "greengrass/v2/claim-certs/claim.pem.crt",
                "greengrass/v2/claim-certs/claim.private.pem.key",
                "greengrass/v2/init-config/config.yaml",
            ]
        );
        let key = zip
            .by_name("greengrass/v2/claim-certs/claim.private.pem.key")
            .unwrap();
        assert_eq!(key.unix_mode().unwrap() & 0o777, 0o600);
        assert_eq!(key.compression(), CompressionMethod::Stored);
        drop(key);
        let mut ca = String::new();
        zip.by_name("greengrass/v2/AmazonRootCA1.pem")
            .unwrap()
            .read_to_string(&mut ca)
            .unwrap();
        assert_eq!(ca, AMAZON_ROOT_CA_1);
        assert_eq!(
            read_entry(&bytes, "/greengrass/v2/claim-certs/claim.private.pem.key").as_deref(),
            Some(&"KEY".to_string())
        );
        assert!(read_entry(&bytes, "/greengrass/v2/nothing").is_none());
        assert!(read_entry(b"not a zip", "/greengrass/v2/AmazonRootCA1.pem").is_none());
    }

    #[test]
    fn the_zip_is_written_into_one_buffer_sized_up_front() {
        // Incompressible contents and long paths: the worst case for the size bound.
        let mut noise = vec![0u8; 200_000];
        let mut x: u32 = 1;
        for b in &mut noise {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *b = (x >> 24) as u8;
        }
        let long = format!("/{}/claim.key", "d".repeat(1000));
        let entries = [
            BundleEntry {
                device_path: "/a/noise",
                contents: &noise,
                mode: 0o644,
            },
            BundleEntry {
                device_path: &long,
                contents: b"-----BEGIN PRIVATE KEY-----",
                mode: 0o600,
            },
        ];
        let zip = write_zip(&entries);
        assert_eq!(
            zip.capacity(),
            zip_capacity(&entries),
            "the first buffer was big enough, and was never grown"
        );
        let mut archive = zip::ZipArchive::new(Cursor::new(zip.to_vec())).unwrap();
        let mut read = Vec::new();
        archive
            .by_name("a/noise")
            .unwrap()
            .read_to_end(&mut read)
            .unwrap();
        assert_eq!(read, noise);
        // A bound that falls short is not a panic and not a grown buffer: a bigger one.
        assert!(write_zip_into(&entries, 1000).is_none());
        let bundle = build_bundle(&target(), "gg-1", "CERT", "KEY");
        assert!(bundle.capacity() >= bundle.len());
        assert!(
            bundle.capacity() < 16 * 1024,
            "a bundle's buffer stays small"
        );
    }

    #[test]
    fn same_inputs_same_bytes() {
        let a = build_bundle(&target(), "gg-1", "CERT", "KEY");
        let b = build_bundle(&target(), "gg-1", "CERT", "KEY");
        assert_eq!(*a, *b, "bundles are reproducible (fixed timestamps)");
    }

    #[test]
    fn entries_must_stay_under_the_root() {
        assert_eq!(
            entry_components("greengrass/v2/claim-certs/claim.pem.crt", Some(0o100644)).unwrap(),
            ["greengrass", "v2", "claim-certs", "claim.pem.crt"]
        );
        assert_eq!(
            entry_components("etc/greengrass/", None).unwrap(),
            ["etc", "greengrass"]
        );
        for bad in [
            "/etc/passwd",
            "../evil",
            "a/../../b",
            "a//b",
            "./a",
            "a\\..\\b",
            "",
            "/",
        ] {
            let err = entry_components(bad, None).unwrap_err();
            assert!(err.contains("not a plain relative path"), "{bad}: {err}");
        }
        let err = entry_components("greengrass/link", Some(0o120777)).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn the_key_is_extracted_for_its_owner_only() {
        assert_eq!(extracted_mode(Some(0o100600), b"KEY"), 0o600);
        assert_eq!(
            extracted_mode(Some(0o100644), b"-----BEGIN PRIVATE KEY-----"),
            0o600
        );
        assert_eq!(
            extracted_mode(None, b"-----BEGIN EC PRIVATE KEY-----"),
            0o600
        );
        assert_eq!(extracted_mode(Some(0o100755), b"config"), 0o644);
        assert_eq!(extracted_mode(None, b"-----BEGIN CERTIFICATE-----"), 0o644);
    }
}
