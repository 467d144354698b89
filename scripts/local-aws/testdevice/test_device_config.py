"""Unit tests of the test device's config reading (scripts/dataplane/device.py): the Java
plugin's case-insensitive key lookup, nucleus lite's config file merge, device path mapping and
bundle extraction. No network. Run from the repository root:

    .venv/bin/python -m unittest discover -s scripts/dataplane -p 'test_device*.py'
"""

import io
import json
import os
import sys
import tempfile
import unittest
import zipfile
from contextlib import redirect_stderr
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import device  # noqa: E402
from device import ConfigError  # noqa: E402

EP = "abc-ats.iot.us-east-1.amazonaws.com"
PLUGIN = "aws.greengrass.FleetProvisioningByClaim"


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
    for key, value in overrides.items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    return {"services": {PLUGIN: {"configuration": conf}}}


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
    for key, value in overrides.items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = value
    return conf


def lite_yaml(conf=None, nucleus=True):
    doc = {"system": {"rootPath": "/var/lib/greengrass"}, "services": {}}
    if nucleus:
        doc["services"]["aws.greengrass.NucleusLite"] = {"componentType": "NUCLEUS", "configuration": {
            "awsRegion": "us-east-1", "iotRoleAlias": "Alias",
            "runWithDefault": {"posixUser": "ggcore:ggcore"}, "greengrassDataPlanePort": "8443"}}
    doc["services"]["aws.greengrass.fleet_provisioning"] = {"configuration": conf or lite_conf()}
    return yaml.safe_dump(doc, sort_keys=False).encode()


def lite_settings(*files):
    tree, notes = device.lite_load(list(files))
    settings = device.read_lite_settings(tree, [n for n, _ in files])
    return settings, notes


