"""Unit tests of the test device (scripts/local-aws/testdevice/lite_config.py and
lite_settings.py: nucleus lite's config file merge and what fleet-provisioning reads). No
network. Run from the repository root:

    .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import os
import tempfile
import unittest
from pathlib import Path

import yaml

from testdevice.fixtures import EP, lite_conf, lite_settings, lite_yaml
from testdevice.lite_config import lite_config_files, lite_load, lite_merge, lite_parse_file
from testdevice.settings import ConfigError


class LiteMerge(unittest.TestCase):
    def test_claimfab_shaped_config(self):
        s, notes = lite_settings(("/etc/greengrass/config.d/claimfab.yaml", lite_yaml()))
        self.assertEqual(s.endpoint, EP)
        self.assertEqual(s.port, 8883)
        self.assertEqual(s.method, "csr-device")
        self.assertEqual(s.csr_common_name, "gg-1")
        self.assertEqual(s.params, {"ThingName": "gg-1"})
        self.assertEqual(s.out_cert, "/var/lib/greengrass/credentials/certificate.pem")
        self.assertEqual(s.out_key, "/var/lib/greengrass/credentials/priv_key")
        self.assertEqual(s.warnings, [])
        self.assertEqual(notes, [])

    def test_later_file_wins_leaf_by_leaf(self):
        base = b"services:\n  aws.greengrass.NucleusLite:\n    configuration:\n      awsRegion: us-west-2\n      iotRoleAlias: A\n"
        s, notes = lite_settings(("/etc/greengrass/config.yaml", base),
                                 ("/etc/greengrass/config.d/claimfab.yaml", lite_yaml()))
        self.assertEqual(s.region, "us-east-1")
        self.assertEqual(s.role_alias, "Alias")
        self.assertTrue(any("awsRegion" in n for n in notes))

    def test_config_d_files_disagreeing_is_an_error(self):
        other = lite_yaml(lite_conf(templateName="Other"))
        with self.assertRaisesRegex(ConfigError, "readdir"):
            lite_load([("/etc/greengrass/config.d/a.yaml", lite_yaml()),
                              ("/etc/greengrass/config.d/b.yaml", other)])
        # The same value twice is harmless.
        lite_load([("/etc/greengrass/config.d/a.yaml", lite_yaml()),
                          ("/etc/greengrass/config.d/b.yaml", lite_yaml())])

    def test_a_key_is_a_map_or_a_value(self):
        with self.assertRaisesRegex(ConfigError, "is a map"):
            lite_merge([("a", {"x": {"y": "1"}}), ("b", {"x": "2"})])
        with self.assertRaisesRegex(ConfigError, "holds a value"):
            lite_merge([("a", {"x": "2"}), ("b", {"x": {"y": "1"}})])
        merged, _ = lite_merge([("a", {"x": {"y": "1"}}), ("b", {"x": {}})])
        self.assertEqual(merged, {"x": {"y": "1"}})

    def test_every_scalar_is_a_string(self):
        doc = lite_parse_file("f", b"a: 8443\nb: true\nc: ~\nd:\ne: [1, 2]\n")
        self.assertEqual(doc, {"a": "8443", "b": "true", "c": "~", "d": "", "e": ["1", "2"]})

    def test_file_size_limit(self):
        padding = b"# " + b"x" * 100 + b"\n"
        body = lite_yaml()
        fits = body + padding * ((8192 - len(body)) // len(padding))
        fits += b"#" * (8192 - len(fits))
        self.assertEqual(len(fits), 8192)
        lite_parse_file("f", fits)
        with self.assertRaisesRegex(ConfigError, "8192"):
            lite_parse_file("f", fits + b"\n")

    def test_unparseable_or_empty_files(self):
        with self.assertRaisesRegex(ConfigError, "skip the whole file"):
            lite_parse_file("f", b"a: [\n")
        with self.assertRaisesRegex(ConfigError, "empty"):
            lite_parse_file("f", b"# nothing\n")
        with self.assertRaisesRegex(ConfigError, "start empty"):
            lite_load([])

    def test_keys_are_case_sensitive(self):
        conf = lite_conf()
        conf["TemplateName"] = conf.pop("templateName")
        with self.assertRaisesRegex(ConfigError, "'TemplateName'.*bytewise"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(conf)))
        doc = yaml.safe_load(lite_yaml())
        doc["services"]["aws.greengrass.Fleet_Provisioning"] = doc["services"].pop("aws.greengrass.fleet_provisioning")
        with self.assertRaisesRegex(ConfigError, "Fleet_Provisioning/configuration exists"):
            lite_settings(("/etc/greengrass/config.yaml", yaml.safe_dump(doc).encode()))

    def test_java_names_in_the_lite_section_are_refused(self):
        conf = lite_conf(templateName=None, templateParams=None)
        conf["provisioningTemplate"] = "Template"
        conf["templateParameters"] = {"ThingName": "x"}
        with self.assertRaisesRegex(ConfigError, "provisioningTemplate.*templateName"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(conf)))

    def test_claim_cert_path_absent_means_not_enabled(self):
        for conf in (lite_conf(claimCertPath=None), lite_conf(claimCertPath="")):
            with self.assertRaisesRegex(ConfigError, "not enabled"):
                lite_settings(("/etc/greengrass/config.yaml", lite_yaml(conf)))

    def test_provisioned_device_skips(self):
        doc = yaml.safe_load(lite_yaml())
        doc["system"]["certificateFilePath"] = "/var/lib/greengrass/credentials/certificate.pem"
        with self.assertRaisesRegex(ConfigError, "Skipping provisioning"):
            lite_settings(("/etc/greengrass/config.yaml", yaml.safe_dump(doc).encode()))
        doc["system"]["certificateFilePath"] = ""  # the guide's sample: "" means not provisioned
        lite_settings(("/etc/greengrass/config.yaml", yaml.safe_dump(doc).encode()))

    def test_required_values(self):
        for key in ("claimKeyPath", "rootCaPath", "templateName", "iotDataEndpoint"):
            with self.assertRaisesRegex(ConfigError, f"{key} is absent"):
                lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(**{key: None}))))
            with self.assertRaisesRegex(ConfigError, f"{key} is empty"):
                lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(**{key: ""}))))
        with self.assertRaisesRegex(ConfigError, "templateParams is absent"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(templateParams=None))))
        with self.assertRaisesRegex(ConfigError, "must be a map"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(templateParams="x"))))
        with self.assertRaisesRegex(ConfigError, "iotCredEndpoint is absent.*after RegisterThing"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(iotCredEndpoint=None))))
        with self.assertRaisesRegex(ConfigError, "128-byte"):
            lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(templateName="T" * 129))))

    def test_optional_values(self):
        s, _ = lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(csrCommonName=None))))
        self.assertEqual(s.csr_common_name, "aws-greengrass-nucleus-lite")
        s, _ = lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(
            certPath="/d/c.pem", keyPath="/d/k", csrPath="/d/r.pem"))))
        self.assertEqual((s.out_cert, s.out_key, s.csr_path), ("/d/c.pem", "/d/k", "/d/r.pem"))
        s, _ = lite_settings(("/etc/greengrass/config.yaml", lite_yaml(lite_conf(csrCommonName="n" * 65))))
        self.assertTrue(any("empty subject" in w for w in s.warnings))

    def test_nucleus_settings_lite_needs_later_are_warned_about(self):
        s, _ = lite_settings(("/etc/greengrass/config.yaml", lite_yaml(nucleus=False)))
        joined = "\n".join(s.warnings)
        for key in ("awsRegion", "iotRoleAlias", "posixUser", "greengrassDataPlanePort"):
            self.assertIn(key, joined)

    def test_files_ggconfigd_loads_from_a_device_root(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            conf_d = root / "etc/greengrass/config.d"
            conf_d.mkdir(parents=True)
            (root / "etc/greengrass/config.yaml").write_bytes(b"a: 1\n")
            (conf_d / "b.yaml").write_bytes(b"b: 1\n")
            (conf_d / "a.conf").write_bytes(b"c: 1\n")  # any regular file, not only *.yaml
            (conf_d / "sub").mkdir()
            os.symlink(conf_d / "b.yaml", conf_d / "link.yaml")  # symlinks are skipped
            names = [n for n, _ in lite_config_files(root)]
            self.assertEqual(names, ["/etc/greengrass/config.yaml", "/etc/greengrass/config.d/a.conf",
                                     "/etc/greengrass/config.d/b.yaml"])


if __name__ == "__main__":
    unittest.main()
