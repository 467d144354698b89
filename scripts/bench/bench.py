"""claimfab's benchmark, run by scripts/bench.sh: claimfab against the manual way (openssl +
AWS CLI per device, as in AWS's guide), a fair peer (a boto3 thread-pool script doing the same
calls and files) and the physical limits (criterion per-device costs against `openssl speed`,
AWS's 15/s quotas enforced by the local endpoint), plus memory at scale and AWS requests per
device counted at the endpoint. Prints a table and writes BENCHMARKS.md (machine, date,
figures, and the commands that produced them).

Sizes come from the environment so a quick run is possible (defaults are the issue's):
BENCH_LOCAL_DEVICES=10000 BENCH_MANUAL_SAMPLE=20 BENCH_QUOTA_DEVICES=600
BENCH_TAKE_BUNDLES=100000 BENCH_TAKES=200 BENCH_OUT=bench-out
BENCH_ONLY=take runs only the take benchmark (a minute or two) and prints its figures;
BENCH_ONLY=hook only the claim-binding hook's cold start (hook_cold_start.py beside this file);
BENCH_ONLY=cpu only claimfab's and the boto3 peer's CPU per device (BENCH_LOCAL_DEVICES each).
BENCH_ONLY=memory only claimfab's peak RSS and CPU per device over BENCH_MEMORY_SIZES devices
(default 10000,100000,1000000) with an in-process issuer instead of the endpoint (memory.py),
its figures merged into results.json and its row and note into BENCHMARKS.md.
BENCH_ONLY=local only the local-work rows (claimfab, the peer, the manual way, claimfab without
the SDK), over the last full run's results.json, BENCHMARKS.md rendered anew.
BENCH_ONLY=air_gap only `prepare` and `package` of BENCH_AIR_GAP_DEVICES devices (default
100000; air_gap.py), its row and note merged into BENCHMARKS.md.
BENCH_ONLY=profiles only the release-profile comparison (profiles.py: three cold builds, about
forty minutes), printed and written to profiles.json.
BENCH_ONLY=shared_quota or BENCH_ONLY=revoke only that pace benchmark (pace.py beside this file),
its figures merged into results.json and its rows into BENCHMARKS.md.

This file runs the parts in turn; runs.py has what they share (paths, sizes, the endpoint,
timed runs), take.py the take benchmark, report.py the rendering of BENCHMARKS.md.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys

import air_gap
import memory
import pace
import profiles

from report import hook_row, render
from runs import (
    BENCH_VENV,
    FAST_LIMITS,
    LOCAL_DEVICES,
    MANUAL_SAMPLE,
    OUT,
    QUOTA,
    QUOTA_DEVICES,
    REPO,
    TAKE_BUNDLES,
    TAKE_STATIONS,
    TAKES,
    Endpoint,
    claimfab_batch,
    commands,
    cpu_seconds,
    criterion_estimates,
    log,
    machine,
    openssl_sign_us,
    parse_kv,
    setup_account,
    shown,
    station,
    timed,
)
from take import take_benchmark, take_row


# --- the claim-binding hook's cold start -----------------------------------------------------
def hook_benchmark() -> dict:
    """The hook's init, first and warm invocation in fresh processes (hook_cold_start.py)."""
    summary = OUT / "hook.json"
    cmd = [REPO / ".venv/bin/python", REPO / "scripts/bench/hook_cold_start.py", "--runs", "20",
           "--summary", summary]
    commands.append(shown(cmd))
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)
    return json.loads(summary.read_text())


def local_work(results: dict, fast) -> None:
    """1. Local work on the unthrottled endpoint: claimfab, the boto3 peer, the manual way."""
    local_claimfab(results, fast)
    local_peer(results, fast)
    local_manual(results, fast)


def local_claimfab(results: dict, fast) -> None:
    log(f"local work: claimfab, {LOCAL_DEVICES} devices (unthrottled endpoint, raised limits)")
    endpoint = Endpoint("endpoint-local", [])
    setup_account(endpoint, fast)
    local = claimfab_batch(endpoint, fast, "claimfab-local", LOCAL_DEVICES,
                           "AWS_ENDPOINT_URL=<local, unthrottled>")
    results["local"] = local
    calls = sum(local["requests"].values())
    results["requests_per_device"] = calls / LOCAL_DEVICES
    endpoint.stop()


