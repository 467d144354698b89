"""A RegisterThing plan's things and policies, checked and made through the local endpoint as
AWS does: everything the template names must exist before anything is made, and an existing
thing is handled by the template's OverrideSettings (FAIL, REPLACE, MERGE, DO_NOTHING)."""

from __future__ import annotations

from contextlib import contextmanager

from dataplane import template as template_eval
from dataplane.endpoint_client import Endpoint, Rejected


@contextmanager
def not_found_rejected(what: str):
    """An endpoint's ResourceNotFoundException as a 404 ResourceNotFound rejection naming
    `what`; any other error goes on."""
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as e:
        if Endpoint.code(e) == "ResourceNotFoundException":
            raise Rejected(404, "ResourceNotFound", f"{what} does not exist.") from None
        raise


def check_named_resources(iot, plan: template_eval.Plan) -> None:
    """The thing groups, thing type and (not created) policies the plan names must exist."""
    thing = plan.thing
    if thing:
        for group in thing.get("ThingGroups", []):
            with not_found_rejected(f"Thing group {group}"):
                iot.describe_thing_group(thingGroupName=group)
        if thing.get("ThingTypeName"):
            with not_found_rejected(f"Thing type {thing['ThingTypeName']}"):
                iot.describe_thing_type(thingTypeName=thing["ThingTypeName"])
    for policy in plan.policies:
        if "PolicyDocument" not in policy:
            with not_found_rejected(f"Policy {policy['PolicyName']}"):
                iot.get_policy(policyName=policy["PolicyName"])


def attach_policies(iot, plan: template_eval.Plan, cert_arn: str) -> None:
    """The plan's policies attached to the certificate; one with a document is created first
    (it may exist already)."""
    from botocore.exceptions import ClientError

    for policy in plan.policies:
        if "PolicyDocument" in policy:
            try:
                iot.create_policy(policyName=policy["PolicyName"], policyDocument=policy["PolicyDocument"])
            except ClientError as e:
                if Endpoint.code(e) != "ResourceAlreadyExistsException":
                    raise
        iot.attach_policy(policyName=policy["PolicyName"], target=cert_arn)


def create_thing(iot, thing: dict) -> None:
    args = {"thingName": thing["ThingName"]}
    if thing.get("ThingTypeName"):
        args["thingTypeName"] = thing["ThingTypeName"]
    if thing.get("AttributePayload"):
        args["attributePayload"] = {"attributes": thing["AttributePayload"]}
    iot.create_thing(**args)
    for group in thing.get("ThingGroups", []):
        iot.add_thing_to_thing_group(thingGroupName=group, thingName=thing["ThingName"])


def apply_thing(iot, thing: dict) -> None:
    """The plan's thing: created, or the existing one treated by its OverrideSettings."""
    from botocore.exceptions import ClientError

    try:
        existing = iot.describe_thing(thingName=thing["ThingName"])
    except ClientError as e:
        if Endpoint.code(e) != "ResourceNotFoundException":
            raise
        existing = None
    if existing is None:
        create_thing(iot, thing)
        return
    refuse_failing_overrides(thing)
    if "AttributePayload" in thing:
        override_attributes(iot, thing, existing)
    if "ThingTypeName" in thing:
        override_thing_type(iot, thing, existing)
    if "ThingGroups" in thing:
        override_thing_groups(iot, thing)


def refuse_failing_overrides(thing: dict) -> None:
    """An existing thing whose template sets a property with OverrideSettings FAIL: the guide,
    "If a template specifies a resource that already exists", FAIL "Cause[s] the request to
    fail with a ResourceConflictsException" -- whether or not the values differ (the strict
    reading), and before anything is changed. AWS documents no status code for it; 409, as
    AWS IoT answers its other conflicts (ResourceAlreadyExistsException,
    VersionConflictException)."""
    failing = [p for p in ("AttributePayload", "ThingTypeName", "ThingGroups")
               if p in thing and thing["OverrideSettings"][p] == "FAIL"]
    if failing:
        raise Rejected(
            409, "ResourceConflictsException",
            f"Thing {thing['ThingName']} already exists and the template's OverrideSettings for "
            f"{', '.join(failing)} is FAIL.",
        )


def override_attributes(iot, thing: dict, existing: dict) -> None:
    name, mode = thing["ThingName"], thing["OverrideSettings"]["AttributePayload"]
    current = existing.get("attributes", {}) or {}
    wanted = thing["AttributePayload"]
    if mode == "REPLACE":
        # UpdateThing with merge=false replaces the attributes; removed ones are given as
        # empty values.
        attrs = {**{k: "" for k in current if k not in wanted}, **wanted}
        iot.update_thing(thingName=name, attributePayload={"attributes": attrs, "merge": False})
    elif mode == "MERGE":
        iot.update_thing(thingName=name, attributePayload={"attributes": wanted, "merge": True})


def override_thing_type(iot, thing: dict, existing: dict) -> None:
    name, mode = thing["ThingName"], thing["OverrideSettings"]["ThingTypeName"]
    if existing.get("thingTypeName") != thing["ThingTypeName"] and mode == "REPLACE":
        iot.update_thing(thingName=name, thingTypeName=thing["ThingTypeName"])


def override_thing_groups(iot, thing: dict) -> None:
    name, mode = thing["ThingName"], thing["OverrideSettings"]["ThingGroups"]
    current = {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=name).get("thingGroups", [])}
    wanted = set(thing["ThingGroups"])
    if mode in ("REPLACE", "MERGE"):
        for group in sorted(wanted - current):
            iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
    if mode == "REPLACE":
        for group in sorted(current - wanted):
            iot.remove_thing_from_thing_group(thingGroupName=group, thingName=name)
