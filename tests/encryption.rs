//! End-to-end tests of bundles encrypted at rest for their stations: `station-key` makes a
//! station's key pair, `batch --encrypt-to` seals every bundle to the stations, no file of
//! the batch directory holds a private key in the clear, each bundle opens (with the age
//! crate, independently of claimfab) with any of its stations' identities into a zip whose
//! key matches its certificate (openssl) and whose certificate is ACTIVE in AWS, and
//! `verify` checks encrypted batches with and without an identity; `rotate` keeps the
//! stations. Bad input (a bad recipient, a secret key passed as one, a shared claim, other
//! recipients on resume, a wrong identity) exits 2 with one line and changes nothing.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use common::*;

/// `claimfab station-key --out PATH`: the recipient it printed.
fn station_key(path: &Path) -> String {
    let (code, stdout, stderr) = run(claimfab_without_endpoint()
        .args(["station-key", "--out"])
        .arg(path));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "only the recipient: {stdout}");
    assert!(!stdout.contains("AGE-SECRET-KEY"), "no secret on stdout");
    let recipient = stdout.trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    recipient
}

/// The identity in a station's key file, read with the age crate.
fn identity(path: &Path) -> age::x25519::Identity {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap();
    age::x25519::Identity::from_str(line).unwrap()
}

/// The files of a zip in memory: name -> bytes.
fn unzip_bytes(zip: Vec<u8>) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().unwrap().to_string(), bytes)
        })
        .collect()
}

/// Decrypts a bundle with the age crate and checks, with openssl and x509-parser, that its
/// key is its certificate's and the certificate is the manifest row's.
fn check_opened(bundle: &[u8], identity: &age::x25519::Identity, row: &Row, scratch: &Path) {
    let zip = age::decrypt(identity, bundle).expect("opens with a station identity");
    let files = unzip_bytes(zip);
    let cert = &files["greengrass/v2/claim-certs/claim.pem.crt"];
    let key = &files["greengrass/v2/claim-certs/claim.private.pem.key"];
    assert!(key.starts_with(b"-----BEGIN PRIVATE KEY-----"));
    let (_, der) = x509_parser::pem::parse_x509_pem(cert).unwrap();
    assert_eq!(sha256_hex(&der.contents), row["certificate_sha256"]);
    assert_key_matches_certificate(scratch, &row["serial"], cert, key);
}

fn verify(dir: &Path, identity: Option<&Path>) -> (i32, String, String) {
    let mut cmd = claimfab_without_endpoint();
    cmd.arg("verify").arg(dir);
    if let Some(identity) = identity {
        cmd.arg("--identity").arg(identity);
    }
    run(&mut cmd)
}

#[test]
fn an_encrypted_batch_holds_no_key_in_the_clear_and_opens_with_its_stations() {
    let f = Fixture::new("");
    let work = f.work.path();
    let (a_key, b_key, c_key) = (work.join("a.key"), work.join("b.key"), work.join("c.key"));
    let a = station_key(&a_key);
    let b = station_key(&b_key);
    station_key(&c_key);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&a_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "identity file mode");
    let before = std::fs::read(&a_key).unwrap();
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .args(["station-key", "--out"])
        .arg(&a_key));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(&a_key).unwrap(), before, "never overwritten");

    // Station A by flag, station B from a recipients file.
    let recipients = work.join("recipients.txt");
    std::fs::write(&recipients, format!("# line two\n{b}\n")).unwrap();
    let (code, stdout, stderr) = run(f
        .batch(4)
        .args(["--encrypt-to", &a, "--encrypt-to-file"])
        .arg(&recipients));
    assert_eq!(code, 0, "{stdout}{stderr}");

    for (path, bytes) in files(&f.out) {
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY"),
            "{} holds a private key in the clear",
            path.display()
        );
    }
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.out.join("batch.json")).unwrap()).unwrap();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(spec["encrypt_to"], serde_json::json!(both));

    let rows = read_manifest(&f.out);
    let all = f.rt.block_on(f.endpoint.all_certificates());
    let scratch = tempfile::tempdir().unwrap();
    for row in &rows {
        assert_eq!(row["status"], "ready");
        assert_eq!(row["bundle"], format!("bundles/{}.zip.age", row["serial"]));
        let path = f.out.join(&row["bundle"]);
        let bundle = std::fs::read(&path).unwrap();
        assert_eq!(sha256_hex(&bundle), row["bundle_sha256"]);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        for key in [&a_key, &b_key] {
            check_opened(&bundle, &identity(key), row, scratch.path());
        }
        assert!(age::decrypt(&identity(&c_key), &bundle).is_err());
        assert_eq!(all[&row["certificate_id"]].0, "ACTIVE");
    }

    // The library call a station makes: its identity opens a bundle it takes.
    let station = claimfab::trust::age_files::StationIdentity::read(&b_key).unwrap();
    let opened = station
        .open_bundle(&f.out.join(&rows[0]["bundle"]))
        .unwrap();
    assert!(opened.starts_with(b"PK\x03\x04"), "a zip");

    verify_checks_encrypted_bundles(&f, &a_key, &c_key);
}

