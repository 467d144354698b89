"""The provisioning templates' state (per account and region, on the moto IoT backend instance)
and the nine operations on it, as IoTBackend methods (install() adds them)."""

from __future__ import annotations

import datetime as dt

from moto.iot import models as iot_models
from moto.iot.exceptions import (
    DeleteConflictException,
    IoTClientError,
    InvalidRequestException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)

from endpoint.iot_locking import STATE_LOCK as lock
from endpoint.provisioning_templates.checks import (
    check_body,
    check_bool,
    check_description,
    check_hook,
    check_max_results,
    check_name,
    check_role_arn,
    check_template_type,
    check_version_id,
    paginate,
)

STATE_ATTR = "_claimfab_provisioning_templates"
# AWS IoT Core quotas: at most 5 versions per provisioning template.
MAX_VERSIONS = 5


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


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


def new_template(arn, template_name, description, template_body, enabled, role_arn, hook, tags, template_type):
    """A new template's record, version 1 its default."""
    now = _now()
    return {
        "templateName": template_name,
        "templateArn": arn,
        "description": description,
        "creationDate": now,
        "lastModifiedDate": now,
        "enabled": bool(enabled),
        "provisioningRoleArn": role_arn,
        "preProvisioningHook": hook,
        "type": template_type,
        "tags": list(tags or []),
        "defaultVersionId": 1,
        "lastVersionId": 1,
        "versions": {1: {"versionId": 1, "creationDate": now, "templateBody": template_body}},
    }


# CreateProvisioningTemplate: creates the template with version 1 as its default; a name in
# use -> ResourceAlreadyExistsException (409); preProvisioningHook "only supports template
# of type FLEET_PROVISIONING"; type defaults to FLEET_PROVISIONING; enabled defaults to false.
def create_provisioning_template(
    self, template_name, description, template_body, enabled, provisioning_role_arn,
    pre_provisioning_hook, tags, template_type,
) -> dict:
    check_name(template_name)
    check_description(description)
    check_bool(enabled, "enabled")
    check_role_arn(provisioning_role_arn, required=True)
    hook = check_hook(pre_provisioning_hook)
    template_type = check_template_type(template_type, hook)
    check_body(template_body, template_type)  # the sections allowed depend on the type
    if tags is not None and not isinstance(tags, list):
        raise InvalidRequestException("tags must be a list of {Key, Value}.")
    arn = template_arn(self, template_name)
    template = new_template(
        arn, template_name, description, template_body, enabled, provisioning_role_arn, hook, tags,
        template_type,
    )
    with lock:
        store = templates_of(self)
        if template_name in store:
            raise ResourceAlreadyExistsException(
                f"The provisioning template {template_name} already exists.",
                template_name,
                arn,
            )
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


def _apply_update(t, description, enabled, default_version_id, role_arn, hook, remove_hook) -> None:
    """Applies the fields given, all together, once every check passed."""
    if description is not None:
        t["description"] = description
    if enabled is not None:
        t["enabled"] = enabled
    if default_version_id is not None:
        t["defaultVersionId"] = default_version_id
    if role_arn is not None:
        t["provisioningRoleArn"] = role_arn
    if hook is not None:
        t["preProvisioningHook"] = hook
    if remove_hook:
        t["preProvisioningHook"] = None
    t["lastModifiedDate"] = _now()


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
        _apply_update(
            t, description, enabled, default_version_id, provisioning_role_arn, hook,
            remove_pre_provisioning_hook,
        )


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
        if t["type"] != "FLEET_PROVISIONING":
            # Mappings and DeviceConfiguration are fleet provisioning sections only.
            check_body(template_body, t["type"])
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


OPERATIONS = (
    create_provisioning_template,
    describe_provisioning_template,
    list_provisioning_templates,
    update_provisioning_template,
    delete_provisioning_template,
    create_provisioning_template_version,
    describe_provisioning_template_version,
    list_provisioning_template_versions,
    delete_provisioning_template_version,
)


def install() -> None:
    """The nine operations as IoTBackend methods."""
    for fn in OPERATIONS:
        setattr(iot_models.IoTBackend, fn.__name__, fn)
