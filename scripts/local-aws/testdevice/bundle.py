"""A claimfab bundle on the test device: extracted into a device root, its config read as the
chosen runtime reads it, and the files the config points at checked to be there."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path

from testdevice.java_config import parse_java_init_config, read_java_settings
from testdevice.lite_config import lite_config_files, lite_load
from testdevice.lite_settings import read_lite_settings
from testdevice.paths import map_device_path
from testdevice.settings import ConfigError, Settings


def extract_bundle(bundle: Path, root: Path) -> dict[str, int]:
    """Extract a bundle into a device root, keeping each entry's Unix mode. Returns
    {device path: mode}."""
    modes = {}
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConfigError(f"{bundle} is not a readable zip: {e}")
    with archive:
        for info in archive.infolist():
            name = info.filename
            if name.startswith("/") or "\\" in name or any(p in ("..",) for p in name.split("/")):
                raise ConfigError(f"bundle entry {name!r} does not map to a device path under /")
            mode = (info.external_attr >> 16) & 0o7777
            kind = (info.external_attr >> 16) & 0o170000
            if kind == stat.S_IFLNK:
                raise ConfigError(f"bundle entry {name!r} is a symlink")
            target = root / name
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            if mode:
                os.chmod(target, mode & 0o777)
            modes["/" + name] = mode
    return modes


def load_settings(nucleus: str, root: Path, init_config: str) -> Settings:
    """Read the config from an extracted device root as the runtime would, and check the
    files it points at exist there."""
    if nucleus == "java":
        host = map_device_path(root, init_config, "--init-config")
        if not host.is_file():
            raise ConfigError(
                f"no file at {init_config} in the bundle: the nucleus skips a missing --init-config "
                "silently, the plugin gets no parameters and the device stays unprovisioned"
            )
        settings = read_java_settings(parse_java_init_config(init_config, host.read_bytes()), init_config)
        needed = [("claimCertificatePath", settings.claim_cert), ("claimCertificatePrivateKeyPath", settings.claim_key),
                  ("rootCaPath", settings.root_ca)]
        if settings.method == "csr-file":
            needed += [("csrPath", settings.csr_path), ("csrPrivateKeyPath", settings.csr_key)]
    else:
        files = lite_config_files(root)
        tree, notes = lite_load(files)
        settings = read_lite_settings(tree, [name for name, _ in files])
        settings.warnings.extend(notes)
        needed = [("claimCertPath", settings.claim_cert), ("claimKeyPath", settings.claim_key),
                  ("rootCaPath", settings.root_ca)]
    absent = [f"{key} {path}" for key, path in needed if not map_device_path(root, path).is_file()]
    if absent:
        raise ConfigError(
            "the config points at files the bundle does not have: " + ", ".join(absent)
            + ("; the plugin's TLS setup would throw and the device stays unprovisioned" if nucleus == "java"
               else "; lite's iotcored could not connect and fleet-provisioning would fail")
        )
    return settings
