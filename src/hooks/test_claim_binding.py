"""Unit tests of the claim-binding pre-provisioning hook (src/hooks/claim_binding.py).

Run: .venv/bin/python -m unittest discover -s src/hooks -p 'test_*.py'

Certificates are made with the `cryptography` package (tests only; the handler reads DER
itself) or, for encodings cryptography will not write, by hand. DescribeCertificate is a
fake client injected with claim_binding.set_iot_client.
"""

import base64
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
import unittest
import warnings
from pathlib import Path
from unittest import mock

from botocore.exceptions import ClientError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claim_binding  # noqa: E402

HERE = Path(__file__).resolve().parent
KEY = ec.generate_private_key(ec.SECP256R1())


# -- certificates ---------------------------------------------------------------------------


def make_cert(subject):
    """A real X.509 certificate (DER) with the given subject (x509.Name or list of attributes)."""
    if not isinstance(subject, x509.Name):
        subject = x509.Name(subject)
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")]))
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def cn(value, type_=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CN over 64 characters (ub-common-name)
        if type_ is None:
            return x509.NameAttribute(NameOID.COMMON_NAME, value, _validate=False)
        return x509.NameAttribute(NameOID.COMMON_NAME, value, type_, _validate=False)


def to_pem(der):
    body = base64.b64encode(der).decode("ascii")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def tlv(tag, content):
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


OID_CN = b"\x55\x04\x03"
OID_O = b"\x55\x04\x0a"


def hand_name(*rdns):
    """Name from RDNs, each a list of (oid bytes, tag, value bytes)."""
    return tlv(0x30, b"".join(tlv(0x31, b"".join(tlv(0x30, tlv(0x06, o) + tlv(t, v)) for o, t, v in rdn)) for rdn in rdns))


def hand_cert(subject_der, version=True):
    """A structurally valid certificate (unsigned: the hook checks no signature)."""
    algorithm = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))
    tbs = (
        (tlv(0xA0, tlv(0x02, b"\x02")) if version else b"")
        + tlv(0x02, b"\x01")
        + algorithm
        + hand_name([(OID_CN, 0x0C, b"Test CA")])
        + tlv(0x30, tlv(0x17, b"250101000000Z") + tlv(0x17, b"350101000000Z"))
        + subject_der
        + tlv(0x30, algorithm + tlv(0x03, b"\x00\x04"))
    )
    return tlv(0x30, tlv(0x30, tbs) + algorithm + tlv(0x03, b"\x00\x30\x00"))


def cert_id(der):
    return hashlib.sha256(der).hexdigest()


# -- the fake IoT client --------------------------------------------------------------------


class FakeIot:
    def __init__(self):
        self.certs = {}
        self.pems = []  # every claim PEM handed out, for the log checks
        self.error = None
        self.calls = []

    def add(self, der, status="ACTIVE"):
        cid = cert_id(der)
        self.certs[cid] = {"certificateId": cid, "status": status, "certificatePem": to_pem(der)}
        self.pems.append(to_pem(der))
        return cid

    def describe_certificate(self, certificateId):
        self.calls.append(certificateId)
        if self.error is not None:
            raise self.error
        if certificateId not in self.certs:
            raise client_error("ResourceNotFoundException")
        return {"certificateDescription": dict(self.certs[certificateId])}


def client_error(code):
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, "DescribeCertificate")


DEVICE_DER = make_cert([cn("new-device-cert")])
DEVICE_PEM = to_pem(DEVICE_DER)


def event(claim_id, thing_name="gg-1", **extra):
    ev = {
        "claimCertificateId": claim_id,
        "certificateId": cert_id(DEVICE_DER),
        "certificatePem": DEVICE_PEM,
        "templateArn": "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/T",
        "clientId": "gg-1",
        "parameters": {"ThingName": thing_name, "ThingGroupName": "factory-a"},
    }
    if thing_name is None:
        del ev["parameters"]["ThingName"]
    ev.update(extra)
    return ev


