"""Unit tests of the pure parts of the fleet-provisioning service (scripts/local-aws/dataplane/):
whether a Lambda resource policy lets AWS IoT invoke a pre-provisioning hook
(hook_permission._allows_iot), the thing a connection is associated with
(authorizer.connection_thing) and the thing-association check RegisterThing makes before
anything is created (provisioning.Provisioning.check_thing_association, with a stub endpoint)
a certificate's subject as policy variables see it (subject.certificate_subject), and the
ownership tokens (spent once, by the connection they were issued to).

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from dataplane import authorizer, hook_permission, provisioning, subject
from dataplane.endpoint_client import Rejected

ACCOUNT = "123456789012"
FUNCTION = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:hook"
TEMPLATE = f"arn:aws:iot:us-east-1:{ACCOUNT}:provisioningtemplate/T"


def permission(condition=None, principal="iot.amazonaws.com", action="lambda:InvokeFunction"):
    """A resource policy as Lambda's AddPermission writes it (one statement)."""
    st = {"Sid": "iot", "Effect": "Allow", "Principal": {"Service": principal}, "Action": action, "Resource": FUNCTION}
    if condition is not None:
        st["Condition"] = condition
    return json.dumps({"Version": "2012-10-17", "Id": "default", "Statement": [st]})


def allows(policy):
    return hook_permission._allows_iot(policy, FUNCTION, ACCOUNT)


class HookPermission(unittest.TestCase):
    def test_no_condition_matches(self):
        self.assertTrue(allows(permission()))

    def test_source_account_is_checked(self):
        self.assertTrue(allows(permission({"StringEquals": {"AWS:SourceAccount": ACCOUNT}})))
        self.assertFalse(allows(permission({"StringEquals": {"AWS:SourceAccount": "210987654321"}})))
        self.assertTrue(allows(permission({"StringLike": {"aws:SourceAccount": "1234*"}})))
        self.assertFalse(allows(permission({"StringNotEquals": {"aws:SourceAccount": ACCOUNT}})))

    def test_source_arn_is_never_present(self):
        # Even the template's own ARN: AWS documents no SourceArn for hook invocations.
        for operator in ("ArnLike", "ArnEquals", "StringEquals", "StringLike", "ArnNotLike", "Null"):
            with self.subTest(operator=operator):
                self.assertFalse(allows(permission({operator: {"AWS:SourceArn": TEMPLATE}})))
        both = {"StringEquals": {"AWS:SourceAccount": ACCOUNT}, "ArnLike": {"AWS:SourceArn": TEMPLATE}}
        self.assertFalse(allows(permission(both)))

    def test_if_exists_on_source_arn_holds(self):
        self.assertTrue(allows(permission({"ArnLikeIfExists": {"AWS:SourceArn": TEMPLATE}})))

    def test_one_matching_statement_is_enough(self):
        policy = json.loads(permission({"ArnLike": {"AWS:SourceArn": TEMPLATE}}))
        policy["Statement"].append(json.loads(permission({"StringEquals": {"AWS:SourceAccount": ACCOUNT}}))["Statement"][0])
        self.assertTrue(allows(json.dumps(policy)))

    def test_principal_action_and_resource(self):
        self.assertFalse(allows(permission(principal="lambda.amazonaws.com")))
        self.assertFalse(allows(permission(action="lambda:GetFunction")))
        other = json.loads(permission())
        other["Statement"][0]["Resource"] = FUNCTION + "-other"
        self.assertFalse(allows(json.dumps(other)))
        self.assertFalse(allows("not json"))


class ConnectionThing(unittest.TestCase):
    def test_exclusive_thing_whatever_the_client_id(self):
        things = [{"thingName": "gg-1", "thingPrincipalType": "EXCLUSIVE_THING"}]
        self.assertEqual(authorizer.connection_thing(things, "some-uuid"), "gg-1")
        self.assertEqual(authorizer.connection_thing(things, "gg-1"), "gg-1")

    def test_non_exclusive_needs_the_client_id(self):
        things = [{"thingName": "gg-1", "thingPrincipalType": "NON_EXCLUSIVE_THING"}, {"thingName": "gg-2", "thingPrincipalType": "NON_EXCLUSIVE_THING"}]
        self.assertEqual(authorizer.connection_thing(things, "gg-2"), "gg-2")
        self.assertIsNone(authorizer.connection_thing(things, "gg-3"))
        self.assertIsNone(authorizer.connection_thing([], "gg-1"))


class StubIot:
    def __init__(self, things):
        self.things = things

    def list_principal_things_v2(self, principal):
        return {"principalThingObjects": self.things}


