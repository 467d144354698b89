"""The pace benchmarks (issue 18 items 4 and 5), run by bench.py:

- shared_quota: two, then three `claimfab batch` processes at once against one account whose
  endpoint throttles CreateCertificateFromCsr and AttachPolicy at AWS's default 15/s, each
  process with the station's default limits (each believing it may use the whole 15/s). Their
  adaptive paces must together reach the quota (>= 95%) with no failed device. The combined rate
  is read from the processes' journals: certificates registered per second over the common run
  window (from the last process's first registration to the first process's last one).
- revoke: `claimfab revoke --all` of a batch (made first on an unthrottled UpdateCertificate)
  against an endpoint throttling UpdateCertificate at AWS's default 10/s: the rate at which the
  endpoint executed UpdateCertificate while the revoke ran (sampled once a second), and its
  wall time.

BENCH_SHARED_DEVICES (per process, default 600) and BENCH_REVOKE_DEVICES (default 10000) size
them; BENCH_ONLY=shared_quota or BENCH_ONLY=revoke runs one alone.
"""

import datetime
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from runs import (
    CLAIMFAB,
    FAST_LIMITS,
    OUT,
    QUOTA,
    Endpoint,
    commands,
    log,
    manifest_statuses,
    setup_account,
    shown,
    station,
)

SHARED_DEVICES = int(os.environ.get("BENCH_SHARED_DEVICES", "600"))
REVOKE_DEVICES = int(os.environ.get("BENCH_REVOKE_DEVICES", "10000"))
UPDATE_QUOTA = 10  # AWS IoT's default UpdateCertificate quota, per second.
PROCESSES = (2, 3)


