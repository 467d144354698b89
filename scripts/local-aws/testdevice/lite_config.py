"""Nucleus lite, as the test device reads a bundle for it: ggconfigd's loading and merging of
the config files (this module), then what fleet-provisioning reads from the merged tree
(lite_settings.py).

FACTS (read from the runtimes' sources; paths are repository paths at the commit named)

Nucleus lite: aws-greengrass/aws-greengrass-lite @ 326e992b4a03e1b4 (+ component SDK
aws-greengrass/aws-greengrass-component-sdk, pinned 4ead4862 in fc_deps.json)
  * ggconfigd (modules/ggconfigd/bin/ggconfigd.c, src/config_load.c): loads
    /etc/greengrass/config.yaml (-c), then every *regular file* in /etc/greengrass/config.d
    (-C) -- any name, not only *.yaml; symlinks skipped -- in readdir() order (unsorted), all
    at timestamp 2. ggconfig_write_value_at_key skips a write only if the stored timestamp is
    newer, so at equal timestamps the later file wins. Each file is read into a static 8192-byte
    buffer (gg_file_read stops when the buffer is full: longer files are silently truncated,
    then YAML-parsed). libyaml scalars all stay strings (modules/ggl-yaml yaml_decode.c); a
    parse failure skips the file; the first failing key aborts the rest of the file. Keys are
    compared bytewise (keyTable COLLATE BINARY; docs/spec says case-insensitive, the code is
    not). A key that is a map cannot take a value and vice versa. The database
    (/var/lib/greengrass/config.db) persists; values written at runtime (timestamp 3) beat the
    files on later boots.
  * fleet-provisioning (modules/fleet-provisioning/src/{entry,config_operations,cloud_request,
    pki_ops}.c, bin/fleet-provisioning.c): a program run by hand (`sudo fleet-provisioning`,
    /usr/local/bin or /usr/bin) while ggconfigd runs; there is no systemd unit for it. It reads
    only services/aws.greengrass.fleet_provisioning/configuration/*:
      - claimCertPath absent or empty -> "not enabled": exits 0 doing nothing;
      - system/certificateFilePath non-empty -> "Skipping provisioning.", exit 0;
      - required strings: claimCertPath, claimKeyPath, rootCaPath, templateName (<=128 bytes),
        iotDataEndpoint (<=128 bytes); templateParams required and must be a map;
      - optional: csrCommonName (<=256, default "aws-greengrass-nucleus-lite"), csrPath,
        certPath, keyPath (output paths); iotCredEndpoint is read only after RegisterThing
        succeeded, so without it the run fails with a registered thing and no
        system/certificateFilePath (the next run provisions again).
    Flags override the config: --claim-cert= --claim-key= --template-name= --template-params=
    (JSON) --endpoint= --root-ca-path= --output-dir= (optional-argument flags: '=' form).
    It spawns its own iotcored (-n iotcoredfleet, -i <random UUID v4> as client id, port 8883
    fixed, no ALPN, SNI + hostname check = endpoint, CA = rootCaPath), makes an EC P-256 key
    and a SHA-256 CSR whose subject is only CN=csrCommonName (X509_NAME_add_entry_by_txt's
    result is ignored: a CN over 64 characters leaves the subject empty), then publishes
    {"certificateSigningRequest"} to `$aws/certificates/create-from-csr/json`, then
    {"certificateOwnershipToken", "parameters"} (parameters always present) to
    `$aws/provisioning-templates/<templateName>/provision/json`; QoS 1, 30 s each, with NO
    SUBSCRIBE (`<topic>/+` is a "virtual" subscription registered only inside iotcored; an
    UNSUBSCRIBE of it follows each call) over MQTT 5 -- the wire, read from v2.6.0, is in
    lite_session.py.
    Output dir /var/lib/greengrass/credentials (NOT system.rootPath): priv_key, cert_req.pem,
    certificate.pem, AmazonRootCA.pem (a copy of rootCaPath). Then (timestamp 3)
    system.rootCaPath, system.privateKeyPath, system.thingName,
    NucleusLite.configuration.iotDataEndpoint and .iotCredEndpoint (copied from its own
    section), chown -R ggcore:ggcore (GGL_SYSTEMD_SYSTEM_USER/GROUP), and last
    system.certificateFilePath. awsRegion and iotRoleAlias are never written: they must be in
    NucleusLite.configuration already. Afterwards `systemctl restart greengrass-lite.target`;
    iotcored then uses client id = system.thingName on port 8883.
  * ggdeploymentd reads NucleusLite.configuration.runWithDefault.posixUser (deployments fail
    to run components without it) and .greengrassDataPlanePort (string; cloud deployments fail
    without it). Lite's Debian postinst writes them into config.d/greengrass-lite.yaml as
    "ggcore:ggcore" and "8443" (the guide's sample: posixUser "ggcore:ggcore", port "8443").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import yaml

from testdevice.paths import map_device_path
from testdevice.settings import ConfigError

LITE_SECTION = ("services", "aws.greengrass.fleet_provisioning", "configuration")
LITE_CONFIG_FILE = "/etc/greengrass/config.yaml"
LITE_CONFIG_DIR = "/etc/greengrass/config.d"
LITE_FILE_BUFFER = 8192
LITE_OUTPUT_DIR = "/var/lib/greengrass/credentials"
LITE_DEFAULT_CSR_CN = "aws-greengrass-nucleus-lite"
LITE_PORT = 8883
LITE_REQUIRED = ("claimCertPath", "claimKeyPath", "rootCaPath", "templateName", "iotDataEndpoint")
LITE_OPTIONAL = ("csrCommonName", "csrPath", "certPath", "keyPath", "iotCredEndpoint", "templateParams")
LITE_MAX_LEN = {"templateName": 128, "iotDataEndpoint": 128, "csrCommonName": 256}
PATH_MAX = 4096
# Names nucleus lite does not read, with what it reads instead.
LITE_IGNORED_NAMES = {
    "claimCertificatePath": "claimCertPath",
    "claimCertificatePrivateKeyPath": "claimKeyPath",
    "provisioningTemplate": "templateName",
    "templateParameters": "templateParams",
    "iotCredentialEndpoint": "iotCredEndpoint",
    "certificatePath": "certPath",
    "privateKeyPath": "keyPath",
    "csrPrivateKeyPath": "nothing: lite always makes its own key and CSR",
    "deviceId": "nothing: lite's client id is a random UUID",
    "mqttPort": "nothing: lite's iotcored always dials port 8883",
    "rootPath": "nothing in this section (system.rootPath is separate)",
}


def lite_parse_file(name: str, data: bytes) -> Any:
    """One config file as ggconfigd loads it: at most 8192 bytes, every scalar a string."""
    if len(data) > LITE_FILE_BUFFER:
        raise ConfigError(
            f"{name} is {len(data)} bytes: ggconfigd reads each config file into an "
            f"{LITE_FILE_BUFFER}-byte buffer and would parse only the first {LITE_FILE_BUFFER} bytes"
        )
    try:
        doc = yaml.load(data.decode("utf-8"), Loader=yaml.BaseLoader)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{name} does not parse as YAML ({e}); ggconfigd would skip the whole file")
    if doc is None:
        raise ConfigError(f"{name} is an empty YAML document; ggconfigd would load nothing from it")
    return doc


_MAP = object()  # marks a key written as an (empty) map


def lite_merge(files: list[tuple[str, Any]]) -> tuple[dict, list[tuple[str, str, str]]]:
    """Merge parsed config files in order, as ggconfigd writes them into its database: leaf by
    leaf at one timestamp, so a later file's value replaces an earlier one; a key is either a
    map or a value. Returns the merged tree and (key path, later file, earlier file) for each
    value a later file replaced with a different one."""
    merged: dict = {}
    origin: dict[tuple, str] = {}
    notes: list[tuple[str, str, str]] = []

    def write(path: tuple, value: Any, name: str) -> None:
        node = merged
        for i, key in enumerate(path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"{name}: {'/'.join(path[: i + 1])} holds a value (from {origin[path[: i + 1]]}), "
                    "so ggconfigd cannot store keys under it and stops loading this file"
                )
            node = child
        last = path[-1]
        if value is _MAP:
            if last not in node:
                node[last] = {}
            elif not isinstance(node[last], dict):
                raise ConfigError(f"{name}: {'/'.join(path)} is a value in {origin[path]} and a map here")
            return
        if isinstance(node.get(last), dict):
            raise ConfigError(
                f"{name}: {'/'.join(path)} is a map (from an earlier file) and a value here; "
                "ggconfigd refuses the write and stops loading this file"
            )
        if last in node and node[last] != value:
            notes.append(("/".join(path), name, origin[path]))
        node[last] = value
        origin[path] = name

    def walk(path: tuple, value: Any, name: str) -> None:
        if isinstance(value, dict):
            if not value:
                if path:
                    write(path, _MAP, name)
                return
            for k, v in value.items():
                walk(path + (k,), v, name)
        else:
            if not path:
                raise ConfigError(f"{name} is not a map at the top level; ggconfigd cannot merge it")
            write(path, value, name)

    for name, doc in files:
        walk((), doc, name)
    return merged, notes


def lite_config_files(root: Path) -> list[tuple[str, bytes]]:
    """(device path, bytes) of what ggconfigd would load from a device root, in a fixed order:
    config.yaml, then config.d's regular files by name (ggconfigd uses readdir order)."""
    out = []
    main = map_device_path(root, LITE_CONFIG_FILE)
    if main.is_file() and not main.is_symlink():
        out.append((LITE_CONFIG_FILE, main.read_bytes()))
    conf_d = map_device_path(root, LITE_CONFIG_DIR)
    if conf_d.is_dir():
        for entry in sorted(os.scandir(conf_d), key=lambda e: e.name):
            if entry.is_file(follow_symlinks=False):
                out.append((f"{LITE_CONFIG_DIR}/{entry.name}", Path(entry.path).read_bytes()))
    return out


