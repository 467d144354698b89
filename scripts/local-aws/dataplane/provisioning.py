"""The Device provisioning MQTT API's three calls, carried out through the local endpoint:
CreateKeysAndCertificate, CreateCertificateFromCsr (each answering with a certificate ownership
token) and RegisterThing (service.py's docstring has the topics and the error codes)."""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from dataclasses import dataclass

from dataplane import template as template_eval
from dataplane import things
from dataplane.endpoint_client import Endpoint, Rejected, endpoint_error
from dataplane.hook import run_hook

log = logging.getLogger("dataplane")

TOKEN_LIFETIME_S = 3600  # AWS: the certificateOwnershipToken expires after one hour


@dataclass(frozen=True)
class Asker:
    """Who made a request: the broker's connection serial (claimfab_auth.c), the certificate
    it connected with and its client id."""

    connection: str
    certificate_id: str
    client_id: str


@dataclass
class Token:
    certificate_id: str
    certificate_pem: str
    # The connection that obtained it: only that connection may spend it (AWS documents no
    # binding, so the strict one: a token that leaked from a device is worth nothing to
    # another connection, even one with the same claim).
    issued_to: Asker
    expires: float
    used: bool = False
    # A RegisterThing is spending it: another one at the same time is refused (requests are
    # served on several threads), and it is freed again if that one fails.
    in_use: bool = False


def register_parameters(payload: dict) -> dict:
    """RegisterThing's parameters: an object of string values (absent or null: none)."""
    parameters = payload.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict) or not all(isinstance(v, str) for v in parameters.values()):
        raise Rejected(400, "InvalidParameters", "parameters must be an object of string values.")
    return parameters


def hook_event(claim_cert_id: str, token: Token, tmpl: dict, client_id: str, parameters: dict) -> dict:
    """AWS's documented pre-provisioning hook payload."""
    return {
        "claimCertificateId": claim_cert_id,
        "certificateId": token.certificate_id,
        "certificatePem": token.certificate_pem,
        "templateArn": tmpl["templateArn"],
        "clientId": client_id,
        "parameters": parameters,
    }


