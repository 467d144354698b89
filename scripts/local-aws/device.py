#!/usr/bin/env python3
"""A test Greengrass core device that provisions from claimfab bundles with AWS's IoT device SDK.

Usage (from the repository root):

    .venv/bin/python scripts/dataplane/device.py --nucleus java|lite \\
        --bundle DEV1.zip [--bundle DEV2.zip ...] \\
        --connect-to 127.0.0.1:PORT --root-ca TEST_CA.pem \\
        [--init-config /greengrass/v2/init-config/config.yaml]   (java only) \\
        [--jobs 4] [--timeout 10] [--keep-roots DIR] [--json]

Each bundle is extracted into its own temporary "device root" (zip entries are device paths
with the leading '/' dropped). The device reads the Greengrass config from it exactly as the
chosen runtime does (see FACTS below), connects with mTLS using the claim certificate and key
the config points at, obtains its device certificate the way that runtime does, calls
RegisterThing with the config's template and parameters, then reconnects with the new
certificate and key (client id = thing name, as the nucleus does after provisioning) and
disconnects.

Network: the device always dials the config's iotDataEndpoint (TLS server name and
certificate check use that name) on the runtime's port (Java: the config's mqttPort, default
443 with ALPN x-amzn-mqtt-ca as the Java SDK's builder does, then 8883 for the nucleus's own
reconnect; lite: 8883, no ALPN), but the TCP connection goes to --connect-to instead: the
runtime's port only shows in the tunnel request and the report ("dialed"). awscrt's MQTT
client has no separate TLS server name (its native connect sets the server name to the host
name; TlsConnectionOptions.set_server_name is only reachable for HTTP/S3 connections), so the
device runs a tiny in-process HTTP CONNECT proxy and hands it to the SDK as
awscrt.http.HttpProxyOptions(connection_type=Tunneling) -- the same proxy code path a Java
device with `proxyUrl` uses. The proxy forwards every tunnel to --connect-to. --root-ca (the
local test CA) stands in for Amazon Root CA 1; the config's rootCaPath must still exist in the
bundle. After a failed connect the device makes one plain TLS handshake (no MQTT) with the same
certificate to say why (awscrt reports TLS failures only after s2n's 10-30 s blinding delay, so
a wrong CA or server name otherwise shows up as a connect timeout).

Files land in the device root where the runtime puts them (Java: certificatePath/privateKeyPath,
default rootPath/thingCert.crt and privKey.key; lite: /var/lib/greengrass/credentials/...);
--keep-roots DIR keeps the roots for inspection. Answers meant for another device (AWS answers
only the connection that asked) are caught where the device can tell: a certificate that does
not carry the device's key fails the create stage; extra answers are listed as warnings.

Output: one line per bundle, as it finishes. With --json each line is a JSON object:
    {"bundle": ..., "ok": true, "thing_name": ..., "certificate_id": ...,
     "device_configuration": {...}, "client_id": ..., "dialed": ..., "runtime_config": {...},
     "warnings": [...]}
    {"bundle": ..., "ok": false, "stage": "config|connect|create|register|reconnect",
     "error": "...", "status_code": ..., "error_code": ..., "error_message": ...,
     "warnings": [...]}
status_code/error_code/error_message are AWS's rejection fields verbatim (null when the
failure was not a rejection). Exit status: 0 all provisioned, 1 any failed, 2 bad usage.
Private keys are never printed.

FACTS (read from the runtimes' sources; paths are repository paths at the commit named)

Java plugin: aws-greengrass/aws-greengrass-fleet-provisioning-by-claim @ 56734a47902d62ca
(src/main/java/com/aws/greengrass/FleetProvisioningByClaimPlugin.java, MqttConnectionHelper.java,
IotIdentityHelper.java, FutureExceptionHandler.java):
  * Config: services.aws.greengrass.FleetProvisioningByClaim.configuration, handed to the plugin
    as Topics.toPOJO(): a TreeMap(String.CASE_INSENSITIVE_ORDER), so every key is looked up
    case-insensitively; keys starting with '_' are dropped (nucleus Topics.java toPOJO).
  * Required (validateParameters; missing or empty toString -> IllegalArgumentException
    "Required parameter X missing for aws.greengrass.FleetProvisioningByClaim"):
    provisioningTemplate, claimCertificatePath, claimCertificatePrivateKeyPath, rootCaPath,
    iotDataEndpoint, rootPath; csrPrivateKeyPath too when csrPath is non-empty. The nucleus
    (KernelLifecycle.executeProvisioningPlugin) retries only RetryableProvisioningException (3
    attempts); anything else is logged "Caught exception while running provisioning plugin.
    Moving on to run Greengrass without provisioning" and the device stays unprovisioned.
  * mqttPort optional: Integer.valueOf(value.toString()), set with the builder's withPort.
    Absent -> the builder's default: aws/aws-iot-device-sdk-java-v2 v1.31.0 (the nucleus's
    pinned SDK, pom.xml) AwsIotMqttConnectionBuilder.resetDefaultPort() = port 443 with ALPN
    x-amzn-mqtt-ca where ALPN is available (Linux), else 8883; the ALPN list stays set when
    mqttPort changes the port. mqttPort is not passed on to the nucleus afterwards.
  * deviceId optional = MQTT client id; absent -> UUID.randomUUID(). cleanSession true.
  * TLS: claim cert/key from the two paths, CA from rootCaPath, host = iotDataEndpoint.
    proxyUrl/proxyUsername/proxyPassword optional (an HTTP(S) proxy).
  * csrPath empty -> CreateKeysAndCertificate; else CreateCertificateFromCsr with the file's
    text, and csrPrivateKeyPath is copied to the device key path. IotIdentityClient: subscribe
    accepted (QoS1), subscribe rejected (QoS1), publish (QoS1, waits for PUBACK on the create
    call, not on RegisterThing), 30 s per wait (AWS_IOT_DEFAULT_TIMEOUT_SECONDS).
  * Device cert/key written to certificatePath/privateKeyPath, default rootPath/thingCert.crt
    and rootPath/privKey.key, mode owner rw. The pre-2025-03 names certPath/keyPath (renamed in
    commit 97d944f "chore: update param names") are no longer read: a config using them gets
    the defaults silently.
  * templateParameters: a map; each value sent as value.toString(); the parameters field is
    omitted when the map is empty or absent. A non-map value is a ClassCastException.
  * After RegisterThing: disconnect; returns system.{thingName, certificateFilePath,
    privateKeyPath, rootCaPath} and Nucleus {iotDataEndpoint, awsRegion, iotCredEndpoint,
    iotRoleAlias} (the last three only when non-empty), merged into the nucleus config. The
    nucleus then connects with client id = thing name on its own mqtt.port (default 8883).
Java nucleus: aws-greengrass/aws-greengrass-nucleus @ a28341c41509bb52
  * KernelCommandLine.parseArgs: --init-config/-init PATH (also --config/-i); KernelLifecycle
    initConfigAndTlog: the init config is read only if the file exists -- a missing file is
    skipped silently (then the plugin gets an empty map and fails as above). Without --root,
    system.rootpath from the init config, else ~/.greengrass.
  * Configuration.read: format by extension (Utils.extension = FilenameUtils.getExtension,
    case-sensitive): yaml, yml, json, tlog; any other -> IllegalArgumentException.
    YAML via Jackson YAMLMapper into a Map (typed scalars), merged into case-insensitive Topics.
  * Provisioning runs only while DeviceConfiguration.isDeviceConfiguredToTalkToCloud() is false.
  * Station default (claimfab src/core/station.rs): init config at
    /greengrass/v2/init-config/config.yaml, the default of --init-config here.
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
    result is ignored: a CN over 64 characters leaves the subject empty), then
    subscribes `$aws/certificates/create-from-csr/json/+` and publishes
    {"certificateSigningRequest"}, then subscribes
    `$aws/provisioning-templates/<templateName>/provision/json/+` and publishes
    {"certificateOwnershipToken", "parameters"} (parameters always present); QoS 1, 30 s each.
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

import argparse
import concurrent.futures
import dataclasses
import json
import os
import posixpath
import re
import shutil
import socket
import ssl
import stat
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

JAVA_PLUGIN = "aws.greengrass.FleetProvisioningByClaim"
JAVA_DEFAULT_INIT_CONFIG = "/greengrass/v2/init-config/config.yaml"
JAVA_DEFAULT_MQTT_PORT = 443  # AwsIotMqttConnectionBuilder's default where ALPN is available
JAVA_NUCLEUS_MQTT_PORT = 8883
JAVA_REQUIRED = (
    "provisioningTemplate",
    "claimCertificatePath",
    "claimCertificatePrivateKeyPath",
    "rootCaPath",
    "iotDataEndpoint",
    "rootPath",
)
JAVA_OPTIONAL = (
    "mqttPort",
    "deviceId",
    "templateParameters",
    "awsRegion",
    "iotCredentialEndpoint",
    "iotRoleAlias",
    "proxyUrl",
    "proxyUsername",
    "proxyPassword",
    "csrPath",
    "csrPrivateKeyPath",
    "certificatePath",
    "privateKeyPath",
)
# Names the Java plugin does not read (any case), with what it reads instead.
JAVA_IGNORED_NAMES = {
    "certpath": "certificatePath (certPath was renamed in the plugin's commit 97d944f, 2025-03)",
    "keypath": "privateKeyPath (keyPath was renamed in the plugin's commit 97d944f, 2025-03)",
    "claimcertpath": "claimCertificatePath (claimCertPath is nucleus lite's name)",
    "claimkeypath": "claimCertificatePrivateKeyPath (claimKeyPath is nucleus lite's name)",
    "templatename": "provisioningTemplate (templateName is nucleus lite's name)",
    "templateparams": "templateParameters (templateParams is nucleus lite's name)",
    "iotcredendpoint": "iotCredentialEndpoint (iotCredEndpoint is nucleus lite's name)",
    "csrcommonname": "nothing: the Java plugin never makes a CSR (csrCommonName is lite's)",
}

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


# ---------------------------------------------------------------------------------------------
# Device paths


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


# ---------------------------------------------------------------------------------------------
# Java nucleus + FleetProvisioningByClaim plugin config


class CIMap:
    """A map looked up case-insensitively, like the TreeMap(CASE_INSENSITIVE_ORDER) the Java
    nucleus hands the plugin (Topics.toPOJO). Keys starting with '_' are dropped, as there."""

    def __init__(self, mapping: dict):
        self._items: dict[str, tuple[str, Any]] = {}
        self.case_collisions: list[tuple[str, str]] = []
        for key, value in mapping.items():
            key = java_to_string(key)
            if key.startswith("_"):
                continue
            folded = key.casefold()
            if folded in self._items:
                self.case_collisions.append((self._items[folded][0], key))
            self._items[folded] = (key, value)

    def get(self, key: str, default: Any = None) -> Any:
        hit = self._items.get(key.casefold())
        return default if hit is None else hit[1]

    def __contains__(self, key: str) -> bool:
        return key.casefold() in self._items

    def keys(self) -> list[str]:
        return [k for k, _ in self._items.values()]

    def items(self) -> list[tuple[str, Any]]:
        return list(self._items.values())


def java_to_string(value: Any) -> str:
    """Java's toString() of what Jackson's YAML/JSON reader returns for a scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if ("." in text or "e" in text or "n" in text) else text + ".0"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{java_to_string(k)}={java_to_string(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(java_to_string(v) for v in value) + "]"
    return str(value)


def java_nonempty(params: CIMap, key: str) -> bool:
    """What the plugin's checkRequiredParameterPresent accepts."""
    value = params.get(key)
    return value is not None and java_to_string(value) != ""


def parse_java_init_config(device_path: str, data: bytes) -> dict:
    """Parse an init config as the Java nucleus's Configuration.read does (format by extension)."""
    ext = device_path.rsplit("/", 1)[-1]
    ext = ext.rsplit(".", 1)[1] if "." in ext else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"init config {device_path} is not UTF-8: {e}")
    if ext in ("yaml", "yml"):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"init config {device_path} is not valid YAML ({e}); the nucleus would fail to start")
    elif ext == "json":
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"init config {device_path} is not valid JSON ({e}); the nucleus would fail to start")
    else:
        raise ConfigError(
            f"init config {device_path}: the nucleus reads configs by extension (yaml, yml, json, tlog; "
            f"case-sensitive) and would refuse '.{ext}' with \"File format '{ext}' is not supported\""
        )
    if not isinstance(doc, dict):
        raise ConfigError(f"init config {device_path} is not a map at the top level; the nucleus cannot merge it")
    return doc


