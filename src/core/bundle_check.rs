//! Offline checks of one bundle, for flashing stations and auditors: its Greengrass config
//! names files the bundle holds, the key matches the certificate, the certificate is valid
//! now, the root CA is Amazon Root CA 1, and, against a manifest row, the fingerprints and
//! thing name agree. Pure: zip bytes and the time in, findings out.

use std::io::{Cursor, Read};

use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::core::bundle::{zip_path, AMAZON_ROOT_CA_1};
use crate::core::certificate::parse_certificate_pem;
use crate::core::greengrass::ProvisioningTarget;
use crate::core::keys::private_key_fingerprint;
use crate::core::manifest::ManifestRow;
use crate::core::station_config::{lite_reads_config_at, LITE_CONFIG_DIR, LITE_CONFIG_FILE};

/// What verifying one bundle found. No findings: the bundle is good to flash.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BundleCheck {
    pub thing_name: Option<String>,
    pub certificate_sha256: Option<String>,
    pub findings: Vec<String>,
}

/// The files a fleet-provisioning config points at.
struct ConfigPaths {
    certificate: String,
    private_key: String,
    root_ca: String,
    thing_name: Option<String>,
}

fn text(value: &Value, key: &str) -> Option<String> {
    // The Java plugin reads its keys case-insensitively.
    value.as_mapping()?.iter().find_map(|(k, v)| {
        k.as_str()
            .filter(|k| k.eq_ignore_ascii_case(key))
            .and_then(|_| v.as_str().map(String::from))
    })
}

/// Reads the fleet-provisioning settings of a Java-nucleus or nucleus-lite config.
fn config_paths(doc: &Value) -> Option<ConfigPaths> {
    let services = doc.get("services")?;
    if let Some(c) = services
        .get("aws.greengrass.FleetProvisioningByClaim")
        .and_then(|s| s.get("configuration"))
    {
        return Some(ConfigPaths {
            certificate: text(c, "claimCertificatePath")?,
            private_key: text(c, "claimCertificatePrivateKeyPath")?,
            root_ca: text(c, "rootCaPath")?,
            thing_name: c
                .get("templateParameters")
                .and_then(|p| text(p, "ThingName")),
        });
    }
    let c = services
        .get("aws.greengrass.fleet_provisioning")?
        .get("configuration")?;
    Some(ConfigPaths {
        certificate: text(c, "claimCertPath")?,
        private_key: text(c, "claimKeyPath")?,
        root_ca: text(c, "rootCaPath")?,
        thing_name: c.get("templateParams").and_then(|p| text(p, "ThingName")),
    })
}

/// Keys each runtime refuses to provision without (the Java plugin's required keys; those
/// nucleus lite's `fleet-provisioning` reads before it asks AWS for anything, and
/// `iotCredEndpoint`, which it reads only after AWS has made the device's certificate).
const JAVA_REQUIRED: [&str; 6] = [
    "provisioningTemplate",
    "claimCertificatePath",
    "claimCertificatePrivateKeyPath",
    "rootCaPath",
    "iotDataEndpoint",
    "rootPath",
];
const LITE_REQUIRED: [&str; 6] = [
    "claimCertPath",
    "claimKeyPath",
    "rootCaPath",
    "templateName",
    "iotDataEndpoint",
    "iotCredEndpoint",
];

/// Nucleus lite reads each config file into an 8 KiB buffer and silently cuts the rest.
const LITE_CONFIG_FILE_LIMIT: usize = 8192;

