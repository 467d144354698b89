//! Delivery against hostile zips and images: links, absolute and dotted paths, duplicate
//! and hidden entries, oversized files, files in the way, stale temporaries, modes.

use super::extract::{is_temp_name, write_files};
use super::*;
use crate::core::bundle::build_bundle;
use crate::core::greengrass::ProvisioningTarget;
use crate::core::station_config::Nucleus;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const KEY: &str = "greengrass/v2/claim-certs/claim.private.pem.key";
const CERT: &str = "greengrass/v2/claim-certs/claim.pem.crt";
const CA: &str = "greengrass/v2/AmazonRootCA1.pem";
const CONFIG: &str = "greengrass/v2/init-config/config.yaml";

fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut zip = zip::ZipWriter::new(Cursor::new(&mut buffer));
    for (name, contents, mode) in entries {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(*mode);
        if name.ends_with('/') {
            zip.add_directory(*name, options).unwrap();
        } else {
            zip.start_file(*name, options).unwrap();
            zip.write_all(contents).unwrap();
        }
    }
    zip.finish().unwrap();
    buffer
}

fn target(nucleus: Nucleus) -> ProvisioningTarget {
    ProvisioningTarget::example(GreengrassSection::defaults_for(nucleus))
}

fn java_layout() -> BundleLayout {
    BundleLayout::new(&GreengrassSection::defaults_for(Nucleus::Java)).unwrap()
}

/// A Java bundle's four files, at their modes, plus `extra`, minus `without`.
fn bundle_with(extra: &[(&str, &[u8], u32)], without: &str) -> Vec<u8> {
    let mut entries: Vec<(&str, &[u8], u32)> = vec![
        (CERT, b"-----BEGIN CERTIFICATE-----", 0o644),
        (KEY, b"-----BEGIN PRIVATE KEY-----", 0o600),
        (CA, b"CA", 0o644),
        (CONFIG, b"services: {}", 0o644),
    ];
    entries.retain(|(name, _, _)| *name != without);
    entries.extend_from_slice(extra);
    zip_of(&entries)
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn files_land_under_the_root_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("image");
    let zip = zip_of(&[
        ("gg/claim.key", b"-----BEGIN PRIVATE KEY-----", 0o600),
        ("gg/ca.pem", b"CA", 0o644),
    ]);
    check_entries(&zip, &Target::Root(root.clone())).unwrap();
    extract(&zip, &root).unwrap();
    assert_eq!(mode(&root.join("gg/claim.key")), 0o600);
    assert_eq!(mode(&root.join("gg/ca.pem")), 0o644);
    assert_eq!(mode(&root.join("gg")), 0o755);
    assert_eq!(fs::read(root.join("gg/ca.pem")).unwrap(), b"CA");
    extract(&zip, &root).unwrap();
    assert_eq!(
        names_in(&root.join("gg")).len(),
        2,
        "a second delivery replaces, leaves no temporary file"
    );
}

#[test]
fn nothing_goes_outside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("image");
    for name in ["../evil", "/etc/evil", "gg/../../evil"] {
        let zip = zip_of(&[(name, b"x", 0o644)]);
        let err = check_entries(&zip, &Target::Stdout).unwrap_err();
        assert!(err.contains("not a plain relative path"), "{name}: {err}");
        assert!(extract(&zip, &root).is_err());
    }
    fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("gg")).unwrap();
    let zip = zip_of(&[("gg/evil", b"x", 0o644)]);
    let err = check_entries(&zip, &Target::Root(root.clone())).unwrap_err();
    assert!(err.contains("is a link or a file"), "{err}");
    assert!(extract(&zip, &root).is_err());
    assert!(!dir.path().join("evil").exists());
    assert!(check_entries(b"not a zip", &Target::Stdout).is_err());
}

