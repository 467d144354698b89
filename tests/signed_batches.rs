//! Signed batches against whoever can write the shared drive: a batch made with a
//! batch-signing key, taken by a station that pins its public key in its own station file.
//! Each test performs an attack or an accident on the share (a bundle copied over another,
//! a bundle re-signed by another key, `batch.json` edited, a batch without signatures, a
//! config pointing elsewhere) and checks that no board gets a bundle the key did not vouch
//! for: refused with one line (exit 2) when asked for by serial, passed over when taking the
//! next. Checked on the files themselves (claim markers, station logs, what lands under
//! `--to`), not only on claimfab's output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use claimfab::core::signing::{BatchSigner, BundleRecord};
use common::{read_manifest, run, Fixture};

/// A signed batch of `count` devices, the key's file and its public key.
struct Signed {
    fx: Fixture,
    key_file: PathBuf,
    public: String,
}

fn signed_batch(count: usize) -> Signed {
    let fx = Fixture::new("");
    let key_file = fx.work.path().join("batch-signing.key");
    let (code, public, stderr) = run(common::claimfab_without_endpoint()
        .arg("batch-key")
        .arg("--out")
        .arg(&key_file));
    assert_eq!(code, 0, "{stderr}");
    let public = public.trim().to_string();
    let (code, _, stderr) = run(fx.batch(count).arg("--sign-with").arg(&key_file));
    assert_eq!(code, 0, "{stderr}");
    Signed {
        fx,
        key_file,
        public,
    }
}

impl Signed {
    fn dir(&self) -> &Path {
        &self.fx.out
    }

    /// A station file pinning `keys`.
    fn station_file(&self, id: &str, keys: &[&str]) -> PathBuf {
        let path = self.fx.work.path().join(format!("{id}.toml"));
        let keys: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
        std::fs::write(
            &path,
            format!(
                "[station]\nid = \"{id}\"\nbatch_keys = [{}]\n",
                keys.join(", ")
            ),
        )
        .unwrap();
        path
    }

    /// `claimfab take DIR --station-config FILE --to TO [extra]` for a station pinning the
    /// batch's key.
    fn take(&self, id: &str, to: &Path, extra: &[&str]) -> Command {
        let file = self.station_file(id, &[&self.public]);
        let mut cmd = common::claimfab_without_endpoint();
        cmd.arg("take")
            .arg(self.dir())
            .arg("--station-config")
            .arg(file)
            .arg("--to")
            .arg(to)
            .args(extra);
        cmd
    }

    fn bundle(&self, serial: &str) -> PathBuf {
        self.dir().join(format!("bundles/{serial}.zip"))
    }

    fn signature(&self, serial: &str) -> PathBuf {
        self.dir().join(format!("bundles/{serial}.sig"))
    }
}

/// A refused take: exit 2, one line naming the serial and `reason`, no marker, nothing under
/// `to`.
fn assert_refused(signed: &Signed, serial: &str, reason: &str) {
    let to = signed.fx.work.path().join(format!("refused-{serial}"));
    let (code, stdout, stderr) = run(&mut signed.take("st1", &to, &["--serial", serial]));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(serial) && errors[0].contains(reason),
        "{stderr}"
    );
    assert!(
        !signed.dir().join("handout").join(serial).exists(),
        "not claimed"
    );
    assert!(!to.exists(), "nothing extracted");
}

