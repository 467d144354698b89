//! Flashing stations against a real batch (made on the local AWS endpoint): `claimfab take`
//! and `claimfab flashed` from several processes and "machines" at once, a station killed
//! between the two, what an extracted bundle holds, and bad input refused with nothing
//! changed. Results are checked on the files themselves (csv crate on the station logs, the
//! claim markers, the extracted files, openssl), not only on claimfab's output.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{openssl_public_key, read_manifest, run, sha256_hex, Fixture};

const KEY: &str = "greengrass/v2/claim-certs/claim.private.pem.key";
const CERT: &str = "greengrass/v2/claim-certs/claim.pem.crt";

/// A batch of `count` devices, made at the harness's high test rate.
fn batch(count: usize) -> Fixture {
    let fx = Fixture::new("");
    let (code, _, err) = run(&mut fx.batch(count));
    assert_eq!(code, 0, "{err}");
    fx
}

fn claimfab() -> Command {
    common::claimfab_without_endpoint()
}

/// `claimfab take DIR --station ID --to TO [extra]`.
fn take(dir: &Path, station: &str, to: &Path, extra: &[&str]) -> Command {
    let mut cmd = claimfab();
    cmd.arg("take")
        .arg(dir)
        .args(["--station", station])
        .arg("--to")
        .arg(to)
        .args(extra);
    cmd
}

/// `claimfab flashed DIR --station ID SERIAL [extra]`.
fn flashed(dir: &Path, station: &str, serial: &str, extra: &[&str]) -> Command {
    let mut cmd = claimfab();
    cmd.arg("flashed")
        .arg(dir)
        .args(["--station", station, serial])
        .args(extra);
    cmd
}

/// Every record of every station log, parsed with the csv crate by column name.
fn station_logs(dir: &Path) -> Vec<HashMap<String, String>> {
    let mut rows = Vec::new();
    let Ok(stations) = std::fs::read_dir(dir.join("stations")) else {
        return rows;
    };
    for station in stations.map(|e| e.unwrap().path()).filter(|p| p.is_dir()) {
        let Ok(mut reader) = csv::Reader::from_path(station.join("log.csv")) else {
            continue;
        };
        let headers = reader.headers().unwrap().clone();
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            ["station", "time", "serial", "certificate_id", "event"]
        );
        for record in reader.records() {
            let row: HashMap<String, String> = headers
                .iter()
                .map(String::from)
                .zip(record.unwrap().iter().map(String::from))
                .collect();
            assert_eq!(
                station.file_name().unwrap().to_str(),
                Some(row["station"].as_str())
            );
            time::OffsetDateTime::parse(
                &row["time"],
                &time::format_description::well_known::Rfc3339,
            )
            .expect("RFC 3339");
            assert!(row["time"].ends_with('Z'), "UTC: {row:?}");
            rows.push(row);
        }
    }
    rows
}

/// Everything of the floor on disk (markers, pending takes, logs) and under `to`, to show a
/// refused command changed nothing.
fn floor_snapshot(dir: &Path, to: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for root in [dir.join("handout"), dir.join("stations"), to.to_path_buf()] {
        let mut stack = vec![root];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            } else if let Ok(bytes) = std::fs::read(&path) {
                files.insert(path.display().to_string(), bytes);
            }
        }
    }
    files
}

/// One station's loop on one "machine": take into a fresh directory, rename it after the
/// serial, record it flashed; until nothing is left. Returns the serials it got.
fn station_loop(batch: PathBuf, station: String, out: PathBuf) -> Vec<String> {
    std::fs::create_dir_all(&out).unwrap();
    let mut got = Vec::new();
    for n in 0.. {
        let to = out.join(format!("take-{n}"));
        let (code, stdout, stderr) = run(&mut take(&batch, &station, &to, &[]));
        if code == 3 {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.contains("nothing left"), "{stderr}");
            return got;
        }
        assert_eq!(code, 0, "{station}: {stderr}");
        let (serial, thing) = stdout.trim().split_once(' ').expect("SERIAL THING_NAME");
        assert_eq!(thing, format!("gg-{serial}"));
        std::fs::rename(&to, out.join(serial)).unwrap();
        let (code, _, stderr) = run(&mut flashed(&batch, &station, serial, &[]));
        assert_eq!(code, 0, "{station} flashed {serial}: {stderr}");
        got.push(serial.to_string());
    }
    unreachable!()
}

