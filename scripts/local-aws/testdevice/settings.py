"""What the test device reads from a bundle (Settings), and how a provisioning attempt fails:
DeviceFailure at one of STAGES, ConfigError at the first."""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

STAGES = ("config", "connect", "create", "register", "reconnect")


class DeviceFailure(Exception):
    """A provisioning failure at one stage, with AWS's rejection fields when there were any."""

    def __init__(self, stage: str, error: str, rejection: Optional[dict] = None):
        super().__init__(error)
        assert stage in STAGES
        self.stage = stage
        self.error = error
        self.rejection = rejection or {}


class ConfigError(DeviceFailure):
    def __init__(self, error: str):
        super().__init__("config", error)



@dataclasses.dataclass
class Settings:
    """What the runtime would use to provision, with device paths (not yet host paths)."""

    nucleus: str
    config_files: list[str]
    endpoint: str
    port: int
    client_id: Optional[str]  # None: a fresh random UUID per attempt
    claim_cert: str
    claim_key: str
    root_ca: str
    template: str
    params: Optional[dict]  # None: no parameters field in RegisterThing
    method: str  # "create-keys" | "csr-file" | "csr-device"
    out_cert: str
    out_key: str
    csr_path: Optional[str] = None
    csr_key: Optional[str] = None
    csr_common_name: Optional[str] = None
    region: Optional[str] = None
    cred_endpoint: Optional[str] = None
    role_alias: Optional[str] = None
    out_dir: Optional[str] = None
    reconnect_port: int = 8883
    warnings: list[str] = dataclasses.field(default_factory=list)


def check_endpoint(endpoint: str, where: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*", endpoint):
        raise ConfigError(
            f"{where} {endpoint!r} is not a host name; the runtime dials it as one "
            "(no scheme, port or path) and would fail to connect"
        )
    return endpoint