#[test]
fn a_signed_batch_is_taken_by_a_station_pinning_its_key() {
    let signed = signed_batch(2);
    assert!(
        signed.public.starts_with("claimfab-ed25519:"),
        "{}",
        signed.public
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&signed.key_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // What the stations rely on is signed; the key is not in the batch directory.
    assert!(signed.dir().join("batch.json.sig").is_file());
    for row in read_manifest(signed.dir()) {
        let sig = std::fs::read_to_string(signed.signature(&row["serial"])).unwrap();
        assert!(sig.contains(&row["certificate_id"]) && sig.contains(&row["bundle_sha256"]));
    }
    let key_pem = std::fs::read_to_string(&signed.key_file).unwrap();
    for entry in walk(signed.dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(key_pem.lines().nth(1).unwrap()),
            "{} holds the signing key",
            entry.display()
        );
    }
    let to = signed.fx.work.path().join("image");
    let (code, stdout, stderr) = run(&mut signed.take("st1", &to, &[]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("SN000001 gg-SN000001"), "{stdout}");
    assert!(
        !stderr.contains("warning"),
        "a pinned key: no warning: {stderr}"
    );
    // A station that pins no key takes it, and says the signatures went unchecked.
    let to = signed.fx.work.path().join("image2");
    let mut take = common::claimfab_without_endpoint();
    take.arg("take")
        .arg(signed.dir())
        .args(["--station", "st9", "--to"])
        .arg(&to);
    let (code, _, stderr) = run(&mut take);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains(&signed.public),
        "{stderr}"
    );
}

#[test]
fn a_bundle_copied_over_another_is_refused() {
    let signed = signed_batch(3);
    // By mistake or on purpose: SN2's bundle over SN3's.
    std::fs::copy(signed.bundle("SN000002"), signed.bundle("SN000003")).unwrap();
    assert_refused(&signed, "SN000003", "not the file the batch signed");
    // And its signature too: it vouches for SN000002, not SN000003.
    std::fs::copy(signed.signature("SN000002"), signed.signature("SN000003")).unwrap();
    assert_refused(&signed, "SN000003", "vouches for SN000002");
    // Taking the next passes over SN000003 and hands out the good ones only.
    let mut got = Vec::new();
    for n in 0..3 {
        let to = signed.fx.work.path().join(format!("next-{n}"));
        let (code, stdout, stderr) = run(&mut signed.take("st2", &to, &[]));
        if code == 3 {
            assert!(stderr.contains("skipping SN000003"), "{stderr}");
            break;
        }
        assert_eq!(code, 0, "{stderr}");
        got.push(stdout.split_whitespace().next().unwrap().to_string());
        let (code, _, stderr) = run(common::claimfab_without_endpoint()
            .arg("flashed")
            .arg(signed.dir())
            .args(["--station", "st2", &got[n]]));
        assert_eq!(code, 0, "{stderr}");
    }
    assert_eq!(got, ["SN000001", "SN000002"]);
}

#[test]
fn a_bundle_resigned_by_another_key_is_refused() {
    let signed = signed_batch(2);
    // A share writer with a key of their own signs SN2's record for SN1's slot.
    let forger = BatchSigner::generate();
    let record: BundleRecord = {
        let text = std::fs::read_to_string(signed.signature("SN000002")).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(file["record"].clone()).unwrap()
    };
    let forged = BundleRecord {
        serial: "SN000001".into(),
        bundle: "bundles/SN000001.zip".into(),
        ..record
    };
    std::fs::copy(signed.bundle("SN000002"), signed.bundle("SN000001")).unwrap();
    std::fs::write(signed.signature("SN000001"), forger.sign_bundle(&forged)).unwrap();
    assert_refused(&signed, "SN000001", "does not trust");
}