/// What the runtime would do wrong with the config at zip entry `entry`: the rules `batch`
/// applies when it writes configs, checked again offline.
fn config_rules(entry: &str, doc: &Value, size: usize) -> Vec<String> {
    let mut findings = Vec::new();
    let services = &doc["services"];
    let device_path = format!("/{entry}");
    if let Some(c) = services["aws.greengrass.FleetProvisioningByClaim"].get("configuration") {
        for key in JAVA_REQUIRED {
            if text(c, key).is_none() {
                findings.push(format!("Java config {device_path} lacks {key}: the nucleus would run without provisioning"));
            }
        }
        for old in ["certPath", "keyPath"] {
            if text(c, old).is_some() {
                findings.push(format!("Java config {device_path} uses {old}, a name the plugin ignores since 2025 (certificatePath/privateKeyPath)"));
            }
        }
        return findings;
    }
    let c = &services["aws.greengrass.fleet_provisioning"]["configuration"];
    if !lite_reads_config_at(&device_path) {
        findings.push(format!("nucleus lite never reads a config at {device_path} (only {LITE_CONFIG_FILE} and files in {LITE_CONFIG_DIR}/)"));
    }
    if size > LITE_CONFIG_FILE_LIMIT {
        findings.push(format!("lite config {device_path} is {size} bytes; nucleus lite reads only the first {LITE_CONFIG_FILE_LIMIT}"));
    }
    // Lite's keys are case-sensitive and its readers take strings only.
    for key in LITE_REQUIRED {
        if c.get(key).and_then(Value::as_str).is_none() {
            findings.push(format!(
                "lite config {device_path} lacks {key} as a string: fleet-provisioning would fail"
            ));
        }
    }
    if !c.get("templateParams").is_some_and(Value::is_mapping) {
        findings.push(format!(
            "lite config {device_path}: templateParams must be a map"
        ));
    }
    if doc["system"]
        .get("certificateFilePath")
        .is_some_and(|v| v.as_str() != Some(""))
    {
        findings.push(format!("lite config {device_path} sets system.certificateFilePath: fleet-provisioning would skip provisioning"));
    }
    findings
}

/// The largest file a bundle holds is its config, a few KiB; anything past this is not one.
pub const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// Checks one bundle zip. `expected` is its manifest row, when there is a manifest.
pub fn check_bundle(
    zip: &[u8],
    expected: Option<&ManifestRow>,
    now: OffsetDateTime,
) -> BundleCheck {
    check_stored_bundle(zip, Some(zip), expected, now)
}

/// Checks one bundle as stored: `file` is its bytes on disk (what the manifest's sha256 is
/// over), `zip` the zip they hold: the same bytes, or what a sealed file decrypted to, or
/// `None` when it could not be opened (then only the sha256 is checked).
pub fn check_stored_bundle(
    file: &[u8],
    zip: Option<&[u8]>,
    expected: Option<&ManifestRow>,
    now: OffsetDateTime,
) -> BundleCheck {
    let mut check = zip.map_or_else(BundleCheck::default, |zip| check_contents(zip, now));
    if let Some(row) = expected {
        check_against_row(file, row, &mut check);
    }
    check
}

/// Checks that the bundle's Greengrass config is the one the batch renders for `thing_name`
/// (compared as YAML values, so formatting does not matter): the same endpoints, template,
/// region, role alias, file paths and parameters, and nothing else. A bundle made by a
/// claimfab that still sent the thing group as a `ThingGroupName` parameter passes: that
/// parameter is now the template's, and the template ignores it.
pub fn check_batch_config(
    zip: &[u8],
    target: &ProvisioningTarget,
    thing_name: &str,
) -> Result<(), String> {
    let path = &target.greengrass.config_path;
    let mut bundle = BundleReader::new(zip).map_err(|e| format!("not a readable zip ({e})"))?;
    let text = bundle
        .read(zip_path(path))
        .ok_or_else(|| format!("has no Greengrass config at {path}"))?;
    let mut found: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("has a config at {path} that is not YAML ({e})"))?;
    for (service, parameters) in [
        (
            "aws.greengrass.FleetProvisioningByClaim",
            "templateParameters",
        ),
        ("aws.greengrass.fleet_provisioning", "templateParams"),
    ] {
        let legacy = found
            .get_mut("services")
            .and_then(|s| s.get_mut(service))
            .and_then(|s| s.get_mut("configuration"))
            .and_then(|c| c.get_mut(parameters))
            .and_then(Value::as_mapping_mut);
        if let Some(parameters) = legacy {
            parameters.remove("ThingGroupName");
        }
    }
    let expected: Value = serde_yaml_ng::from_str(&target.render_config(thing_name))
        .expect("a rendered config parses");
    if found != expected {
        return Err(format!(
            "has a config at {path} that is not the batch's for {thing_name} (endpoints, template, region, paths or parameters differ, or keys were added)"
        ));
    }
    Ok(())
}