class HookCase(unittest.TestCase):
    def setUp(self):
        self.iot = FakeIot()
        claim_binding.set_iot_client(self.iot)
        env = mock.patch.dict(os.environ)
        env.start()
        os.environ.pop(claim_binding.ALLOW_SHARED_ENV, None)
        self.addCleanup(env.stop)
        self.addCleanup(claim_binding.set_iot_client, None)

    def invoke(self, ev):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            answer = claim_binding.handler(ev, None)
        text = out.getvalue()
        lines = text.splitlines()
        self.assertEqual(len(lines), 1, text)
        record = json.loads(lines[0])
        self.assertNotIn("BEGIN CERTIFICATE", text)
        self.assertNotIn("-----", text)
        for pem in [DEVICE_PEM] + self.iot.pems:
            body = "".join(pem.splitlines()[1:-1])
            self.assertNotIn(body[:40], text)
            self.assertNotIn(body[-40:], text)
        self.assertEqual(set(answer), {"allowProvisioning"})
        self.assertIs(answer["allowProvisioning"], record["decision"] == "allow")
        return answer["allowProvisioning"], record

    def claim(self, *attributes, status="ACTIVE"):
        return self.iot.add(make_cert(list(attributes)), status)


# -- decisions ------------------------------------------------------------------------------