#[test]
fn four_stations_on_two_machines_hand_out_every_bundle_once() {
    let fx = batch(1000);
    let manifest = read_manifest(&fx.out);
    let ready: HashMap<String, String> = manifest
        .iter()
        .map(|r| (r["serial"].clone(), r["certificate_id"].clone()))
        .collect();
    assert_eq!(ready.len(), 1000);

    // Two machines: each reaches the batch through its own path (a symlinked mount point).
    let mut handles = Vec::new();
    for machine in ["machine-a", "machine-b"] {
        let home = fx.work.path().join(machine);
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::symlink(&fx.out, home.join("share")).unwrap();
        for n in 1..=2 {
            let (batch, station, out) = (
                home.join("share"),
                format!("{machine}-st{n}"),
                home.join(format!("st{n}")),
            );
            handles.push(std::thread::spawn(move || {
                (station.clone(), station_loop(batch, station, out))
            }));
        }
    }
    let started = std::time::Instant::now();
    let results: Vec<(String, Vec<String>)> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    eprintln!(
        "1000 takes + flashed by 4 stations: {:?}",
        started.elapsed()
    );

    // Every bundle exactly once, none lost: by what the stations got...
    let mut handed: HashMap<String, String> = HashMap::new();
    for (station, serials) in &results {
        assert!(
            !serials.is_empty(),
            "{station} got nothing: the stations did not run concurrently"
        );
        for serial in serials {
            assert!(
                handed.insert(serial.clone(), station.clone()).is_none(),
                "{serial} handed out twice"
            );
        }
    }
    assert_eq!(
        handed.keys().collect::<HashSet<_>>(),
        ready.keys().collect::<HashSet<_>>()
    );
    // ...by the claim markers on disk...
    let markers: Vec<String> = std::fs::read_dir(fx.out.join("handout"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        markers.len(),
        1000,
        "one marker per bundle, no temporary file left"
    );
    for serial in &markers {
        let marker: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fx.out.join("handout").join(serial)).unwrap())
                .unwrap();
        assert_eq!(marker["station"].as_str(), Some(handed[serial].as_str()));
    }
    // ...by the extracted files: each serial's directory under exactly one station, holding
    // that serial's certificate...
    for (serial, station) in &handed {
        let (machine, st) = station.rsplit_once('-').unwrap();
        let cert = std::fs::read(
            fx.work
                .path()
                .join(machine)
                .join(st)
                .join(serial)
                .join(CERT),
        )
        .unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(&cert).unwrap();
        assert_eq!(
            sha256_hex(&der.contents),
            ready[serial],
            "{serial}'s own certificate"
        );
    }
    // ...and by the union of the station logs: the manifest, each flashed exactly once.
    let logs = station_logs(&fx.out);
    let mut events: HashMap<(String, String), usize> = HashMap::new();
    for row in &logs {
        assert_eq!(row["certificate_id"], ready[&row["serial"]], "{row:?}");
        assert_eq!(row["station"], handed[&row["serial"]], "{row:?}");
        *events
            .entry((row["serial"].clone(), row["event"].clone()))
            .or_default() += 1;
    }
    for serial in ready.keys() {
        for event in ["handed-out", "flashed"] {
            assert_eq!(
                events.get(&(serial.clone(), event.into())),
                Some(&1),
                "{serial} {event}"
            );
        }
    }
    assert_eq!(logs.len(), 2000);
    for station in handed.values().collect::<HashSet<_>>() {
        assert!(
            !fx.out
                .join("stations")
                .join(station)
                .join("pending")
                .exists(),
            "{station} holds nothing"
        );
    }
}