class JavaKeyLookup(unittest.TestCase):
    def test_claimfab_shaped_config(self):
        s = device.read_java_settings(java_doc(), "/c.yaml")
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
        s = device.read_java_settings(doc, "/c.yaml")
        self.assertEqual(s.claim_cert, "/greengrass/v2/claim-certs/claim.pem.crt")
        self.assertEqual(s.endpoint, EP)

    def test_case_collision_keeps_the_last_and_warns(self):
        m = device.CIMap({"rootPath": "/a", "ROOTPATH": "/b"})
        self.assertEqual(m.get("rootpath"), "/b")
        self.assertEqual(m.case_collisions, [("rootPath", "ROOTPATH")])

    def test_underscore_keys_are_dropped(self):
        self.assertNotIn("_hidden", device.CIMap({"_hidden": 1}))

    def test_every_missing_required_key_is_named(self):
        doc = java_doc(rootCaPath=None, provisioningTemplate="", rootPath=None)
        with self.assertRaises(ConfigError) as cm:
            device.read_java_settings(doc, "/c.yaml")
        msg = cm.exception.error
        for key in ("rootCaPath", "provisioningTemplate", "rootPath"):
            self.assertIn(f"Required parameter {key} missing for {PLUGIN}", msg)
        self.assertIn("without provisioning", msg)
        self.assertEqual(cm.exception.stage, "config")

    def test_no_plugin_section(self):
        with self.assertRaisesRegex(ConfigError, "has no services.aws.greengrass.FleetProvisioningByClaim"):
            device.read_java_settings({"services": {"aws.greengrass.Nucleus": {"version": "2.14.3"}}}, "/c.yaml")

    def test_old_output_path_names_are_refused(self):
        for old in ("certPath", "keyPath", "KeyPath"):
            with self.assertRaisesRegex(ConfigError, "97d944f"):
                device.read_java_settings(java_doc(**{old: "/x"}), "/c.yaml")

    def test_lite_names_in_the_java_section_are_refused(self):
        with self.assertRaisesRegex(ConfigError, "claimCertificatePath"):
            device.read_java_settings(java_doc(claimCertPath="/x"), "/c.yaml")

    def test_output_paths_from_the_current_names(self):
        s = device.read_java_settings(java_doc(certificatePath="/d/c.pem", privateKeyPath="/d/k.pem"), "/c.yaml")
        self.assertEqual((s.out_cert, s.out_key), ("/d/c.pem", "/d/k.pem"))

    def test_mqtt_port_and_device_id(self):
        s = device.read_java_settings(java_doc(mqttPort="443", deviceId="dev-1"), "/c.yaml")
        self.assertEqual((s.port, s.client_id), (443, "dev-1"))
        self.assertEqual(device.read_java_settings(java_doc(mqttPort=8884), "/c.yaml").port, 8884)
        with self.assertRaisesRegex(ConfigError, "NumberFormatException"):
            device.read_java_settings(java_doc(mqttPort="88a"), "/c.yaml")
        with self.assertRaisesRegex(ConfigError, "NumberFormatException"):
            device.read_java_settings(java_doc(mqttPort=8883.0), "/c.yaml")

    def test_csr_path_needs_its_key(self):
        with self.assertRaisesRegex(ConfigError, "Required parameter csrPrivateKeyPath"):
            device.read_java_settings(java_doc(csrPath="/d/csr.pem"), "/c.yaml")
        s = device.read_java_settings(java_doc(csrPath="/d/csr.pem", csrPrivateKeyPath="/d/k.pem"), "/c.yaml")
        self.assertEqual((s.method, s.csr_path, s.csr_key), ("csr-file", "/d/csr.pem", "/d/k.pem"))
        self.assertEqual(device.read_java_settings(java_doc(csrPath=""), "/c.yaml").method, "create-keys")

    def test_template_parameters_are_sent_as_java_strings(self):
        s = device.read_java_settings(java_doc(templateParameters={"A": True, "B": 12, "_c": "x", "D": "d"}), "/c.yaml")
        self.assertEqual(s.params, {"A": "true", "B": "12", "D": "d"})
        self.assertEqual(len(s.warnings), 2)
        self.assertIsNone(device.read_java_settings(java_doc(templateParameters={}), "/c.yaml").params)
        self.assertIsNone(device.read_java_settings(java_doc(templateParameters=None), "/c.yaml").params)
        with self.assertRaisesRegex(ConfigError, "ClassCastException"):
            device.read_java_settings(java_doc(templateParameters="ThingName=x"), "/c.yaml")

    def test_endpoint_must_be_a_host_name(self):
        for bad in ("https://" + EP, EP + ":8883", EP + "/"):
            with self.assertRaisesRegex(ConfigError, "not a host name"):
                device.read_java_settings(java_doc(iotDataEndpoint=bad), "/c.yaml")

    def test_a_provisioned_config_skips_the_plugin(self):
        doc = java_doc()
        doc["system"] = {"thingName": "t", "certificateFilePath": "/c", "privateKeyPath": "/k", "rootCaPath": "/r"}
        doc["services"]["aws.greengrass.Nucleus"] = {"configuration": {
            "iotDataEndpoint": EP, "iotCredEndpoint": "c", "awsRegion": "us-east-1"}}
        with self.assertRaisesRegex(ConfigError, "never run the provisioning plugin"):
            device.read_java_settings(doc, "/c.yaml")

    def test_init_config_format_follows_the_extension(self):
        text = yaml.safe_dump(java_doc()).encode()
        self.assertIn("services", device.parse_java_init_config("/gg/config.yaml", text))
        self.assertIn("services", device.parse_java_init_config("/gg/config.yml", text))
        self.assertIn("services", device.parse_java_init_config("/gg/config.json", json.dumps(java_doc()).encode()))
        for name in ("/gg/config.YAML", "/gg/config.txt", "/gg/config"):
            with self.assertRaisesRegex(ConfigError, "not supported"):
                device.parse_java_init_config(name, text)
        with self.assertRaisesRegex(ConfigError, "not a map"):
            device.parse_java_init_config("/gg/c.yaml", b"- a\n- b\n")

    def test_yaml_scalars_are_typed_like_jackson(self):
        doc = device.parse_java_init_config("/c.yaml", b"services:\n  x: {a: 8883, b: 'true', c: true}\n")
        self.assertEqual(doc["services"]["x"], {"a": 8883, "b": "true", "c": True})
        self.assertEqual(device.java_to_string(True), "true")
        self.assertEqual(device.java_to_string(1.0), "1.0")


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
            device.lite_load([("/etc/greengrass/config.d/a.yaml", lite_yaml()),
                              ("/etc/greengrass/config.d/b.yaml", other)])
        # The same value twice is harmless.
        device.lite_load([("/etc/greengrass/config.d/a.yaml", lite_yaml()),
                          ("/etc/greengrass/config.d/b.yaml", lite_yaml())])

    def test_a_key_is_a_map_or_a_value(self):
        with self.assertRaisesRegex(ConfigError, "is a map"):
            device.lite_merge([("a", {"x": {"y": "1"}}), ("b", {"x": "2"})])
        with self.assertRaisesRegex(ConfigError, "holds a value"):
            device.lite_merge([("a", {"x": "2"}), ("b", {"x": {"y": "1"}})])
        merged, _ = device.lite_merge([("a", {"x": {"y": "1"}}), ("b", {"x": {}})])
        self.assertEqual(merged, {"x": {"y": "1"}})

    def test_every_scalar_is_a_string(self):
        doc = device.lite_parse_file("f", b"a: 8443\nb: true\nc: ~\nd:\ne: [1, 2]\n")
        self.assertEqual(doc, {"a": "8443", "b": "true", "c": "~", "d": "", "e": ["1", "2"]})

    def test_file_size_limit(self):
        padding = b"# " + b"x" * 100 + b"\n"
        body = lite_yaml()
        fits = body + padding * ((8192 - len(body)) // len(padding))
        fits += b"#" * (8192 - len(fits))
        self.assertEqual(len(fits), 8192)
        device.lite_parse_file("f", fits)
        with self.assertRaisesRegex(ConfigError, "8192"):
            device.lite_parse_file("f", fits + b"\n")

    def test_unparseable_or_empty_files(self):
        with self.assertRaisesRegex(ConfigError, "skip the whole file"):
            device.lite_parse_file("f", b"a: [\n")
        with self.assertRaisesRegex(ConfigError, "empty"):
            device.lite_parse_file("f", b"# nothing\n")
        with self.assertRaisesRegex(ConfigError, "start empty"):
            device.lite_load([])

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
            names = [n for n, _ in device.lite_config_files(root)]
            self.assertEqual(names, ["/etc/greengrass/config.yaml", "/etc/greengrass/config.d/a.conf",
                                     "/etc/greengrass/config.d/b.yaml"])


class Paths(unittest.TestCase):
    def test_normalize_and_map(self):
        root = Path("/tmp/dev")
        self.assertEqual(device.normalize_device_path("/greengrass/v2/../x//y", "p"), "/greengrass/x/y")
        self.assertEqual(device.map_device_path(root, "/greengrass/v2/AmazonRootCA1.pem"),
                         root / "greengrass/v2/AmazonRootCA1.pem")
        self.assertEqual(device.map_device_path(root, "/../../etc/passwd"), root / "etc/passwd")
        self.assertEqual(device.map_device_path(root, "//x"), root / "x")
        self.assertEqual(device.zip_entry_name("/greengrass/v2/init-config/config.yaml"),
                         "greengrass/v2/init-config/config.yaml")
        with self.assertRaisesRegex(ConfigError, "relative"):
            device.normalize_device_path("claim.pem", "claimCertPath")
        with self.assertRaisesRegex(ConfigError, "relative"):
            device.read_java_settings(java_doc(rootCaPath="AmazonRootCA1.pem"), "/c.yaml")


def make_zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data)