#[test]
fn an_edited_batch_json_or_an_unsigned_batch_is_refused() {
    let signed = signed_batch(1);
    let batch_json = signed.dir().join("batch.json");
    let original = std::fs::read_to_string(&batch_json).unwrap();
    // A foreign data endpoint written into batch.json.
    let edited = original.replace("-ats.iot.", "-ats.evil.");
    assert_ne!(edited, original);
    std::fs::write(&batch_json, &edited).unwrap();
    let to = signed.fx.work.path().join("image");
    let (code, _, stderr) = run(&mut signed.take("st1", &to, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("not what the batch-signing key signed"),
        "{stderr}"
    );
    std::fs::write(&batch_json, &original).unwrap();
    // The signature removed: this station takes signed batches only.
    std::fs::remove_file(signed.dir().join("batch.json.sig")).unwrap();
    let (code, _, stderr) = run(&mut signed.take("st1", &to, &[]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not signed"), "{stderr}");
    assert!(!to.exists());
}

#[test]
fn an_unsigned_batch_warns_and_a_foreign_config_is_refused_even_so() {
    let fx = Fixture::new("");
    let (code, _, stderr) = run(&mut fx.batch(2));
    assert_eq!(code, 0, "{stderr}");
    // Unsigned, no key pinned: taken, with a warning.
    let to = fx.work.path().join("image");
    let mut take = common::claimfab_without_endpoint();
    take.arg("take")
        .arg(&fx.out)
        .args(["--station", "st1", "--serial", "SN000001", "--to"])
        .arg(&to);
    let (code, _, stderr) = run(&mut take);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.is_empty(),
        "an unsigned batch at a station pinning no key: {stderr}"
    );
    // A config pointing the device at a foreign endpoint, in a bundle rewritten to match.
    let bundle = fx.out.join("bundles/SN000002.zip");
    rewrite_entry(&bundle, "greengrass/v2/init-config/config.yaml", |text| {
        text.replace("-ats.iot.", "-ats.evil.")
    });
    let to = fx.work.path().join("image2");
    let mut take = common::claimfab_without_endpoint();
    take.arg("take")
        .arg(&fx.out)
        .args(["--station", "st2", "--serial", "SN000002", "--to"])
        .arg(&to);
    let (code, _, stderr) = run(&mut take);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not the batch's"), "{stderr}");
    assert!(!to.exists());
}

/// Without signatures, a bundle copied over another's is still refused: it is not the
/// queued device's (and its certificate is another device's).
#[test]
fn an_unsigned_bundle_copied_over_another_is_refused() {
    let fx = Fixture::new("");
    let (code, _, stderr) = run(&mut fx.batch(3));
    assert_eq!(code, 0, "{stderr}");
    let bundles = fx.out.join("bundles");
    std::fs::copy(bundles.join("SN000002.zip"), bundles.join("SN000003.zip")).unwrap();
    let to = fx.work.path().join("image");
    let mut take = common::claimfab_without_endpoint();
    take.arg("take")
        .arg(&fx.out)
        .args(["--station", "st1", "--serial", "SN000003", "--to"])
        .arg(&to);
    let (code, _, stderr) = run(&mut take);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("SN000003 is queued as gg-SN000003"),
        "{stderr}"
    );
    assert!(!to.exists());
    assert!(!fx.out.join("handout/SN000003").exists());
}

/// Rewrites one text entry of a bundle zip in place, keeping the others and their modes.
fn rewrite_entry(bundle: &Path, name: &str, edit: impl Fn(&str) -> String) {
    use std::io::{Read, Write};
    let bytes = std::fs::read(bundle).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let entry_name = entry.name().unwrap().to_string();
        let mode = entry.unix_mode().unwrap_or(0o644);
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if entry_name == name {
            data = edit(&String::from_utf8(data).unwrap()).into_bytes();
        }
        let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
        out.start_file(entry_name.as_str(), options).unwrap();
        out.write_all(&data).unwrap();
    }
    std::fs::write(bundle, out.finish().unwrap().into_inner()).unwrap();
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    files
}

/// A signing key others can read is refused before anything is created.
#[test]
fn a_signing_key_readable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new("");
    let key_file = fx.work.path().join("batch-signing.key");
    let (code, _, stderr) = run(common::claimfab_without_endpoint()
        .arg("batch-key")
        .arg("--out")
        .arg(&key_file));
    assert_eq!(code, 0, "{stderr}");
    // Never overwritten.
    let (code, _, stderr) = run(common::claimfab_without_endpoint()
        .arg("batch-key")
        .arg("--out")
        .arg(&key_file));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("never overwritten"), "{stderr}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, stderr) = run(fx.batch(2).arg("--sign-with").arg(&key_file));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(!fx.out.exists(), "nothing created");
}

