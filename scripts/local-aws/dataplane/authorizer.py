"""The policy decision point behind the broker plugin (claimfab_auth.c): connect, publish,
subscribe and receive decided as AWS IoT Core decides them (service.py's docstring has the
rules), over a Unix socket of JSON lines; and which connections to close because their
certificate left ACTIVE."""

from __future__ import annotations

import collections
import json
import logging
import socketserver
import threading
from dataclasses import dataclass, field

from dataplane import iot_policy
from dataplane.endpoint_client import Endpoint
from dataplane.subject import certificate_subject

log = logging.getLogger("dataplane")


@dataclass
class Connection:
    cert_id: str
    client_id: str
    cert_arn: str
    documents: list = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    decisions: dict = field(default_factory=dict)
    active: bool = False
    # The endpoint's change counter when this was read (None: unknown, never trusted).
    generation: int | None = None


def connection_thing(things: list[dict], client_id: str) -> str | None:
    """The thing AWS IoT associates with a connection (developer guide, "Associating an AWS IoT
    thing to an MQTT client connection"), from the certificate's ListPrincipalThingsV2
    objects: the thing the certificate is exclusively attached to, whatever the client id;
    else the attached thing whose name is the client id; else none."""
    for obj in things:
        if obj.get("thingPrincipalType") == "EXCLUSIVE_THING":
            return obj.get("thingName")
    return client_id if any(obj.get("thingName") == client_id for obj in things) else None


def action_and_resource(arn, op, client_id: str, topic) -> tuple[str, str] | None:
    """The IoT policy action and resource ARN a plugin request asks about (None: not one)."""
    if op == "connect":
        return "iot:Connect", arn("client", client_id)
    if op == "publish" and isinstance(topic, str):
        return "iot:Publish", arn("topic", topic)
    if op == "receive" and isinstance(topic, str):
        return "iot:Receive", arn("topic", topic)
    if op == "subscribe" and isinstance(topic, str):
        return "iot:Subscribe", arn("topicfilter", topic)
    return None


