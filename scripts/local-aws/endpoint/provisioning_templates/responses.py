"""The provisioning-template operations' REST bindings (service model: path labels, query
string, JSON body), as IoTResponse methods named after the operations (install() adds them)."""

from __future__ import annotations

import json

from moto.core.responses import ActionResult, EmptyResult
from moto.iot import responses as iot_responses
from moto.iot.exceptions import InvalidRequestException

from endpoint.provisioning_templates import backend


def json_body(self) -> dict:
    raw = self.body
    if raw in (None, b"", ""):
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise InvalidRequestException("The request body is not valid JSON.")
    if not isinstance(parsed, dict):
        raise InvalidRequestException("The request body must be a JSON object.")
    return parsed


def uri(self, name: str):
    return (self.uri_match or {}).get(name)


def query(self, name: str):
    values = self.querystring.get(name)
    return values[0] if values else None


def query_bool(self, name: str) -> bool:
    raw = query(self, name)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise InvalidRequestException(f"{name} must be true or false.")


# POST /provisioning-templates
def create_provisioning_template(self):
    body = json_body(self)
    return ActionResult(
        self.iot_backend.create_provisioning_template(
            template_name=body.get("templateName"),
            description=body.get("description"),
            template_body=body.get("templateBody"),
            enabled=body.get("enabled"),
            provisioning_role_arn=body.get("provisioningRoleArn"),
            pre_provisioning_hook=body.get("preProvisioningHook"),
            tags=body.get("tags"),
            template_type=body.get("type"),
        )
    )


# GET /provisioning-templates/{templateName}
def describe_provisioning_template(self):
    return ActionResult(
        self.iot_backend.describe_provisioning_template(uri(self, "templateName"))
    )


# GET /provisioning-templates?maxResults&nextToken
def list_provisioning_templates(self):
    return ActionResult(
        self.iot_backend.list_provisioning_templates(
            query(self, "maxResults"), query(self, "nextToken")
        )
    )


# PATCH /provisioning-templates/{templateName}
def update_provisioning_template(self):
    body = json_body(self)
    self.iot_backend.update_provisioning_template(
        template_name=uri(self, "templateName"),
        description=body.get("description"),
        enabled=body.get("enabled"),
        default_version_id=body.get("defaultVersionId"),
        provisioning_role_arn=body.get("provisioningRoleArn"),
        pre_provisioning_hook=body.get("preProvisioningHook"),
        remove_pre_provisioning_hook=body.get("removePreProvisioningHook"),
    )
    return EmptyResult()


# DELETE /provisioning-templates/{templateName}
def delete_provisioning_template(self):
    self.iot_backend.delete_provisioning_template(uri(self, "templateName"))
    return EmptyResult()


# POST /provisioning-templates/{templateName}/versions?setAsDefault
def create_provisioning_template_version(self):
    body = json_body(self)
    return ActionResult(
        self.iot_backend.create_provisioning_template_version(
            uri(self, "templateName"),
            body.get("templateBody"),
            query_bool(self, "setAsDefault"),
        )
    )


# GET /provisioning-templates/{templateName}/versions/{versionId}
def describe_provisioning_template_version(self):
    return ActionResult(
        self.iot_backend.describe_provisioning_template_version(
            uri(self, "templateName"), uri(self, "versionId")
        )
    )


# GET /provisioning-templates/{templateName}/versions?maxResults&nextToken
def list_provisioning_template_versions(self):
    return ActionResult(
        self.iot_backend.list_provisioning_template_versions(
            uri(self, "templateName"), query(self, "maxResults"), query(self, "nextToken")
        )
    )


# DELETE /provisioning-templates/{templateName}/versions/{versionId}
def delete_provisioning_template_version(self):
    self.iot_backend.delete_provisioning_template_version(
        uri(self, "templateName"), uri(self, "versionId")
    )
    return EmptyResult()


def install() -> None:
    """The response methods on IoTResponse, one per backend operation, named after it."""
    for operation in backend.OPERATIONS:
        setattr(iot_responses.IoTResponse, operation.__name__, globals()[operation.__name__])