/// The bundle's own checks: config, files, key, certificate, root CA.
fn check_contents(zip: &[u8], now: OffsetDateTime) -> BundleCheck {
    let mut check = BundleCheck::default();
    let mut bundle = match BundleReader::new(zip) {
        Ok(bundle) => bundle,
        Err(e) => {
            check.findings.push(format!("not a readable zip ({e})"));
            return check;
        }
    };
    let Some(paths) = bundle.config(&mut check.findings) else {
        check.findings.extend(bundle.oversized_findings());
        check
            .findings
            .push("no Greengrass config with fleet-provisioning settings in the bundle".into());
        return check;
    };
    check.thing_name = paths.thing_name.clone();
    let mut file = |what: &str, path: &str, findings: &mut Vec<String>| {
        let found = bundle.read(zip_path(path));
        if found.is_none() {
            findings.push(format!(
                "the config names {what} {path} but the bundle has no such file"
            ));
        }
        found
    };
    let certificate = file(
        "the claim certificate",
        &paths.certificate,
        &mut check.findings,
    );
    let key = file("the claim key", &paths.private_key, &mut check.findings);
    let root = file("the root CA", &paths.root_ca, &mut check.findings);
    check.findings.extend(bundle.oversized_findings());
    if let Some(pem) = &certificate {
        check_certificate(pem, key.as_deref().map(|k| k.as_str()), now, &mut check);
    }
    if root.is_some_and(|root| !is_amazon_root_ca_1(&root)) {
        check
            .findings
            .push("root CA is not Amazon Root CA 1".into());
    }
    check
}

/// A bundle's zip, read entry by entry with a size limit.
struct BundleReader<'a> {
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// Entries that were over [`MAX_ENTRY_BYTES`] and were not read.
    oversized: Vec<String>,
}

impl<'a> BundleReader<'a> {
    fn new(zip: &'a [u8]) -> zip::result::ZipResult<Self> {
        Ok(Self {
            archive: zip::ZipArchive::new(Cursor::new(zip))?,
            oversized: Vec::new(),
        })
    }

    /// One entry as text, wiped on drop. Sizes in zip headers are the sender's word: at
    /// most the limit is read, whatever they say, so a hostile zip cannot inflate into
    /// memory.
    fn read(&mut self, name: &str) -> Option<Zeroizing<String>> {
        let entry = self.archive.by_name(name).ok()?;
        let mut text = Zeroizing::new(String::new());
        entry
            .take(MAX_ENTRY_BYTES + 1)
            .read_to_string(&mut text)
            .ok()?;
        if text.len() as u64 > MAX_ENTRY_BYTES {
            self.oversized.push(name.to_string());
            return None;
        }
        Some(text)
    }

    /// The first config with fleet-provisioning settings, with the runtime's rules applied
    /// to it (their findings go to `findings`).
    fn config(&mut self, findings: &mut Vec<String>) -> Option<ConfigPaths> {
        let names: Vec<String> = self
            .archive
            .file_names()
            .filter_map(|n| n.ok().map(|n| n.to_string()))
            .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.contains("config.d/"))
            .collect();
        names.iter().find_map(|n| {
            let text = self.read(n)?;
            let doc: Value = serde_yaml_ng::from_str(&text).ok()?;
            let paths = config_paths(&doc)?;
            findings.extend(config_rules(n, &doc, text.len()));
            Some(paths)
        })
    }

    fn oversized_findings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.oversized)
            .into_iter()
            .map(|n| format!("entry {n} is over {MAX_ENTRY_BYTES} bytes: not a claimfab bundle"))
            .collect()
    }
}