def ci_lookup(doc: Any, *path: str) -> Any:
    """Nested lookup through case-insensitive maps (the nucleus's Topics.findTopics)."""
    node = doc
    for key in path:
        if not isinstance(node, dict):
            return None
        node = CIMap(node).get(key)
    return node


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


def read_java_settings(doc: dict, config_path: str) -> Settings:
    """The plugin's view of an init config (FleetProvisioningByClaimPlugin.updateIdentityConfiguration)."""
    warnings: list[str] = []
    system = ci_lookup(doc, "system")
    if isinstance(system, dict):
        s = CIMap(system)
        nucleus_cfg = ci_lookup(doc, "services", "aws.greengrass.Nucleus", "configuration")
        n = CIMap(nucleus_cfg) if isinstance(nucleus_cfg, dict) else CIMap({})
        if all(java_nonempty(s, k) for k in ("thingName", "certificateFilePath", "privateKeyPath", "rootCaPath")) and all(
            java_nonempty(n, k) for k in ("iotDataEndpoint", "iotCredEndpoint", "awsRegion")
        ):
            raise ConfigError(
                f"{config_path} already has a complete device identity (system.thingName, "
                "certificateFilePath, ...): the nucleus would treat the device as provisioned "
                "and never run the provisioning plugin"
            )
    section = ci_lookup(doc, "services", JAVA_PLUGIN)
    configuration = ci_lookup(doc, "services", JAVA_PLUGIN, "configuration")
    if not isinstance(configuration, dict):
        where = "has no" if section is None else "has no configuration map in"
        raise ConfigError(
            f"{config_path} {where} services.{JAVA_PLUGIN}: the plugin would get an empty "
            f"parameter map and fail with \"Required parameter ... missing for {JAVA_PLUGIN}\"; "
            "the nucleus logs it and runs unprovisioned"
        )
    p = CIMap(configuration)
    for first, second in p.case_collisions:
        warnings.append(f"keys {first!r} and {second!r} differ only in case; the nucleus keeps one (the last)")

    ignored = []
    for key in p.keys():
        reads = JAVA_IGNORED_NAMES.get(key.casefold())
        if reads and not any(key.casefold() == k.casefold() for k in JAVA_REQUIRED + JAVA_OPTIONAL):
            ignored.append(f"{key!r} (the plugin reads {reads})")
    if ignored:
        raise ConfigError(
            f"{config_path}: services.{JAVA_PLUGIN}.configuration has keys the plugin ignores: "
            + "; ".join(ignored)
            + ". The runtime would not refuse; it would silently use its defaults instead"
        )
    for key in p.keys():
        if not any(key.casefold() == k.casefold() for k in JAVA_REQUIRED + JAVA_OPTIONAL):
            warnings.append(f"unknown key {key!r} in services.{JAVA_PLUGIN}.configuration (the plugin ignores it)")

    missing = [k for k in JAVA_REQUIRED if not java_nonempty(p, k)]
    csr_path_value = p.get("csrPath")
    use_csr = csr_path_value is not None and java_to_string(csr_path_value) != ""
    if use_csr and not java_nonempty(p, "csrPrivateKeyPath"):
        missing.append("csrPrivateKeyPath")
    if missing:
        raise ConfigError(
            f"{config_path}: "
            + ", ".join(f"Required parameter {k} missing for {JAVA_PLUGIN}" for k in missing)
            + " (the plugin throws IllegalArgumentException; the nucleus logs \"Moving on to run "
            "Greengrass without provisioning\" and the device stays unprovisioned)"
        )

    def string(key: str) -> str:
        value = p.get(key)
        if not isinstance(value, str):
            warnings.append(f"{key} is a YAML {type(value).__name__}; the plugin uses its toString() {java_to_string(value)!r}")
        return java_to_string(value)

    def optional(key: str) -> Optional[str]:
        value = p.get(key)
        if value is None or java_to_string(value) == "":
            return None
        return string(key)

    port = JAVA_DEFAULT_MQTT_PORT
    if p.get("mqttPort") is not None:
        text = java_to_string(p.get("mqttPort"))
        if not re.fullmatch(r"[-+]?\d+", text) or not (-(2**31) <= int(text) < 2**31):
            raise ConfigError(
                f"{config_path}: mqttPort {text!r} is not an integer: Integer.valueOf throws "
                "NumberFormatException and the device stays unprovisioned"
            )
        port = int(text)
        if not 0 < port < 65536:
            raise ConfigError(f"{config_path}: mqttPort {port} is not a TCP port")

    if p.get("proxyUrl") is not None:
        warnings.append("proxyUrl is set: a real device would dial through that proxy; this test device tunnels to --connect-to instead")

    root_path = normalize_device_path(string("rootPath"), "rootPath")
    params_value = p.get("templateParameters")
    params: Optional[dict] = None
    if params_value is not None:
        if not isinstance(params_value, dict):
            raise ConfigError(
                f"{config_path}: templateParameters is a {type(params_value).__name__}, not a map: "
                "the plugin's cast to Map throws ClassCastException and the device stays unprovisioned"
            )
        converted = {}
        for k, v in CIMap(params_value).items():
            if v is None:
                raise ConfigError(
                    f"{config_path}: templateParameters.{k} is null: the plugin's v.toString() "
                    "throws NullPointerException and the device stays unprovisioned"
                )
            if not isinstance(v, str):
                warnings.append(f"templateParameters.{k} is a YAML {type(v).__name__}; sent as {java_to_string(v)!r}")
            converted[k] = java_to_string(v)
        params = converted or None

    endpoint = check_endpoint(string("iotDataEndpoint"), "iotDataEndpoint")
    cert_path = optional("certificatePath")
    key_path = optional("privateKeyPath")
    return Settings(
        nucleus="java",
        config_files=[config_path],
        endpoint=endpoint,
        port=port,
        client_id=optional("deviceId"),
        claim_cert=normalize_device_path(string("claimCertificatePath"), "claimCertificatePath"),
        claim_key=normalize_device_path(string("claimCertificatePrivateKeyPath"), "claimCertificatePrivateKeyPath"),
        root_ca=normalize_device_path(string("rootCaPath"), "rootCaPath"),
        template=string("provisioningTemplate"),
        params=params,
        method="csr-file" if use_csr else "create-keys",
        out_cert=normalize_device_path(cert_path, "certificatePath") if cert_path else posixpath.join(root_path, "thingCert.crt"),
        out_key=normalize_device_path(key_path, "privateKeyPath") if key_path else posixpath.join(root_path, "privKey.key"),
        csr_path=normalize_device_path(string("csrPath"), "csrPath") if use_csr else None,
        csr_key=normalize_device_path(string("csrPrivateKeyPath"), "csrPrivateKeyPath") if use_csr else None,
        region=optional("awsRegion"),
        cred_endpoint=optional("iotCredentialEndpoint"),
        role_alias=optional("iotRoleAlias"),
        reconnect_port=JAVA_NUCLEUS_MQTT_PORT,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# Nucleus lite config (ggconfigd merge + fleet-provisioning reads)


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


def read_lite_settings(tree: dict, files: list[str]) -> Settings:
    """What nucleus lite's fleet-provisioning would use (config_operations.c), from the merged config."""
    warnings: list[str] = []
    section_path = "/".join(LITE_SECTION)

    def missing_message(key: str) -> str:
        near = _lite_near_miss(tree, LITE_SECTION + (key,))
        if near:
            return f"{section_path}/{key} is absent but {near} exists: lite compares key names bytewise"
        return f"{section_path}/{key} is absent"

    ok, section = _lite_get(tree, LITE_SECTION)
    if not ok or not isinstance(section, dict):
        near = _lite_near_miss(tree, LITE_SECTION)
        hint = f" ({near} exists, but lite compares key names bytewise)" if near else ""
        raise ConfigError(
            f"no {section_path} in the merged config{hint}: fleet-provisioning would find no "
            "claimCertPath, treat provisioning as not enabled and exit 0 without provisioning"
        )
    ignored = [f"{k!r} (lite reads {LITE_IGNORED_NAMES[k]})" for k in section if k in LITE_IGNORED_NAMES]
    ignored += [
        f"{k!r} (lite reads {name!r}: key names are compared bytewise)"
        for k in section
        for name in LITE_REQUIRED + LITE_OPTIONAL
        if k != name and k.casefold() == name.casefold() and name not in section
    ]
    if ignored:
        raise ConfigError(
            f"{section_path} has keys fleet-provisioning ignores: " + "; ".join(ignored)
            + ". Lite would not refuse them; it would act as if they were absent"
        )
    for k in section:
        if k not in LITE_REQUIRED + LITE_OPTIONAL:
            warnings.append(f"unknown key {k!r} in {section_path} (fleet-provisioning ignores it)")

    ok, system_cert = _lite_get(tree, ("system", "certificateFilePath"))
    if ok and isinstance(system_cert, str) and system_cert:
        raise ConfigError(
            f"system/certificateFilePath is set ({system_cert!r}): fleet-provisioning would log "
            "\"Skipping provisioning.\" and exit 0"
        )
    ok, claim_cert = _lite_get(tree, LITE_SECTION + ("claimCertPath",))
    if not ok or claim_cert == "":
        raise ConfigError(
            (missing_message("claimCertPath") if not ok else f"{section_path}/claimCertPath is empty")
            + ": fleet-provisioning would treat provisioning as not enabled and exit 0 without provisioning"
        )

    def string(key: str, required: bool) -> Optional[str]:
        ok, value = _lite_get(tree, LITE_SECTION + (key,))
        if not ok:
            if required:
                raise ConfigError(
                    missing_message(key) + ": fleet-provisioning fails with \"Failed to read "
                    f"{section_path}/{key}\""
                )
            return None
        if not isinstance(value, str):
            raise ConfigError(
                f"{section_path}/{key} is a {'map' if isinstance(value, dict) else 'list'}, not a "
                "string: fleet-provisioning's string read fails"
            )
        if required and value == "":
            raise ConfigError(
                f"{section_path}/{key} is empty: fleet-provisioning fails with \"Required configuration value is empty\""
            )
        limit = LITE_MAX_LEN.get(key, PATH_MAX - 1)
        if len(value.encode()) > limit:
            raise ConfigError(
                f"{section_path}/{key} is {len(value.encode())} bytes; fleet-provisioning reads it "
                f"into a {limit}-byte buffer and fails"
            )
        return value

    values = {k: string(k, True) for k in LITE_REQUIRED}
    if values["claimKeyPath"].startswith("handle:"):
        raise ConfigError("claimKeyPath is a TPM handle; this test device has no TPM")
    cn = string("csrCommonName", False)
    if cn is None:
        cn = LITE_DEFAULT_CSR_CN
    csr_path = string("csrPath", False)
    cert_path = string("certPath", False)
    key_path = string("keyPath", False)
    if key_path and key_path.startswith("handle:"):
        raise ConfigError("keyPath is a TPM handle; this test device has no TPM")
    cred = string("iotCredEndpoint", False)
    if cred is None or cred == "":
        raise ConfigError(
            f"{section_path}/iotCredEndpoint is {'absent' if cred is None else 'empty'}: lite reads it only "
            "after RegisterThing succeeded, so fleet-provisioning would fail with the thing registered "
            "and system/certificateFilePath unset (and register again on the next run)"
        )
    ok, params = _lite_get(tree, LITE_SECTION + ("templateParams",))
    if not ok:
        raise ConfigError(
            missing_message("templateParams")
            + f": fleet-provisioning fails with \"Failed to read {section_path}/templateParams\""
        )
    if not isinstance(params, dict):
        raise ConfigError(f"{section_path}/templateParams is not a map: fleet-provisioning fails with \"templateParams must be a map\"")
    if len(cn) > 64 or cn == "":
        warnings.append(
            f"csrCommonName is {len(cn)} characters: OpenSSL refuses a CN outside 1..64 and lite "
            "ignores that error, so its CSR has an empty subject"
        )
    for name, value in (("NucleusLite awsRegion", ("services", "aws.greengrass.NucleusLite", "configuration", "awsRegion")),
                        ("NucleusLite iotRoleAlias", ("services", "aws.greengrass.NucleusLite", "configuration", "iotRoleAlias")),
                        ("NucleusLite runWithDefault/posixUser", ("services", "aws.greengrass.NucleusLite", "configuration", "runWithDefault", "posixUser")),
                        ("NucleusLite greengrassDataPlanePort", ("services", "aws.greengrass.NucleusLite", "configuration", "greengrassDataPlanePort"))):
        ok, v = _lite_get(tree, value)
        if not ok or v in ("", None):
            warnings.append(
                f"{'/'.join(value)} is not set in these files: provisioning works, but lite needs it "
                "afterwards (fleet-provisioning never writes it); a real device gets posixUser and "
                "greengrassDataPlanePort from the Debian package's config.d/greengrass-lite.yaml"
            )
    ok, nucleus_ep = _lite_get(tree, ("services", "aws.greengrass.NucleusLite", "configuration", "iotDataEndpoint"))
    if ok and nucleus_ep not in ("", None) and nucleus_ep != values["iotDataEndpoint"]:
        warnings.append("NucleusLite iotDataEndpoint is set and differs: fleet-provisioning overwrites it (timestamp 3)")

    out_dir = LITE_OUTPUT_DIR
    return Settings(
        nucleus="lite",
        config_files=files,
        endpoint=check_endpoint(values["iotDataEndpoint"], "iotDataEndpoint"),
        port=LITE_PORT,
        client_id=None,
        claim_cert=normalize_device_path(values["claimCertPath"], "claimCertPath"),
        claim_key=normalize_device_path(values["claimKeyPath"], "claimKeyPath"),
        root_ca=normalize_device_path(values["rootCaPath"], "rootCaPath"),
        template=values["templateName"],
        params=dict(params),
        method="csr-device",
        out_cert=normalize_device_path(cert_path, "certPath") if cert_path else f"{out_dir}/certificate.pem",
        out_key=normalize_device_path(key_path, "keyPath") if key_path else f"{out_dir}/priv_key",
        csr_path=normalize_device_path(csr_path, "csrPath") if csr_path else f"{out_dir}/cert_req.pem",
        csr_common_name=cn,
        region=_lite_get(tree, ("services", "aws.greengrass.NucleusLite", "configuration", "awsRegion"))[1],
        cred_endpoint=cred,
        role_alias=_lite_get(tree, ("services", "aws.greengrass.NucleusLite", "configuration", "iotRoleAlias"))[1],
        out_dir=out_dir,
        reconnect_port=LITE_PORT,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# Bundles


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


# ---------------------------------------------------------------------------------------------
# The network: a local CONNECT tunnel, so TLS names the endpoint while TCP goes to --connect-to


class Tunnel:
    """An HTTP CONNECT proxy on 127.0.0.1 that forwards every tunnel to one address."""

    def __init__(self, target: tuple[str, int], timeout: float):
        self.target = target
        self.timeout = timeout
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.server_closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(self.timeout)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    client.close()
                    return
                head += chunk
                if len(head) > 16384:
                    raise OSError("CONNECT request too long")
        except OSError as e:
            self.errors.append(f"tunnel: reading the CONNECT request: {e}")
            client.close()
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(line)
        if not line.startswith("CONNECT "):
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.timeout)
        except OSError as e:
            self.errors.append(f"nothing accepts connections at {self.target[0]}:{self.target[1]} ({e})")
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        self._track(upstream)
        client.settimeout(None)
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        leftover = head.split(b"\r\n\r\n", 1)[1]
        if leftover:
            upstream.sendall(leftover)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        if from_server and not self._closed:
            self.server_closed.set()
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass


def tls_probe(target: tuple[str, int], server_name: str, ca: str, cert: Path, key: Path, timeout: float) -> str:
    """A plain TLS handshake like the device's, to explain a failed MQTT connect (awscrt's TLS
    errors arrive only after s2n's 10-30 s blinding delay)."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(str(cert), str(key))
        with socket.create_connection(target, timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.settimeout(min(timeout, 2.0))
                try:
                    if tls.recv(1) == b"":
                        return f"TLS handshake as {server_name} succeeded, then the server closed the connection (client certificate refused?)"
                except (socket.timeout, TimeoutError):
                    pass
                except (ssl.SSLError, OSError) as e:
                    return f"TLS handshake as {server_name} succeeded, then: {e} (client certificate refused?)"
                return f"a TLS handshake as {server_name} with the same certificate succeeds"
    except ssl.SSLCertVerificationError as e:
        return f"TLS check of the server as {server_name} against --root-ca fails: {e.verify_message}"
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake as {server_name} fails: {e}"


# ---------------------------------------------------------------------------------------------
# One device


class Session:
    """One MQTT connection of the device (claim or device certificate), with the SDK."""

    def __init__(self, settings: Settings, cert: Path, key: Path, client_id: str, port: int, args):
        import awscrt.io
        from awscrt import http, mqtt

        self.args = args
        self.settings = settings
        self.cert, self.key, self.client_id, self.port = cert, key, client_id, port
        self.tunnel = Tunnel(args.connect_to, args.timeout)
        self.interrupted = threading.Event()
        self.interrupt_error: Optional[str] = None

        def on_interrupted(connection, error, **kwargs):
            self.interrupt_error = str(error)
            self.interrupted.set()

        def on_closed(connection, callback_data=None, **kwargs):
            self.interrupted.set()

        # As the runtime's client sets up TLS: Java's AwsIotMqttConnectionBuilder (SDK 1.31.0)
        # always offers ALPN x-amzn-mqtt-ca where ALPN is available; lite's iotcored never does.
        tls = awscrt.io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
        tls.override_default_trust_store_from_path(None, args.root_ca)
        self.alpn = settings.nucleus == "java" and awscrt.io.is_alpn_available()
        if self.alpn:
            tls.alpn_list = ["x-amzn-mqtt-ca"]
        sockets = awscrt.io.SocketOptions()
        sockets.connect_timeout_ms = int(args.timeout * 1000)
        self.connection: mqtt.Connection = mqtt.Connection(
            client=mqtt.Client(None, awscrt.io.ClientTlsContext(tls)),
            host_name=settings.endpoint,  # also the TLS server name (SNI and certificate check)
            port=port,
            client_id=client_id,
            clean_session=True,
            keep_alive_secs=1200,
            protocol_operation_timeout_ms=int(args.timeout * 1000),
            reconnect_min_timeout_secs=60,
            reconnect_max_timeout_secs=120,
            on_connection_interrupted=on_interrupted,
            on_connection_closed=on_closed,
            socket_options=sockets,
            proxy_options=http.HttpProxyOptions(
                "127.0.0.1", self.tunnel.port, connection_type=http.HttpProxyConnectionType.Tunneling
            ),
            disable_metrics=settings.nucleus != "java",  # the Java SDK sends its metrics username
        )
        self.connected = False

    @property
    def dialed(self) -> str:
        alpn = " (ALPN x-amzn-mqtt-ca)" if self.alpn else ""
        return f"{self.settings.endpoint}:{self.port}{alpn} via {self.args.connect_to[0]}:{self.args.connect_to[1]}"

    def connect(self, stage: str) -> None:
        future = self.connection.connect()
        try:
            future.result(self.args.timeout)
        except concurrent.futures.TimeoutError:
            raise DeviceFailure(stage, self._connect_failure(f"no CONNACK within {self.args.timeout:g} s"))
        except Exception as e:  # awscrt raises AwsCrtError or Exception(ConnectReturnCode)
            raise DeviceFailure(stage, self._connect_failure(f"connect failed: {e}"))
        self.connected = True

    def _connect_failure(self, what: str) -> str:
        parts = [f"{what} (client id {self.client_id!r}, {self.dialed})"]
        parts += self.tunnel.errors
        if not self.tunnel.errors:
            if self.tunnel.server_closed.is_set():
                parts.append("the server closed the connection")
            parts.append(tls_probe(self.args.connect_to, self.settings.endpoint, self.args.root_ca, self.cert, self.key,
                                   self.args.timeout))
        return "; ".join(parts)

    def dropped(self) -> bool:
        return self.interrupted.is_set() or self.tunnel.server_closed.is_set()

    def _dropped_failure(self, stage: str, what: str, cause: Optional[Exception] = None) -> DeviceFailure:
        detail = self.interrupt_error or (str(cause) if cause else "")
        return DeviceFailure(
            stage,
            f"the server closed the connection while waiting for the {what}"
            + (f" ({detail})" if detail else "")
            + ": AWS IoT drops a client whose policy denies the action",
        )

    def wait(self, future: concurrent.futures.Future, stage: str, what: str) -> Any:
        """Wait for a future, failing at `stage` on timeout or when the server drops us."""
        deadline = time.monotonic() + self.args.timeout
        grace_until = None
        while True:
            try:
                return future.result(0.05)
            except concurrent.futures.TimeoutError:
                pass
            except DeviceFailure:
                raise
            except Exception as e:
                if self.dropped():
                    raise self._dropped_failure(stage, what, e)
                raise DeviceFailure(stage, f"{what} failed: {e}")
            now = time.monotonic()
            if self.dropped():
                # Give an answer that raced the disconnect a moment to land.
                grace_until = grace_until or now + 0.2
                if now > grace_until:
                    raise self._dropped_failure(stage, what)
            if now > deadline:
                raise DeviceFailure(stage, f"no {what} within {self.args.timeout:g} s")

    def subscribe(self, subscribe_call: Callable, stage: str, topic_hint: str) -> None:
        result = subscribe_call()
        future = result[0] if isinstance(result, tuple) else result
        granted = self.wait(future, stage, f"SUBACK for {topic_hint}")
        qos = granted.get("qos") if isinstance(granted, dict) else granted
        if qos is None or getattr(qos, "value", qos) == 0x80:
            raise DeviceFailure(stage, f"subscription to {topic_hint} refused by the server")

    def disconnect(self, stage: Optional[str]) -> None:
        """Disconnect; `stage` None is cleanup after a failure (short wait, errors ignored)."""
        try:
            if self.connected:
                self.connected = False
                future = self.connection.disconnect()
                try:
                    future.result(self.args.timeout if stage else min(self.args.timeout, 1.0))
                except Exception as e:
                    if stage:
                        raise DeviceFailure(stage, f"disconnect failed: {e or type(e).__name__}")
        finally:
            self.tunnel.close()


def rejection_fields(error) -> dict:
    return {
        "status_code": getattr(error, "status_code", None),
        "error_code": getattr(error, "error_code", None),
        "error_message": getattr(error, "error_message", None),
    }


def _describe_rejection(what: str, fields: dict) -> str:
    return f"{what} rejected: {fields['status_code']} {fields['error_code']}: {fields['error_message']}"


def make_csr(common_name: str):
    """Lite's pki_ops.c: EC P-256 key, CSR with subject CN only, SHA-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if 0 < len(common_name) <= 64 else []
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _create_answer() -> tuple[concurrent.futures.Future, Callable, Callable, list[int]]:
    """A future for the first answer to a certificate request, the on_accepted/on_rejected
    callbacks that settle it, and a one-element list counting the answers after the first."""
    answer: concurrent.futures.Future = concurrent.futures.Future()
    extra_answers = [0]

    def settle(value=None, exc=None):
        if answer.done():
            return
        if exc is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(value)

    def on_rejected(error):
        extra_answers[0] += answer.done()
        if error is None:
            settle(exc=DeviceFailure("create", "unreadable message on the rejected topic"))
            return
        fields = rejection_fields(error)
        settle(exc=DeviceFailure("create", _describe_rejection("certificate request", fields), fields))

    def on_accepted(response):
        extra_answers[0] += answer.done()
        if response is None or not response.certificate_ownership_token or not response.certificate_pem:
            settle(exc=DeviceFailure("create", "accepted response without certificatePem/certificateOwnershipToken"))
        else:
            settle(response)

    return answer, on_accepted, on_rejected, extra_answers


def create_certificate_from_csr(session: Session, csr: str, wildcard: bool):
    """Publishes CreateCertificateFromCsr and waits for its answer, subscribed either to
    `<topic>/+` (lite's one wildcard subscription) or to `<topic>/accepted` and
    `<topic>/rejected` (the Java plugin's exact ones). Returns (response, extra answers count
    list); a rejection raises DeviceFailure at stage create with AWS's fields."""
    from awscrt import mqtt
    from awsiot import iotidentity

    identity = iotidentity.IotIdentityClient(session.connection)
    answer, on_accepted, on_rejected, extra_answers = _create_answer()
    if wildcard:
        subscribe_wildcard(session, "$aws/certificates/create-from-csr/json", "create",
                           iotidentity.CreateCertificateFromCsrResponse.from_payload, on_accepted, on_rejected)
    else:
        req = iotidentity.CreateCertificateFromCsrSubscriptionRequest()
        session.subscribe(lambda: identity.subscribe_to_create_certificate_from_csr_accepted(
            req, mqtt.QoS.AT_LEAST_ONCE, on_accepted), "create", "$aws/certificates/create-from-csr/json/accepted")
        session.subscribe(lambda: identity.subscribe_to_create_certificate_from_csr_rejected(
            req, mqtt.QoS.AT_LEAST_ONCE, on_rejected), "create", "$aws/certificates/create-from-csr/json/rejected")
    published = identity.publish_create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr), mqtt.QoS.AT_LEAST_ONCE)
    session.wait(published, "create", "PUBACK for CreateCertificateFromCsr")
    return session.wait(answer, "create", "CreateCertificateFromCsr response"), extra_answers