def created_times(batch: Path) -> list[float]:
    """When each certificate of a batch was registered (its journal's `created` events), as
    seconds since the epoch."""
    times = []
    for line in (batch / "journal.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "created":
            at = event["at"].replace("Z", "+00:00")
            times.append(datetime.datetime.fromisoformat(at).timestamp())
    return sorted(times)


def combined_rate(batches: list[Path]) -> dict:
    """Registrations per second of all batches together over their common window, and over
    the whole run (first registration of any to last of any)."""
    runs = [created_times(b) for b in batches]
    start = max(r[0] for r in runs)
    end = min(r[-1] for r in runs)
    inside = sum(1 for r in runs for t in r if start <= t <= end)
    first = min(r[0] for r in runs)
    last = max(r[-1] for r in runs)
    total = sum(len(r) for r in runs)
    return {"window_seconds": end - start, "window_rate": inside / (end - start),
            "run_seconds": last - first, "run_rate": (total - 1) / (last - first)}


def shared_run(endpoint: Endpoint, default: Path, processes: int) -> dict:
    """`processes` batches of SHARED_DEVICES at once on one throttled account."""
    before = endpoint.stats()
    children, batches = [], []
    for p in range(processes):
        out = OUT / f"shared-{processes}-p{p + 1}"
        shutil.rmtree(out, ignore_errors=True)
        batches.append(out)
        cmd = [CLAIMFAB, "batch", "--station", default, "--out", out, "--count", SHARED_DEVICES,
               "--first-serial", f"P{processes}{p + 1}N000001"]
        commands.append(shown(cmd, f"<{processes} at once, endpoint {' '.join(endpoint.options)}>"))
        log_file = open(OUT / f"shared-{processes}-p{p + 1}.log", "w")
        children.append(subprocess.Popen([str(c) for c in cmd], env=endpoint.env,
                                         stdout=log_file, stderr=subprocess.STDOUT))
    codes = [child.wait() for child in children]
    after = endpoint.stats()
    statuses = [manifest_statuses(b) for b in batches]
    ready = sum(s.get("ready", 0) for s in statuses)
    throttled = {op: after[op]["throttled"] - before.get(op, {}).get("throttled", 0)
                 for op in ("CreateCertificateFromCsr", "AttachPolicy")}
    return {"processes": processes, "devices_each": SHARED_DEVICES, "exit_codes": codes,
            "ready": ready, "failed": processes * SHARED_DEVICES - ready,
            "throttled": throttled, **combined_rate(batches)}


def shared_quota_benchmark() -> dict:
    """Two, then three processes sharing one account's 15/s quotas."""
    throttle = ["--throttle", f"CreateCertificateFromCsr={QUOTA}", "--throttle",
                f"AttachPolicy={QUOTA}"]
    endpoint = Endpoint("endpoint-shared", throttle)
    default = station("station-default")
    setup_account(endpoint, default)
    results = {"quota": QUOTA, "runs": []}
    first_command = len(commands)
    for processes in PROCESSES:
        log(f"shared quota: {processes} claimfab batch processes of {SHARED_DEVICES} devices at"
            f" once, endpoint throttling at {QUOTA}/s")
        results["runs"].append(shared_run(endpoint, default, processes))
    endpoint.stop()
    results["commands"] = commands[first_command:]
    return results


class Sampler:
    """Samples an endpoint's executed count of one operation once a second, in a thread."""

    def __init__(self, endpoint: Endpoint, operation: str):
        self.endpoint, self.operation = endpoint, operation
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.wait(1.0):
            executed = self.endpoint.stats().get(self.operation, {}).get("executed", 0)
            self.samples.append((time.monotonic(), executed))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def rate(self, base: int, total: int) -> tuple[float, float]:
        """The executed rate between the first sample past `base` and the last before
        `base + total`: (requests/s, seconds)."""
        steady = [(t, n) for t, n in self.samples if base < n < base + total]
        (t0, n0), (t1, n1) = steady[0], steady[-1]
        return (n1 - n0) / (t1 - t0), t1 - t0


def revoke_benchmark() -> dict:
    """`revoke --all` of REVOKE_DEVICES claims at the default UpdateCertificate quota."""
    throttle = ["--throttle", f"UpdateCertificate={UPDATE_QUOTA}"]
    endpoint = Endpoint("endpoint-revoke", throttle)
    fast = station("station-fast", FAST_LIMITS)
    setup_account(endpoint, fast)
    out = OUT / "revoke-batch"
    shutil.rmtree(out, ignore_errors=True)
    log(f"revoke: making {REVOKE_DEVICES} claims first (raised limits, creates unthrottled)")
    subprocess.run([str(c) for c in [CLAIMFAB, "batch", "--station", fast, "--out", out,
                                     "--count", REVOKE_DEVICES]],
                   env=endpoint.env, check=True, stdout=subprocess.DEVNULL)
    before = endpoint.stats().get("UpdateCertificate", {})
    base = before.get("executed", 0)
    cmd = [CLAIMFAB, "revoke", out, "--all"]
    command = shown(cmd, f"<endpoint {' '.join(throttle)}; the batch made first with"
                         f" --count {REVOKE_DEVICES}>")
    commands.append(command)
    log(f"revoke: {REVOKE_DEVICES} claims, endpoint throttling UpdateCertificate at"
        f" {UPDATE_QUOTA}/s (about {REVOKE_DEVICES / UPDATE_QUOTA / 60:.0f} min)")
    sampler = Sampler(endpoint, "UpdateCertificate")
    started = time.monotonic()
    result = subprocess.run([str(c) for c in cmd], env=endpoint.env, capture_output=True,
                            text=True)
    elapsed = time.monotonic() - started
    sampler.stop()
    (OUT / "revoke.log").write_text(result.stdout + result.stderr)
    stats = endpoint.stats()["UpdateCertificate"]
    rate, steady_seconds = sampler.rate(base, REVOKE_DEVICES)
    statuses = manifest_statuses(out)
    endpoint.stop()
    return {"devices": REVOKE_DEVICES, "quota": UPDATE_QUOTA, "exit_code": result.returncode,
            "seconds": elapsed, "rate": rate, "steady_seconds": steady_seconds,
            "wall_rate": REVOKE_DEVICES / elapsed, "revoked": statuses.get("revoked", 0),
            "throttled": stats["throttled"] - before.get("throttled", 0),
            "update_requests": stats["requests"] - before.get("requests", 0),
            "commands": [command]}


def shared_quota_row(r: dict) -> str:
    runs = "; ".join(
        f"{run['processes']} processes x {run['devices_each']}: {run['window_rate']:.1f}/s over"
        f" the common {run['window_seconds']:.0f} s ({run['window_rate'] / r['quota']:.0%}),"
        f" {run['run_rate']:.1f}/s over the whole {run['run_seconds']:.0f} s"
        f" ({run['run_rate'] / r['quota']:.0%}); {run['failed']} failed; throttled"
        f" {run['throttled']['CreateCertificateFromCsr']} creates,"
        f" {run['throttled']['AttachPolicy']} attaches"
        for run in r["runs"])
    return (f"| shared quota: 2, then 3 `claimfab batch` at once on one account, endpoint throttling"
            f" at {r['quota']}/s, each process at the station's default limits (15/s) |"
            f" devices registered, all processes together: {runs} | | >= 95% of quota, 0 failed |")


def revoke_row(r: dict) -> str:
    return (f"| revoke: `revoke --all` of {r['devices']} claims, endpoint throttling"
            f" UpdateCertificate at {r['quota']}/s | {r['rate']:.2f}/s UpdateCertificate executed"
            f" over {r['steady_seconds']:.0f} s ({r['rate'] / r['quota']:.0%} of quota); wall"
            f" {r['seconds']:.0f} s, {r['wall_rate']:.2f} devices/s (floor"
            f" {r['devices'] / r['quota']:.0f} s); {r['revoked']} revoked, {r['throttled']}"
            f" throttled, {r['update_requests']} requests | | >= 95% of quota |")


PACE_BOUND = (
    "- **Shared quota and revoke.** Each API's pace starts at the station's rate and adapts to"
    " AWS's throttling (AIMD: 0.7 of itself on a throttle, once per excess; back up by 7% of the"
    " station's rate a second while requests succeed), so processes sharing an account settle"
    " at its quota; a 429 costs a request but no quota (AWS did not execute it), and the"
    " endpoint's bucket (a second of quota) absorbs the dips. That bucket starts full, which"
    " puts a rate measured over a window of a minute or two slightly above 100%.")


def rows(results: dict) -> list[str]:
    """The table rows of whichever pace benchmarks `results` holds."""
    return ([shared_quota_row(results["shared_quota"])] if "shared_quota" in results else []) + \
        ([revoke_row(results["revoke"])] if "revoke" in results else [])


ROW_PREFIXES = ("| shared quota:", "| revoke:")


def patch_benchmarks_md(text: str, results: dict, measured: str) -> str:
    """BENCHMARKS.md with the pace rows (and their note and commands) of a BENCH_ONLY run
    put in place: a row already there is replaced, a new one goes after the table's last row.
    Each such row says when it was measured, as the header's date is the full run's."""
    lines = text.splitlines()
    new_rows = [row.replace(" | | >= 95%", f" (measured {measured}, BENCH_ONLY) | | >= 95%")
                for row in rows(results)]
    for row in new_rows:
        prefix = next(p for p in ROW_PREFIXES if row.startswith(p))
        at = next((i for i, line in enumerate(lines) if line.startswith(prefix)), None)
        if at is None:
            at = max(i for i, line in enumerate(lines) if line.startswith("|")) + 1
            lines.insert(at, row)
        else:
            lines[at] = row
    if PACE_BOUND not in lines:
        at = next(i for i, line in enumerate(lines) if line.startswith("## Commands")) - 1
        lines.insert(at, PACE_BOUND)
    fence = max(i for i, line in enumerate(lines) if line == "```")
    ran = [c for k in ("shared_quota", "revoke") for c in results.get(k, {}).get("commands", [])]
    for command in ran:
        if command not in lines:
            lines.insert(fence, command)
            fence += 1
    return "\n".join(lines) + "\n"


def run_pace(only: str) -> dict:
    """BENCH_ONLY=shared_quota or revoke: runs it, merges its figures into results.json and
    its rows into BENCHMARKS.md."""
    path = OUT / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[only] = shared_quota_benchmark() if only == "shared_quota" else revoke_benchmark()
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results[only], indent=2))
    print("\n".join(rows({only: results[only]})))
    return results