class Bundles(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def java_files(self, doc=None):
        return {
            "greengrass/v2/claim-certs/claim.pem.crt": ("CERT", 0o644),
            "greengrass/v2/claim-certs/claim.private.pem.key": ("KEY", 0o600),
            "greengrass/v2/AmazonRootCA1.pem": ("CA", 0o644),
            "greengrass/v2/init-config/config.yaml": (yaml.safe_dump(doc or java_doc()), 0o644),
        }

    def extract(self, files, nucleus="java", init="/greengrass/v2/init-config/config.yaml"):
        make_zip(self.dir / "b.zip", files)
        root = self.dir / "root"
        root.mkdir()
        modes = device.extract_bundle(self.dir / "b.zip", root)
        return root, modes, device.load_settings(nucleus, root, init)

    def test_java_bundle(self):
        root, modes, s = self.extract(self.java_files())
        self.assertEqual(modes["/greengrass/v2/claim-certs/claim.private.pem.key"] & 0o777, 0o600)
        self.assertEqual(os.stat(root / "greengrass/v2/claim-certs/claim.private.pem.key").st_mode & 0o777, 0o600)
        self.assertEqual(s.config_files, ["/greengrass/v2/init-config/config.yaml"])
        self.assertEqual(s.root_ca, "/greengrass/v2/AmazonRootCA1.pem")

    def test_init_config_elsewhere(self):
        files = self.java_files()
        files["gg/config.yaml"] = files.pop("greengrass/v2/init-config/config.yaml")
        with self.assertRaisesRegex(ConfigError, "skips a missing --init-config"):
            self.extract(files)

    def test_files_the_config_points_at_must_be_in_the_bundle(self):
        files = self.java_files()
        del files["greengrass/v2/AmazonRootCA1.pem"]
        with self.assertRaisesRegex(ConfigError, "rootCaPath /greengrass/v2/AmazonRootCA1.pem"):
            self.extract(files)

    def test_lite_bundle(self):
        files = {
            "var/lib/greengrass/claim-certs/claim.pem.crt": ("CERT", 0o644),
            "var/lib/greengrass/claim-certs/claim.private.pem.key": ("KEY", 0o600),
            "var/lib/greengrass/AmazonRootCA1.pem": ("CA", 0o644),
            "etc/greengrass/config.d/claimfab.yaml": (lite_yaml().decode(), 0o644),
        }
        _, _, s = self.extract(files, "lite")
        self.assertEqual(s.config_files, ["/etc/greengrass/config.d/claimfab.yaml"])
        self.assertEqual(s.claim_key, "/var/lib/greengrass/claim-certs/claim.private.pem.key")

    def test_entries_outside_the_root_are_refused(self):
        for name in ("../evil", "a/../../evil", "/abs"):
            make_zip(self.dir / "b.zip", {name: ("x", 0o644)})
            with self.assertRaisesRegex(ConfigError, "does not map"):
                device.extract_bundle(self.dir / "b.zip", self.dir)

    def test_not_a_zip(self):
        (self.dir / "b.zip").write_bytes(b"nope")
        with self.assertRaisesRegex(ConfigError, "not a readable zip"):
            device.extract_bundle(self.dir / "b.zip", self.dir)


class DeviceKeys(unittest.TestCase):
    def test_lite_csr(self):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec

        key_pem, csr_pem = device.make_csr("gg-1")
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        self.assertEqual(csr.subject.rfc4514_string(), "CN=gg-1")
        self.assertIsInstance(csr.public_key().curve, ec.SECP256R1)
        # The key is PKCS#8 PEM and is the CSR's key.
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(key_pem, password=None)
        self.assertEqual(key.public_key(), csr.public_key())
        # OpenSSL refuses a CN over 64 characters and lite ignores that: empty subject.
        _, csr_pem = device.make_csr("n" * 65)
        self.assertEqual(len(x509.load_pem_x509_csr(csr_pem.encode()).subject), 0)

    def test_certificate_must_carry_the_device_key(self):
        import datetime
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        def cert_for(key):
            name = x509.Name([])
            now = datetime.datetime.now(datetime.timezone.utc)
            return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                    .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())

        mine, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        mine_pem = mine.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        device.check_key_matches("create", cert_for(mine), mine_pem, "its key")
        with self.assertRaisesRegex(device.DeviceFailure, "another device"):
            device.check_key_matches("create", cert_for(other), mine_pem, "its key")


