#!/usr/bin/env python3
"""Someone holding a claim listens for other devices' fleet-provisioning answers, for claimfab's
tests of the local data plane (or any AWS IoT endpoint reachable the same way).

Usage (from the repository root):

    .venv/bin/python scripts/local-aws/eavesdropper.py --nucleus java|lite --bundle DEV.zip \\
        --connect-to HOST:PORT --root-ca TEST_CA.pem [--listen-for S] [--timeout S]

With a batch-scope claim every device of the batch holds the same certificate, so its claim
policy lets this listener subscribe to exactly the topics the devices' answers come on. AWS
IoT returns each answer only "through the same MQTT connection used to publish the API
request"; this program checks that nothing else gets it:

  1. config and connect: the bundle's claim certificate and key and its iotDataEndpoint and
     template, read as the nucleus reads them (the test device's code, testdevice/), a random
     client id, MQTT 3.1.1 with AWS's device SDK;
  2. subscribe: `$aws/certificates/create/json/+`, `$aws/certificates/create-from-csr/json/+`
     and `$aws/provisioning-templates/TEMPLATE/provision/json/+` (QoS 1, each SUBACK
     checked), then print one line, `listening`, on stdout;
  3. listen until stdin closes (or --listen-for S seconds), keeping every message; if the
     server closed the connection meanwhile (its certificate was made inactive, say), stop
     here;
  4. prove it would have heard: CreateCertificateFromCsr of its own (a fresh key and CSR),
     whose answer must arrive on one of its subscriptions.

Output: after `listening`, ONE JSON line on stdout:
    {"ok": bool, "client_id": ..., "subscribed": [...], "foreign": [{"topic", "bytes"}...],
     "dropped_while_listening": bool, "own_answer": TOPIC | null, "error": str | null}
"foreign" are the messages heard while listening (there must be none); "own_answer" is the
topic its own answer came on. Exit status: 0 when it listened and heard its own answer, 1
otherwise, 2 bad usage. Payloads (certificates, tokens) are never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

from testdevice.bundle import extract_bundle, load_settings
from testdevice.certificates import make_csr
from testdevice.cli import UsageError, parse_connect_to, run_once
from testdevice.java_config import JAVA_DEFAULT_INIT_CONFIG
from testdevice.paths import map_device_path
from testdevice.session import Session
from testdevice.settings import DeviceFailure


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(
        prog="eavesdropper.py",
        description="Listen with a device's claim for fleet-provisioning answers meant for others.",
    )
    parser.add_argument("--nucleus", choices=("java", "lite"), required=True, help="how to read the bundle's config")
    parser.add_argument("--bundle", required=True, metavar="ZIP", help="a claimfab device bundle (its claim is used)")
    parser.add_argument("--connect-to", required=True, metavar="HOST:PORT", help="the data plane's MQTT broker (TLS)")
    parser.add_argument("--root-ca", required=True, metavar="PEM", help="the CA the server's certificate chains to")
    parser.add_argument("--listen-for", type=float, default=300.0, metavar="S",
                        help="stop listening after S seconds if stdin stays open (default 300)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds each step may take (default 10)")
    args = parser.parse_args(argv)
    args.connect_to = parse_connect_to(args.connect_to)
    for option, path in (("--root-ca", args.root_ca), ("--bundle", args.bundle)):
        if not Path(path).is_file():
            raise UsageError(f"{option} {path}: no such file")
    args.root_ca = str(Path(args.root_ca).resolve())
    if args.timeout <= 0 or args.listen_for <= 0:
        raise UsageError("--timeout and --listen-for must be positive")
    return args


class Ears:
    """Every message heard, in order, and an event set when one arrives."""

    def __init__(self):
        self.heard: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()

    def on_message(self, topic, payload, **kwargs):
        with self.lock:
            self.heard.append((topic, len(payload)))
        self.arrived.set()

    def taken(self) -> list[tuple[str, int]]:
        with self.lock:
            heard, self.heard = self.heard, []
        self.arrived.clear()
        return heard


def subscribe_all(session: Session, filters: list[str], ears: Ears) -> None:
    from awscrt import mqtt

    for topic_filter in filters:
        session.subscribe(lambda f=topic_filter: session.connection.subscribe(f, mqtt.QoS.AT_LEAST_ONCE, ears.on_message),
                          "create", topic_filter)


def listen(args) -> None:
    """Until stdin closes or --listen-for runs out."""
    closed = threading.Event()

    def wait_for_eof():
        sys.stdin.read()
        closed.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    closed.wait(args.listen_for)


def own_answer(session: Session, ears: Ears, timeout: float) -> Optional[str]:
    """Publishes a CreateCertificateFromCsr of its own; the topic its answer was heard on."""
    from awscrt import mqtt

    _, csr = make_csr(f"eavesdropper-{uuid.uuid4().hex[:8]}")
    published, _ = session.connection.publish("$aws/certificates/create-from-csr/json",
                                              json.dumps({"certificateSigningRequest": csr}), mqtt.QoS.AT_LEAST_ONCE)
    session.wait(published, "create", "PUBACK for CreateCertificateFromCsr")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ears.arrived.wait(0.05):
            heard = ears.taken()
            if heard:
                return heard[0][0]
    return None


def eavesdrop(args, root: Path) -> dict:
    report: dict = {"ok": False, "client_id": str(uuid.uuid4()), "subscribed": [], "foreign": [],
                    "dropped_while_listening": False, "own_answer": None, "error": None}
    session: Optional[Session] = None
    try:
        extract_bundle(Path(args.bundle), root)
        settings = load_settings(args.nucleus, root, JAVA_DEFAULT_INIT_CONFIG)
        session = Session(settings, map_device_path(root, settings.claim_cert), map_device_path(root, settings.claim_key),
                          report["client_id"], settings.port, args)
        session.connect("connect")
        ears = Ears()
        filters = ["$aws/certificates/create/json/+", "$aws/certificates/create-from-csr/json/+",
                   f"$aws/provisioning-templates/{settings.template}/provision/json/+"]
        subscribe_all(session, filters, ears)
        report["subscribed"] = filters
        print("listening", flush=True)
        listen(args)
        report["foreign"] = [{"topic": topic, "bytes": size} for topic, size in ears.taken()]
        if session.dropped():
            report["dropped_while_listening"] = True
            report["error"] = "the server closed the connection while it listened"
            return report
        report["own_answer"] = own_answer(session, ears, args.timeout)
        report["ok"] = report["own_answer"] is not None
        if not report["ok"]:
            report["error"] = f"its own CreateCertificateFromCsr got no answer within {args.timeout:g} s"
    except DeviceFailure as failure:
        report["error"] = f"{failure.stage}: {failure.error}"
    except Exception as e:  # a bug or an unexpected SDK error: still the one line
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        if session is not None:
            try:
                session.disconnect(None)
            except Exception:
                pass
    return report


def main(argv: Optional[list[str]] = None) -> int:
    return run_once(parse_args, argv, "eavesdropper.py", eavesdrop)


if __name__ == "__main__":
    sys.exit(main())
