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
    # A read the decisions rest on failed (other than "not found"): every request is denied.
    unreadable: bool = False
    # Handed to the broker to be closed (its certificate left ACTIVE).
    kicked: bool = False


class Unreadable(Exception):
    """A read a decision rests on failed for another reason than "not found" (throttled, a
    server fault): nothing may be decided on what was read, and nothing cached."""


def connection_thing(things: list[dict], client_id: str) -> str | None:
    """The thing AWS IoT associates with a connection (developer guide, "Associating an AWS IoT
    thing to an MQTT client connection"), from the certificate's ListPrincipalThingsV2
    objects: the thing the certificate is exclusively attached to, whatever the client id;
    else the attached thing whose name is the client id; else none."""
    for obj in things:
        if obj.get("thingPrincipalType") == "EXCLUSIVE_THING":
            return obj.get("thingName")
    return client_id if any(obj.get("thingName") == client_id for obj in things) else None


def actions_and_resource(arn, op, client_id: str, topic) -> tuple[tuple[str, ...], str] | None:
    """The IoT policy actions (all needed) and the resource ARN a plugin request asks about
    (None: not one)."""
    if op == "connect":
        return ("iot:Connect",), arn("client", client_id)
    if not isinstance(topic, str):
        return None
    if op == "publish":
        return ("iot:Publish",), arn("topic", topic)
    if op == "publish_retained":
        return ("iot:Publish", "iot:RetainPublish"), arn("topic", topic)
    if op == "receive":
        return ("iot:Receive",), arn("topic", topic)
    if op == "subscribe":
        return ("iot:Subscribe",), arn("topicfilter", topic)
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
        """A connection as AWS IoT sees it: its certificate (ACTIVE or not), the policies that
        apply to it (attached to the certificate, and to the thing groups of its thing and
        their parents) and its policy variables. A failed read (other than "not found") makes
        it unreadable: everything denied, nothing cached."""
        conn = Connection(cert_id, client_id, f"arn:aws:iot:{self.region}:{self.account}:cert/{cert_id}")
        conn.generation = self.endpoint.generation()  # read first: a change while loading shows next time
        try:
            self.read_into(conn)
        except Unreadable as e:
            log.warning("connection of %s (certificate %s) unreadable, every request denied: %s", client_id, cert_id[:12], e)
            conn.unreadable, conn.active, conn.generation = True, False, None
        return conn

    def read_into(self, conn: Connection) -> None:
        desc = self.read(self.endpoint.iot.describe_certificate, certificateId=conn.cert_id)
        if desc is None or desc["certificateDescription"].get("status") != "ACTIVE":
            log.info("connection of %s: certificate %s is %s", conn.client_id, conn.cert_id[:12],
                     "unknown" if desc is None else desc["certificateDescription"].get("status"))
            return
        desc = desc["certificateDescription"]
        conn.cert_arn = desc.get("certificateArn", conn.cert_arn)
        conn.active = True
        thing_name, thing = self.connection_thing(conn.cert_arn, conn.client_id)
        conn.documents = self.policy_documents([conn.cert_arn, *self.thing_group_arns(thing_name)])
        conn.variables = iot_policy.connection_variables(
            conn.client_id, thing_name, certificate_subject(desc.get("certificatePem", "")),
            (thing or {}).get("thingTypeName"), (thing or {}).get("attributes"),
        )

    @staticmethod
    def read(call, **kwargs):
        """call(**kwargs)'s answer; None when AWS says the resource does not exist; Unreadable
        on any other error."""
        from botocore.exceptions import ClientError

        try:
            return call(**kwargs)
        except ClientError as e:
            if Endpoint.code(e) == "ResourceNotFoundException":
                return None
            raise Unreadable(f"{call.__name__}: {Endpoint.code(e) or e}") from None

    def policy_documents(self, targets: list[str]) -> list:
        """The documents of the policies attached to any of `targets` (once each)."""
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        names: list[str] = []
        for target in targets:
            try:
                pages = list(self.endpoint.pages(iot.list_attached_policies, "policies", target=target, recursive=False))
            except ClientError as e:
                raise Unreadable(f"list_attached_policies: {Endpoint.code(e) or e}") from None
            names += [p["policyName"] for p in pages if p["policyName"] not in names]
        documents = []
        for name in names:
            policy = self.read(iot.get_policy, policyName=name)
            if policy is not None:
                documents.append(policy["policyDocument"])
        return documents

    def connection_thing(self, cert_arn: str, client_id: str) -> tuple[str | None, dict | None]:
        """The connection's thing (see connection_thing) and its DescribeThing, or Nones."""
        objects = self.read(self.endpoint.iot.list_principal_things_v2, principal=cert_arn)
        thing_name = connection_thing((objects or {}).get("principalThingObjects", []), client_id)
        thing = self.read(self.endpoint.iot.describe_thing, thingName=thing_name) if thing_name else None
        return (thing_name, thing) if thing is not None else (None, None)

    def thing_group_arns(self, thing_name: str | None) -> list[str]:
        """The thing groups `thing_name` is in, and their parents: AWS IoT applies the
        policies attached to them to the thing's connection."""
        if not thing_name:
            return []
        iot = self.endpoint.iot
        groups = (self.read(iot.list_thing_groups_for_thing, thingName=thing_name) or {}).get("thingGroups", [])
        arns: list[str] = []
        for group in groups:
            described = self.read(iot.describe_thing_group, thingGroupName=group["groupName"]) or {}
            parents = (described.get("thingGroupMetadata") or {}).get("rootToParentThingGroups") or []
            for arn in [group.get("groupArn"), *(p.get("groupArn") for p in parents)]:
                if arn and arn not in arns:
                    arns.append(arn)
        return arns

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

    def kick(self, conn_key: str, conn: Connection, why: str) -> None:
        """Queues the connection for closing by the broker, once."""
        with self.lock:
            if conn.kicked:
                return
            conn.kicked = True
            self.kicks.append(conn_key)
        log.info("closing %s (connection %s): certificate %s %s", conn.client_id, conn_key, conn.cert_id[:12], why)

    def sweep(self) -> None:
        """Queues for closing every connection whose certificate left ACTIVE (or is gone):
        AWS IoT "disconnects all devices that used that certificate to connect"
        (API_UpdateCertificate). Runs only when the account changed; a certificate that could
        not be read is tried again at the next sweep."""
        generation = self.endpoint.generation()
        if generation is not None and generation == self.swept_generation:
            return
        with self.lock:
            live = [(key, conn) for key, conn in self.connections.items() if not conn.kicked]
        complete = True
        for key, conn in live:
            try:
                desc = self.read(self.endpoint.iot.describe_certificate, certificateId=conn.cert_id)
            except Unreadable:
                complete = False
                continue
            status = "gone" if desc is None else desc["certificateDescription"]["status"]
            if status != "ACTIVE":
                self.kick(key, conn, f"is {status}")
        if complete:
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
        elif op != "connect" and not conn.active and not conn.unreadable:
            # Found inactive by a decision before the sweep saw it: closed all the same.
            self.kick(conn_key, conn, "is not ACTIVE")
        return answer

    def answer(self, op, conn: Connection, client_id: str, topic) -> str:
        if conn.unreadable:
            self.count(f"{op}.denied")
            return "deny"
        if not conn.active:
            self.count(f"{op}.denied")
            return "deny" if op in ("connect", "receive") else "disconnect"
        asked = actions_and_resource(self.arn, op, client_id, topic)
        if asked is None:
            return "deny"
        actions, resource = asked
        allowed = all(self.allowed(conn, action, resource) for action in actions)
        self.count(f"{op}.{'allowed' if allowed else 'denied'}")
        if allowed:
            return "allow"
        return "disconnect" if op in ("publish", "publish_retained", "subscribe") else "deny"

    def allowed(self, conn: Connection, action: str, resource: str) -> bool:
        """The policies' decision, memoized on this reading of the connection (a change to
        the account makes a new one, see connection)."""
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
