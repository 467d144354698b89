"""Local AWS IoT fleet-provisioning service and policy decision point (claimfab's data plane).

Started by scripts/local_endpoint.py --data-plane (one process, beside the mosquitto broker);
not meant to be run by hand. This process owns:

  * the authorization decisions of the broker plugin (scripts/dataplane/claimfab_auth.c): it
    listens on a Unix socket (--auth-socket) for JSON lines {"op", "conn", "cert", "client",
    "topic"?} and answers "allow", "deny" or "disconnect", as AWS IoT Core decides:
      - connect: the certificate (id = SHA-256 of its DER) must be registered in the local
        endpoint and ACTIVE (DescribeCertificate; re-checked on every CONNECT), and the
        policies attached to it (ListAttachedPolicies on the certificate ARN, GetPolicy)
        must allow iot:Connect on client/CLIENT_ID;
      - publish (topic/T) and subscribe (topicfilter/F): allowed, or "disconnect" (AWS IoT
        closes the connection of a client that publishes or subscribes without
        permission); receive (topic/T): allowed or "deny" (the message is not delivered);
      - evaluation in scripts/dataplane/iot_policy.py, with the connection's policy
        variables (client id, the connection's thing -- the thing the certificate is
        exclusively attached to, else the attached thing whose name is the client id, see
        connection_thing -- and the certificate's subject). Policies and thing are read at
        CONNECT and cached for the life of the connection ("conn" = the broker's client
        context), with each decision memoized; a CONNECT always reloads them;
  * the Device provisioning MQTT API (AWS IoT Core Developer Guide, "Device provisioning
    MQTT API"), over its own MQTT connection (paho-mqtt, TLS, its own certificate). Devices'
    requests reach it rewritten by the plugin as $claimfab/request/CERT_ID/HEX(CLIENT_ID)/
    TOPIC; it answers on $claimfab/reply/HEX(CLIENT_ID)/TOPIC/{accepted,rejected}, which the
    plugin delivers to that client only, on TOPIC/{accepted,rejected}:
      - $aws/certificates/create/json (CreateKeysAndCertificate) -> {certificateId,
        certificatePem, privateKey, certificateOwnershipToken};
      - $aws/certificates/create-from-csr/json (CreateCertificateFromCsr,
        {"certificateSigningRequest": PEM}) -> {certificateId, certificatePem,
        certificateOwnershipToken};
      - $aws/provisioning-templates/NAME/provision/json (RegisterThing,
        {"certificateOwnershipToken", "parameters"}) -> {deviceConfiguration, thingName}; the
        template (scripts/dataplane/template.py) is carried out through the local endpoint,
        the certificate attached to the thing with the template's ThingPrincipalType
        (EXCLUSIVE_THING or, by default, NON_EXCLUSIVE_THING);
      - rejected: {statusCode, errorCode, errorMessage}.
    Certificates are made through the local endpoint, INACTIVE (AWS: PENDING_ACTIVATION
    until RegisterThing applies the template's Status; the IoT API has no such status, so
    they show as INACTIVE). Ownership tokens are opaque, random, bound to the new
    certificate, single use (spent by a successful RegisterThing) and expire after one hour;
    a certificate whose token expired while it was still inactive and unattached is deleted,
    as AWS does. Only the json payload format is offered: a request on a .../cbor topic is
    answered on .../cbor/rejected with a JSON error (statusCode 400,
    "UnsupportedPayloadFormat"): AWS would answer in CBOR, which this service does not speak.
  * the pre-provisioning hook: when the template has preProvisioningHook.targetArn, the
    function's resource policy must let iot.amazonaws.com invoke it (Lambda GetPolicy;
    conditions evaluated with aws:SourceAccount = the account and no aws:SourceArn, as
    _allows_iot explains: a permission that relies on SourceArn does not match), then its
    deployment package is fetched (Lambda GetFunction -> Code.Location) and its Python
    handler is run in a subprocess with AWS's documented payload; provisioning goes on only
    on {"allowProvisioning": true}, with parameterOverrides merged into the parameters.

AWS documents no list of the MQTT API's error codes; the ones used here are:
InvalidPayload (400, not JSON / not an object), InvalidCertificateOwnershipToken (400),
InvalidParameters (400, missing or bad parameters, values the template cannot use),
InvalidTemplate (400), InvalidCSR (400, the endpoint refused the CSR), InvalidRequest (400,
the endpoint refused a step, e.g. the certificate's thing association conflicts with the
template's ThingPrincipalType), ResourceNotFound (404, no such template, thing group, thing
type or policy), TemplateDisabled (400),
AccessDenied (403: the hook refused or cannot be invoked, the provisioning role is missing),
ThrottlingException (429, the endpoint throttled), InternalError (500, anything else).

Logs go to stderr. stdout carries one line, "ready", once the MQTT subscription is in place.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime as dt
import io
import json
import logging
import os
import secrets
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import iot_policy  # noqa: E402
import template as template_eval  # noqa: E402

log = logging.getLogger("dataplane")

REQUEST_PREFIX = "$claimfab/request/"
REPLY_PREFIX = "$claimfab/reply/"
TOKEN_LIFETIME_S = 3600  # AWS: the certificateOwnershipToken expires after one hour
HOOK_TIMEOUT_S = 5  # AWS: the pre-provisioning Lambda must answer within 5 seconds

SUBJECT_FIELDS = {
    "CN": "CommonName",
    "C": "Country",
    "O": "Organization",
    "OU": "OrganizationalUnit",
    "ST": "StateName",
    "L": "Locality",
    "serialNumber": "SerialNumber",
    "dnQualifier": "DistinguishedNameQualifier",
}


class Rejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def payload(self) -> dict:
        return {"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message}


def certificate_subject(pem: str) -> dict[str, str]:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, TypeError):
        return {}
    out = {}
    for attr in cert.subject:
        name = SUBJECT_FIELDS.get(attr.rfc4514_attribute_name)
        if name and isinstance(attr.value, str):
            out[name] = attr.value
    return out


# --------------------------------------------------------------------------------------------
# The local endpoint, through boto3
# --------------------------------------------------------------------------------------------


class Endpoint:
    def __init__(self, url: str, region: str):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)
        self.url = url
        self.region = region
        self.iot = session.client("iot", endpoint_url=url, config=config)
        self.iam = session.client("iam", endpoint_url=url, config=config)
        self.lam = session.client("lambda", endpoint_url=url, config=config)

    @staticmethod
    def code(error) -> str:
        return getattr(error, "response", {}).get("Error", {}).get("Code", "")

    def pages(self, method, key, **kwargs):
        marker = None
        while True:
            args = dict(kwargs)
            if marker:
                args["marker"] = marker
            page = method(**args)
            yield from page.get(key, [])
            marker = page.get("nextMarker")
            if not marker:
                return


# --------------------------------------------------------------------------------------------
# Authorization
# --------------------------------------------------------------------------------------------


@dataclass
class Connection:
    cert_id: str
    client_id: str
    cert_arn: str
    documents: list = field(default_factory=list)
    variables: dict = field(default_factory=dict)
    decisions: dict = field(default_factory=dict)
    active: bool = False


def connection_thing(things: list[dict], client_id: str) -> str | None:
    """The thing AWS IoT associates with a connection (developer guide, "Associating an AWS IoT
    thing to an MQTT client connection"), from the certificate's ListPrincipalThingsV2
    objects: the thing the certificate is exclusively attached to, whatever the client id;
    else the attached thing whose name is the client id; else none."""
    for obj in things:
        if obj.get("thingPrincipalType") == "EXCLUSIVE_THING":
            return obj.get("thingName")
    return client_id if any(obj.get("thingName") == client_id for obj in things) else None


class Authorizer:
    def __init__(self, endpoint: Endpoint, region: str, account: str, service_client_id: str):
        self.endpoint = endpoint
        self.region = region
        self.account = account
        self.service_client_id = service_client_id
        self.connections: dict[str, Connection] = {}
        self.lock = threading.Lock()
        self.stats: dict[str, int] = {}

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def arn(self, kind: str, name: str) -> str:
        return iot_policy.resource_arn(self.region, self.account, kind, name)

    def load(self, conn_key: str, cert_id: str, client_id: str) -> Connection:
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        conn = Connection(cert_id, client_id, f"arn:aws:iot:{self.region}:{self.account}:cert/{cert_id}")
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
        names = [p["policyName"] for p in self.endpoint.pages(iot.list_attached_policies, "policies", target=conn.cert_arn, recursive=False)]
        for name in names:
            try:
                conn.documents.append(iot.get_policy(policyName=name)["policyDocument"])
            except ClientError:
                pass
        try:
            things = iot.list_principal_things_v2(principal=conn.cert_arn).get("principalThingObjects", [])
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
        conn.variables = iot_policy.connection_variables(
            client_id, thing_name, certificate_subject(desc.get("certificatePem", "")), thing_type, attributes
        )
        return conn

    def decide(self, request: dict) -> str:
        op = request.get("op")
        conn_key = str(request.get("conn", ""))
        cert_id = str(request.get("cert", ""))
        client_id = request.get("client")
        topic = request.get("topic")
        if not isinstance(client_id, str):
            return "deny"
        if op == "disconnect":
            with self.lock:
                conn = self.connections.get(conn_key)
                if conn and conn.cert_id == cert_id and conn.client_id == client_id:
                    del self.connections[conn_key]
            return "ok"
        if op == "connect":
            if client_id == self.service_client_id:
                log.info("connect %s refused: the service's own client id", client_id)
                return "deny"
            conn = self.load(conn_key, cert_id, client_id)
            with self.lock:
                self.connections[conn_key] = conn
        else:
            with self.lock:
                conn = self.connections.get(conn_key)
            if conn is None or conn.cert_id != cert_id or conn.client_id != client_id:
                # Not seen connecting (e.g. this service restarted): load it now.
                conn = self.load(conn_key, cert_id, client_id)
                with self.lock:
                    self.connections[conn_key] = conn
        if not conn.active:
            self.count(f"{op}.denied")
            return "deny" if op in ("connect", "receive") else "disconnect"
        if op == "connect":
            action, resource = "iot:Connect", self.arn("client", client_id)
        elif op == "publish" and isinstance(topic, str):
            action, resource = "iot:Publish", self.arn("topic", topic)
        elif op == "receive" and isinstance(topic, str):
            action, resource = "iot:Receive", self.arn("topic", topic)
        elif op == "subscribe" and isinstance(topic, str):
            action, resource = "iot:Subscribe", self.arn("topicfilter", topic)
        else:
            return "deny"
        key = (action, resource)
        allowed = conn.decisions.get(key)
        if allowed is None:
            decision = iot_policy.evaluate(conn.documents, action, resource, conn.variables)
            allowed = decision.allowed
            conn.decisions[key] = allowed
            if not allowed:
                log.info("%s %s by %s (cert %s): %s", action, resource, client_id, cert_id[:12], decision.effect)
        self.count(f"{op}.{'allowed' if allowed else 'denied'}")
        if allowed:
            return "allow"
        return "disconnect" if op in ("publish", "subscribe") else "deny"


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


# --------------------------------------------------------------------------------------------
# Fleet provisioning
# --------------------------------------------------------------------------------------------


@dataclass
class Token:
    certificate_id: str
    certificate_pem: str
    claim_certificate_id: str
    expires: float
    used: bool = False


class Provisioning:
    def __init__(self, endpoint: Endpoint, region: str, account: str):
        self.endpoint = endpoint
        self.region = region
        self.account = account
        self.tokens: dict[str, Token] = {}
        self.lock = threading.Lock()

    # -- certificates ---------------------------------------------------------------------
    def new_token(self, cert_id: str, pem: str, claim_cert_id: str) -> str:
        token = base64.urlsafe_b64encode(secrets.token_bytes(96)).decode("ascii").rstrip("=")
        with self.lock:
            self.tokens[token] = Token(cert_id, pem, claim_cert_id, time.time() + TOKEN_LIFETIME_S)
        return token

    def endpoint_error(self, e, csr: bool = False) -> Rejected:
        code = Endpoint.code(e)
        message = getattr(e, "response", {}).get("Error", {}).get("Message", str(e))
        if code == "ThrottlingException":
            return Rejected(429, "ThrottlingException", "Rate exceeded")
        if code == "InvalidRequestException":
            return Rejected(400, "InvalidCSR" if csr else "InvalidRequest", message)
        if code == "ResourceNotFoundException":
            return Rejected(404, "ResourceNotFound", message)
        return Rejected(500, "InternalError", "An unexpected error has occurred.")

    def create_keys_and_certificate(self, payload: dict, claim_cert_id: str) -> dict:
        from botocore.exceptions import ClientError

        try:
            out = self.endpoint.iot.create_keys_and_certificate(setAsActive=False)
        except ClientError as e:
            raise self.endpoint_error(e) from None
        token = self.new_token(out["certificateId"], out["certificatePem"], claim_cert_id)
        return {
            "certificateId": out["certificateId"],
            "certificatePem": out["certificatePem"],
            "privateKey": out["keyPair"]["PrivateKey"],
            "certificateOwnershipToken": token,
        }

    def create_certificate_from_csr(self, payload: dict, claim_cert_id: str) -> dict:
        from botocore.exceptions import ClientError

        csr = payload.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr.strip():
            raise Rejected(400, "InvalidPayload", "certificateSigningRequest is required and must be a PEM string.")
        try:
            out = self.endpoint.iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
        except ClientError as e:
            raise self.endpoint_error(e, csr=True) from None
        token = self.new_token(out["certificateId"], out["certificatePem"], claim_cert_id)
        return {
            "certificateId": out["certificateId"],
            "certificatePem": out["certificatePem"],
            "certificateOwnershipToken": token,
        }

    def expire_tokens(self) -> None:
        """AWS: a certificate made by the MQTT API that is still not active, and attached to no
        policy or thing, when its token expires is deleted."""
        from botocore.exceptions import ClientError

        now = time.time()
        with self.lock:
            expired = [(k, t) for k, t in self.tokens.items() if t.expires <= now]
            for k, _ in expired:
                del self.tokens[k]
        iot = self.endpoint.iot
        for _, t in expired:
            if t.used:
                continue
            try:
                desc = iot.describe_certificate(certificateId=t.certificate_id)["certificateDescription"]
                if desc["status"] == "ACTIVE":
                    continue
                arn = desc["certificateArn"]
                if iot.list_attached_policies(target=arn).get("policies"):
                    continue
                if iot.list_principal_things(principal=arn).get("things"):
                    continue
                iot.delete_certificate(certificateId=t.certificate_id)
                log.info("deleted certificate %s: its ownership token expired unused", t.certificate_id[:12])
            except ClientError:
                pass

    # -- RegisterThing --------------------------------------------------------------------
    def register_thing(self, template_name: str, payload: dict, claim_cert_id: str, client_id: str) -> dict:
        from botocore.exceptions import ClientError

        token_text = payload.get("certificateOwnershipToken")
        if not isinstance(token_text, str) or not token_text:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")
        parameters = payload.get("parameters", {})
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
            raise Rejected(400, "InvalidParameters", "parameters must be an object of string values.")
        with self.lock:
            token = self.tokens.get(token_text)
            if token is None or token.used or token.expires <= time.time():
                token = None
        if token is None:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "The certificate ownership token is not valid.")

        iot = self.endpoint.iot
        try:
            tmpl = iot.describe_provisioning_template(templateName=template_name)
        except ClientError as e:
            if Endpoint.code(e) == "ResourceNotFoundException":
                raise Rejected(404, "ResourceNotFound", f"Template {template_name} does not exist.") from None
            raise self.endpoint_error(e) from None
        if not tmpl.get("enabled"):
            raise Rejected(400, "TemplateDisabled", f"Template {template_name} is disabled.")
        if tmpl.get("type", "FLEET_PROVISIONING") != "FLEET_PROVISIONING":
            raise Rejected(400, "InvalidTemplate", f"Template {template_name} is not a fleet provisioning template.")
        self.check_role(tmpl.get("provisioningRoleArn"))

        hook = tmpl.get("preProvisioningHook")
        if hook and hook.get("targetArn"):
            overrides = run_hook(
                self.endpoint, hook["targetArn"], self.account,
                {
                    "claimCertificateId": claim_cert_id,
                    "certificateId": token.certificate_id,
                    "certificatePem": token.certificate_pem,
                    "templateArn": tmpl["templateArn"],
                    "clientId": client_id,
                    "parameters": parameters,
                },
            )
            parameters = {**parameters, **overrides}

        extra = {f"AWS::IoT::Certificate::{k}": v for k, v in certificate_subject(token.certificate_pem).items()}
        try:
            plan = template_eval.evaluate(tmpl["templateBody"], parameters, token.certificate_id, extra)
        except template_eval.TemplateError as e:
            raise Rejected(e.status, e.code, e.message) from None
        try:
            thing_name = self.apply(plan, token)
        except ClientError as e:
            raise self.endpoint_error(e) from None
        with self.lock:
            token.used = True
            self.tokens.pop(token_text, None)
        result = {"deviceConfiguration": plan.device_configuration}
        if thing_name:
            result["thingName"] = thing_name
        return result

    def check_role(self, role_arn) -> None:
        from botocore.exceptions import ClientError

        if not isinstance(role_arn, str) or ":role/" not in role_arn:
            raise Rejected(403, "AccessDenied", "The template has no provisioning role.")
        try:
            self.endpoint.iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])
        except ClientError:
            raise Rejected(403, "AccessDenied", f"Failed provisioning: the provisioning role {role_arn} cannot be assumed.") from None

    def apply(self, plan: template_eval.Plan, token: Token) -> str | None:
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        cert_arn = f"arn:aws:iot:{self.region}:{self.account}:cert/{token.certificate_id}"
        # Everything the template names must exist before anything is made.
        thing = plan.thing
        if thing:
            for group in thing.get("ThingGroups", []):
                try:
                    iot.describe_thing_group(thingGroupName=group)
                except ClientError as e:
                    if Endpoint.code(e) == "ResourceNotFoundException":
                        raise Rejected(404, "ResourceNotFound", f"Thing group {group} does not exist.") from None
                    raise
            if thing.get("ThingTypeName"):
                try:
                    iot.describe_thing_type(thingTypeName=thing["ThingTypeName"])
                except ClientError as e:
                    if Endpoint.code(e) == "ResourceNotFoundException":
                        raise Rejected(404, "ResourceNotFound", f"Thing type {thing['ThingTypeName']} does not exist.") from None
                    raise
        for policy in plan.policies:
            if "PolicyDocument" not in policy:
                try:
                    iot.get_policy(policyName=policy["PolicyName"])
                except ClientError as e:
                    if Endpoint.code(e) == "ResourceNotFoundException":
                        raise Rejected(404, "ResourceNotFound", f"Policy {policy['PolicyName']} does not exist.") from None
                    raise
        principal_type = (plan.certificate or {}).get("ThingPrincipalType", "NON_EXCLUSIVE_THING")
        if thing:
            self.check_thing_association(cert_arn, thing["ThingName"], principal_type)

        thing_name = None
        if thing:
            thing_name = thing["ThingName"]
            self.apply_thing(thing)
        for policy in plan.policies:
            if "PolicyDocument" in policy:
                try:
                    iot.create_policy(policyName=policy["PolicyName"], policyDocument=policy["PolicyDocument"])
                except ClientError as e:
                    if Endpoint.code(e) != "ResourceAlreadyExistsException":
                        raise
            iot.attach_policy(policyName=policy["PolicyName"], target=cert_arn)
        if thing_name:
            iot.attach_thing_principal(thingName=thing_name, principal=cert_arn, thingPrincipalType=principal_type)
        if plan.certificate:
            iot.update_certificate(certificateId=token.certificate_id, newStatus=plan.certificate["Status"])
        return thing_name

    def check_thing_association(self, cert_arn: str, thing_name: str, principal_type: str) -> None:
        """Rejects (400 InvalidRequest, before anything is made) a registration whose
        AttachThingPrincipal AWS would refuse: the certificate is exclusively attached to
        another thing, or the template attaches it exclusively while it is attached to another
        thing (the local endpoint's correction 11). The attach itself is refused the same way
        should the association change in between."""
        others = [
            o for o in self.endpoint.iot.list_principal_things_v2(principal=cert_arn).get("principalThingObjects", [])
            if o["thingName"] != thing_name
        ]
        exclusive = [o["thingName"] for o in others if o.get("thingPrincipalType") == "EXCLUSIVE_THING"]
        if exclusive:
            raise Rejected(400, "InvalidRequest", f"The certificate is exclusively attached to the thing {exclusive[0]}.")
        if principal_type == "EXCLUSIVE_THING" and others:
            raise Rejected(
                400, "InvalidRequest",
                f"The certificate cannot be attached to the thing {thing_name} exclusively: it is attached to "
                f"{', '.join(sorted(o['thingName'] for o in others))}.",
            )

    def apply_thing(self, thing: dict) -> None:
        from botocore.exceptions import ClientError

        iot = self.endpoint.iot
        name = thing["ThingName"]
        settings = thing["OverrideSettings"]
        try:
            existing = iot.describe_thing(thingName=name)
        except ClientError as e:
            if Endpoint.code(e) != "ResourceNotFoundException":
                raise
            existing = None
        if existing is None:
            args = {"thingName": name}
            if thing.get("ThingTypeName"):
                args["thingTypeName"] = thing["ThingTypeName"]
            if thing.get("AttributePayload"):
                args["attributePayload"] = {"attributes": thing["AttributePayload"]}
            iot.create_thing(**args)
            for group in thing.get("ThingGroups", []):
                iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
            return

        def differs(what: str) -> Rejected:
            return Rejected(400, "InvalidParameters", f"Thing {name} exists with a different {what} (OverrideSettings FAIL).")

        if "AttributePayload" in thing:
            mode = settings["AttributePayload"]
            current = existing.get("attributes", {}) or {}
            wanted = thing["AttributePayload"]
            if mode == "FAIL" and current != wanted:
                raise differs("AttributePayload")
            if mode == "REPLACE":
                # UpdateThing with merge=false replaces the attributes; removed ones are
                # given as empty values.
                attrs = {**{k: "" for k in current if k not in wanted}, **wanted}
                iot.update_thing(thingName=name, attributePayload={"attributes": attrs, "merge": False})
            elif mode == "MERGE":
                iot.update_thing(thingName=name, attributePayload={"attributes": wanted, "merge": True})
        if "ThingTypeName" in thing:
            mode = settings["ThingTypeName"]
            if existing.get("thingTypeName") != thing["ThingTypeName"]:
                if mode == "FAIL":
                    raise differs("ThingTypeName")
                if mode == "REPLACE":
                    iot.update_thing(thingName=name, thingTypeName=thing["ThingTypeName"])
        if "ThingGroups" in thing:
            mode = settings["ThingGroups"]
            current = {g["groupName"] for g in iot.list_thing_groups_for_thing(thingName=name).get("thingGroups", [])}
            wanted = set(thing["ThingGroups"])
            if mode == "FAIL" and current != wanted:
                raise differs("ThingGroups")
            if mode in ("REPLACE", "MERGE"):
                for group in sorted(wanted - current):
                    iot.add_thing_to_thing_group(thingGroupName=group, thingName=name)
            if mode == "REPLACE":
                for group in sorted(current - wanted):
                    iot.remove_thing_from_thing_group(thingGroupName=group, thingName=name)


# --------------------------------------------------------------------------------------------
# Pre-provisioning hook
# --------------------------------------------------------------------------------------------

HOOK_RUNNER = r"""
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
module_name, _, function_name = sys.argv[2].rpartition(".")
handler = getattr(importlib.import_module(module_name), function_name)
class Context:
    function_name = sys.argv[3]
    aws_request_id = "local"
    def get_remaining_time_in_millis(self):
        return 5000
event = json.loads(sys.stdin.read())
result = handler(event, Context())
sys.stdout.write("\n" + json.dumps(result))
"""


def _allows_iot(policy_text: str, function_arn: str, account: str) -> bool:
    """Whether the function's resource policy lets AWS IoT invoke it as a pre-provisioning
    hook: an Allow statement for the service principal iot.amazonaws.com, lambda:InvokeFunction
    on the function, whose Condition holds in the context AWS IoT invokes hooks with.

    That context is modelled as aws:SourceAccount = the account and NO aws:SourceArn. AWS
    documents no source ARN for hook invocations (the guide only says to include source-arn
    or source-account in the permission), and AWS's own templates (the nucleus lite
    CloudFormation template, aws-samples automated-iot-fleet-provisioning-by-claim) grant
    iot.amazonaws.com with SourceAccount alone. So a permission that relies on SourceArn is
    not trusted to work on a real account: a statement testing aws:SourceArn does not match,
    unless its operator ends in IfExists (which holds for an absent key). SourceAccount
    conditions are evaluated; other condition keys are not modelled (they hold); a statement
    without Condition matches."""
    try:
        policy = json.loads(policy_text)
    except (TypeError, ValueError):
        return False
    if not isinstance(policy, dict):
        return False
    return any(
        _grants_iot_invoke(st, function_arn) and _hook_condition_holds(st.get("Condition"), account)
        for st in iot_policy._as_list(policy.get("Statement"))
    )


def _grants_iot_invoke(st, function_arn: str) -> bool:
    if not isinstance(st, dict) or st.get("Effect") != "Allow":
        return False
    principal = st.get("Principal")
    services = principal.get("Service") if isinstance(principal, dict) else principal
    if "iot.amazonaws.com" not in iot_policy._as_list(services):
        return False
    if not any(a in ("lambda:InvokeFunction", "lambda:*", "*") for a in iot_policy._as_list(st.get("Action"))):
        return False
    resources = iot_policy._as_list(st.get("Resource", function_arn))
    return any(iot_policy.matches(r, function_arn, {}) or iot_policy.matches(r, function_arn + ":*", {}) for r in resources)


# Condition operators evaluated on aws:SourceAccount, by what they test.
_POSITIVE = {"StringEquals": False, "ArnEquals": False, "StringLike": True, "ArnLike": True}
_NEGATED = {"StringNotEquals": False, "ArnNotEquals": False, "StringNotLike": True, "ArnNotLike": True}


def _hook_condition_holds(condition, account: str) -> bool:
    """A statement's Condition in AWS IoT's hook invocation context (see _allows_iot). An
    operator this does not know, on a key it models, does not hold (the safe side)."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        if_exists = operator.endswith("IfExists")
        base = operator[: -len("IfExists")] if if_exists else operator
        for key, wanted in block.items():
            name = key.lower()
            if name == "aws:sourcearn":
                if not if_exists:
                    return False  # no source ARN in the context: the test fails
                continue
            if name != "aws:sourceaccount":
                continue
            values = [str(v) for v in iot_policy._as_list(wanted)]
            if base in _POSITIVE or base in _NEGATED:
                pattern = _POSITIVE.get(base, _NEGATED.get(base))
                hit = any(iot_policy.matches(v, account, {}) if pattern else v == account for v in values)
                if hit != (base in _POSITIVE):
                    return False
            elif base == "Null":
                if not all(v.lower() == "false" for v in values):
                    return False  # the key is present
            else:
                return False
    return True


def run_hook(endpoint: Endpoint, target_arn: str, account: str, event: dict) -> dict:
    from botocore.exceptions import ClientError

    try:
        policy = endpoint.lam.get_policy(FunctionName=target_arn)["Policy"]
    except ClientError:
        policy = None
    if not policy or not _allows_iot(policy, target_arn, account):
        raise Rejected(403, "AccessDenied", f"AWS IoT is not allowed to invoke the pre-provisioning hook {target_arn}.")
    try:
        fn = endpoint.lam.get_function(FunctionName=target_arn)
    except ClientError:
        raise Rejected(403, "AccessDenied", f"The pre-provisioning hook {target_arn} cannot be invoked.") from None
    config = fn.get("Configuration", {})
    runtime = config.get("Runtime", "")
    location = (fn.get("Code") or {}).get("Location")
    if not runtime.startswith("python") or not location:
        raise Rejected(500, "InternalError", f"The pre-provisioning hook {target_arn} cannot be run locally ({runtime or 'no runtime'}).")
    try:
        with urllib.request.urlopen(location, timeout=10) as resp:
            package = resp.read()
        with tempfile.TemporaryDirectory(prefix="claimfab-hook-") as tmp:
            zipfile.ZipFile(io.BytesIO(package)).extractall(tmp)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "AWS_REGION": endpoint.region,
                "AWS_DEFAULT_REGION": endpoint.region,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_ENDPOINT_URL": endpoint.url,
                "AWS_LAMBDA_FUNCTION_NAME": config.get("FunctionName", ""),
                **((config.get("Environment") or {}).get("Variables") or {}),
            }
            proc = subprocess.run(
                [sys.executable, "-c", HOOK_RUNNER, tmp, config.get("Handler", "lambda_function.lambda_handler"), config.get("FunctionName", "")],
                input=json.dumps(event), capture_output=True, text=True, timeout=HOOK_TIMEOUT_S, env=env, cwd=tmp,
            )
    except subprocess.TimeoutExpired:
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook did not answer within 5 seconds.") from None
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise Rejected(500, "InternalError", f"The pre-provisioning hook could not be run: {e}") from None
    if proc.returncode != 0:
        log.info("pre-provisioning hook failed: %s", proc.stderr[-2000:])
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook failed.")
    try:
        answer = json.loads(proc.stdout.rsplit("\n", 1)[-1])
    except ValueError:
        answer = None
    if not isinstance(answer, dict) or answer.get("allowProvisioning") is not True:
        raise Rejected(403, "AccessDenied", "Provisioning was not allowed by the pre-provisioning hook.")
    overrides = answer.get("parameterOverrides") or {}
    if not isinstance(overrides, dict):
        raise Rejected(403, "AccessDenied", "The pre-provisioning hook returned invalid parameterOverrides.")
    return {str(k): str(v) for k, v in overrides.items()}


