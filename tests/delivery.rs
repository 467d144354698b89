//! What `claimfab take` delivers to a device image, against a real batch (made on the local
//! AWS endpoint) and the real binary: a bundle tampered with on the share (a file it must not
//! hold, a key others may read, a file missing) is refused before it is handed out, for
//! `--to PATH` and `--to -`; a key a crashed extraction left under `--to` is gone after the
//! next take; directories and files get their modes whatever the umask; `--to -` refuses a
//! terminal. Checked on the files themselves, not only on claimfab's output.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{run, Fixture};

const KEY: &str = "greengrass/v2/claim-certs/claim.private.pem.key";
const CERT: &str = "greengrass/v2/claim-certs/claim.pem.crt";
const CA: &str = "greengrass/v2/AmazonRootCA1.pem";
const CONFIG: &str = "greengrass/v2/init-config/config.yaml";

/// A batch of `count` devices, made at the harness's high test rate.
fn batch(count: usize) -> Fixture {
    let fx = Fixture::new("");
    let (code, _, err) = run(&mut fx.batch(count));
    assert_eq!(code, 0, "{err}");
    fx
}

/// `claimfab take DIR --station ID --to TO [extra]`.
fn take(dir: &Path, station: &str, to: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::claimfab_without_endpoint();
    cmd.arg("take")
        .arg(dir)
        .args(["--station", station])
        .arg("--to")
        .arg(to)
        .args(extra);
    cmd
}

/// `claimfab flashed DIR --station st1 SERIAL`.
fn flashed(dir: &Path, serial: &str) -> Command {
    let mut cmd = common::claimfab_without_endpoint();
    cmd.arg("flashed")
        .arg(dir)
        .args(["--station", "st1", serial]);
    cmd
}

/// `cmd` run by `wrapper` (a shell, `script`) with the same environment.
fn wrapped(cmd: &Command, wrapper: &str, wrapper_args: &[&str]) -> Command {
    let mut outer = Command::new(wrapper);
    outer.args(wrapper_args).stdin(Stdio::null());
    for (name, value) in cmd.get_envs() {
        match value {
            Some(value) => outer.env(name, value),
            None => outer.env_remove(name),
        };
    }
    outer
}

/// A zip of `files` (name, bytes, mode), written with the zip crate.
fn zip_of(files: &[(String, Vec<u8>, u32)]) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(&mut buffer));
    for (name, bytes, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    buffer
}

/// The files of a real bundle, name, bytes and permission bits, in name order.
fn files_of(bundle: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let mut files: Vec<_> = common::unzip(bundle)
        .into_iter()
        .map(|(name, (bytes, mode))| (name, bytes, mode & 0o777))
        .collect();
    files.sort();
    files
}

/// Every file and directory under `root`, relative, with its permission bits.
fn tree(root: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            found.push((relative, meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The files under `root`, relative, in name order.
fn files_under(root: &Path) -> Vec<String> {
    tree(root)
        .into_iter()
        .map(|(path, _)| path)
        .filter(|path| !root.join(path).is_dir())
        .collect()
}

fn is_temp_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap();
    name.starts_with(".claimfab-tmp-") || name.starts_with(".tmp-")
}

#[test]
fn a_bundle_that_holds_more_or_less_than_its_four_files_is_never_handed_out() {
    let fx = batch(2);
    let bundle = fx.out.join("bundles/SN000001.zip");
    let original = std::fs::read(&bundle).unwrap();
    let files = files_of(&bundle);
    let with = |name: &str, bytes: &[u8], mode: u32| {
        let mut tampered = files.clone();
        tampered.push((name.to_string(), bytes.to_vec(), mode));
        zip_of(&tampered)
    };
    let rekeyed = |mode: u32| {
        let mut tampered = files.clone();
        tampered
            .iter_mut()
            .filter(|f| f.0 == KEY)
            .for_each(|f| f.2 = mode);
        zip_of(&tampered)
    };
    let without = |name: &str| {
        let tampered: Vec<_> = files.iter().filter(|f| f.0 != name).cloned().collect();
        zip_of(&tampered)
    };
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "a preloaded library",
            with("etc/ld.so.preload", b"/tmp/evil.so\n", 0o644),
            "entry \"etc/ld.so.preload\" does not belong in a bundle".into(),
        ),
        (
            "an ssh key",
            with(
                "root/.ssh/authorized_keys",
                b"ssh-ed25519 AAAA attacker",
                0o600,
            ),
            "entry \"root/.ssh/authorized_keys\" does not belong in a bundle".into(),
        ),
        (
            "a password file",
            with("etc/passwd", b"root::0:0::/root:/bin/sh\n", 0o644),
            "entry \"etc/passwd\" does not belong in a bundle".into(),
        ),
        (
            "a key others may read",
            rekeyed(0o644),
            format!("entry \"{KEY}\" has mode 100644, not a plain file of mode 0600"),
        ),
        // What verify finds first; the layout would refuse it as well ("has no entry").
        (
            "no root CA",
            without(CA),
            format!("names the root CA /{CA} but the bundle has no such file"),
        ),
    ];
    let image = fx.work.path().join("image");
    for (what, zip, cause) in &cases {
        std::fs::write(&bundle, zip).unwrap();
        for to in [image.as_path(), Path::new("-")] {
            let (code, stdout, stderr) =
                run(&mut take(&fx.out, "st1", to, &["--serial", "SN000001"]));
            assert_eq!(code, 2, "{what}, --to {}: {stderr}", to.display());
            assert_eq!(stdout, "", "{what}: nothing on standard output");
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(
                stderr.contains(cause),
                "{what}: expected {cause:?} in {stderr}"
            );
            let layout_refusal = cause.contains("does not belong") || cause.contains("mode");
            assert!(
                !layout_refusal || stderr.contains("the batch's bundles hold exactly: "),
                "{stderr}"
            );
            assert!(!image.exists(), "{what}: nothing written under --to");
            assert!(
                !fx.out.join("handout/SN000001").exists(),
                "{what}: not handed out"
            );
        }
    }
    // The bundle as the batch made it is handed out: the tampering alone was refused.
    std::fs::write(&bundle, original).unwrap();
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &image, &["--serial", "SN000001"]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
    assert_eq!(files_under(&image), [CA, CERT, KEY, CONFIG]);
}

