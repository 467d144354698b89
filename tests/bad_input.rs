//! Every mistake a user can make before a batch starts gets exit code 2, one line on stderr
//! naming the cause and the fix, and leaves nothing behind: no output directory, no
//! certificate in AWS.

mod common;

use std::path::{Path, PathBuf};

use common::*;

struct Case(Fixture);

impl Case {
    fn new(with_policy: bool) -> Self {
        Case(if with_policy {
            Fixture::new("")
        } else {
            Fixture::without_claim_policy()
        })
    }

    /// Runs `claimfab batch` with `args`: (exit code, stdout, stderr).
    fn batch(&self, args: &[&str]) -> (i32, String, String) {
        run(self.0.endpoint.claimfab().arg("batch").args(args))
    }

    fn out(&self) -> PathBuf {
        self.0.out.clone()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `claimfab batch` with `args`, expects a one-line exit-2 error mentioning every
    /// one of `needles`, and checks nothing was created. Returns the error line.
    fn expect_rejected(&self, args: &[&str], out: &Path, needles: &[&str]) -> String {
        let (code, stdout, stderr) = run(self.0.endpoint.claimfab().arg("batch").args(args));
        assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line: {stderr}");
        assert!(line.starts_with("claimfab: "), "{line}");
        for needle in needles {
            assert!(line.contains(needle), "{line:?} should mention {needle:?}");
        }
        assert!(
            !out.exists() || std::fs::read_dir(out).unwrap().next().is_none(),
            "nothing written to {}",
            out.display()
        );
        let certificates = self.0.rt.block_on(self.0.endpoint.all_certificates());
        assert!(certificates.is_empty(), "nothing created in AWS");
        line.to_string()
    }
}

fn args<'a>(station: &'a Path, out: &'a Path, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "--station",
        station.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    v.extend_from_slice(rest);
    v
}

#[test]
fn bad_station_files() {
    let case = Case::new(true);
    let out = case.out();
    let typo = case.write("typo.toml", "[limits]\nconcurency = 4\n");
    case.expect_rejected(
        &args(&typo, &out, &["--count", "3"]),
        &out,
        &["typo.toml", "line 2", "concurency", "concurrency"],
    );
    let bad_value = case.write("curve.toml", "[keys]\nalgorithm = \"rsa2048\"\n");
    case.expect_rejected(
        &args(&bad_value, &out, &["--count", "3"]),
        &out,
        &["curve.toml", "rsa2048", "p256"],
    );
    let bad_name = case.write(
        "name.toml",
        "[provisioning]\nthing_name_pattern = \"line 1/{serial}\"\n",
    );
    case.expect_rejected(
        &args(&bad_name, &out, &["--count", "3"]),
        &out,
        &["name.toml", "provisioning.thing_name_pattern"],
    );
    let missing = case.0.work.path().join("missing.toml");
    case.expect_rejected(
        &args(&missing, &out, &["--count", "3"]),
        &out,
        &["missing.toml", "--station"],
    );
}

#[test]
fn bad_serials_files() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    let duplicate = case.write("dup.csv", "serial\nA1\nB2\nA1\n");
    case.expect_rejected(
        &args(&station, &out, &["--devices", duplicate.to_str().unwrap()]),
        &out,
        &["dup.csv:4", "line 2", "duplicate"],
    );
    let bad_char = case.write("char.csv", "serial\nA1\nB 2\n");
    case.expect_rejected(
        &args(&station, &out, &["--devices", bad_char.to_str().unwrap()]),
        &out,
        &["char.csv:3", "\"B 2\""],
    );
    let no_header = case.write("header.csv", "sn\nA1\n");
    case.expect_rejected(
        &args(&station, &out, &["--devices", no_header.to_str().unwrap()]),
        &out,
        &["header.csv:1", "serial"],
    );
    let long = case.write("long.csv", &format!("serial\n{}\n", "X".repeat(126)));
    case.expect_rejected(
        &args(&station, &out, &["--devices", long.to_str().unwrap()]),
        &out,
        &["long.csv:2", "thing name"],
    );
    case.expect_rejected(
        &args(&station, &out, &["--count", "5", "--first-serial", "SN98"]),
        &out,
        &["--first-serial", "SN98", "room"],
    );
}