/// `verify` on the encrypted batch in `f.out`: in full with an identity, by fingerprint
/// without, refused with another station's identity; a changed bundle is found either way.
fn verify_checks_encrypted_bundles(f: &Fixture, identity: &Path, stranger: &Path) {
    let (code, stdout, stderr) = verify(&f.out, Some(identity));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 checked, 0 with findings"), "{stdout}");
    assert!(!stdout.contains("not checked"), "{stdout}");

    let (code, stdout, stderr) = verify(&f.out, None);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("4 checked, 0 with findings"), "{stdout}");
    assert!(
        stdout.contains(
            "4 encrypted bundle(s): SHA-256 checked against the manifest, contents not checked"
        ),
        "{stdout}"
    );

    let before = files(&f.out);
    let (code, stdout, stderr) = verify(&f.out, Some(stranger));
    assert_eq!(code, 2, "{stdout}{stderr}");
    let line = stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(
        line.contains("c.key") && line.contains(".zip.age"),
        "{line}"
    );
    assert!(line.contains("not encrypted to this identity"), "{line}");
    assert_eq!(files(&f.out), before, "nothing changed");

    let first = f.out.join("bundles/SN000001.zip.age");
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    for identity in [Some(identity), None] {
        let (code, stdout, _) = verify(&f.out, identity);
        assert_eq!(code, 1, "{stdout}");
        let line = stdout.lines().find(|l| l.contains("SN000001")).unwrap();
        assert!(
            line.starts_with("FAILED") && line.contains("sha256"),
            "{line}"
        );
        assert!(stdout.contains("4 checked, 1 with findings"), "{stdout}");
    }
}