class Usage(unittest.TestCase):
    def run_main(self, *argv):
        err = io.StringIO()
        with redirect_stderr(err):
            return device.main(list(argv)), err.getvalue()

    def test_bad_usage_exits_2(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca, tempfile.NamedTemporaryFile(suffix=".zip") as z:
            ca.write("-----BEGIN CERTIFICATE-----\n")
            ca.flush()
            base = ["--bundle", z.name, "--root-ca", ca.name]
            self.assertEqual(self.run_main("--nucleus", "lite", *base, "--connect-to", "127.0.0.1:1",
                                           "--init-config", "/x.yaml")[0], 2)
            self.assertEqual(self.run_main("--nucleus", "java", *base, "--connect-to", "127.0.0.1")[0], 2)
            self.assertEqual(self.run_main("--nucleus", "java", *base, "--connect-to", "127.0.0.1:1",
                                           "--init-config", "relative.yaml")[0], 2)
            self.assertEqual(self.run_main("--nucleus", "java", "--bundle", "/nonexistent.zip", "--root-ca", ca.name,
                                           "--connect-to", "127.0.0.1:1")[0], 2)
            self.assertEqual(self.run_main("--nucleus", "beos", *base, "--connect-to", "127.0.0.1:1")[0], 2)
            self.assertEqual(self.run_main("--nucleus", "java", "--bundle", z.name, "--root-ca", z.name,
                                           "--connect-to", "127.0.0.1:1")[0], 2)

    def test_config_failure_exits_1_with_a_report(self):
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "b.zip"
            make_zip(bundle, {"greengrass/v2/init-config/config.yaml": (yaml.safe_dump(java_doc(rootPath=None)), 0o644)})
            ca = Path(tmp) / "ca.pem"
            ca.write_text("-----BEGIN CERTIFICATE-----\n")
            out = io.StringIO()
            from contextlib import redirect_stdout
            with redirect_stdout(out):
                code = device.main(["--nucleus", "java", "--bundle", str(bundle), "--root-ca", str(ca),
                                    "--connect-to", "127.0.0.1:1", "--json"])
            self.assertEqual(code, 1)
            report = json.loads(out.getvalue())
            self.assertEqual((report["ok"], report["stage"]), (False, "config"))
            self.assertIn("Required parameter rootPath", report["error"])
            for key in ("status_code", "error_code", "error_message"):
                self.assertIsNone(report[key])


if __name__ == "__main__":
    unittest.main()
