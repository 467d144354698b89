"""What every part of the benchmark shares: paths, sizes (from BENCH_* variables), the local
endpoint in its own state directory, timed runs under GNU time, claimfab batches, the machine's
description and the record of every measuring command (for BENCHMARKS.md)."""

import csv
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLAIMFAB = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "release" / "claimfab"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
BENCH_VENV = REPO / ".venv-bench" / "bin"
QUOTA = 15  # AWS IoT's default CreateCertificateFromCsr and AttachPolicy quotas, per second.

LOCAL_DEVICES = int(os.environ.get("BENCH_LOCAL_DEVICES", "10000"))
MANUAL_SAMPLE = int(os.environ.get("BENCH_MANUAL_SAMPLE", "20"))
QUOTA_DEVICES = int(os.environ.get("BENCH_QUOTA_DEVICES", "600"))
TAKE_BUNDLES = int(os.environ.get("BENCH_TAKE_BUNDLES", "100000"))
TAKES = int(os.environ.get("BENCH_TAKES", "200"))
TAKE_STATIONS = 2
OUT = (REPO / os.environ.get("BENCH_OUT", "bench-out")).resolve()

# A station whose limits are far above what the local endpoint can serve, so that the endpoint,
# not claimfab's pacing, bounds the run (AWS's quotas are measured separately, "at quota").
# Unthrottled, and 16 in flight like the boto3 peer's 16 threads: the local endpoint is one
# Python process, and 64 connections at once made it 45% slower for whoever sent them.
FAST_LIMITS = """
[limits]
create_certificate_from_csr_per_second = 10000
attach_policy_per_second = 10000
concurrency = 16
"""

commands: list[str] = []  # every measuring command, for BENCHMARKS.md


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def shown(cmd: list, env_note: str = "") -> str:
    text = " ".join(re.sub(r"http://127\.0\.0\.1:\d+", "$AWS_ENDPOINT_URL", str(c))
                    .replace(str(REPO) + "/", "") for c in cmd)
    return f"{env_note} {text}".strip()