def obtain_certificate(session: Session, settings: Settings, root: Path) -> tuple[str, str, str]:
    """The runtime's create step. Returns (certificate id, ownership token, certificate PEM);
    writes the device certificate and key where the runtime does."""
    from awscrt import mqtt
    from awsiot import iotidentity

    if settings.method == "create-keys":
        identity = iotidentity.IotIdentityClient(session.connection)
        answer, on_accepted, on_rejected, extra_answers = _create_answer()
        req = iotidentity.CreateKeysAndCertificateSubscriptionRequest()
        session.subscribe(lambda: identity.subscribe_to_create_keys_and_certificate_accepted(
            req, mqtt.QoS.AT_LEAST_ONCE, on_accepted), "create", "$aws/certificates/create/json/accepted")
        session.subscribe(lambda: identity.subscribe_to_create_keys_and_certificate_rejected(
            req, mqtt.QoS.AT_LEAST_ONCE, on_rejected), "create", "$aws/certificates/create/json/rejected")
        published = identity.publish_create_keys_and_certificate(
            iotidentity.CreateKeysAndCertificateRequest(), mqtt.QoS.AT_LEAST_ONCE)
        session.wait(published, "create", "PUBACK for CreateKeysAndCertificate")
        response = session.wait(answer, "create", "CreateKeysAndCertificate response")
        if not response.private_key:
            raise DeviceFailure("create", "CreateKeysAndCertificate accepted response has no privateKey")
        check_key_matches("create", response.certificate_pem, response.private_key.encode(), "its privateKey")
        note_extra_answers(settings, extra_answers[0], "CreateKeysAndCertificate")
        write_private(map_device_path(root, settings.out_cert), response.certificate_pem.encode())
        write_private(map_device_path(root, settings.out_key), response.private_key.encode())
        return response.certificate_id, response.certificate_ownership_token, response.certificate_pem

    if settings.method == "csr-file":
        csr = map_device_path(root, settings.csr_path).read_text()
        response, extra_answers = create_certificate_from_csr(session, csr, wildcard=False)
        check_key_matches("create", response.certificate_pem, map_device_path(root, settings.csr_key).read_bytes(),
                          "the key of the device's CSR")
        note_extra_answers(settings, extra_answers[0], "CreateCertificateFromCsr")
        write_private(map_device_path(root, settings.out_cert), response.certificate_pem.encode())
        write_private(map_device_path(root, settings.out_key), map_device_path(root, settings.csr_key).read_bytes())
        return response.certificate_id, response.certificate_ownership_token, response.certificate_pem

    # Lite: key and CSR made on the device, one wildcard subscription per call.
    key_pem, csr = make_csr(settings.csr_common_name)
    write_private(map_device_path(root, settings.out_key), key_pem)
    write_private(map_device_path(root, settings.csr_path), csr.encode())
    response, extra_answers = create_certificate_from_csr(session, csr, wildcard=True)
    check_key_matches("create", response.certificate_pem, key_pem, "the key of the device's CSR")
    note_extra_answers(settings, extra_answers[0], "CreateCertificateFromCsr")
    return response.certificate_id, response.certificate_ownership_token, response.certificate_pem


