"""The test device's RegisterThing, subscribed as its runtime subscribes, and the config the
runtime writes once provisioned."""

from __future__ import annotations

import concurrent.futures
import time

from testdevice.answers import _describe_rejection, note_extra_answers, rejection_fields, subscribe_wildcard
from testdevice.session import Session
from testdevice.settings import DeviceFailure, Settings


def register_thing(session: Session, settings: Settings, token: str, exact_subscriptions: bool = False):
    """The runtime's RegisterThing with settings.template and settings.params, subscribed as
    the runtime does (lite: `<topic>/+`; Java: `<topic>/accepted` and `<topic>/rejected`, also
    for lite with exact_subscriptions). Returns the accepted response."""
    from awscrt import mqtt
    from awsiot import iotidentity

    identity = iotidentity.IotIdentityClient(session.connection)
    answer: concurrent.futures.Future = concurrent.futures.Future()
    extra_answers = [0]

    def on_accepted(response):
        if answer.done():
            extra_answers[0] += 1
            return
        if response is None or not response.thing_name:
            answer.set_exception(DeviceFailure("register", "RegisterThing accepted response without thingName"))
        else:
            answer.set_result(response)

    def on_rejected(error):
        if answer.done():
            extra_answers[0] += 1
            return
        if error is None:
            answer.set_exception(DeviceFailure("register", "unreadable message on the rejected topic"))
            return
        fields = rejection_fields(error)
        answer.set_exception(DeviceFailure("register", _describe_rejection("RegisterThing", fields), fields))

    topic = f"$aws/provisioning-templates/{settings.template}/provision/json"
    if settings.nucleus == "lite" and not exact_subscriptions:
        subscribe_wildcard(session, topic, "register", iotidentity.RegisterThingResponse.from_payload, on_accepted, on_rejected)
    else:
        req = iotidentity.RegisterThingSubscriptionRequest(template_name=settings.template)
        session.subscribe(lambda: identity.subscribe_to_register_thing_accepted(req, mqtt.QoS.AT_LEAST_ONCE, on_accepted),
                          "register", f"{topic}/accepted")
        session.subscribe(lambda: identity.subscribe_to_register_thing_rejected(req, mqtt.QoS.AT_LEAST_ONCE, on_rejected),
                          "register", f"{topic}/rejected")
    # Lite always sends the parameters field; Java omits it when there are none.
    params = (settings.params or {}) if settings.nucleus == "lite" else (settings.params or None)
    identity.publish_register_thing(
        iotidentity.RegisterThingRequest(template_name=settings.template, certificate_ownership_token=token,
                                         parameters=params),
        mqtt.QoS.AT_LEAST_ONCE,
    )  # Neither runtime waits for this PUBACK.
    response = session.wait(answer, "register", "RegisterThing response")
    time.sleep(0.05)  # let a stray second answer show up in the warnings
    note_extra_answers(settings, extra_answers[0], "RegisterThing")
    return response


def runtime_config(settings: Settings, thing_name: str) -> dict:
    """What the runtime writes into its config once provisioned (device paths)."""
    if settings.nucleus == "java":
        nucleus = {"iotDataEndpoint": settings.endpoint}
        for key, value in (("awsRegion", settings.region), ("iotCredEndpoint", settings.cred_endpoint),
                           ("iotRoleAlias", settings.role_alias)):
            if value:
                nucleus[key] = value
        return {
            "system": {"thingName": thing_name, "certificateFilePath": settings.out_cert,
                       "privateKeyPath": settings.out_key, "rootCaPath": settings.root_ca},
            "services": {"aws.greengrass.Nucleus": {"configuration": nucleus}},
        }
    return {
        "system": {"rootCaPath": f"{settings.out_dir}/AmazonRootCA.pem", "privateKeyPath": settings.out_key,
                   "thingName": thing_name, "certificateFilePath": settings.out_cert},
        "services": {"aws.greengrass.NucleusLite": {"configuration": {
            "iotDataEndpoint": settings.endpoint, "iotCredEndpoint": settings.cred_endpoint}}},
    }
