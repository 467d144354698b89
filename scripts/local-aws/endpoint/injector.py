"""FaultInjector: the WSGI middleware around moto's application that counts AWS IoT requests,
injects the faults in FaultSettings and serves the endpoint's own paths
(/_claimfab/stats, /_claimfab/faults, /_claimfab/generation, /_claimfab/lambda-code/)."""

from __future__ import annotations

import random
import secrets
import sys
import threading

from endpoint import lambda_code
from endpoint.faults import FaultSettings, TokenBucket
from endpoint.routing import IotRouter, is_iot_request, raw_request_path
from endpoint.wsgi import aws_error, drain, json_response

STATS_PATH = "/_claimfab/stats"
# DELETE here clears every injected fault at run time, as when AWS recovers: lets a test
# fail an operation for one run and let the next run through on the same (in-memory) account.
FAULTS_PATH = "/_claimfab/faults"
# The launcher's own requests (the warm-up) carry this header with a per-process secret; they
# bypass fault injection and are not counted, so e.g. --fail ListCertificates=1 cannot stop
# the endpoint from starting and the counters show clients' requests only.
# GET here answers {"generation": N}: N grows after every AWS IoT request that may change
# something (any method but GET), so the data plane can tell that a certificate's status, its
# policies or its thing may have changed and must be read again before the next decision
# (AWS IoT checks every Publish, Subscribe and Receive against the current state; it has no
# "until reconnect").
GENERATION_PATH = "/_claimfab/generation"
INTERNAL_HEADER = "X-Claimfab-Internal"
INTERNAL_TOKEN = secrets.token_hex(16)


def throttled(start_response):
    """AWS IoT control-plane quotas (requests per second per account, per API) are enforced by
    rejecting the excess request before it runs: HTTP 429 ThrottlingException, "Rate
    exceeded"; the request had no effect and may be retried with backoff. (The service model
    declares ThrottlingException with HTTP 400; SDKs classify by code.)"""
    return aws_error(start_response, "429 Too Many Requests", "ThrottlingException", "Rate exceeded")


def internal_failure(start_response):
    """AWS IoT's InternalFailureException: HTTP 500, "an unexpected error has occurred" (a
    server fault, retryable; whether the request took effect is unknown to the client)."""
    return aws_error(
        start_response,
        "500 Internal Server Error",
        "InternalFailureException",
        "An unexpected error has occurred.",
    )


def access_denied(start_response, op: str):
    """An IAM identity without permission for the action: AWS answers HTTP 403
    AccessDeniedException naming the action and resource, and does nothing."""
    return aws_error(
        start_response, "403 Forbidden", "AccessDeniedException",
        f"User: arn:aws:iam::123456789012:user/factory is not authorized to perform: "
        f"iot:{op} because no identity-based policy allows the iot:{op} action",
    )


