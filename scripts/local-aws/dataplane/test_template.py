"""Unit tests of scripts/local-aws/dataplane/template.py (provisioning template evaluation), including
the template shapes claimfab's setup makes (src/core/account_documents.rs provisioning_template_body,
with CorePolicy::Named and with the least-privilege CorePolicy::PerDevice document).

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import base64
import json
import unittest

from dataplane import template as t

CERT = "a" * 64
R, A = "us-west-2", "123456789012"
PLACEHOLDER = "__CLAIMFAB_THING_NAME__"  # setup.rs THING_NAME


def arn(rest):
    return f"arn:aws:iot:{R}:{A}:{rest}"


def least_privilege_document():
    """setup.rs core_device_policy(LeastPrivilege, "GGAlias"), thing name as the placeholder."""
    thing = PLACEHOLDER
    topics = lambda kind, fams: [arn(f"{kind}/$aws/things/{thing}/{f}") for f in fams]
    return {
        "Statement": [
            {"Action": "iot:Connect", "Effect": "Allow", "Resource": arn(f"client/{thing}*")},
            {"Action": ["iot:Receive", "iot:Publish"], "Effect": "Allow", "Resource": topics("topic", ["greengrass/health/json", "greengrassv2/health/json", "jobs/*", "shadow/*"])},
            {"Action": "iot:Subscribe", "Effect": "Allow", "Resource": topics("topicfilter", ["jobs/*", "shadow/*"])},
            {"Action": ["iot:GetThingShadow", "iot:UpdateThingShadow", "iot:DeleteThingShadow"], "Effect": "Allow", "Resource": arn(f"thing/{thing}*")},
            {"Action": "iot:AssumeRoleWithCertificate", "Effect": "Allow", "Resource": arn("rolealias/GGAlias")},
            {"Action": ["greengrass:GetComponentVersionArtifact", "greengrass:ResolveComponentCandidates", "greengrass:GetDeploymentConfiguration", "greengrass:ListThingGroupsForCoreDevice"], "Effect": "Allow", "Resource": "*"},
        ],
        "Version": "2012-10-17",
    }


def per_device_policy(document):
    """setup.rs per_device_policy: serde_json's compact text (keys sorted) split at the
    placeholder, joined back with Ref ThingName."""
    text = json.dumps(document, separators=(",", ":"), sort_keys=True)
    parts = []
    for i, piece in enumerate(text.split(PLACEHOLDER)):
        if i:
            parts.append({"Ref": "ThingName"})
        parts.append(piece)
    return {"Fn::Join": ["", parts]}


def setup_template(policy_properties, with_thing_group=True, exclusive=False):
    """setup.rs provisioning_template_body (exclusive: TemplateShape.exclusive_thing)."""
    parameters = {"ThingName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}}
    thing_properties = {"AttributePayload": {}, "ThingName": {"Ref": "ThingName"}}
    if with_thing_group:
        parameters["ThingGroupName"] = {"Type": "String"}
        thing_properties["ThingGroups"] = [{"Ref": "ThingGroupName"}]
    return {
        "Parameters": parameters,
        "Resources": {
            "MyThing": {
                "OverrideSettings": {"AttributePayload": "REPLACE", "ThingGroups": "REPLACE", "ThingTypeName": "REPLACE"},
                "Properties": thing_properties,
                "Type": "AWS::IoT::Thing",
            },
            "MyPolicy": {"Properties": policy_properties, "Type": "AWS::IoT::Policy"},
            "MyCertificate": {
                "Properties": {
                    "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                    "Status": "Active",
                    **({"ThingPrincipalType": "EXCLUSIVE_THING"} if exclusive else {}),
                },
                "Type": "AWS::IoT::Certificate",
            },
        },
    }


class SetupTemplates(unittest.TestCase):
    def test_named_policy_with_group(self):
        body = json.dumps(setup_template({"PolicyName": "GreengrassV2IoTThingPolicy"}))
        plan = t.evaluate(body, {"ThingName": "gg-7", "ThingGroupName": "line-1"}, CERT)
        self.assertEqual(plan.thing["ThingName"], "gg-7")
        self.assertEqual(plan.thing["ThingGroups"], ["line-1"])
        self.assertEqual(plan.thing["AttributePayload"], {})
        self.assertEqual(plan.thing["OverrideSettings"], {"AttributePayload": "REPLACE", "ThingGroups": "REPLACE", "ThingTypeName": "REPLACE"})
        self.assertEqual(plan.policies, [{"PolicyName": "GreengrassV2IoTThingPolicy"}])
        self.assertEqual(plan.certificate, {"CertificateId": CERT, "Status": "ACTIVE"})
        self.assertEqual(plan.device_configuration, {})

    def test_named_policy_without_group(self):
        plan = t.evaluate(setup_template({"PolicyName": "P"}, with_thing_group=False), {"ThingName": "gg-7"}, CERT)
        self.assertNotIn("ThingGroups", plan.thing)

    def test_missing_group_parameter_is_rejected(self):
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(setup_template({"PolicyName": "P"}), {"ThingName": "gg-7"}, CERT)
        self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidParameters"))
        self.assertIn("ThingGroupName", e.exception.message)

    def test_least_privilege_per_device_policy(self):
        body = setup_template({"PolicyDocument": per_device_policy(least_privilege_document())})
        plan = t.evaluate(json.dumps(body), {"ThingName": "gg-7", "ThingGroupName": "g"}, CERT)
        (policy,) = plan.policies
        doc = json.loads(policy["PolicyDocument"])
        self.assertEqual(doc["Statement"][0]["Resource"], arn("client/gg-7*"))
        self.assertNotIn(PLACEHOLDER, policy["PolicyDocument"])
        self.assertEqual(policy["PolicyName"], t.template_policy_name(policy["PolicyDocument"]))
        self.assertLessEqual(t.policy_document_size(policy["PolicyDocument"]), t.POLICY_DOCUMENT_MAX)

    def test_device_cannot_override_certificate_id(self):
        plan = t.evaluate(setup_template({"PolicyName": "P"}), {"ThingName": "x", "ThingGroupName": "g", "AWS::IoT::Certificate::Id": "b" * 64}, CERT)
        self.assertEqual(plan.certificate["CertificateId"], CERT)


def certificate_template(properties, parameters=None):
    return {
        "Parameters": {k: {"Type": "String"} for k in (parameters or ())},
        "Resources": {"C": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE", **properties}}},
    }


class ThingPrincipalType(unittest.TestCase):
    def test_exclusive_setup_template(self):
        plan = t.evaluate(setup_template({"PolicyName": "P"}, exclusive=True), {"ThingName": "gg-7", "ThingGroupName": "g"}, CERT)
        self.assertEqual(plan.certificate, {"CertificateId": CERT, "Status": "ACTIVE", "ThingPrincipalType": "EXCLUSIVE_THING"})

    def test_both_values_and_absent(self):
        for kind in ("EXCLUSIVE_THING", "NON_EXCLUSIVE_THING"):
            plan = t.evaluate(certificate_template({"ThingPrincipalType": kind}), {}, CERT)
            self.assertEqual(plan.certificate["ThingPrincipalType"], kind)
        self.assertNotIn("ThingPrincipalType", t.evaluate(certificate_template({}), {}, CERT).certificate)

    def test_from_a_parameter(self):
        tmpl = certificate_template({"ThingPrincipalType": {"Ref": "Kind"}}, ["Kind"])
        self.assertEqual(t.evaluate(tmpl, {"Kind": "EXCLUSIVE_THING"}, CERT).certificate["ThingPrincipalType"], "EXCLUSIVE_THING")

    def test_anything_else_is_an_invalid_template(self):
        for kind in ("exclusive_thing", "EXCLUSIVE", "", True, ["EXCLUSIVE_THING"]):
            with self.subTest(kind=kind), self.assertRaises(t.TemplateError) as e:
                t.evaluate(certificate_template({"ThingPrincipalType": kind}), {}, CERT)
            self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidTemplate"))


class UndeclaredParameters(unittest.TestCase):
    """Parameters the device sends that the template does not declare are ignored (they
    still reach a pre-provisioning hook, which service.py hands the request's parameters)."""

    def test_ignored_and_cannot_be_referenced(self):
        tmpl = {"Parameters": {"ThingName": {"Type": "String"}}, "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "ThingName"}}}}}
        plan = t.evaluate(tmpl, {"ThingName": "gg-1", "ThingGroupName": "Admins"}, CERT)
        self.assertEqual(plan.thing["ThingName"], "gg-1")
        self.assertNotIn("ThingGroups", plan.thing)
        self.assertNotIn("ThingGroupName", plan.parameters)
        tmpl["Resources"]["T"]["Properties"]["ThingGroups"] = [{"Ref": "ThingGroupName"}]
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(tmpl, {"ThingName": "gg-1", "ThingGroupName": "Admins"}, CERT)
        self.assertEqual(e.exception.code, "InvalidTemplate")


class Functions(unittest.TestCase):
    def ev(self, node, params=None, **sections):
        tmpl = {"Parameters": {k: {"Type": "String"} for k in (params or {})}, **sections}
        return t.Evaluator(tmpl, t.resolve_parameters(tmpl, params or {}, {})).value(node)

    def test_join_sub_split_select_base64(self):
        self.assertEqual(self.ev({"Fn::Join": ["-", ["a", {"Ref": "P"}]]}, {"P": "b"}), "a-b")
        self.assertEqual(self.ev({"Fn::Sub": "x-${P}-${!Lit}"}, {"P": "y"}), "x-y-${Lit}")
        self.assertEqual(self.ev({"Fn::Sub": ["${A}${P}", {"A": "1"}]}, {"P": "2"}), "12")
        self.assertEqual(self.ev({"Fn::Select": ["1", {"Fn::Split": [",", {"Ref": "P"}]}]}, {"P": "a,b,c"}), "b")
        self.assertEqual(self.ev({"Fn::Base64": "hi"}), base64.b64encode(b"hi").decode())

    def test_find_in_map(self):
        maps = {"M": {"eu": {"group": "g-eu"}}}
        self.assertEqual(self.ev({"Fn::FindInMap": ["M", {"Ref": "P"}, "group"]}, {"P": "eu"}, Mappings=maps), "g-eu")
        with self.assertRaises(t.TemplateError):
            self.ev({"Fn::FindInMap": ["M", "us", "group"]}, Mappings=maps)

    def test_if_and_conditions(self):
        conds = {
            "IsProd": {"Fn::Equals": [{"Ref": "Env"}, "prod"]},
            "Both": {"Fn::And": [{"Condition": "IsProd"}, {"Fn::Not": [{"Fn::Equals": [{"Ref": "Env"}, "dev"]}]}]},
            "Either": {"Fn::Or": [{"Condition": "IsProd"}, {"Fn::Equals": ["a", "a"]}]},
        }
        self.assertEqual(self.ev({"Fn::If": ["Both", "p", "d"]}, {"Env": "prod"}, Conditions=conds), "p")
        self.assertEqual(self.ev({"Fn::If": ["Both", "p", "d"]}, {"Env": "dev"}, Conditions=conds), "d")
        self.assertEqual(self.ev({"Fn::If": ["Either", "y", "n"]}, {"Env": "dev"}, Conditions=conds), "y")
        self.assertEqual(self.ev({"k": {"Fn::If": ["IsProd", "v", {"Ref": "AWS::NoValue"}]}}, {"Env": "dev"}, Conditions=conds), {})

    def test_defaults_and_unknown_function(self):
        tmpl = {"Parameters": {"L": {"Type": "String", "Default": "WA"}}, "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": ["", ["t-", {"Ref": "L"}]]}}}}}
        self.assertEqual(t.evaluate(tmpl, {}, CERT).thing["ThingName"], "t-WA")
        self.assertEqual(t.evaluate(tmpl, {"L": "OR"}, CERT).thing["ThingName"], "t-OR")
        tmpl["Resources"]["T"]["Properties"]["ThingName"] = {"Fn::GetAZs": ""}
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(tmpl, {}, CERT)
        self.assertEqual(e.exception.code, "InvalidTemplate")


