#!/usr/bin/env python3
"""One fleet-provisioning attempt by someone holding a device's credentials, for claimfab's
security tests against the local data plane (or any AWS IoT endpoint reachable the same way).

Usage (from the repository root):

    .venv/bin/python scripts/local-aws/attacker.py --nucleus java|lite --bundle DEV.zip \\
        [--as-cert DIR] [--client-id ID] \\
        --csr-common-name CN --param K=V [--param K=V ...] --save DIR \\
        [--stop-after create | --token-from DIR] \\
        --connect-to HOST:PORT --root-ca TEST_CA.pem [--timeout S]

It owns only the attempt; everything device-like is the test device's (device.py beside it,
the package testdevice/: bundle extraction, reading the config as the chosen nucleus does,
the CONNECT tunnel, the MQTT session with AWS's device SDK, the CSR, the RegisterThing
call). One attempt:

  1. config: the bundle is extracted into a temporary device root and its config read as the
     nucleus reads it (--nucleus java: the init config at device.py's default --init-config
     path), for the claim certificate and key, iotDataEndpoint and the template name
     (provisioningTemplate / templateName);
  2. connect: with the bundle's claim certificate and key or, with --as-cert DIR, with
     DIR/certificate.pem and DIR/private.key (saved by an earlier attempt's --save); client
     id --client-id, else a random UUID;
  3. create: a fresh EC P-256 key and a CSR whose subject is CN=<--csr-common-name> (at most
     64 characters), CreateCertificateFromCsr (json); the new certificate and key are saved
     at once to --save DIR: certificate.pem, private.key (mode 0600), certificate_id.txt and
     ownership_token.txt (mode 0600); --stop-after create ends the attempt here (ok);
  4. register: RegisterThing on the bundle's template with exactly the --param parameters
     (whatever the bundle's own templateParameters/templateParams say) and the new
     certificate's ownership token; with --token-from DIR, step 3 is skipped and the token
     is DIR/ownership_token.txt, obtained by an earlier attempt on another connection.
Both calls subscribe to the exact .../accepted and .../rejected topics (QoS 1).

Output: ONE JSON line on stdout:
    {"ok": bool, "stage": "config|connect|create|register", "client_id": ...,
     "certificate_id": ... | null, "thing_name": ... | null, "status_code", "error_code",
     "error_message" (AWS's rejection, verbatim; null when the failure was no rejection),
     "dropped": bool (the server closed the connection, e.g. on a policy Deny), "error": str | null}
stage is where the attempt stopped (the last stage, register, when ok). Exit status: 0 every
step accepted, 1 refused or failed, 2 bad usage. Private keys are never printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import uuid
from pathlib import Path
from typing import Optional

from testdevice.bundle import extract_bundle, load_settings
from testdevice.certificates import check_key_matches, create_certificate_from_csr, make_csr, write_private
from testdevice.cli import UsageError, parse_connect_to, run_once
from testdevice.java_config import JAVA_DEFAULT_INIT_CONFIG
from testdevice.paths import map_device_path
from testdevice.register import register_thing
from testdevice.session import Session
from testdevice.settings import DeviceFailure


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(
        prog="attacker.py",
        description="One fleet-provisioning attempt (CreateCertificateFromCsr + RegisterThing) with a device's credentials.",
    )
    parser.add_argument("--nucleus", choices=("java", "lite"), required=True, help="how to read the bundle's config")
    parser.add_argument("--bundle", required=True, metavar="ZIP", help="a claimfab device bundle")
    parser.add_argument("--as-cert", metavar="DIR",
                        help="connect with DIR/certificate.pem and DIR/private.key instead of the bundle's claim")
    parser.add_argument("--client-id", help="MQTT client id (default: a random UUID)")
    parser.add_argument("--csr-common-name", required=True, metavar="CN", help="the CSR's subject CN (1..64 characters)")
    parser.add_argument("--param", action="append", required=True, metavar="K=V",
                        help="a RegisterThing parameter (repeat); these are all the parameters sent")
    parser.add_argument("--save", required=True, metavar="DIR", help="where the new certificate and key go")
    parser.add_argument("--connect-to", required=True, metavar="HOST:PORT", help="the data plane's MQTT broker (TLS)")
    parser.add_argument("--root-ca", required=True, metavar="PEM", help="the CA the server's certificate chains to")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds each step may take (default 10)")
    parser.add_argument("--stop-after", choices=("create",), help="end the attempt after this step")
    parser.add_argument("--token-from", metavar="DIR",
                        help="skip create; register with DIR/ownership_token.txt (saved by an earlier --save)")
    args = parser.parse_args(argv)

    args.connect_to = parse_connect_to(args.connect_to)
    if not Path(args.root_ca).is_file():
        raise UsageError(f"--root-ca {args.root_ca}: no such file")
    args.root_ca = str(Path(args.root_ca).resolve())
    if not Path(args.bundle).is_file():
        raise UsageError(f"--bundle {args.bundle}: no such file")
    if args.as_cert and not all((Path(args.as_cert) / f).is_file() for f in ("certificate.pem", "private.key")):
        raise UsageError(f"--as-cert {args.as_cert}: needs certificate.pem and private.key")
    if args.token_from and not (Path(args.token_from) / "ownership_token.txt").is_file():
        raise UsageError(f"--token-from {args.token_from}: needs ownership_token.txt")
    if args.token_from and args.stop_after:
        raise UsageError("--token-from skips create; it cannot --stop-after create")
    if not 0 < len(args.csr_common_name) <= 64:
        raise UsageError("--csr-common-name must be 1 to 64 characters (an X.509 CN's upper bound)")
    args.params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--param {item!r} is not K=V")
        args.params[key] = value
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return args


def save_credentials(directory: Path, response, key_pem: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / "certificate.pem").write_text(response.certificate_pem)
    write_private(directory / "private.key", key_pem)
    (directory / "certificate_id.txt").write_text(response.certificate_id + "\n")
    write_private(directory / "ownership_token.txt", response.certificate_ownership_token.encode())


def create(session: Session, args, report: dict) -> Optional[str]:
    """Step 3: the new certificate's ownership token (None with --token-from: the saved one
    is used instead)."""
    if args.token_from:
        return None
    report["stage"] = "create"
    key_pem, csr = make_csr(args.csr_common_name)
    response, _ = create_certificate_from_csr(session, csr)
    check_key_matches("create", response.certificate_pem, key_pem, "the key of the CSR")
    report["certificate_id"] = response.certificate_id
    save_credentials(Path(args.save), response, key_pem)
    return response.certificate_ownership_token


def attempt(args, root: Path) -> dict:
    report: dict = {"ok": False, "stage": "config", "client_id": None, "certificate_id": None, "thing_name": None,
                    "status_code": None, "error_code": None, "error_message": None, "dropped": False, "error": None}
    session: Optional[Session] = None
    try:
        extract_bundle(Path(args.bundle), root)
        settings = load_settings(args.nucleus, root, JAVA_DEFAULT_INIT_CONFIG)
        settings = dataclasses.replace(settings, params=dict(args.params))
        if args.as_cert:
            cert, key = Path(args.as_cert) / "certificate.pem", Path(args.as_cert) / "private.key"
            port = settings.reconnect_port  # where the nucleus connects with a device certificate
        else:
            cert, key = map_device_path(root, settings.claim_cert), map_device_path(root, settings.claim_key)
            port = settings.port
        report["client_id"] = args.client_id or str(uuid.uuid4())

        report["stage"] = "connect"
        session = Session(settings, cert, key, report["client_id"], port, args)
        session.connect("connect")

        token = create(session, args, report)
        if args.stop_after == "create":
            report["ok"] = True
            return report
        if token is None:
            token = (Path(args.token_from) / "ownership_token.txt").read_text().strip()

        report["stage"] = "register"
        registered = register_thing(session, settings, token)
        report.update({"ok": True, "thing_name": registered.thing_name})
    except DeviceFailure as failure:
        report.update({"stage": failure.stage, "error": failure.error,
                       "status_code": failure.rejection.get("status_code"),
                       "error_code": failure.rejection.get("error_code"),
                       "error_message": failure.rejection.get("error_message")})
    except Exception as e:  # a bug or an unexpected SDK error: still the one line
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        if session is not None:
            report["dropped"] = session.dropped()
            try:
                session.disconnect(None)
            except Exception:
                pass
    return report


def main(argv: Optional[list[str]] = None) -> int:
    return run_once(parse_args, argv, "attacker.py", attempt)


if __name__ == "__main__":
    sys.exit(main())