def local_peer(results: dict, fast) -> None:
    log(f"local work: boto3 thread-pool peer, {LOCAL_DEVICES} devices (fresh endpoint)")
    endpoint = Endpoint("endpoint-peer", [])
    setup = setup_account(endpoint, fast)
    peer_out = OUT / "peer-local"
    shutil.rmtree(peer_out, ignore_errors=True)
    peer_cmd = [BENCH_VENV / "python", REPO / "scripts/bench/peer_boto3.py",
                "--endpoint-url", endpoint.url, "--region", "us-east-1",
                "--count", LOCAL_DEVICES, "--out", peer_out, "--threads", "16",
                "--claim-policy", "GreengrassProvisioningClaimPolicy",
                "--data-endpoint", setup["iot_data_endpoint"],
                "--credential-endpoint", setup["iot_credential_endpoint"]]
    commands.append(shown(peer_cmd))
    elapsed, rss, stdout = timed(peer_cmd, endpoint.env, "peer-local")
    results["peer"] = {"seconds": elapsed, "rss_kib": rss, **parse_kv("peer", stdout)}
    endpoint.stop()


def local_manual(results: dict, fast) -> None:
    log(f"local work: the manual way, a sample of {MANUAL_SAMPLE} devices")
    endpoint = Endpoint("endpoint-manual", [])
    setup_account(endpoint, fast)
    manual_cmd = ["bash", REPO / "scripts/bench/manual.sh", endpoint.url, MANUAL_SAMPLE,
                  OUT / "manual"]
    commands.append(shown(manual_cmd))
    elapsed, _, stdout = timed(manual_cmd, {**endpoint.env, "PATH": f"{BENCH_VENV}:{os.environ['PATH']}"},
                               "manual")
    results["manual"] = {"seconds": elapsed, **parse_kv("manual", stdout)}
    endpoint.stop()


def at_quota(results: dict, default) -> None:
    """3. At quota: the endpoint throttles as AWS does at the default 15/s."""
    throttle = ["--throttle", f"CreateCertificateFromCsr={QUOTA}", "--throttle",
                f"AttachPolicy={QUOTA}"]
    log(f"at quota: claimfab, {QUOTA_DEVICES} devices, endpoint throttling at {QUOTA}/s")
    endpoint = Endpoint("endpoint-quota", throttle)
    setup_account(endpoint, default)
    quota = claimfab_batch(endpoint, default, "claimfab-quota", QUOTA_DEVICES,
                           f"AWS_ENDPOINT_URL=<local, {' '.join(throttle)}>")
    quota["throttled"] = {op: quota["stats"][op]["throttled"]
                          for op in ("CreateCertificateFromCsr", "AttachPolicy")}
    results["quota"] = quota
    endpoint.stop()

    log(f"at quota: the API reference's xargs -P 10 recipe, {QUOTA_DEVICES} CSRs")
    endpoint = Endpoint("endpoint-xargs", throttle)
    xargs_cmd = ["bash", REPO / "scripts/bench/xargs_recipe.sh", endpoint.url, QUOTA_DEVICES,
                 OUT / "xargs"]
    commands.append(shown(xargs_cmd, f"<endpoint {' '.join(throttle)}>"))
    elapsed, _, stdout = timed(xargs_cmd, {**endpoint.env, "PATH": f"{BENCH_VENV}:{os.environ['PATH']}"},
                               "xargs")
    results["xargs"] = {"seconds": elapsed, **parse_kv("xargs", stdout),
                        "throttled": endpoint.stats().get("CreateCertificateFromCsr", {}).get("throttled", 0)}
    endpoint.stop()


def cpu_per_device() -> None:
    """BENCH_ONLY=cpu: claimfab's and the boto3 peer's CPU per device on the unthrottled
    endpoint, side by side in one run, and what claimfab's share is made of: the same pipeline
    against an in-process issuer (no SDK, no HTTP), on the batch's disk and on tmpfs (where
    fsync costs nothing), from memory.py (cpu.json)."""
    results: dict = {"machine": machine()}
    fast = station("station-fast", FAST_LIMITS)
    local_claimfab(results, fast)
    local_peer(results, fast)
    ours = cpu_seconds("claimfab-local") / LOCAL_DEVICES * 1e3
    peer = cpu_seconds("peer-local") / max(results["peer"].get("ok", 0), 1) * 1e3
    results["cpu_ms_per_device"] = {"claimfab": ours, "peer": peer, "ratio": peer / ours}
    results["in_process"] = memory.in_process_cpu(LOCAL_DEVICES)
    (OUT / "cpu.json").write_text(json.dumps(results, indent=2, default=str))
    disk, tmpfs = results["in_process"]["disk"], results["in_process"]["tmpfs"]
    print(f"CPU per device, {LOCAL_DEVICES} devices: claimfab {ours:.2f} ms, boto3 peer "
          f"{peer:.2f} ms ({peer / ours:.1f}x); claimfab's pipeline without the SDK: "
          f"{disk:.3f} ms on disk, {tmpfs:.3f} ms on tmpfs")


