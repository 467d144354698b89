//! The air-gapped stages' local work, timed as users run them: `claimfab prepare` (keys
//! encrypted at rest in keys.age, CSRs in csrs.jsonl) and `claimfab package` (the carried
//! certificates checked against the batch, the key store read, bundles and manifest
//! written) over N devices, each the release binary in its own process. The online stage
//! between them is the tests' fake AWS IoT issuing each CSR in this process (AWS's own
//! work, not timed). Run by `scripts/bench.sh` (`BENCH_ONLY=air_gap`); prints one JSON line
//! with each stage's wall time, devices per second and CPU seconds.
//!
//! `cargo bench --bench air_gap -- DEVICES DIR` (without arguments: 200 devices in a
//! temporary directory, which is what `cargo test --all-targets` runs).

#[path = "../tests/fake_iot/mod.rs"]
mod fake_iot;
#[path = "support/rusage.rs"]
mod rusage;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What a stage took: wall seconds, devices per second, CPU seconds of its process.
struct Timed {
    seconds: f64,
    cpu: f64,
}

/// Runs claimfab with `args`, which must succeed; its wall and CPU time.
fn claimfab(args: &[&std::ffi::OsStr]) -> Timed {
    let cpu_before = rusage::cpu_seconds(libc::RUSAGE_CHILDREN);
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_claimfab"))
        .args(args)
        .output()
        .expect("claimfab runs");
    let seconds = started.elapsed().as_secs_f64();
    if !output.status.success() {
        eprintln!(
            "claimfab {:?} failed: {}{}",
            args,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::process::exit(1);
    }
    Timed {
        seconds,
        cpu: rusage::cpu_seconds(libc::RUSAGE_CHILDREN) - cpu_before,
    }
}

/// The station file the offline machine prepares with (its endpoints pinned).
fn station(dir: &Path) -> PathBuf {
    let path = dir.join("station.toml");
    std::fs::write(
        &path,
        "[aws]\nregion = \"us-east-1\"\n\
         iot_data_endpoint = \"bench-ats.iot.us-east-1.amazonaws.com\"\n\
         iot_credential_endpoint = \"bench.credentials.iot.us-east-1.amazonaws.com\"\n\
         [provisioning]\nthing_name_pattern = \"gg-{serial}\"\n",
    )
    .expect("write the station file");
    path
}

/// The key store's holder: its identity file (0600) and recipient.
fn holder(dir: &Path) -> (PathBuf, String) {
    let key = claimfab::core::sealed::new_station_key(time::OffsetDateTime::now_utc());
    let path = dir.join("holder.key");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("write the identity");
    file.write_all(key.identity_file.as_bytes())
        .expect("write the identity");
    (path, key.recipient)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let smoke = tempfile::tempdir().expect("a temporary directory");
    let count = args.first().map_or(Some(200), |n| n.parse::<usize>().ok());
    let dir = args
        .get(1)
        .map_or(smoke.path().to_path_buf(), PathBuf::from);
    let Some(count) = count.filter(|n| *n > 0) else {
        eprintln!("usage: air_gap DEVICES DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(&dir).expect("create DIR");
    let station = station(&dir);
    let (identity, recipient) = holder(&dir);
    let offline = dir.join("offline");
    let certificates = dir.join("certificates.jsonl");
    let os = |s: &str| std::ffi::OsString::from(s);
    let prepare = claimfab(&[
        &os("prepare"),
        &os("--station"),
        station.as_os_str(),
        &os("--out"),
        offline.as_os_str(),
        &os("--count"),
        &os(&count.to_string()),
        &os("--encrypt-to"),
        &os(&recipient),
    ]);
    fake_iot::carried::issue_all(&offline.join("csrs.jsonl"), &certificates);
    let package = claimfab(&[
        &os("package"),
        offline.as_os_str(),
        &os("--certificates"),
        certificates.as_os_str(),
        &os("--identity"),
        identity.as_os_str(),
    ]);
    let stage = |t: &Timed| {
        format!(
            "{{\"seconds\": {:.2}, \"per_second\": {:.0}, \"cpu_seconds\": {:.2}}}",
            t.seconds,
            count as f64 / t.seconds,
            t.cpu
        )
    };
    let manifest = std::fs::File::open(offline.join("manifest.csv")).expect("a manifest");
    let rows = BufReader::new(manifest).lines().count() - 1;
    assert_eq!(rows, count, "every device in the manifest");
    println!(
        "{{\"devices\": {count}, \"prepare\": {}, \"package\": {}}}",
        stage(&prepare),
        stage(&package)
    );
}
