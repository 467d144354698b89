"""Unit tests of the test device (scripts/local-aws/testdevice/java_config.py: the Java
plugin's case-insensitive key lookup and the init config's parsing). No network. Run from the
repository root:

    .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

import yaml

from testdevice.fixtures import EP, PLUGIN, java_doc
from testdevice.java_config import CIMap, java_to_string, parse_java_init_config, read_java_settings
from testdevice.settings import ConfigError


class JavaKeyLookup(unittest.TestCase):
    def test_claimfab_shaped_config(self):
        s = read_java_settings(java_doc(), "/c.yaml")
        self.assertEqual(s.endpoint, EP)
        self.assertEqual(s.port, 443)  # the Java SDK builder default (ALPN)
        self.assertIsNone(s.client_id)  # a random UUID per connection
        self.assertEqual(s.method, "create-keys")
        self.assertEqual(s.template, "Template")
        self.assertEqual(s.params, {"ThingName": "gg-1"})
        self.assertEqual(s.out_cert, "/greengrass/v2/thingCert.crt")
        self.assertEqual(s.out_key, "/greengrass/v2/privKey.key")
        self.assertEqual(s.warnings, [])

    def test_keys_and_sections_are_case_insensitive(self):
        doc = java_doc()
        conf = doc["services"][PLUGIN]["configuration"]
        conf["CLAIMCERTIFICATEPATH"] = conf.pop("claimCertificatePath")
        conf["iotdataendpoint"] = conf.pop("iotDataEndpoint")
        doc = {"Services": {PLUGIN.upper(): {"Configuration": conf}}}
        s = read_java_settings(doc, "/c.yaml")
        self.assertEqual(s.claim_cert, "/greengrass/v2/claim-certs/claim.pem.crt")
        self.assertEqual(s.endpoint, EP)

    def test_case_collision_keeps_the_last_and_warns(self):
        m = CIMap({"rootPath": "/a", "ROOTPATH": "/b"})
        self.assertEqual(m.get("rootpath"), "/b")
        self.assertEqual(m.case_collisions, [("rootPath", "ROOTPATH")])

    def test_underscore_keys_are_dropped(self):
        self.assertNotIn("_hidden", CIMap({"_hidden": 1}))

    def test_every_missing_required_key_is_named(self):
        doc = java_doc(rootCaPath=None, provisioningTemplate="", rootPath=None)
        with self.assertRaises(ConfigError) as cm:
            read_java_settings(doc, "/c.yaml")
        msg = cm.exception.error
        for key in ("rootCaPath", "provisioningTemplate", "rootPath"):
            self.assertIn(f"Required parameter {key} missing for {PLUGIN}", msg)
        self.assertIn("without provisioning", msg)
        self.assertEqual(cm.exception.stage, "config")

    def test_no_plugin_section(self):
        with self.assertRaisesRegex(ConfigError, "has no services.aws.greengrass.FleetProvisioningByClaim"):
            read_java_settings({"services": {"aws.greengrass.Nucleus": {"version": "2.14.3"}}}, "/c.yaml")

    def test_old_output_path_names_are_refused(self):
        for old in ("certPath", "keyPath", "KeyPath"):
            with self.assertRaisesRegex(ConfigError, "97d944f"):
                read_java_settings(java_doc(**{old: "/x"}), "/c.yaml")

    def test_lite_names_in_the_java_section_are_refused(self):
        with self.assertRaisesRegex(ConfigError, "claimCertificatePath"):
            read_java_settings(java_doc(claimCertPath="/x"), "/c.yaml")

    def test_output_paths_from_the_current_names(self):
        s = read_java_settings(java_doc(certificatePath="/d/c.pem", privateKeyPath="/d/k.pem"), "/c.yaml")
        self.assertEqual((s.out_cert, s.out_key), ("/d/c.pem", "/d/k.pem"))

    def test_mqtt_port_and_device_id(self):
        s = read_java_settings(java_doc(mqttPort="443", deviceId="dev-1"), "/c.yaml")
        self.assertEqual((s.port, s.client_id), (443, "dev-1"))
        self.assertEqual(read_java_settings(java_doc(mqttPort=8884), "/c.yaml").port, 8884)
        with self.assertRaisesRegex(ConfigError, "NumberFormatException"):
            read_java_settings(java_doc(mqttPort="88a"), "/c.yaml")
        with self.assertRaisesRegex(ConfigError, "NumberFormatException"):
            read_java_settings(java_doc(mqttPort=8883.0), "/c.yaml")

    def test_csr_path_needs_its_key(self):
        with self.assertRaisesRegex(ConfigError, "Required parameter csrPrivateKeyPath"):
            read_java_settings(java_doc(csrPath="/d/csr.pem"), "/c.yaml")
        s = read_java_settings(java_doc(csrPath="/d/csr.pem", csrPrivateKeyPath="/d/k.pem"), "/c.yaml")
        self.assertEqual((s.method, s.csr_path, s.csr_key), ("csr-file", "/d/csr.pem", "/d/k.pem"))
        self.assertEqual(read_java_settings(java_doc(csrPath=""), "/c.yaml").method, "create-keys")

    def test_template_parameters_are_sent_as_java_strings(self):
        s = read_java_settings(java_doc(templateParameters={"A": True, "B": 12, "_c": "x", "D": "d"}), "/c.yaml")
        self.assertEqual(s.params, {"A": "true", "B": "12", "D": "d"})
        self.assertEqual(len(s.warnings), 2)
        self.assertIsNone(read_java_settings(java_doc(templateParameters={}), "/c.yaml").params)
        self.assertIsNone(read_java_settings(java_doc(templateParameters=None), "/c.yaml").params)
        with self.assertRaisesRegex(ConfigError, "ClassCastException"):
            read_java_settings(java_doc(templateParameters="ThingName=x"), "/c.yaml")

    def test_endpoint_must_be_a_host_name(self):
        for bad in ("https://" + EP, EP + ":8883", EP + "/"):
            with self.assertRaisesRegex(ConfigError, "not a host name"):
                read_java_settings(java_doc(iotDataEndpoint=bad), "/c.yaml")

    def test_a_provisioned_config_skips_the_plugin(self):
        doc = java_doc()
        doc["system"] = {"thingName": "t", "certificateFilePath": "/c", "privateKeyPath": "/k", "rootCaPath": "/r"}
        doc["services"]["aws.greengrass.Nucleus"] = {"configuration": {
            "iotDataEndpoint": EP, "iotCredEndpoint": "c", "awsRegion": "us-east-1"}}
        with self.assertRaisesRegex(ConfigError, "never run the provisioning plugin"):
            read_java_settings(doc, "/c.yaml")

    def test_init_config_format_follows_the_extension(self):
        text = yaml.safe_dump(java_doc()).encode()
        self.assertIn("services", parse_java_init_config("/gg/config.yaml", text))
        self.assertIn("services", parse_java_init_config("/gg/config.yml", text))
        self.assertIn("services", parse_java_init_config("/gg/config.json", json.dumps(java_doc()).encode()))
        for name in ("/gg/config.YAML", "/gg/config.txt", "/gg/config"):
            with self.assertRaisesRegex(ConfigError, "not supported"):
                parse_java_init_config(name, text)
        with self.assertRaisesRegex(ConfigError, "not a map"):
            parse_java_init_config("/gg/c.yaml", b"- a\n- b\n")

    def test_yaml_scalars_are_typed_like_jackson(self):
        doc = parse_java_init_config("/c.yaml", b"services:\n  x: {a: 8883, b: 'true', c: true}\n")
        self.assertEqual(doc["services"]["x"], {"a": 8883, "b": "true", "c": True})
        self.assertEqual(java_to_string(True), "true")
        self.assertEqual(java_to_string(1.0), "1.0")


if __name__ == "__main__":
    unittest.main()
