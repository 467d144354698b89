"""Unit tests of scripts/local-aws/dataplane/template.py (provisioning template evaluation), including
the template shapes claimfab's setup makes (src/core/account_documents.rs provisioning_template_body,
with CorePolicy::Named and with the least-privilege CorePolicy::PerDevice document).

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from dataplane import template as t
from dataplane import things
from dataplane.endpoint_client import Rejected

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

    def test_device_cannot_supply_other_aws_parameters(self):
        # AWS supplies only AWS::IoT::Certificate::Id in fleet provisioning; a device sending
        # another AWS:: name (say the certificate's CommonName) is not believed.
        body = {
            "Parameters": {"AWS::IoT::Certificate::CommonName": {"Type": "String"}},
            "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}}}},
        }
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(body, {"AWS::IoT::Certificate::CommonName": "someone-else"}, CERT)
        self.assertIn("AWS::IoT::Certificate::CommonName", e.exception.message)


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

    def test_join_sub_split_select(self):
        self.assertEqual(self.ev({"Fn::Join": ["-", ["a", {"Ref": "P"}]]}, {"P": "b"}), "a-b")
        self.assertEqual(self.ev({"Fn::Sub": "x-${P}-${!Lit}"}, {"P": "y"}), "x-y-${Lit}")
        self.assertEqual(self.ev({"Fn::Sub": ["${A}${P}", {"A": "1"}]}, {"P": "2"}), "12")
        self.assertEqual(self.ev({"Fn::Select": ["1", {"Fn::Split": [",", {"Ref": "P"}]}]}, {"P": "a,b,c"}), "b")

    def test_find_in_map(self):
        maps = {"M": {"eu": {"group": "g-eu"}}}
        self.assertEqual(self.ev({"Fn::FindInMap": ["M", {"Ref": "P"}, "group"]}, {"P": "eu"}, Mappings=maps), "g-eu")
        with self.assertRaises(t.TemplateError):
            self.ev({"Fn::FindInMap": ["M", "us", "group"]}, Mappings=maps)

    def test_defaults_and_unknown_function(self):
        tmpl = {"Parameters": {"L": {"Type": "String", "Default": "WA"}}, "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Fn::Join": ["", ["t-", {"Ref": "L"}]]}}}}}
        self.assertEqual(t.evaluate(tmpl, {}, CERT).thing["ThingName"], "t-WA")
        self.assertEqual(t.evaluate(tmpl, {"L": "OR"}, CERT).thing["ThingName"], "t-OR")
        tmpl["Resources"]["T"]["Properties"]["ThingName"] = {"Fn::GetAZs": ""}
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(tmpl, {}, CERT)
        self.assertEqual(e.exception.code, "InvalidTemplate")
        self.assertIn("Fn::GetAZs is not an intrinsic function", e.exception.message)

    def test_no_value_is_not_a_parameter(self):
        # AWS::NoValue is CloudFormation's; the guide's Ref names the template's parameters.
        with self.assertRaises(t.TemplateError) as e:
            self.ev({"k": {"Ref": "AWS::NoValue"}})
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

    def test_bad_override(self):
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


def thing_template(**sections):
    return {
        "Parameters": {"N": {"Type": "String"}},
        "Resources": {"T": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "N"}}}},
        **sections,
    }


class Unsupported(unittest.TestCase):
    """What the guide does not document is refused: by unsupported_features (which the local
    endpoint's CreateProvisioningTemplate applies too) and at RegisterThing (InvalidTemplate)."""

    def refused(self, body, *needles):
        problems = t.unsupported_features(body)
        self.assertTrue(problems, body)
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(body, {"N": "d1"}, CERT)
        self.assertEqual((e.exception.status, e.exception.code), (400, "InvalidTemplate"))
        for needle in needles:
            self.assertIn(needle, e.exception.message)
            self.assertTrue(any(needle in p for p in problems), problems)
        return problems

    def test_undocumented_intrinsic_functions(self):
        for name in ("Fn::If", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::Base64", "Fn::GetAtt"):
            with self.subTest(name=name):
                body = thing_template()
                body["Resources"]["T"]["Properties"]["AttributePayload"] = {"a": {name: ["x", "y"]}}
                self.refused(body, f"{name} is not an intrinsic function AWS IoT documents")

    def test_undocumented_function_in_device_configuration_or_parameters(self):
        self.refused(thing_template(DeviceConfiguration={"K": {"Fn::Base64": "x"}}), "Fn::Base64")
        body = thing_template()
        body["Parameters"]["N"]["Default"] = {"Fn::GetAtt": ["A", "B"]}
        self.refused(body, "Fn::GetAtt")

    def test_conditions_section(self):
        body = thing_template(Conditions={"Prod": {"Fn::Equals": ["a", "a"]}})
        self.assertEqual(self.refused(body, "Conditions is not a section"), [
            "Conditions is not a section AWS IoT documents for FLEET_PROVISIONING provisioning templates "
            "(Parameters, Resources, Mappings, DeviceConfiguration)"
        ])

    def test_what_the_guide_does_not_document_is_refused_when_the_template_is_made(self):
        cases = [
            (lambda b: b["Parameters"]["N"].update(AllowedPattern="[a-z]+"), "parameter N has AllowedPattern"),
            (lambda b: b["Parameters"]["N"].update(Type="Number"), "only String is documented"),
            (lambda b: b["Resources"]["T"]["Properties"].update(ThingName={"Ref": "AWS::NoValue"}), "Ref 'AWS::NoValue'"),
            (lambda b: b["Resources"]["T"]["Properties"].update(ThingName={"Ref": "Serial"}), "Ref 'Serial' names no declared"),
            (lambda b: b["Resources"]["T"]["Properties"].update(ThingName={"Fn::Sub": "gg-${Serial}"}), "Ref 'Serial'"),
            (lambda b: b["Resources"]["T"]["Properties"].update(Owner="line-3"), "Owner is not a property"),
            (lambda b: b["Resources"]["T"]["Properties"].update(BillingGroup="b"), "BillingGroup is not modelled"),
            (lambda b: b["Resources"]["T"].update(OverrideSettings={"Attributes": "FAIL"}), "OverrideSettings Attributes"),
            (lambda b: b.update(Resources={}), "Resources must not be empty"),
        ]
        for change, needle in cases:
            with self.subTest(needle=needle):
                body = thing_template()
                change(body)
                problems = t.unsupported_features(body)
                self.assertTrue(any(needle in p for p in problems), problems)

    def test_certificate_status_and_properties(self):
        def cert(**props):
            return {"Resources": {"C": {"Type": "AWS::IoT::Certificate", "Properties": {
                "CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, **props}}}}

        self.assertEqual(t.unsupported_features(cert(Status="Active")), [])
        self.assertTrue(any("Status 'active'" in p for p in t.unsupported_features(cert(Status="active"))))
        self.assertTrue(any("CertificateSigningRequest is not modelled" in p
                            for p in t.unsupported_features(cert(CertificateSigningRequest="x"))))

    def test_the_guides_override_names_are_read(self):
        body = thing_template()
        body["Resources"]["T"]["OverrideSettings"] = {"THING_GROUPS": "FAIL", "ATTRIBUTE_PAYLOAD": "MERGE"}
        self.assertEqual(t.unsupported_features(body), [])
        plan = t.evaluate(body, {"N": "d1"}, CERT)
        self.assertEqual(plan.thing["OverrideSettings"],
                         {"AttributePayload": "MERGE", "ThingGroups": "FAIL", "ThingTypeName": "DO_NOTHING"})

    def test_resource_condition_key(self):
        body = thing_template()
        body["Resources"]["T"]["Condition"] = "Prod"
        self.refused(body, "resource T has Condition")

    def test_unknown_top_level_section(self):
        for section in ("Outputs", "Description", "AWSTemplateFormatVersion"):
            with self.subTest(section=section):
                self.refused(thing_template(**{section: "x"}), f"{section} is not a section")

    def test_jitp_templates_have_no_fleet_sections(self):
        body = thing_template(Mappings={"M": {"a": {"b": "c"}}}, DeviceConfiguration={"K": "v"})
        self.assertEqual(t.unsupported_features(body), [])
        problems = t.unsupported_features(body, "JITP")
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("Mappings is not a section AWS IoT documents for JITP", problems[0])

    def test_intrinsic_function_in_mappings(self):
        for value in ({"Ref": "N"}, {"Fn::Join": ["", ["a"]]}, [{"Fn::Sub": "x"}]):
            with self.subTest(value=value):
                body = thing_template(Mappings={"M": {"a": {"b": value}}})
                self.refused(body, "the Mappings section cannot refer to parameters or call intrinsic functions")

    def test_nested_device_configuration_literal(self):
        for value in ({"inner": "x"}, ["a", "b"], {"Ref": "N", "other": "x"}):
            with self.subTest(value=value):
                self.refused(thing_template(DeviceConfiguration={"K": value}), "DeviceConfiguration K is a nested JSON")

    def test_nested_device_configuration_evaluated(self):
        # Function calls pass the static check; what they evaluate to is refused.
        maps = {"M": {"eu": {"urls": ["a", "b"]}}}
        for value in ({"Fn::Split": [",", "a,b"]}, {"Fn::FindInMap": ["M", "eu", "urls"]}):
            with self.subTest(value=value):
                body = thing_template(Mappings=maps, DeviceConfiguration={"K": value})
                self.assertEqual(t.unsupported_features(body), [])
                with self.assertRaises(t.TemplateError) as e:
                    t.evaluate(body, {"N": "d1"}, CERT)
                self.assertEqual(e.exception.code, "InvalidTemplate")
                self.assertIn("DeviceConfiguration K is a nested JSON list", e.exception.message)

    def test_device_configuration_scalars_become_strings(self):
        body = thing_template(DeviceConfiguration={"S": {"Fn::Sub": "u-${N}"}, "I": 3, "B": True})
        self.assertEqual(t.evaluate(body, {"N": "d1"}, CERT).device_configuration, {"S": "u-d1", "I": "3", "B": "true"})

    def test_policy_override_settings(self):
        body = {"Resources": {"P": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "P"}, "OverrideSettings": {}}}}
        self.refused(body, "OverrideSettings are not available for policy resources")

    def test_certificate_override_settings_not_modelled(self):
        # Not a documented refusal, so not refused when a template is made; at RegisterThing.
        body = certificate_template({})
        body["Resources"]["C"]["OverrideSettings"] = {"Status": "DO_NOTHING"}
        self.assertEqual(t.unsupported_features(body), [])
        with self.assertRaises(t.TemplateError) as e:
            t.evaluate(body, {}, CERT)
        self.assertEqual(e.exception.code, "InvalidTemplate")
        self.assertIn("OverrideSettings on an AWS::IoT::Certificate", e.exception.message)

    def test_documented_template_passes(self):
        """The guide's fleet provisioning example (BillingGroup left out: not modelled)."""
        body = {
            "Parameters": {"ThingName": {"Type": "String"}, "DeviceLocation": {"Type": "String"}},
            "Mappings": {"LocationTable": {"Seattle": {"LocationUrl": "https://example.aws"}}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": {"ThingName": {"Ref": "ThingName"}, "AttributePayload": {"version": "v1"}},
                    "OverrideSettings": {"AttributePayload": "MERGE", "ThingTypeName": "REPLACE", "ThingGroups": "DO_NOTHING"},
                },
                "certificate": {"Type": "AWS::IoT::Certificate", "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}},
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": ["iot:Publish"], "Resource": ["arn:aws:iot:us-east-1:123456789012:topic/foo/bar"],
                                   "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}}],
                }}},
            },
            "DeviceConfiguration": {
                "FallbackUrl": "https://www.example.com/test-site",
                "LocationUrl": {"Fn::FindInMap": ["LocationTable", {"Ref": "DeviceLocation"}, "LocationUrl"]},
            },
        }
        self.assertEqual(t.unsupported_features(body), [])
        plan = t.evaluate(body, {"ThingName": "t1", "DeviceLocation": "Seattle"}, CERT)
        self.assertEqual(plan.device_configuration["LocationUrl"], "https://example.aws")

    def test_claimfab_setup_templates_pass(self):
        for body in (
            setup_template({"PolicyName": "P"}),
            setup_template({"PolicyDocument": per_device_policy(least_privilege_document())}, exclusive=True),
        ):
            self.assertEqual(t.unsupported_features(body), [])


class CertificateStatus(unittest.TestCase):
    def test_defaults_to_active(self):
        body = certificate_template({})
        del body["Resources"]["C"]["Properties"]["Status"]
        self.assertEqual(t.evaluate(body, {}, CERT).certificate["Status"], "ACTIVE")

    def test_given_either_case(self):
        for given, status in (("Active", "ACTIVE"), ("ACTIVE", "ACTIVE"), ("Inactive", "INACTIVE"), ("INACTIVE", "INACTIVE")):
            self.assertEqual(t.evaluate(certificate_template({"Status": given}), {}, CERT).certificate["Status"], status)
        with self.assertRaises(t.TemplateError):
            t.evaluate(certificate_template({"Status": "PENDING_ACTIVATION"}), {}, CERT)


class StubThingsIot:
    """The IoT calls things.apply_thing makes, on one existing thing."""

    def __init__(self, attributes=None, thing_type=None, groups=()):
        self.existing = {"thingName": "gg-1", "attributes": dict(attributes or {})}
        if thing_type:
            self.existing["thingTypeName"] = thing_type
        self.groups = list(groups)
        self.calls = []

    def describe_thing(self, thingName):
        return self.existing

    def list_thing_groups_for_thing(self, thingName):
        return {"thingGroups": [{"groupName": g} for g in self.groups]}

    def __getattr__(self, name):
        # update_thing, add_thing_to_thing_group, ...: recorded, not carried out.
        return lambda **kwargs: self.calls.append((name, kwargs))


class OverrideFail(unittest.TestCase):
    """OverrideSettings FAIL: "Cause the request to fail with a ResourceConflictsException"."""

    def thing(self, **props):
        settings = {"AttributePayload": "FAIL", "ThingGroups": "FAIL", "ThingTypeName": "FAIL"}
        return {"ThingName": "gg-1", "OverrideSettings": settings, **props}

    def test_differing_thing_is_a_resource_conflict(self):
        cases = (
            (StubThingsIot(attributes={"a": "1"}), {"AttributePayload": {"a": "2"}}),
            (StubThingsIot(thing_type="old"), {"ThingTypeName": "new"}),
            (StubThingsIot(groups=["g1"]), {"ThingGroups": ["g2"]}),
        )
        for iot, props in cases:
            with self.subTest(props=props), self.assertRaises(Rejected) as e:
                things.apply_thing(iot, self.thing(**props))
            self.assertEqual((e.exception.status, e.exception.code), (409, "ResourceConflictsException"))
            self.assertEqual(iot.calls, [])

    def test_an_existing_thing_fails_even_with_the_same_values(self):
        # "If a template specifies a resource that already exists": the strict reading.
        iot = StubThingsIot(attributes={"a": "1"}, groups=["g1"])
        with self.assertRaises(Rejected) as e:
            things.apply_thing(iot, self.thing(AttributePayload={"a": "1"}, ThingGroups=["g1"]))
        self.assertEqual(e.exception.code, "ResourceConflictsException")
        self.assertEqual(iot.calls, [])

    def test_fail_on_one_property_changes_nothing_else(self):
        iot = StubThingsIot(attributes={"a": "1"}, groups=["g1"])
        thing = {"ThingName": "gg-1", "AttributePayload": {"a": "2"}, "ThingGroups": ["g2"],
                 "OverrideSettings": {"AttributePayload": "REPLACE", "ThingGroups": "FAIL", "ThingTypeName": "DO_NOTHING"}}
        with self.assertRaises(Rejected):
            things.apply_thing(iot, thing)
        self.assertEqual(iot.calls, [])

    def test_a_property_the_template_leaves_out_does_not_fail(self):
        iot = StubThingsIot(attributes={"a": "1"})
        things.apply_thing(iot, {"ThingName": "gg-1", "OverrideSettings": {
            "AttributePayload": "FAIL", "ThingGroups": "FAIL", "ThingTypeName": "FAIL"}})
        self.assertEqual(iot.calls, [])


if __name__ == "__main__":
    unittest.main()
