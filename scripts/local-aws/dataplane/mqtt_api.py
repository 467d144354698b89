"""The MQTT side of the fleet-provisioning service: its own connection to the broker (paho-mqtt,
TLS, its own certificate), the requests the plugin rewrites to
$claimfab/request/CONNECTION/CERT_ID/HEX(CLIENT_ID)/TOPIC and the answers it publishes on
$claimfab/reply/CONNECTION/TOPIC/{accepted,rejected}, which the plugin hands to that
connection alone (service.py's docstring has the topics)."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading

from dataplane.authorizer import Authorizer
from dataplane.endpoint_client import Endpoint, Rejected
from dataplane.provisioning import Asker, Provisioning

log = logging.getLogger("dataplane")

REQUEST_PREFIX = "$claimfab/request/"
REPLY_PREFIX = "$claimfab/reply/"


def request_api(topic: str) -> tuple[str, str] | None:
    """(API, payload format) of a provisioning API request topic: API create,
    create-from-csr or provision; None for any other topic."""
    parts = topic.split("/")
    if parts[:2] == ["$aws", "certificates"] and len(parts) == 4 and parts[2] in ("create", "create-from-csr"):
        return parts[2], parts[3]
    if parts[:2] == ["$aws", "provisioning-templates"] and len(parts) == 5 and parts[3] == "provision":
        return "provision", parts[4]
    return None


def request_body(payload: bytes) -> dict:
    """The request's JSON object (an empty payload is {})."""
    try:
        body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise Rejected(400, "InvalidPayload", "The payload is not valid JSON.") from None
    if not isinstance(body, dict):
        raise Rejected(400, "InvalidPayload", "The payload must be a JSON object.")
    return body


class Service:
    def __init__(self, args, endpoint: Endpoint, provisioning: Provisioning, authorizer: Authorizer):
        import paho.mqtt.client as mqtt

        self.args = args
        self.provisioning = provisioning
        self.authorizer = authorizer
        self.ready = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="provision")
        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=mqtt.MQTTv311,
        )
        self.client.tls_set(ca_certs=args.ca, certfile=args.cert, keyfile=args.key)
        self.client.on_connect = self.on_connect
        self.client.on_message = self.on_message
        self.client.on_subscribe = self.on_subscribe
        self.client.reconnect_delay_set(0.05, 1)

    def on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            log.error("service MQTT connection refused: %s", reason_code)
            return
        client.subscribe(REQUEST_PREFIX + "#", qos=1)

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        if not self.ready.is_set():
            self.ready.set()

    def on_message(self, client, userdata, message):
        self.pool.submit(self.handle, message.topic, bytes(message.payload))

    def reply(self, connection: str, topic: str, outcome: str, body: dict) -> None:
        """To the plugin, which delivers it to that connection only (claimfab_auth.c)."""
        internal = f"{REPLY_PREFIX}{connection}/{topic}/{outcome}"
        self.client.publish(internal, json.dumps(body), qos=1)

    def handle(self, internal_topic: str, payload: bytes) -> None:
        try:
            rest = internal_topic[len(REQUEST_PREFIX):]
            connection, cert_id, hex_client, topic = rest.split("/", 3)
            if not connection.isdigit():
                raise ValueError(connection)
            client_id = bytes.fromhex(hex_client).decode("utf-8")
        except ValueError:
            log.warning("malformed internal request topic %r", internal_topic)
            return
        asker = Asker(connection, cert_id, client_id)
        api = "unknown"
        try:
            known = request_api(topic)
            if known is None:
                log.info("ignored publish by %s on %s (not a provisioning API request topic)", client_id, topic)
                return
            api, fmt = known
            if fmt == "cbor":
                raise Rejected(400, "UnsupportedPayloadFormat", "This local endpoint answers the json payload format only.")
            if fmt != "json":
                log.info("ignored publish by %s on %s (unknown payload format)", client_id, topic)
                return
            result = self.call(api, topic, request_body(payload), asker)
            self.authorizer.count(f"{api}.accepted")
            log.info("%s for %s: accepted", topic, client_id)
            self.reply(connection, topic, "accepted", result)
        except Rejected as r:
            self.authorizer.count(f"{api}.rejected")
            log.info("%s for %s: rejected %s %s: %s", topic, client_id, r.status, r.code, r.message)
            self.reply(connection, topic, "rejected", r.payload())
        except Exception:  # noqa: BLE001 - never crash on input
            log.exception("%s for %s failed", topic, client_id)
            self.reply(connection, topic, "rejected", Rejected(500, "InternalError", "An unexpected error has occurred.").payload())

    def call(self, api: str, topic: str, body: dict, asker: Asker) -> dict:
        """The API's accepted answer (a Rejected is raised otherwise)."""
        if api == "create":
            return self.provisioning.create_keys_and_certificate(body, asker)
        if api == "create-from-csr":
            return self.provisioning.create_certificate_from_csr(body, asker)
        return self.provisioning.register_thing(topic.split("/")[2], body, asker)