def check_key_matches(stage: str, certificate_pem: str, key_pem: bytes, what: str) -> None:
    """The certificate must carry the device's public key; otherwise the data plane answered
    with another device's certificate (AWS answers only the connection that asked)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        key = serialization.load_pem_private_key(key_pem, None)
    except ValueError as e:
        raise DeviceFailure(stage, f"the accepted certificate or key does not parse: {e}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise DeviceFailure(
            stage,
            f"the accepted certificatePem does not carry {what}: the answer was meant for another "
            "device (AWS delivers fleet-provisioning answers only to the connection that asked)",
        )


def note_extra_answers(settings: Settings, extra: int, call: str) -> None:
    if extra:
        settings.warnings.append(
            f"{extra} more {call} answer(s) arrived after the first: AWS delivers an answer only to "
            "the connection that asked"
        )


def subscribe_wildcard(session: Session, topic: str, stage: str, parse_accepted, on_accepted, on_rejected) -> None:
    """Lite's aws_iot_call: one QoS 1 subscription to `<topic>/+`, the answer told apart by suffix."""
    from awscrt import mqtt
    from awsiot import iotidentity

    def on_message(topic, payload, **kwargs):
        try:
            body = json.loads(payload.decode())
        except ValueError:
            body = None
        if topic.endswith("/accepted"):
            on_accepted(parse_accepted(body) if isinstance(body, dict) else None)
        elif topic.endswith("/rejected"):
            on_rejected(iotidentity.ErrorResponse.from_payload(body) if isinstance(body, dict) else None)

    session.subscribe(lambda: session.connection.subscribe(f"{topic}/+", mqtt.QoS.AT_LEAST_ONCE, on_message),
                      stage, f"{topic}/+")


