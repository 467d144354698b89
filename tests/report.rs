//! `claimfab report` as a supervisor sees it: a batch taken, flashed and spoiled by two
//! stations, one board provisioned on the local data plane by AWS's device SDK; the page
//! opened in a real browser (Debian's headless Chromium), its numbers read from the rendered
//! DOM and compared with the station logs (csv crate) and the AWS API, and a screenshot kept
//! in `target/test-artifacts/report.png`. Then the same from the directories alone.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::line::Line;
use common::*;

/// The page as Chromium rendered it (`--dump-dom`), and its screenshot.
fn in_chromium(page: &Path, screenshot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let chromium = |extra: &[&str]| {
        let output = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1200,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium installed (scripts/test.sh)");
        assert!(
            output.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    chromium(&[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    dom
}

/// The text of the element carrying `data-metric="NAME"` after `from` in the DOM.
fn metric<'a>(dom: &'a str, from: &str, name: &str) -> &'a str {
    let start = dom
        .find(from)
        .unwrap_or_else(|| panic!("{from} not in the page"));
    let rest = &dom[start..];
    let at = rest
        .find(&format!("data-metric=\"{name}\""))
        .unwrap_or_else(|| panic!("no {name} after {from}"));
    let text = &rest[at..];
    let open = text.find('>').unwrap() + 1;
    let close = text[open..].find('<').unwrap();
    &text[open..open + close]
}

/// The sum of `data-count` over the chart's bars of one series.
fn bar_total(dom: &str, series: &str) -> usize {
    dom.match_indices(&format!("class=\"{series}\" data-count=\""))
        .map(|(at, found)| {
            let rest = &dom[at + found.len()..];
            rest[..rest.find('"').unwrap()].parse::<usize>().unwrap()
        })
        .sum()
}

fn claimfab_at(line: &Line, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = run(line.endpoint.claimfab().args(args));
    assert_eq!(code, 0, "{args:?}: {stdout}\n{stderr}");
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or_default()
}

#[test]
fn the_floor_report_shows_in_a_browser_what_the_logs_and_aws_say() {
    let line = Line::new("");
    let (rows, bundles) = line.batch("b", 6, "device");
    let dir = line.work.path().join("b");
    let dir_text = dir.to_str().unwrap();
    // A station holds one bundle at a time: take, then record what became of the board.
    let mut taken: Vec<(String, String)> = Vec::new();
    for (station, outcome) in [
        ("st1", "flashed"),
        ("st1", "flashed"),
        ("st1", "spoiled"),
        ("st2", "flashed"),
        ("st2", "flashed"),
    ] {
        let to = line.work.path().join(format!("image-{}", taken.len()));
        let take = [
            "--output",
            "json",
            "take",
            dir_text,
            "--station",
            station,
            "--to",
        ];
        let record = claimfab_at(&line, &[&take[..], &[to.to_str().unwrap()]].concat());
        let serial = record["serial"].as_str().unwrap().to_string();
        let spoiled: &[&str] = if outcome == "spoiled" {
            &["--spoiled"]
        } else {
            &[]
        };
        let flashed = ["flashed", dir_text, "--station", station, serial.as_str()];
        claimfab_at(&line, &[&flashed[..], spoiled].concat());
        taken.push((station.into(), serial));
    }
    // st2's first board comes online and provisions.
    let online = &taken[3].1;
    let position = rows.iter().position(|r| &r["serial"] == online).unwrap();
    let reports = line
        .endpoint
        .provision("java", &bundles[position..=position]);
    assert_eq!(reports[0]["ok"], true, "{reports:?}");
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let page = line.work.path().join("floor.html");
    let record = claimfab_at(
        &line,
        &[
            "report",
            dir_text,
            "--html",
            page.to_str().unwrap(),
            "--provision-within",
            "1s",
            "--output",
            "json",
        ],
    );
    assert_eq!(record["type"], "floor_report");
    assert_eq!(record["provisioning_known"], true);
    let dom = in_chromium(&page, &artifacts.join("report.png"));

    // What the station logs say, read with the csv crate.
    let mut events: HashSet<(String, String, String)> = HashSet::new();
    for station in std::fs::read_dir(dir.join("stations")).unwrap() {
        let path = station.unwrap().path().join("log.csv");
        if path.is_file() {
            let mut reader = csv::Reader::from_path(&path).unwrap();
            for record in reader.records() {
                let r = record.unwrap();
                events.insert((r[0].to_string(), r[2].to_string(), r[4].to_string()));
            }
        }
    }
    let count = |event: &str, station: Option<&str>| {
        (events.iter())
            .filter(|(s, _, e)| e == event && station.is_none_or(|st| st == s))
            .count()
            .to_string()
    };
    // What AWS says: the things of the batch's devices.
    let iot = line.rt.block_on(line.endpoint.client());
    let things: HashSet<String> = line.rt.block_on(async {
        let listed = iot.list_things().send().await.unwrap();
        listed
            .things()
            .iter()
            .filter_map(|t| t.thing_name().map(String::from))
            .collect()
    });
    let provisioned: Vec<&Row> = rows
        .iter()
        .filter(|r| things.contains(&r["thing_name"]))
        .collect();
    assert_eq!(provisioned.len(), 1);

    let batch = format!("data-batch=\"{}\"", dir.display());
    assert_eq!(metric(&dom, &batch, "made"), "6");
    assert_eq!(
        metric(&dom, &batch, "handed_out"),
        count("handed-out", None)
    );
    assert_eq!(metric(&dom, &batch, "flashed"), count("flashed", None));
    assert_eq!(metric(&dom, &batch, "spoiled"), count("spoiled", None));
    assert_eq!(metric(&dom, &batch, "provisioned"), "1");
    assert_eq!(metric(&dom, &batch, "retired"), "0");
    for station in ["st1", "st2"] {
        let row = format!("data-station=\"{station}\"");
        assert_eq!(
            metric(&dom, &row, "flashed"),
            count("flashed", Some(station))
        );
        assert_eq!(
            metric(&dom, &row, "spoiled"),
            count("spoiled", Some(station))
        );
    }
    assert_eq!(metric(&dom, "data-station=\"st1\"", "spoil_rate"), "33.3%");
    assert_eq!(bar_total(&dom, "flashed"), 4);
    assert_eq!(bar_total(&dom, "provisioned"), 1);
    // Overdue: flashed over 1 s ago, no thing: the other three flashed boards.
    assert_eq!(metric(&dom, &batch, "overdue"), "3");
    for (i, (_, serial)) in taken.iter().enumerate() {
        let listed = dom.contains(&format!("<td>{serial}</td>"));
        assert_eq!(listed, i != 2 && i != 3, "{serial} overdue: {listed}");
    }

    // From the directories alone: provisioning unknown, the floor's numbers the same.
    let offline_page = line.work.path().join("offline.html");
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .args(["report", dir_text, "--offline", "--html"])
        .arg(&offline_page));
    assert_eq!(code, 0, "{stderr}");
    let dom = in_chromium(&offline_page, &artifacts.join("report-offline.png"));
    assert_eq!(metric(&dom, &batch, "provisioned"), "unknown");
    assert_eq!(metric(&dom, &batch, "flashed"), "4");
    assert!(dom.contains("data-unknown=\"true\""));
}

#[test]
fn a_bad_html_target_is_refused_with_nothing_written() {
    let work = tempfile::tempdir().unwrap();
    let missing: PathBuf = work.path().join("no/such/dir/report.html");
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .args(["report", "/nonexistent", "--offline", "--html"])
        .arg(&missing));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--html"), "{stderr}");
    assert!(!work.path().join("no").exists());
}