/// The claim certificate is valid now, and the claim key is its key.
fn check_certificate(pem: &str, key: Option<&str>, now: OffsetDateTime, check: &mut BundleCheck) {
    let cert = match parse_certificate_pem(pem) {
        Ok(cert) => cert,
        Err(e) => {
            check.findings.push(format!("claim certificate: {e}"));
            return;
        }
    };
    check.certificate_sha256 = Some(cert.sha256.clone());
    if cert.not_after <= now {
        check.findings.push(format!(
            "claim certificate expired on {}",
            cert.not_after.date()
        ));
    } else if cert.not_before > now {
        check.findings.push(format!(
            "claim certificate is not valid before {}",
            cert.not_before
        ));
    }
    match key.map(private_key_fingerprint) {
        None => {}
        Some(None) => check
            .findings
            .push("claim key is not a PKCS#8 P-256 or P-384 private key".into()),
        Some(Some(fingerprint)) if fingerprint != cert.public_key_sha256 => check
            .findings
            .push("claim key does not match the claim certificate".into()),
        Some(Some(_)) => {}
    }
}

fn is_amazon_root_ca_1(pem: &str) -> bool {
    let amazon = parse_certificate_pem(AMAZON_ROOT_CA_1)
        .expect("embedded CA parses")
        .sha256;
    parse_certificate_pem(pem).map(|c| c.sha256) == Ok(amazon)
}

