"""Configs and bundles shaped like claimfab's, for the test device's unit tests."""

import zipfile

import yaml

from testdevice.lite_config import lite_load
from testdevice.lite_settings import read_lite_settings

EP = "abc-ats.iot.us-east-1.amazonaws.com"
PLUGIN = "aws.greengrass.FleetProvisioningByClaim"


def overridden(conf: dict, overrides: dict) -> dict:
    """conf with each override set, or removed where it is None."""
    for key, value in overrides.items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    return conf


def java_doc(**overrides):
    """A Java init config shaped like claimfab's, with plugin keys overridden (None removes)."""
    conf = {
        "rootPath": "/greengrass/v2",
        "awsRegion": "us-east-1",
        "iotDataEndpoint": EP,
        "iotCredentialEndpoint": "abc.credentials.iot.us-east-1.amazonaws.com",
        "iotRoleAlias": "Alias",
        "provisioningTemplate": "Template",
        "claimCertificatePath": "/greengrass/v2/claim-certs/claim.pem.crt",
        "claimCertificatePrivateKeyPath": "/greengrass/v2/claim-certs/claim.private.pem.key",
        "rootCaPath": "/greengrass/v2/AmazonRootCA1.pem",
        "templateParameters": {"ThingName": "gg-1"},
    }
    return {"services": {PLUGIN: {"configuration": overridden(conf, overrides)}}}


def lite_conf(**overrides):
    conf = {
        "iotDataEndpoint": EP,
        "iotCredEndpoint": "abc.credentials.iot.us-east-1.amazonaws.com",
        "rootCaPath": "/var/lib/greengrass/AmazonRootCA1.pem",
        "claimKeyPath": "/var/lib/greengrass/claim-certs/claim.private.pem.key",
        "claimCertPath": "/var/lib/greengrass/claim-certs/claim.pem.crt",
        "csrCommonName": "gg-1",
        "templateName": "Template",
        "templateParams": {"ThingName": "gg-1"},
    }
    return overridden(conf, overrides)


def lite_yaml(conf=None, nucleus=True):
    doc = {"system": {"rootPath": "/var/lib/greengrass"}, "services": {}}
    if nucleus:
        doc["services"]["aws.greengrass.NucleusLite"] = {"componentType": "NUCLEUS", "configuration": {
            "awsRegion": "us-east-1", "iotRoleAlias": "Alias",
            "runWithDefault": {"posixUser": "ggcore:ggcore"}, "greengrassDataPlanePort": "8443"}}
    doc["services"]["aws.greengrass.fleet_provisioning"] = {"configuration": conf or lite_conf()}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def lite_settings(*files):
    tree, notes = lite_load(list(files))
    settings = read_lite_settings(tree, [n for n, _ in files])
    return settings, notes


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)