class Authorizer:
    def __init__(self, endpoint: Endpoint, region: str, account: str, service_client_id: str):
        self.endpoint = endpoint
        self.region = region
        self.account = account
        self.service_client_id = service_client_id
        self.connections: dict[str, Connection] = {}
        self.lock = threading.Lock()
        self.stats: dict[str, int] = {}
        self.kicks: collections.deque[str] = collections.deque()
        self.swept_generation: int | None = None

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def arn(self, kind: str, name: str) -> str:
        return iot_policy.resource_arn(self.region, self.account, kind, name)

    def load(self, conn_key: str, cert_id: str, client_id: str) -> Connection:
        """A connection as AWS IoT sees it at CONNECT: its certificate (ACTIVE or not), the
        policies attached to it and its policy variables."""
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        conn = Connection(cert_id, client_id, f"arn:aws:iot:{self.region}:{self.account}:cert/{cert_id}")
        conn.generation = self.endpoint.generation()  # read first: a change while loading shows next time
        try:
            desc = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
        except ClientError as e:
            log.info("connect %s: certificate %s: %s", client_id, cert_id[:12], Endpoint.code(e))
            return conn
        conn.cert_arn = desc.get("certificateArn", conn.cert_arn)
        if desc.get("status") != "ACTIVE":
            log.info("connect %s: certificate %s is %s", client_id, cert_id[:12], desc.get("status"))
            return conn
        conn.active = True
        conn.documents = self.policy_documents(conn.cert_arn)
        thing_name, thing_type, attributes = self.connection_thing(conn.cert_arn, client_id)
        conn.variables = iot_policy.connection_variables(
            client_id, thing_name, certificate_subject(desc.get("certificatePem", "")), thing_type, attributes
        )
        return conn

    def policy_documents(self, cert_arn: str) -> list:
        """The documents of the policies attached to the certificate (unreadable ones left out)."""
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        names = [p["policyName"] for p in self.endpoint.pages(iot.list_attached_policies, "policies", target=cert_arn, recursive=False)]
        documents = []
        for name in names:
            try:
                documents.append(iot.get_policy(policyName=name)["policyDocument"])
            except ClientError:
                pass
        return documents

    def connection_thing(self, cert_arn: str, client_id: str):
        """(thing name, thing type, attributes) of the connection's thing (see
        connection_thing), all None without one."""
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        try:
            things = iot.list_principal_things_v2(principal=cert_arn).get("principalThingObjects", [])
        except ClientError:
            things = []
        thing_name = connection_thing(things, client_id)
        thing_type = None
        attributes = None
        if thing_name:
            try:
                thing = iot.describe_thing(thingName=thing_name)
                thing_type = thing.get("thingTypeName")
                attributes = thing.get("attributes")
            except ClientError:
                pass
        return thing_name, thing_type, attributes

    def connection(self, op, conn_key: str, cert_id: str, client_id: str) -> Connection:
        """The connection a request is about, as the account stands now: loaded afresh on
        CONNECT, and again whenever anything may have changed in the account since it was
        read (its certificate's status, its policies, its thing): AWS IoT evaluates every
        request against the current state, not one cached until the client reconnects."""
        with self.lock:
            conn = self.connections.get(conn_key)
        fresh = (
            op != "connect"
            and conn is not None
            and conn.cert_id == cert_id
            and conn.client_id == client_id
            and conn.generation is not None
            and conn.generation == self.endpoint.generation()
        )
        if not fresh:
            conn = self.load(conn_key, cert_id, client_id)
            with self.lock:
                self.connections[conn_key] = conn
        return conn

    def forget(self, conn_key: str, cert_id: str, client_id: str) -> str:
        with self.lock:
            conn = self.connections.get(conn_key)
            if conn and conn.cert_id == cert_id and conn.client_id == client_id:
                del self.connections[conn_key]
        return "ok"

    def next_kick(self) -> str:
        """A connection the broker should close (its serial), or "none"."""
        with self.lock:
            return self.kicks.popleft() if self.kicks else "none"

    def sweep(self) -> None:
        """Queues for closing every connection whose certificate left ACTIVE since it was
        checked: AWS IoT "disconnects all devices that used that certificate to connect"
        (API_UpdateCertificate). Runs only when the account changed."""
        from botocore.exceptions import ClientError

        generation = self.endpoint.generation()
        if generation is not None and generation == self.swept_generation:
            return
        with self.lock:
            live = [(key, conn) for key, conn in self.connections.items() if conn.active]
        for key, conn in live:
            try:
                desc = self.endpoint.iot.describe_certificate(certificateId=conn.cert_id)["certificateDescription"]
                status = desc["status"]
            except ClientError as e:
                status = Endpoint.code(e) or "unreadable"
            if status != "ACTIVE":
                log.info("closing %s (connection %s): certificate %s is %s", conn.client_id, key, conn.cert_id[:12], status)
                with self.lock:
                    conn.active = False
                    self.kicks.append(key)
        self.swept_generation = generation

    def decide(self, request: dict) -> str:
        op = request.get("op")
        conn_key = str(request.get("conn", ""))
        cert_id = str(request.get("cert", ""))
        client_id = request.get("client")
        if op == "next_kick":
            return self.next_kick()
        if not isinstance(client_id, str):
            return "deny"
        if op == "disconnect":
            return self.forget(conn_key, cert_id, client_id)
        if op == "connect" and client_id == self.service_client_id:
            log.info("connect %s refused: the service's own client id", client_id)
            return "deny"
        conn = self.connection(op, conn_key, cert_id, client_id)
        answer = self.answer(op, conn, client_id, request.get("topic"))
        if op == "connect" and answer != "allow":
            self.forget(conn_key, cert_id, client_id)  # the broker keeps no refused connection
        return answer

    def answer(self, op, conn: Connection, client_id: str, topic) -> str:
        if not conn.active:
            self.count(f"{op}.denied")
            return "deny" if op in ("connect", "receive") else "disconnect"
        asked = action_and_resource(self.arn, op, client_id, topic)
        if asked is None:
            return "deny"
        allowed = self.allowed(conn, *asked)
        self.count(f"{op}.{'allowed' if allowed else 'denied'}")
        if allowed:
            return "allow"
        return "disconnect" if op in ("publish", "subscribe") else "deny"

    def allowed(self, conn: Connection, action: str, resource: str) -> bool:
        """The policies' decision, memoized for the life of the connection."""
        key = (action, resource)
        allowed = conn.decisions.get(key)
        if allowed is None:
            decision = iot_policy.evaluate(conn.documents, action, resource, conn.variables)
            allowed = decision.allowed
            conn.decisions[key] = allowed
            if not allowed:
                log.info("%s %s by %s (cert %s): %s", action, resource, conn.client_id, conn.cert_id[:12], decision.effect)
        return allowed


class AuthHandler(socketserver.StreamRequestHandler):
    def handle(self):
        authorizer: Authorizer = self.server.authorizer  # type: ignore[attr-defined]
        for raw in self.rfile:
            try:
                request = json.loads(raw)
                answer = authorizer.decide(request) if isinstance(request, dict) else "deny"
            except Exception:  # noqa: BLE001 - never let a request kill the decision point
                log.exception("authorization request failed: %r", raw[:300])
                answer = "deny"
            try:
                self.wfile.write(answer.encode("ascii") + b"\n")
                self.wfile.flush()
            except OSError:
                return


class AuthServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