def register_thing(session: Session, settings: Settings, token: str, exact_subscriptions: bool = False):
    """The runtime's RegisterThing with settings.template and settings.params, subscribed as
    the runtime does (lite: `<topic>/+`; Java: `<topic>/accepted` and `<topic>/rejected`, also
    for lite with exact_subscriptions). Returns the accepted response."""
    from awscrt import mqtt
    from awsiot import iotidentity

    identity = iotidentity.IotIdentityClient(session.connection)
    answer: concurrent.futures.Future = concurrent.futures.Future()
    extra_answers = [0]

    def on_accepted(response):
        if answer.done():
            extra_answers[0] += 1
            return
        if response is None or not response.thing_name:
            answer.set_exception(DeviceFailure("register", "RegisterThing accepted response without thingName"))
        else:
            answer.set_result(response)

    def on_rejected(error):
        if answer.done():
            extra_answers[0] += 1
            return
        if error is None:
            answer.set_exception(DeviceFailure("register", "unreadable message on the rejected topic"))
            return
        fields = rejection_fields(error)
        answer.set_exception(DeviceFailure("register", _describe_rejection("RegisterThing", fields), fields))

    topic = f"$aws/provisioning-templates/{settings.template}/provision/json"
    if settings.nucleus == "lite" and not exact_subscriptions:
        subscribe_wildcard(session, topic, "register", iotidentity.RegisterThingResponse.from_payload, on_accepted, on_rejected)
    else:
        req = iotidentity.RegisterThingSubscriptionRequest(template_name=settings.template)
        session.subscribe(lambda: identity.subscribe_to_register_thing_accepted(req, mqtt.QoS.AT_LEAST_ONCE, on_accepted),
                          "register", f"{topic}/accepted")
        session.subscribe(lambda: identity.subscribe_to_register_thing_rejected(req, mqtt.QoS.AT_LEAST_ONCE, on_rejected),
                          "register", f"{topic}/rejected")
    # Lite always sends the parameters field; Java omits it when there are none.
    params = (settings.params or {}) if settings.nucleus == "lite" else (settings.params or None)
    identity.publish_register_thing(
        iotidentity.RegisterThingRequest(template_name=settings.template, certificate_ownership_token=token,
                                         parameters=params),
        mqtt.QoS.AT_LEAST_ONCE,
    )  # Neither runtime waits for this PUBACK.
    response = session.wait(answer, "register", "RegisterThing response")
    time.sleep(0.05)  # let a stray second answer show up in the warnings
    note_extra_answers(settings, extra_answers[0], "RegisterThing")
    return response


