//! End-to-end tests of `claimfab verify` on a real batch: clean, then tampered, key-swapped
//! and stray bundles, each named in the report with a non-zero exit.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

/// Rewrites a bundle with `key` in place of its own claim key.
fn swap_key(bundle: &Path, key: &[u8]) {
    let files = unzip(bundle);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(bundle).unwrap());
    for (name, (bytes, mode)) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode & 0o777);
        zip.start_file(name.as_str(), options).unwrap();
        let contents = if name.ends_with("claim.private.pem.key") {
            key
        } else {
            &bytes
        };
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap();
}

fn verify(paths: &[&Path]) -> (i32, String, String) {
    run(claimfab_without_endpoint().arg("verify").args(paths))
}

#[test]
fn verify_passes_a_fresh_batch_and_names_every_tampered_bundle() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(6)).0, 0);
    let (code, stdout, _) = verify(&[&f.out]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(
        stdout.matches("\nok ").count() + usize::from(stdout.starts_with("ok ")),
        6,
        "{stdout}"
    );
    assert!(stdout.contains("6 checked, 0 with findings"), "{stdout}");

    let bundles = f.out.join("bundles");
    // Tampered: one byte changed in SN000001's zip.
    let first = bundles.join("SN000001.zip");
    let mut bytes = std::fs::read(&first).unwrap();
    let last = bytes.len() - 30;
    bytes[last] ^= 0x01;
    std::fs::write(&first, &bytes).unwrap();
    // Swapped key: SN000002 carries SN000003's key.
    let other_key = unzip(&bundles.join("SN000003.zip"))
        ["greengrass/v2/claim-certs/claim.private.pem.key"]
        .0
        .clone();
    swap_key(&bundles.join("SN000002.zip"), &other_key);
    // A stray bundle the manifest does not know.
    std::fs::copy(bundles.join("SN000004.zip"), bundles.join("EXTRA.zip")).unwrap();

    let (code, stdout, _) = verify(&[&f.out]);
    assert_eq!(code, 1, "{stdout}");
    let line = |serial: &str| {
        stdout
            .lines()
            .find(|l| l.contains(serial))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("SN000001").starts_with("FAILED") && line("SN000001").contains("sha256"),
        "{stdout}"
    );
    assert!(
        line("SN000002").contains("claim key does not match the claim certificate"),
        "{stdout}"
    );
    assert!(
        line("EXTRA.zip").contains("not in the manifest"),
        "{stdout}"
    );
    assert!(line("SN000005").starts_with("ok"), "{stdout}");
    assert!(stdout.contains("7 checked, 3 with findings"), "{stdout}");
    assert!(!stdout.contains("PRIVATE KEY"));

    // A loose zip is checked on its own.
    let (code, stdout, _) = verify(&[&bundles.join("SN000005.zip")]);
    assert_eq!(code, 0, "{stdout}");
    let (code, stdout, _) = verify(&[&bundles.join("SN000002.zip")]);
    assert_eq!(code, 1, "{stdout}");
}

#[test]
fn verify_refuses_a_path_that_is_neither() {
    let (code, _, stderr) = verify(&[Path::new("/nonexistent/batch")]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1);
    assert!(stderr.contains("/nonexistent/batch"), "{stderr}");
}