class Decisions(HookCase):
    def test_own_claim_admitted(self):
        cid = self.claim(cn("gg-1"))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertTrue(allowed)
        self.assertEqual(record["reason"], "claim_matches_thing")
        self.assertEqual(record["claimCertificateId"], cid)
        self.assertEqual(record["thingName"], "gg-1")
        self.assertEqual(record["clientId"], "gg-1")
        self.assertEqual(self.iot.calls, [cid])

    def test_claim_of_another_device_refused(self):
        cid = self.claim(cn("gg-1"))
        allowed, record = self.invoke(event(cid, "gg-2"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "claim_bound_to_other_thing")
        self.assertEqual(record["claimCommonName"], "gg-1")
        self.assertEqual(record["thingName"], "gg-2")

    def test_match_is_exact(self):
        cid = self.claim(cn("gg-1"))
        for other in ("GG-1", "gg-10", "gg-", "gg_1"):
            with self.subTest(other=other):
                self.assertFalse(self.invoke(event(cid, other))[0])

    def test_missing_or_non_string_thing_name(self):
        cid = self.claim(cn("gg-1"))
        for ev in (
            event(cid, None),
            event(cid, parameters={}),
            event(cid, parameters=None),
            event(cid, parameters=["gg-1"]),
            event(cid, parameters={"ThingName": 1}),
            event(cid, parameters={"ThingName": None}),
            event(cid, parameters={"ThingName": ["gg-1"]}),
        ):
            with self.subTest(parameters=ev.get("parameters")):
                allowed, record = self.invoke(ev)
                self.assertFalse(allowed)
                self.assertEqual(record["reason"], "no_thing_name")
        self.assertEqual(self.iot.calls, [], "no AWS call without a thing name")

    def test_invalid_thing_name(self):
        cid = self.claim(cn("gg 1"))
        for name in ("", "gg 1", "a" * 129, "gg/1", "gg-1\n"):
            with self.subTest(name=name):
                allowed, record = self.invoke(event(cid, name))
                self.assertFalse(allowed)
                self.assertEqual(record["reason"], "invalid_thing_name")

    def test_longest_thing_name_long_form_length(self):
        name = "a" * 128  # AWS's longest thing name: CN content length 0x81 0x80
        der = make_cert([cn(name)])
        self.assertIn(b"\x0c\x81\x80" + name.encode(), der)
        cid = self.iot.add(der)
        self.assertTrue(self.invoke(event(cid, name))[0])

    def test_printable_and_utf8_strings(self):
        for type_, tag in ((_ASN1Type.PrintableString, 0x13), (_ASN1Type.UTF8String, 0x0C), (_ASN1Type.IA5String, 0x16)):
            with self.subTest(type_=type_):
                der = make_cert([cn("gg-1", type_)])
                self.assertIn(bytes([tag, 4]) + b"gg-1", der)
                self.assertTrue(self.invoke(event(self.iot.add(der), "gg-1"))[0])

    def test_bmp_string(self):
        der = hand_cert(hand_name([(OID_CN, 0x1E, "gg-1".encode("utf-16-be"))]))
        self.assertTrue(self.invoke(event(self.iot.add(der), "gg-1"))[0])

    def test_multiple_rdns(self):
        der = make_cert([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Factory A"),
            cn("gg-1"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "line 3"),
        ])
        self.assertTrue(self.invoke(event(self.iot.add(der), "gg-1"))[0])
        self.assertFalse(self.invoke(event(self.iot.add(der), "Factory-A"))[0])

    def test_multi_valued_rdn(self):
        name = x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gg-2"), cn("gg-1")])])
        der = make_cert(name)
        self.assertTrue(self.invoke(event(self.iot.add(der), "gg-1"))[0])
        self.assertFalse(self.invoke(event(self.iot.add(der), "gg-2"))[0])

    def test_no_common_name(self):
        cid = self.claim(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gg-1"))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "unreadable_claim_subject")
        self.assertIn("0 Common Names", record["detail"])

    def test_empty_subject(self):
        cid = self.iot.add(make_cert(x509.Name([])))
        self.assertFalse(self.invoke(event(cid, "gg-1"))[0])

    def test_two_common_names_refused(self):
        for first, second in (("gg-1", "gg-2"), ("gg-1", "gg-1")):
            with self.subTest(cns=(first, second)):
                cid = self.claim(cn(first), cn(second))
                allowed, record = self.invoke(event(cid, "gg-1"))
                self.assertFalse(allowed)
                self.assertIn("2 Common Names", record["detail"])

    def test_aws_default_subject(self):
        cid = self.claim(cn("AWS IoT Certificate"))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "no_csr_subject")
        self.assertIn("AWS did not keep a CSR subject", record["detail"])

    def test_shared_claim_refused_by_default(self):
        cid = self.claim(cn("GreengrassFleet claim"))
        for value in (None, "false", "1", "yes", ""):
            with self.subTest(env=value):
                os.environ.pop(claim_binding.ALLOW_SHARED_ENV, None)
                if value is not None:
                    os.environ[claim_binding.ALLOW_SHARED_ENV] = value
                allowed, record = self.invoke(event(cid, "gg-1"))
                self.assertFalse(allowed)
                self.assertEqual(record["reason"], "shared_claim")

    def test_shared_claim_allowed_with_env(self):
        os.environ[claim_binding.ALLOW_SHARED_ENV] = "true"
        cid = self.claim(cn("GreengrassFleet claim"))
        for name in ("gg-1", "gg-2"):
            allowed, record = self.invoke(event(cid, name))
            self.assertTrue(allowed)
            self.assertEqual(record["reason"], "shared_claim_allowed")
            self.assertIn("binding does not apply", record["detail"])
        self.assertFalse(self.invoke(event(cid, "GreengrassFleet claim"))[0], "still a valid thing name only")
        self.assertFalse(self.invoke(event(cid, None))[0])

    def test_env_does_not_loosen_device_claims(self):
        os.environ[claim_binding.ALLOW_SHARED_ENV] = "true"
        cid = self.claim(cn("gg-1"))
        self.assertFalse(self.invoke(event(cid, "gg-2"))[0])
        self.assertFalse(self.invoke(event(self.claim(cn("AWS IoT Certificate")), "gg-2"))[0])

    def test_claim_not_active(self):
        for status in ("INACTIVE", "REVOKED", "PENDING_TRANSFER", "PENDING_ACTIVATION", None):
            with self.subTest(status=status):
                cid = self.claim(cn("gg-1"), status=status)
                allowed, record = self.invoke(event(cid, "gg-1"))
                self.assertFalse(allowed)
                self.assertEqual(record["reason"], "claim_not_active")

    def test_describe_certificate_errors(self):
        cid = self.claim(cn("gg-1"))
        for code in ("ThrottlingException", "AccessDeniedException", "ResourceNotFoundException", "InternalFailureException"):
            with self.subTest(code=code):
                self.iot.error = client_error(code)
                allowed, record = self.invoke(event(cid, "gg-1"))
                self.assertFalse(allowed)
                self.assertEqual(record["reason"], "describe_certificate_failed")
                self.assertIn(code, record["detail"])
        self.iot.error = TimeoutError("read timed out")
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertFalse(allowed)
        self.assertIn("TimeoutError", record["detail"])

    def test_unknown_claim(self):
        allowed, record = self.invoke(event("ab" * 32, "gg-1"))
        self.assertFalse(allowed)
        self.assertIn("ResourceNotFoundException", record["detail"])

    def test_odd_describe_answers(self):
        cid = self.claim(cn("gg-1"))
        for description in ({}, {"status": "ACTIVE"}, {"status": "ACTIVE", "certificatePem": 7}, {"status": "ACTIVE", "certificatePem": ""}):
            with self.subTest(description=description):
                self.iot.certs[cid] = description
                self.assertFalse(self.invoke(event(cid, "gg-1"))[0])
        self.iot.describe_certificate = lambda certificateId: {"nothing": 1}
        self.assertFalse(self.invoke(event(cid, "gg-1"))[0])
        self.iot.describe_certificate = lambda certificateId: None
        self.assertFalse(self.invoke(event(cid, "gg-1"))[0])

    def test_bad_events(self):
        cid = self.claim(cn("gg-1"))
        for ev in (None, [], "x", {}, event(None), event(7), event("not-an-id"), event(cid.upper())):
            with self.subTest(ev=ev if not isinstance(ev, dict) else ev.get("claimCertificateId")):
                self.assertFalse(self.invoke(ev)[0])

    def test_log_fields_bounded_and_json(self):
        cid = self.claim(cn("gg-1"))
        allowed, record = self.invoke(event(cid, "gg-1", clientId="c" * 5000))
        self.assertTrue(allowed)
        self.assertLess(len(record["clientId"]), 300)
        allowed, record = self.invoke(event(cid, "gg-1", clientId={"x": DEVICE_PEM}))
        self.assertEqual(record["clientId"], "<dict>")
        self.assertEqual(
            set(record),
            {"decision", "reason", "detail", "claimCertificateId", "certificateId", "thingName", "clientId", "claimCommonName"},
        )

    def test_unexpected_exception_denies(self):
        cid = self.claim(cn("gg-1"))
        with mock.patch.object(claim_binding, "common_name", side_effect=RuntimeError("boom")):
            allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "internal_error")


