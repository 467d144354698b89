"""Local AWS IoT endpoint for claimfab's tests and demo.

This launcher owns:
  * one moto server (the version pinned in requirements.txt beside this file), run in-process
    (moto's ThreadedMotoServer setup: werkzeug, one thread per request) and bound to 127.0.0.1
    only, with its state in memory for the life of the process;
  * a test CA (EC P-256, key kept in memory only, new at every start) that signs the
    certificates CreateCertificateFromCsr issues; its certificate is written to
    STATE_DIR/test-ca.pem;
  * STATE_DIR/endpoint.json, written atomically once the server answers:
    {"url": "http://127.0.0.1:PORT", "pid": PID, "ca_cert": "/abs/STATE_DIR/test-ca.pem",
     "region": REGION}; it is removed again on a clean shutdown;
  * a set of narrow corrections to moto's IoT backend, applied before serving, each citing the
    AWS IoT API behaviour it follows (endpoint/corrections.py lists them; README.md has the
    table);
  * optional fault injection for AWS IoT operations, all off by default (endpoint/injector.py):
    per-operation throttling (HTTP 429 ThrottlingException, not executed), injected failures
    (HTTP 500 InternalFailureException, not executed) and lost responses (executed, then
    answered HTTP 500 InternalFailureException). endpoint.json also carries the settings:
    "faults": {"throttle": {OP: RPS}, "fail": {OP: FRACTION}, "lose_response": {OP: FRACTION},
    "deny": [OP], "drop_csr_subject": BOOL, "seed": N};
  * a test switch that departs from AWS on purpose, off by default: --drop-csr-subject makes
    CreateCertificateFromCsr (and so the data plane's MQTT CreateCertificateFromCsr, which
    calls it) issue certificates with AWS IoT's default subject, CN=AWS IoT Certificate,
    instead of the CSR's subject -- an endpoint that does not keep the CSR subject, for
    tests of code that relies on it (AWS makes the certificate "using the specified
    certificate signing request"; the local endpoint keeps the subject unless asked not to);
  * DELETE /_claimfab/faults: clears every injected fault, --drop-csr-subject included (AWS
    "recovers").
  * with --data-plane, the local AWS IoT data plane (dataplane/): a TLS-only MQTT
    broker (mosquitto, with the claimfab_auth plugin) on 127.0.0.1 and the fleet-provisioning
    service (the Device provisioning MQTT API, IoT policy enforcement), both started before
    "ready" and stopped on shutdown; their certificates are issued here by the test CA.
    endpoint.json then also has "data_plane": {"host": "127.0.0.1", "port": N,
    "server_name": "<the account's ATS data endpoint host>", "ca_cert": PATH,
    "broker_pid", "service_pid", "service_client_id"}; devices connect to host:port and
    verify the server's certificate for server_name against ca_cert. With --data-plane,
    Lambda GetFunction also returns a downloadable Code.Location (correction 10);
  * GET /_claimfab/stats: JSON {"operations": {OP: {"requests", "throttled", "failed",
    "lost_response", "executed"}}, "faults": {...}} counting every AWS IoT request since start
    (requests = throttled + failed + executed once none is in flight; lost_response counts
    the executed requests whose answer was replaced by a 500).

Usage:
    .venv/bin/python scripts/local-aws/local_endpoint.py --state-dir DIR [--port 0]
        [--region us-east-1] [--log-requests]
        [--throttle OP=RPS]... [--fail OP=FRACTION]... [--lose-response OP=FRACTION]...
        [--deny OP]... [--seed N] [--drop-csr-subject] [--data-plane] [--exit-with-parent]

OP is an AWS IoT API operation name as in the API reference (CreateCertificateFromCsr,
AttachPolicy, ...); requests are matched to operations by HTTP method and path, using the REST
bindings in botocore's AWS IoT service model.

stdout carries exactly one line, "ready http://127.0.0.1:PORT", once the endpoint answers
requests; everything else (errors, optional request log) goes to stderr. SIGTERM or SIGINT
stops the server and exits 0. Clients use any credentials (e.g. testing/testing); the account
is moto's default, 123456789012.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
import urllib.request
from pathlib import Path

from endpoint import lambda_code
from endpoint.faults import FaultSettings, parse_fault_specs
from endpoint.injector import INTERNAL_HEADER, INTERNAL_TOKEN, FaultInjector
from endpoint.routing import IotRouter, load_iot_routes

HOST = "127.0.0.1"
ACCOUNT = "123456789012"  # moto's default account, the one clients use


def add_fault_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--throttle", action="append", metavar="OP=RPS",
        help="limit AWS IoT operation OP to RPS requests per second (token bucket of RPS "
        "tokens, refilled at RPS/s); the excess is answered 429 ThrottlingException, unexecuted",
    )
    parser.add_argument(
        "--fail", action="append", metavar="OP=FRACTION",
        help="answer this fraction of OP requests 500 InternalFailureException, unexecuted",
    )
    parser.add_argument(
        "--lose-response", action="append", metavar="OP=FRACTION",
        help="execute OP, then answer this fraction 500 InternalFailureException instead",
    )
    parser.add_argument(
        "--deny", action="append", metavar="OP",
        help="answer OP 403 AccessDeniedException, as for an identity lacking the permission",
    )
    parser.add_argument(
        "--seed", type=int, help="seed for --fail/--lose-response choices (default: random)"
    )
    parser.add_argument(
        "--drop-csr-subject", action="store_true",
        help="test switch, departs from AWS on purpose: CreateCertificateFromCsr (also the data "
        "plane's MQTT CreateCertificateFromCsr) issues certificates with AWS IoT's default "
        "subject CN=AWS IoT Certificate instead of the CSR's subject, as an endpoint that does "
        "not keep the CSR subject would",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--region", default="us-east-1", help="region warmed up at start")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    parser.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop when the process that started this one dies (test harnesses, demo scripts)",
    )
    add_fault_options(parser)
    parser.add_argument(
        "--data-plane", action="store_true",
        help="also run the local AWS IoT data plane: a TLS MQTT broker (mosquitto) and the "
        "fleet-provisioning service (scripts/local-aws/dataplane/); see endpoint.json's data_plane",
    )
    return parser


def fault_settings(parser, args, router: IotRouter) -> FaultSettings:
    return FaultSettings(
        throttle=parse_fault_specs(parser, "--throttle", args.throttle, router, "rate"),
        fail=parse_fault_specs(parser, "--fail", args.fail, router, "fraction"),
        lose_response=parse_fault_specs(
            parser, "--lose-response", args.lose_response, router, "fraction"
        ),
        seed=args.seed if args.seed is not None else secrets.randbits(32),
        deny=frozenset(
            parse_fault_specs(parser, "--deny", [f"{op}=1" for op in args.deny or ()], router, "fraction")
        ),
        drop_csr_subject=args.drop_csr_subject,
    )


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def warm_up(url: str, region: str) -> None:
    """One ListCertificates so moto builds its IoT app and backend before clients arrive."""
    req = urllib.request.Request(
        f"{url}/certificates?pageSize=1",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/"
            f"{region}/iot/aws4_request, SignedHeaders=host, Signature=0",
            INTERNAL_HEADER: INTERNAL_TOKEN,
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"warm-up request answered HTTP {resp.status}")
        resp.read()


class KeepAliveServer:
    """moto's app served by waitress, which keeps HTTP/1.1 connections open between requests
    as AWS's endpoints do (werkzeug's development server closes every one: a client would
    pay a TCP connect and teardown per request that it never pays against AWS). Offers the
    three things the launcher uses of a server: serve_forever, shutdown, server_address."""

    def __init__(self, app, port: int):
        from waitress.server import create_server

        # Threads: claimfab keeps up to 16 requests in flight, the benchmark's peer 16.
        self._server = create_server(app, host=HOST, port=port, threads=16,
                                     connection_limit=256, channel_timeout=120)
        self.server_address = (HOST, self._server.effective_port)

    def serve_forever(self) -> None:
        self._server.run()

    def shutdown(self) -> None:
        self._server.close()
        self._server.task_dispatcher.shutdown(timeout=5)


def make_server(port: int, router: IotRouter, faults: FaultSettings, log_requests: bool):
    """moto's server app behind the FaultInjector, bound to HOST:port in this thread (None
    if it cannot be: the port is taken)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = FaultInjector(DomainDispatcherApplication(create_backend_app), router, faults,
                        log_requests)
    try:
        return KeepAliveServer(app, port)
    except OSError as e:
        print(f"local_endpoint: cannot listen on {HOST}:{port}: {e}", file=sys.stderr)
        return None


