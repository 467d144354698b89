"""Cold-start benchmark of the claim-binding pre-provisioning hook (src/hooks/claim_binding.py).

AWS IoT waits at most 5 seconds, wall clock, for a pre-provisioning hook, and a cold start's
init counts in them. This measures what the hook itself spends, in fresh Python processes:

  init   importing claim_binding: `import boto3`, loading the AWS IoT service model, making
         the client (Lambda's init phase), plus compiling the module (no .pyc: Lambda's
         package holds the .py only)
  first  the first invocation after init: DescribeCertificate and ListAttachedPolicies,
         concurrently, on new HTTP connections, then the decision
  warm   a second invocation in the same process (connections and threads reused)
  init+first  what a cold start adds up to, as far as the hook is concerned
  spawn  from starting the process to its first statement (the interpreter's own start;
         CLOCK_MONOTONIC, comparable across processes on Linux)

Setup, through boto3 on the project's local AWS endpoint (scripts/local-aws/local_endpoint.py:
moto in process, account 123456789012): a claim policy, and a claim certificate made by
CreateCertificateFromCsr (setAsActive, CSR subject CN=<thing name>) with the claim policy
attached; a second certificate stands for the device certificate the event names. Each run
then starts a fresh interpreter (this one) with AWS_ENDPOINT_URL, AWS_REGION=us-east-1,
testing keys and CLAIMFAB_CLAIM_POLICIES set, imports the hook from a directory holding only
claim_binding.py (as Lambda's package does), and invokes handler twice with a realistic
event and a Lambda-like context (4-second function timeout). Both decisions must be `allow`
(the hook admitted the genuine claim), or the benchmark fails.

Not Lambda: the local endpoint answers over loopback HTTP in about a millisecond (AWS IoT's
regional endpoint is HTTPS across a network: TLS handshakes and round trips add to "first"),
this machine's CPU is not a Lambda vCPU share (Lambda gives CPU in proportion to memory:
512 MB is about 0.3 vCPU, which stretches the CPU-bound init), the packages here are the
venv's (boto3/botocore versions and .pyc caches differ from the Lambda runtime's), and
Lambda's own sandbox and runtime start are not included. Read the figures as the hook's
own share, to compare versions of it, not as AWS IoT's end-to-end latency.

Usage: .venv/bin/python scripts/bench/hook_cold_start.py [--runs N] [--summary FILE]   (default 20 runs)
Prints one JSON line per run, then a summary table (milliseconds), also written as JSON to
FILE with --summary (scripts/bench/report.py's hook row); exits 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "src/hooks/claim_binding.py"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account, the local endpoint's
TEMPLATE_ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:provisioningtemplate/GreengrassFleetProvisioningTemplate"
CLAIM_POLICY = "GreengrassProvisioningClaimPolicy"
THING_NAME = "bench-gg-0001"
FUNCTION_TIMEOUT_S = 4.0  # the hook's Lambda timeout (src/core/account_documents.rs)

# The fresh process: argv = [hook dir, event JSON, spawn time]. It prints one JSON line last.
CHILD = r"""
import time
t_start = time.perf_counter()
t_start_mono = time.monotonic()
import contextlib, io, json, sys

hook_dir, event, spawned = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
sys.path.insert(0, hook_dir)


class Context:
    def __init__(self, timeout_s):
        self.ends = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self):
        return int((self.ends - time.monotonic()) * 1000)


def invoke():
    out = io.StringIO()
    context = Context(float(sys.argv[4]))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        answer = claim_binding.handler(event, context)
    elapsed = time.perf_counter() - t0
    record = json.loads(out.getvalue().splitlines()[-1])
    return elapsed, answer, record


