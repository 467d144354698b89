"""Unit tests of the test device (scripts/local-aws/testdevice/: device path mapping,
bundle extraction, the device's keys and the command line). No network. Run from the repository
root:

    .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import io
import json
import os
import tempfile
import unittest
from contextlib import redirect_stderr
from pathlib import Path

import yaml

from testdevice.bundle import extract_bundle, load_settings
from testdevice.certificates import check_key_matches, make_csr
from testdevice.cli import main
from testdevice.fixtures import java_doc, lite_yaml, make_zip
from testdevice.java_config import read_java_settings
from testdevice.paths import map_device_path, normalize_device_path, zip_entry_name
from testdevice.settings import ConfigError, DeviceFailure


class Paths(unittest.TestCase):
    def test_normalize_and_map(self):
        root = Path("/tmp/dev")
        self.assertEqual(normalize_device_path("/greengrass/v2/../x//y", "p"), "/greengrass/x/y")
        self.assertEqual(map_device_path(root, "/greengrass/v2/AmazonRootCA1.pem"),
                         root / "greengrass/v2/AmazonRootCA1.pem")
        self.assertEqual(map_device_path(root, "/../../etc/passwd"), root / "etc/passwd")
        self.assertEqual(map_device_path(root, "//x"), root / "x")
        self.assertEqual(zip_entry_name("/greengrass/v2/init-config/config.yaml"),
                         "greengrass/v2/init-config/config.yaml")
        with self.assertRaisesRegex(ConfigError, "relative"):
            normalize_device_path("claim.pem", "claimCertPath")
        with self.assertRaisesRegex(ConfigError, "relative"):
            read_java_settings(java_doc(rootCaPath="AmazonRootCA1.pem"), "/c.yaml")



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
        modes = extract_bundle(self.dir / "b.zip", root)
        return root, modes, load_settings(nucleus, root, init)

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
                extract_bundle(self.dir / "b.zip", self.dir)

    def test_not_a_zip(self):
        (self.dir / "b.zip").write_bytes(b"nope")
        with self.assertRaisesRegex(ConfigError, "not a readable zip"):
            extract_bundle(self.dir / "b.zip", self.dir)


class DeviceKeys(unittest.TestCase):
    def test_lite_csr(self):
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec

        key_pem, csr_pem = make_csr("gg-1")
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        self.assertEqual(csr.subject.rfc4514_string(), "CN=gg-1")
        self.assertIsInstance(csr.public_key().curve, ec.SECP256R1)
        # The key is PKCS#8 PEM and is the CSR's key.
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(key_pem, password=None)
        self.assertEqual(key.public_key(), csr.public_key())
        # OpenSSL refuses a CN over 64 characters and lite ignores that: empty subject.
        _, csr_pem = make_csr("n" * 65)
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
        check_key_matches("create", cert_for(mine), mine_pem, "its key")
        with self.assertRaisesRegex(DeviceFailure, "another device"):
            check_key_matches("create", cert_for(other), mine_pem, "its key")


class Usage(unittest.TestCase):
    def run_main(self, *argv):
        err = io.StringIO()
        with redirect_stderr(err):
            return main(list(argv)), err.getvalue()

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
                code = main(["--nucleus", "java", "--bundle", str(bundle), "--root-ca", str(ca),
                                    "--connect-to", "127.0.0.1:1", "--json"])
            self.assertEqual(code, 1)
            report = json.loads(out.getvalue())
            self.assertEqual((report["ok"], report["stage"]), (False, "config"))
            self.assertIn("Required parameter rootPath", report["error"])
            for key in ("status_code", "error_code", "error_message"):
                self.assertIsNone(report[key])


if __name__ == "__main__":
    unittest.main()
