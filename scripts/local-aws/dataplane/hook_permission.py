"""Whether a Lambda function's resource policy lets AWS IoT invoke it as a pre-provisioning
hook (pure: no I/O), in the context AWS IoT invokes hooks with (see _allows_iot)."""

from __future__ import annotations

import json

from dataplane import iot_policy


def _allows_iot(policy_text: str, function_arn: str, account: str) -> bool:
    """Whether the function's resource policy lets AWS IoT invoke it as a pre-provisioning
    hook: an Allow statement for the service principal iot.amazonaws.com, lambda:InvokeFunction
    on the function, whose Condition holds in the context AWS IoT invokes hooks with.

    That context is modelled as aws:SourceAccount = the account and NO aws:SourceArn. AWS
    documents no source ARN for hook invocations (the guide only says to include source-arn
    or source-account in the permission), and AWS's own templates (the nucleus lite
    CloudFormation template, aws-samples automated-iot-fleet-provisioning-by-claim) grant
    iot.amazonaws.com with SourceAccount alone. So a permission that relies on SourceArn is
    not trusted to work on a real account: a statement testing aws:SourceArn does not match,
    unless its operator ends in IfExists (which holds for an absent key). SourceAccount
    conditions are evaluated; other condition keys are not modelled (they hold); a statement
    without Condition matches."""
    try:
        policy = json.loads(policy_text)
    except (TypeError, ValueError):
        return False
    if not isinstance(policy, dict):
        return False
    return any(
        _grants_iot_invoke(st, function_arn) and _hook_condition_holds(st.get("Condition"), account)
        for st in iot_policy._as_list(policy.get("Statement"))
    )


def _grants_iot_invoke(st, function_arn: str) -> bool:
    if not isinstance(st, dict) or st.get("Effect") != "Allow":
        return False
    principal = st.get("Principal")
    services = principal.get("Service") if isinstance(principal, dict) else principal
    if "iot.amazonaws.com" not in iot_policy._as_list(services):
        return False
    if not any(a in ("lambda:InvokeFunction", "lambda:*", "*") for a in iot_policy._as_list(st.get("Action"))):
        return False
    resources = iot_policy._as_list(st.get("Resource", function_arn))
    return any(iot_policy.matches(r, function_arn, {}) or iot_policy.matches(r, function_arn + ":*", {}) for r in resources)


# Condition operators evaluated on aws:SourceAccount, by what they test.
_POSITIVE = {"StringEquals": False, "ArnEquals": False, "StringLike": True, "ArnLike": True}
_NEGATED = {"StringNotEquals": False, "ArnNotEquals": False, "StringNotLike": True, "ArnNotLike": True}


def _source_account_test_holds(base: str, wanted, account: str) -> bool:
    """One operator's test of aws:SourceAccount (= account); an operator this does not know
    does not hold (the safe side)."""
    values = [str(v) for v in iot_policy._as_list(wanted)]
    if base in _POSITIVE or base in _NEGATED:
        pattern = _POSITIVE.get(base, _NEGATED.get(base))
        hit = any(iot_policy.matches(v, account, {}) if pattern else v == account for v in values)
        return hit == (base in _POSITIVE)
    if base == "Null":
        return all(v.lower() == "false" for v in values)  # the key is present
    return False


def _hook_condition_holds(condition, account: str) -> bool:
    """A statement's Condition in AWS IoT's hook invocation context (see _allows_iot). An
    operator this does not know, on a key it models, does not hold (the safe side)."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        if_exists = operator.endswith("IfExists")
        base = operator[: -len("IfExists")] if if_exists else operator
        for key, wanted in block.items():
            name = key.lower()
            if name == "aws:sourcearn":
                if not if_exists:
                    return False  # no source ARN in the context: the test fails
                continue
            if name == "aws:sourceaccount" and not _source_account_test_holds(base, wanted, account):
                return False
    return True
