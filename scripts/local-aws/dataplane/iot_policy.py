"""AWS IoT Core policy evaluation for the local data plane (pure: no I/O, no AWS calls).

This module owns the decision "may this connection do ACTION on RESOURCE?", given the IoT
policy documents attached to the connection's certificate and the connection's policy
variables. The fleet-provisioning service (authorizer.py beside this file) fetches the
documents from the local endpoint and asks here; its tests are test_iot_policy.py.

What it follows (AWS IoT Core Developer Guide, "AWS IoT Core policies", "AWS IoT Core policy
actions", "AWS IoT Core action resources", "AWS IoT Core policy variables"; and the IAM
policy evaluation logic AWS IoT policies share):
  * an explicit Deny in any statement of any attached policy wins; otherwise some Allow is
    needed; otherwise the request is denied (implicit deny);
  * Action / NotAction and Resource / NotResource, each a string or a list of strings;
    actions match case-insensitively, resources case-sensitively, both with the IAM
    wildcards `*` (any run of characters, including none and "/") and `?` (one character).
    MQTT's `+` and `#` are ordinary characters in IoT policy resources;
  * the resource ARNs of the data-plane actions: iot:Connect -> arn:aws:iot:R:A:client/ID,
    iot:Publish and iot:Receive -> ...:topic/TOPIC, iot:Subscribe -> ...:topicfilter/FILTER
    (see resource_arn below);
  * policy variables in Resource and Condition values: ${iot:ClientId},
    ${iot:Connection.Thing.ThingName}, ${iot:Connection.Thing.IsAttached},
    ${iot:Certificate.Subject.CommonName} (and the certificate's other subject fields), and
    the IAM escapes ${*}, ${?}, ${$}. A variable with no value on the connection (e.g. no
    thing attached) in a Resource, NotResource or condition value makes the statement
    unevaluable (below): an Allow naming it grants nothing, a Deny naming it applies (AWS:
    an unresolved thing variable "will result in an access denied error"); a condition KEY
    with no value follows IAM (positive operators fail, negated ones and ...IfExists hold,
    Null tests it);
  * Condition: StringEquals, StringNotEquals, StringEqualsIgnoreCase, StringLike,
    StringNotLike, Bool and Null over the policy variables above (keys such as
    "iot:Connection.Thing.IsAttached"), with the ...IfExists suffix;
  * fail closed on what is not modelled here: a statement that names a condition operator
    not listed above, or a policy variable or condition key not listed above (say
    ${iot:Certificate.Issuer.CommonName} or aws:SourceIp, which AWS IoT resolves and this
    evaluator cannot), is not evaluated: as an Allow it grants nothing, as a Deny it applies
    whatever the request (AWS could only be less strict; reported in Decision.notes); a
    statement whose Effect is neither Allow nor Deny (AWS would not have taken the policy)
    counts as a Deny.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ALLOW, DENY, IMPLICIT_DENY = "Allow", "Deny", "ImplicitDeny"
SUPPORTED_CONDITIONS = (
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringLike", "StringNotLike",
    "Bool", "Null",
)

VARIABLE_RE = re.compile(r"\$\{([^}]*)\}")

# The policy variables (and condition keys) this evaluator resolves; see connection_variables.
SUBJECT_VARIABLE_FIELDS = (
    "CommonName", "Country", "Organization", "OrganizationalUnit", "StateName", "Locality",
    "SerialNumber", "DistinguishedNameQualifier",
)
SUPPORTED_VARIABLE_RE = re.compile(
    r"iot:ClientId"
    r"|iot:Connection\.Thing\.(?:ThingName|ThingTypeName|IsAttached|Attributes\[[^\]]+\])"
    r"|iot:Certificate\.Subject\.(?:" + "|".join(SUBJECT_VARIABLE_FIELDS) + ")"
)

# IAM's escapes for characters that would otherwise be wildcards or start a variable.
_ESCAPES = {"*": "\x00STAR\x00", "?": "\x00QMARK\x00", "$": "$"}


def resource_arn(region: str, account: str, kind: str, name: str, partition: str = "aws") -> str:
    """The ARN AWS IoT evaluates for a data-plane action: kind is client, topic or topicfilter."""
    return f"arn:{partition}:iot:{region}:{account}:{kind}/{name}"


@dataclass
class Decision:
    effect: str  # ALLOW, DENY or IMPLICIT_DENY
    notes: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return self.effect == ALLOW


class PolicyError(ValueError):
    """A policy document that is not a JSON object with statements."""


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _glob_to_regex(pattern: str) -> re.Pattern:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith(_ESCAPES["*"], i):
            out.append(re.escape("*"))
            i += len(_ESCAPES["*"])
        elif pattern.startswith(_ESCAPES["?"], i):
            out.append(re.escape("?"))
            i += len(_ESCAPES["?"])
        elif pattern[i] == "*":
            out.append(".*")
            i += 1
        elif pattern[i] == "?":
            out.append(".")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def substitute(text: str, variables: Mapping[str, str | None]) -> str | None:
    """`text` with its ${...} variables filled in (wildcards in values are literal), or None
    when a variable has no value."""
    missing = False

    def repl(m: re.Match) -> str:
        nonlocal missing
        name = m.group(1)
        if name in _ESCAPES:
            return _ESCAPES[name]
        value = variables.get(name)
        if value is None:
            missing = True
            return ""
        # A value is data, not a pattern: its * and ? match only themselves.
        return str(value).replace("*", _ESCAPES["*"]).replace("?", _ESCAPES["?"])

    result = VARIABLE_RE.sub(repl, text)
    return None if missing else result


def matches(pattern: str, value: str, variables: Mapping[str, str | None], ignore_case=False) -> bool:
    expanded = substitute(pattern, variables)
    if expanded is None:
        return False
    if ignore_case:
        return _glob_to_regex(expanded.lower()).fullmatch(value.lower()) is not None
    return _glob_to_regex(expanded).fullmatch(value) is not None


def _literal(text: str, variables) -> str | None:
    expanded = substitute(text, variables)
    if expanded is None:
        return None
    return expanded.replace(_ESCAPES["*"], "*").replace(_ESCAPES["?"], "?")


def parse_document(document) -> list[dict]:
    """The statements of a policy document given as JSON text or an already-parsed object."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError as e:
            raise PolicyError(f"policy document is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise PolicyError("policy document must be a JSON object")
    statements = _as_list(document.get("Statement"))
    if not all(isinstance(s, dict) for s in statements):
        raise PolicyError("every Statement must be an object")
    return statements


def _condition_holds(condition, variables, notes: list[str]) -> bool | None:
    """True/False, or None when an operator is not supported here."""
    if condition is None:
        return True
    if not isinstance(condition, dict):
        return None
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return None
        op = operator
        if_exists = op.endswith("IfExists")
        if if_exists:
            op = op[: -len("IfExists")]
        if op not in SUPPORTED_CONDITIONS:
            notes.append(f"condition operator {operator} is not evaluated locally")
            return None
        for key, wanted in block.items():
            actual = variables.get(key)
            wanted_values = [str(w) if not isinstance(w, bool) else str(w).lower() for w in _as_list(wanted)]
            if op == "Null":
                want_null = wanted_values and wanted_values[0].lower() == "true"
                if (actual is None) != want_null:
                    return False
                continue
            if actual is None:
                if if_exists:
                    continue
                # A missing key: positive operators fail; negated ones hold (IAM).
                if op in ("StringNotEquals", "StringNotLike"):
                    continue
                return False
            actual = str(actual)
            expanded = [_literal(w, variables) for w in wanted_values]
            expanded = [w for w in expanded if w is not None]
            if op == "StringEquals":
                ok = actual in expanded
            elif op == "StringNotEquals":
                ok = actual not in expanded
            elif op == "StringEqualsIgnoreCase":
                ok = actual.lower() in [w.lower() for w in expanded]
            elif op == "StringLike":
                ok = any(matches(w, actual, variables) for w in wanted_values)
            elif op == "StringNotLike":
                ok = not any(matches(w, actual, variables) for w in wanted_values)
            elif op == "Bool":
                ok = actual.lower() in [w.lower() for w in expanded]
            else:
                notes.append(f"condition operator {operator} is not evaluated locally")
                return None
            if not ok:
                return False
    return True


def _strings(value) -> Iterable[str]:
    """Every string in a statement element (nested lists and objects, keys included)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)


def unresolved_names(statement: dict, variables) -> list[str]:
    """The policy variables a statement's Resource, NotResource or condition values name that
    have no value on this connection (e.g. no thing attached)."""
    names = []
    for element in ("Resource", "NotResource"):
        for text in _strings(statement.get(element)):
            names += [n for n in VARIABLE_RE.findall(text) if n not in _ESCAPES and variables.get(n) is None]
    condition = statement.get("Condition")
    for block in (condition.values() if isinstance(condition, dict) else ()):
        for value in (block.values() if isinstance(block, dict) else ()):
            for text in _strings(value):
                names += [n for n in VARIABLE_RE.findall(text) if n not in _ESCAPES and variables.get(n) is None]
    return names


def unsupported_names(statement: dict) -> list[str]:
    """The policy variables and condition keys of a statement this evaluator cannot resolve."""
    names = []
    for element in ("Resource", "NotResource", "Condition"):
        for text in _strings(statement.get(element)):
            names += [n for n in VARIABLE_RE.findall(text) if n not in _ESCAPES and not SUPPORTED_VARIABLE_RE.fullmatch(n)]
    condition = statement.get("Condition")
    if isinstance(condition, dict):
        for block in condition.values():
            if isinstance(block, dict):
                names += [k for k in block if not SUPPORTED_VARIABLE_RE.fullmatch(str(k))]
    return names


def _statement_applies(statement: dict, action: str, resource: str, variables, notes) -> bool | None:
    """True or False, or None when the statement cannot be evaluated here (an unsupported
    condition operator, policy variable or condition key): see the module's docstring."""
    if "Action" in statement:
        if not any(
            isinstance(a, str) and fnmatch.fnmatchcase(action.lower(), a.lower().replace("[", "[[]"))
            for a in _as_list(statement["Action"])
        ):
            return False
    elif "NotAction" in statement:
        if any(
            isinstance(a, str) and fnmatch.fnmatchcase(action.lower(), a.lower().replace("[", "[[]"))
            for a in _as_list(statement["NotAction"])
        ):
            return False
    else:
        return False
    unsupported = unsupported_names(statement)
    if unsupported:
        notes.append(f"policy variable or condition key {unsupported[0]} is not evaluated locally")
        return None
    unresolved = unresolved_names(statement, variables)
    if unresolved:
        # AWS: an unresolved thing variable "will result in an access denied error".
        notes.append(f"policy variable {unresolved[0]} has no value on this connection")
        return None
    if "Resource" in statement:
        if not any(isinstance(r, str) and matches(r, resource, variables) for r in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(isinstance(r, str) and matches(r, resource, variables) for r in _as_list(statement["NotResource"])):
            return False
    else:
        return False
    return _condition_holds(statement.get("Condition"), variables, notes)


def evaluate(
    documents: Iterable, action: str, resource: str, variables: Mapping[str, str | None]
) -> Decision:
    """The decision for `action` on `resource` under all `documents` (JSON text or objects).
    A document that does not parse is skipped (it cannot be attached on AWS anyway)."""
    notes: list[str] = []
    allowed = False
    for document in documents:
        try:
            statements = parse_document(document)
        except PolicyError as e:
            notes.append(str(e))
            continue
        for statement in statements:
            effect = statement.get("Effect")
            applies = _statement_applies(statement, action, resource, variables, notes)
            if effect not in (ALLOW, DENY):
                # AWS refuses such a policy (MalformedPolicyException); moto keeps it. Read
                # as a Deny, the safe side.
                notes.append(f"statement Effect {effect!r} is neither Allow nor Deny: read as Deny")
                effect = DENY
            if effect == "Deny" and applies is not False:
                # An explicit deny wins over everything (and a Deny that cannot be evaluated
                # here is taken as applying).
                return Decision(DENY, notes)
            if effect == "Allow" and applies is True:
                allowed = True
    return Decision(ALLOW if allowed else IMPLICIT_DENY, notes)


def connection_variables(
    client_id: str,
    thing_name: str | None,
    subject: Mapping[str, str] | None = None,
    thing_type_name: str | None = None,
    thing_attributes: Mapping[str, str] | None = None,
) -> dict[str, str | None]:
    """Policy variables of one MQTT connection. thing_name is the connection's thing (None if
    there is none): the thing the certificate is exclusively attached to, else the thing
    attached to it whose name equals the client id; AWS IoT sets the Connection.Thing.*
    variables only when there is one."""
    variables: dict[str, str | None] = {
        "iot:ClientId": client_id,
        "iot:Connection.Thing.ThingName": thing_name,
        "iot:Connection.Thing.IsAttached": "true" if thing_name else "false",
    }
    if thing_name and thing_type_name:
        variables["iot:Connection.Thing.ThingTypeName"] = thing_type_name
    if thing_name:
        for key, value in (thing_attributes or {}).items():
            variables[f"iot:Connection.Thing.Attributes[{key}]"] = value
    for key, value in (subject or {}).items():
        variables[f"iot:Certificate.Subject.{key}"] = value
    return variables
