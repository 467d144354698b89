"""Unit tests of the policy decision point (scripts/local-aws/dataplane/authorizer.py) on a fake
account: decisions follow the account as it is (the change counter), a certificate found
inactive is handed to the broker to close whether a decision or the sweep finds it, a failed
read denies instead of dropping a policy, and policies attached to the thing's groups (and
their parents) apply.

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from botocore.exceptions import ClientError

from dataplane.authorizer import Authorizer

REGION, ACCOUNT = "us-east-1", "123456789012"
CERT = "c" * 64
CERT_ARN = f"arn:aws:iot:{REGION}:{ACCOUNT}:cert/{CERT}"


def error(code):
    return ClientError({"Error": {"Code": code, "Message": code}}, "op")


def statement(effect, action, resource="*"):
    return {"Effect": effect, "Action": action, "Resource": resource}


class FakeIot:
    """The few IoT reads the authorizer makes, over dicts a test edits; `failing` names reads
    that answer ThrottlingException."""

    def __init__(self):
        self.status = "ACTIVE"
        self.attached = {CERT_ARN: ["claim"]}
        self.policies = {"claim": {"Statement": [statement("Allow", "iot:*")]}}
        self.things = []  # principalThingObjects
        self.groups = {}  # thing -> [(name, arn)]
        self.parents = {}  # group name -> [(name, arn)]
        self.failing = set()

    def _maybe_fail(self, name):
        if name in self.failing:
            raise error("ThrottlingException")

    def describe_certificate(self, certificateId):
        self._maybe_fail("describe_certificate")
        if self.status is None:
            raise error("ResourceNotFoundException")
        return {"certificateDescription": {"status": self.status, "certificateArn": CERT_ARN, "certificatePem": ""}}

    def list_attached_policies(self, target, recursive=False, marker=None):
        self._maybe_fail("list_attached_policies")
        return {"policies": [{"policyName": n} for n in self.attached.get(target, [])]}

    def get_policy(self, policyName):
        self._maybe_fail("get_policy")
        if policyName not in self.policies:
            raise error("ResourceNotFoundException")
        return {"policyDocument": json.dumps(self.policies[policyName])}

    def list_principal_things_v2(self, principal):
        return {"principalThingObjects": self.things}

    def describe_thing(self, thingName):
        return {"thingName": thingName}

    def list_thing_groups_for_thing(self, thingName):
        return {"thingGroups": [{"groupName": n, "groupArn": a} for n, a in self.groups.get(thingName, [])]}

    def describe_thing_group(self, thingGroupName):
        parents = [{"groupName": n, "groupArn": a} for n, a in self.parents.get(thingGroupName, [])]
        return {"thingGroupMetadata": {"rootToParentThingGroups": parents}}


class FakeEndpoint:
    def __init__(self):
        self.iot = FakeIot()
        self.counter = 0

    def generation(self):
        return self.counter

    def pages(self, method, key, **kwargs):
        yield from method(**kwargs).get(key, [])

    def change(self):
        self.counter += 1


class Decisions(unittest.TestCase):
    def setUp(self):
        self.endpoint = FakeEndpoint()
        self.auth = Authorizer(self.endpoint, REGION, ACCOUNT, "service")

    def ask(self, op, topic=None, conn="7"):
        request = {"op": op, "conn": conn, "cert": CERT, "client": "dev-1"}
        if topic is not None:
            request["topic"] = topic
        return self.auth.decide(request)

    def test_a_change_to_the_account_applies_to_the_next_decision(self):
        self.assertEqual(self.ask("connect"), "allow")
        self.assertEqual(self.ask("publish", "a/b"), "allow")
        self.endpoint.iot.attached[CERT_ARN] = []  # DetachPolicy
        self.assertEqual(self.ask("publish", "a/b"), "allow", "nothing changed as far as the counter says")
        self.endpoint.change()
        self.assertEqual(self.ask("publish", "a/b"), "disconnect")

    def test_a_certificate_found_inactive_by_a_delivery_is_closed(self):
        self.assertEqual(self.ask("connect"), "allow")
        self.endpoint.iot.status = "INACTIVE"
        self.endpoint.change()
        self.assertEqual(self.ask("receive", "a/b"), "deny")
        self.auth.sweep()
        self.assertEqual(self.auth.decide({"op": "next_kick"}), "7")
        self.assertEqual(self.auth.decide({"op": "next_kick"}), "none", "handed over once")

    def test_the_sweep_closes_a_silent_connection_whose_certificate_is_gone(self):
        self.assertEqual(self.ask("connect"), "allow")
        self.endpoint.iot.status = None  # DeleteCertificate
        self.endpoint.change()
        self.auth.sweep()
        self.assertEqual(self.auth.decide({"op": "next_kick"}), "7")

    def test_a_throttled_sweep_closes_nothing_and_tries_again(self):
        self.assertEqual(self.ask("connect"), "allow")
        self.endpoint.change()
        self.endpoint.iot.failing.add("describe_certificate")
        self.auth.sweep()
        self.assertEqual(self.auth.decide({"op": "next_kick"}), "none")
        self.endpoint.iot.failing.clear()
        self.endpoint.iot.status = "REVOKED"
        self.auth.sweep()
        self.assertEqual(self.auth.decide({"op": "next_kick"}), "7")

    def test_a_policy_that_cannot_be_read_denies_instead_of_being_skipped(self):
        self.endpoint.iot.attached[CERT_ARN] = ["claim", "deny-all"]
        self.endpoint.iot.policies["deny-all"] = {"Statement": [statement("Deny", "iot:*")]}
        self.endpoint.iot.failing.add("get_policy")
        self.assertEqual(self.ask("connect"), "deny")
        self.endpoint.iot.failing.clear()
        self.assertEqual(self.ask("connect"), "deny", "read now: its Deny applies")

    def test_a_retained_publish_needs_retain_publish_too(self):
        self.endpoint.iot.policies["claim"] = {"Statement": [statement("Allow", ["iot:Connect", "iot:Publish"])]}
        self.assertEqual(self.ask("connect"), "allow")
        self.assertEqual(self.ask("publish", "a/b"), "allow")
        self.assertEqual(self.ask("publish_retained", "a/b"), "disconnect")
        self.endpoint.iot.policies["claim"]["Statement"][0]["Action"].append("iot:RetainPublish")
        self.endpoint.change()
        self.assertEqual(self.ask("publish_retained", "a/b"), "allow")

    def test_policies_of_the_things_groups_and_their_parents_apply(self):
        self.endpoint.iot.things = [{"thingName": "dev-1", "thingPrincipalType": "EXCLUSIVE_THING"}]
        self.endpoint.iot.groups["dev-1"] = [("line", "arn:group/line")]
        self.endpoint.iot.parents["line"] = [("factory", "arn:group/factory")]
        self.endpoint.iot.attached["arn:group/factory"] = ["no-secrets"]
        self.endpoint.iot.policies["no-secrets"] = {"Statement": [statement(
            "Deny", "iot:Publish", f"arn:aws:iot:{REGION}:{ACCOUNT}:topic/secret/*")]}
        self.assertEqual(self.ask("connect"), "allow")
        self.assertEqual(self.ask("publish", "open/x"), "allow")
        self.assertEqual(self.ask("publish", "secret/x"), "disconnect")


if __name__ == "__main__":
    unittest.main()
