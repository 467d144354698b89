//! Shell completions and man pages, checked by the programs that consume them: bash
//! completes with the script `claimfab completions bash` prints, and groff renders every page
//! of `claimfab man --out` without a warning, one page per subcommand of `claimfab --help`.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// The subcommands `claimfab --help` lists.
fn subcommands() -> Vec<String> {
    let (code, help, _) = run(claimfab_without_endpoint().arg("--help"));
    assert_eq!(code, 0);
    let listed = help.split("Commands:").nth(1).unwrap();
    let names: Vec<String> = listed
        .lines()
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .map(|line| line.split_whitespace().next().unwrap().to_string())
        .filter(|name| name != "help")
        .collect();
    assert!(names.len() > 10, "{help}");
    names
}

/// What bash completes for `words` (the last one being completed) with claimfab's script.
fn bash_completes(words: &str) -> Vec<String> {
    let (code, script, stderr) = run(claimfab_without_endpoint().args(["completions", "bash"]));
    assert_eq!(code, 0, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("claimfab.bash");
    std::fs::write(&path, script).unwrap();
    let program = format!(
        "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
         COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
         _claimfab claimfab \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path.display()
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    assert_eq!(bash_completes("claimfab ro"), ["rotate"]);
    let all = bash_completes("claimfab ''");
    for name in subcommands() {
        assert!(all.contains(&name), "{name} not completed: {all:?}");
    }
    let take = bash_completes("claimfab take --st");
    assert!(
        take.contains(&"--station".to_string()) && take.contains(&"--station-config".to_string()),
        "{take:?}"
    );
}

#[test]
fn every_shell_gets_a_script_naming_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, script, stderr) = run(claimfab_without_endpoint().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {stderr}");
        for name in subcommands() {
            assert!(script.contains(&name), "{shell} script lacks {name}");
        }
    }
    let (code, _, stderr) = run(claimfab_without_endpoint().args(["completions", "tcsh"]));
    assert_eq!(code, 2, "an unknown shell is bad input: {stderr}");
}

#[test]
fn man_pages_render_without_warnings_one_per_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    let (code, stdout, stderr) = run(claimfab_without_endpoint().args(["man", "--out"]).arg(&out));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let mut expected: Vec<String> = subcommands()
        .iter()
        .map(|name| format!("claimfab-{name}.1"))
        .collect();
    expected.push("claimfab.1".into());
    expected.sort();
    let mut written: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    assert_eq!(written, expected);
    for page in &written {
        let rendered = Command::new("groff")
            // -P-cbou: plain text, no overstriking for bold and underline.
            .args(["-man", "-Tutf8", "-P-cbou", "-ww"])
            .arg(out.join(page))
            .output()
            .expect("groff installed (scripts/test.sh)");
        let warnings = String::from_utf8_lossy(&rendered.stderr);
        assert!(
            rendered.status.success() && warnings.is_empty(),
            "{page}: {warnings}"
        );
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("SYNOPSIS"), "{page}");
    }
    let take = String::from_utf8_lossy(
        &Command::new("groff")
            .args(["-man", "-Tascii", "-P-cbou"])
            .arg(out.join("claimfab-take.1"))
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(take.contains("--station-config"), "{take}");

    // The same pages again: replaced in place, nothing else left behind.
    let (code, _, _) = run(claimfab_without_endpoint().args(["man", "--out"]).arg(&out));
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), expected.len());
}

#[test]
fn man_prints_its_page_and_refuses_a_file_for_a_directory() {
    let (code, page, _) = run(claimfab_without_endpoint().arg("man"));
    assert_eq!(code, 0);
    assert!(
        page.starts_with(".ie") && page.contains(".TH claimfab 1"),
        "{page}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pages");
    std::fs::write(&file, "mine").unwrap();
    let (code, _, stderr) = run(claimfab_without_endpoint()
        .args(["man", "--out"])
        .arg(&file));
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--out") && stderr.contains("not a directory"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}
