"""Correction 10, to moto's Lambda backend (used by the data plane's pre-provisioning hooks),
and the endpoint path that serves the deployment packages it hands out."""

from __future__ import annotations

import secrets
import threading
import time

from endpoint.wsgi import drain, json_response

LAMBDA_CODE_PATH = "/_claimfab/lambda-code/"
# token -> (code bytes, expiry, monotonic seconds); filled by GetFunction, read by GET.
LAMBDA_CODE: dict[str, tuple[bytes, float]] = {}
LAMBDA_CODE_LOCK = threading.Lock()
# Set once the server is bound: the base of the Code.Location URLs.
PUBLIC_URL = {"url": ""}
CODE_LIFETIME_S = 600  # a presigned URL's 10 minutes


def _code_location(code_bytes: bytes) -> str:
    """A new URL for the package, valid CODE_LIFETIME_S; expired tokens are dropped."""
    token = secrets.token_urlsafe(32)
    now = time.monotonic()
    with LAMBDA_CODE_LOCK:
        for stale in [k for k, (_, exp) in LAMBDA_CODE.items() if exp < now]:
            del LAMBDA_CODE[stale]
        LAMBDA_CODE[token] = (bytes(code_bytes), now + CODE_LIFETIME_S)
    return f"{PUBLIC_URL['url']}{LAMBDA_CODE_PATH}{token}"


def correct_get_function_code() -> None:
    """10. GetFunction. AWS (API_GetFunction, FunctionCodeLocation.Location): "A presigned URL
    that you can use to download the deployment package", valid for 10 minutes. moto 5.2.5
    returns no Code at all for a function created from a ZipFile, and an S3 URL on
    amazonaws.com (unreachable here) for one created from S3. Serve the package from this
    endpoint instead: Location = URL/_claimfab/lambda-code/TOKEN, an unguessable token that
    expires after 10 minutes, as a presigned URL does."""
    from moto.awslambda import models as lambda_models

    original_get_code = lambda_models.LambdaFunction.get_code

    def get_code(self):
        resp = original_get_code(self)
        code_bytes = getattr(self, "code_bytes", None)
        if code_bytes and PUBLIC_URL["url"] and (resp.get("Code") or {}).get("RepositoryType", "S3") == "S3":
            resp["Code"] = {"RepositoryType": "S3", "Location": _code_location(code_bytes)}
        return resp

    lambda_models.LambdaFunction.get_code = get_code


def serve_lambda_code(environ, start_response):
    """GET URL/_claimfab/lambda-code/TOKEN: the package, or 403 once the token expired."""
    drain(environ)
    token = environ.get("PATH_INFO", "")[len(LAMBDA_CODE_PATH):]
    with LAMBDA_CODE_LOCK:
        entry = LAMBDA_CODE.get(token)
    if entry is None or entry[1] < time.monotonic():
        return json_response(start_response, "403 Forbidden", {"message": "Request has expired"})
    start_response("200 OK", [("Content-Type", "application/zip"), ("Content-Length", str(len(entry[0])))])
    return [entry[0]]
