//! `claimfab close` at the end of a batch: it retires exactly the claims never flashed (never
//! handed out, or handed out and never recorded) and the spoiled ones, and detaches their
//! claim policy, checked through the AWS API; without `--yes` it changes nothing; afterwards
//! no station can take a bundle of the batch, and a re-run has nothing left to do.

mod common;

use std::collections::HashMap;

use common::*;

/// Runs a floor command of the batch and returns (code, stdout, stderr).
fn floor(f: &Fixture, args: &[&str]) -> (i32, String, String) {
    let mut cmd = f.endpoint.claimfab();
    cmd.arg(args[0]).arg(&f.out).args(&args[1..]);
    run(&mut cmd)
}

/// A station takes a bundle into a scratch directory; returns its serial.
fn take(f: &Fixture, station: &str) -> String {
    let to = f.work.path().join("image");
    let _ = std::fs::remove_dir_all(&to);
    std::fs::create_dir(&to).unwrap();
    let (code, stdout, stderr) = floor(
        f,
        &["take", "--station", station, "--to", to.to_str().unwrap()],
    );
    assert_eq!(code, 0, "take: {stdout}\n{stderr}");
    stdout.split_whitespace().next().unwrap().to_string()
}

/// Each claim's (status, claim policy attached), by certificate id, through the AWS API.
fn aws_claims(f: &Fixture) -> HashMap<String, (String, bool)> {
    let certificates = f.rt.block_on(f.endpoint.all_certificates());
    let targets = f.rt.block_on(f.endpoint.policy_targets(CLAIM_POLICY));
    certificates
        .into_iter()
        .map(|(id, (status, _))| {
            let attached = targets.iter().any(|arn| arn.ends_with(&format!("/{id}")));
            (id, (status, attached))
        })
        .collect()
}

#[test]
fn close_retires_exactly_the_claims_not_flashed() {
    let f = Fixture::new("");
    let (code, stdout, stderr) = run(&mut f.batch(8));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let rows = read_manifest(&f.out);
    // Station st1 flashes three boards and spoils one; st2 takes one and never records it.
    let mut taken = Vec::new();
    for outcome in [None, None, None, Some("--spoiled")] {
        let serial = take(&f, "st1");
        let mut args = vec!["flashed", "--station", "st1", serial.as_str()];
        args.extend(outcome);
        assert_eq!(floor(&f, &args).0, 0);
        taken.push(serial);
    }
    taken.push(take(&f, "st2"));
    let id_of: HashMap<&str, &str> = rows
        .iter()
        .map(|r| (r["serial"].as_str(), r["certificate_id"].as_str()))
        .collect();
    let before = aws_claims(&f);

    let (code, stdout, _) = floor(&f, &["close"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("5 claim(s) to retire"), "{stdout}");
    assert!(stdout.contains("nothing changed"), "{stdout}");
    assert_eq!(aws_claims(&f), before, "close without --yes changed AWS");

    let (code, stdout, stderr) = floor(&f, &["close", "--yes"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let after = aws_claims(&f);
    for row in &rows {
        let serial = row["serial"].as_str();
        let flashed = taken[..3].iter().any(|s| s == serial);
        let expected = if flashed {
            ("ACTIVE", true)
        } else {
            ("REVOKED", false)
        };
        let (status, attached) = &after[id_of[serial]];
        assert_eq!((status.as_str(), *attached), expected, "{serial}");
    }
    let manifest = read_manifest(&f.out);
    for row in &manifest {
        let flashed = taken[..3].contains(&row["serial"]);
        assert_eq!(
            row["status"],
            if flashed { "flashed" } else { "revoked" },
            "{row:?}"
        );
    }
    let report = std::fs::read_to_string(f.out.join("close.csv")).unwrap();
    assert_eq!(report.lines().count(), 1 + 5, "{report}");
    assert!(
        report.contains("spoiled") && report.contains("never handed out"),
        "{report}"
    );

    // No station can take a bundle of a closed batch, nor get back the one it held;
    // closing again has nothing to do.
    let to = f.work.path().join("late");
    let (code, _, stderr) = floor(
        &f,
        &["take", "--station", "st2", "--to", to.to_str().unwrap()],
    );
    assert_eq!(code, 3, "{stderr}");
    let (code, stdout, _) = floor(&f, &["close", "--yes"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("0 claim(s) to retire"), "{stdout}");
}
