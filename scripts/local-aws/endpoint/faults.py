"""The fault settings of the local endpoint (all off unless asked for on the command line):
per-operation throttling, injected failures, lost responses, denied operations and the
--drop-csr-subject test switch; parsed from --throttle/--fail/--lose-response/--deny."""

from __future__ import annotations

import difflib
import math
import threading
import time

from endpoint.routing import IotRouter


class TokenBucket:
    """Per-operation rate limit. Token bucket: capacity max(1, RPS) tokens, refilled at RPS
    tokens per second, starting full; a request takes one token or is throttled. So a burst of
    up to RPS requests passes at once, and the sustained rate is RPS. (Capacity is at least
    one token so that rates below 1/s still let a request through now and then.)"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class FaultSettings:
    def __init__(
        self, throttle: dict, fail: dict, lose_response: dict, seed: int, deny: frozenset = frozenset(),
        drop_csr_subject: bool = False,
    ) -> None:
        self.deny = set(deny)  # operations the caller is not allowed to call
        self.throttle = throttle  # operation -> requests per second
        self.fail = fail  # operation -> fraction answered 500 without executing
        self.lose_response = lose_response  # operation -> fraction executed, then answered 500
        self.seed = seed
        # CreateCertificateFromCsr issues CN=AWS IoT Certificate instead of the CSR's subject
        # (read by correction 1, endpoint/iot_certificates.py, on every request).
        self.drop_csr_subject = drop_csr_subject

    def as_json(self) -> dict:
        return {
            "throttle": {
                op: int(v) if v.is_integer() else v for op, v in sorted(self.throttle.items())
            },
            "fail": dict(sorted(self.fail.items())),
            "lose_response": dict(sorted(self.lose_response.items())),
            "deny": sorted(self.deny),
            "drop_csr_subject": self.drop_csr_subject,
            "seed": self.seed,
        }


def _fault_value(parser, option: str, spec: str, raw: str, kind: str) -> float:
    """VALUE of OP=VALUE: a rate (> 0 requests per second) or a fraction (0..1)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if kind == "rate":
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{option} {spec!r}: the rate must be requests per second, > 0")
    elif not (0.0 <= value <= 1.0):
        parser.error(f"{option} {spec!r}: the fraction must be between 0 and 1")
    return value


def parse_fault_specs(parser, option: str, specs: list[str] | None, router: IotRouter, kind: str):
    """OP=VALUE pairs -> {operation: value}; exits with a usage error on anything invalid."""
    table = {}
    for spec in specs or ():
        op, sep, raw = spec.partition("=")
        op = op.strip()
        if not sep or not op or not raw.strip():
            parser.error(f"{option} {spec!r}: expected OPERATION=VALUE")
        if op not in router.operations:
            close = difflib.get_close_matches(op, router.operations, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            parser.error(
                f"{option} {spec!r}: {op!r} is not an AWS IoT operation{hint}; valid operations: "
                + ", ".join(router.operations)
            )
        if op in table:
            parser.error(f"{option} given twice for {op}")
        table[op] = _fault_value(parser, option, spec, raw, kind)
    return table
