"""Nucleus lite's MQTT session and its fleet-provisioning calls on the wire, with AWS's IoT
device SDK (awscrt's MQTT 5 client), dialed through the tunnel like Session (session.py).

FACTS (aws-greengrass/aws-greengrass-lite v2.6.0 = 283b286c; paths are repository paths)

Connection (fleet-provisioning spawns its own iotcored, `-n iotcoredfleet`):
  * MQTT 5: fc_deps.json pins coreMQTT bda794aa (v5.0.1-1), whose CONNECT carries
    MQTT_VERSION_5 (core_mqtt_serializer_private.c L497); lite 2.4.0 and 2.5.1+ speak MQTT 5,
    2.3.x and 2.5.0 MQTT 3.1.1. MQTT_Connect(..., NULL, NULL): no CONNECT properties
    (modules/iotcored/src/mqtt.c L320-328).
  * CONNECT: client id from `-i`, a random UUID (modules/fleet-provisioning/src/entry.c
    L101-112: uuid_generate_random), keepalive IOTCORED_KEEP_ALIVE_PERIOD = 30 s, clean start,
    no username, no password, no will (mqtt.c L34-35, L312-317).
  * TLS: port 8883 (modules/iotcored/src/tls.c L383 BIO_set_conn_port "8883"; through a proxy
    the tunnel also names 8883, L430), SNI = iotDataEndpoint, no ALPN (none anywhere in
    modules/).
  * iotcored reconnects with backoff (mqtt.c L356-361) and then re-subscribes every filter in
    its table, virtual ones included (subscription_dispatch.c L187-206). The device does not
    reconnect: a drop fails the attempt (reported like Session's), which is what becomes of
    lite's call too, since its request is published once (aws_iot_call.c L217) and the
    reply to the lost connection never comes.

One call (modules/aws-iot-call/src/aws_iot_call.c ggl_aws_iot_call, L146-254), made for
CreateCertificateFromCsr (modules/fleet-provisioning/src/cloud_request.c L45-52) and
RegisterThing (L144-145), both with virtual = true:
  * the filter `<topic>/+` (L161-164) is registered with QoS 1 in iotcored's local table
    only: virtual, so no SUBSCRIBE is sent (modules/iotcored/src/bus_server.c L170-183), and
    before the request is published (L202-217);
  * the request is PUBLISHed once at QoS 1, not retained (L217-219); iotcored's
    iotcored_mqtt_publish returns once the packet is sent (mqtt.c L578-613), the PUBACK is
    only logged by the receive loop (mqtt.c L748-754), whatever its reason code;
  * an incoming PUBLISH reaches the call if it matches a filter in the table
    (subscription_dispatch.c L137-154); the call skips an answer whose clientToken does not
    match the request's, and lite's requests carry none, so an answer carrying a clientToken
    (or one that is not a string) is skipped (aws_iot_call.c L49-89, L114-117); otherwise
    `/accepted` settles it (an undecodable payload fails it), `/rejected` fails it, any other
    suffix fails it (L119-131: a non-OK return closes the subscription, core-bus
    client_subscribe.c L264-268, and the call returns GG_ERR_FAILURE);
  * it waits IOT_RESPONSE_TIMEOUT_S = 30 s (L29, L226-247); the device waits --timeout;
  * when the subscription closes (answer, timeout or failed publish: L133-134, L222, L250),
    iotcored unregisters the filter and, no other entry holding it, sends an UNSUBSCRIBE for
    `<topic>/+` although it never subscribed (bus_server.c L97-100,
    subscription_dispatch.c L97-135); the UNSUBACK is only logged (mqtt.c L762-767).
  * Payloads are gg_json_encode'd (compact JSON): {"certificateSigningRequest": PEM}
    (cloud_request.c L40-42) and {"certificateOwnershipToken": ..., "parameters": {...}}
    (L124-127: parameters always, {} when templateParams is empty; no templateName).
  * From the accepted answers lite reads certificateOwnershipToken and certificatePem
    (L57-108), then thingName (L151-170).

Afterwards the device reconnects with its new certificate as lite's iotcored does after
`systemctl restart greengrass-lite.target`: the same MQTT 5 session, client id = thingName
(modules/iotcored/src/entry.c L233-246 without `-i`).
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from testdevice.answers import _describe_rejection, note_extra_answers, rejection_fields
from testdevice.session import BaseSession
from testdevice.settings import DeviceFailure, Settings

LITE_KEEP_ALIVE_S = 30  # modules/iotcored/src/mqtt.c L34-35 IOTCORED_KEEP_ALIVE_PERIOD
LITE_RESPONSE_TIMEOUT_S = 30  # modules/aws-iot-call/src/aws_iot_call.c L29 (the device uses --timeout)
NO_RECONNECT_MS = 24 * 3600 * 1000  # the SDK's reconnect delay, so that it never reconnects during an attempt
UNSUBACK_OK = (0x00, 0x11)  # Success, No subscription existed (MQTT 5 UNSUBACK reason codes)
CALLS = {
    "create": "CreateCertificateFromCsr",
    "register": "RegisterThing",
}
CREATE_FROM_CSR_TOPIC = "$aws/certificates/create-from-csr/json"  # cloud_request.c L47


def register_topic(template: str) -> str:
    """cloud_request.c L129-141."""
    return f"$aws/provisioning-templates/{template}/provision/json"


def lite_json(payload: dict) -> bytes:
    """The request body as gg_json_encode writes it: compact, UTF-8."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def csr_request(csr_pem: str) -> bytes:
    """cloud_request.c L40-42."""
    return lite_json({"certificateSigningRequest": csr_pem})


