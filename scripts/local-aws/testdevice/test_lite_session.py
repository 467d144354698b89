"""Unit tests of the test device's model of nucleus lite's fleet-provisioning calls
(testdevice/lite_session.py: request bodies, reply routing by topic suffix, clientToken
skipping, extra answers). No network. Run from the repository root:

    .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from testdevice.lite_session import (
    CREATE_FROM_CSR_TOPIC,
    LiteCall,
    accept_certificate,
    accept_registration,
    csr_request,
    filter_matches,
    register_request,
    register_topic,
    reply_kind,
)
from testdevice.settings import DeviceFailure, Settings

TOPIC = CREATE_FROM_CSR_TOPIC
CERT_BODY = {"certificateId": "abc", "certificatePem": "PEM", "certificateOwnershipToken": "tok"}


def body(obj) -> bytes:
    return json.dumps(obj).encode()


def settings() -> Settings:
    return Settings(nucleus="lite", config_files=[], endpoint="e", port=8883, client_id=None, claim_cert="/c",
                    claim_key="/k", root_ca="/ca", template="T", params={}, method="csr-device",
                    out_cert="/o", out_key="/ok")


class Requests(unittest.TestCase):
    def test_bodies_as_lite_encodes_them(self):
        self.assertEqual(csr_request("-----BEGIN CERTIFICATE REQUEST-----\nX\n"),
                         b'{"certificateSigningRequest":"-----BEGIN CERTIFICATE REQUEST-----\\nX\\n"}')
        self.assertEqual(register_request("tok", {"ThingName": "gg-1"}),
                         b'{"certificateOwnershipToken":"tok","parameters":{"ThingName":"gg-1"}}')
        # parameters always present, no templateName in the body
        self.assertEqual(json.loads(register_request("tok", {})), {"certificateOwnershipToken": "tok", "parameters": {}})
        self.assertEqual(json.loads(register_request("tok", None))["parameters"], {})
        self.assertEqual(register_topic("T"), "$aws/provisioning-templates/T/provision/json")


class Routing(unittest.TestCase):
    def test_filter_is_one_level_under_the_request_topic(self):
        self.assertTrue(filter_matches(TOPIC, TOPIC + "/accepted"))
        self.assertTrue(filter_matches(TOPIC, TOPIC + "/"))
        self.assertFalse(filter_matches(TOPIC, TOPIC))
        self.assertFalse(filter_matches(TOPIC, TOPIC + "/accepted/x"))
        self.assertFalse(filter_matches(TOPIC, "$aws/certificates/create/json/accepted"))
        self.assertFalse(filter_matches(TOPIC, TOPIC + "x/accepted"))

    def test_reply_kinds(self):
        self.assertEqual(reply_kind(TOPIC, "other/accepted", b"{}"), ("unmatched", None))
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/accepted", body(CERT_BODY)), ("accepted", CERT_BODY))
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/accepted", b"not json"), ("unreadable", None))
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/rejected", b"not json"), ("rejected", None))
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/rejected", body({"statusCode": 400}))[0], "rejected")
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/other", b"{}"), ("unexpected", {}))

    def test_a_reply_carrying_a_client_token_is_skipped(self):
        for token in ("t1", "", 7, None):
            with self.subTest(token=token):
                kind, _ = reply_kind(TOPIC, TOPIC + "/accepted", body(dict(CERT_BODY, clientToken=token)))
                self.assertEqual(kind, "client-token")
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/rejected", body({"clientToken": "x"}))[0], "client-token")
        # not a map: no clientToken to read, so it is not skipped
        self.assertEqual(reply_kind(TOPIC, TOPIC + "/accepted", b"[1]"), ("accepted", [1]))


class Calls(unittest.TestCase):
    def create_call(self):
        return LiteCall(TOPIC, "create", accept_certificate("create"))

    def test_accepted_then_extras_counted(self):
        call = self.create_call()
        self.assertEqual(call.filter, TOPIC + "/+")
        self.assertEqual(call.deliver("$aws/things/x/shadow/update", b"{}"), "unmatched")
        self.assertFalse(call.answer.done())
        self.assertEqual(call.deliver(TOPIC + "/accepted", body(dict(CERT_BODY, clientToken="other"))), "client-token")
        self.assertFalse(call.answer.done())
        self.assertEqual(call.deliver(TOPIC + "/accepted", body(CERT_BODY)), "accepted")
        self.assertEqual(call.answer.result().certificate_ownership_token, "tok")
        call.deliver(TOPIC + "/rejected", body({"statusCode": 400}))
        call.deliver(TOPIC + "/accepted", body(CERT_BODY))
        self.assertEqual((call.extra, call.skipped), (2, 1))
        s = settings()
        call.note_warnings(s)
        self.assertEqual(len(s.warnings), 2)
        self.assertIn("2 more CreateCertificateFromCsr answer(s)", s.warnings[0])
        self.assertIn("clientToken", s.warnings[1])

    def test_rejection_keeps_aws_fields(self):
        call = LiteCall(register_topic("T"), "register", accept_registration("register"))
        call.deliver(register_topic("T") + "/rejected",
                     body({"statusCode": 400, "errorCode": "InvalidParameters", "errorMessage": "no ThingName"}))
        with self.assertRaises(DeviceFailure) as caught:
            call.answer.result()
        failure = caught.exception
        self.assertEqual(failure.stage, "register")
        self.assertEqual(failure.rejection, {"status_code": 400, "error_code": "InvalidParameters",
                                             "error_message": "no ThingName"})
        self.assertIn("RegisterThing rejected: 400 InvalidParameters", failure.error)

    def test_what_lite_refuses_fails_the_call(self):
        cases = [
            (TOPIC + "/other", body(CERT_BODY), "takes only"),
            (TOPIC + "/accepted", b"{oops", "unreadable"),
            (TOPIC + "/accepted", b"[]", "not a JSON object"),
            (TOPIC + "/accepted", body({"certificatePem": "PEM"}), "without certificatePem/certificateOwnershipToken"),
            (TOPIC + "/rejected", b"oops", "unreadable message on the rejected topic"),
        ]
        for topic, payload, message in cases:
            with self.subTest(topic=topic, payload=payload):
                call = self.create_call()
                call.deliver(topic, payload)
                with self.assertRaisesRegex(DeviceFailure, message):
                    call.answer.result()

    def test_registration_needs_a_thing_name(self):
        call = LiteCall(register_topic("T"), "register", accept_registration("register"))
        call.deliver(register_topic("T") + "/accepted", body({"deviceConfiguration": {}}))
        with self.assertRaisesRegex(DeviceFailure, "without thingName"):
            call.answer.result()
        call = LiteCall(register_topic("T"), "register", accept_registration("register"))
        call.deliver(register_topic("T") + "/accepted", body({"thingName": "gg-1", "deviceConfiguration": {"a": "b"}}))
        self.assertEqual(call.answer.result().thing_name, "gg-1")


if __name__ == "__main__":
    unittest.main()