class Resources(unittest.TestCase):
    def test_override_defaults_and_device_configuration(self):
        tmpl = {
            "Parameters": {"N": {"Type": "String"}},
            "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "N"}, "AttributePayload": {"a": {"Ref": "N"}}, "ThingTypeName": "tt"}}},
            "DeviceConfiguration": {"Name": {"Ref": "N"}, "Fixed": "x"},
        }
        plan = t.evaluate(tmpl, {"N": "d1"}, CERT)
        self.assertEqual(plan.thing["OverrideSettings"], {"AttributePayload": "DO_NOTHING", "ThingGroups": "DO_NOTHING", "ThingTypeName": "DO_NOTHING"})
        self.assertEqual(plan.thing["AttributePayload"], {"a": "d1"})
        self.assertIsNone(plan.certificate)
        self.assertEqual(plan.device_configuration, {"Name": "d1", "Fixed": "x"})

    def test_conditional_resource_and_bad_override(self):
        tmpl = {
            "Parameters": {"Env": {"Type": "String"}},
            "Conditions": {"Prod": {"Fn::Equals": [{"Ref": "Env"}, "prod"]}},
            "Resources": {"P": {"Type": "AWS::IoT::Policy", "Condition": "Prod", "Properties": {"PolicyName": "ProdPolicy"}}},
        }
        self.assertEqual(t.evaluate(tmpl, {"Env": "dev"}, CERT).policies, [])
        self.assertEqual(t.evaluate(tmpl, {"Env": "prod"}, CERT).policies, [{"PolicyName": "ProdPolicy"}])
        bad = {"Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}, "OverrideSettings": {"ThingTypeName": "MERGE"}}}}
        with self.assertRaises(t.TemplateError):
            t.evaluate(bad, {}, CERT)

    def test_policy_document_limit_excludes_whitespace(self):
        stmt = {"Effect": "Allow", "Action": "iot:Publish", "Resource": "x" * 1900}
        doc = json.dumps({"Version": "2012-10-17", "Statement": [stmt]}, indent=8)
        self.assertGreater(len(doc), 2048)
        ok = t.evaluate({"Resources": {"P": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": doc}}}}, {}, CERT)
        self.assertEqual(len(ok.policies), 1)
        stmt["Resource"] = "x" * 2100
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate({"Resources": {"P": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": stmt and json.dumps({"Statement": [stmt]})}}}}, {}, CERT)
        self.assertEqual(e.exception.code, "InvalidParameters")

    def test_certificate_must_be_the_registered_one(self):
        tmpl = {"Resources": {"C": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": "b" * 64, "Status": "ACTIVE"}}}}
        with self.assertRaises(t.TemplateError):
            t.evaluate(tmpl, {}, CERT)

    def test_bad_thing_name_and_parameters(self):
        tmpl = {"Parameters": {"N": {"Type": "String"}}, "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "N"}}}}}
        with self.assertRaises(t.TemplateError):
            t.evaluate(tmpl, {"N": "has space"}, CERT)
        with self.assertRaises(t.TemplateError):
            t.evaluate(tmpl, {"N": 5}, CERT)
        with self.assertRaises(t.TemplateError):
            t.evaluate({"Resources": {"X": {"Type": "AWS::S3::Bucket"}}}, {}, CERT)


if __name__ == "__main__":
    unittest.main()