#[test]
fn missing_claim_policy() {
    let case = Case::new(false);
    let out = case.out();
    let station = case.0.station.clone();
    case.expect_rejected(
        &args(&station, &out, &["--count", "3"]),
        &out,
        &[CLAIM_POLICY, "does not exist", "--claim-policy"],
    );
    case.expect_rejected(
        &args(&station, &out, &["--count", "3", "--claim-policy", "Other"]),
        &out,
        &["\"Other\"", "does not exist"],
    );
}

#[test]
fn unusable_output_directories() {
    let case = Case::new(true);
    let station = case.0.station.clone();
    // /proc refuses new files even to root.
    let unwritable = PathBuf::from("/proc/claimfab-test-batch");
    case.expect_rejected(
        &args(&station, &unwritable, &["--count", "3"]),
        &unwritable,
        &["/proc", "not writable"],
    );
    let orphan = case.0.work.path().join("no/such/parent");
    case.expect_rejected(
        &args(&station, &orphan, &["--count", "3"]),
        &orphan,
        &["does not exist"],
    );
    let foreign = case.0.work.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "x").unwrap();
    let (code, _, stderr) = case.batch(&args(&station, &foreign, &["--count", "3"]));
    assert_eq!(code, 2);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "foreign directory untouched"
    );
}

#[test]
fn resuming_with_other_inputs_is_refused() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    let (code, stdout, _) = case.batch(&args(&station, &out, &["--count", "3"]));
    assert_eq!(code, 0, "{stdout}");
    let before = std::fs::read(out.join("manifest.csv")).unwrap();
    let (code, _, stderr) = case.batch(&args(&station, &out, &["--count", "4"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("3 devices then, 4 now") && stderr.contains("new --out"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("manifest.csv")).unwrap(), before);
}

#[test]
fn no_region_and_unreachable_endpoint() {
    let case = Case::new(true);
    let out = case.out();
    let station = station(case.0.work.path(), "[limits]\nmax_attempts = 1\n");
    let (code, _, stderr) = run(case
        .0
        .endpoint
        .claimfab()
        .env_remove("AWS_REGION")
        .arg("batch")
        .args(args(&station, &out, &["--count", "3"])));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no AWS region") && stderr.contains("AWS_REGION"),
        "{stderr}"
    );
    assert!(!out.exists());

    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, _, stderr) = run(claimfab_without_endpoint().arg("batch").args(args(
        &station,
        &out,
        &[
            "--count",
            "3",
            "--endpoint-url",
            &format!("http://{closed}"),
        ],
    )));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--endpoint-url"), "{stderr}");
    assert!(!out.exists());

    // An exported but empty AWS_ENDPOINT_URL (the SDK would panic on it).
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .env("AWS_ENDPOINT_URL", "")
        .arg("batch")
        .args(args(&station, &out, &["--count", "3"])));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("AWS_ENDPOINT_URL is set but empty"),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn station_rules_of_the_runtimes() {
    let case = Case::new(true);
    let out = case.out();
    // A lite station keeping a Java config path: lite would never read the config.
    let lite = case.write(
        "lite.toml",
        "[greengrass]\nnucleus = \"lite\"\nconfig_path = \"/greengrass/v2/init-config/config.yaml\"\n",
    );
    case.expect_rejected(
        &args(&lite, &out, &["--count", "3"]),
        &out,
        &[
            "lite.toml",
            "greengrass.config_path",
            "/etc/greengrass/config.d",
        ],
    );
    // A Java init config the nucleus would not read as YAML.
    let java = case.write(
        "java.toml",
        "[greengrass]\nconfig_path = \"/greengrass/v2/config.txt\"\n",
    );
    case.expect_rejected(
        &args(&java, &out, &["--count", "3"]),
        &out,
        &["java.toml", "greengrass.config_path", ".yaml or .yml"],
    );
    // An enum value names its key.
    let nucleus = case.write("nucleus.toml", "[greengrass]\nnucleus = \"python\"\n");
    case.expect_rejected(
        &args(&nucleus, &out, &["--count", "3"]),
        &out,
        &["nucleus.toml", "line 2", "key `greengrass.nucleus`", "java"],
    );
    // Two hooks for one template.
    let hooks = case.write(
        "hooks.toml",
        "[setup]\nclaim_binding = true\npre_provisioning_hook_arn = \"arn:aws:lambda:us-east-1:123456789012:function:H\"\n",
    );
    case.expect_rejected(
        &args(&hooks, &out, &["--count", "3"]),
        &out,
        &["hooks.toml", "setup.claim_binding", "keep one"],
    );
}

