"""The pre-provisioning hook: when the template has preProvisioningHook.targetArn, the
function's resource policy must let iot.amazonaws.com invoke it (hook_permission.py), then its
deployment package is fetched (Lambda GetFunction -> Code.Location) and its Python handler is
run in a subprocess with AWS's documented payload; provisioning goes on only on
{"allowProvisioning": true}, with parameterOverrides merged into the parameters."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile

from dataplane.endpoint_client import Endpoint, Rejected
from dataplane.hook_permission import _allows_iot

log = logging.getLogger("dataplane")

HOOK_TIMEOUT_S = 5  # AWS: the pre-provisioning Lambda must answer within 5 seconds

HOOK_RUNNER = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
module_name, _, function_name = sys.argv[2].rpartition(".")
handler = getattr(importlib.import_module(module_name), function_name)
class Context:
    function_name = sys.argv[3]
    aws_request_id = "local"
    def get_remaining_time_in_millis(self):
        return 5000
event = json.loads(sys.stdin.read())
result = handler(event, Context())
sys.stdout.write("\n" + json.dumps(result))
"""


def invocable_function(endpoint: Endpoint, target_arn: str, account: str) -> dict:
    """GetFunction's answer for a hook AWS IoT may invoke and this endpoint can run (Python,
    with a Code.Location); rejected otherwise."""
    from botocore.exceptions import ClientError

    try:
        policy = endpoint.lam.get_policy(FunctionName=target_arn)["Policy"]
    except ClientError:
        policy = None
    if not policy or not _allows_iot(policy, target_arn, account):
        raise Rejected(403, "AccessDenied", f"AWS IoT is not allowed to invoke the pre-provisioning hook {target_arn}.")
    try:
        fn = endpoint.lam.get_function(FunctionName=target_arn)
    except ClientError:
        raise Rejected(403, "AccessDenied", f"The pre-provisioning hook {target_arn} cannot be invoked.") from None
    runtime = fn.get("Configuration", {}).get("Runtime", "")
    if not runtime.startswith("python") or not (fn.get("Code") or {}).get("Location"):
        raise Rejected(500, "InternalError", f"The pre-provisioning hook {target_arn} cannot be run locally ({runtime or 'no runtime'}).")
    return fn


def hook_environment(endpoint: Endpoint, config: dict) -> dict:
    """The handler's environment: Lambda's variables pointing at the local endpoint, then the
    function's own."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_REGION": endpoint.region,
        "AWS_DEFAULT_REGION": endpoint.region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint.url,
        "AWS_LAMBDA_FUNCTION_NAME": config.get("FunctionName", ""),
        **((config.get("Environment") or {}).get("Variables") or {}),
    }


def run_handler(endpoint: Endpoint, fn: dict, event: dict) -> subprocess.CompletedProcess:
    """The function's package fetched and its handler run in a subprocess, HOOK_TIMEOUT_S at most."""
    config = fn.get("Configuration", {})
    try:
        with urllib.request.urlopen(fn["Code"]["Location"], timeout=10) as resp:
            package = resp.read()
        with tempfile.TemporaryDirectory(prefix="claimfab-hook-") as tmp:
            zipfile.ZipFile(io.BytesIO(package)).extractall(tmp)
            return subprocess.run(
                [sys.executable, "-c", HOOK_RUNNER, tmp, config.get("Handler", "lambda_function.lambda_handler"), config.get("FunctionName", "")],
                input=json.dumps(event), capture_output=True, text=True, timeout=HOOK_TIMEOUT_S,
                env=hook_environment(endpoint, config), cwd=tmp,
            )
    except subprocess.TimeoutExpired:
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook did not answer within 5 seconds.") from None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise Rejected(500, "InternalError", f"The pre-provisioning hook could not be run: {e}") from None


def hook_answer(proc: subprocess.CompletedProcess) -> dict:
    """The parameterOverrides of a hook that allowed provisioning; rejected otherwise."""
    if proc.returncode != 0:
        log.info("pre-provisioning hook failed: %s", proc.stderr[-2000:])
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook failed.")
    try:
        answer = json.loads(proc.stdout.rsplit("\n", 1)[-1])
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("allowProvisioning") is not True:
        raise Rejected(403, "AccessDenied", "Provisioning was not allowed by the pre-provisioning hook.")
    overrides = answer.get("parameterOverrides") or {}
    if not isinstance(overrides, dict):
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook returned invalid parameterOverrides.")
    return {str(k): str(v) for k, v in overrides.items()}


def run_hook(endpoint: Endpoint, target_arn: str, account: str, event: dict) -> dict:
    """The hook's parameterOverrides (str -> str) when it allows provisioning."""
    fn = invocable_function(endpoint, target_arn, account)
    return hook_answer(run_handler(endpoint, fn, event))
