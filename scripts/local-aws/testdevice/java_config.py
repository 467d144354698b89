"""The Java nucleus and its FleetProvisioningByClaim plugin, as the test device reads a bundle
for them: the init config parsed as the nucleus parses it, the plugin's parameters looked up
as the plugin looks them up (read_java_settings).

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
  * Station default (claimfab src/core/station_config/mod.rs): init config at
    /greengrass/v2/init-config/config.yaml, the default of --init-config here.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any, Optional

import yaml

from testdevice.paths import normalize_device_path
from testdevice.settings import ConfigError, Settings, check_endpoint

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


def check_not_provisioned(doc: dict, config_path: str) -> None:
    """A config with a complete device identity never runs the plugin."""
    system = ci_lookup(doc, "system")
    if not isinstance(system, dict):
        return
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


def plugin_configuration(doc: dict, config_path: str) -> CIMap:
    """The plugin's parameter map (services.<plugin>.configuration)."""
    section = ci_lookup(doc, "services", JAVA_PLUGIN)
    configuration = ci_lookup(doc, "services", JAVA_PLUGIN, "configuration")
    if not isinstance(configuration, dict):
        where = "has no" if section is None else "has no configuration map in"
        raise ConfigError(
            f"{config_path} {where} services.{JAVA_PLUGIN}: the plugin would get an empty "
            f"parameter map and fail with \"Required parameter ... missing for {JAVA_PLUGIN}\"; "
            "the nucleus logs it and runs unprovisioned"
        )
    return CIMap(configuration)


def check_key_names(p: CIMap, config_path: str, warnings: list[str]) -> None:
    """Keys the plugin ignores but a reader would expect it to read are an error (the runtime
    would silently use its defaults); other unknown keys are warned about."""
    known = JAVA_REQUIRED + JAVA_OPTIONAL
    ignored = []
    for key in p.keys():
        reads = JAVA_IGNORED_NAMES.get(key.casefold())
        if reads and not any(key.casefold() == k.casefold() for k in known):
            ignored.append(f"{key!r} (the plugin reads {reads})")
    if ignored:
        raise ConfigError(
            f"{config_path}: services.{JAVA_PLUGIN}.configuration has keys the plugin ignores: "
            + "; ".join(ignored)
            + ". The runtime would not refuse; it would silently use its defaults instead"
        )
    for key in p.keys():
        if not any(key.casefold() == k.casefold() for k in known):
            warnings.append(f"unknown key {key!r} in services.{JAVA_PLUGIN}.configuration (the plugin ignores it)")


def check_required(p: CIMap, config_path: str) -> bool:
    """The plugin's validateParameters; returns whether it makes a CSR (csrPath non-empty)."""
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
    return use_csr


def mqtt_port(p: CIMap, config_path: str) -> int:
    """mqttPort as Integer.valueOf reads it; absent: the SDK builder's default."""
    if p.get("mqttPort") is None:
        return JAVA_DEFAULT_MQTT_PORT
    text = java_to_string(p.get("mqttPort"))
    if not re.fullmatch(r"[-+]?\d+", text) or not (-(2**31) <= int(text) < 2**31):
        raise ConfigError(
            f"{config_path}: mqttPort {text!r} is not an integer: Integer.valueOf throws "
            "NumberFormatException and the device stays unprovisioned"
        )
    port = int(text)
    if not 0 < port < 65536:
        raise ConfigError(f"{config_path}: mqttPort {port} is not a TCP port")
    return port


def template_parameters(p: CIMap, config_path: str, warnings: list[str]) -> Optional[dict]:
    """templateParameters, each value sent as its toString(); None when absent or empty."""
    params_value = p.get("templateParameters")
    if params_value is None:
        return None
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
    return converted or None


class JavaValues:
    """The plugin's parameters read as it reads them: toString() of whatever YAML gave, with a
    warning for every value that was not a string."""

    def __init__(self, p: CIMap, warnings: list[str]):
        self.p, self.warnings = p, warnings

    def string(self, key: str) -> str:
        value = self.p.get(key)
        if not isinstance(value, str):
            self.warnings.append(f"{key} is a YAML {type(value).__name__}; the plugin uses its toString() {java_to_string(value)!r}")
        return java_to_string(value)

    def optional(self, key: str) -> Optional[str]:
        value = self.p.get(key)
        if value is None or java_to_string(value) == "":
            return None
        return self.string(key)

    def path(self, key: str) -> str:
        return normalize_device_path(self.string(key), key)


def read_java_settings(doc: dict, config_path: str) -> Settings:
    """The plugin's view of an init config (FleetProvisioningByClaimPlugin.updateIdentityConfiguration)."""
    check_not_provisioned(doc, config_path)
    p = plugin_configuration(doc, config_path)
    warnings = [f"keys {first!r} and {second!r} differ only in case; the nucleus keeps one (the last)"
                for first, second in p.case_collisions]
    check_key_names(p, config_path, warnings)
    use_csr = check_required(p, config_path)
    port = mqtt_port(p, config_path)
    if p.get("proxyUrl") is not None:
        warnings.append("proxyUrl is set: a real device would dial through that proxy; this test device tunnels to --connect-to instead")
    v = JavaValues(p, warnings)
    root_path = v.path("rootPath")
    params = template_parameters(p, config_path, warnings)
    endpoint = check_endpoint(v.string("iotDataEndpoint"), "iotDataEndpoint")
    cert_path = v.optional("certificatePath")
    key_path = v.optional("privateKeyPath")
    return Settings(
        nucleus="java",
        config_files=[config_path],
        endpoint=endpoint,
        port=port,
        client_id=v.optional("deviceId"),
        claim_cert=v.path("claimCertificatePath"),
        claim_key=v.path("claimCertificatePrivateKeyPath"),
        root_ca=v.path("rootCaPath"),
        template=v.string("provisioningTemplate"),
        params=params,
        method="csr-file" if use_csr else "create-keys",
        out_cert=normalize_device_path(cert_path, "certificatePath") if cert_path else posixpath.join(root_path, "thingCert.crt"),
        out_key=normalize_device_path(key_path, "privateKeyPath") if key_path else posixpath.join(root_path, "privKey.key"),
        csr_path=v.path("csrPath") if use_csr else None,
        csr_key=v.path("csrPrivateKeyPath") if use_csr else None,
        region=v.optional("awsRegion"),
        cred_endpoint=v.optional("iotCredentialEndpoint"),
        role_alias=v.optional("iotRoleAlias"),
        reconnect_port=JAVA_NUCLEUS_MQTT_PORT,
        warnings=warnings,
    )