#[test]
fn template_missing_disabled_or_not_matching_is_refused() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    case.expect_rejected(
        &args(
            &station,
            &out,
            &["--count", "3", "--template", "NoSuchTemplate"],
        ),
        &out,
        &["\"NoSuchTemplate\"", "does not exist", "claimfab setup"],
    );
    // The station names no thing group but the template puts devices in one.
    let no_group = case.write(
        "nogroup.toml",
        &format!("[provisioning]\nclaim_policy = \"{CLAIM_POLICY}\"\n"),
    );
    case.expect_rejected(
        &args(&no_group, &out, &["--count", "3"]),
        &out,
        &[
            "thing groups [\"LineOne\"]",
            "provisioning.thing_group is none",
        ],
    );
    case.0.rt.block_on(async {
        case.0
            .endpoint
            .client()
            .await
            .update_provisioning_template()
            .template_name(TEMPLATE)
            .enabled(false)
            .send()
            .await
            .unwrap();
    });
    case.expect_rejected(
        &args(&station, &out, &["--count", "3"]),
        &out,
        &[TEMPLATE, "disabled"],
    );
}

#[test]
fn claim_policy_that_does_not_cover_the_template_is_refused() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    case.0.rt.block_on(
        case.0
            .endpoint
            .create_provisioning_template("OtherTemplate", Some("LineOne")),
    );
    case.expect_rejected(
        &args(
            &station,
            &out,
            &["--count", "3", "--template", "OtherTemplate"],
        ),
        &out,
        &[
            CLAIM_POLICY,
            "provisioning-templates/OtherTemplate/provision/json",
        ],
    );
}

#[test]
fn an_excel_serials_export_with_bom_and_crlf_works() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    let path = case.0.work.path().join("excel.csv");
    std::fs::write(
        &path,
        b"\xEF\xBB\xBFserial,board\r\nSN1,rev A\r\nSN2,rev B\r\n",
    )
    .unwrap();
    let (code, stdout, stderr) = case.batch(&args(
        &station,
        &out,
        &["--devices", path.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let serials: Vec<String> = read_manifest(&out)
        .iter()
        .map(|r| r["serial"].clone())
        .collect();
    assert_eq!(serials, ["SN1", "SN2"]);
}

/// A batch directory edited by hand: each command refuses it on one line, exit 2, and
/// changes nothing.
#[test]
fn hand_edited_batch_directories_are_refused() {
    let case = Case::new(true);
    let out = case.out();
    let station = case.0.station.clone();
    let (code, stdout, _) = case.batch(&args(&station, &out, &["--count", "2"]));
    assert_eq!(code, 0, "{stdout}");
    let manifest = out.join("manifest.csv");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let rows = read_manifest(&out);
    let edits = [
        (
            rows[0]["bundle"].clone(),
            "../../../etc/passwd".to_string(),
            "bundle",
        ),
        (
            rows[0]["certificate_id"].clone(),
            "é".repeat(32),
            "certificate_id",
        ),
    ];
    for (from, to, needle) in edits {
        std::fs::write(&manifest, original.replacen(&from, &to, 1)).unwrap();
        for command in [
            vec!["audit", out.to_str().unwrap()],
            vec!["verify", out.to_str().unwrap()],
            vec!["revoke", "--all", out.to_str().unwrap()],
        ] {
            let (code, _, stderr) = run(case.0.endpoint.claimfab().args(&command));
            assert_eq!(code, 2, "{command:?}: {stderr}");
            assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("line 2") && stderr.contains(needle),
                "{stderr}"
            );
        }
    }
    std::fs::write(&manifest, &original).unwrap();
    let statuses: Vec<String> = read_manifest(&out)
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, ["ready", "ready"], "nothing revoked");

    // Rotating a batch into itself would tie every certificate to itself.
    let (code, _, stderr) = run(case.0.endpoint.claimfab().args([
        "rotate",
        out.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--out") && stderr.contains("new directory"),
        "{stderr}"
    );
    assert!(!out.join("rotation.csv").exists());

    // A report into a pipe already closed (its reader, `true`, is gone by the time the audit
    // has asked AWS) ends quietly, exit 0.
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg("\"$0\" audit --format csv \"$1\" | true; exit ${PIPESTATUS[0]}")
        .arg(env!("CARGO_BIN_EXE_claimfab"))
        .arg(&out)
        .envs(
            case.0
                .endpoint
                .claimfab()
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k, v))),
        )
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(!String::from_utf8_lossy(&status.stderr).contains("panicked"));
}
