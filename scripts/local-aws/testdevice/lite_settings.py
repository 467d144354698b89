"""What nucleus lite's fleet-provisioning would use (config_operations.c), read from the
merged config tree (lite_config.py has the FACTS): read_lite_settings."""

from __future__ import annotations

from typing import Any, Optional

from testdevice.lite_config import (
    LITE_DEFAULT_CSR_CN,
    LITE_IGNORED_NAMES,
    LITE_MAX_LEN,
    LITE_OPTIONAL,
    LITE_OUTPUT_DIR,
    LITE_PORT,
    LITE_REQUIRED,
    LITE_SECTION,
    PATH_MAX,
    _lite_get,
    _lite_near_miss,
)
from testdevice.paths import normalize_device_path
from testdevice.settings import ConfigError, Settings, check_endpoint

SECTION_PATH = "/".join(LITE_SECTION)
NUCLEUS_LITE = ("services", "aws.greengrass.NucleusLite", "configuration")


class LiteSection:
    """fleet-provisioning's reads of its configuration section in the merged tree."""

    def __init__(self, tree: dict):
        self.tree = tree

    def get(self, key: str) -> tuple[bool, Any]:
        return _lite_get(self.tree, LITE_SECTION + (key,))

    def missing_message(self, key: str) -> str:
        near = _lite_near_miss(self.tree, LITE_SECTION + (key,))
        if near:
            return f"{SECTION_PATH}/{key} is absent but {near} exists: lite compares key names bytewise"
        return f"{SECTION_PATH}/{key} is absent"

    def string(self, key: str, required: bool) -> Optional[str]:
        ok, value = self.get(key)
        if not ok:
            if required:
                raise ConfigError(
                    self.missing_message(key) + ": fleet-provisioning fails with \"Failed to read "
                    f"{SECTION_PATH}/{key}\""
                )
            return None
        if not isinstance(value, str):
            raise ConfigError(
                f"{SECTION_PATH}/{key} is a {'map' if isinstance(value, dict) else 'list'}, not a "
                "string: fleet-provisioning's string read fails"
            )
        if required and value == "":
            raise ConfigError(
                f"{SECTION_PATH}/{key} is empty: fleet-provisioning fails with \"Required configuration value is empty\""
            )
        limit = LITE_MAX_LEN.get(key, PATH_MAX - 1)
        if len(value.encode()) > limit:
            raise ConfigError(
                f"{SECTION_PATH}/{key} is {len(value.encode())} bytes; fleet-provisioning reads it "
                f"into a {limit}-byte buffer and fails"
            )
        return value


def lite_section(tree: dict) -> dict:
    """The fleet-provisioning section; without it provisioning is not enabled."""
    ok, section = _lite_get(tree, LITE_SECTION)
    if not ok or not isinstance(section, dict):
        near = _lite_near_miss(tree, LITE_SECTION)
        hint = f" ({near} exists, but lite compares key names bytewise)" if near else ""
        raise ConfigError(
            f"no {SECTION_PATH} in the merged config{hint}: fleet-provisioning would find no "
            "claimCertPath, treat provisioning as not enabled and exit 0 without provisioning"
        )
    return section


def check_lite_key_names(section: dict, warnings: list[str]) -> None:
    """Java's names or other letter case for lite's keys are an error (lite would act as if
    they were absent); other unknown keys are warned about."""
    ignored = [f"{k!r} (lite reads {LITE_IGNORED_NAMES[k]})" for k in section if k in LITE_IGNORED_NAMES]
    ignored += [
        f"{k!r} (lite reads {name!r}: key names are compared bytewise)"
        for k in section
        for name in LITE_REQUIRED + LITE_OPTIONAL
        if k != name and k.casefold() == name.casefold() and name not in section
    ]
    if ignored:
        raise ConfigError(
            f"{SECTION_PATH} has keys fleet-provisioning ignores: " + "; ".join(ignored)
            + ". Lite would not refuse them; it would act as if they were absent"
        )
    for k in section:
        if k not in LITE_REQUIRED + LITE_OPTIONAL:
            warnings.append(f"unknown key {k!r} in {SECTION_PATH} (fleet-provisioning ignores it)")


def check_provisioning_runs(tree: dict, sec: LiteSection) -> None:
    """fleet-provisioning exits 0 without provisioning for a provisioned device
    (system/certificateFilePath set) or when not enabled (claimCertPath absent or empty)."""
    ok, system_cert = _lite_get(tree, ("system", "certificateFilePath"))
    if ok and isinstance(system_cert, str) and system_cert:
        raise ConfigError(
            f"system/certificateFilePath is set ({system_cert!r}): fleet-provisioning would log "
            "\"Skipping provisioning.\" and exit 0"
        )
    ok, claim_cert = sec.get("claimCertPath")
    if not ok or claim_cert == "":
        raise ConfigError(
            (sec.missing_message("claimCertPath") if not ok else f"{SECTION_PATH}/claimCertPath is empty")
            + ": fleet-provisioning would treat provisioning as not enabled and exit 0 without provisioning"
        )


