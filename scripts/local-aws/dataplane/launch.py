"""Starts and stops claimfab's local AWS IoT data plane for scripts/local-aws/local_endpoint.py.

Imported by the launcher when it runs with --data-plane (never run on its own). It owns:
  * the data plane's credentials, issued by the launcher's in-memory test CA (its key never
    leaves the launcher process): the broker's server certificate (EC P-256; SANs IP
    127.0.0.1, DNS localhost and the account's ATS data endpoint host) and the
    fleet-provisioning service's client certificate, written with their keys to
    STATE_DIR/data-plane/ (mode 0600 keys);
  * STATE_DIR/data-plane/mosquitto.conf and the broker process: Debian's mosquitto 2.0 on
    127.0.0.1:PORT (a free port), TLS only (cafile = the test CA, require_certificate true,
    TLS 1.2+), with the claimfab_auth plugin built by ensure-dataplane.sh (beside this file);
  * the service process (service.py beside this file, run as `python -m dataplane.service`
    from scripts/local-aws) and the Unix socket between plugin and service;
  * stopping both (SIGTERM, then SIGKILL after 5 s); both also get SIGTERM from the kernel if
    the launcher itself dies (PR_SET_PDEATHSIG), so --exit-with-parent and a SIGKILLed
    launcher leave nothing behind.
DataPlane.info() is what the launcher writes into endpoint.json as "data_plane" (with "log":
the broker's log, every packet it received, debug level).
"""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # scripts/local-aws: where `python -m dataplane.service` resolves
SERVICE_CLIENT_ID = "claimfab-fleet-provisioning"


def _pdeathsig():
    """Child: get SIGTERM when the launcher dies (Linux prctl PR_SET_PDEATHSIG = 1)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write(path: Path, data: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(path, mode)


def _key_pem(key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


class DataPlaneError(RuntimeError):
    pass


def ensure_plugin() -> str:
    """The broker plugin's path, built if needed by ensure-dataplane.sh beside this file."""
    plugin = subprocess.run(
        ["bash", str(HERE / "ensure-dataplane.sh"), "--print-path"],
        capture_output=True, text=True,
    )
    if plugin.returncode != 0:
        raise DataPlaneError(f"scripts/local-aws/dataplane/ensure-dataplane.sh failed: {plugin.stderr.strip()}")
    return plugin.stdout.strip().splitlines()[-1]