def runtime_config(settings: Settings, thing_name: str) -> dict:
    """What the runtime writes into its config once provisioned (device paths)."""
    if settings.nucleus == "java":
        nucleus = {"iotDataEndpoint": settings.endpoint}
        for key, value in (("awsRegion", settings.region), ("iotCredEndpoint", settings.cred_endpoint),
                           ("iotRoleAlias", settings.role_alias)):
            if value:
                nucleus[key] = value
        return {
            "system": {"thingName": thing_name, "certificateFilePath": settings.out_cert,
                       "privateKeyPath": settings.out_key, "rootCaPath": settings.root_ca},
            "services": {"aws.greengrass.Nucleus": {"configuration": nucleus}},
        }
    return {
        "system": {"rootCaPath": f"{settings.out_dir}/AmazonRootCA.pem", "privateKeyPath": settings.out_key,
                   "thingName": thing_name, "certificateFilePath": settings.out_cert},
        "services": {"aws.greengrass.NucleusLite": {"configuration": {
            "iotDataEndpoint": settings.endpoint, "iotCredEndpoint": settings.cred_endpoint}}},
    }


def provision(bundle: Path, args, workdir: Path, index: int) -> dict:
    report: dict = {"bundle": str(bundle), "nucleus": args.nucleus}
    root = workdir / f"{index:04d}-{bundle.stem}"
    root.mkdir(mode=0o700)
    settings: Optional[Settings] = None
    stage = "config"
    session: Optional[Session] = None
    try:
        modes = extract_bundle(bundle, root)
        settings = load_settings(args.nucleus, root, args.init_config)
        key_mode = modes.get(settings.claim_key)
        if key_mode is not None and key_mode & 0o077:
            settings.warnings.append(f"claim key {settings.claim_key} has mode {key_mode & 0o777:o}, not 600")
        client_id = settings.client_id or str(uuid.uuid4())
        report["client_id"] = client_id

        stage = "connect"
        session = Session(settings, map_device_path(root, settings.claim_cert), map_device_path(root, settings.claim_key),
                          client_id, settings.port, args)
        report["dialed"] = session.dialed
        session.connect("connect")

        stage = "create"
        certificate_id, token, certificate_pem = obtain_certificate(session, settings, root)
        report["certificate_id"] = certificate_id

        stage = "register"
        registered = register_thing(session, settings, token)
        session.disconnect("register")
        session = None
        if settings.nucleus == "lite":  # lite writes the certificate only once registered
            write_private(map_device_path(root, settings.out_cert), certificate_pem.encode())
            shutil.copyfile(map_device_path(root, settings.root_ca),
                            map_device_path(root, f"{settings.out_dir}/AmazonRootCA.pem"))
            if settings.csr_path != f"{settings.out_dir}/cert_req.pem":
                map_device_path(root, settings.csr_path).unlink(missing_ok=True)  # lite removes a custom CSR

        stage = "reconnect"
        session = Session(settings, map_device_path(root, settings.out_cert), map_device_path(root, settings.out_key),
                          registered.thing_name, settings.reconnect_port, args)
        session.connect("reconnect")
        session.disconnect("reconnect")
        session = None
        report.update({
            "ok": True,
            "thing_name": registered.thing_name,
            "certificate_id": certificate_id,
            "device_configuration": registered.device_configuration or {},
            "runtime_config": runtime_config(settings, registered.thing_name),
        })
    except DeviceFailure as failure:
        report.update({"ok": False, "stage": failure.stage, "error": failure.error,
                       "status_code": failure.rejection.get("status_code"),
                       "error_code": failure.rejection.get("error_code"),
                       "error_message": failure.rejection.get("error_message")})
    except Exception as e:  # a bug or an unexpected SDK error: still one line for this bundle
        report.update({"ok": False, "stage": stage, "error": f"{type(e).__name__}: {e}",
                       "status_code": None, "error_code": None, "error_message": None})
    finally:
        if session is not None:
            try:
                session.disconnect(None)
            except Exception:
                pass
    report["warnings"] = settings.warnings if settings else []
    if args.keep_roots:
        report["device_root"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return report


# ---------------------------------------------------------------------------------------------
# CLI


class UsageError(Exception):
    pass


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
    match = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", args.connect_to)
    if not match or not 0 < int(match.group(2)) < 65536:
        raise UsageError(f"--connect-to {args.connect_to!r} is not HOST:PORT")
    args.connect_to = (match.group(1), int(match.group(2)))
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


def main(argv: Optional[list[str]] = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f"device.py: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse: bad usage (2) or --help (0)
        return int(e.code or 0)

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


if __name__ == "__main__":
    sys.exit(main())