def lite_load(files: list[tuple[str, bytes]]) -> tuple[dict, list[str]]:
    """Parse and merge lite config files; conflicting values between config.d files are an
    error, since ggconfigd's readdir order (not the name order) decides which one wins."""
    if not files:
        raise ConfigError(
            f"no {LITE_CONFIG_FILE} and no regular file in {LITE_CONFIG_DIR}/: ggconfigd would start "
            "empty and fleet-provisioning would exit 0 without provisioning (claimCertPath absent)"
        )
    parsed = [(name, lite_parse_file(name, data)) for name, data in files]
    merged, replaced = lite_merge(parsed)
    in_dir = LITE_CONFIG_DIR + "/"
    conflicts = [f"{key} in {old} and {new}" for key, new, old in replaced
                 if new.startswith(in_dir) and old.startswith(in_dir)]
    if conflicts:
        raise ConfigError(
            "config.d files set the same key to different values, and ggconfigd loads config.d in "
            "readdir() order, so which one wins depends on the filesystem: " + "; ".join(conflicts)
        )
    return merged, [f"{key}: {new} replaces the value from {old}" for key, new, old in replaced]


def _lite_get(tree: dict, path: tuple) -> tuple[bool, Any]:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def _lite_near_miss(tree: dict, path: tuple) -> Optional[str]:
    """The path as written with other letter case, if it exists."""
    node: Any = tree
    found = []
    for key in path:
        if not isinstance(node, dict):
            return None
        hits = [k for k in node if k.casefold() == key.casefold()]
        if not hits:
            return None
        found.append(hits[0])
        node = node[hits[0]]
    return "/".join(found) if tuple(found) != path else None
