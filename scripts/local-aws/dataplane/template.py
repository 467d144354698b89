"""Fleet-provisioning template evaluation for the local data plane (pure: no I/O).

This module owns turning a provisioning template body plus a device's RegisterThing
parameters into a Plan: the thing, certificate and policy resources to make, with every
intrinsic function resolved, and the DeviceConfiguration to return. The fleet-provisioning
service (service.py and provisioning.py beside this file) then carries the plan out through
the local endpoint. Tests: test_template.py (including the exact template shapes claimfab's
`setup` makes, src/core/account_documents.rs provisioning_template_body).

What it follows (AWS IoT Core Developer Guide, "Provisioning templates"):
  * sections Parameters, Mappings, Conditions, Resources, DeviceConfiguration;
  * Parameters: each {"Type": "String", "Default"?}; the device's value, else the Default;
    a parameter used without either is a rejection. AWS supplies AWS::IoT::Certificate::Id
    (the certificate being registered) itself, and a device cannot override it;
  * intrinsic functions Ref (parameters, AWS::NoValue), Fn::Join, Fn::Sub, Fn::If with
    Conditions (Fn::Equals, Fn::And, Fn::Or, Fn::Not, {"Condition": name}), Fn::Split,
    Fn::Select, Fn::FindInMap, Fn::Base64; a resource's own "Condition" key;
  * resources AWS::IoT::Thing (ThingName, AttributePayload, ThingGroups, ThingTypeName,
    OverrideSettings), AWS::IoT::Certificate (CertificateId, Status, ThingPrincipalType:
    EXCLUSIVE_THING or NON_EXCLUSIVE_THING, how the certificate is attached to the thing; as
    AWS's own nucleus lite CloudFormation template declares it, aws-greengrass-lite
    docs/fleet_provisioning/fleet-provisioning-cfn.yaml) and AWS::IoT::Policy
    (PolicyName of an existing policy, or PolicyDocument: a per-device policy, at most 2048
    characters not counting whitespace, AWS IoT Core's policy size quota);
  * OverrideSettings values DO_NOTHING, REPLACE, FAIL, MERGE (MERGE for AttributePayload and
    ThingGroups only); where a template gives none, DO_NOTHING (the guide's default: an
    existing thing is left as it is).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field

CERT_ID_PARAM = "AWS::IoT::Certificate::Id"
NO_VALUE = object()

THING_TYPE = "AWS::IoT::Thing"
CERT_TYPE = "AWS::IoT::Certificate"
POLICY_TYPE = "AWS::IoT::Policy"
RESOURCE_TYPES = (THING_TYPE, CERT_TYPE, POLICY_TYPE)

# AttachThingPrincipal's thingPrincipalType; AWS's default is NON_EXCLUSIVE_THING.
THING_PRINCIPAL_TYPES = ("EXCLUSIVE_THING", "NON_EXCLUSIVE_THING")
OVERRIDE_VALUES = ("DO_NOTHING", "REPLACE", "FAIL", "MERGE")
OVERRIDE_DEFAULT = "DO_NOTHING"
# AWS IoT Core quotas: "Maximum size of a policy document: 2048 characters (excluding white
# space)".
POLICY_DOCUMENT_MAX = 2048
# CreateThing: thingName length 1..128, pattern [a-zA-Z0-9:_-]+.
THING_NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")


class TemplateError(Exception):
    """A RegisterThing rejection: status code, error code and message as AWS answers them."""

    def __init__(self, message: str, code: str = "InvalidParameters", status: int = 400):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def invalid_template(message: str) -> TemplateError:
    return TemplateError(f"The provisioning template is not valid: {message}", "InvalidTemplate", 400)


@dataclass
class Plan:
    thing: dict | None = None  # ThingName, AttributePayload?, ThingGroups?, ThingTypeName?, OverrideSettings
    certificate: dict | None = None  # CertificateId, Status ("ACTIVE"/"INACTIVE"), ThingPrincipalType?
    policies: list[dict] = field(default_factory=list)  # {"PolicyName"} or {"PolicyDocument", "PolicyName"}
    device_configuration: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)


def policy_document_size(document: str) -> int:
    return sum(1 for ch in document if not ch.isspace())


def template_policy_name(document: str) -> str:
    """Name of the policy made for a template's PolicyDocument: the SHA-256 (hex) of the
    document, the form AWS IoT gives the policies it creates from provisioning templates."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def resolve_parameters(template: dict, supplied: dict, system: dict) -> dict:
    """Declared parameters -> values (device value, else Default); system values (AWS::...)
    always win. Parameters not declared are ignored. Missing ones are left out and only
    rejected when used (see Evaluator.ref)."""
    declared = template.get("Parameters") or {}
    if not isinstance(declared, dict):
        raise invalid_template("Parameters must be an object")
    values: dict = {}
    for name, spec in declared.items():
        if not isinstance(spec, dict):
            raise invalid_template(f"parameter {name} must be an object")
        if spec.get("Type", "String") != "String":
            raise invalid_template(f"parameter {name} has Type {spec.get('Type')!r}; only String is supported")
        if name in system:
            values[name] = system[name]
        elif name in supplied:
            values[name] = supplied[name]
        elif "Default" in spec:
            values[name] = spec["Default"]
    for name, value in system.items():
        values.setdefault(name, value)
    return values


