"""The test device's RegisterThing, made as its runtime makes it (Java: subscribed to the exact
answer topics on the MQTT 3.1.1 Session; lite: no subscription, on the MQTT 5 LiteSession, see
lite_session.py), and the config the runtime writes once provisioned."""

from __future__ import annotations

import concurrent.futures
import time

from testdevice.answers import _describe_rejection, note_extra_answers, rejection_fields
from testdevice.lite_session import LiteSession, lite_register_thing
from testdevice.session import Session
from testdevice.settings import DeviceFailure, Settings


def register_thing(session, settings: Settings, token: str):
    """The runtime's RegisterThing with settings.template and settings.params. On a LiteSession
    as nucleus lite makes it (lite_register_thing: no SUBSCRIBE); on a Session subscribed to
    `<topic>/accepted` and `<topic>/rejected`, each SUBACK awaited, as the SDK's v1
    IotIdentityClient does for the Java plugin (and for attacker.py, whatever --nucleus).
    Returns the accepted response."""
    from awscrt import mqtt
    from awsiot import iotidentity

    if isinstance(session, LiteSession):
        return lite_register_thing(session, settings, token)

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
    req = iotidentity.RegisterThingSubscriptionRequest(template_name=settings.template)
    session.subscribe(lambda: identity.subscribe_to_register_thing_accepted(req, mqtt.QoS.AT_LEAST_ONCE, on_accepted),
                      "register", f"{topic}/accepted")
    session.subscribe(lambda: identity.subscribe_to_register_thing_rejected(req, mqtt.QoS.AT_LEAST_ONCE, on_rejected),
                      "register", f"{topic}/rejected")
    # Lite's body always has parameters (attacker.py with a lite bundle); Java omits them when
    # there are none (IotIdentityHelper.java L224-226).
    params = (settings.params or {}) if settings.nucleus == "lite" else (settings.params or None)
    identity.publish_register_thing(
        iotidentity.RegisterThingRequest(template_name=settings.template, certificate_ownership_token=token,
                                         parameters=params),
        mqtt.QoS.AT_LEAST_ONCE,
    )  # The Java plugin does not wait for this PUBACK (IotIdentityHelper.java L228-231).
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