def register_request(token: str, params: Optional[dict]) -> bytes:
    """cloud_request.c L124-127: parameters always present (templateParams is a required map)."""
    return lite_json({"certificateOwnershipToken": token, "parameters": dict(params or {})})


def filter_matches(request_topic: str, topic: str) -> bool:
    """Whether `topic` matches the call's filter `<request_topic>/+` (MQTT_MatchTopic: one
    level, possibly empty)."""
    prefix = request_topic + "/"
    return topic.startswith(prefix) and "/" not in topic[len(prefix):]


def reply_kind(request_topic: str, topic: str, payload: bytes) -> tuple[str, Any]:
    """How lite treats one PUBLISH arriving while a call on `request_topic` is open:
    ("unmatched", None) when no registered filter matches (iotcored drops it);
    ("client-token", body) when the call skips it for its clientToken;
    ("accepted", body), ("unreadable", None) for an undecodable accepted answer,
    ("rejected", body or None), or ("unexpected", body) for another suffix
    (aws_iot_call.c L91-135)."""
    if not filter_matches(request_topic, topic):
        return "unmatched", None
    try:
        body = json.loads(payload.decode("utf-8"))
        decoded = True
    except (UnicodeDecodeError, ValueError):
        body, decoded = None, False
    # match_client_token (L72-89): the request has none, so only an answer without one matches;
    # a clientToken that is not a string makes get_client_token fail, which also skips it.
    if isinstance(body, dict) and "clientToken" in body:
        return "client-token", body
    if topic.endswith("/accepted"):
        return ("accepted", body) if decoded else ("unreadable", None)
    if topic.endswith("/rejected"):
        return "rejected", body
    return "unexpected", body