/// The bundle file, its certificate and its thing name are the ones its manifest row names.
fn check_against_row(file: &[u8], row: &ManifestRow, check: &mut BundleCheck) {
    if hex::encode(Sha256::digest(file)) != row.bundle_sha256 {
        check
            .findings
            .push("bundle sha256 differs from the manifest (changed since it was made)".into());
    }
    if check
        .certificate_sha256
        .as_deref()
        .is_some_and(|c| c != row.certificate_sha256)
    {
        check
            .findings
            .push("claim certificate differs from the manifest's".into());
    }
    if let Some(thing) = check.thing_name.as_deref().filter(|t| *t != row.thing_name) {
        let finding = format!(
            "config's ThingName {thing:?} differs from the manifest's {:?}",
            row.thing_name
        );
        check.findings.push(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::bundle::build_bundle;
    use crate::core::devices::Device;
    use crate::core::greengrass::ProvisioningTarget;
    use crate::core::keys::prepare_device;
    use crate::core::station_config::{GreengrassSection, KeyAlgorithm, Nucleus};

    fn target(nucleus: Nucleus) -> ProvisioningTarget {
        ProvisioningTarget {
            region: "us-east-1".into(),
            iot_data_endpoint: "a-ats.iot.us-east-1.amazonaws.com".into(),
            iot_credential_endpoint: "a.credentials.iot.us-east-1.amazonaws.com".into(),
            role_alias: "Alias".into(),
            template: "Template".into(),
            thing_group: None,
            greengrass: GreengrassSection::defaults_for(nucleus),
        }
    }

    /// A self-signed certificate over the device's key stands in for AWS's.
    fn certificate_for(prepared: &crate::core::keys::PreparedDevice, days: i64) -> String {
        let mut params = rcgen::CertificateParams::default();
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
        params.not_after = OffsetDateTime::now_utc() + time::Duration::days(days);
        params.serial_number = Some(rcgen::SerialNumber::from(vec![1, 2, 3]));
        params.self_signed(&prepared.key).unwrap().pem()
    }

    fn bundle(days: i64, nucleus: Nucleus) -> (Vec<u8>, String) {
        let device = Device {
            serial: "S1".into(),
            thing_name: "gg-S1".into(),
        };
        let prepared = prepare_device(device, KeyAlgorithm::P256);
        let cert = certificate_for(&prepared, days);
        let zip = build_bundle(&target(nucleus), "gg-S1", &cert, &prepared.key.pkcs8_pem());
        (zip.to_vec(), cert)
    }

    #[test]
    fn a_good_bundle_has_no_findings_for_both_nuclei() {
        for nucleus in [Nucleus::Java, Nucleus::Lite] {
            let (zip, _) = bundle(30, nucleus);
            let check = check_bundle(&zip, None, OffsetDateTime::now_utc());
            assert_eq!(check.findings, Vec::<String>::new(), "{nucleus:?}");
            assert_eq!(check.thing_name.as_deref(), Some("gg-S1"));
        }
    }

    /// The bundle with its config replaced by `config`.
    fn with_config(zip: &[u8], target: &ProvisioningTarget, config: &str) -> Vec<u8> {
        use std::io::Write;
        let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let config_entry = zip_path(&target.greengrass.config_path).to_string();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let name = entry.name().unwrap().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if name == config_entry {
                bytes = config.as_bytes().to_vec();
            }
            out.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            out.write_all(&bytes).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn a_bundles_config_must_be_the_batchs() {
        for nucleus in [Nucleus::Java, Nucleus::Lite] {
            let t = target(nucleus);
            let (zip, _) = bundle(30, nucleus);
            check_batch_config(&zip, &t, "gg-S1").unwrap();
            assert!(
                check_batch_config(&zip, &t, "gg-S2").is_err(),
                "another device's"
            );
            let mut foreign = t.clone();
            foreign.iot_data_endpoint = "evil-ats.iot.us-east-1.amazonaws.com".into();
            let e = check_batch_config(&zip, &foreign, "gg-S1").unwrap_err();
            assert!(e.contains("not the batch's"), "{e}");
            // A key added to the batch's own config is refused too.
            let added = format!("{}extra: 1\n", t.render_config("gg-S1"));
            let tampered = with_config(&zip, &t, &added);
            assert!(check_batch_config(&tampered, &t, "gg-S1").is_err());
            // An older claimfab's ThingGroupName parameter passes.
            let mut grouped: Value = serde_yaml_ng::from_str(&t.render_config("gg-S1")).unwrap();
            let params = match nucleus {
                Nucleus::Java => {
                    &mut grouped["services"]["aws.greengrass.FleetProvisioningByClaim"]
                        ["configuration"]["templateParameters"]
                }
                Nucleus::Lite => {
                    &mut grouped["services"]["aws.greengrass.fleet_provisioning"]["configuration"]
                        ["templateParams"]
                }
            };
            params["ThingGroupName"] = Value::from("LineOne");
            let old = with_config(&zip, &t, &serde_yaml_ng::to_string(&grouped).unwrap());
            check_batch_config(&old, &t, "gg-S1").unwrap();
        }
    }

    #[test]
    fn config_rules_catch_what_the_runtime_would_refuse_or_ignore() {
        let yaml = |text: &str| -> Value { serde_yaml_ng::from_str(text).unwrap() };
        // A lite config where lite never reads one, claiming a device certificate already.
        let lite = target(Nucleus::Lite).render_config("gg-1");
        let mut doc = yaml(&lite);
        assert_eq!(
            config_rules("etc/greengrass/config.d/claimfab.yaml", &doc, lite.len()),
            Vec::<String>::new()
        );
        let found = config_rules("greengrass/v2/init-config/config.yaml", &doc, lite.len());
        assert!(
            found[0].contains("never reads a config at /greengrass/v2/init-config/config.yaml"),
            "{found:?}"
        );
        doc["system"]["certificateFilePath"] = Value::from("/var/lib/greengrass/device.pem");
        doc["services"]["aws.greengrass.fleet_provisioning"]["configuration"]["templateParams"] =
            Value::from("x");
        let found = config_rules("etc/greengrass/config.yaml", &doc, 9000);
        assert_eq!(found.len(), 3, "{found:?}");
        // A Java config without a required key and with a pre-2025 name.
        let java = target(Nucleus::Java).render_config("gg-1");
        let mut doc = yaml(&java);
        let c = &mut doc["services"]["aws.greengrass.FleetProvisioningByClaim"]["configuration"];
        c.as_mapping_mut().unwrap().remove("rootPath");
        c["certPath"] = Value::from("/x");
        let found = config_rules("greengrass/v2/init-config/config.yaml", &doc, java.len());
        assert!(
            found.iter().any(|f| f.contains("lacks rootPath")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|f| f.contains("uses certPath")),
            "{found:?}"
        );
    }

    #[test]
    fn a_swapped_key_is_found() {
        let device = Device {
            serial: "S1".into(),
            thing_name: "gg-S1".into(),
        };
        let owner = prepare_device(device.clone(), KeyAlgorithm::P256);
        let other = prepare_device(device, KeyAlgorithm::P256);
        let zip = build_bundle(
            &target(Nucleus::Java),
            "gg-S1",
            &certificate_for(&owner, 30),
            &other.key.pkcs8_pem(),
        );
        let check = check_bundle(&zip, None, OffsetDateTime::now_utc());
        assert_eq!(
            check.findings,
            ["claim key does not match the claim certificate"]
        );
    }

    #[test]
    fn expiry_tampering_and_manifest_mismatch_are_found() {
        let (zip, _) = bundle(30, Nucleus::Java);
        let later = OffsetDateTime::now_utc() + time::Duration::days(31);
        assert!(check_bundle(&zip, None, later).findings[0].contains("expired"));

        let mut tampered = zip.clone();
        let at = tampered.len() / 2;
        tampered[at] ^= 0xff;
        assert!(!check_bundle(&tampered, None, OffsetDateTime::now_utc())
            .findings
            .is_empty());

        let row = ManifestRow {
            certificate_sha256: "00".repeat(32),
            bundle: "bundles/S1.zip".into(),
            bundle_sha256: "11".repeat(32),
            ..ManifestRow::new("S1", "gg-OTHER", crate::core::manifest::DeviceStatus::Ready)
        };
        let findings = check_bundle(&zip, Some(&row), OffsetDateTime::now_utc()).findings;
        assert_eq!(findings.len(), 3, "{findings:?}");
    }

    #[test]
    fn a_stored_bundle_is_fingerprinted_as_stored_and_checked_as_opened() {
        let (zip, cert) = bundle(30, Nucleus::Java);
        let stored = b"age-encryption.org/v1\n...the zip, encrypted...".to_vec();
        let row = ManifestRow {
            certificate_sha256: parse_certificate_pem(&cert).unwrap().sha256,
            bundle: "bundles/S1.zip.age".into(),
            bundle_sha256: hex::encode(Sha256::digest(&stored)),
            ..ManifestRow::new("S1", "gg-S1", crate::core::manifest::DeviceStatus::Ready)
        };
        let now = OffsetDateTime::now_utc();
        let opened = check_stored_bundle(&stored, Some(&zip), Some(&row), now);
        assert_eq!(opened.findings, Vec::<String>::new());
        assert_eq!(opened.thing_name.as_deref(), Some("gg-S1"));
        // Not opened: the fingerprint alone, which still catches a changed file.
        assert!(check_stored_bundle(&stored, None, Some(&row), now)
            .findings
            .is_empty());
        let mut changed = stored.clone();
        changed.push(b'!');
        let findings = check_stored_bundle(&changed, None, Some(&row), now).findings;
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].contains("sha256 differs"), "{findings:?}");
    }

    #[test]
    fn an_entry_that_inflates_past_the_limit_is_not_read_whole() {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("greengrass/v2/init-config/config.yaml", options)
            .unwrap();
        let block = vec![b' '; 1 << 20];
        for _ in 0..8 {
            zip.write_all(&block).unwrap();
        }
        let bytes = zip.finish().unwrap().into_inner();
        assert!(
            bytes.len() < 64 * 1024,
            "a small zip that inflates to 8 MiB"
        );
        let check = check_bundle(&bytes, None, OffsetDateTime::now_utc());
        assert!(
            check.findings[0].contains("is over 1048576 bytes"),
            "{:?}",
            check.findings
        );
    }

    #[test]
    fn garbage_is_not_a_zip() {
        let check = check_bundle(b"hello", None, OffsetDateTime::now_utc());
        assert!(check.findings[0].starts_with("not a readable zip"));
    }
}