#[test]
fn the_target_is_checked_before_anything() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        check_target_with(Path::new("-"), false).unwrap(),
        Target::Stdout
    );
    assert!(check_target(&dir.path().join("new")).is_ok());
    assert!(!dir.path().join("new").exists(), "nothing created");
    let err = check_target(&dir.path().join("no/such/dir")).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    fs::write(dir.path().join("file"), "x").unwrap();
    let err = check_target(&dir.path().join("file")).unwrap_err();
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn a_key_is_not_written_to_a_terminal() {
    let err = check_target_with(Path::new("-"), true).unwrap_err();
    assert_eq!(
        err,
        "writes a claim key; redirect standard output to the flasher or a file"
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(
        check_target_with(dir.path(), true).is_ok(),
        "only - is refused"
    );
}

#[test]
fn the_layout_is_what_build_bundle_writes() {
    for nucleus in [Nucleus::Java, Nucleus::Lite] {
        let target = target(nucleus);
        let layout = BundleLayout::new(&target.greengrass).unwrap();
        let zip = build_bundle(&target, "gg-1", "CERT", "-----BEGIN PRIVATE KEY-----");
        let mut archive = ZipArchive::new(Cursor::new(&zip[..])).unwrap();
        let mut written: Vec<(String, u32)> = (0..archive.len())
            .map(|i| {
                let entry = archive.by_index(i).unwrap();
                (
                    entry.name().unwrap().into_owned(),
                    entry.unix_mode().unwrap() & 0o7777,
                )
            })
            .collect();
        written.sort();
        let mut expected = layout.entries().to_vec();
        expected.sort();
        assert_eq!(written, expected, "{nucleus:?}");
        check_expected(&zip, &Target::Stdout, &layout).unwrap();
        let dir = tempfile::tempdir().unwrap();
        extract_expected(&zip, dir.path(), &layout).unwrap();
        for (name, want) in layout.entries() {
            assert_eq!(mode(&dir.path().join(name)), *want, "{name}");
        }
    }
    assert_eq!(
        java_layout().to_string(),
        format!("the batch's bundles hold exactly: {CERT} (0644), {KEY} (0600), {CA} (0644), {CONFIG} (0644)")
    );
}

#[test]
fn a_file_the_layout_does_not_name_is_refused_before_anything_is_written() {
    let layout = java_layout();
    for extra in [
        "etc/ld.so.preload",
        "root/.ssh/authorized_keys",
        "etc/passwd",
        "greengrass/v2/extra.pem",
    ] {
        let zip = bundle_with(&[(extra, b"/tmp/evil.so", 0o644)], "");
        let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
        assert!(
            err.contains(&format!("entry {extra:?} does not belong in a bundle")),
            "{err}"
        );
        assert!(
            err.contains(
                "the batch's bundles hold exactly: greengrass/v2/claim-certs/claim.pem.crt (0644)"
            ),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("image");
        let err = extract_expected(&zip, &root, &layout)
            .unwrap_err()
            .to_string();
        assert!(err.contains(extra), "{err}");
        assert!(!root.exists(), "nothing written for {extra}");
    }
}

#[test]
fn a_missing_file_is_refused() {
    let layout = java_layout();
    for missing in [CERT, KEY, CA, CONFIG] {
        let zip = bundle_with(&[], missing);
        let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "has no entry {missing:?}; the batch's bundles hold exactly"
            )),
            "{err}"
        );
    }
}

#[test]
fn only_the_files_own_directories_may_have_entries() {
    let layout = java_layout();
    let parents = bundle_with(
        &[
            ("greengrass/", b"", 0o755),
            ("greengrass/v2/claim-certs/", b"", 0o755),
        ],
        "",
    );
    check_expected(&parents, &Target::Stdout, &layout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    extract_expected(&parents, dir.path(), &layout).unwrap();
    for other in [
        "etc/",
        "greengrass/v2/claim-certs/extra/",
        "greengrass/v2/claim-certs/claim.pem.crt.d/",
    ] {
        let zip = bundle_with(&[(other, b"", 0o755)], "");
        let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
        assert!(
            err.contains(&format!("entry {other:?} does not belong")),
            "{err}"
        );
    }
}

#[test]
fn a_key_others_may_read_is_refused() {
    let layout = java_layout();
    let zip = zip_of(&[
        (CERT, b"C", 0o644),
        (KEY, b"K", 0o644),
        (CA, b"CA", 0o644),
        (CONFIG, b"x", 0o644),
    ]);
    let err = check_expected(&zip, &Target::Stdout, &layout).unwrap_err();
    assert!(
        err.contains(&format!(
            "entry {KEY:?} has mode 100644, not a plain file of mode 0600"
        )),
        "{err}"
    );
    let zip_ca_exec = zip_of(&[
        (CERT, b"C", 0o644),
        (KEY, b"K", 0o600),
        (CA, b"CA", 0o755),
        (CONFIG, b"x", 0o644),
    ]);
    let err = check_expected(&zip_ca_exec, &Target::Stdout, &layout).unwrap_err();
    assert!(err.contains("not a plain file of mode 0644"), "{err}");
}

#[test]
fn a_layout_from_a_tampered_batch_json_is_refused() {
    let mut g = GreengrassSection::defaults_for(Nucleus::Java);
    g.config_path = "/greengrass/../etc/ld.so.preload".into();
    let err = BundleLayout::new(&g).unwrap_err();
    assert!(err.contains("target.greengrass.config_path"), "{err}");
    let mut g = GreengrassSection::defaults_for(Nucleus::Java);
    g.root_ca_path = g.claim_certificate_path.clone();
    assert!(BundleLayout::new(&g)
        .unwrap_err()
        .contains("two bundle files"));
    let mut g = GreengrassSection::defaults_for(Nucleus::Java);
    g.root_ca_path = format!("{}/ca.pem", g.claim_certificate_path);
    assert!(BundleLayout::new(&g)
        .unwrap_err()
        .contains("two bundle files"));
}

#[test]
fn a_name_twice_or_a_file_that_is_a_directory_is_refused() {
    // Two entries under one name: one the checks read, one a flasher may extract.
    let mut zip = zip_of(&[("gg/x1", b"good", 0o644), ("gg/x2", b"evil", 0o644)]);
    while let Some(at) = zip.windows(5).position(|w| w == b"gg/x2") {
        zip[at..at + 5].copy_from_slice(b"gg/x1");
    }
    let err = check_entries(&zip, &Target::Stdout).unwrap_err();
    assert!(err.contains("not a consistent zip"), "{err}");
    let zip = zip_of(&[("a/b", b"file", 0o644), ("a/b/c", b"under it", 0o644)]);
    let err = check_entries(&zip, &Target::Stdout).unwrap_err();
    assert!(
        err.contains("entry \"a/b\" is both a file and a directory"),
        "{err}"
    );
    let many: Vec<(String, &[u8], u32)> = (0..=MAX_ENTRIES)
        .map(|i| (format!("f{i}"), &b"x"[..], 0o644))
        .collect();
    let many: Vec<(&str, &[u8], u32)> = many.iter().map(|(n, c, m)| (n.as_str(), *c, *m)).collect();
    let err = check_entries(&zip_of(&many), &Target::Stdout).unwrap_err();
    assert!(err.contains("more than the 32 a bundle can"), "{err}");
}

/// What a crash in the middle of an earlier extraction leaves: a temporary file holding
/// the previous board's key, beside where the key goes.
#[test]
fn temporaries_a_crash_left_are_swept_before_extracting() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("greengrass/v2/claim-certs");
    fs::create_dir_all(&certs).unwrap();
    let stale = [".claimfab-tmp-4242-0", ".claimfab-tmp-1-7", ".tmp-Ab12Cd"];
    for name in &stale {
        fs::write(
            certs.join(name),
            "-----BEGIN PRIVATE KEY----- previous board",
        )
        .unwrap();
    }
    let bystanders = [".tmp-toolong1", ".tmpAb12Cd", "notes.txt"];
    for name in bystanders {
        fs::write(certs.join(name), "not ours").unwrap();
    }
    fs::create_dir(certs.join(".claimfab-tmp-dir")).unwrap();
    extract_expected(&bundle_with(&[], ""), dir.path(), &java_layout()).unwrap();
    let left = names_in(&certs);
    for name in &stale {
        assert!(!left.contains(*name), "{name} swept: {left:?}");
    }
    for name in bystanders.iter().chain(&[
        ".claimfab-tmp-dir",
        "claim.pem.crt",
        "claim.private.pem.key",
    ]) {
        assert!(left.contains(*name), "{name} kept: {left:?}");
    }
    assert_eq!(
        fs::read(certs.join("claim.private.pem.key")).unwrap(),
        b"-----BEGIN PRIVATE KEY-----"
    );
    // extract, which knows no layout, sweeps as well.
    fs::write(certs.join(".claimfab-tmp-9-9"), "key").unwrap();
    extract(&bundle_with(&[], ""), dir.path()).unwrap();
    assert!(!certs.join(".claimfab-tmp-9-9").exists());
}

