//! End-to-end tests of `claimfab revoke` against the local endpoint: some devices to
//! INACTIVE, then all to REVOKED with the claim policy detached, killed mid-way and re-run;
//! statuses checked through the AWS API and in the manifest; a batch re-run afterwards
//! resurrects nothing.

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn revoke_survives_sigkill_and_a_rerun_and_the_manifest_follows() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(30)).0, 0);
    let revoke = |args: &[&str]| {
        let mut cmd = f.endpoint.claimfab();
        cmd.arg("revoke").arg(&f.out).args(args);
        cmd
    };

    let (code, stdout, stderr) = run(&mut revoke(&[
        "--devices",
        "SN000001,SN000002",
        "--status",
        "inactive",
    ]));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let rows = read_manifest(&f.out);
    let status_of = |rows: &[Row], serial: &str| {
        rows.iter().find(|r| r["serial"] == serial).unwrap()["status"].clone()
    };
    assert_eq!(status_of(&rows, "SN000001"), "inactive");
    assert_eq!(status_of(&rows, "SN000003"), "ready");
    let all = f.rt.block_on(f.endpoint.all_certificates());
    assert_eq!(all[&rows[0]["certificate_id"]].0, "INACTIVE");
    assert_eq!(all[&rows[2]["certificate_id"]].0, "ACTIVE");

    // All to REVOKED with the policy detached, at the default 10/s: kill it part-way.
    let mut child = revoke(&["--all", "--detach"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    f.wait_for_events("status_changed", 10);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        f.journal_events("status_changed") < 2 + 30,
        "killed before the end"
    );

    let (code, stdout, _) = run(&mut revoke(&["--all", "--detach"]));
    assert_eq!(code, 0, "{stdout}");
    let rows = read_manifest(&f.out);
    assert!(rows.iter().all(|r| r["status"] == "revoked"), "{rows:?}");
    let all = f.rt.block_on(f.endpoint.all_certificates());
    for row in &rows {
        assert_eq!(
            all[&row["certificate_id"]].0, "REVOKED",
            "{}",
            row["serial"]
        );
    }
    assert_eq!(all.len(), 30, "no certificate was made or lost");
    let targets = f.rt.block_on(f.endpoint.policy_targets(CLAIM_POLICY));
    assert!(
        targets.is_empty(),
        "claim policy detached everywhere: {targets:?}"
    );

    // A batch re-run on the revoked batch makes and attaches nothing.
    let (code, stdout, _) = run(&mut f.batch(30));
    assert_eq!(code, 0, "{stdout}");
    assert!(
        !stdout.contains("CreateCertificateFromCsr") && !stdout.contains("AttachPolicy"),
        "{stdout}"
    );
    assert!(read_manifest(&f.out)
        .iter()
        .all(|r| r["status"] == "revoked"));

    // An unknown serial is bad input.
    let (code, _, stderr) = run(&mut revoke(&["--devices", "NOPE"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("NOPE") && stderr.contains("manifest.csv"),
        "{stderr}"
    );
}

#[test]
fn revoke_at_a_stations_concurrency_retires_devices_together_each_in_order() {
    let f = Fixture::new(
        "[limits]\nupdate_certificate_per_second = 200\ndetach_policy_per_second = 200\nconcurrency = 8\n",
    );
    assert_eq!(run(&mut f.batch(24)).0, 0);
    let before = std::fs::read_to_string(f.out.join("journal.jsonl")).unwrap();
    let mut cmd = f.endpoint.claimfab();
    cmd.arg("revoke")
        .arg(&f.out)
        .args(["--all", "--detach", "--station"])
        .arg(&f.station);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");

    let journal = std::fs::read_to_string(f.out.join("journal.jsonl")).unwrap();
    let events: Vec<(String, String)> = journal[before.len()..]
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |key: &str| event[key].as_str().unwrap().to_string();
            (text("serial"), text("event"))
        })
        .collect();
    // Several devices in flight: the second event is another device's intent, not the
    // first device's answer.
    assert_eq!(events[0].1, "status_requested");
    assert_eq!(events[1].1, "status_requested", "{events:?}");
    assert_ne!(events[0].0, events[1].0);
    // Each device's own events stay in their order.
    for serial in counted(24) {
        let own: Vec<&str> = events
            .iter()
            .filter(|(s, _)| *s == serial)
            .map(|(_, e)| e.as_str())
            .collect();
        assert_eq!(
            own,
            ["status_requested", "status_changed", "policy_detached"],
            "{serial}"
        );
    }
    let all = f.rt.block_on(f.endpoint.all_certificates());
    assert!(all.values().all(|c| c.0 == "REVOKED"), "{all:?}");
    let targets = f.rt.block_on(f.endpoint.policy_targets(CLAIM_POLICY));
    assert!(targets.is_empty(), "{targets:?}");
    assert!(read_manifest(&f.out)
        .iter()
        .all(|r| r["status"] == "revoked"));
}

/// A command run on a pseudo-terminal (util-linux `script`), as an operator at a console
/// runs it: what the terminal showed, standard output and error together.
fn on_a_terminal(cmd: &std::process::Command) -> String {
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', "'\\''")))
        .collect();
    let mut script = std::process::Command::new("script");
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    let output = script
        .args(["-qec", &line.join(" "), "/dev/null"])
        .env("COLUMNS", "160")
        .stdin(Stdio::null())
        .output()
        .expect("script (util-linux)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn revoke_draws_progress_on_a_terminal_only() {
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(12)).0, 0);
    let revoke = |args: &[&str]| {
        let mut cmd = f.endpoint.claimfab();
        cmd.arg("revoke").arg(&f.out).args(args);
        cmd
    };
    // Piped, as in a log or a script: report lines only, no bar, no terminal control.
    let (code, stdout, stderr) = run(&mut revoke(&["--devices", "SN000001,SN000002"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("  ok       SN000001"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text:?}");
        assert!(!text.contains("retire ["), "{text}");
    }
    // On a terminal: the bar, counting the claims to retire.
    let shown = on_a_terminal(revoke(&["--all", "--status", "inactive"]).env("TERM", "xterm"));
    assert!(shown.contains("retire ["), "{shown}");
    assert!(shown.contains("/12"), "{shown}");
    assert!(shown.contains("  ok       SN000012"), "{shown}");
}

#[test]
fn a_reader_that_stops_reading_does_not_stop_the_revocation() {
    use std::io::BufRead;
    let f = Fixture::new("");
    assert_eq!(run(&mut f.batch(8)).0, 0);
    let mut child = f
        .endpoint
        .claimfab()
        .args([
            "revoke", "--all", "--status", "inactive", "--output", "json",
        ])
        .arg(&f.out)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `| head -1`: one line read, then the pipe closed.
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"type\":\"retirement\""), "{first}");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Every claim retired and the manifest written, whoever stopped reading.
    let all = f.rt.block_on(f.endpoint.all_certificates());
    let rows = read_manifest(&f.out);
    for row in &rows {
        assert_eq!(row["status"], "inactive", "{row:?}");
        assert_eq!(all[&row["certificate_id"]].0, "INACTIVE");
    }
}
