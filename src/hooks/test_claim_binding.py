"""Unit tests of the claim-binding pre-provisioning hook (src/hooks/claim_binding.py).

Run: .venv/bin/python -m unittest discover -s src/hooks -p 'test_*.py'

Certificates are made with the `cryptography` package (tests only; the handler reads DER
itself) or, for encodings cryptography will not write, by hand. AWS IoT (DescribeCertificate,
ListAttachedPolicies) is a fake client injected with claim_binding.set_iot_client; one class
(WithBotocore) runs the hook's real boto3 client against moto in process.
"""

import base64
import contextlib
import datetime as dt
import hashlib
import importlib.util
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
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

CLAIM_POLICY = "GreengrassProvisioningClaimPolicy"
CORE_POLICY = "GreengrassV2IoTThingPolicy"
TEMPLATE_ARN = "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/T"
CERT_ARN_PREFIX = "arn:aws:iot:us-east-1:123456789012:cert/"


class FakeIot:
    """DescribeCertificate and ListAttachedPolicies, as botocore's client calls them. Calls come
    from the hook's worker threads."""

    def __init__(self):
        self.certs = {}
        self.attached = {}  # certificate ARN -> attached policy names, in order
        self.pems = []  # every claim PEM handed out, for the log checks
        self.error = None  # raised by describe_certificate
        self.list_error = None  # raised by list_attached_policies
        self.page_size = None  # serve pages smaller than asked (pagination tests)
        self.delay = {}  # operation -> seconds it blocks (until self.release is set)
        self.release = threading.Event()
        self.barrier = None  # a threading.Barrier both operations must reach (concurrency test)
        self.calls = []
        self.lock = threading.Lock()

    def add(self, der, status="ACTIVE", policies=(CLAIM_POLICY,), arn_prefix=CERT_ARN_PREFIX):
        cid = cert_id(der)
        self.certs[cid] = {
            "certificateId": cid,
            "certificateArn": arn_prefix + cid,
            "status": status,
            "certificatePem": to_pem(der),
        }
        self.attached[arn_prefix + cid] = list(policies)
        self.pems.append(to_pem(der))
        return cid

    def _enter(self, call):
        with self.lock:
            self.calls.append(call)
        if self.barrier is not None:
            self.barrier.wait()  # BrokenBarrierError (a failed lookup) unless both run at once
        delay = self.delay.get(call[0])
        if delay:
            self.release.wait(delay)

    def describe_certificate(self, certificateId):
        self._enter(("DescribeCertificate", certificateId))
        if self.error is not None:
            raise self.error
        if certificateId not in self.certs:
            raise client_error("ResourceNotFoundException")
        return {"certificateDescription": dict(self.certs[certificateId])}

    def list_attached_policies(self, target, pageSize=None, marker=None, recursive=None):
        self._enter(("ListAttachedPolicies", target, pageSize, marker))
        if self.list_error is not None:
            raise self.list_error
        names = self.attached.get(target, [])
        size = min(pageSize or 25, self.page_size or 250)
        start = int(marker) if marker else 0
        answer = {
            "policies": [
                {"policyName": n, "policyArn": f"arn:aws:iot:us-east-1:123456789012:policy/{n}"}
                for n in names[start : start + size]
            ]
        }
        if start + size < len(names):
            answer["nextMarker"] = str(start + size)
        return answer

    def operations(self, name):
        with self.lock:
            return [call[1:] for call in self.calls if call[0] == name]


def client_error(code, operation="DescribeCertificate"):
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"}}, operation)


DEVICE_DER = make_cert([cn("new-device-cert")])
DEVICE_PEM = to_pem(DEVICE_DER)
LOG_FIELDS = {
    "decision", "reason", "detail", "claimCertificateId", "certificateId", "thingName", "clientId",
    "claimCommonName", "claimPolicies",
}


def event(claim_id, thing_name="gg-1", **extra):
    ev = {
        "claimCertificateId": claim_id,
        "certificateId": cert_id(DEVICE_DER),
        "certificatePem": DEVICE_PEM,
        "templateArn": TEMPLATE_ARN,
        "clientId": "gg-1",
        "parameters": {"ThingName": thing_name, "ThingGroupName": "factory-a"},
    }
    if thing_name is None:
        del ev["parameters"]["ThingName"]
    ev.update(extra)
    return ev


class Context:
    """Lambda's context object, as far as the hook uses it."""

    def __init__(self, remaining):
        self.remaining = remaining

    def get_remaining_time_in_millis(self):
        if isinstance(self.remaining, Exception):
            raise self.remaining
        return self.remaining


