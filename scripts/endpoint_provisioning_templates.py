"""AWS IoT provisioning templates for the local endpoint (moto 5.2.5 has none).

This module owns:
  * the nine provisioning-template operations of the AWS IoT API, answered by moto's server:
    CreateProvisioningTemplate, DescribeProvisioningTemplate, ListProvisioningTemplates,
    UpdateProvisioningTemplate, DeleteProvisioningTemplate, CreateProvisioningTemplateVersion,
    DescribeProvisioningTemplateVersion, ListProvisioningTemplateVersions and
    DeleteProvisioningTemplateVersion, with the request/response fields, REST bindings and
    error types (HTTP status codes) of botocore's AWS IoT service model and the API reference;
  * their state: one dict per moto IoT backend (so per account and region), attached lazily to
    the backend instance as the attribute STATE_ATTR. moto's reset (POST /moto-api/reset)
    rebuilds every backend's __dict__, which drops it too.

moto's IoTResponse resolves the operation from the botocore model by HTTP method and path
(moto.core.routing) and then calls the response method named after the operation in
snake_case (moto/iot/urls.py sends every IoT path to IoTResponse.dispatch), so install() only
has to add those methods to IoTResponse and the backing state methods to IoTBackend.

Call install(lock) once, before serving. Every read and write of the template state runs
under `lock` (never re-entered here, so a plain threading.Lock is fine).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading

STATE_ATTR = "_claimfab_provisioning_templates"

# AWS IoT API reference, TemplateName: length 1..36, pattern ^[0-9A-Za-z_-]+$.
TEMPLATE_NAME_RE = re.compile(r"^[0-9A-Za-z_-]{1,36}$")
# TemplateBody: length 0..10240. TemplateDescription: 0..500, pattern [^\p{C}]*.
TEMPLATE_BODY_MAX = 10240
DESCRIPTION_MAX = 500
# RoleArn: length 20..2048. ProvisioningHook: targetArn <= 2048 (required),
# payloadVersion 10..32 matching ^[0-9-]+$.
ROLE_ARN_MIN, ROLE_ARN_MAX = 20, 2048
PAYLOAD_VERSION_RE = re.compile(r"^[0-9-]{10,32}$")
# TemplateType enum; "The default value is FLEET_PROVISIONING" (CreateProvisioningTemplate).
TEMPLATE_TYPES = ("FLEET_PROVISIONING", "JITP")
# AWS IoT Core quotas: at most 5 versions per provisioning template.
MAX_VERSIONS = 5
# MaxResults: 1..250 (List* operations). AWS documents no default; 25, as elsewhere in IoT.
MAX_RESULTS_MIN, MAX_RESULTS_MAX, MAX_RESULTS_DEFAULT = 1, 250, 25


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _has_control_chars(text: str) -> bool:
    # [^\p{C}]*: no Unicode "Other" characters (control, format, unassigned, private use).
    import unicodedata

    return any(unicodedata.category(ch).startswith("C") for ch in text)


def install(lock: threading.Lock) -> None:
    """Adds the provisioning-template operations to moto's IoTBackend and IoTResponse."""
    from moto.core.responses import ActionResult, EmptyResult
    from moto.iot import models as iot_models
    from moto.iot import responses as iot_responses
    from moto.iot.exceptions import (
        DeleteConflictException,
        IoTClientError,
        InvalidRequestException,
        ResourceAlreadyExistsException,
        ResourceNotFoundException,
    )

    IoTBackend = iot_models.IoTBackend
    IoTResponse = iot_responses.IoTResponse

    class VersionsLimitExceededException(IoTClientError):
        # Service model: VersionsLimitExceededException, HTTP 409. (moto's own class words its
        # message for policies.)
        def __init__(self, name: str):
            super().__init__(
                "VersionsLimitExceededException",
                f"The provisioning template {name} already has the maximum number of versions "
                f"({MAX_VERSIONS}).",
            )
            self.code = 409

    # ---------------------------------------------------------------------------------------
    # Validation (AWS answers constraint violations with InvalidRequestException, HTTP 400)
    # ---------------------------------------------------------------------------------------

    def check_name(name) -> str:
        if not isinstance(name, str) or not TEMPLATE_NAME_RE.match(name):
            raise InvalidRequestException(
                f"1 validation error detected: Value '{name}' at 'templateName' failed to "
                "satisfy constraint: Member must have length between 1 and 36 and satisfy "
                "regular expression pattern: ^[0-9A-Za-z_-]+$"
            )
        return name

    def check_body(body) -> str:
        # templateBody: "The JSON formatted contents of the provisioning template" (required,
        # at most 10240 characters); a template is a JSON object. Stored and returned verbatim.
        if not isinstance(body, str):
            raise InvalidRequestException("templateBody is required and must be a string.")
        if len(body) > TEMPLATE_BODY_MAX:
            raise InvalidRequestException(
                f"templateBody must be at most {TEMPLATE_BODY_MAX} characters."
            )
        try:
            parsed = json.loads(body)
        except ValueError as e:
            raise InvalidRequestException(f"The template body is not valid JSON: {e}")
        if not isinstance(parsed, dict):
            raise InvalidRequestException("The template body must be a JSON object.")
        return body

    def check_description(description):
        if description is None:
            return None
        if (
            not isinstance(description, str)
            or len(description) > DESCRIPTION_MAX
            or _has_control_chars(description)
        ):
            raise InvalidRequestException(
                f"description must be a string of at most {DESCRIPTION_MAX} characters without "
                "control characters."
            )
        return description

    def check_role_arn(arn, required: bool):
        if arn is None:
            if required:
                raise InvalidRequestException("provisioningRoleArn is required.")
            return None
        if not isinstance(arn, str) or not ROLE_ARN_MIN <= len(arn) <= ROLE_ARN_MAX:
            raise InvalidRequestException(
                f"provisioningRoleArn must be {ROLE_ARN_MIN} to {ROLE_ARN_MAX} characters."
            )
        return arn

    def check_bool(value, field: str):
        if value is not None and not isinstance(value, bool):
            raise InvalidRequestException(f"{field} must be a boolean.")
        return value

    def check_hook(hook):
        if hook is None:
            return None
        if not isinstance(hook, dict):
            raise InvalidRequestException("preProvisioningHook must be an object.")
        target = hook.get("targetArn")
        if not isinstance(target, str) or not target or len(target) > 2048:
            raise InvalidRequestException("preProvisioningHook.targetArn is required.")
        result = {"targetArn": target}
        version = hook.get("payloadVersion")
        if version is not None:
            if not isinstance(version, str) or not PAYLOAD_VERSION_RE.match(version):
                raise InvalidRequestException(
                    "preProvisioningHook.payloadVersion must be 10 to 32 characters matching "
                    "^[0-9-]+$."
                )
            result["payloadVersion"] = version
        return result

    def check_max_results(raw):
        if raw is None:
            return MAX_RESULTS_DEFAULT
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = None
        if value is None or not MAX_RESULTS_MIN <= value <= MAX_RESULTS_MAX:
            raise InvalidRequestException(
                f"maxResults must be an integer between {MAX_RESULTS_MIN} and {MAX_RESULTS_MAX}."
            )
        return value

    def check_version_id(raw) -> int:
        if isinstance(raw, bool):
            raw = None
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise InvalidRequestException("versionId must be an integer.")

    # Pagination tokens are opaque to clients: here, the last key returned, base64url-encoded.
    def encode_token(key) -> str:
        return base64.urlsafe_b64encode(json.dumps(key).encode("utf-8")).decode("ascii")

    def decode_token(token):
        try:
            return json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        except (ValueError, UnicodeError, AttributeError):
            raise InvalidRequestException("The nextToken is not valid.")

    def paginate(items, key, max_results, next_token):
        """items sorted by key; returns (page, token or None)."""
        if next_token:
            after = decode_token(next_token)
            try:
                items = [i for i in items if key(i) > after]
            except TypeError:
                raise InvalidRequestException("The nextToken is not valid.")
        page = items[:max_results]
        token = encode_token(key(page[-1])) if len(items) > max_results else None
        return page, token

    # ---------------------------------------------------------------------------------------
    # Backend (state per account/region, on the moto IoT backend instance)
    # ---------------------------------------------------------------------------------------

    def templates_of(backend) -> dict:
        # Call with the lock held. Lazily attached; moto's reset replaces backend.__dict__.
        store = backend.__dict__.get(STATE_ATTR)
        if store is None:
            store = backend.__dict__[STATE_ATTR] = {}
        return store

    def get_template(backend, name: str) -> dict:
        template = templates_of(backend).get(name)
        if template is None:
            raise ResourceNotFoundException(f"The provisioning template {name} does not exist.")
        return template

    def get_version(template: dict, version_id: int) -> dict:
        version = template["versions"].get(version_id)
        if version is None:
            raise ResourceNotFoundException(
                f"Version {version_id} of provisioning template {template['templateName']} "
                "does not exist."
            )
        return version

    def template_arn(backend, name: str) -> str:
        # ARN format (AWS IoT resource types): arn:${Partition}:iot:${Region}:${Account}:
        # provisioningtemplate/${TemplateName}.
        return (
            f"arn:{backend.partition}:iot:{backend.region_name}:{backend.account_id}:"
            f"provisioningtemplate/{name}"
        )

    # CreateProvisioningTemplate: creates the template with version 1 as its default; a name in
    # use -> ResourceAlreadyExistsException (409); preProvisioningHook "only supports template
    # of type FLEET_PROVISIONING"; type defaults to FLEET_PROVISIONING; enabled defaults to false.
    def create_provisioning_template(
        self, template_name, description, template_body, enabled, provisioning_role_arn,
        pre_provisioning_hook, tags, template_type,
    ) -> dict:
        check_name(template_name)
        check_description(description)
        check_body(template_body)
        check_bool(enabled, "enabled")
        check_role_arn(provisioning_role_arn, required=True)
        hook = check_hook(pre_provisioning_hook)
        template_type = template_type if template_type is not None else "FLEET_PROVISIONING"
        if template_type not in TEMPLATE_TYPES:
            raise InvalidRequestException(
                f"type must be one of {', '.join(TEMPLATE_TYPES)} (got {template_type!r})."
            )
        if hook is not None and template_type != "FLEET_PROVISIONING":
            raise InvalidRequestException(
                "preProvisioningHook is only supported for templates of type FLEET_PROVISIONING."
            )
        if tags is not None and not isinstance(tags, list):
            raise InvalidRequestException("tags must be a list of {Key, Value}.")
        now = _now()
        arn = template_arn(self, template_name)
        with lock:
            store = templates_of(self)
            if template_name in store:
                raise ResourceAlreadyExistsException(
                    f"The provisioning template {template_name} already exists.",
                    template_name,
                    arn,
                )
            template = {
                "templateName": template_name,
                "templateArn": arn,
                "description": description,
                "creationDate": now,
                "lastModifiedDate": now,
                "enabled": bool(enabled),
                "provisioningRoleArn": provisioning_role_arn,
                "preProvisioningHook": hook,
                "type": template_type,
                "tags": list(tags or []),
                "defaultVersionId": 1,
                "lastVersionId": 1,
                "versions": {
                    1: {"versionId": 1, "creationDate": now, "templateBody": template_body}
                },
            }
            store[template_name] = template
            return {"templateArn": arn, "templateName": template_name, "defaultVersionId": 1}

    # DescribeProvisioningTemplate: the template with its default version's templateBody;
    # unknown name -> ResourceNotFoundException (404).
    def describe_provisioning_template(self, template_name) -> dict:
        check_name(template_name)
        with lock:
            t = get_template(self, template_name)
            result = {
                "templateArn": t["templateArn"],
                "templateName": t["templateName"],
                "description": t["description"],
                "creationDate": t["creationDate"],
                "lastModifiedDate": t["lastModifiedDate"],
                "defaultVersionId": t["defaultVersionId"],
                "templateBody": t["versions"][t["defaultVersionId"]]["templateBody"],
                "enabled": t["enabled"],
                "provisioningRoleArn": t["provisioningRoleArn"],
                "type": t["type"],
            }
            if t["preProvisioningHook"] is not None:
                result["preProvisioningHook"] = dict(t["preProvisioningHook"])
        return {k: v for k, v in result.items() if v is not None}

    # ListProvisioningTemplates: ProvisioningTemplateSummary items, maxResults 1..250 and
    # nextToken (returned while more results exist); here ordered by templateName.
    def list_provisioning_templates(self, max_results, next_token) -> dict:
        max_results = check_max_results(max_results)
        with lock:
            summaries = [
                {
                    "templateArn": t["templateArn"],
                    "templateName": t["templateName"],
                    "description": t["description"],
                    "creationDate": t["creationDate"],
                    "lastModifiedDate": t["lastModifiedDate"],
                    "enabled": t["enabled"],
                    "type": t["type"],
                }
                for t in templates_of(self).values()
            ]
        summaries.sort(key=lambda s: s["templateName"])
        page, token = paginate(summaries, lambda s: s["templateName"], max_results, next_token)
        result = {"templates": [{k: v for k, v in s.items() if v is not None} for s in page]}
        if token:
            result["nextToken"] = token
        return result

    # UpdateProvisioningTemplate: changes only the fields given; defaultVersionId must name an
    # existing version (else ResourceNotFoundException, 404, as for a missing policy version);
    # preProvisioningHook only for FLEET_PROVISIONING; removePreProvisioningHook removes it.
    def update_provisioning_template(
        self, template_name, description, enabled, default_version_id, provisioning_role_arn,
        pre_provisioning_hook, remove_pre_provisioning_hook,
    ) -> None:
        check_name(template_name)
        check_description(description)
        check_bool(enabled, "enabled")
        check_role_arn(provisioning_role_arn, required=False)
        hook = check_hook(pre_provisioning_hook)
        check_bool(remove_pre_provisioning_hook, "removePreProvisioningHook")
        if default_version_id is not None:
            default_version_id = check_version_id(default_version_id)
        if hook is not None and remove_pre_provisioning_hook:
            raise InvalidRequestException(
                "preProvisioningHook and removePreProvisioningHook cannot be used together."
            )
        with lock:
            t = get_template(self, template_name)
            if hook is not None and t["type"] != "FLEET_PROVISIONING":
                raise InvalidRequestException(
                    "preProvisioningHook is only supported for templates of type "
                    "FLEET_PROVISIONING."
                )
            if default_version_id is not None:
                get_version(t, default_version_id)
            # All checks passed: apply together.
            if description is not None:
                t["description"] = description
            if enabled is not None:
                t["enabled"] = enabled
            if default_version_id is not None:
                t["defaultVersionId"] = default_version_id
            if provisioning_role_arn is not None:
                t["provisioningRoleArn"] = provisioning_role_arn
            if hook is not None:
                t["preProvisioningHook"] = hook
            if remove_pre_provisioning_hook:
                t["preProvisioningHook"] = None
            t["lastModifiedDate"] = _now()

    # DeleteProvisioningTemplate: deletes the template and all its versions; unknown name ->
    # ResourceNotFoundException (404).
    def delete_provisioning_template(self, template_name) -> None:
        check_name(template_name)
        with lock:
            get_template(self, template_name)
            del templates_of(self)[template_name]

    # CreateProvisioningTemplateVersion: next versionId; setAsDefault makes it the default;
    # at most 5 versions per template -> VersionsLimitExceededException (409); unknown
    # template -> ResourceNotFoundException (404).
    def create_provisioning_template_version(self, template_name, template_body, set_as_default):
        check_name(template_name)
        check_body(template_body)
        now = _now()
        with lock:
            t = get_template(self, template_name)
            if len(t["versions"]) >= MAX_VERSIONS:
                raise VersionsLimitExceededException(template_name)
            version_id = t["lastVersionId"] + 1  # ids are not reused after a delete
            t["lastVersionId"] = version_id
            t["versions"][version_id] = {
                "versionId": version_id, "creationDate": now, "templateBody": template_body,
            }
            if set_as_default:
                t["defaultVersionId"] = version_id
            t["lastModifiedDate"] = now
            return {
                "templateArn": t["templateArn"],
                "templateName": template_name,
                "versionId": version_id,
                "isDefaultVersion": t["defaultVersionId"] == version_id,
            }

    # DescribeProvisioningTemplateVersion: versionId, creationDate, templateBody (as stored),
    # isDefaultVersion; unknown template or version -> ResourceNotFoundException (404).
    def describe_provisioning_template_version(self, template_name, version_id) -> dict:
        check_name(template_name)
        version_id = check_version_id(version_id)
        with lock:
            t = get_template(self, template_name)
            v = get_version(t, version_id)
            return {
                "versionId": v["versionId"],
                "creationDate": v["creationDate"],
                "templateBody": v["templateBody"],
                "isDefaultVersion": t["defaultVersionId"] == version_id,
            }

    # ListProvisioningTemplateVersions: ProvisioningTemplateVersionSummary items by versionId,
    # maxResults 1..250 and nextToken; unknown template -> ResourceNotFoundException (404).
    def list_provisioning_template_versions(self, template_name, max_results, next_token):
        check_name(template_name)
        max_results = check_max_results(max_results)
        with lock:
            t = get_template(self, template_name)
            summaries = [
                {
                    "versionId": v["versionId"],
                    "creationDate": v["creationDate"],
                    "isDefaultVersion": t["defaultVersionId"] == v["versionId"],
                }
                for v in sorted(t["versions"].values(), key=lambda v: v["versionId"])
            ]
        page, token = paginate(summaries, lambda s: s["versionId"], max_results, next_token)
        result = {"versions": page}
        if token:
            result["nextToken"] = token
        return result

    # DeleteProvisioningTemplateVersion: the default version cannot be deleted ->
    # DeleteConflictException (409); unknown template or version -> ResourceNotFoundException.
    def delete_provisioning_template_version(self, template_name, version_id) -> None:
        check_name(template_name)
        version_id = check_version_id(version_id)
        with lock:
            t = get_template(self, template_name)
            get_version(t, version_id)
            if t["defaultVersionId"] == version_id:
                raise DeleteConflictException(
                    f"Version {version_id} is the default version of provisioning template "
                    f"{template_name} and cannot be deleted; set another default version first."
                )
            del t["versions"][version_id]
            t["lastModifiedDate"] = _now()

    for fn in (
        create_provisioning_template,
        describe_provisioning_template,
        list_provisioning_templates,
        update_provisioning_template,
        delete_provisioning_template,
        create_provisioning_template_version,
        describe_provisioning_template_version,
        list_provisioning_template_versions,
        delete_provisioning_template_version,
    ):
        setattr(IoTBackend, fn.__name__, fn)

    # ---------------------------------------------------------------------------------------
    # Responses (REST bindings from the service model: path labels, query string, JSON body)
    # ---------------------------------------------------------------------------------------

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
    def r_create_provisioning_template(self):
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
    def r_describe_provisioning_template(self):
        return ActionResult(
            self.iot_backend.describe_provisioning_template(uri(self, "templateName"))
        )

    # GET /provisioning-templates?maxResults&nextToken
    def r_list_provisioning_templates(self):
        return ActionResult(
            self.iot_backend.list_provisioning_templates(
                query(self, "maxResults"), query(self, "nextToken")
            )
        )

    # PATCH /provisioning-templates/{templateName}
    def r_update_provisioning_template(self):
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
    def r_delete_provisioning_template(self):
        self.iot_backend.delete_provisioning_template(uri(self, "templateName"))
        return EmptyResult()

    # POST /provisioning-templates/{templateName}/versions?setAsDefault
    def r_create_provisioning_template_version(self):
        body = json_body(self)
        return ActionResult(
            self.iot_backend.create_provisioning_template_version(
                uri(self, "templateName"),
                body.get("templateBody"),
                query_bool(self, "setAsDefault"),
            )
        )

    # GET /provisioning-templates/{templateName}/versions/{versionId}
    def r_describe_provisioning_template_version(self):
        return ActionResult(
            self.iot_backend.describe_provisioning_template_version(
                uri(self, "templateName"), uri(self, "versionId")
            )
        )

    # GET /provisioning-templates/{templateName}/versions?maxResults&nextToken
    def r_list_provisioning_template_versions(self):
        return ActionResult(
            self.iot_backend.list_provisioning_template_versions(
                uri(self, "templateName"), query(self, "maxResults"), query(self, "nextToken")
            )
        )

    # DELETE /provisioning-templates/{templateName}/versions/{versionId}
    def r_delete_provisioning_template_version(self):
        self.iot_backend.delete_provisioning_template_version(
            uri(self, "templateName"), uri(self, "versionId")
        )
        return EmptyResult()

    for fn in (
        r_create_provisioning_template,
        r_describe_provisioning_template,
        r_list_provisioning_templates,
        r_update_provisioning_template,
        r_delete_provisioning_template,
        r_create_provisioning_template_version,
        r_describe_provisioning_template_version,
        r_list_provisioning_template_versions,
        r_delete_provisioning_template_version,
    ):
        name = fn.__name__[2:]
        fn.__name__ = fn.__qualname__ = name
        setattr(IoTResponse, name, fn)
