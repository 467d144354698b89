"""The provisioning-template operations' constraints (AWS IoT API reference) and pagination.
AWS answers constraint violations with InvalidRequestException, HTTP 400."""

from __future__ import annotations

import base64
import json
import re
import unicodedata

from moto.iot.exceptions import InvalidRequestException

# The guide's static rules for a template body, shared with the data plane's RegisterThing
# (dataplane/template.py) so that the two cannot disagree.
from dataplane.template import unsupported_features

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
# MaxResults: 1..250 (List* operations). AWS documents no default; 25, as elsewhere in IoT.
MAX_RESULTS_MIN, MAX_RESULTS_MAX, MAX_RESULTS_DEFAULT = 1, 250, 25


def _has_control_chars(text: str) -> bool:
    # [^\p{C}]*: no Unicode "Other" characters (control, format, unassigned, private use).
    return any(unicodedata.category(ch).startswith("C") for ch in text)


def check_name(name) -> str:
    if not isinstance(name, str) or not TEMPLATE_NAME_RE.match(name):
        raise InvalidRequestException(
            f"1 validation error detected: Value '{name}' at 'templateName' failed to "
            "satisfy constraint: Member must have length between 1 and 36 and satisfy "
            "regular expression pattern: ^[0-9A-Za-z_-]+$"
        )
    return name


def check_body(body, template_type: str = "FLEET_PROVISIONING") -> str:
    # templateBody: "The JSON formatted contents of the provisioning template" (required,
    # at most 10240 characters); a template is a JSON object of the sections, intrinsic
    # functions and resource keys the Developer Guide documents ("Provisioning templates"),
    # see unsupported_features. Stored and returned verbatim.
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
    problems = unsupported_features(parsed, template_type)
    if problems:
        raise InvalidRequestException(f"The template body is not valid: {'; '.join(problems)}.")
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


def check_template_type(template_type, hook) -> str:
    """The type, FLEET_PROVISIONING by default; a preProvisioningHook "only supports template
    of type FLEET_PROVISIONING"."""
    template_type = template_type if template_type is not None else "FLEET_PROVISIONING"
    if template_type not in TEMPLATE_TYPES:
        raise InvalidRequestException(
            f"type must be one of {', '.join(TEMPLATE_TYPES)} (got {template_type!r})."
        )
    if hook is not None and template_type != "FLEET_PROVISIONING":
        raise InvalidRequestException(
            "preProvisioningHook is only supported for templates of type FLEET_PROVISIONING."
        )
    return template_type


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
