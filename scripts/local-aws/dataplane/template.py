"""Fleet-provisioning template evaluation for the local data plane (pure: no I/O).

This module owns turning a provisioning template body plus a device's RegisterThing
parameters into a Plan: the thing, certificate and policy resources to make, with every
intrinsic function resolved, and the DeviceConfiguration to return. The fleet-provisioning
service (service.py and provisioning.py beside this file) then carries the plan out through
the local endpoint. It also owns the static checks of a body (unsupported_features), which
the local endpoint's CreateProvisioningTemplate and CreateProvisioningTemplateVersion apply
too (endpoint/provisioning_templates/checks.py), so a template AWS would not take is refused
when it is made and, should one get in anyway, at RegisterThing. Tests: test_template.py
(including the exact template shapes claimfab's `setup` makes,
src/core/account_documents/mod.rs provisioning_template_body).

What it follows (AWS IoT Core Developer Guide, "Provisioning templates"), refusing (code
InvalidTemplate) whatever the guide does not document:
  * sections Parameters, Resources and, for fleet provisioning templates, Mappings and
    DeviceConfiguration; no other section (no Conditions);
  * Parameters: each {"Type": "String", "Default"?}; the device's value, else the Default;
    a parameter used without either is a rejection. AWS supplies AWS::IoT::Certificate::Id
    (the certificate being registered) itself, and a device cannot override it;
  * intrinsic functions Ref (parameters), Fn::Join, Fn::Select, Fn::FindInMap, Fn::Split and
    Fn::Sub, anywhere but in Mappings ("You cannot include parameters, pseudo parameters, or
    call intrinsic functions in the Mappings section"); not Fn::If, Fn::Equals, Fn::Not,
    Fn::And, Fn::Or, Fn::Base64, Fn::GetAtt or any other CloudFormation function;
  * resources of Type, Properties and OverrideSettings (no resource "Condition"):
    AWS::IoT::Thing (ThingName, AttributePayload, ThingGroups, ThingTypeName,
    OverrideSettings), AWS::IoT::Certificate (CertificateId, Status ACTIVE or INACTIVE,
    ACTIVE by default, ThingPrincipalType: EXCLUSIVE_THING or NON_EXCLUSIVE_THING, how the
    certificate is attached to the thing; as AWS's own nucleus lite CloudFormation template
    declares it, aws-greengrass-lite docs/fleet_provisioning/fleet-provisioning-cfn.yaml)
    and AWS::IoT::Policy (PolicyName of an existing policy, or PolicyDocument: a per-device
    policy, at most 2048 characters not counting whitespace, AWS IoT Core's policy size
    quota; no OverrideSettings, "not available for policy resources");
  * OverrideSettings values DO_NOTHING, REPLACE, FAIL, MERGE (MERGE for AttributePayload and
    ThingGroups only), by the property's name or the guide's ATTRIBUTE_PAYLOAD, THING_TYPE_NAME,
    THING_GROUPS; where a template gives none, DO_NOTHING (the guide states no default: an
    existing thing is left as it is). A certificate's OverrideSettings (for its Status) is
    not modelled: in fleet provisioning the certificate always exists already, and the guide
    does not say what each value then does, so such a template is refused at RegisterThing;
  * DeviceConfiguration: an object of string values ("doesn't support nested JSON
    objects"); numbers and booleans are rendered as strings.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

CERT_ID_PARAM = "AWS::IoT::Certificate::Id"

THING_TYPE = "AWS::IoT::Thing"
CERT_TYPE = "AWS::IoT::Certificate"
POLICY_TYPE = "AWS::IoT::Policy"
RESOURCE_TYPES = (THING_TYPE, CERT_TYPE, POLICY_TYPE)

# The guide's sections, intrinsic functions and resource keys; anything else is refused.
# Mappings and DeviceConfiguration are for fleet provisioning templates only.
SECTIONS = ("Parameters", "Resources")
FLEET_SECTIONS = SECTIONS + ("Mappings", "DeviceConfiguration")
FUNCTIONS = ("Fn::Join", "Fn::Select", "Fn::FindInMap", "Fn::Split", "Fn::Sub")
RESOURCE_KEYS = ("Type", "Properties", "OverrideSettings")

# AttachThingPrincipal's thingPrincipalType; AWS's default is NON_EXCLUSIVE_THING.
THING_PRINCIPAL_TYPES = ("EXCLUSIVE_THING", "NON_EXCLUSIVE_THING")
OVERRIDE_VALUES = ("DO_NOTHING", "REPLACE", "FAIL", "MERGE")
OVERRIDE_DEFAULT = "DO_NOTHING"
# The guide names the thing's OverrideSettings properties ATTRIBUTE_PAYLOAD, THING_TYPE_NAME
# and THING_GROUPS, and its example spells them as the properties; both are read.
OVERRIDE_NAMES = {
    "AttributePayload": "AttributePayload", "ATTRIBUTE_PAYLOAD": "AttributePayload",
    "ThingTypeName": "ThingTypeName", "THING_TYPE_NAME": "ThingTypeName",
    "ThingGroups": "ThingGroups", "THING_GROUPS": "ThingGroups",
}
# Each resource type's Properties the guide documents for fleet provisioning, and those it
# documents that are not modelled here (refused as such).
PROPERTIES = {
    THING_TYPE: ("ThingName", "AttributePayload", "ThingTypeName", "ThingGroups"),
    CERT_TYPE: ("CertificateId", "Status", "ThingPrincipalType"),
    POLICY_TYPE: ("PolicyName", "PolicyDocument"),
}
NOT_MODELLED_PROPERTIES = {
    THING_TYPE: ("BillingGroup",),
    CERT_TYPE: ("CertificateSigningRequest", "CACertificatePem", "CertificatePem"),
}
STATUSES = ("ACTIVE", "INACTIVE", "Active", "Inactive")  # the guide's values and its example's
PARAMETER_KEYS = ("Type", "Default")
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


def unsupported_function(name: str) -> str:
    return (
        f"{name} is not an intrinsic function AWS IoT documents for provisioning templates "
        f"({', '.join(FUNCTIONS)}, Ref)"
    )


def is_function_call(node) -> bool:
    """A {"Ref": ...} or {"Fn::...": ...} node: one key, an intrinsic function's name."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (key,) = node
    return key == "Ref" or key.startswith("Fn::")