#[test]
fn the_next_take_removes_a_key_a_crashed_extraction_left_under_to() {
    let fx = batch(1);
    let image = fx.work.path().join("image");
    // What a take killed between writing the key's temporary file and renaming it leaves,
    // by this claimfab and by an earlier one.
    let left = [
        "greengrass/v2/claim-certs/.claimfab-tmp-99999-0",
        "greengrass/v2/claim-certs/.tmp-Ab12Cd",
        "greengrass/v2/init-config/.claimfab-tmp-99999-3",
    ];
    for path in left {
        let path = image.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nthe previous board's\n").unwrap();
    }
    let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &image, &[]));
    assert_eq!(
        (code, stdout.as_str()),
        (0, "SN000001 gg-SN000001\n"),
        "{stderr}"
    );
    assert_eq!(
        files_under(&image),
        [CA, CERT, KEY, CONFIG],
        "only the bundle's files"
    );
    let real = files_of(&fx.out.join("bundles/SN000001.zip"));
    for (name, bytes, _) in real {
        assert_eq!(std::fs::read(image.join(&name)).unwrap(), bytes, "{name}");
    }
}

#[test]
fn a_take_killed_anywhere_leaves_no_key_behind_after_the_next() {
    let fx = batch(24);
    let image = fx.work.path().join("image");
    for round in 0..12u64 {
        // SIGKILL after 2 to 13 ms: some kills fall inside the extraction (a debug take
        // takes about 10 ms here).
        let mut victim = take(&fx.out, "st1", &image, &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_micros(2_000 + round * 1_000));
        let _ = victim.kill();
        victim.wait().unwrap();
        let (code, stdout, stderr) = run(&mut take(&fx.out, "st1", &image, &[]));
        // 4: killed after its hand-out was logged, so the bundle comes back as a hand-back.
        assert!(code == 0 || code == 4, "round {round}: {code} {stderr}");
        let temps: Vec<_> = tree(&image)
            .into_iter()
            .filter(|(path, _)| is_temp_name(path))
            .collect();
        assert!(temps.is_empty(), "round {round}: {temps:?}");
        let serial = stdout.split(' ').next().unwrap().to_string();
        assert_eq!(run(&mut flashed(&fx.out, &serial)).0, 0, "round {round}");
    }
}

#[test]
fn directories_and_files_under_to_get_their_modes_whatever_the_umask() {
    let fx = batch(2);
    for (umask, serial) in [("077", "SN000001"), ("000", "SN000002")] {
        let image = fx.work.path().join(format!("image-{umask}"));
        let inner = take(&fx.out, "st1", &image, &["--serial", serial]);
        let script = format!("umask {umask} && exec \"$0\" \"$@\"");
        let mut cmd = wrapped(&inner, "sh", &["-c", &script]);
        cmd.arg(inner.get_program()).args(inner.get_args());
        let (code, _, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "umask {umask}: {stderr}");
        let mut expected = vec![
            (String::new(), 0o755),
            ("greengrass".to_string(), 0o755),
            ("greengrass/v2".to_string(), 0o755),
            ("greengrass/v2/claim-certs".to_string(), 0o755),
            ("greengrass/v2/init-config".to_string(), 0o755),
            (CA.to_string(), 0o644),
            (CERT.to_string(), 0o644),
            (KEY.to_string(), 0o600),
            (CONFIG.to_string(), 0o644),
        ];
        expected.sort();
        let root_mode = std::fs::metadata(&image).unwrap().permissions().mode() & 0o7777;
        let mut found = tree(&image);
        found.push((String::new(), root_mode));
        found.sort();
        assert_eq!(found, expected, "umask {umask}");
        assert_eq!(run(&mut flashed(&fx.out, serial)).0, 0);
    }
}

/// Single-quoted for `sh`.
fn quoted(arg: &std::ffi::OsStr) -> String {
    format!("'{}'", arg.to_string_lossy().replace('\'', r"'\''"))
}

#[test]
fn a_key_is_not_written_to_a_terminal() {
    let fx = batch(1);
    let inner = take(&fx.out, "st1", Path::new("-"), &[]);
    let line: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(quoted)
        .collect();
    // `script` runs the take with a pseudo-terminal as its standard output.
    let mut cmd = wrapped(&inner, "script", &["-qec", &line.join(" "), "/dev/null"]);
    let (code, shown, stderr) = run(&mut cmd);
    assert_eq!(code, 2, "{shown} {stderr}");
    assert!(
        shown.contains(
            "--to \"-\": writes a claim key; redirect standard output to the flasher or a file"
        ),
        "{shown}"
    );
    assert!(!shown.contains("PRIVATE KEY"), "no key on the terminal");
    let handed_out: Vec<PathBuf> = std::fs::read_dir(fx.out.join("handout"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(handed_out.is_empty(), "nothing handed out: {handed_out:?}");
    // Redirected, the same take hands the bundle out.
    let output = take(&fx.out, "st1", Path::new("-"), &[]).output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        output.stdout,
        std::fs::read(fx.out.join("bundles/SN000001.zip")).unwrap()
    );
}
