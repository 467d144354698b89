//! End-to-end tests of the air-gapped flow: `prepare` and `package` on an offline machine (a
//! network namespace with nothing but a downed loopback when the kernel allows one, else
//! every AWS variable unset and the endpoint a closed port), `register` on the online one
//! against the local endpoint, three directories with nothing shared but the carried files.
//! The batch is checked independently of claimfab (zips, openssl, x509, the AWS API), the
//! online directory for private keys, `register` after two SIGKILLs for batch's invariants,
//! each bad carried file for exit 2 with one line and nothing changed, `package` killed and
//! its unjournaled bundles torn as a power cut may leave them, and the bundles on the local
//! data plane with AWS's device SDK.

mod common;
mod fake_iot;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::line::*;
use common::*;
use sha2::{Digest, Sha256};

/// Whether this kernel lets an unprivileged process into a network namespace of its own.
fn namespaces() -> bool {
    Command::new("unshare")
        .args(["-rn", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// claimfab on the offline machine: no AWS variable, and no network (see the module doc).
fn offline() -> Command {
    let mut cmd = if namespaces() {
        let mut cmd = Command::new("unshare");
        cmd.arg("-rn").arg(claimfab_bin());
        cmd
    } else {
        let mut cmd = Command::new(claimfab_bin());
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        cmd
    };
    for (var, _) in std::env::vars() {
        if var.starts_with("AWS_") {
            cmd.env_remove(var);
        }
    }
    if namespaces() {
        cmd.env_remove("AWS_ENDPOINT_URL");
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A holder's age key pair for the key store: (identity file, recipient).
fn holder(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("holder.key");
    let (code, stdout, stderr) = run(offline().args(["station-key", "--out"]).arg(&file));
    assert_eq!(code, 0, "{stderr}");
    (file, stdout.trim().to_string())
}

fn assert_no_private_key(dir: &Path) {
    for (path, bytes) in files(dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            path.display()
        );
    }
}

/// The three stages' directories and the carry between them.
struct AirGap {
    f: Fixture,
    offline: PathBuf,
    carry: PathBuf,
    identity: PathBuf,
    recipient: String,
}

impl AirGap {
    /// A fixture whose station pins this account's endpoints (the offline machine cannot
    /// ask AWS for them); `register` works in the fixture's batch directory.
    fn new(station_extra: &str) -> Self {
        let f = Fixture::new(station_extra);
        let (data, credentials) = f.rt.block_on(async {
            let iot = f.endpoint.client().await;
            let ask = |kind: &'static str| {
                let iot = iot.clone();
                async move {
                    let answer = iot.describe_endpoint().endpoint_type(kind).send().await;
                    answer.unwrap().endpoint_address().unwrap().to_string()
                }
            };
            (
                ask("iot:Data-ATS").await,
                ask("iot:CredentialProvider").await,
            )
        });
        let mut text = std::fs::read_to_string(&f.station).unwrap();
        text.push_str(&format!(
            "[aws]\nregion = \"{REGION}\"\niot_data_endpoint = \"{data}\"\niot_credential_endpoint = \"{credentials}\"\n"
        ));
        std::fs::write(&f.station, text).unwrap();
        let offline = f.work.path().join("offline");
        let carry = f.work.path().join("carry");
        std::fs::create_dir(&carry).unwrap();
        let (identity, recipient) = holder(f.work.path());
        Self {
            f,
            offline,
            carry,
            identity,
            recipient,
        }
    }

    fn prepare(&self, count: usize) {
        let (code, stdout, stderr) = run(offline()
            .args(["prepare", "--count", &count.to_string(), "--station"])
            .arg(&self.f.station)
            .arg("--out")
            .arg(&self.offline)
            .args(["--encrypt-to", &self.recipient]));
        assert_eq!(code, 0, "prepare: {stdout}\n{stderr}");
        std::fs::copy(
            self.offline.join("csrs.jsonl"),
            self.carry.join("csrs.jsonl"),
        )
        .unwrap();
    }

    fn register_command(&self) -> Command {
        let mut cmd = self.f.endpoint.claimfab();
        cmd.arg("register")
            .arg(self.carry.join("csrs.jsonl"))
            .arg("--out")
            .arg(&self.f.out)
            .arg("--station")
            .arg(&self.f.station);
        cmd
    }

    fn register(&self) -> String {
        let (code, stdout, stderr) = run(&mut self.register_command());
        assert_eq!(code, 0, "register: {stdout}\n{stderr}");
        std::fs::copy(
            self.f.out.join("certificates.jsonl"),
            self.carry.join("certificates.jsonl"),
        )
        .unwrap();
        stdout
    }

    fn package_with(&self, certificates: &Path) -> (i32, String, String) {
        run(offline()
            .arg("package")
            .arg(&self.offline)
            .arg("--certificates")
            .arg(certificates)
            .arg("--identity")
            .arg(&self.identity))
    }

    fn package(&self) {
        let (code, stdout, stderr) = self.package_with(&self.carry.join("certificates.jsonl"));
        assert_eq!(code, 0, "package: {stdout}\n{stderr}");
    }
}

#[test]
fn three_stages_in_three_directories_make_a_batch_batch_would() {
    let gap = AirGap::new("");
    gap.prepare(40);
    let store = gap.offline.join("keys.age");
    assert!(std::fs::read(&store)
        .unwrap()
        .starts_with(b"age-encryption.org/v1\n"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key store's mode");
    assert_no_private_key(&gap.offline);
    assert_no_private_key(&gap.carry);

    let stdout = gap.register();
    assert!(stdout.contains("40 ready, 0 failed"), "{stdout}");
    assert_no_private_key(&gap.f.out);
    assert!(
        !gap.f.out.join("bundles").exists(),
        "register's directory holds no bundles, not even an empty bundles/"
    );
    assert_no_private_key(&gap.carry);

    gap.package();
    gap.f
        .rt
        .block_on(verify_batch(&gap.f.endpoint, &gap.offline, &counted(40)));
    let (code, stdout, stderr) = run(offline().arg("verify").arg(&gap.offline));
    assert_eq!(code, 0, "verify: {stdout}\n{stderr}");

    // Each stage again changes nothing: prepare keeps its keys, register and package are done.
    let before = files(&gap.offline);
    gap.prepare(40);
    gap.register();
    gap.package();
    let after = files(&gap.offline);
    for name in ["keys.age", "csrs.jsonl", "manifest.csv"] {
        let path = gap.offline.join(name);
        assert_eq!(before[&path], after[&path], "{name} changed");
    }
    gap.f
        .rt
        .block_on(verify_batch(&gap.f.endpoint, &gap.offline, &counted(40)));
}

#[test]
fn register_killed_twice_then_finished_keeps_every_invariant() {
    let gap = AirGap::new(
        "[limits]\ncreate_certificate_from_csr_per_second = 40\nattach_policy_per_second = 40\nconcurrency = 16\nreconcile_after_seconds = 1\n",
    );
    gap.prepare(300);
    for kill_after in [60, 150] {
        let mut child = gap
            .register_command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        gap.f.wait_for_events("created", kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let created = gap.f.journal_events("created");
        assert!(created < 300, "killed before the end ({created} created)");
    }
    let stdout = gap.register();
    assert!(stdout.contains("300 ready, 0 failed"), "{stdout}");
    gap.package();
    gap.f
        .rt
        .block_on(verify_batch(&gap.f.endpoint, &gap.offline, &counted(300)));
}

/// The serials the journal in `dir` holds a Packaged event for.
fn packaged_serials(dir: &Path) -> std::collections::HashSet<String> {
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    journal
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["event"] == "packaged")
        .map(|event| event["serial"].as_str().unwrap().to_string())
        .collect()
}

/// `package` syncs its bundles once per group and journals them after: killed mid-run, with
/// every bundle not yet journaled torn as a power cut before that sync may leave it (empty,
/// or garbage), a re-run packages every device, each bundle whole and
/// holding its own key and certificate (checked with the zip, x509 and p256 crates).
#[test]
fn package_killed_then_torn_by_a_power_cut_finishes_every_bundle_whole() {
    const COUNT: usize = 5000;
    let gap = AirGap::new("");
    gap.prepare(COUNT);
    let certificates = gap.carry.join("certificates.jsonl");
    fake_iot::carried::issue_all(&gap.offline.join("csrs.jsonl"), &certificates);
    let mut child = offline()
        .arg("package")
        .arg(&gap.offline)
        .arg("--certificates")
        .arg(&certificates)
        .arg("--identity")
        .arg(&gap.identity)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !std::fs::read_to_string(gap.offline.join("journal.jsonl"))
        .is_ok_and(|t| t.contains("\"event\":\"packaged\""))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "package made no progress"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let journaled = packaged_serials(&gap.offline);
    assert!(journaled.len() < COUNT, "killed before the end");

    // Every device without a journaled bundle gets what a power cut may leave at its
    // bundle's name (whether or not this run had reached it): nothing, or garbage.
    let bundles = gap.offline.join("bundles");
    let mut torn = 0;
    for line in lines_of(&certificates) {
        let line: serde_json::Value = serde_json::from_str(&line).unwrap();
        let Some(serial) = line["serial"].as_str() else {
            continue;
        };
        if !journaled.contains(serial) {
            let junk = if torn % 2 == 0 {
                vec![]
            } else {
                vec![0x5a; 2048]
            };
            std::fs::write(bundles.join(format!("{serial}.zip")), junk).unwrap();
            torn += 1;
        }
    }
    assert_eq!(journaled.len() + torn, COUNT);
    std::fs::write(bundles.join(".tmp-torn"), b"PK").unwrap();
    let (code, stdout, stderr) = gap.package_with(&certificates);
    assert_eq!(code, 0, "package after the crash: {stdout}\n{stderr}");

    let rows = read_manifest(&gap.offline);
    assert_eq!(rows.len(), COUNT);
    assert_eq!(packaged_serials(&gap.offline).len(), COUNT);
    assert!(!bundles.join(".tmp-torn").exists(), "temp files swept");
    for row in &rows {
        let path = gap.offline.join(&row["bundle"]);
        assert_eq!(
            sha256_hex(&std::fs::read(&path).unwrap()),
            row["bundle_sha256"]
        );
        let files = unzip(&path);
        let (cert_pem, _) = &files["greengrass/v2/claim-certs/claim.pem.crt"];
        let (key_pem, _) = &files["greengrass/v2/claim-certs/claim.private.pem.key"];
        use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
        let key = p256::SecretKey::from_pkcs8_pem(std::str::from_utf8(key_pem).unwrap()).unwrap();
        let spki = key.public_key().to_public_key_der().unwrap();
        assert_eq!(
            cert_public_key_sha256(cert_pem),
            sha256_hex(spki.as_bytes()),
            "{}: the bundle's key is its certificate's",
            row["serial"]
        );
    }
    let (code, stdout, stderr) = run(offline().arg("verify").arg(&gap.offline));
    assert_eq!(code, 0, "verify: {stdout}\n{stderr}");
    println!("{} journaled before the kill, {torn} torn", journaled.len());

    // A journaled bundle lost since (deleted on the share): written again, the same device.
    let lost = gap.offline.join(&rows[7]["bundle"]);
    std::fs::remove_file(&lost).unwrap();
    let (code, stdout, stderr) = gap.package_with(&certificates);
    assert_eq!(code, 0, "package after a lost bundle: {stdout}\n{stderr}");
    let again = read_manifest(&gap.offline);
    assert_eq!(
        sha256_hex(&std::fs::read(&lost).unwrap()),
        again[7]["bundle_sha256"]
    );
    assert_eq!(again[7]["certificate_id"], rows[7]["certificate_id"]);
    let (code, stdout, stderr) = run(offline().arg("verify").arg(&gap.offline));
    assert_eq!(code, 0, "verify: {stdout}\n{stderr}");
}

/// A carried file's lines with its end line made anew over them: an edit a checksum cannot
/// catch, so the checks behind it must.
fn resealed(lines: &[String], kind: &str) -> String {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let end = serde_json::json!({
        "end": kind,
        "lines": lines.len() - 1,
        "sha256": hex::encode(Sha256::digest(body.as_bytes())),
    });
    format!("{body}{end}\n")
}

fn lines_of(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines.pop(); // the end line
    lines
}

fn edit(line: &str, key: &str, value: serde_json::Value) -> String {
    let mut json: serde_json::Value = serde_json::from_str(line).unwrap();
    json[key] = value;
    serde_json::to_string(&json).unwrap()
}

#[test]
fn every_bad_carried_file_exits_2_naming_the_cause_and_changes_nothing() {
    let gap = AirGap::new("");
    gap.prepare(5);
    gap.register();
    let good = gap.carry.join("certificates.jsonl");
    let lines = lines_of(&good);
    let bad = |name: &str, text: String| {
        let path = gap.carry.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let text = std::fs::read_to_string(&good).unwrap();
    // Another batch's answer: its header names another batch id.
    let mut other_batch = lines.clone();
    other_batch[0] = edit(
        &lines[0],
        "batch_id",
        "0123456789abcdef0123456789abcdef".into(),
    );
    // The answer to another CSR file of this batch.
    let mut other_csrs = lines.clone();
    other_csrs[0] = edit(&lines[0], "csrs_sha256", "00".repeat(32).into());
    // A certificate for another device's key: two devices' certificates swapped.
    let mut swapped = lines.clone();
    let pem =
        |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["certificate_pem"].clone();
    swapped[1] = edit(&lines[1], "certificate_pem", pem(&lines[2]));
    // A device twice.
    let mut twice = lines.clone();
    twice[2] = lines[1].clone();
    let cases = [
        (
            "truncated",
            bad("cut.jsonl", text[..text.len() / 2].to_string()),
            "cut short",
        ),
        (
            "edited",
            bad("edited.jsonl", text.replacen("SN000003", "SN000009", 1)),
            ":4: SN000009 is not a device of this batch",
        ),
        (
            "another batch",
            bad("batch.jsonl", resealed(&other_batch, "certificates")),
            "is for batch 0123456789abcdef",
        ),
        (
            "another CSR file",
            bad("other-csrs.jsonl", resealed(&other_csrs, "certificates")),
            "other than this batch's csrs.jsonl",
        ),
        (
            "another key",
            bad("key.jsonl", resealed(&swapped, "certificates")),
            "SN000001: the certificate AWS returned carries public key",
        ),
        (
            "a device twice",
            bad("twice.jsonl", resealed(&twice, "certificates")),
            "SN000001 comes out of batch order, or twice",
        ),
        (
            "the CSR file",
            gap.carry.join("csrs.jsonl"),
            "not a claimfab certificates file",
        ),
    ];
    let before = files(&gap.offline);
    for (what, path, cause) in cases {
        let (code, stdout, stderr) = gap.package_with(&path);
        assert_eq!(code, 2, "{what}: {stdout}\n{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(
            stderr.contains(&path.display().to_string()),
            "{what}: names the file: {stderr}"
        );
        assert!(stderr.contains(cause), "{what}: {stderr}");
        assert_eq!(
            files(&gap.offline),
            before,
            "{what}: the batch directory changed"
        );
    }
    // The wrong identity for the key store.
    let (other, _) = holder(&gap.carry);
    let (code, _, stderr) = run(offline()
        .arg("package")
        .arg(&gap.offline)
        .arg("--certificates")
        .arg(&good)
        .arg("--identity")
        .arg(&other));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not open"), "{stderr}");
    assert_eq!(files(&gap.offline), before);
}

#[test]
fn register_refuses_an_edited_or_foreign_csr_file_before_anything_is_created() {
    let gap = AirGap::new("");
    gap.prepare(5);
    let csrs = gap.carry.join("csrs.jsonl");
    let lines = lines_of(&csrs);
    // A CSR line pointed at another thing name, checksum made anew: its CSR does not say so.
    let mut renamed = lines.clone();
    renamed[2] = edit(&lines[2], "thing_name", "gg-SN000099".into());
    // Another device's CSR under this serial: its subject is the other thing name.
    let mut swapped = lines.clone();
    let csr = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["csr"].clone();
    swapped[1] = edit(&lines[1], "csr", csr(&lines[2]));
    let cases = [
        (
            resealed(&renamed, "csrs"),
            ":3: SN000002: its CSR is for \"gg-SN000002\"",
        ),
        (
            resealed(&swapped, "csrs"),
            ":2: SN000001: its CSR is for \"gg-SN000002\"",
        ),
    ];
    for (text, cause) in cases {
        std::fs::write(&csrs, text).unwrap();
        let (code, stdout, stderr) = run(&mut gap.register_command());
        assert_eq!(code, 2, "{stdout}\n{stderr}");
        assert!(stderr.contains(cause), "{stderr}");
        assert!(!gap.f.out.exists(), "nothing created on disk");
    }
    let certificates = gap.f.rt.block_on(gap.f.endpoint.all_certificates());
    assert!(certificates.is_empty(), "nothing created in AWS");

    // A directory registering one batch refuses another batch's CSR file.
    std::fs::copy(gap.offline.join("csrs.jsonl"), &csrs).unwrap();
    gap.register();
    let second = gap.f.work.path().join("second");
    let (code, _, stderr) = run(offline()
        .args(["prepare", "--count", "5", "--station"])
        .arg(&gap.f.station)
        .arg("--out")
        .arg(&second)
        .args(["--encrypt-to", &gap.recipient]));
    assert_eq!(code, 0, "{stderr}");
    std::fs::copy(second.join("csrs.jsonl"), &csrs).unwrap();
    let (code, _, stderr) = run(&mut gap.register_command());
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("holds a batch made with other inputs (it is air-gapped batch"),
        "{stderr}"
    );
}

#[test]
fn air_gapped_bundles_provision_on_the_data_plane() {
    // The line's setup record (beside its station file) gives the offline machine the
    // region and endpoints.
    let line = Line::new("");
    let work = line.work.path();
    let (identity, recipient) = holder(work);
    let (offline_dir, online_dir) = (work.join("offline"), work.join("online"));
    let (code, _, stderr) = run(offline()
        .args(["prepare", "--count", "2", "--station"])
        .arg(&line.station)
        .arg("--out")
        .arg(&offline_dir)
        .args(["--encrypt-to", &recipient]));
    assert_eq!(code, 0, "prepare: {stderr}");
    let (code, _, stderr) = run(line
        .endpoint
        .claimfab()
        .arg("register")
        .arg(offline_dir.join("csrs.jsonl"))
        .arg("--out")
        .arg(&online_dir));
    assert_eq!(code, 0, "register: {stderr}");
    let (code, _, stderr) = run(offline()
        .arg("package")
        .arg(&offline_dir)
        .arg("--certificates")
        .arg(online_dir.join("certificates.jsonl"))
        .arg("--identity")
        .arg(&identity));
    assert_eq!(code, 0, "package: {stderr}");
    let rows = read_manifest(&offline_dir);
    let bundles: Vec<PathBuf> = rows
        .iter()
        .map(|r| offline_dir.join(&r["bundle"]))
        .collect();
    let reports = line.endpoint.provision("java", &bundles);
    line.rt
        .block_on(assert_provisioned(&line.endpoint, &rows, &reports));
}

/// Copies a directory tree (files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_packaged_batch_is_taken_audited_revoked_and_closed_like_any_other() {
    let gap = AirGap::new("");
    gap.prepare(4);
    gap.register();
    gap.package();
    // The shared drive the stations take from gets the batch without its key store.
    let shared = gap.f.work.path().join("shared");
    copy_tree(&gap.offline, &shared);
    std::fs::remove_file(shared.join("keys.age")).unwrap();
    let floor = |args: &[&str]| {
        let mut cmd = gap.f.endpoint.claimfab();
        cmd.arg(args[0]).arg(&shared).args(&args[1..]);
        run(&mut cmd)
    };
    let image = gap.f.work.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let (code, stdout, stderr) =
        floor(&["take", "--station", "st1", "--to", image.to_str().unwrap()]);
    assert_eq!(code, 0, "take: {stdout}\n{stderr}");
    let flashed = stdout.split_whitespace().next().unwrap().to_string();
    let (code, _, stderr) = floor(&["flashed", "--station", "st1", &flashed]);
    assert_eq!(code, 0, "flashed: {stderr}");

    let (code, stdout, stderr) = floor(&["audit"]);
    assert_eq!(code, 0, "audit: {stdout}\n{stderr}");
    assert!(stdout.contains("no drift"), "{stdout}");

    let rows = read_manifest(&shared);
    let leaked = rows.iter().find(|r| r["serial"] != flashed).unwrap();
    let (code, stdout, stderr) = floor(&["revoke", "--devices", &leaked["serial"]]);
    assert_eq!(code, 0, "revoke: {stdout}\n{stderr}");
    let (code, stdout, stderr) = floor(&["close", "--yes"]);
    assert_eq!(code, 0, "close: {stdout}\n{stderr}");

    let certificates = gap.f.rt.block_on(gap.f.endpoint.all_certificates());
    for row in &rows {
        let status = &certificates[&row["certificate_id"]].0;
        let expected = if row["serial"] == flashed {
            "ACTIVE"
        } else {
            "REVOKED"
        };
        assert_eq!(status, expected, "{}", row["serial"]);
    }
}

#[test]
fn rotation_in_three_stages_then_the_old_claims_retired_online() {
    let gap = AirGap::new("");
    gap.prepare(4);
    gap.register();
    gap.package();
    let old_rows = read_manifest(&gap.offline);
    // Offline: new keys for the old batch's devices, its configuration kept.
    let new = gap.f.work.path().join("rotated");
    let (code, _, stderr) = run(offline()
        .arg("prepare")
        .arg("--rotate")
        .arg(&gap.offline)
        .arg("--out")
        .arg(&new)
        .args(["--encrypt-to", &gap.recipient]));
    assert_eq!(code, 0, "prepare --rotate: {stderr}");
    // Online: the new CSRs registered; the old claims stay until the new bundles exist.
    let online = gap.f.work.path().join("rotated-online");
    let (code, _, stderr) = run(gap
        .f
        .endpoint
        .claimfab()
        .arg("register")
        .arg(new.join("csrs.jsonl"))
        .arg("--out")
        .arg(&online));
    assert_eq!(code, 0, "register: {stderr}");
    let rotate = |gap: &AirGap| {
        run(gap
            .f
            .endpoint
            .claimfab()
            .arg("rotate")
            .arg(&gap.offline)
            .arg("--out")
            .arg(&new)
            .arg("--retire-old"))
    };
    let (code, stdout, _) = rotate(&gap);
    assert_eq!(code, 1, "not packaged yet: {stdout}");
    assert!(stdout.contains("not packaged in full"), "{stdout}");
    let (code, _, stderr) = run(offline()
        .arg("package")
        .arg(&new)
        .arg("--certificates")
        .arg(online.join("certificates.jsonl"))
        .arg("--identity")
        .arg(&gap.identity));
    assert_eq!(code, 0, "package: {stderr}");
    let (code, stdout, stderr) = rotate(&gap);
    assert_eq!(code, 0, "rotate: {stdout}\n{stderr}");

    let new_rows = read_manifest(&new);
    let certificates = gap.f.rt.block_on(gap.f.endpoint.all_certificates());
    for (old, new) in old_rows.iter().zip(&new_rows) {
        assert_eq!(old["serial"], new["serial"]);
        assert_eq!(certificates[&old["certificate_id"]].0, "INACTIVE");
        assert_eq!(certificates[&new["certificate_id"]].0, "ACTIVE");
    }
    let report = std::fs::read_to_string(new.join("rotation.csv")).unwrap();
    assert_eq!(report.lines().count(), 5, "{report}");
}

#[test]
fn a_passphrase_locks_the_key_store_and_package_seals_for_the_stations() {
    let gap = AirGap::new("");
    let secret = gap.f.work.path().join("passphrase");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let wrong = gap.f.work.path().join("wrong");
    std::fs::write(&wrong, "incorrect horse\n").unwrap();
    let (code, _, stderr) = run(offline()
        .args(["prepare", "--count", "3", "--station"])
        .arg(&gap.f.station)
        .arg("--out")
        .arg(&gap.offline)
        .arg("--passphrase-file")
        .arg(&secret));
    assert_eq!(code, 0, "prepare: {stderr}");
    assert_no_private_key(&gap.offline);
    std::fs::copy(gap.offline.join("csrs.jsonl"), gap.carry.join("csrs.jsonl")).unwrap();
    gap.register();
    let (station_key, station) = holder(&gap.carry);
    let package = |passphrase: &Path, stations: &str| {
        run(offline()
            .arg("package")
            .arg(&gap.offline)
            .arg("--certificates")
            .arg(gap.carry.join("certificates.jsonl"))
            .arg("--passphrase-file")
            .arg(passphrase)
            .args(["--encrypt-to", stations]))
    };
    let before = files(&gap.offline);
    let (code, _, stderr) = package(&wrong, &station);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not open"), "{stderr}");
    assert_eq!(files(&gap.offline), before, "nothing written");

    let (code, _, stderr) = package(&secret, &station);
    assert_eq!(code, 0, "package: {stderr}");
    let rows = read_manifest(&gap.offline);
    for row in &rows {
        assert!(row["bundle"].ends_with(".zip.age"), "{row:?}");
    }
    assert_no_private_key(&gap.offline);
    let (code, stdout, stderr) = run(offline()
        .arg("verify")
        .arg(&gap.offline)
        .arg("--identity")
        .arg(&station_key));
    assert_eq!(code, 0, "verify: {stdout}\n{stderr}");
    // The stations are fixed by the first package run.
    let elsewhere = gap.f.work.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (_, other) = holder(&elsewhere);
    let (code, _, stderr) = package(&secret, &other);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("encrypted to"), "{stderr}");
}