/// A signed batch encrypted for its stations, with the encryption stripped on the share
/// (encrypt_to removed from batch.json, a plain zip put beside the sealed one): a station
/// pinning the key refuses the batch instead of reading plain zips.
#[test]
fn stripping_the_encryption_of_a_signed_batch_is_refused() {
    let fx = Fixture::new("");
    let key_file = fx.work.path().join("batch-signing.key");
    let (code, public, stderr) = run(common::claimfab_without_endpoint()
        .arg("batch-key")
        .arg("--out")
        .arg(&key_file));
    assert_eq!(code, 0, "{stderr}");
    let identity = fx.work.path().join("st1.key");
    let (code, recipient, stderr) = run(common::claimfab_without_endpoint()
        .arg("station-key")
        .arg("--out")
        .arg(&identity));
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(fx
        .batch(1)
        .arg("--sign-with")
        .arg(&key_file)
        .args(["--encrypt-to", recipient.trim()]));
    assert_eq!(code, 0, "{stderr}");
    let station = fx.work.path().join("st1.toml");
    std::fs::write(
        &station,
        format!(
            "[station]\nid = \"st1\"\nbatch_keys = [{:?}]\n",
            public.trim()
        ),
    )
    .unwrap();
    let take = |to: &Path, with_identity: bool| {
        let mut cmd = common::claimfab_without_endpoint();
        cmd.arg("take")
            .arg(&fx.out)
            .arg("--station-config")
            .arg(&station)
            .arg("--to")
            .arg(to);
        if with_identity {
            cmd.arg("--identity").arg(&identity);
        }
        run(&mut cmd)
    };
    // Stripped: no encrypt_to in batch.json, and a plain zip where stations would look.
    let batch_json = fx.out.join("batch.json");
    let original = std::fs::read_to_string(&batch_json).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&original).unwrap();
    spec.as_object_mut().unwrap().remove("encrypt_to");
    std::fs::write(&batch_json, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let plain = fx.work.path().join("plain.zip");
    std::fs::write(&plain, b"PK\x05\x06").unwrap();
    std::fs::copy(&plain, fx.out.join("bundles/SN000001.zip")).unwrap();
    let to = fx.work.path().join("image");
    let (code, _, stderr) = take(&to, false);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("not what the batch-signing key signed"),
        "{stderr}"
    );
    assert!(!to.exists());
    // Restored, the batch is taken as it was made: sealed, with the station's identity.
    std::fs::write(&batch_json, original).unwrap();
    let (code, stdout, stderr) = take(&to, true);
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
}

/// A bundle damaged mid-queue (truncated by a failing drive) is passed over and named; the
/// line goes on with the next.
#[test]
fn a_damaged_bundle_mid_queue_is_passed_over() {
    let fx = Fixture::new("");
    let (code, _, stderr) = run(&mut fx.batch(3));
    assert_eq!(code, 0, "{stderr}");
    let damaged = fx.out.join("bundles/SN000002.zip");
    let bytes = std::fs::read(&damaged).unwrap();
    std::fs::write(&damaged, &bytes[..bytes.len() / 2]).unwrap();
    let mut got = Vec::new();
    for n in 0..3 {
        let to = fx.work.path().join(format!("image-{n}"));
        let mut take = common::claimfab_without_endpoint();
        take.arg("take")
            .arg(&fx.out)
            .args(["--station", "st1", "--to"])
            .arg(&to);
        let (code, stdout, stderr) = run(&mut take);
        if code == 3 {
            break;
        }
        assert_eq!(code, 0, "{stderr}");
        if n == 1 {
            assert!(stderr.contains("skipping SN000002"), "{stderr}");
        }
        let serial = stdout.split_whitespace().next().unwrap().to_string();
        let (code, _, stderr) = run(common::claimfab_without_endpoint()
            .arg("flashed")
            .arg(&fx.out)
            .args(["--station", "st1", &serial]));
        assert_eq!(code, 0, "{stderr}");
        got.push(serial);
    }
    assert_eq!(got, ["SN000001", "SN000003"]);
    assert!(!fx.out.join("handout/SN000002").exists(), "never claimed");
}