t0 = time.perf_counter()
import claim_binding
init = time.perf_counter() - t0
first, answer1, record1 = invoke()
warm, answer2, record2 = invoke()
print(json.dumps({
    "spawn_ms": (t_start_mono - spawned) * 1000,
    "init_ms": init * 1000,
    "first_ms": first * 1000,
    "warm_ms": warm * 1000,
    "init_first_ms": (init + first) * 1000,
    "client_at_import": claim_binding._iot is not None and claim_binding._iot_failure is None,
    "first": {"allow": answer1["allowProvisioning"], "reason": record1["reason"], "detail": record1["detail"]},
    "warm": {"allow": answer2["allowProvisioning"], "reason": record2["reason"], "detail": record2["detail"]},
}))
"""


def fail(message: str) -> None:
    print(f"hook_cold_start: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def start_endpoint(state: Path) -> tuple[subprocess.Popen, str]:
    log = open(state / "endpoint.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts/local-aws/local_endpoint.py"), "--state-dir", str(state), "--exit-with-parent"],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline().strip() if ready else ""
    if not line.startswith("ready "):
        proc.terminate()
        fail(f"the local endpoint did not start ({line!r}); see {state / 'endpoint.log'}")
    return proc, line.split(" ", 1)[1]


def csr_pem(common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())  # never written anywhere
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def set_up(url: str) -> dict:
    """The claim (claim policy attached) and a device certificate; the event naming them."""
    iot = boto3.client(
        "iot", endpoint_url=url, region_name=REGION,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    iot.create_policy(
        policyName=CLAIM_POLICY,
        policyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
        }),
    )
    claim = iot.create_certificate_from_csr(certificateSigningRequest=csr_pem(THING_NAME), setAsActive=True)
    iot.attach_policy(policyName=CLAIM_POLICY, target=claim["certificateArn"])
    expected_arn = f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/{claim['certificateId']}"
    if claim["certificateArn"] != expected_arn:
        fail(f"the endpoint's certificate ARN {claim['certificateArn']} is not {expected_arn}")
    subject = x509.load_pem_x509_certificate(claim["certificatePem"].encode()).subject
    if subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value != THING_NAME:
        fail(f"CreateCertificateFromCsr did not keep the CSR subject: {subject.rfc4514_string()}")
    device = iot.create_certificate_from_csr(certificateSigningRequest=csr_pem("device"), setAsActive=True)
    return {
        "claimCertificateId": claim["certificateId"],
        "certificateId": device["certificateId"],
        "certificatePem": device["certificatePem"],
        "templateArn": TEMPLATE_ARN,
        "clientId": THING_NAME,
        "parameters": {"ThingName": THING_NAME, "ThingGroupName": "bench-factory"},
    }


def child_env(url: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("CLAIMFAB_ALLOW_SHARED_CLAIMS",)}
    env.update({
        "AWS_ENDPOINT_URL": url,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "CLAIMFAB_CLAIM_POLICIES": CLAIM_POLICY,
        "PYTHONDONTWRITEBYTECODE": "1",  # the hook is compiled at every import, as in Lambda
    })
    env.pop("PYTHONPATH", None)
    return env


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def measure(event: dict, hook_dir: Path, env: dict, run: int) -> dict:
    """One fresh process: import the hook, invoke it twice; its figures (ms), checked."""
    spawned = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(hook_dir), json.dumps(event), repr(spawned), repr(FUNCTION_TIMEOUT_S)],
        capture_output=True, text=True, env=env, cwd=hook_dir, timeout=60,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        fail(f"run {run}: the hook process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    figures = json.loads(proc.stdout.splitlines()[-1])
    figures = {"run": run, **{k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items()}}
    print(json.dumps(figures), flush=True)
    for which in ("first", "warm"):
        if figures[which]["allow"] is not True or figures[which]["reason"] != "claim_matches_thing":
            fail(f"run {run}: the {which} invocation did not admit the genuine claim: {figures[which]}")
    if not figures["client_at_import"]:
        fail(f"run {run}: the IoT client was not made at import")
    return figures


def measure_all(runs: int, tmp: Path) -> tuple[list[dict], tuple]:
    """The endpoint started and set up, then `runs` fresh processes; (their figures, the load
    average at the start)."""
    endpoint = None
    try:
        state = tmp / "endpoint"
        state.mkdir()
        endpoint, url = start_endpoint(state)
        event = set_up(url)
        hook_dir = tmp / "package"  # what Lambda unpacks: the one module, no __pycache__
        hook_dir.mkdir()
        shutil.copyfile(HOOK, hook_dir / "claim_binding.py")
        env = child_env(url)
        load = os.getloadavg()
        print(json.dumps({
            "python": sys.version.split()[0], "boto3": boto3.__version__, "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in load], "runs": runs, "endpoint": url,
        }), flush=True)
        return [measure(event, hook_dir, env, i + 1) for i in range(runs)], load
    finally:
        if endpoint is not None:
            endpoint.terminate()
            try:
                endpoint.wait(timeout=15)
            except subprocess.TimeoutExpired:
                endpoint.kill()


def summarize(runs: list[dict], load: tuple) -> dict:
    """min, median, p95 and max of each figure, printed as a table."""
    rows = [("init", "init_ms"), ("first", "first_ms"), ("warm", "warm_ms"), ("init+first", "init_first_ms"),
            ("spawn", "spawn_ms")]
    print()
    print(f"claim_binding cold start, {len(runs)} fresh processes, milliseconds "
          f"(load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs)")
    print(f"{'':<12}{'min':>9}{'median':>9}{'p95':>9}{'max':>9}")
    summary = {"runs": len(runs), "loadavg": [round(x, 2) for x in load], "cpus": os.cpu_count()}
    for label, key in rows:
        values = [r[key] for r in runs]
        figures = {"min": min(values), "median": statistics.median(values),
                   "p95": percentile(values, 95), "max": max(values)}
        summary[key] = figures
        print(f"{label:<12}" + "".join(f"{v:>9.1f}" for v in figures.values()))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="fresh processes to measure (default 20)")
    parser.add_argument("--summary", type=Path, metavar="FILE",
                        help="also write the summary as JSON (scripts/bench/bench.py reads it)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="claimfab-bench-hook-"))
    try:
        runs, load = measure_all(args.runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    summary = summarize(runs, load)
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2) + "\n")
    print("p95: nearest rank. Local endpoint and this CPU, not Lambda: see the docstring.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