def _objects(node):
    """Every JSON object in `node`, `node` included, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _unique(messages) -> list[str]:
    return list(dict.fromkeys(messages))


def unsupported_features(body: dict, template_type: str = "FLEET_PROVISIONING") -> list[str]:
    """What in `body` the guide does not document for a provisioning template of
    `template_type`, one message each naming it; empty when there is nothing. Static: needs
    no parameters, so the local endpoint applies it when a template is made, and evaluate()
    when one is used."""
    sections = FLEET_SECTIONS if template_type == "FLEET_PROVISIONING" else SECTIONS
    problems = [
        f"{key} is not a section AWS IoT documents for {template_type} provisioning templates "
        f"({', '.join(sections)})"
        for key in body if key not in sections
    ]
    # Unknown sections are refused whole; what they hold is not looked into.
    known = {key: value for key, value in body.items() if key in sections}
    for name in ("Parameters", "Resources", "DeviceConfiguration"):
        problems += _undocumented_functions(known.get(name))
    problems += _functions_in_mappings(known.get("Mappings"))
    problems += _parameter_declarations(known.get("Parameters"))
    problems += _undeclared_refs(known)
    problems += _resource_keys(known.get("Resources"))
    problems += _resource_properties(known.get("Resources"))
    problems += _nested_device_configuration(known.get("DeviceConfiguration"))
    return _unique(problems)


def _parameter_declarations(parameters) -> list[str]:
    if parameters is None:
        return []
    if not isinstance(parameters, dict):
        return ["Parameters must be an object"]
    problems = []
    for name, spec in parameters.items():
        if not isinstance(spec, dict):
            problems.append(f"parameter {name} must be an object")
            continue
        problems += [f"parameter {name} has {key}; the guide documents {', '.join(PARAMETER_KEYS)}"
                     for key in spec if key not in PARAMETER_KEYS]
        if spec.get("Type", "String") != "String":
            problems.append(f"parameter {name} has Type {spec.get('Type')!r}; only String is documented")
        if "Default" in spec and not isinstance(spec["Default"], str):
            problems.append(f"parameter {name} has a Default that is not a string")
    return problems


def _sub_names(arg) -> list[str]:
    """The ${NAME}s of an Fn::Sub that refer to parameters (not ${!literal} nor its own
    variables)."""
    text, local = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1]) if (
        isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str) and isinstance(arg[1], dict)) else ("", {})
    return [n for n in re.findall(r"\$\{([^}]*)\}", text) if not n.startswith("!") and n not in local]


def _undeclared_refs(sections: dict) -> list[str]:
    """Refs (and Fn::Sub names) to no declared parameter; AWS supplies only
    AWS::IoT::Certificate::Id undeclared."""
    declared = set(sections.get("Parameters") or {}) | {CERT_ID_PARAM}
    problems = []
    for name in ("Resources", "DeviceConfiguration"):
        for obj in _objects(sections.get(name)):
            names = [obj["Ref"]] if "Ref" in obj and len(obj) == 1 else []
            names += _sub_names(obj["Fn::Sub"]) if "Fn::Sub" in obj and len(obj) == 1 else []
            problems += [f"Ref {n!r} names no declared parameter" for n in names
                         if not isinstance(n, str) or n not in declared]
    return problems


def _resource_properties(resources) -> list[str]:
    if not isinstance(resources, dict):
        return []
    if not resources:
        return ["Resources must not be empty"]
    problems = []
    for logical, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        rtype, props = resource.get("Type"), resource.get("Properties") or {}
        if rtype not in RESOURCE_TYPES:
            problems.append(f"resource {logical} has Type {rtype!r}; the guide documents {', '.join(RESOURCE_TYPES)}")
            continue
        if not isinstance(props, dict):
            continue
        for key in props:
            if key in NOT_MODELLED_PROPERTIES.get(rtype, ()):
                problems.append(f"resource {logical}: {key} is not modelled by the local endpoint for fleet provisioning")
            elif key not in PROPERTIES[rtype]:
                problems.append(f"resource {logical}: {key} is not a property AWS IoT documents for {rtype}")
        if rtype == CERT_TYPE and isinstance(props.get("Status"), str) and props["Status"] not in STATUSES:
            problems.append(f"resource {logical}: Status {props['Status']!r} is not ACTIVE or INACTIVE")
        settings = resource.get("OverrideSettings")
        if rtype == THING_TYPE and isinstance(settings, dict):
            problems += [f"resource {logical}: OverrideSettings {key} is not one the guide documents "
                         f"({', '.join(OVERRIDE_NAMES)})" for key in settings if key not in OVERRIDE_NAMES]
    return problems


def _undocumented_functions(node) -> list[str]:
    # Any "Fn::" key counts, even in an object with other keys: the guide does not say
    # whether AWS would read that as a call, so it is not let through as plain data.
    return [
        unsupported_function(key)
        for obj in _objects(node) for key in obj
        if key.startswith("Fn::") and key not in FUNCTIONS
    ]


def _functions_in_mappings(mappings) -> list[str]:
    return [
        f"the Mappings section cannot refer to parameters or call intrinsic functions ({key} found)"
        for obj in _objects(mappings) for key in obj
        if key == "Ref" or key.startswith("Fn::")
    ]


def _resource_keys(resources) -> list[str]:
    if not isinstance(resources, dict):
        return []  # evaluate() says what is wrong with it
    problems = []
    for logical, resource in resources.items():
        if not isinstance(resource, dict):
            continue
        problems += [
            f"resource {logical} has {key}, which AWS IoT does not document for provisioning "
            f"template resources ({', '.join(RESOURCE_KEYS)})"
            for key in resource if key not in RESOURCE_KEYS
        ]
        if resource.get("Type") == POLICY_TYPE and "OverrideSettings" in resource:
            problems.append(f"resource {logical}: OverrideSettings are not available for policy resources")
    return problems


def _nested_device_configuration(config) -> list[str]:
    # Function calls are judged by what they evaluate to (evaluate()); literals here.
    if not isinstance(config, dict):
        return []
    return [
        nested_device_configuration(key, value)
        for key, value in config.items()
        if isinstance(value, list) or (isinstance(value, dict) and not is_function_call(value))
    ]


def nested_device_configuration(key: str, value) -> str:
    kind = "list" if isinstance(value, list) else "object"
    return f"DeviceConfiguration {key} is a nested JSON {kind}; the section doesn't support nested JSON objects"


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
    always win, and a device never supplies an AWS:: name (in fleet provisioning AWS supplies
    AWS::IoT::Certificate::Id only; a template declaring another AWS:: name gets its Default
    or nothing). Parameters not declared are ignored. Missing ones are left out and only
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
        elif name in supplied and not name.startswith("AWS::"):
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

    def ref(self, name):
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
            return [self.value(x) for x in node]
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
            if key.startswith("Fn::"):
                raise invalid_template(unsupported_function(key))
        return {k: self.value(v) for k, v in node.items()}

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
            return self.string(self.ref(name), f"${{{name}}}")

        return re.sub(r"\$\{([^}]*)\}", repl, text)


def _scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


def thing_override_settings(logical: str, settings) -> dict:
    """The thing's OverrideSettings by property (either spelling), DO_NOTHING where none is
    given; an unknown property or value is refused."""
    if settings is not None and not isinstance(settings, dict):
        raise invalid_template(f"resource {logical}: OverrideSettings must be an object")
    given = {}
    for key, value in (settings or {}).items():
        if key not in OVERRIDE_NAMES:
            raise invalid_template(f"resource {logical}: OverrideSettings {key} is not one the guide documents")
        given[OVERRIDE_NAMES[key]] = value
    resolved = {}
    for key in ("AttributePayload", "ThingGroups", "ThingTypeName"):
        value = given.get(key, OVERRIDE_DEFAULT)
        if value not in OVERRIDE_VALUES or (value == "MERGE" and key == "ThingTypeName"):
            raise invalid_template(f"OverrideSettings.{key} cannot be {value!r}")
        resolved[key] = value
    return resolved


def evaluate(template, supplied: dict, certificate_id: str, extra_system: dict | None = None) -> Plan:
    """The plan for registering `certificate_id` with `supplied` parameters."""
    if isinstance(template, str):
        try:
            template = json.loads(template)
        except ValueError as e:
            raise invalid_template(f"not JSON: {e}") from None
    if not isinstance(template, dict):
        raise invalid_template("the body must be a JSON object")
    problems = unsupported_features(template)
    if problems:
        raise invalid_template("; ".join(problems))
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
            plan.certificate = certificate_plan(logical, props, certificate_id, resource.get("OverrideSettings"))
        else:
            plan.policies.append(policy_plan(logical, props))

    config = template.get("DeviceConfiguration")
    if config is not None:
        config = ev.value(config)
        if not isinstance(config, dict):
            raise invalid_template("DeviceConfiguration must be an object")
        plan.device_configuration = device_configuration(config)
    return plan


def device_configuration(config: dict) -> dict:
    """The evaluated section as AWS returns it: string values; an object or list, which a
    function call can still yield (Fn::Split, Fn::FindInMap), is refused."""
    for key, value in config.items():
        if isinstance(value, (dict, list)):
            raise invalid_template(nested_device_configuration(key, value))
    return {key: _scalar(value) for key, value in config.items()}


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
    thing["OverrideSettings"] = thing_override_settings(logical, override_settings)
    return thing


def certificate_plan(logical: str, props: dict, certificate_id: str, override_settings) -> dict:
    cert_id = props.get("CertificateId")
    if cert_id != certificate_id:
        raise invalid_template(
            f"resource {logical}: CertificateId must be Ref {CERT_ID_PARAM} in fleet provisioning"
        )
    if override_settings is not None:
        # The guide allows OverrideSettings for a certificate's Status, but in fleet
        # provisioning the certificate always exists (CreateKeysAndCertificate made it) and
        # the guide does not say what DO_NOTHING or FAIL then do: refused, not guessed.
        raise invalid_template(
            f"resource {logical}: OverrideSettings on an AWS::IoT::Certificate (for its Status) "
            "are not supported by the local endpoint"
        )
    # "Status: Optional. String that can be ACTIVE or INACTIVE. Defaults to ACTIVE."
    status = props.get("Status", "ACTIVE")
    if status not in STATUSES:
        raise invalid_template(f"resource {logical}: Status must be ACTIVE or INACTIVE (Active, Inactive)")
    status = status.upper()
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