class LiteCall:
    """One ggl_aws_iot_call as the device waits for it: the answer future, settled by the first
    answer that reaches the call; answers after it and answers skipped for a clientToken are
    counted for warnings. `accept(body)` turns an accepted body into the result (raising
    DeviceFailure when lite would refuse it)."""

    def __init__(self, topic: str, stage: str, accept: Callable[[dict], Any]):
        self.topic, self.stage, self.accept = topic, stage, accept
        self.filter = f"{topic}/+"
        self.name = CALLS[stage]
        self.answer: concurrent.futures.Future = concurrent.futures.Future()
        self.extra = 0
        self.skipped = 0
        self.closed = False  # unregistered from iotcored's table (the call has ended)
        self._lock = threading.Lock()

    def deliver(self, topic: str, payload: bytes) -> str:
        """Routes one incoming PUBLISH; returns its reply_kind."""
        kind, body = reply_kind(self.topic, topic, payload)
        if kind == "unmatched":
            return kind
        with self._lock:
            if kind == "client-token":
                self.skipped += 1
                return kind
            if self.answer.done():
                self.extra += 1
                return kind
            try:
                self.answer.set_result(self._settle(kind, topic, body))
            except DeviceFailure as failure:
                self.answer.set_exception(failure)
        return kind

    def _settle(self, kind: str, topic: str, body: Any) -> Any:
        what = "certificate request" if self.stage == "create" else self.name
        if kind == "accepted":
            if not isinstance(body, dict):
                raise DeviceFailure(self.stage, f"{self.name} accepted answer is not a JSON object")
            return self.accept(body)
        if kind == "unreadable":
            raise DeviceFailure(self.stage, f"unreadable {self.name} answer on {topic}: lite fails the call")
        if kind == "rejected":
            if not isinstance(body, dict):
                raise DeviceFailure(self.stage, "unreadable message on the rejected topic")
            from awsiot import iotidentity

            fields = rejection_fields(iotidentity.ErrorResponse.from_payload(body))
            raise DeviceFailure(self.stage, _describe_rejection(what, fields), fields)
        raise DeviceFailure(
            self.stage,
            f"{self.name} answer on {topic}: lite's aws_iot_call takes only .../accepted or .../rejected "
            "and fails the call on any other topic under its filter",
        )

    def note_warnings(self, settings: Settings) -> None:
        note_extra_answers(settings, self.extra, self.name)
        if self.skipped:
            settings.warnings.append(
                f"{self.skipped} {self.name} answer(s) carrying a clientToken ignored: lite's requests carry "
                "none and its aws_iot_call skips an answer whose clientToken does not match (AWS echoes "
                "the request's clientToken only)"
            )


def accept_certificate(stage: str):
    """What lite needs from CreateCertificateFromCsr's accepted answer (cloud_request.c L57-108)."""

    def accept(body: dict):
        from awsiot import iotidentity

        response = iotidentity.CreateCertificateFromCsrResponse.from_payload(body)
        if not isinstance(response.certificate_ownership_token, str) or not isinstance(response.certificate_pem, str) \
                or not response.certificate_ownership_token or not response.certificate_pem:
            raise DeviceFailure(stage, "accepted response without certificatePem/certificateOwnershipToken")
        return response

    return accept


def accept_registration(stage: str):
    """What lite needs from RegisterThing's accepted answer (cloud_request.c L151-170)."""

    def accept(body: dict):
        from awsiot import iotidentity

        response = iotidentity.RegisterThingResponse.from_payload(body)
        if not isinstance(response.thing_name, str) or not response.thing_name:
            raise DeviceFailure(stage, "RegisterThing accepted response without thingName")
        return response

    return accept


def _describe_exception(e: Optional[BaseException]) -> str:
    if e is None:
        return ""
    return getattr(e, "name", None) or str(e) or type(e).__name__