# --------------------------------------------------------------------------------------------
# MQTT side
# --------------------------------------------------------------------------------------------


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

    def reply(self, client_id: str, topic: str, outcome: str, body: dict) -> None:
        internal = f"{REPLY_PREFIX}{client_id.encode('utf-8').hex()}/{topic}/{outcome}"
        self.client.publish(internal, json.dumps(body), qos=1)

    def handle(self, internal_topic: str, payload: bytes) -> None:
        try:
            rest = internal_topic[len(REQUEST_PREFIX):]
            cert_id, hex_client, topic = rest.split("/", 2)
            client_id = bytes.fromhex(hex_client).decode("utf-8")
        except ValueError:
            log.warning("malformed internal request topic %r", internal_topic)
            return
        parts = topic.split("/")
        api = "unknown"
        try:
            if parts[:2] == ["$aws", "certificates"] and len(parts) == 4 and parts[2] in ("create", "create-from-csr"):
                api, fmt = parts[2], parts[3]
            elif parts[:2] == ["$aws", "provisioning-templates"] and len(parts) == 5 and parts[3] == "provision":
                api, fmt = "provision", parts[4]
            else:
                log.info("ignored publish by %s on %s (not a provisioning API request topic)", client_id, topic)
                return
            if fmt == "cbor":
                raise Rejected(400, "UnsupportedPayloadFormat", "This local endpoint answers the json payload format only.")
            if fmt != "json":
                log.info("ignored publish by %s on %s (unknown payload format)", client_id, topic)
                return
            try:
                body = json.loads(payload.decode("utf-8")) if payload.strip() else {}
            except (UnicodeDecodeError, ValueError):
                raise Rejected(400, "InvalidPayload", "The payload is not valid JSON.") from None
            if not isinstance(body, dict):
                raise Rejected(400, "InvalidPayload", "The payload must be a JSON object.")
            if api == "create":
                result = self.provisioning.create_keys_and_certificate(body, cert_id)
            elif api == "create-from-csr":
                result = self.provisioning.create_certificate_from_csr(body, cert_id)
            else:
                result = self.provisioning.register_thing(parts[2], body, cert_id, client_id)
            self.authorizer.count(f"{api}.accepted")
            log.info("%s for %s: accepted", topic, client_id)
            self.reply(client_id, topic, "accepted", result)
        except Rejected as r:
            self.authorizer.count(f"{api}.rejected")
            log.info("%s for %s: rejected %s %s: %s", topic, client_id, r.status, r.code, r.message)
            self.reply(client_id, topic, "rejected", r.payload())
        except Exception:  # noqa: BLE001 - never crash on input
            log.exception("%s for %s failed", topic, client_id)
            self.reply(client_id, topic, "rejected", Rejected(500, "InternalError", "An unexpected error has occurred.").payload())