def new_data_plane(ca, ca_path: Path, state_dir: Path, url: str, region: str):
    """The broker and the provisioning service (dataplane/launch.py), not started yet. Their
    certificates come from the test CA here, so its key stays in this process."""
    from dataplane.launch import DataPlane
    from endpoint.iot_endpoint import endpoint_host

    return DataPlane(
        ca, ca_path, state_dir, url, region, ACCOUNT, endpoint_host(ACCOUNT, region, "iot:Data-ATS"),
    )


class Launch:
    """What the launcher started, stopped in reverse by stop()."""

    def __init__(self, server, serving: threading.Thread, endpoint_json: Path):
        self.server, self.serving, self.endpoint_json = server, serving, endpoint_json
        self.data_plane = None

    def publish(self, args, ca, faults: FaultSettings, url: str) -> None:
        """Warms up, writes the CA, starts the data plane if asked, then endpoint.json."""
        ca_path = self.endpoint_json.parent / "test-ca.pem"
        warm_up(url, args.region)
        write_atomically(ca_path, ca.pem())
        info = {
            "url": url, "pid": os.getpid(), "ca_cert": str(ca_path), "region": args.region,
            "faults": faults.as_json(),
        }
        if args.data_plane:
            # Kept before it starts, so that stop() ends whatever part of it did start.
            self.data_plane = new_data_plane(ca, ca_path, self.endpoint_json.parent, url, args.region)
            self.data_plane.start()
            info["data_plane"] = self.data_plane.info()
        write_atomically(self.endpoint_json, (json.dumps(info, indent=2) + "\n").encode("utf-8"))

    def stop(self, wait: bool = False) -> None:
        if self.data_plane is not None:
            self.data_plane.stop()
        self.server.shutdown()
        if wait:
            self.serving.join(timeout=10)

    def forget_endpoint_json(self) -> None:
        """Removes endpoint.json if it is still this process's."""
        try:
            if json.loads(self.endpoint_json.read_text()).get("pid") == os.getpid():
                self.endpoint_json.unlink()
        except (OSError, ValueError):
            pass


