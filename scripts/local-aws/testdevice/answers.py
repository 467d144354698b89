"""The answers of the Device provisioning MQTT API as the test device waits for them: a future
settled by the first answer (accepted or rejected, AWS's rejection fields kept), the answers
after the first counted (AWS answers only the connection that asked), and lite's one wildcard
subscription per call."""

from __future__ import annotations

import concurrent.futures
import json
from typing import Callable

from testdevice.session import Session
from testdevice.settings import DeviceFailure, Settings


def rejection_fields(error) -> dict:
    return {
        "status_code": getattr(error, "status_code", None),
        "error_code": getattr(error, "error_code", None),
        "error_message": getattr(error, "error_message", None),
    }


def _describe_rejection(what: str, fields: dict) -> str:
    return f"{what} rejected: {fields['status_code']} {fields['error_code']}: {fields['error_message']}"


def _create_answer() -> tuple[concurrent.futures.Future, Callable, Callable, list[int]]:
    """A future for the first answer to a certificate request, the on_accepted/on_rejected
    callbacks that settle it, and a one-element list counting the answers after the first."""
    answer: concurrent.futures.Future = concurrent.futures.Future()
    extra_answers = [0]

    def settle(value=None, exc=None):
        if answer.done():
            return
        if exc is not None:
            answer.set_exception(exc)
        else:
            answer.set_result(value)

    def on_rejected(error):
        extra_answers[0] += answer.done()
        if error is None:
            settle(exc=DeviceFailure("create", "unreadable message on the rejected topic"))
            return
        fields = rejection_fields(error)
        settle(exc=DeviceFailure("create", _describe_rejection("certificate request", fields), fields))

    def on_accepted(response):
        extra_answers[0] += answer.done()
        if response is None or not response.certificate_ownership_token or not response.certificate_pem:
            settle(exc=DeviceFailure("create", "accepted response without certificatePem/certificateOwnershipToken"))
        else:
            settle(response)

    return answer, on_accepted, on_rejected, extra_answers


def note_extra_answers(settings: Settings, extra: int, call: str) -> None:
    if extra:
        settings.warnings.append(
            f"{extra} more {call} answer(s) arrived after the first: AWS delivers an answer only to "
            "the connection that asked"
        )


def subscribe_wildcard(session: Session, topic: str, stage: str, parse_accepted, on_accepted, on_rejected) -> None:
    """Lite's aws_iot_call: one QoS 1 subscription to `<topic>/+`, the answer told apart by suffix."""
    from awscrt import mqtt
    from awsiot import iotidentity

    def on_message(topic, payload, **kwargs):
        try:
            body = json.loads(payload.decode())
        except ValueError:
            body = None
        if topic.endswith("/accepted"):
            on_accepted(parse_accepted(body) if isinstance(body, dict) else None)
        elif topic.endswith("/rejected"):
            on_rejected(iotidentity.ErrorResponse.from_payload(body) if isinstance(body, dict) else None)

    session.subscribe(lambda: session.connection.subscribe(f"{topic}/+", mqtt.QoS.AT_LEAST_ONCE, on_message),
                      stage, f"{topic}/+")
