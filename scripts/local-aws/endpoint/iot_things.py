"""Correction 11 to moto's IoT backend and responses: exclusive thing associations.

AWS (API_AttachThingPrincipal): the query parameter thingPrincipalType is EXCLUSIVE_THING
("Attaches the specified principal to the specified thing, exclusively. The thing will be the
only thing that's attached to the principal.") or NON_EXCLUSIVE_THING (the default; "Multiple
things can be attached to the principal."). Developer guide (exclusive-thing.html): "When a
certificate is associated with an exclusive thing, this certificate can only be associated
with other things if you detach it from the exclusive thing." ListThingPrincipalsV2 and
ListPrincipalThingsV2 answer {"thingPrincipalObjects": [{"principal", "thingPrincipalType"}]}
and {"principalThingObjects": [{"thingName", "thingPrincipalType"}]}, filtered by an optional
thingPrincipalType. moto 5.2.5 ignores the type everywhere (its ListThingPrincipalsV2 even
answers a thingName key AWS does not have).

Here the type is kept per (principal, thing) association; an attach is refused
(InvalidRequestException, HTTP 400: AWS does not publish the error) when the principal is
exclusively attached to another thing, or when an exclusive attach meets a principal attached
to any other thing. Re-attaching to the same thing is accepted and sets the association's type
to the one asked for (the operation is a PUT: the request states the association wanted).
DetachThingPrincipal drops the type with the association. The v1 lists (ListThingPrincipals,
ListPrincipalThings) stay moto's.
"""

from __future__ import annotations

from moto.core.responses import ActionResult, EmptyResult
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses
from moto.iot.exceptions import InvalidRequestException

EXCLUSIVE, NON_EXCLUSIVE = "EXCLUSIVE_THING", "NON_EXCLUSIVE_THING"


def association_types(backend) -> dict:
    """(principal ARN, thing name) -> thingPrincipalType of the backend's associations
    (those in moto's principal_things; absent means NON_EXCLUSIVE_THING). Kept on the
    backend instance, so moto's reset drops it with the associations."""
    types = backend.__dict__.get("_claimfab_thing_principal_types")
    if types is None:
        types = backend._claimfab_thing_principal_types = {}
    return types


def principal_type_param(response):
    """The request's thingPrincipalType (None when absent), checked against the enum."""
    value = response._get_param("thingPrincipalType")
    if value is not None and value not in (EXCLUSIVE, NON_EXCLUSIVE):
        raise InvalidRequestException(
            f"thingPrincipalType {value!r} is not valid: use {EXCLUSIVE} or {NON_EXCLUSIVE}."
        )
    return value


def check_attach(backend, thing_name, principal_arn, thing_principal_type) -> None:
    """Refuses an attach AWS refuses: the principal is exclusively attached to another thing,
    or an exclusive attach meets a principal attached to any other thing."""
    types = association_types(backend)
    others = {
        t: types.get((p, t), NON_EXCLUSIVE)
        for p, t in backend.principal_things
        if p == principal_arn and t != thing_name
    }
    held_by = sorted(t for t, kind in others.items() if kind == EXCLUSIVE)
    if held_by:
        raise InvalidRequestException(
            f"The principal {principal_arn} is attached to the thing {held_by[0]} as an "
            f"exclusive thing; detach it from {held_by[0]} before attaching it to another thing."
        )
    if thing_principal_type == EXCLUSIVE and others:
        raise InvalidRequestException(
            f"The principal {principal_arn} cannot be attached to the thing {thing_name} as an "
            f"exclusive thing: it is attached to other things ({', '.join(sorted(others))})."
        )


def _correct_backend() -> None:
    """The association types in the backend: attach, detach and the v2 lists."""
    IoTBackend = iot_models.IoTBackend

    def attach_thing_principal(self, thing_name, principal_arn, thing_principal_type=NON_EXCLUSIVE):
        principal = self._get_principal(principal_arn)
        thing = self.describe_thing(thing_name)
        check_attach(self, thing_name, principal_arn, thing_principal_type)
        key = (principal_arn, thing_name)
        self.principal_things[key] = (principal, thing)
        association_types(self)[key] = thing_principal_type

    original_detach_thing_principal = IoTBackend.detach_thing_principal

    def detach_thing_principal(self, thing_name, principal_arn):
        original_detach_thing_principal(self, thing_name, principal_arn)
        association_types(self).pop((principal_arn, thing_name), None)

    def list_thing_principals_v2(self, thing_name):
        """[(principal ARN, type)] of a thing (ResourceNotFound for no such thing, as v1)."""
        types = association_types(self)
        return [(p, types.get((p, thing_name), NON_EXCLUSIVE)) for p in self.list_thing_principals(thing_name)]

    def list_principal_things_v2(self, principal_arn):
        """[(thing name, type)] of a principal."""
        types = association_types(self)
        return [(t, types.get((principal_arn, t), NON_EXCLUSIVE)) for t in self.list_principal_things(principal_arn)]

    IoTBackend.attach_thing_principal = attach_thing_principal
    IoTBackend.detach_thing_principal = detach_thing_principal
    IoTBackend.list_thing_principals_v2 = list_thing_principals_v2
    IoTBackend.list_principal_things_v2 = list_principal_things_v2


def _correct_responses() -> None:
    """thingPrincipalType read from the requests, and the v2 lists' AWS answer shapes."""
    IoTResponse = iot_responses.IoTResponse

    def response_attach_thing_principal(self):
        kind = principal_type_param(self) or NON_EXCLUSIVE
        self.iot_backend.attach_thing_principal(
            self._get_param("thingName"), self.headers.get("x-amzn-principal"), kind
        )
        return EmptyResult()

    def response_list_thing_principals_v2(self):
        wanted = principal_type_param(self)
        pairs = self.iot_backend.list_thing_principals_v2(self._get_param("thingName"))
        objects = [{"principal": p, "thingPrincipalType": k} for p, k in pairs if wanted in (None, k)]
        return ActionResult({"thingPrincipalObjects": objects})

    def response_list_principal_things_v2(self):
        wanted = principal_type_param(self)
        pairs = self.iot_backend.list_principal_things_v2(self.headers.get("x-amzn-principal"))
        objects = [{"thingName": t, "thingPrincipalType": k} for t, k in pairs if wanted in (None, k)]
        return ActionResult({"principalThingObjects": objects})

    IoTResponse.attach_thing_principal = response_attach_thing_principal
    IoTResponse.list_thing_principals_v2 = response_list_thing_principals_v2
    IoTResponse.list_principal_things_v2 = response_list_principal_things_v2


def correct_exclusive_thing_associations() -> None:
    """11. Exclusive thing association: the thingPrincipalType of each association kept,
    enforced on AttachThingPrincipal and answered by the v2 lists (see the module docstring
    for AWS's words)."""
    _correct_backend()
    _correct_responses()