def rerun_local() -> None:
    """BENCH_ONLY=local: the local-work rows measured again (claimfab, the boto3 peer, the
    manual way, and claimfab without the SDK) over the last full run's results.json, and
    BENCHMARKS.md rendered anew from it."""
    path = OUT / "results.json"
    results = json.loads(path.read_text())
    fast = station("station-fast", FAST_LIMITS)
    local_work(results, fast)
    results["in_process"] = memory.in_process_cpu(LOCAL_DEVICES)
    results["local_measured"] = machine()["date"]
    path.write_text(json.dumps(results, indent=2, default=str))
    report = render(results)
    (REPO / "BENCHMARKS.md").write_text(report)
    print(report)


def run_one(only: str) -> None:
    """BENCH_ONLY=hook, take or cpu: that benchmark alone, its figures printed."""
    if only == "cpu":
        cpu_per_device()
        return
    if only == "hook":
        hook = hook_benchmark()
        print(json.dumps(hook, indent=2))
        print(hook_row(hook))
        return
    log(f"take: {TAKES} takes by {TAKE_STATIONS} stations, batches of 1000 and {TAKE_BUNDLES}")
    take = take_benchmark()
    (OUT / "take.json").write_text(json.dumps({"machine": machine(), "take": take}, indent=2))
    print(json.dumps(take, indent=2))
    print(take_row(take))


def run_all() -> dict:
    results: dict = {"machine": machine()}
    fast = station("station-fast", FAST_LIMITS)
    default = station("station-default")
    local_work(results, fast)
    # 2. Per-device costs of the local stages and the raw crypto bound.
    log("criterion: key + CSR and bundle per device; openssl speed ecdsap256")
    results["criterion"] = criterion_estimates()
    results["openssl_sign_us"] = openssl_sign_us()
    at_quota(results, default)
    # What bounds claimfab's CPU: the same pipeline without the SDK, on disk and on tmpfs.
    results["in_process"] = memory.in_process_cpu(LOCAL_DEVICES)
    # 5. Take: one hand-out at a flashing station, at batch scale.
    log(f"take: {TAKES} takes by {TAKE_STATIONS} stations, batches of 1000 and {TAKE_BUNDLES}")
    results["take"] = take_benchmark()
    # 6. The adaptive pace: processes sharing a quota, and a revoke at UpdateCertificate's.
    results["shared_quota"] = pace.shared_quota_benchmark()
    results["revoke"] = pace.revoke_benchmark()
    # 7. Memory at a million devices, the pipeline against an in-process issuer.
    results["memory"] = memory.memory_benchmark()
    # 8. The air-gapped stages' local work: prepare and package.
    results["air_gap"] = air_gap.air_gap_benchmark()
    log("claim-binding hook: cold start in fresh processes")
    results["hook"] = hook_benchmark()
    results["commands"] = commands
    return results


def main() -> None:
    if sys.argv[1:] == ["--render-only"]:
        # Rewrites BENCHMARKS.md from the last run's figures (e.g. after changing the text).
        report = render(json.loads((OUT / "results.json").read_text()))
        (REPO / "BENCHMARKS.md").write_text(report)
        print(report)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if os.environ.get("BENCH_ONLY") in ("hook", "take", "cpu"):
        run_one(os.environ["BENCH_ONLY"])
        return
    if os.environ.get("BENCH_ONLY") == "profiles":
        profiles.run_profiles()
        return
    if os.environ.get("BENCH_ONLY") == "memory":
        memory.run_memory()
        return
    if os.environ.get("BENCH_ONLY") == "local":
        rerun_local()
        return
    if os.environ.get("BENCH_ONLY") == "air_gap":
        air_gap.run_air_gap()
        return
    if os.environ.get("BENCH_ONLY") in ("shared_quota", "revoke"):
        results = pace.run_pace(os.environ["BENCH_ONLY"])
        measured = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        md = REPO / "BENCHMARKS.md"
        md.write_text(pace.patch_benchmarks_md(md.read_text(), results, measured))
        return
    results = run_all()
    (OUT / "results.json").write_text(json.dumps(
        results, indent=2, default=str))
    report = render(results)
    (REPO / "BENCHMARKS.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