class DataPlane:
    def __init__(self, ca, ca_path: Path, state_dir: Path, endpoint_url: str, region: str, account: str, server_name: str):
        self.ca = ca
        self.ca_path = ca_path
        self.dir = state_dir / "data-plane"
        self.endpoint_url = endpoint_url
        self.region = region
        self.account = account
        self.server_name = server_name
        self.port = 0
        self.broker: subprocess.Popen | None = None
        self.service: subprocess.Popen | None = None
        self.socket_dir: str | None = None

    # -- credentials ------------------------------------------------------------------------
    def issue(self, common_name: str, extensions) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "claimfab local endpoint"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        return self.ca.issue(subject, key.public_key(), extensions), _key_pem(key)

    def start(self) -> None:
        plugin_path = ensure_plugin()
        self.dir.mkdir(parents=True, exist_ok=True)
        service_cert_id = self.write_credentials()
        # A Unix socket path must fit in sun_path (108 bytes): short private directory.
        self.socket_dir = tempfile.mkdtemp(prefix="claimfab-dp-")
        auth_socket = os.path.join(self.socket_dir, "auth.sock")
        # Service first: its decision socket must be there before the first CONNECT.
        self.port = _free_port()
        self.service = self.start_service(auth_socket)
        _write(self.dir / "mosquitto.conf", self.mosquitto_conf(plugin_path, auth_socket, service_cert_id))
        mosquitto = "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else "mosquitto"
        self.broker = subprocess.Popen(
            [mosquitto, "-c", str(self.dir / "mosquitto.conf")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=_pdeathsig,
        )
        self.wait_ready(timeout=20)

    def write_credentials(self) -> str:
        """The broker's server certificate and the service's client certificate, with their
        keys, into the data plane's directory; returns the service certificate's id."""
        broker_pem, broker_key = self.issue(
            "claimfab local data plane broker",
            [
                (
                    x509.SubjectAlternativeName(
                        [
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                            x509.DNSName("localhost"),
                            x509.DNSName(self.server_name),
                        ]
                    ),
                    False,
                ),
                (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            ],
        )
        service_pem, service_key = self.issue(
            "claimfab local fleet provisioning service",
            [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)],
        )
        files = {
            "broker.pem": (broker_pem, 0o644),
            "broker.key": (broker_key, 0o600),
            "service.pem": (service_pem, 0o644),
            "service.key": (service_key, 0o600),
        }
        for name, (data, mode) in files.items():
            _write(self.dir / name, data, mode)
        return hashlib.sha256(
            x509.load_pem_x509_certificate(service_pem.encode("ascii")).public_bytes(serialization.Encoding.DER)
        ).hexdigest()

    def start_service(self, auth_socket: str) -> subprocess.Popen:
        """The fleet-provisioning service (dataplane/service.py), run as a module of this
        package; it prints "ready" once subscribed."""
        return subprocess.Popen(
            [
                sys.executable, "-m", "dataplane.service",
                "--endpoint-url", self.endpoint_url, "--region", self.region, "--account", self.account,
                "--auth-socket", auth_socket, "--broker-port", str(self.port),
                "--ca", str(self.ca_path), "--cert", str(self.dir / "service.pem"),
                "--key", str(self.dir / "service.key"), "--client-id", SERVICE_CLIENT_ID,
            ],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, preexec_fn=_pdeathsig, text=True,
            cwd=PACKAGE_ROOT,
        )

    def mosquitto_conf(self, plugin_path: str, auth_socket: str, service_cert_id: str) -> str:
        return "\n".join(
            [
                "# Written by scripts/local-aws/dataplane/launch.py (claimfab local data plane); do not edit.",
                "per_listener_settings false",
                "allow_anonymous false",
                "persistence false",
                "user root",  # stays the invoking user; only root would otherwise switch users
                # Its own file beside the certificates: TLS handshakes that clients end (every
                # device's disconnect) would otherwise flood the caller's stderr.
                # Every packet the broker receives is logged ("Received SUBSCRIBE from
                # CLIENT_ID", ...): the broker's own record of what devices sent, which tests
                # read (a nucleus lite device must send no SUBSCRIBE at all).
                f"log_dest file {self.dir / 'mosquitto.log'}",
                "log_type all",
                "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                f"plugin {plugin_path}",
                f"plugin_opt_socket {auth_socket}",
                f"plugin_opt_service_cert_id {service_cert_id}",
                "plugin_opt_timeout_ms 5000",
                f"listener {self.port} 127.0.0.1",
                f"cafile {self.ca_path}",
                f"certfile {self.dir / 'broker.pem'}",
                f"keyfile {self.dir / 'broker.key'}",
                "require_certificate true",
                "use_identity_as_username false",
                "tls_version tlsv1.2",
                "",
            ]
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.service.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if self.broker.poll() is not None:
                    raise DataPlaneError(
                        f"mosquitto exited with status {self.broker.returncode} (see {self.dir / 'mosquitto.log'})"
                    )
                if self.service.poll() is not None:
                    raise DataPlaneError(f"the provisioning service exited with status {self.service.returncode}")
                if sel.select(timeout=0.05):
                    line = self.service.stdout.readline()
                    if line.strip() == "ready":
                        return
                    if not line:
                        continue
            raise DataPlaneError("the data plane did not become ready in time")
        finally:
            sel.close()

    def info(self) -> dict:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "server_name": self.server_name,
            "ca_cert": str(self.ca_path),
            "broker_pid": self.broker.pid if self.broker else None,
            "service_pid": self.service.pid if self.service else None,
            "service_client_id": SERVICE_CLIENT_ID,
            "log": str(self.dir / "mosquitto.log"),
        }

    def stop(self) -> None:
        for proc in (self.broker, self.service):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in (self.broker, self.service):
            if proc is None:
                continue
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.service is not None and self.service.stdout:
            self.service.stdout.close()
        if self.socket_dir:
            for name in os.listdir(self.socket_dir):
                try:
                    os.unlink(os.path.join(self.socket_dir, name))
                except OSError:
                    pass
            try:
                os.rmdir(self.socket_dir)
            except OSError:
                pass
