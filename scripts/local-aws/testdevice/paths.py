"""Device paths (absolute, as the runtime reads them) and where they live in a bundle zip and in
an extracted device root."""

from __future__ import annotations

import posixpath
from pathlib import Path

from testdevice.settings import ConfigError

def normalize_device_path(path: str, what: str) -> str:
    """An absolute, normalized device path (Java: Paths.get(p).normalize())."""
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{what} is empty")
    if "\0" in path:
        raise ConfigError(f"{what} {path!r} contains a NUL byte")
    if not path.startswith("/"):
        raise ConfigError(
            f"{what} {path!r} is relative: the runtime would resolve it against its working "
            "directory, which no bundle can know; use an absolute device path"
        )
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    return norm


def zip_entry_name(device_path: str) -> str:
    """Where a device path lives inside a bundle zip (leading '/' dropped, as claimfab does)."""
    return normalize_device_path(device_path, "path").lstrip("/")


def map_device_path(root: Path, device_path: str, what: str = "path") -> Path:
    """The host path of `device_path` inside an extracted device root."""
    rel = normalize_device_path(device_path, what).lstrip("/")
    return root / rel if rel else root