class Evaluator:
    def __init__(self, template: dict, parameters: dict):
        self.template = template
        self.parameters = parameters
        self.mappings = template.get("Mappings") or {}
        self.conditions = template.get("Conditions") or {}
        self._condition_cache: dict[str, bool] = {}
        self._evaluating: set[str] = set()

    # -- conditions ---------------------------------------------------------------------
    def condition(self, name) -> bool:
        if not isinstance(name, str) or name not in self.conditions:
            raise invalid_template(f"condition {name!r} is not defined")
        if name in self._condition_cache:
            return self._condition_cache[name]
        if name in self._evaluating:
            raise invalid_template(f"condition {name} refers to itself")
        self._evaluating.add(name)
        value = self.boolean(self.conditions[name])
        self._evaluating.discard(name)
        self._condition_cache[name] = value
        return value

    def boolean(self, node) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::Equals":
                if not isinstance(arg, list) or len(arg) != 2:
                    raise invalid_template("Fn::Equals takes two values")
                a, b = (self.value(x) for x in arg)
                return _scalar(a) == _scalar(b)
            if key == "Fn::Not":
                if not isinstance(arg, list) or len(arg) != 1:
                    raise invalid_template("Fn::Not takes one condition")
                return not self.boolean(arg[0])
            if key in ("Fn::And", "Fn::Or"):
                if not isinstance(arg, list) or not 2 <= len(arg) <= 10:
                    raise invalid_template(f"{key} takes 2 to 10 conditions")
                results = (self.boolean(x) for x in arg)
                return all(results) if key == "Fn::And" else any(results)
        value = self.value(node)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid_template(f"not a condition: {json.dumps(node)[:200]}")

    # -- values -------------------------------------------------------------------------
    def ref(self, name):
        if name == "AWS::NoValue":
            return NO_VALUE
        if not isinstance(name, str):
            raise invalid_template("Ref takes a name")
        if name in self.parameters:
            return self.parameters[name]
        declared = self.template.get("Parameters") or {}
        if name in declared:
            raise TemplateError(f"Parameter {name} is required but was not provided.", "InvalidParameters", 400)
        raise invalid_template(f"Ref {name}: no such parameter")

    def string(self, node, what: str) -> str:
        value = self.value(node)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise invalid_template(f"{what} must be a string")
        return value

    def value(self, node):
        if isinstance(node, list):
            out = [self.value(x) for x in node]
            return [x for x in out if x is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::Join":
                if not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[0], str):
                    raise invalid_template("Fn::Join takes [delimiter, [values]]")
                items = self.value(arg[1])
                if not isinstance(items, list):
                    raise invalid_template("Fn::Join's second argument must be a list")
                return arg[0].join(self.string(x, "a Fn::Join value") for x in items)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                if not isinstance(arg, list) or len(arg) != 3:
                    raise invalid_template("Fn::If takes [condition, value if true, value if false]")
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Split":
                if not isinstance(arg, list) or len(arg) != 2 or not isinstance(arg[0], str) or not arg[0]:
                    raise invalid_template("Fn::Split takes [delimiter, string]")
                return self.string(arg[1], "Fn::Split's string").split(arg[0])
            if key == "Fn::Select":
                if not isinstance(arg, list) or len(arg) != 2:
                    raise invalid_template("Fn::Select takes [index, list]")
                try:
                    index = int(self.value(arg[0]))
                except (TypeError, ValueError):
                    raise invalid_template("Fn::Select's index must be an integer") from None
                items = self.value(arg[1])
                if not isinstance(items, list) or not 0 <= index < len(items):
                    raise TemplateError(f"Fn::Select index {index} is out of range.", "InvalidParameters", 400)
                return items[index]
            if key == "Fn::FindInMap":
                if not isinstance(arg, list) or len(arg) != 3:
                    raise invalid_template("Fn::FindInMap takes [map, top-level key, second-level key]")
                map_name, top, second = (self.string(x, "a Fn::FindInMap key") for x in arg)
                try:
                    return self.mappings[map_name][top][second]
                except (KeyError, TypeError):
                    raise TemplateError(
                        f"Fn::FindInMap: no value for [{map_name}][{top}][{second}].", "InvalidParameters", 400
                    ) from None
            if key == "Fn::Base64":
                return base64.b64encode(self.string(arg, "Fn::Base64's value").encode("utf-8")).decode("ascii")
            if key.startswith("Fn::"):
                raise invalid_template(f"{key} is not supported in provisioning templates")
        out = {}
        for k, v in node.items():
            resolved = self.value(v)
            if resolved is not NO_VALUE:
                out[k] = resolved
        return out

    def sub(self, arg) -> str:
        if isinstance(arg, str):
            text, local = arg, {}
        elif isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict):
            text, local = arg[0], {k: self.string(v, f"Fn::Sub variable {k}") for k, v in arg[1].items()}
        else:
            raise invalid_template("Fn::Sub takes a string or [string, {variables}]")

        def repl(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in local:
                return local[name]
            value = self.ref(name)
            if value is NO_VALUE:
                return ""
            return self.string(value, f"${{{name}}}")

        return re.sub(r"\$\{([^}]*)\}", repl, text)


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _override(settings, key: str) -> str:
    value = (settings or {}).get(key, OVERRIDE_DEFAULT)
    if value not in OVERRIDE_VALUES or (value == "MERGE" and key == "ThingTypeName"):
        raise invalid_template(f"OverrideSettings.{key} cannot be {value!r}")
    return value


def evaluate(template, supplied: dict, certificate_id: str, extra_system: dict | None = None) -> Plan:
    """The plan for registering `certificate_id` with `supplied` parameters."""
    if isinstance(template, str):
        try:
            template = json.loads(template)
        except ValueError as e:
            raise invalid_template(f"not JSON: {e}") from None
    if not isinstance(template, dict):
        raise invalid_template("the body must be a JSON object")
    if not isinstance(supplied, dict) or not all(isinstance(v, str) for v in supplied.values()):
        raise TemplateError("parameters must be an object of string values.", "InvalidParameters", 400)
    system = {CERT_ID_PARAM: certificate_id, **(extra_system or {})}
    parameters = resolve_parameters(template, supplied, system)
    ev = Evaluator(template, parameters)
    plan = Plan(parameters=parameters)

    resources = template.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise invalid_template("Resources must be a non-empty object")
    for logical, resource in resources.items():
        if not isinstance(resource, dict):
            raise invalid_template(f"resource {logical} must be an object")
        rtype = resource.get("Type")
        if rtype not in RESOURCE_TYPES:
            raise invalid_template(f"resource {logical} has unsupported Type {rtype!r}")
        if "Condition" in resource and not ev.condition(resource["Condition"]):
            continue
        props = ev.value(resource.get("Properties") or {})
        if not isinstance(props, dict):
            raise invalid_template(f"resource {logical}: Properties must be an object")
        if rtype == THING_TYPE:
            if plan.thing is not None:
                raise invalid_template("at most one AWS::IoT::Thing resource")
            plan.thing = thing_plan(logical, props, resource.get("OverrideSettings"))
        elif rtype == CERT_TYPE:
            if plan.certificate is not None:
                raise invalid_template("at most one AWS::IoT::Certificate resource")
            plan.certificate = certificate_plan(logical, props, certificate_id)
        else:
            plan.policies.append(policy_plan(logical, props))

    config = template.get("DeviceConfiguration")
    if config is not None:
        config = ev.value(config)
        if not isinstance(config, dict):
            raise invalid_template("DeviceConfiguration must be an object")
        plan.device_configuration = {k: _scalar(v) if not isinstance(v, (dict, list)) else v for k, v in config.items()}
    return plan


def thing_plan(logical: str, props: dict, override_settings) -> dict:
    name = props.get("ThingName")
    if not isinstance(name, str) or not THING_NAME_RE.match(name):
        raise TemplateError(
            f"Invalid ThingName {name!r}: it must be 1 to 128 characters of [a-zA-Z0-9:_-].",
            "InvalidParameters", 400,
        )
    thing = {"ThingName": name}
    if "AttributePayload" in props:
        attrs = props["AttributePayload"]
        if not isinstance(attrs, dict):
            raise invalid_template(f"resource {logical}: AttributePayload must be an object")
        thing["AttributePayload"] = {k: _scalar(v) for k, v in attrs.items()}
    if "ThingGroups" in props:
        groups = props["ThingGroups"]
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise invalid_template(f"resource {logical}: ThingGroups must be a list of names")
        thing["ThingGroups"] = groups
    if "ThingTypeName" in props:
        if not isinstance(props["ThingTypeName"], str):
            raise invalid_template(f"resource {logical}: ThingTypeName must be a string")
        thing["ThingTypeName"] = props["ThingTypeName"]
    if override_settings is not None and not isinstance(override_settings, dict):
        raise invalid_template(f"resource {logical}: OverrideSettings must be an object")
    thing["OverrideSettings"] = {
        key: _override(override_settings, key) for key in ("AttributePayload", "ThingGroups", "ThingTypeName")
    }
    return thing


def certificate_plan(logical: str, props: dict, certificate_id: str) -> dict:
    cert_id = props.get("CertificateId")
    if cert_id != certificate_id:
        raise invalid_template(
            f"resource {logical}: CertificateId must be Ref {CERT_ID_PARAM} in fleet provisioning"
        )
    status = str(props.get("Status", "Inactive")).upper()
    if status not in ("ACTIVE", "INACTIVE"):
        raise invalid_template(f"resource {logical}: Status must be Active or Inactive")
    certificate = {"CertificateId": cert_id, "Status": status}
    if "ThingPrincipalType" in props:
        kind = props["ThingPrincipalType"]
        if kind not in THING_PRINCIPAL_TYPES:
            raise invalid_template(
                f"resource {logical}: ThingPrincipalType must be EXCLUSIVE_THING or NON_EXCLUSIVE_THING, not {kind!r}"
            )
        certificate["ThingPrincipalType"] = kind
    return certificate


def policy_plan(logical: str, props: dict) -> dict:
    if "PolicyName" in props and "PolicyDocument" in props:
        raise invalid_template(f"resource {logical}: give PolicyName or PolicyDocument, not both")
    if "PolicyName" in props:
        if not isinstance(props["PolicyName"], str) or not props["PolicyName"]:
            raise invalid_template(f"resource {logical}: PolicyName must be a string")
        return {"PolicyName": props["PolicyName"]}
    if "PolicyDocument" not in props:
        raise invalid_template(f"resource {logical}: PolicyName or PolicyDocument is required")
    document = props["PolicyDocument"]
    if isinstance(document, dict):
        document = json.dumps(document, separators=(",", ":"))
    if not isinstance(document, str):
        raise invalid_template(f"resource {logical}: PolicyDocument must be JSON text or an object")
    try:
        parsed = json.loads(document)
    except ValueError as e:
        raise TemplateError(f"The policy document is not valid JSON: {e}", "InvalidParameters", 400) from None
    if not isinstance(parsed, dict) or "Statement" not in parsed:
        raise TemplateError("The policy document must be an object with a Statement.", "InvalidParameters", 400)
    size = policy_document_size(document)
    if size > POLICY_DOCUMENT_MAX:
        raise TemplateError(
            f"The policy document is {size} characters (whitespace excluded); AWS IoT allows at most "
            f"{POLICY_DOCUMENT_MAX}.", "InvalidParameters", 400,
        )
    return {"PolicyDocument": document, "PolicyName": template_policy_name(document)}
