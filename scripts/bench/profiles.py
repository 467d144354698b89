"""The release profile, chosen by measurement (BENCH_ONLY=profiles): for each candidate
profile, a cold `cargo build --release` in its own target directory (its wall time and the
binary's size), then claimfab's CPU per device with that build: `claimfab batch` of
BENCH_PROFILE_DEVICES devices (default 2000) against a fresh unthrottled local endpoint (the
AWS SDK's work included; the claimfab process's CPU only, from GNU time), twice. Profiles are
set through Cargo's CARGO_PROFILE_RELEASE_* variables, so the candidates need no edit of
Cargo.toml. Prints a table and writes bench-out/profiles.json; takes about forty minutes on 2
cores (three cold builds)."""

import json
import os
import shutil
import subprocess
import time

from runs import FAST_LIMITS, OUT, REPO, Endpoint, cpu_seconds, log, machine, setup_account, station, timed

CANDIDATES = {
    "as-is (opt-level 3, 16 codegen units, no LTO)": {},
    "thin LTO": {"CARGO_PROFILE_RELEASE_LTO": "thin"},
    "fat LTO, 1 codegen unit": {"CARGO_PROFILE_RELEASE_LTO": "fat",
                                "CARGO_PROFILE_RELEASE_CODEGEN_UNITS": "1"},
}
DEVICES = int(os.environ.get("BENCH_PROFILE_DEVICES", "2000"))


def build(name: str, overrides: dict) -> tuple[dict, dict]:
    """A cold release build of the binary: its environment and figures."""
    target = OUT / f"target-profile-{name.split()[0].strip('(-')}"
    shutil.rmtree(target, ignore_errors=True)
    env = {**os.environ, **overrides, "CARGO_TARGET_DIR": str(target)}
    log(f"profiles: cold release build, {name}")
    started = time.monotonic()
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, env=env, check=True)
    seconds = time.monotonic() - started
    binary = target / "release" / "claimfab"
    return env, {"build_seconds": seconds, "binary_bytes": binary.stat().st_size, "binary": binary}


def cpu_through_endpoint(name: str, binary, attempt: int) -> float:
    fast = station("station-fast", FAST_LIMITS)
    endpoint = Endpoint("endpoint-profile", [])
    setup_account(endpoint, fast)
    out = OUT / "profile-batch"
    shutil.rmtree(out, ignore_errors=True)
    run = f"profile-{name.split()[0]}-{attempt}"
    timed([binary, "batch", "--station", fast, "--out", out, "--count", DEVICES], endpoint.env, run)
    endpoint.stop()
    shutil.rmtree(out, ignore_errors=True)
    return cpu_seconds(run) / DEVICES * 1e3


def run_profiles() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "devices": DEVICES, "profiles": {}}
    for name, overrides in CANDIDATES.items():
        env, figures = build(name, overrides)
        figures["cpu_ms_per_device"] = [cpu_through_endpoint(name, figures["binary"], n)
                                        for n in (1, 2)]
        figures["binary"] = str(figures["binary"])
        results["profiles"][name] = figures
        shutil.rmtree(env["CARGO_TARGET_DIR"], ignore_errors=True)
        (OUT / "profiles.json").write_text(json.dumps(results, indent=2))
    print(f"| release profile | cold build | binary | CPU per device, batch of {DEVICES} on the"
          " endpoint (two runs) |")
    print("|---|---|---|---|")
    for name, f in results["profiles"].items():
        runs = ", ".join(f"{ms:.2f}" for ms in f["cpu_ms_per_device"])
        print(f"| {name} | {f['build_seconds']:.0f} s | {f['binary_bytes'] / 1e6:.1f} MB | {runs} ms |")


# The README's second command, cold on a fresh clone: measured by hand (`time CI=true bash
# .ci/run` in a new clone), since it takes longer than the rest of the benchmark.
TEST_COMMAND_COLD = "22 min 59 s on 2026-12-04 (at 7cfa150, the machine otherwise idle)"


def notes() -> list[str]:
    """The release-profile note for BENCHMARKS.md, from the last BENCH_ONLY=profiles run."""
    path = OUT / "profiles.json"
    if not path.exists():
        return []
    results = json.loads(path.read_text())
    figures = "; ".join(
        f"{name} {f['build_seconds']:.0f} s, {f['binary_bytes'] / 1e6:.1f} MB,"
        f" {' and '.join(f'{ms:.2f}' for ms in f['cpu_ms_per_device'])} ms"
        for name, f in results["profiles"].items())
    return [
        f"- **Release profile** (`BENCH_ONLY=profiles bash scripts/bench.sh`,"
        f" {results['machine']['date']}). Cold `cargo build --release`, binary size, and"
        f" claimfab's CPU per device for a {results['devices']:,}-device batch on the unthrottled"
        f" endpoint (two runs each): {figures}. CPU per device does not differ beyond run-to-run"
        " noise (the time is the SDK's and the kernel's, above), so Cargo.toml's choice is thin"
        " LTO: the fastest cold build here and a smaller binary; unwinding is kept (a panicking"
        " packaging thread becomes an error and the manifest is still written). The cold release"
        " build is most of what the README's first command (`scripts/demo.sh`) spends; the second"
        f" (`scripts/test.sh`) took {TEST_COMMAND_COLD} (`time CI=true bash .ci/run` in a fresh"
        " clone): a debug build of the tests, `cargo clippy`'s own check build of every crate,"
        " and the end-to-end tests. What cuts it: the SDK crates unoptimized in the dev profile"
        " and no debug info for dependencies (both in Cargo.toml); clippy's check build is the"
        " largest remaining duplicate.",
    ]