def serve_until_stopped(stop: threading.Event, exit_with_parent: bool, parent: int) -> None:
    while not stop.wait(1.0):
        # A harness killed with SIGKILL cannot stop us; notice it is gone instead.
        if exit_with_parent and os.getppid() != parent:
            break


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    parent = os.getppid()
    # From here on SIGTERM/SIGINT mean a clean stop, even mid-start.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    router = IotRouter(load_iot_routes())
    faults = fault_settings(parser, args, router)
    # The server logs at INFO; by default keep only warnings and errors (tracebacks of failed
    # requests) so a caller that never drains stderr cannot stall the server.
    logging.getLogger("waitress").setLevel(logging.INFO if args.log_requests else logging.WARNING)

    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoint_json = state_dir / "endpoint.json"
    endpoint_json.unlink(missing_ok=True)  # never leave a stale one for a poller to read

    from endpoint.ca import TestCa
    from endpoint.corrections import apply_all

    ca = TestCa()
    apply_all(ca, faults, data_plane=args.data_plane)
    server = make_server(args.port, router, faults, args.log_requests)
    if server is None:
        return 1
    serving = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    serving.start()
    launch = Launch(server, serving, endpoint_json)
    url = f"http://{HOST}:{server.server_address[1]}"
    lambda_code.PUBLIC_URL["url"] = url
    try:
        launch.publish(args, ca, faults, url)
    except Exception as e:  # noqa: BLE001 - report and stop, whatever went wrong
        print(f"local_endpoint: failed to start: {e}", file=sys.stderr)
        launch.stop()
        return 1
    if stop.is_set():
        launch.stop()
        endpoint_json.unlink(missing_ok=True)
        return 0
    print(f"ready {url}", flush=True)
    # moto prints a few diagnostics with print(); keep stdout to the one line promised above.
    sys.stdout = sys.stderr
    serve_until_stopped(stop, args.exit_with_parent, parent)
    launch.forget_endpoint_json()
    launch.stop(wait=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
