"""Unit tests of the template-body check of the local endpoint's CreateProvisioningTemplate and
CreateProvisioningTemplateVersion (endpoint/provisioning_templates/checks.py check_body, with
the static rules of dataplane/template.py unsupported_features): what the Developer Guide's
"Provisioning templates" does not document is refused with InvalidRequestException (HTTP 400)
naming it, when the template is made.

Run: .venv/bin/python -m unittest discover -s scripts/local-aws -t scripts/local-aws -p 'test_*.py'
"""

import json
import unittest

from moto.iot.exceptions import InvalidRequestException

from endpoint.provisioning_templates.checks import check_body

ROLE = "arn:aws:iam::123456789012:role/FleetProvisioningRole"


def body(**sections):
    """claimfab's setup template, cut down (src/core/account_documents/mod.rs
    provisioning_template_body), plus `sections`."""
    return {
        "Parameters": {"ThingName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}},
        "Resources": {
            "MyThing": {
                "OverrideSettings": {"AttributePayload": "REPLACE", "ThingGroups": "REPLACE", "ThingTypeName": "REPLACE"},
                "Properties": {"AttributePayload": {}, "ThingName": {"Ref": "ThingName"}},
                "Type": "AWS::IoT::Thing",
            },
            "MyPolicy": {"Properties": {"PolicyDocument": {"Fn::Join": ["", ["{\"Statement\":[]}"]]}}, "Type": "AWS::IoT::Policy"},
            "MyCertificate": {
                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"},
                "Type": "AWS::IoT::Certificate",
            },
        },
        **sections,
    }


class CheckBody(unittest.TestCase):
    def refused(self, template, needle, template_type="FLEET_PROVISIONING"):
        with self.assertRaises(InvalidRequestException) as e:
            check_body(json.dumps(template), template_type)
        self.assertEqual(e.exception.code, 400)
        self.assertIn(needle, e.exception.message)

    def test_claimfab_template_is_taken(self):
        text = json.dumps(body(DeviceConfiguration={"K": {"Fn::Sub": "${ThingName}"}}))
        self.assertEqual(check_body(text), text)

    def test_undocumented_intrinsic_function(self):
        for name in ("Fn::If", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::Base64", "Fn::GetAtt"):
            with self.subTest(name=name):
                template = body()
                template["Resources"]["MyThing"]["Properties"]["ThingName"] = {name: ["a", "b"]}
                self.refused(template, f"{name} is not an intrinsic function AWS IoT documents for provisioning templates")

    def test_sections(self):
        self.refused(body(Conditions={"C": {"Fn::Equals": ["a", "b"]}}), "Conditions is not a section")
        self.refused(body(Outputs={}), "Outputs is not a section")
        self.refused(body(Mappings={}), "Mappings is not a section AWS IoT documents for JITP", "JITP")

    def test_resource_condition(self):
        template = body()
        template["Resources"]["MyPolicy"]["Condition"] = "Prod"
        self.refused(template, "resource MyPolicy has Condition")

    def test_mappings_and_device_configuration(self):
        self.refused(body(Mappings={"M": {"a": {"b": {"Ref": "ThingName"}}}}), "the Mappings section cannot")
        self.refused(body(DeviceConfiguration={"K": {"nested": "x"}}), "DeviceConfiguration K is a nested JSON object")


class ThroughTheApi(unittest.TestCase):
    """The check as CreateProvisioningTemplate(Version) answer it, through moto's IoT with
    the provisioning-template operations installed (as local_endpoint.py installs them)."""

    @classmethod
    def setUpClass(cls):
        from endpoint import provisioning_templates

        provisioning_templates.install()

    def test_create_and_version(self):
        import boto3
        from botocore.exceptions import ClientError
        from moto import mock_aws

        bad = json.dumps(body(Conditions={}))
        with mock_aws():
            iot = boto3.client("iot", region_name="us-east-1")
            with self.assertRaises(ClientError) as e:
                iot.create_provisioning_template(templateName="T", templateBody=bad, provisioningRoleArn=ROLE)
            self.assert_refused(e.exception, "Conditions")
            iot.create_provisioning_template(templateName="T", templateBody=json.dumps(body()), provisioningRoleArn=ROLE)
            with self.assertRaises(ClientError) as e:
                iot.create_provisioning_template_version(templateName="T", templateBody=bad)
            self.assert_refused(e.exception, "Conditions")
            # A JITP template's versions cannot have the fleet provisioning sections.
            iot.create_provisioning_template(templateName="J", templateBody=json.dumps(body()), provisioningRoleArn=ROLE, type="JITP")
            with self.assertRaises(ClientError) as e:
                iot.create_provisioning_template_version(templateName="J", templateBody=json.dumps(body(Mappings={})))
            self.assert_refused(e.exception, "Mappings")

    def assert_refused(self, error, needle):
        self.assertEqual(error.response["ResponseMetadata"]["HTTPStatusCode"], 400)
        self.assertEqual(error.response["Error"]["Code"], "InvalidRequestException")
        self.assertIn(needle, error.response["Error"]["Message"])


if __name__ == "__main__":
    unittest.main()