#[test]
fn an_entry_that_cannot_be_read_leaves_no_temporary_and_replaces_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("gg")).unwrap();
    fs::write(dir.path().join("gg/a"), "previous").unwrap();
    let mut zip = zip_of(&[
        ("gg/a", b"-----BEGIN PRIVATE KEY-----", 0o600),
        ("gg/b", b"SOMETHING-STORED", 0o644),
    ]);
    // Corrupt the stored data of the last entry: its checksum no longer matches.
    let at = zip
        .windows(16)
        .position(|w| w == b"SOMETHING-STORED")
        .unwrap();
    zip[at] = b'X';
    let err = extract(&zip, dir.path()).unwrap_err().to_string();
    assert!(err.contains("cannot read bundle entry gg/b"), "{err}");
    assert!(
        err.contains("this take's temporary files are removed; nothing under --to was replaced"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    assert_eq!(
        names_in(&dir.path().join("gg")),
        BTreeSet::from(["a".to_string()])
    );
    assert_eq!(fs::read(dir.path().join("gg/a")).unwrap(), b"previous");
}

#[test]
fn a_rename_that_fails_part_way_names_what_was_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let gg = dir.path().join("gg");
    // A directory appeared where the second file goes, after the checks.
    fs::create_dir_all(gg.join("b")).unwrap();
    fs::write(gg.join("b/inside"), "x").unwrap();
    let zip = zip_of(&[
        ("gg/a", b"A", 0o644),
        ("gg/b", b"-----BEGIN PRIVATE KEY-----", 0o600),
    ]);
    let err = write_files(&zip, dir.path(), &|_, _, _| 0o600)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("cannot put {} in place", gg.join("b").display())),
        "{err}"
    );
    assert!(
        err.ends_with(&format!(
            "this take's temporary files are removed; already replaced: {}",
            gg.join("a").display()
        )),
        "{err}"
    );
    assert_eq!(
        names_in(&gg),
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}

#[test]
fn temporary_names_are_recognised() {
    for name in [".claimfab-tmp-1-0", ".claimfab-tmp-", ".tmp-abcDE1"] {
        assert!(is_temp_name(name), "{name}");
    }
    for name in [
        ".tmp-abc",
        ".tmp-abcdefg",
        ".tmp-abc.de",
        "claim.pem.crt",
        ".tmpabcdef",
        "x.claimfab-tmp-1",
    ] {
        assert!(!is_temp_name(name), "{name}");
    }
}