def main() -> int:
    parser = argparse.ArgumentParser(description="claimfab local fleet-provisioning service")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--auth-socket", required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-id", default="claimfab-fleet-provisioning")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="dataplane: %(message)s")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    endpoint = Endpoint(args.endpoint_url, args.region)
    authorizer = Authorizer(endpoint, args.region, args.account, args.client_id)
    provisioning = Provisioning(endpoint, args.region, args.account)

    try:
        os.unlink(args.auth_socket)
    except FileNotFoundError:
        pass
    server = AuthServer(args.auth_socket, AuthHandler)
    server.authorizer = authorizer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="auth", daemon=True).start()

    service = Service(args, endpoint, provisioning, authorizer)
    deadline = time.monotonic() + 20
    while not stop.is_set():
        try:
            service.client.connect("127.0.0.1", args.broker_port, keepalive=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                log.error("cannot connect to the broker on 127.0.0.1:%d", args.broker_port)
                return 1
            time.sleep(0.05)
    service.client.loop_start()
    while not stop.is_set() and not service.ready.wait(0.05):
        if time.monotonic() > deadline:
            log.error("no MQTT subscription after 20 s")
            return 1
    if not stop.is_set():
        print("ready", flush=True)
    last_sweep = time.monotonic()
    while not stop.wait(1.0):
        if time.monotonic() - last_sweep > 60:
            last_sweep = time.monotonic()
            try:
                provisioning.expire_tokens()
            except Exception:  # noqa: BLE001
                log.exception("token sweep failed")
    log.info("stopping; counters: %s", json.dumps(authorizer.stats, sort_keys=True))
    service.client.loop_stop()
    server.shutdown()
    try:
        os.unlink(args.auth_socket)
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