class Endpoint:
    """The local AWS endpoint (scripts/local-aws/local_endpoint.py) in its own state directory."""

    def __init__(self, name: str, options: list[str]):
        self.state = OUT / name
        shutil.rmtree(self.state, ignore_errors=True)
        self.state.mkdir(parents=True)
        self.options = options
        self.proc = subprocess.Popen(
            [VENV_PYTHON, REPO / "scripts/local-aws/local_endpoint.py", "--state-dir", self.state,
             "--exit-with-parent", *options],
            stdout=subprocess.PIPE, stderr=open(self.state / "endpoint.log", "w"), text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("ready "):
            raise SystemExit(f"bench: the local endpoint did not start: {line!r}")
        self.url = line.split(" ", 1)[1]
        self.env = {
            **os.environ, "AWS_ENDPOINT_URL": self.url, "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
        }
        for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            self.env.pop(var, None)

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_claimfab/stats") as response:
            return json.load(response)["operations"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def requests_between(before: dict, after: dict) -> dict:
    return {op: after[op]["requests"] - before.get(op, {}).get("requests", 0)
            for op in after if after[op]["requests"] != before.get(op, {}).get("requests", 0)}


def timed(cmd: list, env: dict, name: str) -> tuple[float, int, str]:
    """Runs cmd under GNU time: wall seconds, peak RSS in KiB, stdout."""
    time_file = OUT / f"{name}.time"
    started = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-v", "-o", time_file, *map(str, cmd)],
                            env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    (OUT / f"{name}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"bench: {name} failed (exit {result.returncode}); see {OUT}/{name}.log")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                        time_file.read_text()).group(1))
    return elapsed, rss, result.stdout


def station(name: str, extra: str = "") -> Path:
    path = OUT / f"{name}.toml"
    path.write_text(f"# bench station: AWS's defaults{' with raised limits' if extra else ''}\n{extra}")
    return path


def setup_account(endpoint: Endpoint, station_file: Path) -> dict:
    subprocess.run([CLAIMFAB, "setup", "--station", station_file], env=endpoint.env, check=True,
                   stdout=subprocess.DEVNULL)
    return json.loads(station_file.with_suffix(".setup.json").read_text())


def manifest_statuses(batch: Path) -> dict:
    with open(batch / "manifest.csv", newline="") as f:
        counts: dict = {}
        for row in csv.DictReader(f):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    return counts


def claimfab_batch(endpoint: Endpoint, station_file: Path, name: str, count: int,
                   env_note: str) -> dict:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    cmd = [CLAIMFAB, "batch", "--station", station_file, "--out", out, "--count", count]
    commands.append(shown(cmd, env_note))
    before = endpoint.stats()
    elapsed, rss, stdout = timed(cmd, endpoint.env, name)
    after = endpoint.stats()
    rates = dict(re.findall(r"(\w+): \d+ calls, ([\d.]+)/s", stdout))
    statuses = manifest_statuses(out)
    return {"seconds": elapsed, "rss_kib": rss, "stdout": stdout, "statuses": statuses,
            "ready": statuses.get("ready", 0), "requests": requests_between(before, after),
            "stats": after, "rates": {k: float(v) for k, v in rates.items()}}


def parse_kv(line_prefix: str, stdout: str) -> dict:
    for line in reversed(stdout.splitlines()):
        if line.startswith(line_prefix + " "):
            return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", line)}
    raise SystemExit(f"bench: no '{line_prefix} ...' result line in:\n{stdout[-2000:]}")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in open("/proc/meminfo")
                   if line.startswith("MemTotal"))
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "os": f"{platform.system()} {platform.release()}", "rustc": rustc,
            "openssl": openssl, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def criterion_estimates() -> dict:
    """Mean time per iteration (µs) of each per-device benchmark, from criterion's output."""
    cmd = ["cargo", "bench", "--locked", "--bench", "per_device"]
    commands.append(shown(cmd))
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    estimates = {}
    for path in (REPO / "target" / "criterion").glob("**/new/estimates.json"):
        name = path.parent.parent.relative_to(REPO / "target" / "criterion").as_posix()
        estimates[name] = json.loads(path.read_text())["mean"]["point_estimate"] / 1000.0
    return estimates


def openssl_sign_us() -> float:
    """ECDSA P-256 signatures: µs each, on one core, from `openssl speed`."""
    cmd = ["openssl", "speed", "-seconds", "3", "ecdsap256"]
    commands.append(shown(cmd))
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    # The result row: "256 bits ecdsa (nistp256)   0.0000s   0.0001s  39325.5  13420.0"
    # (sign s, verify s, sign/s, verify/s); the per-second column has the precision.
    row = next(line for line in out.splitlines() if "ecdsa (nistp256)" in line)
    signs_per_second = float(row.split(")")[1].split()[2])
    return 1e6 / signs_per_second


def cpu_seconds(name: str) -> float:
    """User + system CPU seconds of a timed run (the tool and its child processes, not the
    endpoint), from its GNU time report."""
    text = (OUT / f"{name}.time").read_text()
    return sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", text).group(1))
               for kind in ("User", "System"))


def patch_benchmarks_md(text: str, row_prefix: str, new_row: str, note_prefix: str, note: str,
                        new_commands: list[str]) -> str:
    """BENCHMARKS.md with one benchmark's row and note in place (replaced if there, else the
    row after the table's last row and the note first among the bounds) and its commands
    listed: what a BENCH_ONLY run of it changes."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(row_prefix)), None)
    if at is None:
        lines.insert(max(i for i, line in enumerate(lines) if line.startswith("|")) + 1, new_row)
    else:
        lines[at] = new_row
    at = next((i for i, line in enumerate(lines) if line.startswith(note_prefix)), None)
    if at is None:
        lines.insert(lines.index("## What bounds each figure") + 2, note)
    else:
        lines[at] = note
    fence = max(i for i, line in enumerate(lines) if line == "```")
    for command in new_commands:
        if command not in lines:
            lines.insert(fence, command)
            fence += 1
    return "\n".join(lines) + "\n"


def run_alone(key: str, benchmark, row, patch) -> None:
    """A BENCH_ONLY run of one benchmark: runs it, merges its figures into results.json
    under `key`, prints them, and patches BENCHMARKS.md with `patch(text, figures, date)`."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[key] = benchmark()
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results[key], indent=2))
    print(row(results[key]))
    measured = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    md = REPO / "BENCHMARKS.md"
    md.write_text(patch(md.read_text(), results[key], measured))