class LiteSession(BaseSession):
    """Lite's iotcored connection (claim or device certificate) as an awscrt MQTT 5 client,
    with iotcored's local subscription table for the calls (see the module docstring)."""

    def __init__(self, settings: Settings, cert: Path, key: Path, client_id: str, port: int, args):
        import awscrt.io
        from awscrt import http, mqtt5

        super().__init__(settings, cert, key, client_id, port, args)
        self._mqtt5 = mqtt5
        self.calls: list[LiteCall] = []  # iotcored's table (open calls); ended ones stay to count late answers
        self.unmatched = 0
        self.unsubacks: list[tuple[str, concurrent.futures.Future]] = []
        self.started = False
        self.stopping = False
        self.connect_done = threading.Event()
        self.connect_error: Optional[str] = None
        self.stopped = threading.Event()
        self._lock = threading.Lock()

        tls = awscrt.io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
        tls.override_default_trust_store_from_path(None, args.root_ca)  # no alpn_list: lite offers none
        sockets = awscrt.io.SocketOptions()
        sockets.connect_timeout_ms = int(args.timeout * 1000)
        self.client = mqtt5.Client(mqtt5.ClientOptions(
            host_name=settings.endpoint,  # also the TLS server name (SNI and certificate check)
            port=port,
            socket_options=sockets,
            tls_ctx=awscrt.io.ClientTlsContext(tls),
            http_proxy_options=http.HttpProxyOptions(
                "127.0.0.1", self.tunnel.port, connection_type=http.HttpProxyConnectionType.Tunneling
            ),
            connect_options=mqtt5.ConnectPacket(keep_alive_interval_sec=LITE_KEEP_ALIVE_S, client_id=client_id),
            session_behavior=mqtt5.ClientSessionBehaviorType.CLEAN,
            extended_validation_and_flow_control_options=mqtt5.ExtendedValidationAndFlowControlOptions.NONE,
            offline_queue_behavior=mqtt5.ClientOperationQueueBehaviorType.FAIL_ALL_ON_DISCONNECT,
            retry_jitter_mode=mqtt5.ExponentialBackoffJitterMode.NONE,
            min_reconnect_delay_ms=NO_RECONNECT_MS,
            max_reconnect_delay_ms=NO_RECONNECT_MS,
            connack_timeout_ms=int(args.timeout * 1000),
            on_publish_callback_fn=self._on_publish,
            on_lifecycle_event_connection_success_fn=self._on_success,
            on_lifecycle_event_connection_failure_fn=self._on_failure,
            on_lifecycle_event_disconnection_fn=self._on_disconnection,
            on_lifecycle_event_stopped_fn=self._on_stopped,
            disable_metrics=True,  # lite sends no username; the SDK would send its metrics username
        ))

    @property
    def dialed(self) -> str:
        return super().dialed + " (MQTT 5)"

    # --- the SDK's callbacks (its event-loop thread) ---

    def _on_success(self, data) -> None:
        self.connect_done.set()

    def _on_failure(self, data) -> None:
        connack = data.connack_packet
        if connack is not None and connack.reason_code is not None:
            code = connack.reason_code
            reason = f"CONNACK {getattr(code, 'name', code)}"
            if connack.reason_string:
                reason += f" ({connack.reason_string})"
        else:
            reason = _describe_exception(data.exception)
        self.connect_error = reason
        self.connect_done.set()

    def _on_disconnection(self, data) -> None:
        if self.stopping:
            return
        packet = data.disconnect_packet
        if packet is not None and packet.reason_code is not None:
            detail = f"DISCONNECT {getattr(packet.reason_code, 'name', packet.reason_code)}"
            if packet.reason_string:
                detail += f" ({packet.reason_string})"
        else:
            detail = _describe_exception(data.exception)
        self.interrupt_error = detail or None
        self.interrupted.set()

    def _on_stopped(self, data) -> None:
        self.stopped.set()

    def _on_publish(self, data) -> None:
        packet = data.publish_packet
        topic, payload = packet.topic, packet.payload
        if isinstance(payload, str):
            payload = payload.encode()
        payload = bytes(payload or b"")
        with self._lock:
            open_calls = [c for c in self.calls if not c.closed]
            closed_calls = [c for c in self.calls if c.closed]
        # subscription_dispatch.c L137-154: the open calls' filters are iotcored's table. A call
        # that has ended is no longer in it (lite drops what comes for it), but the device still
        # counts a late answer to it for the extra-answer warning.
        if any([call.deliver(topic, payload) != "unmatched" for call in open_calls]):
            return
        for call in reversed(closed_calls):  # the latest ended call on this topic
            if call.deliver(topic, payload) != "unmatched":
                return
        with self._lock:
            self.unmatched += 1

    # --- what the device does ---

    def connect(self, stage: str) -> None:
        self.started = True
        self.client.start()
        if not self.connect_done.wait(self.args.timeout):
            self._halt()
            raise DeviceFailure(stage, self._connect_failure(f"no CONNACK within {self.args.timeout:g} s"))
        if self.connect_error is not None:
            self._halt()
            raise DeviceFailure(stage, self._connect_failure(f"connect failed: {self.connect_error}"))
        self.connected = True

    def call(self, topic: str, payload: bytes, stage: str, accept: Callable[[dict], Any]) -> LiteCall:
        """ggl_aws_iot_call: register `<topic>/+` locally (no SUBSCRIBE), PUBLISH the request at
        QoS 1 without waiting for its PUBACK, wait for the answer, then UNSUBSCRIBE `<topic>/+`.
        Returns the call, its answer settled (a rejection or timeout raises DeviceFailure)."""
        mqtt5 = self._mqtt5
        call = LiteCall(topic, stage, accept)
        with self._lock:
            self.calls.append(call)
        published = self.client.publish(mqtt5.PublishPacket(
            payload=payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=False, topic=topic))

        def puback_refused() -> Optional[str]:
            # Lite only logs the PUBACK (mqtt.c L748-754) and would wait out its 30 s for an
            # answer that cannot come; the device says why at once.
            if not published.done() or published.exception() is not None:
                return None
            puback = published.result().puback
            code = getattr(puback, "reason_code", None)
            if code is not None and int(code) >= 0x80:
                return (f"the server refused the {call.name} request: PUBACK {getattr(code, 'name', code)}"
                        + (f" ({puback.reason_string})" if puback.reason_string else "")
                        + "; lite ignores PUBACKs and would time out waiting for the answer")
            return None

        try:
            self.wait(call.answer, stage, f"{call.name} response", check=puback_refused)
        finally:
            call.closed = True
            self._unsubscribe(call.filter)
        return call

    def _unsubscribe(self, topic_filter: str) -> None:
        """iotcored_unregister_subscriptions -> iotcored_mqtt_unsubscribe (subscription_dispatch.c
        L122-129): sent without waiting; the UNSUBACK is checked before disconnecting."""
        if not self.connected or self.dropped():
            return  # lite's UNSUBSCRIBE would fail to send on a lost connection (errors ignored, L128)
        future = self.client.unsubscribe(self._mqtt5.UnsubscribePacket(topic_filters=[topic_filter]))
        self.unsubacks.append((topic_filter, future))

    def check_unsubacks(self) -> None:
        """Lite only logs UNSUBACKs (mqtt.c L762-767); the device warns about an UNSUBACK that
        is missing or refuses (Success and No subscription existed are both fine)."""
        for topic_filter, future in self.unsubacks:
            try:
                unsuback = future.result(self.args.timeout)
            except concurrent.futures.TimeoutError:
                self.settings.warnings.append(f"no UNSUBACK for {topic_filter} within {self.args.timeout:g} s")
                continue
            except Exception as e:
                if not self.dropped():
                    self.settings.warnings.append(f"UNSUBSCRIBE {topic_filter} failed: {_describe_exception(e)}")
                continue
            codes = list(unsuback.reason_codes or [])
            if len(codes) != 1 or codes[0] is None or int(codes[0]) not in UNSUBACK_OK:
                names = [getattr(c, "name", c) for c in codes]
                self.settings.warnings.append(f"UNSUBACK for {topic_filter}: {names} (lite ignores it)")
        self.unsubacks.clear()

    def _halt(self) -> None:
        """Stop the client: no reconnect, DISCONNECT if connected."""
        if self.started and not self.stopping:
            self.stopping = True
            self.client.stop()

    def disconnect(self, stage: Optional[str]) -> None:
        """Disconnect; `stage` None is cleanup after a failure (short wait, errors ignored)."""
        try:
            if stage and self.connected and not self.dropped():
                self.check_unsubacks()
            if stage and self.unmatched:
                self.settings.warnings.append(
                    f"{self.unmatched} PUBLISH(es) on topics no call was waiting for: lite's iotcored drops "
                    "them (subscription_dispatch.c L137-154), and AWS IoT sends a client nothing it did not "
                    "ask for or subscribe to")
            was_connected, self.connected = self.connected, False
            if self.started and not self.stopping:
                self._halt()
                if not self.stopped.wait(self.args.timeout if stage else min(self.args.timeout, 1.0)) \
                        and stage and was_connected:
                    raise DeviceFailure(stage, f"disconnect did not complete within {self.args.timeout:g} s")
        finally:
            self.tunnel.close()


def lite_create_certificate_from_csr(session: LiteSession, settings: Settings, csr: str):
    """CreateCertificateFromCsr as lite makes it (cloud_request.c L31-112). Returns the
    accepted response; a rejection raises DeviceFailure at stage create with AWS's fields."""
    call = session.call(CREATE_FROM_CSR_TOPIC, csr_request(csr), "create", accept_certificate("create"))
    call.note_warnings(settings)
    return call.answer.result()


def lite_register_thing(session: LiteSession, settings: Settings, token: str):
    """RegisterThing as lite makes it (cloud_request.c L114-182) with settings.template and
    settings.params. Returns the accepted response."""
    call = session.call(register_topic(settings.template), register_request(token, settings.params), "register",
                        accept_registration("register"))
    time.sleep(0.05)  # let a stray second answer show up in the warnings
    call.note_warnings(settings)
    return call.answer.result()