#[test]
fn bad_recipients_shared_claims_and_other_recipients_are_refused_before_anything_changes() {
    let f = Fixture::new("");
    let key = f.work.path().join("station.key");
    let recipient = station_key(&key);
    let secret = std::fs::read_to_string(&key).unwrap();
    let secret = secret.lines().last().unwrap().to_string();
    let missing = f.work.path().join("missing.txt");
    let refused = |args: &[&str], needles: &[&str]| {
        let mut cmd = f.batch(2);
        let (code, stdout, stderr) = run(cmd.args(args));
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{stderr}");
        for needle in needles {
            assert!(line.contains(needle), "{line:?} should mention {needle:?}");
        }
        line.to_string()
    };
    refused(
        &["--encrypt-to", "age1notakey"],
        &["--encrypt-to", "age1notakey"],
    );
    // An unset variable's empty value must not quietly make plain bundles.
    refused(
        &["--encrypt-to", ""],
        &["--encrypt-to", "names no recipient"],
    );
    let line = refused(&["--encrypt-to", &secret], &["secret key"]);
    assert!(
        !line.contains(&secret[16..]),
        "a secret is never echoed: {line}"
    );
    refused(
        &["--encrypt-to-file", missing.to_str().unwrap()],
        &["missing.txt"],
    );
    refused(
        &["--claim-scope", "batch", "--encrypt-to", &recipient],
        &["--claim-scope", "--encrypt-to"],
    );
    assert!(!f.out.exists(), "nothing written");
    assert!(f.rt.block_on(f.endpoint.all_certificates()).is_empty());

    // A batch resumes only with the recipients it began with.
    let (code, stdout, stderr) = run(f.batch(2).args(["--encrypt-to", &recipient]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let before = files(&f.out);
    let other = station_key(&f.work.path().join("other.key"));
    refused(&["--encrypt-to", &other], &["encrypted to", &recipient]);
    refused(&[], &["encrypted to"]);
    assert_eq!(files(&f.out), before, "nothing changed");

    // A rotation's new bundles are encrypted to the same stations.
    let rotated = f.work.path().join("rotated");
    let (code, stdout, stderr) = run(f
        .endpoint
        .claimfab()
        .arg("rotate")
        .arg(&f.out)
        .arg("--out")
        .arg(&rotated)
        .arg("--station")
        .arg(&f.station));
    assert_eq!(code, 0, "{stdout}{stderr}");
    for row in read_manifest(&rotated) {
        assert!(row["bundle"].ends_with(".zip.age"), "{row:?}");
    }
    let (code, stdout, _) = verify(&rotated, Some(&key));
    assert_eq!(code, 0, "{stdout}");

    let (code, _, stderr) = verify(&f.out, Some(&missing));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("identity") && stderr.contains("missing.txt"),
        "{stderr}"
    );
}

/// Whether anything of the floor was written: claim markers or station files.
fn floor_touched(dir: &Path) -> bool {
    let entries = |sub: &str| {
        std::fs::read_dir(dir.join(sub))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    !entries("handout").is_empty()
        || entries("stations")
            .iter()
            .any(|name| name != "queue" && name != "queue.index" && name != "cursor")
}

#[test]
fn a_station_takes_an_encrypted_bundle_with_its_key_and_only_with_it() {
    use claimfab::core::station_config::{GreengrassSection, Nucleus};
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new("");
    let work = f.work.path();
    let (a_key, c_key) = (work.join("a.key"), work.join("c.key"));
    let a = station_key(&a_key);
    station_key(&c_key);
    let (code, stdout, stderr) = run(f.batch(3).args(["--encrypt-to", &a]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let image = work.join("image");
    std::fs::create_dir(&image).unwrap();
    let take = |identity: Option<&Path>| {
        let mut cmd = claimfab_without_endpoint();
        cmd.arg("take")
            .arg(&f.out)
            .args(["--station", "st1", "--to"])
            .arg(&image);
        if let Some(identity) = identity {
            cmd.arg("--identity").arg(identity);
        }
        run(&mut cmd)
    };
    for (identity, needle) in [(None, "--identity"), (Some(c_key.as_path()), "c.key")] {
        let (code, _, stderr) = take(identity);
        assert_eq!(code, 2, "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!floor_touched(&f.out), "a refused take changed the floor");
        assert_eq!(
            std::fs::read_dir(&image).unwrap().count(),
            0,
            "nothing extracted"
        );
    }
    let (code, stdout, stderr) = take(Some(&a_key));
    assert_eq!(code, 0, "{stderr}");
    let serial = stdout.split_whitespace().next().unwrap().to_string();
    let greengrass = GreengrassSection::defaults_for(Nucleus::Java);
    let under = |device_path: &str| image.join(device_path.trim_start_matches('/'));
    let key_file = under(&greengrass.claim_private_key_path);
    let cert_file = under(&greengrass.claim_certificate_path);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_key_matches_certificate(
        work,
        &serial,
        &std::fs::read(&cert_file).unwrap(),
        &std::fs::read(&key_file).unwrap(),
    );
    // `flashed` needs no key: the certificate id comes from the manifest.
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .arg("flashed")
        .arg(&f.out)
        .args(["--station", "st1", &serial]));
    assert_eq!(code, 0, "{stderr}");
    // `audit` brings the manifest up to date with the stations' records.
    let (code, stdout, stderr) = run(f.endpoint.claimfab().arg("audit").arg(&f.out));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("floor: 1 flashed, 0 spoiled, 0 at a station, 2 never handed out"),
        "{stdout}"
    );
    let row = read_manifest(&f.out)
        .into_iter()
        .find(|r| r["serial"] == serial)
        .unwrap();
    assert_eq!(row["status"], "flashed");
    let log = std::fs::read_to_string(f.out.join("stations/st1/log.csv")).unwrap();
    assert!(
        log.contains(&format!("{serial},{},flashed", row["certificate_id"])),
        "{log}"
    );
}