/// Waits until `path` has a line of output.
fn wait_for_line(path: &Path) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.ends_with('\n') {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the station's take never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_station_killed_between_take_and_flashed_gets_the_same_bundle_back() {
    let fx = batch(4);
    let image = fx.work.path().join("image");
    // The station: take, then flash (slowly), then record. SIGKILLed while flashing.
    let said = fx.work.path().join("said.txt");
    let script = format!(
        "{bin} take {dir} --station st1 --to {image} > {said} && sleep 60 && {bin} flashed {dir} --station st1 \"$(cut -d' ' -f1 {said})\"",
        bin = common::claimfab_bin().display(),
        dir = fx.out.display(),
        image = image.display(),
        said = said.display(),
    );
    let mut station = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let first = wait_for_line(&said);
    let serial = first.split(' ').next().unwrap().to_string();
    Command::new("kill")
        .args(["-KILL", &station.id().to_string()])
        .status()
        .unwrap();
    station.wait().unwrap();
    let key_before = std::fs::read(image.join(KEY)).unwrap();

    // The re-run hands back the same bundle: same serial, same files, no second claim.
    std::fs::remove_dir_all(&image).unwrap();
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &image, &[]));
    // Exit 4: handed back, and said so (the killed take had logged its hand-out).
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("handed to station st1 before"), "{stderr}");
    assert_eq!(stdout, first);
    assert_eq!(std::fs::read(image.join(KEY)).unwrap(), key_before);
    let taken: Vec<_> = std::fs::read_dir(fx.out.join("handout")).unwrap().collect();
    assert_eq!(taken.len(), 1, "never a second bundle");
    let handed_out = station_logs(&fx.out)
        .iter()
        .filter(|r| r["event"] == "handed-out")
        .count();
    assert_eq!(handed_out, 1, "one hand-out record");

    // Asking for another serial while holding one is refused, naming what to record.
    let (code, _, stderr) = run(&mut take(&fx.out, "st1", &image, &["--serial", "SN000004"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("record it first") && stderr.contains(&serial),
        "{stderr}"
    );

    // Recorded, the station moves on; recording twice is fine, the other outcome is not.
    assert_eq!(run(&mut flashed(&fx.out, "st1", &serial, &[])).0, 0);
    let (code, stdout, _) = run(&mut flashed(&fx.out, "st1", &serial, &[]));
    assert_eq!((code, stdout.contains("already recorded")), (0, true));
    let (code, _, stderr) = run(&mut flashed(&fx.out, "st1", &serial, &["--spoiled"]));
    assert_eq!(code, 2, "{stderr}");
    let (code, stdout, _) = run(&mut take(&fx.out, "st1", &fx.work.path().join("next"), &[]));
    assert_eq!(code, 0);
    assert_ne!(stdout.split(' ').next(), Some(serial.as_str()));
}

#[test]
fn a_take_cut_short_at_each_step_loses_nothing() {
    let fx = batch(3);
    let to = fx.work.path().join("image");
    // Stopped after its pending note, before its claim: the bundle is still free for all.
    std::fs::create_dir_all(fx.out.join("stations/st1")).unwrap();
    std::fs::write(fx.out.join("stations/st1/pending"), "SN000001").unwrap();
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st2", &to, &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
    let (code, stdout, _) = run(&mut take(&fx.out, "st1", &to, &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "st1 moves on"
    );
    // Stopped after its claim, before its log line: handed back, logged once.
    let log = fx.out.join("stations/st1/log.csv");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(&log, text.lines().next().unwrap().to_string() + "\n").unwrap();
    let (code, stdout, _) = run(&mut take(&fx.out, "st1", &to, &[]));
    assert_eq!((code, stdout.as_str()), (0, "SN000002 gg-SN000002\n"));
    let st1: Vec<_> = station_logs(&fx.out)
        .into_iter()
        .filter(|r| r["station"] == "st1")
        .collect();
    assert_eq!(st1.len(), 1);
    assert_eq!(
        (st1[0]["serial"].as_str(), st1[0]["event"].as_str()),
        ("SN000002", "handed-out")
    );
    // Stopped after recording, before clearing its pending note: not handed back again.
    assert_eq!(run(&mut flashed(&fx.out, "st1", "SN000002", &[])).0, 0);
    std::fs::write(fx.out.join("stations/st1/pending"), "SN000002").unwrap();
    let (code, stdout, _) = run(&mut take(&fx.out, "st1", &to, &[]));
    assert_eq!((code, stdout.as_str()), (0, "SN000003 gg-SN000003\n"));
    assert_eq!(run(&mut flashed(&fx.out, "st1", "SN000003", &[])).0, 0);
    let (code, _, stderr) = run(&mut take(&fx.out, "st1", &to, &[]));
    assert_eq!(code, 3, "{stderr}");
}

#[test]
fn an_extracted_bundle_is_the_bundle_with_the_key_for_its_owner_only() {
    let fx = batch(2);
    let image = fx.work.path().join("image");
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &image, &["--serial", "SN000002"]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000002 gg-SN000002\n"),
        "{stderr}"
    );
    let zip = common::unzip(&fx.out.join("bundles/SN000002.zip"));
    for (name, (bytes, _)) in &zip {
        let path = image.join(name);
        assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{name}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, if name == KEY { 0o600 } else { 0o644 }, "{name}");
    }
    assert_eq!(
        openssl_public_key("cert", &image.join(CERT)),
        openssl_public_key("key", &image.join(KEY))
    );
    let leftovers: Vec<_> = std::fs::read_dir(image.join("greengrass/v2/claim-certs"))
        .unwrap()
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files");

    // `--to -`: the zip itself on standard output, serial and thing name on standard error.
    let output = take(&fx.out, "st2", Path::new("-"), &["--serial", "SN000001"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.stdout,
        std::fs::read(fx.out.join("bundles/SN000001.zip")).unwrap()
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "SN000001 gg-SN000001\n"
    );
}

/// The real bundle's entries plus one that climbs out of the root.
fn hostile_zip(real: &Path) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut buffer));
    let options = zip::write::SimpleFileOptions::default();
    for (name, (bytes, _)) in common::unzip(real) {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("greengrass/../../../evil", options).unwrap();
    zip.write_all(b"pwned").unwrap();
    zip.finish().unwrap();
    buffer
}