class FaultInjector:
    """WSGI middleware around moto's application: identifies AWS IoT operations, counts them,
    and injects the faults in `settings`; serves GET /_claimfab/stats. Everything else passes
    through untouched.

    Per IoT request, in this order: counted as a request; denied if its operation is; throttled
    if its operation's bucket is empty; else failed (500, not executed) with the --fail
    probability; else executed by moto, and then its answer replaced by a 500 with the
    --lose-response probability."""

    COUNTERS = ("requests", "denied", "throttled", "failed", "lost_response", "executed")

    def __init__(self, app, router: IotRouter, settings: FaultSettings, log: bool) -> None:
        self.app = app
        self.router = router
        self.settings = settings
        self.log = log
        self.buckets = {op: TokenBucket(rps) for op, rps in settings.throttle.items()}
        # One random stream per (fault, operation), so each operation's sequence of choices
        # follows from --seed alone, however requests of other operations interleave.
        self.rngs = {}
        for kind, table in (("fail", settings.fail), ("lose_response", settings.lose_response)):
            for op in table:
                self.rngs[(kind, op)] = random.Random(f"{settings.seed}/{kind}/{op}")
        self.rng_lock = threading.Lock()
        self.stats: dict[str, dict[str, int]] = {}
        self.stats_lock = threading.Lock()
        self.generation = 0

    def count(self, op: str, counter: str) -> None:
        with self.stats_lock:
            entry = self.stats.get(op)
            if entry is None:
                entry = self.stats[op] = dict.fromkeys(self.COUNTERS, 0)
            entry[counter] += 1

    def roll(self, kind: str, op: str, table: dict) -> bool:
        fraction = table.get(op)
        if not fraction:
            return False
        with self.rng_lock:
            return self.rngs[(kind, op)].random() < fraction

    def note(self, what: str, op: str) -> None:
        if self.log:
            print(f"local_endpoint: fault: {what} {op}", file=sys.stderr, flush=True)

    def serve_stats(self, environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() != "GET":
            drain(environ)
            return json_response(
                start_response, "405 Method Not Allowed", {"message": "use GET"}, [("Allow", "GET")]
            )
        with self.stats_lock:
            operations = {op: dict(c) for op, c in sorted(self.stats.items())}
        return json_response(
            start_response, "200 OK", {"operations": operations, "faults": self.settings.as_json()}
        )

    def serve_generation(self, environ, start_response):
        drain(environ)
        with self.stats_lock:
            generation = self.generation
        return json_response(start_response, "200 OK", {"generation": generation})

    def run_app(self, environ, start_response):
        """moto's answer; the generation moves on once a request that may change something
        has been carried out (moto acts before it returns)."""
        result = self.app(environ, start_response)
        if is_iot_request(environ) and environ.get("REQUEST_METHOD", "GET").upper() != "GET":
            with self.stats_lock:
                self.generation += 1
        return result

    def clear_faults(self, environ, start_response):
        drain(environ)
        if environ.get("REQUEST_METHOD", "").upper() != "DELETE":
            return json_response(
                start_response, "405 Method Not Allowed", {"message": "use DELETE"},
                [("Allow", "DELETE")],
            )
        with self.rng_lock:
            self.settings.throttle, self.settings.fail, self.settings.lose_response = {}, {}, {}
            self.settings.deny = set()
            self.settings.drop_csr_subject = False
            self.buckets = {}
        return json_response(start_response, "200 OK", {"faults": self.settings.as_json()})

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith(lambda_code.LAMBDA_CODE_PATH):
            return lambda_code.serve_lambda_code(environ, start_response)
        if path == STATS_PATH:
            return self.serve_stats(environ, start_response)
        if path == FAULTS_PATH:
            return self.clear_faults(environ, start_response)
        if path == GENERATION_PATH:
            return self.serve_generation(environ, start_response)
        if not is_iot_request(environ) or environ.get("HTTP_X_CLAIMFAB_INTERNAL") == INTERNAL_TOKEN:
            return self.run_app(environ, start_response)
        op = self.router.match(environ.get("REQUEST_METHOD", ""), raw_request_path(environ))
        if op is None:
            return self.run_app(environ, start_response)
        self.count(op, "requests")
        refused = self.refuse(op, environ, start_response)
        if refused is not None:
            return refused
        if op not in self.settings.lose_response:
            self.count(op, "executed")
            return self.run_app(environ, start_response)
        return self.execute_then_maybe_lose(op, environ, start_response)

    def refuse(self, op: str, environ, start_response):
        """The answer to an IoT request refused before it runs (denied, throttled or an
        injected failure), or None when it goes on to moto."""
        if op in self.settings.deny:
            self.count(op, "denied")
            self.note("denied", op)
            drain(environ)
            return access_denied(start_response, op)
        bucket = self.buckets.get(op)
        if bucket is not None and not bucket.take():
            self.count(op, "throttled")
            self.note("throttled", op)
            drain(environ)
            return throttled(start_response)
        if self.roll("fail", op, self.settings.fail):
            # Injected server fault before execution: 500 InternalFailureException, nothing
            # done (the client cannot tell this from a lost response; see below).
            self.count(op, "failed")
            self.note("failed (not executed)", op)
            drain(environ)
            return internal_failure(start_response)
        return None

    def execute_then_maybe_lose(self, op: str, environ, start_response):
        """Executed by moto, answer then possibly lost: run moto's app to completion with its
        answer captured, then either send it on or replace it with a 500
        InternalFailureException, as when AWS acts but the response never reaches the client
        (the ambiguous case: the certificate exists although the client saw an error)."""
        captured = {}
        written = []

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return written.append

        result = self.run_app(environ, capture)
        try:
            body = b"".join([*written, *result])
        finally:
            if hasattr(result, "close"):
                result.close()
        self.count(op, "executed")
        if self.roll("lose_response", op, self.settings.lose_response):
            self.count(op, "lost_response")
            self.note("response lost (executed)", op)
            return internal_failure(start_response)
        start_response(captured["status"], captured["headers"])
        return [body]
