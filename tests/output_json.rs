//! `--output json` as a station script or an MES reads it: every line of standard output
//! parsed as JSON (serde_json), checked against the batch's files, the AWS API of the local
//! endpoint and openssl, never against claimfab's text; the human text on standard error.
//! batch, take, flashed, verify, setup, close, revoke, audit, rotate, prepare, package and
//! the key commands.

mod common;
mod fake_iot;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Runs a command that must exit `expected`; its standard output as JSON lines, and its
/// standard error.
fn json_lines(cmd: &mut std::process::Command, expected: i32) -> (Vec<Value>, String) {
    let (code, stdout, stderr) = run(cmd);
    assert_eq!(code, expected, "{stdout}\n{stderr}");
    let lines = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect::<Vec<_>>();
    for line in &lines {
        assert_eq!(line["version"], 1, "{line}");
        assert!(
            line["type"].is_string() && line["command"].is_string(),
            "{line}"
        );
    }
    (lines, stderr)
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// A certificate's status as AWS IoT reports it (DescribeCertificate).
fn aws_status(fx: &Fixture, iot: &aws_sdk_iot::Client, id: &str) -> String {
    let described = fx
        .rt
        .block_on(iot.describe_certificate().certificate_id(id).send())
        .unwrap();
    let description = described.certificate_description().unwrap();
    description.status().unwrap().as_str().to_string()
}

fn mode(path: &Path) -> String {
    format!(
        "{:04o}",
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    )
}

#[test]
fn batch_take_flashed_and_verify_answer_in_json_lines() {
    let fx = Fixture::new("");
    let (lines, stderr) = json_lines(fx.batch(4).args(["--output", "json"]), 0);
    assert!(
        stderr.contains("4 ready, 0 failed"),
        "the text on stderr: {stderr}"
    );
    assert!(lines.iter().all(|l| l["command"] == "batch"));
    let devices = of_type(&lines, "device");
    let serials: Vec<&str> = devices
        .iter()
        .map(|d| d["serial"].as_str().unwrap())
        .collect();
    assert_eq!(serials, counted(4));
    let summary = of_type(&lines, "summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(
        lines.last().unwrap()["type"],
        "summary",
        "the summary comes last"
    );
    assert_eq!(
        (summary[0]["devices"].clone(), summary[0]["ready"].clone()),
        (4.into(), 4.into())
    );
    assert_eq!(
        summary[0]["outputs"]["manifest"],
        fx.out.join("manifest.csv").display().to_string()
    );
    // Each device record is the device as AWS and the manifest have it.
    let iot = fx.rt.block_on(fx.endpoint.client());
    let rows = read_manifest(&fx.out);
    for (device, row) in devices.iter().zip(&rows) {
        assert_eq!(device["status"], "ready");
        for column in [
            "serial",
            "thing_name",
            "certificate_id",
            "bundle",
            "bundle_sha256",
        ] {
            assert_eq!(device[column], row[column].as_str(), "{column}");
        }
        let id = device["certificate_id"].as_str().unwrap();
        assert_eq!(aws_status(&fx, &iot, id), "ACTIVE");
        assert!(
            device.get("reason").is_none(),
            "no reason for a ready device"
        );
    }

    // take: the record names the files it extracted, as they are on disk.
    let image = fx.work.path().join("image");
    let take = |to: &Path| {
        let mut cmd = claimfab_without_endpoint();
        cmd.args(["--output", "json", "take"])
            .arg(&fx.out)
            .args(["--station", "st1", "--to"])
            .arg(to);
        cmd
    };
    let (taken, _) = json_lines(&mut take(&image), 0);
    assert_eq!(taken.len(), 1);
    let taken = &taken[0];
    assert_eq!(
        (taken["command"].as_str(), taken["type"].as_str()),
        (Some("take"), Some("taken"))
    );
    assert_eq!(taken["station"], "st1");
    assert_eq!(taken["handed_back"], false);
    let row = rows
        .iter()
        .find(|r| r["serial"] == taken["serial"].as_str().unwrap())
        .unwrap();
    assert_eq!(taken["thing_name"], row["thing_name"].as_str());
    assert_eq!(taken["certificate_id"], row["certificate_id"].as_str());
    time::OffsetDateTime::parse(
        taken["at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("at is RFC 3339");
    let files = taken["files"].as_array().unwrap();
    assert_eq!(files.len(), 4);
    for file in files {
        let path = Path::new(file["path"].as_str().unwrap());
        assert!(path.starts_with(&image), "{path:?}");
        assert_eq!(mode(path), file["mode"].as_str().unwrap(), "{path:?}");
    }
    let file_named = |suffix: &str| {
        let f = files
            .iter()
            .find(|f| f["path"].as_str().unwrap().ends_with(suffix));
        Path::new(f.unwrap()["path"].as_str().unwrap()).to_path_buf()
    };
    let cert = file_named("claim.pem.crt");
    assert_eq!(
        openssl_public_key("cert", &cert),
        openssl_public_key("key", &file_named("claim.private.pem.key"))
    );
    assert_eq!(
        cert_public_key_sha256(&std::fs::read(&cert).unwrap()),
        fx.rt.block_on(async {
            let pem = iot
                .describe_certificate()
                .certificate_id(taken["certificate_id"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            let pem = pem
                .certificate_description()
                .unwrap()
                .certificate_pem()
                .unwrap()
                .to_string();
            cert_public_key_sha256(pem.as_bytes())
        })
    );

    // The bundle on standard output would mix with the record: refused, nothing taken.
    let before = common::files(&fx.out);
    let (code, stdout, stderr) = run(&mut take(Path::new("-")));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stdout.is_empty() && stderr.lines().count() == 1,
        "{stdout}{stderr}"
    );
    assert!(
        stderr.contains("--to") && stderr.contains("--output json"),
        "{stderr}"
    );
    assert_eq!(common::files(&fx.out), before, "nothing taken or written");

    // flashed: recorded, then the same again.
    let serial = taken["serial"].as_str().unwrap();
    let flashed = || {
        let mut cmd = claimfab_without_endpoint();
        cmd.arg("flashed")
            .arg(&fx.out)
            .args(["--station", "st1", serial, "--output", "json"]);
        json_lines(&mut cmd, 0).0
    };
    let first = flashed();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["type"], "recorded");
    assert_eq!(first[0]["event"], "flashed");
    assert_eq!(first[0]["already_recorded"], false);
    assert_eq!(flashed()[0]["already_recorded"], true);

    // The batch taken to the end: `nothing_left`, exit 3.
    for station in ["st2", "st3", "st4"] {
        let mut cmd = claimfab_without_endpoint();
        cmd.args(["--output", "json", "take"])
            .arg(&fx.out)
            .args(["--station", station, "--to"])
            .arg(fx.work.path().join(station));
        assert_eq!(json_lines(&mut cmd, 0).0[0]["type"], "taken");
    }
    let mut last = claimfab_without_endpoint();
    last.args(["--output", "json", "take"])
        .arg(&fx.out)
        .args(["--station", "st5", "--to"])
        .arg(fx.work.path().join("st5"));
    let (nothing, _) = json_lines(&mut last, 3);
    assert_eq!(nothing.len(), 1);
    assert_eq!(nothing[0]["type"], "nothing_left");
    assert_eq!(nothing[0]["dir"], fx.out.display().to_string());

    // verify: one check per batch directory, then the counts.
    let (checks, _) = json_lines(
        claimfab_without_endpoint()
            .args(["verify", "--output", "json"])
            .arg(&fx.out),
        0,
    );
    let check = of_type(&checks, "check");
    assert!(
        !check.is_empty() && check.iter().all(|c| c["ok"] == true),
        "{checks:?}"
    );
    let checked = of_type(&checks, "checked");
    assert_eq!(checked[0]["checked"], check.len());
    assert_eq!(checked[0]["with_findings"], 0);
}

#[test]
fn key_commands_name_their_public_half_and_the_file_holding_the_secret() {
    let work = tempfile::tempdir().unwrap();
    let key = work.path().join("station.key");
    let (lines, stderr) = json_lines(
        claimfab_without_endpoint()
            .args(["station-key", "--output", "json", "--out"])
            .arg(&key),
        0,
    );
    assert!(stderr.contains("wrote the station's identity"), "{stderr}");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "key");
    assert_eq!(lines[0]["file"], key.display().to_string());
    let recipient = lines[0]["public_key"].as_str().unwrap();
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert_eq!(mode(&key), "0600");
    let identity = std::fs::read_to_string(&key).unwrap();
    assert!(
        identity.contains(&format!("# public key: {recipient}")),
        "the identity file names the same recipient"
    );

    let signing = work.path().join("batch.key");
    let (lines, _) = json_lines(
        claimfab_without_endpoint()
            .args(["--output", "json", "batch-key", "--out"])
            .arg(&signing),
        0,
    );
    assert_eq!(lines[0]["command"], "batch-key");
    assert!(lines[0]["public_key"]
        .as_str()
        .unwrap()
        .starts_with("claimfab-ed25519:"));
}

#[test]
fn setup_close_revoke_and_audit_answer_in_json_lines() {
    let fx = Fixture::new("");
    let iot = fx.rt.block_on(fx.endpoint.client());

    // setup: a plan, then the run; every policy step names a policy AWS now has.
    let setup = |extra: &[&str], code: i32| {
        let mut cmd = fx.endpoint.claimfab();
        cmd.args(["setup", "--output", "json", "--station"])
            .arg(&fx.station)
            .args(extra);
        json_lines(&mut cmd, code).0
    };
    let plan = setup(&["--plan"], 0);
    let summary = of_type(&plan, "setup_summary");
    assert_eq!(summary.len(), 1);
    assert_eq!(
        (summary[0]["plan"].clone(), summary[0]["record"].clone()),
        (true.into(), Value::Null)
    );
    assert!(summary[0]["changes"].as_u64().unwrap() > 0, "{plan:?}");
    // The fixture made its claim policy and template unlike setup's: drift, left as it is
    // (exit 1), then updated.
    let drifted = setup(&[], 1);
    let drifts = of_type(&drifted, "step");
    let drifts: Vec<_> = drifts.iter().filter(|s| s["result"] == "drift").collect();
    assert_eq!(drifts.len(), 2, "{drifted:?}");
    assert!(drifts.iter().all(|s| s["detail"].is_string()));
    assert_eq!(of_type(&drifted, "setup_summary")[0]["drifts"], 2);
    let applied = setup(&["--update-drifted"], 0);
    let steps = of_type(&applied, "step");
    assert_eq!(steps.len(), of_type(&plan, "step").len());
    for step in &steps {
        let result = step["result"].as_str().unwrap();
        assert!(["created", "ok", "updated"].contains(&result), "{step}");
        if step["kind"] == "iot policy" {
            let name = step["name"].as_str().unwrap();
            fx.rt
                .block_on(iot.get_policy().policy_name(name).send())
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }
    let summary = of_type(&applied, "setup_summary");
    assert!(Path::new(summary[0]["record"].as_str().unwrap()).is_file());

    let (code, _, stderr) = run(&mut fx.batch(3));
    assert_eq!(code, 0, "{stderr}");
    let rows = read_manifest(&fx.out);

    // close without --yes: the plan only, every claim never handed out.
    let mut close = claimfab_without_endpoint();
    close.args(["close", "--output", "json"]).arg(&fx.out);
    let (planned, _) = json_lines(&mut close, 0);
    let to_retire = of_type(&planned, "to_retire");
    assert_eq!(to_retire.len(), 3);
    for (line, row) in to_retire.iter().zip(&rows) {
        assert_eq!(line["serial"], row["serial"].as_str());
        assert_eq!(line["certificate_id"], row["certificate_id"].as_str());
        assert_eq!(line["reason"], "never handed out");
    }

    // revoke one device: its record, and AWS says REVOKED.
    let mut revoke = fx.endpoint.claimfab();
    revoke
        .args(["revoke", "--output", "json", "--devices", "SN000002"])
        .arg(&fx.out);
    let (revoked, _) = json_lines(&mut revoke, 0);
    let retirement = of_type(&revoked, "retirement");
    assert_eq!(retirement.len(), 1);
    assert_eq!(retirement[0]["serial"], "SN000002");
    assert_eq!(retirement[0]["result"], "retired");
    assert_eq!(retirement[0]["shared_claim"], false);
    let id = retirement[0]["certificate_id"].as_str().unwrap();
    assert_eq!(id, rows[1]["certificate_id"]);
    assert_eq!(aws_status(&fx, &iot, id), "REVOKED");
    let summary = of_type(&revoked, "retirement_summary");
    assert_eq!(
        (summary[0]["retired"].clone(), summary[0]["failed"].clone()),
        (1.into(), 0.into())
    );

    // audit: one batch, its devices, no drift.
    let mut audit = fx.endpoint.claimfab();
    audit.args(["audit", "--output", "json"]).arg(&fx.out);
    let (audited, stderr) = json_lines(&mut audit, 0);
    assert!(stderr.contains("batch "), "the table on stderr: {stderr}");
    let batch = of_type(&audited, "batch");
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0]["activation"]["devices"], 3);
    assert_eq!(batch[0]["floor"]["never_handed_out"], 2);
    assert!(of_type(&audited, "finding").is_empty(), "{audited:?}");
    assert_eq!(of_type(&audited, "audited")[0]["findings"], 0);
}

#[test]
fn prepare_and_package_answer_in_json_lines_offline() {
    let work = tempfile::tempdir().unwrap();
    let station = work.path().join("station.toml");
    std::fs::write(
        &station,
        "[aws]\nregion = \"us-east-1\"\n\
         iot_data_endpoint = \"line-ats.iot.us-east-1.amazonaws.com\"\n\
         iot_credential_endpoint = \"line.credentials.iot.us-east-1.amazonaws.com\"\n\
         [provisioning]\nthing_name_pattern = \"gg-{serial}\"\n",
    )
    .unwrap();
    let secret = work.path().join("passphrase");
    std::fs::write(&secret, "correct horse battery staple\n").unwrap();
    let offline = work.path().join("offline");
    let (prepared, _) = json_lines(
        claimfab_without_endpoint()
            .args(["prepare", "--output", "json", "--count", "3", "--station"])
            .arg(&station)
            .arg("--out")
            .arg(&offline)
            .arg("--passphrase-file")
            .arg(&secret),
        0,
    );
    assert_eq!(prepared.len(), 1);
    let prepared = &prepared[0];
    assert_eq!(prepared["type"], "prepared");
    assert_eq!(prepared["devices"], 3);
    // The checksum is the CSR file's own: its end line's, over every byte before it.
    let csrs = std::fs::read_to_string(offline.join("csrs.jsonl")).unwrap();
    let end = csrs.trim_end().rfind('\n').unwrap() + 1;
    let end_line: Value = serde_json::from_str(&csrs[end..]).unwrap();
    assert_eq!(prepared["csrs_sha256"], end_line["sha256"]);
    assert_eq!(end_line["sha256"], sha256_hex(&csrs.as_bytes()[..end]));
    assert_eq!(
        prepared["csrs"],
        offline.join("csrs.jsonl").display().to_string()
    );

    let certificates = work.path().join("certificates.jsonl");
    fake_iot::carried::issue_all(&offline.join("csrs.jsonl"), &certificates);
    let (packaged, _) = json_lines(
        claimfab_without_endpoint()
            .args(["package", "--output", "json"])
            .arg(&offline)
            .arg("--certificates")
            .arg(&certificates)
            .arg("--passphrase-file")
            .arg(&secret),
        0,
    );
    let devices = of_type(&packaged, "device");
    assert_eq!(devices.len(), 3);
    let rows = read_manifest(&offline);
    for (device, row) in devices.iter().zip(&rows) {
        assert_eq!(device["status"], "ready");
        let bundle = std::fs::read(offline.join(device["bundle"].as_str().unwrap())).unwrap();
        assert_eq!(device["bundle_sha256"], sha256_hex(&bundle));
        assert_eq!(device["certificate_id"], row["certificate_id"].as_str());
    }
    let summary = of_type(&packaged, "summary");
    assert_eq!(
        (summary[0]["ready"].clone(), summary[0]["devices"].clone()),
        (3.into(), 3.into())
    );
}

#[test]
fn rotate_answers_with_the_new_batch_the_old_claims_and_the_rotation() {
    let fx = Fixture::new("");
    assert_eq!(run(&mut fx.batch(3)).0, 0);
    let old_rows = read_manifest(&fx.out);
    let new = fx.work.path().join("rotated");
    let mut rotate = fx.endpoint.claimfab();
    rotate
        .args(["rotate", "--output", "json", "--retire-old"])
        .arg(&fx.out)
        .arg("--out")
        .arg(&new)
        .arg("--station")
        .arg(&fx.station);
    let (lines, _) = json_lines(&mut rotate, 0);
    assert!(lines.iter().all(|l| l["command"] == "rotate"));
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "device",
            "device",
            "device",
            "summary",
            "retirement",
            "retirement",
            "retirement",
            "retirement_summary",
            "rotated"
        ]
    );
    let new_rows = read_manifest(&new);
    for (device, row) in of_type(&lines, "device").iter().zip(&new_rows) {
        assert_eq!(device["certificate_id"], row["certificate_id"].as_str());
    }
    let iot = fx.rt.block_on(fx.endpoint.client());
    for retirement in of_type(&lines, "retirement") {
        assert_eq!(retirement["result"], "retired");
        let id = retirement["certificate_id"].as_str().unwrap();
        assert!(old_rows.iter().any(|r| r["certificate_id"] == id));
        assert_eq!(aws_status(&fx, &iot, id), "INACTIVE");
    }
    let rotated = lines.last().unwrap();
    assert_eq!(rotated["old_retired"], true);
    assert!(Path::new(rotated["report"].as_str().unwrap()).is_file());
}