#[test]
fn bad_input_is_refused_with_one_line_and_nothing_changed() {
    let fx = batch(3);
    let to = fx.work.path().join("image");
    let st1 = fx.work.path().join("st1");
    assert_eq!(
        run(&mut take(&fx.out, "st1", &st1, &["--serial", "SN000001"])).0,
        0
    );
    assert_eq!(run(&mut flashed(&fx.out, "st1", "SN000001", &[])).0, 0);
    let bundle = fx.out.join("bundles/SN000003.zip");
    std::fs::write(&bundle, hostile_zip(&bundle)).unwrap();
    let not_a_batch = tempfile::tempdir().unwrap();
    let no_station = fx.work.path().join("no-station.toml");
    std::fs::write(&no_station, "[limits]\nconcurrency = 4\n").unwrap();

    let cases: Vec<(Command, &str)> = vec![
        (take(&fx.out, "st/2", &to, &[]), "station id"),
        (
            take(&fx.out, "st2", &to, &["--serial", "SN999999"]),
            "not in the batch",
        ),
        (
            take(&fx.out, "st2", &to, &["--serial", "SN000001"]),
            "already flashed by station st1",
        ),
        (
            take(not_a_batch.path(), "st2", &to, &[]),
            "not a claimfab batch directory",
        ),
        (
            take(&fx.out, "st2", &to, &["--serial", "SN000003"]),
            "not a plain relative path",
        ),
        (
            take(&fx.out, "st2", &to, &["--serial", "SN0/../1"]),
            "not a serial",
        ),
        (
            take(&fx.out, "st2", &fx.out.join("manifest.csv"), &[]),
            "not a directory",
        ),
        (flashed(&fx.out, "st2", "SN000002", &[]), "not handed out"),
        (
            flashed(&fx.out, "st2", "SN000001", &[]),
            "handed out to station st1",
        ),
        (
            {
                let mut cmd = claimfab();
                cmd.arg("take")
                    .arg(&fx.out)
                    .arg("--station-config")
                    .arg(&no_station)
                    .arg("--to")
                    .arg(&to);
                cmd
            },
            "no [station] section",
        ),
    ];
    for (mut cmd, cause) in cases {
        let before = floor_snapshot(&fx.out, &to);
        let (code, stdout, stderr) = run(&mut cmd);
        assert_eq!(code, 2, "{cmd:?}: {stderr}");
        assert_eq!(stdout, "", "{cmd:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains(cause),
            "{cmd:?}: expected {cause:?} in {stderr}"
        );
        assert_eq!(
            floor_snapshot(&fx.out, &to),
            before,
            "{cmd:?} changed nothing"
        );
        assert!(!to.exists(), "{cmd:?} wrote nothing under --to");
        assert!(!fx.work.path().join("evil").exists() && !fx.out.join("evil").exists());
    }
}

