"""One test device provisioning from one bundle, stage by stage as its runtime does (config,
connect, create, register, reconnect), reported as one dict (../device.py has its fields). The
connection is the runtime's: Session (MQTT 3.1.1, the Java plugin's SDK client) or LiteSession
(MQTT 5, nucleus lite's iotcored)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Optional

from testdevice.bundle import extract_bundle, load_settings
from testdevice.certificates import obtain_certificate, write_private
from testdevice.lite_session import LiteSession
from testdevice.paths import map_device_path
from testdevice.register import register_thing, runtime_config
from testdevice.session import BaseSession, Session
from testdevice.settings import DeviceFailure, Settings


class Attempt:
    """The stages of one device's provisioning; `stage` is the one under way, `session` the
    connection open (closed by close() whatever happened)."""

    def __init__(self, bundle: Path, args, root: Path, report: dict):
        self.bundle, self.args, self.root, self.report = bundle, args, root, report
        self.settings: Optional[Settings] = None
        self.stage = "config"
        self.session: Optional[BaseSession] = None

    def open_session(self, cert: Path, key: Path, client_id: str, port: int) -> BaseSession:
        """The runtime's MQTT connection: lite's iotcored speaks MQTT 5 (see lite_session.py),
        the Java plugin's SDK v1 client MQTT 3.1.1."""
        kind = LiteSession if self.settings.nucleus == "lite" else Session
        return kind(self.settings, cert, key, client_id, port, self.args)

    def run(self) -> None:
        client_id = self.configure()
        certificate_id, registered = self.register_with_claim(client_id)
        self.reconnect(registered.thing_name)
        self.report.update({
            "ok": True,
            "thing_name": registered.thing_name,
            "certificate_id": certificate_id,
            "device_configuration": registered.device_configuration or {},
            "runtime_config": runtime_config(self.settings, registered.thing_name),
        })

    def configure(self) -> str:
        """Extracts the bundle and reads its config; returns the MQTT client id to use."""
        modes = extract_bundle(self.bundle, self.root)
        settings = self.settings = load_settings(self.args.nucleus, self.root, self.args.init_config)
        key_mode = modes.get(settings.claim_key)
        if key_mode is not None and key_mode & 0o077:
            settings.warnings.append(f"claim key {settings.claim_key} has mode {key_mode & 0o777:o}, not 600")
        client_id = settings.client_id or str(uuid.uuid4())
        self.report["client_id"] = client_id
        return client_id

    def register_with_claim(self, client_id: str):
        """Connects with the claim, obtains the device certificate and registers the thing;
        returns (certificate id, RegisterThing's accepted response)."""
        settings, root = self.settings, self.root
        self.stage = "connect"
        self.session = self.open_session(map_device_path(root, settings.claim_cert),
                                         map_device_path(root, settings.claim_key), client_id, settings.port)
        self.report["dialed"] = self.session.dialed
        self.session.connect("connect")
        self.stage = "create"
        certificate_id, token, certificate_pem = obtain_certificate(self.session, settings, root)
        self.report["certificate_id"] = certificate_id
        self.stage = "register"
        registered = register_thing(self.session, settings, token)
        self.session.disconnect("register")
        self.session = None
        if settings.nucleus == "lite":
            self.write_lite_credentials(certificate_pem)
        return certificate_id, registered

    def write_lite_credentials(self, certificate_pem: str) -> None:
        """Lite writes the certificate only once registered, with a copy of the root CA, and
        removes a custom CSR."""
        settings, root = self.settings, self.root
        write_private(map_device_path(root, settings.out_cert), certificate_pem.encode())
        shutil.copyfile(map_device_path(root, settings.root_ca),
                        map_device_path(root, f"{settings.out_dir}/AmazonRootCA.pem"))
        if settings.csr_path != f"{settings.out_dir}/cert_req.pem":
            map_device_path(root, settings.csr_path).unlink(missing_ok=True)

    def reconnect(self, thing_name: str) -> None:
        """Connects with the new certificate, client id = thing name, as the runtime then does."""
        settings, root = self.settings, self.root
        self.stage = "reconnect"
        self.session = self.open_session(map_device_path(root, settings.out_cert),
                                         map_device_path(root, settings.out_key), thing_name,
                                         settings.reconnect_port)
        self.session.connect("reconnect")
        self.session.disconnect("reconnect")
        self.session = None

    def close(self) -> None:
        if self.session is not None:
            try:
                self.session.disconnect(None)
            except Exception:
                pass


def failure_fields(stage: str, error: str, rejection: dict) -> dict:
    return {"ok": False, "stage": stage, "error": error,
            "status_code": rejection.get("status_code"),
            "error_code": rejection.get("error_code"),
            "error_message": rejection.get("error_message")}


def provision(bundle: Path, args, workdir: Path, index: int) -> dict:
    report: dict = {"bundle": str(bundle), "nucleus": args.nucleus}
    root = workdir / f"{index:04d}-{bundle.stem}"
    root.mkdir(mode=0o700)
    attempt = Attempt(bundle, args, root, report)
    try:
        attempt.run()
    except DeviceFailure as failure:
        report.update(failure_fields(failure.stage, failure.error, failure.rejection))
    except Exception as e:  # a bug or an unexpected SDK error: still one line for this bundle
        report.update(failure_fields(attempt.stage, f"{type(e).__name__}: {e}", {}))
    finally:
        attempt.close()
    report["warnings"] = attempt.settings.warnings if attempt.settings else []
    if args.keep_roots:
        report["device_root"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return report
