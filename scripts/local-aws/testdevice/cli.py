"""The test device's command line (the front door is ../device.py, whose docstring is the
usage): parses and checks the arguments, provisions every bundle on a pool of --jobs threads,
prints one line per bundle as it finishes."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from testdevice.java_config import JAVA_DEFAULT_INIT_CONFIG
from testdevice.provision import provision


class UsageError(Exception):
    pass


def parse_connect_to(text: str) -> tuple[str, int]:
    """--connect-to HOST:PORT ([HOST]:PORT for an IPv6 address)."""
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", text)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise UsageError(f"--connect-to {text!r} is not HOST:PORT")
    return (match.group(1), int(match.group(2)))


def parse_args(argv: list[str]):
    parser = argparse.ArgumentParser(
        prog="device.py",
        description="Provision test Greengrass devices from claimfab bundles with AWS's IoT device SDK.",
    )
    parser.add_argument("--nucleus", choices=("java", "lite"), required=True,
                        help="which runtime to behave as")
    parser.add_argument("--bundle", action="append", required=True, metavar="ZIP",
                        help="a claimfab device bundle (repeat for several devices)")
    parser.add_argument("--connect-to", required=True, metavar="HOST:PORT",
                        help="where the data plane's MQTT broker listens (TLS)")
    parser.add_argument("--root-ca", required=True, metavar="PEM",
                        help="the data plane's test CA, standing in for Amazon Root CA 1")
    parser.add_argument("--init-config", metavar="DEVICE_PATH",
                        help=f"java: the nucleus's --init-config device path (default {JAVA_DEFAULT_INIT_CONFIG})")
    parser.add_argument("--jobs", type=int, default=4, help="devices provisioned at once (default 4)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each step may take (connect, each SUBACK/PUBACK/answer; default 10)")
    parser.add_argument("--keep-roots", metavar="DIR",
                        help="keep each device root (with its new private key) under DIR")
    parser.add_argument("--json", action="store_true", help="one JSON object per bundle on stdout")
    args = parser.parse_args(argv)

    if args.init_config is not None and args.nucleus != "java":
        raise UsageError("--init-config is for --nucleus java (lite reads /etc/greengrass/config.yaml and config.d)")
    if args.init_config is None:
        args.init_config = JAVA_DEFAULT_INIT_CONFIG
    elif not args.init_config.startswith("/"):
        raise UsageError("--init-config takes an absolute device path, e.g. /greengrass/v2/init-config/config.yaml")
    args.connect_to = parse_connect_to(args.connect_to)
    try:
        ca_text = Path(args.root_ca).read_text()
    except OSError as e:
        raise UsageError(f"--root-ca {args.root_ca}: {e}")
    if "-----BEGIN CERTIFICATE-----" not in ca_text:
        raise UsageError(f"--root-ca {args.root_ca} holds no PEM certificate")
    args.root_ca = str(Path(args.root_ca).resolve())
    for bundle in args.bundle:
        if not Path(bundle).is_file():
            raise UsageError(f"--bundle {bundle}: no such file")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    if args.keep_roots:
        Path(args.keep_roots).mkdir(parents=True, exist_ok=True, mode=0o700)
    return args


def human_line(report: dict) -> str:
    if report["ok"]:
        line = (f"ok    {report['bundle']}: thing {report['thing_name']}, certificate {report['certificate_id']}, "
                f"client id {report.get('client_id')}, dialed {report.get('dialed')}")
    else:
        line = f"FAIL  {report['bundle']}: {report['stage']}: {report['error']}"
    for w in report.get("warnings", []):
        line += f"\n      warning: {w}"
    return line


def parse_command_line(parse, argv: Optional[list[str]], prog: str):
    """(arguments, None), or (None, exit status) after bad usage (2) or --help (0)."""
    try:
        return parse(sys.argv[1:] if argv is None else argv), None
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, 2
    except SystemExit as e:  # argparse: bad usage (2) or --help (0)
        return None, int(e.code or 0)


def run_once(parse, argv: Optional[list[str]], prog: str, body) -> int:
    """The front door of a one-shot program (attacker.py, eavesdropper.py): parses its
    arguments, runs body(args, root) in a private scratch root removed afterwards, prints the
    JSON report it returns as one line. Exit status 0 when report["ok"], 1 otherwise, 2 on bad
    usage."""
    args, status = parse_command_line(parse, argv, prog)
    if args is None:
        return status
    root = Path(tempfile.mkdtemp(prefix=f"claimfab-{prog.removesuffix('.py')}-"))
    root.chmod(0o700)
    try:
        report = body(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report), flush=True)
    return 0 if report["ok"] else 1


def main(argv: Optional[list[str]] = None) -> int:
    args, status = parse_command_line(parse_args, argv, "device.py")
    if args is None:
        return status
    print_lock = threading.Lock()
    failed = 0
    workdir = Path(args.keep_roots) if args.keep_roots else Path(tempfile.mkdtemp(prefix="claimfab-devices-"))
    if args.keep_roots:
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(provision, Path(b), args, workdir, i) for i, b in enumerate(args.bundle)]
            for future in concurrent.futures.as_completed(futures):
                report = future.result()
                failed += 0 if report["ok"] else 1
                with print_lock:
                    print(json.dumps(report, sort_keys=False) if args.json else human_line(report), flush=True)
    finally:
        if not args.keep_roots:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.json:
        print(f"{len(args.bundle) - failed} provisioned, {failed} failed", file=sys.stderr)
    return 1 if failed else 0
