"""Unit tests of scripts/local-aws/dataplane/iot_policy.py (AWS IoT policy evaluation).

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from dataplane import iot_policy as p

R, A = "us-east-1", "123456789012"


def arn(rest):
    return f"arn:aws:iot:{R}:{A}:{rest}"


def claim_policy(template="T", with_csr=True):
    # The shape of src/core/account_documents.rs claim_policy.
    topics = ["$aws/certificates/create/*"]
    if with_csr:
        topics.append("$aws/certificates/create-from-csr/*")
    topics.append(f"$aws/provisioning-templates/{template}/provision/*")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client/*")},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [arn(f"topic/{t}") for t in topics]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [arn(f"topicfilter/{t}") for t in topics]},
        ],
    }


VARS = p.connection_variables("dev-1", None, {"CommonName": "dev-1"})


class ClaimPolicy(unittest.TestCase):
    def test_allows_the_provisioning_topics(self):
        docs = [json.dumps(claim_policy())]
        for action, res in [
            ("iot:Connect", arn("client/anything")),
            ("iot:Publish", arn("topic/$aws/certificates/create-from-csr/json")),
            ("iot:Receive", arn("topic/$aws/certificates/create/json/accepted")),
            ("iot:Subscribe", arn("topicfilter/$aws/provisioning-templates/T/provision/json/rejected")),
        ]:
            self.assertTrue(p.evaluate(docs, action, res, VARS).allowed, (action, res))

    def test_denies_other_templates_and_topics(self):
        docs = [claim_policy()]
        self.assertFalse(p.evaluate(docs, "iot:Publish", arn("topic/$aws/provisioning-templates/U/provision/json"), VARS).allowed)
        self.assertFalse(p.evaluate(docs, "iot:Publish", arn("topic/other"), VARS).allowed)
        # Subscribe needs a topicfilter/ resource: topic/ does not count.
        self.assertFalse(p.evaluate([{"Statement": [{"Effect": "Allow", "Action": "iot:Subscribe", "Resource": arn("topic/*")}]}], "iot:Subscribe", arn("topicfilter/a"), VARS).allowed)

    def test_without_csr_topics(self):
        docs = [claim_policy(with_csr=False)]
        d = p.evaluate(docs, "iot:Subscribe", arn("topicfilter/$aws/certificates/create-from-csr/json/accepted"), VARS)
        self.assertEqual(d.effect, p.IMPLICIT_DENY)

    def test_other_region_or_account_does_not_match(self):
        self.assertFalse(p.evaluate([claim_policy()], "iot:Connect", "arn:aws:iot:eu-west-1:123456789012:client/x", VARS).allowed)


class Evaluation(unittest.TestCase):
    def test_explicit_deny_wins_across_documents(self):
        allow = {"Statement": [{"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}
        deny = {"Statement": {"Effect": "Deny", "Action": "iot:Publish", "Resource": arn("topic/secret/*")}}
        self.assertEqual(p.evaluate([allow, deny], "iot:Publish", arn("topic/secret/x"), VARS).effect, p.DENY)
        self.assertTrue(p.evaluate([allow, deny], "iot:Publish", arn("topic/open"), VARS).allowed)

    def test_no_documents_is_implicit_deny(self):
        self.assertEqual(p.evaluate([], "iot:Connect", arn("client/a"), VARS).effect, p.IMPLICIT_DENY)

    def test_action_wildcards_case_insensitive(self):
        doc = {"Statement": [{"Effect": "Allow", "Action": ["IOT:pub*", "iot:Rec?ive"], "Resource": "*"}]}
        self.assertTrue(p.evaluate([doc], "iot:Publish", arn("topic/a"), VARS).allowed)
        self.assertTrue(p.evaluate([doc], "iot:Receive", arn("topic/a"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/a"), VARS).allowed)

    def test_resource_wildcards_are_case_sensitive_and_mqtt_wildcards_literal(self):
        doc = {"Statement": [{"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [arn("topicfilter/a/?/c"), arn("topicfilter/x/#")]}]}
        self.assertTrue(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/a/b/c"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/a/bb/c"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/A/b/c"), VARS).allowed)
        self.assertTrue(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/x/#"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/x/y"), VARS).allowed)

    def test_not_action_and_not_resource(self):
        doc = {"Statement": [{"Effect": "Allow", "NotAction": "iot:Publish", "NotResource": arn("topicfilter/no")}]}
        self.assertTrue(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/yes"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Subscribe", arn("topicfilter/no"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Publish", arn("topic/yes"), VARS).allowed)

    def test_bad_document_is_skipped(self):
        self.assertTrue(p.evaluate(["not json", {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}], "iot:Connect", arn("client/a"), VARS).allowed)


class Variables(unittest.TestCase):
    doc = {
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client/${iot:Connection.Thing.ThingName}")},
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": arn("topic/dev/${iot:ClientId}/*")},
            {"Effect": "Allow", "Action": "iot:Receive", "Resource": arn("topic/cn/${iot:Certificate.Subject.CommonName}")},
        ]
    }

    def test_client_id_and_common_name(self):
        v = p.connection_variables("dev-1", None, {"CommonName": "Cn 1"})
        self.assertTrue(p.evaluate([self.doc], "iot:Publish", arn("topic/dev/dev-1/x"), v).allowed)
        self.assertFalse(p.evaluate([self.doc], "iot:Publish", arn("topic/dev/dev-2/x"), v).allowed)
        self.assertTrue(p.evaluate([self.doc], "iot:Receive", arn("topic/cn/Cn 1"), v).allowed)

    def test_thing_name_only_when_attached(self):
        attached = p.connection_variables("gg-1", "gg-1")
        not_attached = p.connection_variables("gg-1", None)
        self.assertTrue(p.evaluate([self.doc], "iot:Connect", arn("client/gg-1"), attached).allowed)
        self.assertFalse(p.evaluate([self.doc], "iot:Connect", arn("client/gg-1"), not_attached).allowed)
        self.assertFalse(p.evaluate([self.doc], "iot:Connect", arn("client/"), not_attached).allowed)

    def test_variable_values_are_not_wildcards(self):
        v = p.connection_variables("*", None)
        self.assertTrue(p.evaluate([self.doc], "iot:Publish", arn("topic/dev/*/x"), v).allowed)
        self.assertFalse(p.evaluate([self.doc], "iot:Publish", arn("topic/dev/anyone/x"), v).allowed)

    def test_escapes(self):
        doc = {"Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": arn("topic/lit${*}")}]}
        self.assertTrue(p.evaluate([doc], "iot:Publish", arn("topic/lit*"), VARS).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Publish", arn("topic/litx"), VARS).allowed)

    def test_condition_is_attached(self):
        doc = {"Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*", "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}}]}
        self.assertTrue(p.evaluate([doc], "iot:Connect", arn("client/a"), p.connection_variables("a", "a")).allowed)
        self.assertFalse(p.evaluate([doc], "iot:Connect", arn("client/a"), p.connection_variables("a", None)).allowed)

    def test_unsupported_condition(self):
        allow = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4"}}}]}
        self.assertFalse(p.evaluate([allow], "iot:Connect", arn("client/a"), VARS).allowed)
        deny = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "1.2.3.4"}}}]}
        self.assertEqual(p.evaluate([deny], "iot:Connect", arn("client/a"), VARS).effect, p.DENY)


class FailsClosed(unittest.TestCase):
    """What this evaluator cannot resolve never widens access: an Allow naming it grants
    nothing, a Deny naming it applies."""

    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}

    def test_deny_with_an_unsupported_variable_denies(self):
        for resource in (arn("topic/${iot:Certificate.Issuer.CommonName}/*"), arn("topic/${aws:SourceIp}")):
            doc = {"Statement": [self.allow_all, {"Effect": "Deny", "Action": "iot:Publish", "Resource": resource}]}
            d = p.evaluate([doc], "iot:Publish", arn("topic/anything"), VARS)
            self.assertEqual(d.effect, p.DENY, resource)
            self.assertIn("not evaluated locally", " ".join(d.notes))
            # Other actions are untouched by it.
            self.assertTrue(p.evaluate([doc], "iot:Connect", arn("client/a"), VARS).allowed)

    def test_deny_with_an_unsupported_variable_in_not_resource_or_condition_denies(self):
        for statement in (
            {"Effect": "Deny", "Action": "iot:Publish", "NotResource": arn("topic/${iot:Certificate.SerialNumber}")},
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": "*",
             "Condition": {"StringNotEquals": {"iot:ClientId": "${iot:Certificate.Validity.NotAfter}"}}},
            {"Effect": "Deny", "Action": "iot:Publish", "Resource": "*",
             "Condition": {"StringEquals": {"aws:SourceIp": "203.0.113.7"}}},
        ):
            doc = {"Statement": [self.allow_all, statement]}
            self.assertEqual(p.evaluate([doc], "iot:Publish", arn("topic/a"), VARS).effect, p.DENY, statement)

    def test_allow_with_an_unsupported_variable_or_key_grants_nothing(self):
        for statement in (
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": arn("topic/${iot:Certificate.Issuer.CommonName}")},
            {"Effect": "Allow", "Action": "iot:Publish", "NotResource": arn("topic/${aws:SourceIp}")},
            # A negated operator over a key it cannot read would otherwise hold.
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "*",
             "Condition": {"StringNotEquals": {"aws:SourceIp": "203.0.113.7"}}},
        ):
            self.assertFalse(p.evaluate([{"Statement": [statement]}], "iot:Publish", arn("topic/a"), VARS).allowed, statement)

    def test_a_variable_with_no_value_never_widens_access(self):
        no_thing = p.connection_variables("dev-1", None)
        for statement in (
            # NotResource naming the (absent) thing would otherwise exclude nothing.
            {"Effect": "Allow", "Action": "iot:Publish", "NotResource": arn("topic/${iot:Connection.Thing.ThingName}/*")},
            # A negated operator against an absent value would otherwise hold.
            {"Effect": "Allow", "Action": "iot:Publish", "Resource": "*",
             "Condition": {"StringNotEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}}},
        ):
            self.assertFalse(p.evaluate([{"Statement": [statement]}], "iot:Publish", arn("topic/a"), no_thing).allowed, statement)
        deny = {"Statement": [self.allow_all, {"Effect": "Deny", "Action": "iot:Publish",
                                               "Resource": arn("topic/${iot:Connection.Thing.ThingName}/admin")}]}
        self.assertEqual(p.evaluate([deny], "iot:Publish", arn("topic/other"), no_thing).effect, p.DENY)
        # With a thing attached the same Deny is an ordinary one.
        self.assertTrue(p.evaluate([deny], "iot:Publish", arn("topic/other"), p.connection_variables("gg-1", "gg-1")).allowed)

    def test_an_effect_neither_allow_nor_deny_denies(self):
        doc = {"Statement": [self.allow_all, {"Effect": "deny", "Action": "iot:Publish", "Resource": "*"}]}
        self.assertEqual(p.evaluate([doc], "iot:Publish", arn("topic/a"), VARS).effect, p.DENY)

    def test_supported_variables_still_resolve(self):
        v = p.connection_variables("gg-1", "gg-1", {"OrganizationalUnit": "line-3"}, "Core", {"site": "lyon"})
        doc = {"Statement": [{"Effect": "Allow", "Action": "iot:Publish", "Resource": arn(
            "topic/${iot:Connection.Thing.ThingTypeName}/${iot:Connection.Thing.Attributes[site]}/"
            "${iot:Certificate.Subject.OrganizationalUnit}/${iot:ClientId}")}]}
        self.assertTrue(p.evaluate([doc], "iot:Publish", arn("topic/Core/lyon/line-3/gg-1"), v).allowed)


if __name__ == "__main__":
    unittest.main()