class Provisioning:
    def __init__(self, endpoint: Endpoint, region: str, account: str):
        self.endpoint = endpoint
        self.region = region
        self.account = account
        self.tokens: dict[str, Token] = {}
        self.lock = threading.Lock()

    # -- certificates ---------------------------------------------------------------------
    def new_token(self, cert_id: str, pem: str, asker: Asker) -> str:
        token = base64.urlsafe_b64encode(secrets.token_bytes(96)).decode("ascii").rstrip("=")
        with self.lock:
            self.tokens[token] = Token(cert_id, pem, asker, time.time() + TOKEN_LIFETIME_S)
        return token

    def create_keys_and_certificate(self, payload: dict, asker: Asker) -> dict:
        from botocore.exceptions import ClientError

        try:
            out = self.endpoint.iot.create_keys_and_certificate(setAsActive=False)
        except ClientError as e:
            raise endpoint_error(e) from None
        token = self.new_token(out["certificateId"], out["certificatePem"], asker)
        return {
            "certificateId": out["certificateId"],
            "certificatePem": out["certificatePem"],
            "privateKey": out["keyPair"]["PrivateKey"],
            "certificateOwnershipToken": token,
        }

    def create_certificate_from_csr(self, payload: dict, asker: Asker) -> dict:
        from botocore.exceptions import ClientError

        csr = payload.get("certificateSigningRequest")
        if not isinstance(csr, str) or not csr.strip():
            raise Rejected(400, "InvalidPayload", "certificateSigningRequest is required and must be a PEM string.")
        try:
            out = self.endpoint.iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=False)
        except ClientError as e:
            raise endpoint_error(e, csr=True) from None
        token = self.new_token(out["certificateId"], out["certificatePem"], asker)
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
    def register_thing(self, template_name: str, payload: dict, asker: Asker) -> dict:
        from botocore.exceptions import ClientError

        token_text = payload.get("certificateOwnershipToken")
        if not isinstance(token_text, str) or not token_text:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "Certificate ownership token cannot be empty.")
        parameters = register_parameters(payload)
        token = self.take_token(token_text, asker)
        try:
            result = self.register_with(token, template_name, parameters, asker)
        except BaseException:
            with self.lock:
                token.in_use = False
            raise
        with self.lock:
            token.used = True
            self.tokens.pop(token_text, None)
        return result

    def register_with(self, token: Token, template_name: str, parameters: dict, asker: Asker) -> dict:
        """RegisterThing's work once the token is held: template, hook, plan, resources."""
        from botocore.exceptions import ClientError

        tmpl = self.usable_template(template_name)
        hook = tmpl.get("preProvisioningHook")
        if hook and hook.get("targetArn"):
            event = hook_event(asker.certificate_id, token, tmpl, asker.client_id, parameters)
            parameters = {**parameters, **run_hook(self.endpoint, hook["targetArn"], self.account, event)}
        try:
            plan = template_eval.evaluate(tmpl["templateBody"], parameters, token.certificate_id)
        except template_eval.TemplateError as e:
            raise Rejected(e.status, e.code, e.message) from None
        try:
            thing_name = self.apply(plan, token)
        except ClientError as e:
            raise endpoint_error(e) from None
        result = {"deviceConfiguration": plan.device_configuration}
        if thing_name:
            result["thingName"] = thing_name
        return result

    def take_token(self, token_text: str, asker: Asker) -> Token:
        """The token, held for this RegisterThing, if it exists, is unused, not being spent,
        has not expired and is spent by the connection it was issued to."""
        with self.lock:
            token = self.tokens.get(token_text)
            if token is None or token.used or token.in_use or token.expires <= time.time():
                token = None
            elif token.issued_to != asker:
                log.info("ownership token of certificate %s (issued to connection %s, %s) refused on connection %s (%s)",
                         token.certificate_id[:12], token.issued_to.connection, token.issued_to.client_id,
                         asker.connection, asker.client_id)
                token = None
            else:
                token.in_use = True
        if token is None:
            raise Rejected(400, "InvalidCertificateOwnershipToken", "The certificate ownership token is not valid.")
        return token

    def usable_template(self, template_name: str) -> dict:
        """The template, if it exists, is enabled, is a fleet-provisioning template and has a
        provisioning role that can be assumed."""
        from botocore.exceptions import ClientError

        try:
            tmpl = self.endpoint.iot.describe_provisioning_template(templateName=template_name)
        except ClientError as e:
            if Endpoint.code(e) == "ResourceNotFoundException":
                raise Rejected(404, "ResourceNotFound", f"Template {template_name} does not exist.") from None
            raise endpoint_error(e) from None
        if not tmpl.get("enabled"):
            raise Rejected(400, "TemplateDisabled", f"Template {template_name} is disabled.")
        if tmpl.get("type", "FLEET_PROVISIONING") != "FLEET_PROVISIONING":
            raise Rejected(400, "InvalidTemplate", f"Template {template_name} is not a fleet provisioning template.")
        self.check_role(tmpl.get("provisioningRoleArn"))
        return tmpl

    def check_role(self, role_arn) -> None:
        from botocore.exceptions import ClientError

        if not isinstance(role_arn, str) or ":role/" not in role_arn:
            raise Rejected(403, "AccessDenied", "The template has no provisioning role.")
        try:
            self.endpoint.iam.get_role(RoleName=role_arn.rsplit("/", 1)[-1])
        except ClientError:
            raise Rejected(403, "AccessDenied", f"Failed provisioning: the provisioning role {role_arn} cannot be assumed.") from None

    def apply(self, plan: template_eval.Plan, token: Token) -> str | None:
        """Carries the plan out; returns the thing's name (None without a thing)."""
        iot = self.endpoint.iot
        cert_arn = f"arn:aws:iot:{self.region}:{self.account}:cert/{token.certificate_id}"
        # Everything the template names must exist before anything is made.
        things.check_named_resources(iot, plan)
        thing = plan.thing
        principal_type = (plan.certificate or {}).get("ThingPrincipalType", "NON_EXCLUSIVE_THING")
        if thing:
            self.check_thing_association(cert_arn, thing["ThingName"], principal_type)
            things.apply_thing(iot, thing)
        things.attach_policies(iot, plan, cert_arn)
        if thing:
            iot.attach_thing_principal(thingName=thing["ThingName"], principal=cert_arn, thingPrincipalType=principal_type)
        if plan.certificate:
            iot.update_certificate(certificateId=token.certificate_id, newStatus=plan.certificate["Status"])
        return thing["ThingName"] if thing else None

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