def lite_values(sec: LiteSection) -> dict:
    """The section's values fleet-provisioning reads, checked as it checks them: the required
    strings, csrCommonName (defaulted), csrPath, certPath, keyPath, iotCredEndpoint and
    templateParams."""
    values = {k: sec.string(k, True) for k in LITE_REQUIRED}
    if values["claimKeyPath"].startswith("handle:"):
        raise ConfigError("claimKeyPath is a TPM handle; this test device has no TPM")
    cn = sec.string("csrCommonName", False)
    values["csrCommonName"] = LITE_DEFAULT_CSR_CN if cn is None else cn
    for key in ("csrPath", "certPath", "keyPath"):
        values[key] = sec.string(key, False)
    if values["keyPath"] and values["keyPath"].startswith("handle:"):
        raise ConfigError("keyPath is a TPM handle; this test device has no TPM")
    cred = sec.string("iotCredEndpoint", False)
    if cred is None or cred == "":
        raise ConfigError(
            f"{SECTION_PATH}/iotCredEndpoint is {'absent' if cred is None else 'empty'}: lite reads it only "
            "after RegisterThing succeeded, so fleet-provisioning would fail with the thing registered "
            "and system/certificateFilePath unset (and register again on the next run)"
        )
    values["iotCredEndpoint"] = cred
    ok, params = sec.get("templateParams")
    if not ok:
        raise ConfigError(
            sec.missing_message("templateParams")
            + f": fleet-provisioning fails with \"Failed to read {SECTION_PATH}/templateParams\""
        )
    if not isinstance(params, dict):
        raise ConfigError(f"{SECTION_PATH}/templateParams is not a map: fleet-provisioning fails with \"templateParams must be a map\"")
    values["templateParams"] = params
    return values


def warn_about_later_needs(tree: dict, cn: str, endpoint: str, warnings: list[str]) -> None:
    """What provisioning survives but lite stumbles on afterwards: an empty CSR subject, the
    NucleusLite settings fleet-provisioning never writes, an iotDataEndpoint it overwrites."""
    if len(cn) > 64 or cn == "":
        warnings.append(
            f"csrCommonName is {len(cn)} characters: OpenSSL refuses a CN outside 1..64 and lite "
            "ignores that error, so its CSR has an empty subject"
        )
    for value in (NUCLEUS_LITE + ("awsRegion",), NUCLEUS_LITE + ("iotRoleAlias",),
                  NUCLEUS_LITE + ("runWithDefault", "posixUser"), NUCLEUS_LITE + ("greengrassDataPlanePort",)):
        ok, v = _lite_get(tree, value)
        if not ok or v in ("", None):
            warnings.append(
                f"{'/'.join(value)} is not set in these files: provisioning works, but lite needs it "
                "afterwards (fleet-provisioning never writes it); a real device gets posixUser and "
                "greengrassDataPlanePort from the Debian package's config.d/greengrass-lite.yaml"
            )
    ok, nucleus_ep = _lite_get(tree, NUCLEUS_LITE + ("iotDataEndpoint",))
    if ok and nucleus_ep not in ("", None) and nucleus_ep != endpoint:
        warnings.append("NucleusLite iotDataEndpoint is set and differs: fleet-provisioning overwrites it (timestamp 3)")


def read_lite_settings(tree: dict, files: list[str]) -> Settings:
    """What nucleus lite's fleet-provisioning would use (config_operations.c), from the merged config."""
    warnings: list[str] = []
    check_lite_key_names(lite_section(tree), warnings)
    sec = LiteSection(tree)
    check_provisioning_runs(tree, sec)
    values = lite_values(sec)
    cn, csr_path, cert_path, key_path = (values[k] for k in ("csrCommonName", "csrPath", "certPath", "keyPath"))
    warn_about_later_needs(tree, cn, values["iotDataEndpoint"], warnings)
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
        params=dict(values["templateParams"]),
        method="csr-device",
        out_cert=normalize_device_path(cert_path, "certPath") if cert_path else f"{out_dir}/certificate.pem",
        out_key=normalize_device_path(key_path, "keyPath") if key_path else f"{out_dir}/priv_key",
        csr_path=normalize_device_path(csr_path, "csrPath") if csr_path else f"{out_dir}/cert_req.pem",
        csr_common_name=cn,
        region=_lite_get(tree, NUCLEUS_LITE + ("awsRegion",))[1],
        cred_endpoint=values["iotCredEndpoint"],
        role_alias=_lite_get(tree, NUCLEUS_LITE + ("iotRoleAlias",))[1],
        out_dir=out_dir,
        reconnect_port=LITE_PORT,
        warnings=warnings,
    )