class StubEndpoint:
    def __init__(self, things):
        self.iot = StubIot(things)


def check(things, thing, kind):
    prov = provisioning.Provisioning(StubEndpoint(things), "us-east-1", ACCOUNT)
    prov.check_thing_association(f"arn:aws:iot:us-east-1:{ACCOUNT}:cert/{'a' * 64}", thing, kind)


class ThingAssociation(unittest.TestCase):
    def test_unattached_or_same_thing_is_fine(self):
        check([], "gg-1", "EXCLUSIVE_THING")
        check([{"thingName": "gg-1", "thingPrincipalType": "EXCLUSIVE_THING"}], "gg-1", "EXCLUSIVE_THING")
        check([{"thingName": "gg-2", "thingPrincipalType": "NON_EXCLUSIVE_THING"}], "gg-1", "NON_EXCLUSIVE_THING")

    def test_exclusively_attached_elsewhere_is_rejected(self):
        with self.assertRaises(Rejected) as e:
            check([{"thingName": "gg-2", "thingPrincipalType": "EXCLUSIVE_THING"}], "gg-1", "NON_EXCLUSIVE_THING")
        self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidRequest"))

    def test_exclusive_attach_of_a_shared_certificate_is_rejected(self):
        with self.assertRaises(Rejected) as e:
            check([{"thingName": "gg-2", "thingPrincipalType": "NON_EXCLUSIVE_THING"}], "gg-1", "EXCLUSIVE_THING")
        self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidRequest"))
        self.assertIn("gg-2", e.exception.message)


class OwnershipTokens(unittest.TestCase):
    """A token is spent once, by the connection it was issued to."""

    def setUp(self):
        self.prov = provisioning.Provisioning(StubEndpoint([]), "us-east-1", ACCOUNT)
        self.owner = provisioning.Asker("7", "a" * 64, "dev-1")
        self.token = self.prov.new_token("b" * 64, "PEM", self.owner)

    def refused(self, asker):
        with self.assertRaises(Rejected) as e:
            self.prov.take_token(self.token, asker)
        self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidCertificateOwnershipToken"))

    def test_the_owner_connection_takes_it(self):
        self.assertEqual(self.prov.take_token(self.token, self.owner).certificate_id, "b" * 64)

    def test_another_connection_of_the_same_claim_and_client_id_is_refused(self):
        self.refused(provisioning.Asker("8", "a" * 64, "dev-1"))
        self.refused(provisioning.Asker("7", "c" * 64, "dev-1"))
        self.assertEqual(self.prov.take_token(self.token, self.owner).certificate_id, "b" * 64, "still the owner's")

    def test_two_registrations_at_once_cannot_both_hold_it(self):
        self.prov.take_token(self.token, self.owner)
        self.refused(self.owner)

    def test_a_failed_registration_frees_it_and_a_successful_one_spends_it(self):
        failing = provisioning.Provisioning(StubEndpoint([]), "us-east-1", ACCOUNT)
        token = failing.new_token("b" * 64, "PEM", self.owner)

        def no_template(*args):
            raise Rejected(404, "ResourceNotFound", "Template T does not exist.")

        failing.register_with = no_template
        with self.assertRaises(Rejected):
            failing.register_thing("T", {"certificateOwnershipToken": token}, self.owner)
        failing.register_with = lambda *args: {"deviceConfiguration": {}, "thingName": "dev-1"}
        self.assertEqual(failing.register_thing("T", {"certificateOwnershipToken": token}, self.owner)["thingName"], "dev-1")
        with self.assertRaises(Rejected) as e:
            failing.register_thing("T", {"certificateOwnershipToken": token}, self.owner)
        self.assertEqual(e.exception.code, "InvalidCertificateOwnershipToken")


def self_signed(names):
    """A PEM certificate whose subject is `names`, [(oid, value)] in order."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in names])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class CertificateSubject(unittest.TestCase):
    def test_a_field_given_twice_takes_its_first_value(self):
        from cryptography.x509.oid import NameOID

        pem = self_signed([(NameOID.COMMON_NAME, "gg-1"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "line-3"),
                           (NameOID.ORGANIZATIONAL_UNIT_NAME, "admin")])
        self.assertEqual(subject.certificate_subject(pem), {"CommonName": "gg-1", "OrganizationalUnit": "line-3"})

    def test_not_a_certificate_has_no_subject(self):
        self.assertEqual(subject.certificate_subject("not a certificate"), {})


if __name__ == "__main__":
    unittest.main()