/// Where a killed take stopped, from what it left on disk.
fn kill_state(batch: &Path) -> &'static str {
    let Ok(pending) = std::fs::read_to_string(batch.join("stations/st1/pending")) else {
        return "before its pending note";
    };
    let logged = std::fs::read_to_string(batch.join("stations/st1/log.csv"))
        .unwrap_or_default()
        .lines()
        .last()
        .is_some_and(|line| line.contains(&format!(",{pending},")) && line.ends_with("handed-out"));
    match (batch.join("handout").join(&pending).exists(), logged) {
        (false, _) => "after its pending note, before its claim",
        (true, false) => "after its claim, before its log line",
        (true, true) => "after its log line",
    }
}

#[test]
fn a_station_killed_at_any_point_of_its_take_loses_nothing() {
    let fx = batch(30);
    let to = fx.work.path().join("image");
    let mut cut_at: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..20u64 {
        // SIGKILL the take after 2 to 14 ms: a debug take takes about 10 ms here, so the
        // kills fall before, during and after its claim (the test prints where).
        let mut victim = take(&fx.out, "st1", &to, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(2_000 + round * 600));
        let _ = victim.kill();
        victim.wait().unwrap();
        *cut_at.entry(kill_state(&fx.out)).or_insert(0) += 1;
        let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &to, &[]));
        // 4: cut after its hand-out was logged, so handed back as such.
        assert!(code == 0 || code == 4, "round {round}: {code} {stderr}");
        let serial = stdout.split(' ').next().unwrap().to_string();
        assert_eq!(
            run(&mut flashed(&fx.out, "st1", &serial, &[])).0,
            0,
            "round {round}"
        );
    }
    eprintln!("where the takes were cut: {cut_at:?}");
    // Every bundle this station claimed came back to it and is recorded, once.
    let logs = station_logs(&fx.out);
    let claimed: Vec<String> = std::fs::read_dir(fx.out.join("handout"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    assert_eq!(
        claimed.len(),
        20,
        "one bundle per round, none claimed and dropped"
    );
    for serial in &claimed {
        for event in ["handed-out", "flashed"] {
            let n = logs
                .iter()
                .filter(|r| &r["serial"] == serial && r["event"] == event)
                .count();
            assert_eq!(n, 1, "{serial} {event}");
        }
    }
}