# -- the DER reader -------------------------------------------------------------------------


class DerReader(unittest.TestCase):
    def names(self, der):
        return claim_binding.subject_common_names(der)

    def test_agrees_with_cryptography(self):
        rng = random.Random(7)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_:é€"
        for _ in range(100):
            attributes = []
            for _ in range(rng.randint(0, 4)):
                value = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 130)))
                oid = rng.choice([NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.LOCALITY_NAME])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    attributes.append(x509.NameAttribute(oid, value, _validate=False))
            der = make_cert(attributes)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # cryptography warns when reading CNs over 64
                subject = x509.load_der_x509_certificate(der).subject
            expected = [a.value for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
            self.assertEqual(self.names(der), expected)

    def test_version_1_certificate(self):
        self.assertEqual(self.names(hand_cert(hand_name([(OID_CN, 0x0C, b"gg-1")]), version=False)), ["gg-1"])

    def test_string_types(self):
        for tag, raw, text in (
            (0x0C, "gé".encode(), "gé"),
            (0x13, b"gg 1", "gg 1"),
            (0x14, b"g\xe9", "gé"),
            (0x16, b"gg", "gg"),
            (0x1A, b"gg", "gg"),
            (0x1C, "gg".encode("utf-32-be"), "gg"),
            (0x1E, "gé".encode("utf-16-be"), "gé"),
        ):
            with self.subTest(tag=tag):
                self.assertEqual(self.names(hand_cert(hand_name([(OID_CN, tag, raw)]))), [text])

    def test_unreadable(self):
        good = hand_cert(hand_name([(OID_CN, 0x0C, b"gg-1")]))
        self.assertEqual(self.names(good), ["gg-1"])
        cases = {
            "empty": b"",
            "garbage": b"\x00\x01\x02\x03",
            "not a sequence": b"\x04\x02ab",
            "trailing data": good + b"\x00",
            "indefinite length": b"\x30\x80" + good[2:] + b"\x00\x00",
            "non-minimal length": b"\x30\x81\x05\x02\x01\x01\x02\x00",
            "leading zero length": b"\x30\x82\x00\x80" + b"\x00" * 0x80,
            "huge length": b"\x30\x85\x01\x00\x00\x00\x00",
            "length past end": b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 10,
            "CN as OCTET STRING": hand_cert(hand_name([(OID_CN, 0x04, b"gg-1")])),
            "CN invalid UTF-8": hand_cert(hand_name([(OID_CN, 0x0C, b"g\xff")])),
            "CN odd BMPString": hand_cert(hand_name([(OID_CN, 0x1E, b"\x00g\x00")])),
            "CN non-ASCII PrintableString": hand_cert(hand_name([(OID_CN, 0x13, b"g\xe9")])),
            "empty RDN": hand_cert(tlv(0x30, tlv(0x31, b""))),
            "RDN not a SET": hand_cert(tlv(0x30, tlv(0x30, tlv(0x30, tlv(0x06, OID_CN) + tlv(0x0C, b"gg-1"))))),
            "attribute without value": hand_cert(tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, OID_CN))))),
            "data after value": hand_cert(tlv(0x30, tlv(0x31, tlv(0x30, tlv(0x06, OID_CN) + tlv(0x0C, b"gg-1") + b"\x05\x00")))),
            "high tag number": hand_cert(hand_name([(OID_CN, 0x1F, b"\x20gg")])),
            "subject missing": tlv(0x30, tlv(0x30, tlv(0x02, b"\x01"))),
        }
        for what, der in cases.items():
            with self.subTest(what=what):
                with self.assertRaises(claim_binding.CertificateError):
                    self.names(der)

    def test_every_truncation_refused(self):
        der = make_cert([cn("gg-1")])
        for n in range(len(der)):
            with self.assertRaises(claim_binding.CertificateError, msg=f"prefix of {n} bytes"):
                self.names(der[:n])

    def test_corruption_never_crashes(self):
        rng = random.Random(11)
        der = make_cert([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Factory"), cn("gg-1")])
        for _ in range(3000):
            mutated = bytearray(der)
            for _ in range(rng.randint(1, 3)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            try:
                result = self.names(bytes(mutated))
            except claim_binding.CertificateError:
                continue
            self.assertIsInstance(result, list)

    def test_pem(self):
        der = make_cert([cn("gg-1")])
        pem = to_pem(der)
        self.assertEqual(claim_binding.pem_to_der(pem), der)
        self.assertEqual(claim_binding.pem_to_der("junk\r\n" + pem.replace("\n", "\r\n") + to_pem(b"second")), der)
        self.assertEqual(claim_binding.common_name(pem), "gg-1")
        for bad in (None, b"pem", "", "no block", pem.replace("MII", "M!I"), "-----BEGIN CERTIFICATE-----\nQUJD=x\n-----END CERTIFICATE-----",
                    "-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----", pem[: len(pem) // 2], "x" * 100_000):
            with self.subTest(bad=bad if not isinstance(bad, str) else bad[:40]):
                with self.assertRaises(claim_binding.CertificateError):
                    claim_binding.common_name(bad)


# -- packaging and the real client ----------------------------------------------------------


class Packaging(unittest.TestCase):
    def tearDown(self):
        claim_binding.set_iot_client(None)

    def test_handler_needs_only_the_standard_library_and_boto3(self):
        """Run the parser with `cryptography` unimportable, as in the Lambda runtime."""
        pem = to_pem(make_cert([cn("gg-1", _ASN1Type.PrintableString)]))
        script = (
            "import sys; sys.modules['cryptography'] = None; sys.path.insert(0, sys.argv[1])\n"
            "import claim_binding; print(claim_binding.common_name(sys.stdin.read()))\n"
        )
        out = subprocess.run([sys.executable, "-c", script, str(HERE)], input=pem, capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "gg-1")

    def test_client_made_once_and_honours_endpoint_env(self):
        env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        with mock.patch.dict(os.environ, env):
            os.environ.pop("AWS_PROFILE", None)
            claim_binding.set_iot_client(None)
            client = claim_binding._iot_client()
            self.assertIs(claim_binding._iot_client(), client)
            self.assertEqual(client.meta.endpoint_url, "http://127.0.0.1:1")
            self.assertEqual(client.meta.region_name, "eu-west-3")
            # Nothing listens there: refused quickly, well inside AWS IoT's 5 seconds.
            started = time.monotonic()
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                answer = claim_binding.handler(event("ab" * 32, "gg-1"), None)
            self.assertLess(time.monotonic() - started, 5)
            self.assertEqual(answer, {"allowProvisioning": False})
            record = json.loads(out.getvalue())
            self.assertEqual(record["reason"], "describe_certificate_failed")
            self.assertIn("EndpointConnectionError", record["detail"])


if __name__ == "__main__":
    unittest.main()
