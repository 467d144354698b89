"""The answers of the Device provisioning MQTT API as the test device waits for them on its
subscriptions (the Java plugin's exact `.../accepted` and `.../rejected` ones, and
attacker.py's): a future settled by the first answer (accepted or rejected, AWS's rejection
fields kept), the answers after the first counted (AWS answers only the connection that
asked). Nucleus lite subscribes to nothing; its answers are routed in lite_session.py."""

from __future__ import annotations

import concurrent.futures
from typing import Callable

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