class HookCase(unittest.TestCase):
    def setUp(self):
        self.iot = FakeIot()
        claim_binding.set_iot_client(self.iot)
        env = mock.patch.dict(os.environ)
        env.start()
        os.environ.pop(claim_binding.ALLOW_SHARED_ENV, None)
        os.environ[claim_binding.CLAIM_POLICIES_ENV] = CLAIM_POLICY
        self.addCleanup(env.stop)
        self.addCleanup(claim_binding.set_iot_client, None)
        self.addCleanup(self.iot.release.set)  # runs first: frees any worker a test blocked

    def invoke(self, ev, context=None, fields=LOG_FIELDS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            answer = claim_binding.handler(ev, context)
        text = out.getvalue()
        lines = text.splitlines()
        self.assertEqual(len(lines), 1, text)
        record = json.loads(lines[0])
        self.assertEqual(set(record), fields)
        self.assertNotIn("BEGIN CERTIFICATE", text)
        self.assertNotIn("-----", text)
        for pem in [DEVICE_PEM] + self.iot.pems:
            body = "".join(pem.splitlines()[1:-1])
            self.assertNotIn(body[:40], text)
            self.assertNotIn(body[-40:], text)
        self.assertEqual(set(answer), {"allowProvisioning"})
        self.assertIs(answer["allowProvisioning"], record["decision"] == "allow")
        return answer["allowProvisioning"], record

    def claim(self, *attributes, status="ACTIVE", policies=(CLAIM_POLICY,)):
        return self.iot.add(make_cert(list(attributes)), status, policies)

    def assertDenied(self, ev, reason, context=None):
        allowed, record = self.invoke(ev, context)
        self.assertFalse(allowed, record)
        self.assertEqual(record["reason"], reason, record)
        return record


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
        self.assertEqual(record["claimCommonName"], "gg-1")
        self.assertEqual(record["claimPolicies"], [CLAIM_POLICY])
        self.assertEqual(self.iot.operations("DescribeCertificate"), [(cid,)])
        self.assertEqual(self.iot.operations("ListAttachedPolicies"), [(CERT_ARN_PREFIX + cid, 250, None)])

    def test_claim_of_another_device_refused(self):
        cid = self.claim(cn("gg-1"))
        record = self.assertDenied(event(cid, "gg-2"), "claim_bound_to_other_thing")
        self.assertEqual(record["claimCommonName"], "gg-1")
        self.assertEqual(record["thingName"], "gg-2")
        self.assertEqual(record["claimPolicies"], [CLAIM_POLICY])

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
                self.assertDenied(ev, "no_thing_name")
        self.assertEqual(self.iot.calls, [], "no AWS call without a thing name")

    def test_invalid_thing_name(self):
        cid = self.claim(cn("gg 1"))
        for name in ("", "gg 1", "a" * 129, "gg/1", "gg-1\n"):
            with self.subTest(name=name):
                self.assertDenied(event(cid, name), "invalid_thing_name")

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
        record = self.assertDenied(event(cid, "gg-1"), "unreadable_claim_subject")
        self.assertIn("0 Common Names", record["detail"])
        self.assertEqual(record["claimPolicies"], [CLAIM_POLICY])

    def test_empty_subject(self):
        cid = self.iot.add(make_cert(x509.Name([])))
        self.assertDenied(event(cid, "gg-1"), "unreadable_claim_subject")

    def test_two_common_names_refused(self):
        for first, second in (("gg-1", "gg-2"), ("gg-1", "gg-1")):
            with self.subTest(cns=(first, second)):
                cid = self.claim(cn(first), cn(second))
                record = self.assertDenied(event(cid, "gg-1"), "unreadable_claim_subject")
                self.assertIn("2 Common Names", record["detail"])

    def test_aws_default_subject(self):
        cid = self.claim(cn("AWS IoT Certificate"))
        record = self.assertDenied(event(cid, "gg-1"), "no_csr_subject")
        self.assertIn("AWS did not keep a CSR subject", record["detail"])

    def test_shared_claim_refused_by_default(self):
        cid = self.claim(cn("GreengrassFleet claim"))
        for value in (None, "false", "1", "yes", ""):
            with self.subTest(env=value):
                os.environ.pop(claim_binding.ALLOW_SHARED_ENV, None)
                if value is not None:
                    os.environ[claim_binding.ALLOW_SHARED_ENV] = value
                self.assertDenied(event(cid, "gg-1"), "shared_claim")

    def test_shared_claim_allowed_with_env(self):
        os.environ[claim_binding.ALLOW_SHARED_ENV] = "true"
        cid = self.claim(cn("GreengrassFleet claim"))
        for name in ("gg-1", "gg-2"):
            allowed, record = self.invoke(event(cid, name))
            self.assertTrue(allowed)
            self.assertEqual(record["reason"], "shared_claim_allowed")
            self.assertIn("binding does not apply", record["detail"])
            self.assertEqual(record["claimPolicies"], [CLAIM_POLICY])
        self.assertFalse(self.invoke(event(cid, "GreengrassFleet claim"))[0], "still a valid thing name only")
        self.assertFalse(self.invoke(event(cid, None))[0])

    def test_shared_claim_must_carry_a_claim_policy(self):
        os.environ[claim_binding.ALLOW_SHARED_ENV] = "true"
        cid = self.claim(cn("GreengrassFleet claim"), policies=(CORE_POLICY,))
        self.assertDenied(event(cid, "gg-1"), "not_a_claim")

    def test_env_does_not_loosen_device_claims(self):
        os.environ[claim_binding.ALLOW_SHARED_ENV] = "true"
        cid = self.claim(cn("gg-1"))
        self.assertFalse(self.invoke(event(cid, "gg-2"))[0])
        self.assertFalse(self.invoke(event(self.claim(cn("AWS IoT Certificate")), "gg-2"))[0])

    def test_claim_not_active(self):
        for status in ("INACTIVE", "REVOKED", "PENDING_TRANSFER", "PENDING_ACTIVATION", None):
            with self.subTest(status=status):
                cid = self.claim(cn("gg-1"), status=status)
                record = self.assertDenied(event(cid, "gg-1"), "claim_not_active")
                self.assertIsNone(record["claimPolicies"])

    def test_not_active_is_checked_before_the_policies(self):
        cid = self.claim(cn("gg-1"), status="REVOKED", policies=())
        self.assertDenied(event(cid, "gg-1"), "claim_not_active")

    def test_describe_certificate_errors(self):
        cid = self.claim(cn("gg-1"))
        for code in ("ThrottlingException", "AccessDeniedException", "ResourceNotFoundException", "InternalFailureException"):
            with self.subTest(code=code):
                self.iot.error = client_error(code)
                record = self.assertDenied(event(cid, "gg-1"), "describe_certificate_failed")
                self.assertIn(code, record["detail"])
        self.iot.error = TimeoutError("read timed out")
        record = self.assertDenied(event(cid, "gg-1"), "describe_certificate_failed")
        self.assertIn("TimeoutError", record["detail"])

    def test_unknown_claim(self):
        record = self.assertDenied(event("ab" * 32, "gg-1"), "describe_certificate_failed")
        self.assertIn("ResourceNotFoundException", record["detail"])

    def test_odd_describe_answers(self):
        cid = self.claim(cn("gg-1"))
        for description in ({}, {"status": "ACTIVE"}, {"status": "ACTIVE", "certificatePem": 7}, {"status": "ACTIVE", "certificatePem": ""}):
            with self.subTest(description=description):
                self.iot.certs[cid] = description
                self.assertFalse(self.invoke(event(cid, "gg-1"))[0])
        for answer in ({"nothing": 1}, None, {"certificateDescription": None}, {"certificateDescription": "ACTIVE"}):
            with self.subTest(answer=answer):
                self.iot.describe_certificate = lambda certificateId, answer=answer: answer
                self.assertDenied(event(cid, "gg-1"), "describe_certificate_failed")

    def test_bad_events(self):
        cid = self.claim(cn("gg-1"))
        for ev in (None, [], "x", {}, event(None), event(7), event("not-an-id"), event(cid.upper()), event(cid + "\n")):
            with self.subTest(ev=ev if not isinstance(ev, dict) else ev.get("claimCertificateId")):
                self.assertFalse(self.invoke(ev)[0])
        self.assertEqual(self.iot.calls, [])

    def test_log_fields_bounded_and_json(self):
        cid = self.claim(cn("gg-1"))
        allowed, record = self.invoke(event(cid, "gg-1", clientId="c" * 5000))
        self.assertTrue(allowed)
        self.assertEqual(record["clientId"], "<5000 characters, not shown>")
        allowed, record = self.invoke(event(cid, "gg-1", clientId={"x": DEVICE_PEM}))
        self.assertEqual(record["clientId"], "<dict>")
        allowed, record = self.invoke(event(cid, "gg-1", clientId="c" * 128))
        self.assertEqual(record["clientId"], "c" * 128)
        for client_id in ("gg-1\n{\"decision\": \"allow\"}", "a\tb", "x-----y"):
            with self.subTest(client_id=client_id):
                allowed, record = self.invoke(event(cid, "gg-1", clientId=client_id))
                self.assertEqual(record["clientId"], f"<{len(client_id)} characters, not shown>")
        allowed, record = self.invoke(event(cid, "gg-1", certificateId="not an id"))
        self.assertEqual(record["certificateId"], "<9 characters, not shown>")

    def test_unexpected_exception_denies(self):
        cid = self.claim(cn("gg-1"))
        with mock.patch.object(claim_binding, "common_name", side_effect=RuntimeError("boom")):
            record = self.assertDenied(event(cid, "gg-1"), "internal_error")
        self.assertEqual(record["detail"], "hook error: RuntimeError")


# -- the claim policy: only a claim is admitted (issue 15) -----------------------------------


class ClaimPolicy(HookCase):
    def test_attack_certificate_minted_with_a_claim_is_not_a_claim(self):
        """Issue 15: the holder of device A's genuine claim asks CreateCertificateFromCsr for a
        certificate C2 with CN=<victim>, registers C2 as its own thing A (C2 then carries the
        template's core policy only), reconnects with C2 and asks for thing <victim>."""
        claim_a = self.claim(cn("gg-a"))
        c2_der = make_cert([cn("gg-victim")])
        # Step 1: RegisterThing for A, with A's claim (certificateId C2): the genuine flow.
        allowed, record = self.invoke(event(claim_a, "gg-a", certificateId=cert_id(c2_der), clientId="gg-a"))
        self.assertTrue(allowed)
        self.assertEqual(record["reason"], "claim_matches_thing")
        # The template made C2 a device certificate: it carries the core policy, not the claim's.
        c2 = self.iot.add(c2_der, policies=(CORE_POLICY,))
        # Step 2: C2 presented as a claim, for the victim's thing name: refused.
        allowed, record = self.invoke(event(c2, "gg-victim", clientId="gg-victim"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "not_a_claim")
        self.assertEqual(record["thingName"], "gg-victim")
        self.assertEqual(record["claimCertificateId"], c2)
        self.assertIsNone(record["claimPolicies"])
        self.assertIn("it has 1 attached policy", record["detail"])
        self.assertNotIn(CORE_POLICY, json.dumps(record))

    def test_not_a_claim_whatever_else_it_carries(self):
        for policies, count in (((), "0 attached policies"), ((CORE_POLICY, "Other"), "2 attached policies"),
                                ((CLAIM_POLICY.lower(), CLAIM_POLICY + "2", " " + CLAIM_POLICY), "3 attached policies")):
            with self.subTest(policies=policies):
                cid = self.claim(cn("gg-1"), policies=policies)
                record = self.assertDenied(event(cid, "gg-1"), "not_a_claim")
                self.assertIn(count, record["detail"])
                self.assertIsNone(record["claimCommonName"])

    def test_any_configured_claim_policy_marks_a_claim(self):
        os.environ[claim_binding.CLAIM_POLICIES_ENV] = f" Other , {CLAIM_POLICY},Third "
        cid = self.claim(cn("gg-1"), policies=(CORE_POLICY, "Third", CLAIM_POLICY))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertTrue(allowed)
        self.assertEqual(record["claimPolicies"], sorted([CLAIM_POLICY, "Third"]))

    def test_claim_policy_on_a_later_page(self):
        self.iot.page_size = 2
        cid = self.claim(cn("gg-1"), policies=(CORE_POLICY, "Other", CLAIM_POLICY))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertTrue(allowed, record)
        self.assertEqual(record["claimPolicies"], [CLAIM_POLICY])
        arn = CERT_ARN_PREFIX + cid
        self.assertEqual(self.iot.operations("ListAttachedPolicies"), [(arn, 250, None), (arn, 250, "2")])

    def test_policy_pages_are_capped(self):
        self.iot.page_size = 1
        cid = self.claim(cn("gg-1"), policies=("P1", "P2", "P3", "P4", CLAIM_POLICY))
        record = self.assertDenied(event(cid, "gg-1"), "list_attached_policies_failed")
        self.assertIn("more than 4 pages", record["detail"])
        self.assertEqual(len(self.iot.operations("ListAttachedPolicies")), claim_binding.MAX_POLICY_PAGES)
        cid = self.claim(cn("gg-2"), policies=("P1", "P2", "P3", CLAIM_POLICY))
        self.assertTrue(self.invoke(event(cid, "gg-2"))[0], "exactly MAX_POLICY_PAGES pages is fine")

    def test_list_attached_policies_errors(self):
        cid = self.claim(cn("gg-1"))
        for code in ("AccessDeniedException", "ThrottlingException", "ResourceNotFoundException", "UnauthorizedException"):
            with self.subTest(code=code):
                self.iot.list_error = client_error(code, "ListAttachedPolicies")
                record = self.assertDenied(event(cid, "gg-1"), "list_attached_policies_failed")
                self.assertIn(code, record["detail"])
                self.assertIn("ListAttachedPolicies", record["detail"])
        self.iot.list_error = ConnectionResetError()
        record = self.assertDenied(event(cid, "gg-1"), "list_attached_policies_failed")
        self.assertIn("ConnectionResetError", record["detail"])

    def test_odd_list_answers(self):
        cid = self.claim(cn("gg-1"))
        for answer in (None, {}, {"policies": None}, {"policies": "x"}, {"policies": [None]},
                       {"policies": [{"policyArn": "arn"}]}, {"policies": [{"policyName": 7}]},
                       {"policies": [], "nextMarker": 7}):
            with self.subTest(answer=answer):
                self.iot.list_attached_policies = lambda answer=answer, **kw: answer
                self.assertDenied(event(cid, "gg-1"), "list_attached_policies_failed")

    def test_describe_failure_is_reported_before_a_missing_claim_policy(self):
        cid = self.claim(cn("gg-1"), policies=())
        self.iot.error = client_error("AccessDeniedException")
        self.assertDenied(event(cid, "gg-1"), "describe_certificate_failed")

    def test_lookups_run_concurrently(self):
        self.iot.barrier = threading.Barrier(2, timeout=2)  # each call waits for the other
        cid = self.claim(cn("gg-1"))
        allowed, record = self.invoke(event(cid, "gg-1"))
        self.assertTrue(allowed, record)

    def test_claim_arn_comes_from_the_template_arn(self):
        prefix = "arn:aws-cn:iot:cn-north-1:210987654321:cert/"
        cid = self.iot.add(make_cert([cn("gg-1")]), arn_prefix=prefix)
        template = "arn:aws-cn:iot:cn-north-1:210987654321:provisioningtemplate/Fleet_1-a"
        self.assertTrue(self.invoke(event(cid, "gg-1", templateArn=template))[0])
        self.assertEqual(self.iot.operations("ListAttachedPolicies"), [(prefix + cid, 250, None)])

    def test_claim_arn_must_match_the_certificate(self):
        cid = self.iot.add(make_cert([cn("gg-1")]), arn_prefix="arn:aws:iot:us-east-1:111111111111:cert/")
        self.iot.attached[CERT_ARN_PREFIX + cid] = [CLAIM_POLICY]  # the derived ARN is a claim
        record = self.assertDenied(event(cid, "gg-1"), "bad_event")
        self.assertIn("ARN", record["detail"])

    def test_bad_template_arns(self):
        cid = self.claim(cn("gg-1"))
        for arn in (None, 7, ["arn"], "", "x" * 1_000_000,
                    "arn:aws:iot:us-east-1:123456789012:thing/T",
                    "arn:aws:lambda:us-east-1:123456789012:provisioningtemplate/T",
                    "arn:aws:iot:us-east-1:12345:provisioningtemplate/T",
                    "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/",
                    "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/T/x",
                    "arn:aws:iot:us-east-1:123456789012:provisioningtemplate/" + "T" * 37,
                    TEMPLATE_ARN + "\n", " " + TEMPLATE_ARN, "arn:aws:iot::123456789012:provisioningtemplate/T"):
            with self.subTest(arn=arn if not isinstance(arn, str) else arn[:80]):
                record = self.assertDenied(event(cid, "gg-1", templateArn=arn), "bad_event")
                self.assertIn("templateArn", record["detail"])
        self.assertDenied({k: v for k, v in event(cid, "gg-1").items() if k != "templateArn"}, "bad_event")
        self.assertEqual(self.iot.calls, [])


# -- configuration, the client, the deadline ------------------------------------------------


class Configuration(HookCase):
    def test_claim_policies_missing_or_invalid(self):
        cid = self.claim(cn("gg-1"))
        for value in (None, "", " ", ",", " , ,", "bad name", f"{CLAIM_POLICY},bad/name", "x" * 129):
            with self.subTest(value=value):
                os.environ.pop(claim_binding.CLAIM_POLICIES_ENV, None)
                if value is not None:
                    os.environ[claim_binding.CLAIM_POLICIES_ENV] = value
                record = self.assertDenied(event(cid, "gg-1"), "hook_misconfigured")
                self.assertIn(claim_binding.CLAIM_POLICIES_ENV, record["detail"])
        self.assertEqual(self.iot.calls, [], "no AWS call when misconfigured")

    def test_event_checked_before_configuration(self):
        os.environ.pop(claim_binding.CLAIM_POLICIES_ENV)
        self.assertDenied(event("ab" * 32, "gg 1"), "invalid_thing_name")

    def test_client_unavailable(self):
        claim_binding.set_iot_client(None)
        with mock.patch.object(claim_binding, "_make_iot_client", side_effect=RuntimeError("no region")) as make:
            record = self.assertDenied(event("ab" * 32, "gg-1"), "iot_client_unavailable")
            self.assertIn("RuntimeError", record["detail"])
            self.assertEqual(make.call_count, 1)
            self.assertDenied(event("ab" * 32, "gg-1"), "iot_client_unavailable")
            self.assertEqual(make.call_count, 2, "tried again at the next invocation")

    def test_client_made_again_after_a_failure_at_import(self):
        claim_binding.set_iot_client(None)
        claim_binding._iot_failure = "NoRegionError"  # as when making it at import failed
        cid = self.claim(cn("gg-1"))
        with mock.patch.object(claim_binding, "_make_iot_client", return_value=self.iot) as make:
            self.assertTrue(self.invoke(event(cid, "gg-1"))[0])
            self.assertTrue(self.invoke(event(cid, "gg-1"))[0])
        self.assertEqual(make.call_count, 1, "made once, then kept")
        claim_binding.set_iot_client(None)
        claim_binding._iot_failure = "NoRegionError"
        with mock.patch.object(claim_binding, "_make_iot_client", side_effect=ValueError("still none")):
            record = self.assertDenied(event(cid, "gg-1"), "iot_client_unavailable")
        self.assertIn("ValueError", record["detail"])
        self.assertIn("NoRegionError", record["detail"])


class Deadline(HookCase):
    def setUp(self):
        super().setUp()
        self.cid = self.claim(cn("gg-1"))

    def timed(self, ev, context=None):
        started = time.monotonic()
        allowed, record = self.invoke(ev, context)
        return time.monotonic() - started, allowed, record

    def test_slow_describe_certificate(self):
        self.iot.delay["DescribeCertificate"] = 30
        with mock.patch.object(claim_binding, "DECISION_DEADLINE_S", 0.2):
            elapsed, allowed, record = self.timed(event(self.cid, "gg-1"))
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "deadline_exceeded")
        self.assertIn("DescribeCertificate", record["detail"])
        self.assertNotIn("ListAttachedPolicies", record["detail"])
        self.assertGreaterEqual(elapsed, 0.2)
        self.assertLess(elapsed, 1.5)

    def test_slow_list_attached_policies(self):
        self.iot.delay["ListAttachedPolicies"] = 30
        with mock.patch.object(claim_binding, "DECISION_DEADLINE_S", 0.2):
            elapsed, allowed, record = self.timed(event(self.cid, "gg-1"))
        self.assertEqual(record["reason"], "deadline_exceeded")
        self.assertIn("ListAttachedPolicies", record["detail"])
        self.assertLess(elapsed, 1.5)

    def test_default_deadline_is_three_seconds(self):
        self.assertEqual(claim_binding.DECISION_DEADLINE_S, 3.0)
        self.assertEqual(claim_binding.REMAINING_TIME_MARGIN_S, 0.25)

    def test_lambda_remaining_time_shortens_the_deadline(self):
        self.iot.delay["DescribeCertificate"] = 30
        elapsed, allowed, record = self.timed(event(self.cid, "gg-1"), Context(450))  # 0.2 s left
        self.assertEqual(record["reason"], "deadline_exceeded")
        self.assertIn("0.20 s", record["detail"])
        self.assertLess(elapsed, 1.5)

    def test_no_time_left_makes_no_call(self):
        for remaining in (250, 100, 0, -5):
            with self.subTest(remaining=remaining):
                self.assertDenied(event(self.cid, "gg-1"), "deadline_exceeded", Context(remaining))
        self.assertEqual(self.iot.calls, [])

    def test_unusable_context_clock_keeps_the_fixed_deadline(self):
        for remaining in (RuntimeError("x"), "100", None, float("nan"), True, [1]):
            with self.subTest(remaining=remaining):
                self.assertTrue(self.invoke(event(self.cid, "gg-1"), Context(remaining))[0])
        self.assertTrue(self.invoke(event(self.cid, "gg-1"), object())[0])
        self.assertTrue(self.invoke(event(self.cid, "gg-1"), Context(5000))[0])

    def test_answers_in_time_when_a_worker_is_still_busy(self):
        """A lookup abandoned at one invocation's deadline keeps a worker; the next invocation
        still answers by its own deadline."""
        self.iot.delay["DescribeCertificate"] = 30
        with mock.patch.object(claim_binding, "DECISION_DEADLINE_S", 0.2):
            for _ in range(3):
                elapsed, allowed, record = self.timed(event(self.cid, "gg-1"))
                self.assertEqual(record["reason"], "deadline_exceeded")
                self.assertLess(elapsed, 1.5)
        self.iot.release.set()
        del self.iot.delay["DescribeCertificate"]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the released workers drain the queue
            if self.invoke(event(self.cid, "gg-1"))[0]:
                break
        else:
            self.fail("never admitted again after the slow calls ended")


# -- hostile events ------------------------------------------------------------------------


class HostileDict(dict):
    def get(self, *args):
        raise RuntimeError("hostile")


class Hostile(HookCase):
    def test_non_objects(self):
        for ev in (None, [], [event("ab" * 32)], "x", 7, 1.5, True, b"{}", object()):
            with self.subTest(ev=type(ev).__name__):
                self.assertDenied(ev, "bad_event")
        self.assertEqual(self.iot.calls, [])

    def test_huge_strings(self):
        huge = "a" * 5_000_000
        cid = self.claim(cn("gg-1"))
        started = time.monotonic()
        self.assertDenied(event(cid, huge), "invalid_thing_name")
        self.assertDenied(event(huge, "gg-1"), "bad_event")
        self.assertDenied(event(cid, "gg-1", templateArn=TEMPLATE_ARN + huge), "bad_event")
        allowed, record = self.invoke(event(cid, "gg-1", clientId=huge, certificateId=huge, certificatePem=huge))
        self.assertTrue(allowed, "fields the hook does not use do not matter")
        self.assertLess(len(json.dumps(record)), 2000)
        self.assertLess(time.monotonic() - started, 5)

    def test_wrong_types(self):
        cid = self.claim(cn("gg-1"))
        for change in ({"parameters": "ThingName=gg-1"}, {"parameters": 7}, {"claimCertificateId": [cid]},
                       {"claimCertificateId": {"id": cid}}, {"templateArn": {"arn": TEMPLATE_ARN}},
                       {"parameters": {"ThingName": b"gg-1"}}, {"claimCertificateId": cid.encode()}):
            with self.subTest(change=change):
                self.assertFalse(self.invoke(event(cid, "gg-1", **change))[0])
        allowed, record = self.invoke(event(cid, "gg-1", clientId=["gg-1"], certificateId=7))
        self.assertTrue(allowed)
        self.assertEqual((record["clientId"], record["certificateId"]), ("<list>", "<int>"))

    def test_pem_smuggled_into_fields_is_not_logged(self):
        cid = self.claim(cn("gg-1"))
        one_line = DEVICE_PEM.replace("\n", "")
        for change in ({"clientId": DEVICE_PEM}, {"clientId": one_line}, {"certificateId": DEVICE_PEM},
                       {"parameters": {"ThingName": DEVICE_PEM}}, {"claimCertificateId": DEVICE_PEM}):
            with self.subTest(field=list(change)):
                self.invoke(event(cid, "gg-1", **change))  # invoke checks that no PEM is logged
        pem_cn = self.claim(cn(one_line[:120]))  # a subject CN chosen to look like a PEM
        self.invoke(event(pem_cn, "gg-1"))

    def test_object_that_fails_when_read(self):
        allowed, record = self.invoke(HostileDict(event("ab" * 32)), fields={"decision", "reason", "detail"})
        self.assertFalse(allowed)
        self.assertEqual(record["reason"], "internal_error")

    def test_handler_never_raises_even_without_stdout(self):
        cid = self.claim(cn("gg-1"))
        with mock.patch("builtins.print", side_effect=OSError("stdout closed")):
            self.assertEqual(claim_binding.handler(event(cid, "gg-1"), None), {"allowProvisioning": True})
            self.assertEqual(claim_binding.handler(None, None), {"allowProvisioning": False})


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


def clean_aws_env(**extra):
    """The current environment without AWS settings (no region, no profile), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true")
    env.update(extra)
    return env


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

    def run_fresh(self, env, extra=""):
        script = (
            "import sys; sys.path.insert(0, sys.argv[1])\n"
            "assert 'boto3' not in sys.modules\n"
            "import claim_binding as h\n"
            "print(h._iot is not None, h._iot_failure, 'boto3' in sys.modules)\n" + extra
        )
        out = subprocess.run([sys.executable, "-c", script, str(HERE)], capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.splitlines()

    def test_client_made_at_import(self):
        env = clean_aws_env(AWS_REGION="eu-west-3", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                            AWS_ENDPOINT_URL="http://127.0.0.1:1")
        lines = self.run_fresh(env, "print(h._iot.meta.region_name, h._iot.meta.endpoint_url)\n")
        self.assertEqual(lines, ["True None True", "eu-west-3 http://127.0.0.1:1"])

    def test_failure_at_import_remembered_and_denied(self):
        env = clean_aws_env(**{claim_binding.CLAIM_POLICIES_ENV: CLAIM_POLICY})
        extra = (
            "import json\n"
            f"ev = {{'claimCertificateId': 'ab' * 32, 'templateArn': {TEMPLATE_ARN!r}, 'parameters': {{'ThingName': 'gg-1'}}}}\n"
            "print(json.dumps(h.handler(ev, None)))\n"
        )
        lines = self.run_fresh(env, extra)
        self.assertEqual(lines[0], "False NoRegionError True")
        record = json.loads(lines[1])
        self.assertEqual(record["reason"], "iot_client_unavailable")
        self.assertIn("NoRegionError", record["detail"])
        self.assertEqual(json.loads(lines[2]), {"allowProvisioning": False})

    def test_client_config(self):
        env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        with mock.patch.dict(os.environ, env):
            client = claim_binding._make_iot_client()
        config = client.meta.config
        self.assertEqual((config.connect_timeout, config.read_timeout), (0.5, 1.0))
        self.assertEqual(config.retries, {"total_max_attempts": 2, "mode": "standard"})

    def test_client_made_once_and_honours_endpoint_env(self):
        env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_REGION": "eu-west-3", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", claim_binding.CLAIM_POLICIES_ENV: CLAIM_POLICY}
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
            # Both lookups fail; the first to fail is reported.
            self.assertIn(record["reason"], ("describe_certificate_failed", "list_attached_policies_failed"))
            self.assertIn("EndpointConnectionError", record["detail"])


class SilentServer:
    """A TCP server that accepts connections and never answers (an AWS endpoint that hangs)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in list(self.conns):
            conn.close()


def drain_pool():
    """Wait until both of the hook's workers are free (abandoned lookups have ended)."""
    both = threading.Barrier(2, timeout=10)
    for future in [claim_binding._pool.submit(both.wait) for _ in range(2)]:
        future.result(timeout=15)


class RealClientDeadline(unittest.TestCase):
    def test_hanging_endpoint_denied_at_the_deadline(self):
        server = SilentServer()
        self.addCleanup(drain_pool)
        self.addCleanup(server.close)  # the abandoned calls then fail fast
        self.addCleanup(claim_binding.set_iot_client, None)
        env = {"AWS_ENDPOINT_URL": server.url, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", claim_binding.CLAIM_POLICIES_ENV: CLAIM_POLICY}
        with mock.patch.dict(os.environ, env), mock.patch.object(claim_binding, "DECISION_DEADLINE_S", 0.3):
            claim_binding.set_iot_client(claim_binding._make_iot_client())
            out = io.StringIO()
            started = time.monotonic()
            with contextlib.redirect_stdout(out):
                answer = claim_binding.handler(event("ab" * 32, "gg-1"), None)
            elapsed = time.monotonic() - started
        self.assertEqual(answer, {"allowProvisioning": False})
        record = json.loads(out.getvalue())
        self.assertEqual(record["reason"], "deadline_exceeded")
        self.assertIn("DescribeCertificate, ListAttachedPolicies", record["detail"])
        self.assertLess(elapsed, 0.9, "answered at the deadline, before the 1 s read timeout")


@unittest.skipUnless(importlib.util.find_spec("moto"), "moto is not installed")
class WithBotocore(unittest.TestCase):
    """The hook's real client (botocore's parameter validation, serialization and paging)
    against moto's AWS IoT, in process."""

    def setUp(self):
        import boto3
        from moto import mock_aws

        env = mock.patch.dict(os.environ, {"AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                                           "AWS_SECRET_ACCESS_KEY": "testing", claim_binding.CLAIM_POLICIES_ENV: CLAIM_POLICY})
        env.start()
        self.addCleanup(env.stop)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        aws = mock_aws()
        aws.start()
        self.addCleanup(aws.stop)
        self.iot = boto3.client("iot", region_name="us-east-1")
        claim_binding.set_iot_client(claim_binding._make_iot_client())
        self.addCleanup(claim_binding.set_iot_client, None)
        for name in (CLAIM_POLICY, CORE_POLICY):
            self.iot.create_policy(policyName=name, policyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}]}))

    def certificate(self, name, policy):
        made = self.iot.register_certificate_without_ca(certificatePem=to_pem(make_cert([cn(name)])), status="ACTIVE")
        self.iot.attach_policy(policyName=policy, target=made["certificateArn"])
        return made["certificateId"]

    def decide(self, claim_id, thing_name):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            answer = claim_binding.handler(event(claim_id, thing_name), None)
        return answer["allowProvisioning"], json.loads(out.getvalue())["reason"]

    def test_claim_and_device_certificate(self):
        claim = self.certificate("gg-1", CLAIM_POLICY)
        minted = self.certificate("gg-victim", CORE_POLICY)
        self.assertEqual(self.decide(claim, "gg-1"), (True, "claim_matches_thing"))
        self.assertEqual(self.decide(claim, "gg-2"), (False, "claim_bound_to_other_thing"))
        self.assertEqual(self.decide(minted, "gg-victim"), (False, "not_a_claim"))
        self.iot.detach_policy(policyName=CLAIM_POLICY, target=f"{CERT_ARN_PREFIX}{claim}")
        self.assertEqual(self.decide(claim, "gg-1"), (False, "not_a_claim"), "detaching takes effect at once")
        self.iot.attach_policy(policyName=CLAIM_POLICY, target=f"{CERT_ARN_PREFIX}{claim}")
        self.iot.update_certificate(certificateId=claim, newStatus="REVOKED")
        self.assertEqual(self.decide(claim, "gg-1"), (False, "claim_not_active"))


if __name__ == "__main__":
    unittest.main()
