"""Local AWS IoT endpoint for claimfab's tests and demo.

This launcher owns:
  * one moto server (the version pinned in scripts/endpoint-requirements.txt), run in-process
    (moto's ThreadedMotoServer setup: werkzeug, one thread per request) and bound to 127.0.0.1
    only, with its state in memory for the life of the process;
  * a test CA (EC P-256, key kept in memory only, new at every start) that signs the
    certificates CreateCertificateFromCsr issues; its certificate is written to
    STATE_DIR/test-ca.pem;
  * STATE_DIR/endpoint.json, written atomically once the server answers:
    {"url": "http://127.0.0.1:PORT", "pid": PID, "ca_cert": "/abs/STATE_DIR/test-ca.pem",
     "region": REGION}; it is removed again on a clean shutdown;
  * a set of narrow corrections to moto's IoT backend, applied before serving, each citing the
    AWS IoT API behaviour it follows (see apply_iot_corrections below);
  * optional fault injection for AWS IoT operations, all off by default (see FaultInjector):
    per-operation throttling (HTTP 429 ThrottlingException, not executed), injected failures
    (HTTP 500 InternalFailureException, not executed) and lost responses (executed, then
    answered HTTP 500 InternalFailureException). endpoint.json also carries the settings:
    "faults": {"throttle": {OP: RPS}, "fail": {OP: FRACTION}, "lose_response": {OP: FRACTION},
    "deny": [OP], "drop_csr_subject": BOOL, "seed": N};
  * a test switch that departs from AWS on purpose, off by default: --drop-csr-subject makes
    CreateCertificateFromCsr (and so the data plane's MQTT CreateCertificateFromCsr, which
    calls it) issue certificates with AWS IoT's default subject, CN=AWS IoT Certificate,
    instead of the CSR's subject -- an endpoint that does not keep the CSR subject, for
    tests of code that relies on it (AWS makes the certificate "using the specified
    certificate signing request"; the local endpoint keeps the subject unless asked not to);
  * DELETE /_claimfab/faults: clears every injected fault, --drop-csr-subject included (AWS
    "recovers").
  * with --data-plane, the local AWS IoT data plane (scripts/dataplane/): a TLS-only MQTT
    broker (mosquitto, with the claimfab_auth plugin) on 127.0.0.1 and the fleet-provisioning
    service (the Device provisioning MQTT API, IoT policy enforcement), both started before
    "ready" and stopped on shutdown; their certificates are issued here by the test CA.
    endpoint.json then also has "data_plane": {"host": "127.0.0.1", "port": N,
    "server_name": "<the account's ATS data endpoint host>", "ca_cert": PATH,
    "broker_pid", "service_pid", "service_client_id"}; devices connect to host:port and
    verify the server's certificate for server_name against ca_cert. With --data-plane,
    Lambda GetFunction also returns a downloadable Code.Location (correction 10);
  * GET /_claimfab/stats: JSON {"operations": {OP: {"requests", "throttled", "failed",
    "lost_response", "executed"}}, "faults": {...}} counting every AWS IoT request since start
    (requests = throttled + failed + executed once none is in flight; lost_response counts
    the executed requests whose answer was replaced by a 500).

Usage:
    .venv/bin/python scripts/local_endpoint.py --state-dir DIR [--port 0] [--region us-east-1]
                                              [--log-requests]
                                              [--throttle OP=RPS]... [--fail OP=FRACTION]...
                                              [--lose-response OP=FRACTION]... [--deny OP]...
                                              [--seed N] [--drop-csr-subject]
                                              [--data-plane] [--exit-with-parent]

OP is an AWS IoT API operation name as in the API reference (CreateCertificateFromCsr,
AttachPolicy, ...); requests are matched to operations by HTTP method and path, using the REST
bindings in botocore's AWS IoT service model.

stdout carries exactly one line, "ready http://127.0.0.1:PORT", once the endpoint answers
requests; everything else (errors, optional request log) goes to stderr. SIGTERM or SIGINT
stops the server and exits 0. Clients use any credentials (e.g. testing/testing); the account
is moto's default, 123456789012.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import hashlib
import json
import logging
import math
import os
import random
import secrets
import signal
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"

# AWS IoT CA-issued certificates (CreateKeysAndCertificate, CreateCertificateFromCsr) are
# valid until 2049-12-31T23:59:59Z.
AWS_ISSUED_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
# The subject AWS IoT gives the certificates it names itself (CreateKeysAndCertificate).
AWS_DEFAULT_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")])

# One lock for the IoT backend's certificate/policy state. moto's server handles each request
# on its own thread and its backends keep plain dicts, so concurrent writers and readers
# (e.g. ListCertificates iterating while CreateCertificateFromCsr inserts) must not overlap.
STATE_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------------
# Test CA
# --------------------------------------------------------------------------------------------


class TestCa:
    """EC P-256 CA, key in memory only; signs certificates for CSR keys."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "claimfab local endpoint"),
                x509.NameAttribute(NameOID.COMMON_NAME, "claimfab local test CA (not AWS)"),
            ]
        )
        now = dt.datetime.now(dt.timezone.utc)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            # Outlives every certificate it signs (those end at AWS_ISSUED_NOT_AFTER).
            .not_valid_after(AWS_ISSUED_NOT_AFTER + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject: x509.Name, public_key, extensions=()) -> str:
        """A leaf certificate over `public_key`, shaped like the ones AWS IoT issues
        (`extensions`: extra (extension, critical) pairs, e.g. the data plane's SANs)."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(AWS_ISSUED_NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self.aki, critical=False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --------------------------------------------------------------------------------------------
# Corrections to moto's IoT backend
# --------------------------------------------------------------------------------------------


ENDPOINT_FORMATS = {
    "iot:Data": "{p}.iot.{r}.amazonaws.com",
    "iot:Data-ATS": "{p}-ats.iot.{r}.amazonaws.com",
    "iot:CredentialProvider": "{p}.credentials.iot.{r}.amazonaws.com",
    "iot:Jobs": "{p}.jobs.iot.{r}.amazonaws.com",
}


def endpoint_host(account_id: str, region: str, endpoint_type: str = "iot:Data-ATS") -> str:
    """The account's DescribeEndpoint answer (correction 4): a 14-character prefix from
    sha256(account|region|kind), in AWS's host formats."""
    kind = "credentials" if endpoint_type == "iot:CredentialProvider" else "data"
    prefix = hashlib.sha256(f"{account_id}|{region}|{kind}".encode("utf-8")).hexdigest()[:14]
    return ENDPOINT_FORMATS[endpoint_type].format(p=prefix, r=region)


def apply_iot_corrections(ca: TestCa, faults: "FaultSettings") -> None:
    """Monkeypatches moto's IoT backend/responses; call once, before serving. `faults` carries
    the test switches that depart from AWS on purpose (here: drop_csr_subject)."""
    from moto.core.config import default_user_config
    from moto.iot import models as iot_models
    from moto.iot import responses as iot_responses
    from moto.iot.exceptions import InvalidRequestException
    from moto.core.responses import ActionResult, EmptyResult

    IoTBackend = iot_models.IoTBackend
    FakeCertificate = iot_models.FakeCertificate
    IoTResponse = iot_responses.IoTResponse

    # 2. Certificate ids. AWS: certificateId is the SHA-256 (hex) of the certificate's DER
    #    encoding. moto hashes the PEM text unless its "iot.use_valid_cert" setting is on.
    #    (moto 5.2.5 has no environment variable for it: it is only in
    #    moto.core.config.default_user_config, which the server process shares with us.)
    default_user_config.setdefault("iot", {})["use_valid_cert"] = True

    # 7. AWS managed IAM policies. AWS: managed policies such as
    #    arn:aws:iam::aws:policy/service-role/AWSIoTThingsRegistration exist in every account
    #    and can be attached (AttachRolePolicy). moto loads them only on request.
    default_user_config.setdefault("iam", {})["load_aws_managed_policies"] = True

    # 1. CreateCertificateFromCsr. AWS (API_CreateCertificateFromCsr): "Creates an X.509
    #    certificate using the specified certificate signing request"; the CSR must carry an
    #    RSA key of at least 2048 bits or an EC key on NIST P-256, P-384 or P-521, otherwise
    #    InvalidRequestException (HTTP 400); "reusing the same CSR results in a distinct
    #    certificate". The certificate is over the CSR's own key, signed by AWS's CA. moto
    #    instead certifies a freshly generated RSA key (and answers 500 on a bad CSR).
    allowed_curves = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

    def create_certificate_from_csr(self, csr, set_as_active):
        if not isinstance(csr, str) or not csr.strip():
            raise InvalidRequestException("The certificate signing request is missing.")
        try:
            req = x509.load_pem_x509_csr(csr.encode("utf-8"))
            signature_ok = req.is_signature_valid
            public_key = req.public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise InvalidRequestException(f"The certificate signing request is not valid: {e}")
        if not signature_ok:
            raise InvalidRequestException(
                "The certificate signing request is not valid: its signature does not verify."
            )
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < 2048:
                raise InvalidRequestException(
                    "The certificate signing request is not valid: RSA keys must be at least "
                    f"2048 bits (got {public_key.key_size})."
                )
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if not isinstance(public_key.curve, allowed_curves):
                raise InvalidRequestException(
                    "The certificate signing request is not valid: EC keys must be on NIST "
                    f"P-256, P-384 or P-521 (got {public_key.curve.name})."
                )
        else:
            raise InvalidRequestException(
                "The certificate signing request is not valid: the key must be RSA or EC "
                f"(got {type(public_key).__name__})."
            )
        # --drop-csr-subject (a test switch, not AWS's behaviour): issue the certificate with
        # AWS IoT's default subject, as an endpoint that does not keep the CSR's subject would.
        subject = AWS_DEFAULT_SUBJECT if faults.drop_csr_subject else req.subject
        pem = ca.issue(subject, public_key)
        # 6. Registered under the state lock; through moto's own register_certificate so it
        #    shows in List/DescribeCertificate and gets ACTIVE/INACTIVE from setAsActive.
        with STATE_LOCK:
            return self.register_certificate(
                pem, ca_certificate_pem=None, set_as_active=bool(set_as_active), status="INACTIVE"
            )

    IoTBackend.create_certificate_from_csr = create_certificate_from_csr

    # 1b. setAsActive travels as the query string "setAsActive=true|false" (REST binding of
    #     CreateCertificateFromCsr). moto reads it as the raw string, so "false" was truthy and
    #     every certificate came out ACTIVE. AWS: ACTIVE only when setAsActive is true.
    def response_create_certificate_from_csr(self):
        cert = self.iot_backend.create_certificate_from_csr(
            self._get_param("certificateSigningRequest"),
            set_as_active=self._get_bool_param("setAsActive", False),
        )
        return ActionResult(
            {
                "certificateId": cert.certificate_id,
                "certificateArn": cert.arn,
                "certificatePem": cert.certificate_pem,
            }
        )

    IoTResponse.create_certificate_from_csr = response_create_certificate_from_csr

    # 9. CreateKeysAndCertificate. AWS (API_CreateKeysAndCertificate): "Creates a 2048-bit RSA
    #    key pair and issues an X.509 certificate using the issued public key", signed by AWS's
    #    CA, with a default subject ("AWS IoT Certificate"); ACTIVE only when setAsActive is
    #    true. moto self-signs it, so no TLS server trusting the CA (the data plane's broker)
    #    would accept it; issue it from the test CA instead. setAsActive: as 1b.
    def create_keys_and_certificate(self, set_as_active):
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_pair = {
            "PublicKey": private_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode("ascii"),
            "PrivateKey": private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ).decode("ascii"),
        }
        pem = ca.issue(AWS_DEFAULT_SUBJECT, private_key.public_key())
        with STATE_LOCK:
            cert = self.register_certificate(
                pem, ca_certificate_pem=None, set_as_active=bool(set_as_active), status="INACTIVE"
            )
        return cert, key_pair

    IoTBackend.create_keys_and_certificate = create_keys_and_certificate

    def response_create_keys_and_certificate(self):
        cert, key_pair = self.iot_backend.create_keys_and_certificate(
            set_as_active=self._get_bool_param("setAsActive", False)
        )
        return ActionResult(
            {
                "certificateArn": cert.arn,
                "certificateId": cert.certificate_id,
                "certificatePem": cert.certificate_pem,
                "keyPair": key_pair,
            }
        )

    IoTResponse.create_keys_and_certificate = response_create_keys_and_certificate

    # 3. DescribeCertificate. AWS (CertificateDescription.validity): "When the certificate is
    #    valid", i.e. the certificate's own notBefore/notAfter. moto sets now-1d..now+1d for
    #    every certificate. Take them from the certificate when it parses.
    original_cert_init = FakeCertificate.__init__

    def cert_init(self, certificate_pem, *args, **kwargs):
        original_cert_init(self, certificate_pem, *args, **kwargs)
        try:
            parsed = x509.load_pem_x509_certificate(certificate_pem.encode("utf-8"))
        except (ValueError, TypeError, AttributeError):
            return  # not a certificate we can read: keep moto's placeholder validity
        # moto keeps naive UTC datetimes throughout.
        self.validity_not_before = parsed.not_valid_before_utc.replace(tzinfo=None)
        self.validity_not_after = parsed.not_valid_after_utc.replace(tzinfo=None)

    FakeCertificate.__init__ = cert_init

    # 4. DescribeEndpoint. AWS: the endpoint is specific to the account (and region) and the
    #    same on every call. moto draws a new random prefix on every call. Derive the 14-char
    #    prefix from sha256(account|region|kind), keeping AWS's host formats; data and
    #    credential-provider prefixes differ, as they do on AWS.

    def describe_endpoint(self, endpoint_type):
        endpoint = iot_models.FakeEndpoint(endpoint_type, self.region_name)  # validates type
        endpoint.endpoint = endpoint_host(self.account_id, self.region_name, endpoint_type)
        self.endpoint = endpoint
        return endpoint

    IoTBackend.describe_endpoint = describe_endpoint

    # 5. ListCertificates. AWS (API_ListCertificates): pageSize 1..250, marker, and
    #    ascendingOrder (query "isAscendingOrder"; true = oldest first by creation date, the
    #    default false = newest first); "nextMarker" is returned while more results exist.
    #    moto returns everything in insertion order and ignores all three. The default page
    #    size, 25, is AWS's. Markers are opaque to clients: here, hex of "creationDate|id" of the
    #    last certificate returned, so pages stay consistent while certificates are added.
    def response_list_certificates(self):
        raw_size = self._get_param("pageSize")
        if raw_size is None:
            page_size = 25
        else:
            try:
                page_size = int(raw_size)
            except (TypeError, ValueError):
                raise InvalidRequestException("pageSize must be an integer between 1 and 250.")
            if not 1 <= page_size <= 250:
                raise InvalidRequestException("pageSize must be an integer between 1 and 250.")
        ascending = self._get_bool_param("isAscendingOrder", False)
        marker = self._get_param("marker")

        def sort_key(cert):
            return (cert.creation_date.isoformat(timespec="microseconds"), cert.certificate_id)

        certs = sorted(self.iot_backend.list_certificates(), key=sort_key, reverse=not ascending)
        if marker:
            try:
                created, _, cert_id = bytes.fromhex(marker).decode("utf-8").partition("|")
            except (ValueError, UnicodeDecodeError):
                raise InvalidRequestException("The marker is not valid.")
            if not cert_id:
                raise InvalidRequestException("The marker is not valid.")
            after = (created, cert_id)
            certs = [c for c in certs if (sort_key(c) > after if ascending else sort_key(c) < after)]
        page = certs[:page_size]
        result = {"certificates": [c.to_dict() for c in page]}
        if len(certs) > page_size:
            last = sort_key(page[-1])
            result["nextMarker"] = f"{last[0]}|{last[1]}".encode("utf-8").hex()
        return ActionResult(result)

    IoTResponse.list_certificates = response_list_certificates

    # 11. Exclusive thing association. AWS (API_AttachThingPrincipal): the query parameter
    #     thingPrincipalType is EXCLUSIVE_THING ("Attaches the specified principal to the
    #     specified thing, exclusively. The thing will be the only thing that's attached to the
    #     principal.") or NON_EXCLUSIVE_THING (the default; "Multiple things can be attached to
    #     the principal."). Developer guide (exclusive-thing.html): "When a certificate is
    #     associated with an exclusive thing, this certificate can only be associated with
    #     other things if you detach it from the exclusive thing." ListThingPrincipalsV2 and
    #     ListPrincipalThingsV2 answer {"thingPrincipalObjects": [{"principal",
    #     "thingPrincipalType"}]} and {"principalThingObjects": [{"thingName",
    #     "thingPrincipalType"}]}, filtered by an optional thingPrincipalType. moto 5.2.5
    #     ignores the type everywhere (its ListThingPrincipalsV2 even answers a thingName key
    #     AWS does not have). Here the type is kept per (principal, thing) association; an
    #     attach is refused (InvalidRequestException, HTTP 400: AWS does not publish the error)
    #     when the principal is exclusively attached to another thing, or when an exclusive
    #     attach meets a principal attached to any other thing. Re-attaching to the same thing
    #     is accepted and sets the association's type to the one asked for (the operation is a
    #     PUT: the request states the association wanted). DetachThingPrincipal drops the type
    #     with the association. The v1 lists (ListThingPrincipals, ListPrincipalThings) stay
    #     moto's.
    exclusive, non_exclusive = "EXCLUSIVE_THING", "NON_EXCLUSIVE_THING"

    def association_types(backend) -> dict:
        """(principal ARN, thing name) -> thingPrincipalType of the backend's associations
        (those in moto's principal_things; absent means NON_EXCLUSIVE_THING). Kept on the
        backend instance, so moto's reset drops it with the associations."""
        types = backend.__dict__.get("_claimfab_thing_principal_types")
        if types is None:
            types = backend._claimfab_thing_principal_types = {}
        return types

    def principal_type_param(response):
        """The request's thingPrincipalType (None when absent), checked against the enum."""
        value = response._get_param("thingPrincipalType")
        if value is not None and value not in (exclusive, non_exclusive):
            raise InvalidRequestException(
                f"thingPrincipalType {value!r} is not valid: use {exclusive} or {non_exclusive}."
            )
        return value

    def attach_thing_principal(self, thing_name, principal_arn, thing_principal_type=non_exclusive):
        principal = self._get_principal(principal_arn)
        thing = self.describe_thing(thing_name)
        types = association_types(self)
        others = {
            t: types.get((p, t), non_exclusive)
            for p, t in self.principal_things
            if p == principal_arn and t != thing_name
        }
        held_by = sorted(t for t, kind in others.items() if kind == exclusive)
        if held_by:
            raise InvalidRequestException(
                f"The principal {principal_arn} is attached to the thing {held_by[0]} as an "
                f"exclusive thing; detach it from {held_by[0]} before attaching it to another thing."
            )
        if thing_principal_type == exclusive and others:
            raise InvalidRequestException(
                f"The principal {principal_arn} cannot be attached to the thing {thing_name} as an "
                f"exclusive thing: it is attached to other things ({', '.join(sorted(others))})."
            )
        key = (principal_arn, thing_name)
        self.principal_things[key] = (principal, thing)
        types[key] = thing_principal_type

    IoTBackend.attach_thing_principal = attach_thing_principal

    original_detach_thing_principal = IoTBackend.detach_thing_principal

    def detach_thing_principal(self, thing_name, principal_arn):
        original_detach_thing_principal(self, thing_name, principal_arn)
        association_types(self).pop((principal_arn, thing_name), None)

    IoTBackend.detach_thing_principal = detach_thing_principal

    def list_thing_principals_v2(self, thing_name):
        """[(principal ARN, type)] of a thing (ResourceNotFound for no such thing, as v1)."""
        types = association_types(self)
        return [(p, types.get((p, thing_name), non_exclusive)) for p in self.list_thing_principals(thing_name)]

    def list_principal_things_v2(self, principal_arn):
        """[(thing name, type)] of a principal."""
        types = association_types(self)
        return [(t, types.get((principal_arn, t), non_exclusive)) for t in self.list_principal_things(principal_arn)]

    IoTBackend.list_thing_principals_v2 = list_thing_principals_v2
    IoTBackend.list_principal_things_v2 = list_principal_things_v2

    def response_attach_thing_principal(self):
        kind = principal_type_param(self) or non_exclusive
        self.iot_backend.attach_thing_principal(
            self._get_param("thingName"), self.headers.get("x-amzn-principal"), kind
        )
        return EmptyResult()

    def response_list_thing_principals_v2(self):
        wanted = principal_type_param(self)
        pairs = self.iot_backend.list_thing_principals_v2(self._get_param("thingName"))
        objects = [{"principal": p, "thingPrincipalType": k} for p, k in pairs if wanted in (None, k)]
        return ActionResult({"thingPrincipalObjects": objects})

    def response_list_principal_things_v2(self):
        wanted = principal_type_param(self)
        pairs = self.iot_backend.list_principal_things_v2(self.headers.get("x-amzn-principal"))
        objects = [{"thingName": t, "thingPrincipalType": k} for t, k in pairs if wanted in (None, k)]
        return ActionResult({"principalThingObjects": objects})

    IoTResponse.attach_thing_principal = response_attach_thing_principal
    IoTResponse.list_thing_principals_v2 = response_list_thing_principals_v2
    IoTResponse.list_principal_things_v2 = response_list_principal_things_v2

    # 6. Thread safety: the backend methods that read or write certificates, policies and
    #    their attachments run under STATE_LOCK, and list results are copied under it (moto
    #    returns live dict views that the response then iterates unlocked). describe_certificate
    #    and certificate-ARN principal lookups become dict lookups (moto scans every
    #    certificate; same result, O(1), which matters at bulk sizes).
    def describe_certificate(self, certificate_id):
        cert = self.certificates.get(certificate_id)
        if cert is None:
            raise iot_models.ResourceNotFoundException()
        return cert

    IoTBackend.describe_certificate = describe_certificate

    original_get_principal = IoTBackend._get_principal

    def get_principal(self, principal_arn):
        if ":cert/" in principal_arn:
            cert = self.certificates.get(principal_arn.rsplit("/", 1)[-1])
            if cert is None or cert.arn != principal_arn:
                raise iot_models.ResourceNotFoundException()
            return cert
        return original_get_principal(self, principal_arn)

    IoTBackend._get_principal = get_principal

    def locked(fn):
        def wrapper(*args, **kwargs):
            with STATE_LOCK:
                result = fn(*args, **kwargs)
                if type(result).__name__ in ("odict_values", "dict_values", "odict_keys", "dict_keys"):
                    result = list(result)
                return result

        wrapper.__name__ = fn.__name__
        wrapper.__doc__ = fn.__doc__
        return wrapper

    for name in (
        "create_keys_and_certificate",
        "register_certificate",
        "register_certificate_without_ca",
        "describe_certificate",
        "update_certificate",
        "delete_certificate",
        "list_certificates",
        "list_certificates_by_ca",
        "create_policy",
        "get_policy",
        "delete_policy",
        "list_policies",
        "attach_policy",
        "detach_policy",
        "list_attached_policies",
        "list_targets_for_policy",
        "list_policy_principals",
        "attach_principal_policy",
        "detach_principal_policy",
        "list_principal_policies",
        "attach_thing_principal",
        "detach_thing_principal",
        "list_thing_principals",
        "list_thing_principals_v2",
        "list_principal_things",
        "list_principal_things_v2",
        "create_thing",
        "describe_thing",
        "delete_thing",
        "list_things",
    ):
        setattr(IoTBackend, name, locked(getattr(IoTBackend, name)))


# --------------------------------------------------------------------------------------------
# Correction to moto's Lambda backend (used by the data plane's pre-provisioning hooks)
# --------------------------------------------------------------------------------------------

LAMBDA_CODE_PATH = "/_claimfab/lambda-code/"
# token -> (code bytes, expiry, monotonic seconds); filled by GetFunction, read by GET.
LAMBDA_CODE: dict[str, tuple[bytes, float]] = {}
LAMBDA_CODE_LOCK = threading.Lock()
# Set once the server is bound: the base of the Code.Location URLs.
PUBLIC_URL = {"url": ""}


def apply_lambda_corrections() -> None:
    """10. GetFunction. AWS (API_GetFunction, FunctionCodeLocation.Location): "A presigned URL
    that you can use to download the deployment package", valid for 10 minutes. moto 5.2.5
    returns no Code at all for a function created from a ZipFile, and an S3 URL on
    amazonaws.com (unreachable here) for one created from S3. Serve the package from this
    endpoint instead: Location = URL/_claimfab/lambda-code/TOKEN, an unguessable token that
    expires after 10 minutes, as a presigned URL does."""
    from moto.awslambda import models as lambda_models

    original_get_code = lambda_models.LambdaFunction.get_code

    def get_code(self):
        resp = original_get_code(self)
        code_bytes = getattr(self, "code_bytes", None)
        if code_bytes and PUBLIC_URL["url"] and (resp.get("Code") or {}).get("RepositoryType", "S3") == "S3":
            token = secrets.token_urlsafe(32)
            now = time.monotonic()
            with LAMBDA_CODE_LOCK:
                for stale in [k for k, (_, exp) in LAMBDA_CODE.items() if exp < now]:
                    del LAMBDA_CODE[stale]
                LAMBDA_CODE[token] = (bytes(code_bytes), now + 600)
            resp["Code"] = {"RepositoryType": "S3", "Location": f"{PUBLIC_URL['url']}{LAMBDA_CODE_PATH}{token}"}
        return resp

    lambda_models.LambdaFunction.get_code = get_code


# --------------------------------------------------------------------------------------------
# Fault injection (all off unless asked for on the command line)
# --------------------------------------------------------------------------------------------

STATS_PATH = "/_claimfab/stats"
# DELETE here clears every injected fault at run time, as when AWS recovers: lets a test
# fail an operation for one run and let the next run through on the same (in-memory) account.
FAULTS_PATH = "/_claimfab/faults"
# The launcher's own requests (the warm-up) carry this header with a per-process secret; they
# bypass fault injection and are not counted, so e.g. --fail ListCertificates=1 cannot stop
# the endpoint from starting and the counters show clients' requests only.
INTERNAL_HEADER = "X-Claimfab-Internal"
INTERNAL_TOKEN = secrets.token_hex(16)


def load_iot_routes() -> list[tuple[str, list[str], str]]:
    """(method, path-template segments, operation) for every AWS IoT operation, from the REST
    bindings (http.method + http.requestUri) in botocore's service model for iot, the same
    model the SDKs are generated from."""
    from botocore.loaders import Loader

    model = Loader().load_service_model("iot", "service-2")
    routes = []
    for name, op in model["operations"].items():
        method = op["http"]["method"].upper()
        path = op["http"]["requestUri"].split("?", 1)[0]
        routes.append((method, [s for s in path.split("/") if s], name))
    return routes


class IotRouter:
    """Maps (method, raw path) to an AWS IoT operation name."""

    def __init__(self, routes: list[tuple[str, list[str], str]]) -> None:
        self.operations = sorted({name for _, _, name in routes})
        self.by_method: dict[str, list[tuple[list[str], str]]] = {}
        for method, segments, name in routes:
            self.by_method.setdefault(method, []).append((segments, name))

    @staticmethod
    def _score(template: list[str], segments: list[str]):
        """None if `template` does not match; else a sort key, best match largest: literal
        segments beat {label}s, which beat {greedy+} labels (the usual REST routing rule)."""
        if template and template[-1].startswith("{") and template[-1].endswith("+}"):
            head = template[:-1]
            if len(segments) <= len(head):
                return None
            greedy = 1
        else:
            head = template
            if len(segments) != len(head):
                return None
            greedy = 0
        literals = 0
        for t, s in zip(head, segments):
            if t.startswith("{") and t.endswith("}"):
                continue
            if t != s:
                return None
            literals += 1
        return (literals, -greedy)

    def match(self, method: str, raw_path: str) -> str | None:
        segments = [s for s in raw_path.split("/") if s]
        best = None
        for template, name in self.by_method.get(method.upper(), ()):
            score = self._score(template, segments)
            if score is not None and (best is None or score > best[0]):
                best = (score, name)
        return best[1] if best else None


def is_iot_request(environ) -> bool:
    """True when moto dispatches this request to its IoT backend: a SigV4 Authorization header
    whose credential scope names the service "iot" (moto also maps the signing name
    "execute-api" to iot, except for API Gateway's /@connections). This mirrors
    moto.moto_server.werkzeug_app.DomainDispatcherApplication.infer_service_region_host; moto
    does not look at the Host header, and unsigned requests never reach IoT."""
    auth = environ.get("HTTP_AUTHORIZATION")
    if not auth:
        return False
    try:
        # "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/iot/aws4_request, ..."
        scope = auth.split(",")[0].split()[1]
        _, _, _, service, _ = scope.split("/")
    except (IndexError, ValueError):
        return False
    service = service.lower()
    if service == "execute-api":
        return not environ.get("PATH_INFO", "").startswith("/@connections")
    return service == "iot"


def raw_request_path(environ) -> str:
    """The request path as sent (percent-encoding intact, so an encoded "/" inside a label
    stays one segment); PATH_INFO (already decoded) only if the server gives nothing else."""
    from urllib.parse import urlsplit

    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if "://" in raw.split("?", 1)[0]:  # absolute-form request target
            return urlsplit(raw).path
        return raw.split("?", 1)[0]
    return environ.get("PATH_INFO", "")


class TokenBucket:
    """Per-operation rate limit. Token bucket: capacity max(1, RPS) tokens, refilled at RPS
    tokens per second, starting full; a request takes one token or is throttled. So a burst of
    up to RPS requests passes at once, and the sustained rate is RPS. (Capacity is at least
    one token so that rates below 1/s still let a request through now and then.)"""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            return False


class FaultSettings:
    def __init__(
        self, throttle: dict, fail: dict, lose_response: dict, seed: int, deny: frozenset = frozenset(),
        drop_csr_subject: bool = False,
    ) -> None:
        self.deny = set(deny)  # operations the caller is not allowed to call
        self.throttle = throttle  # operation -> requests per second
        self.fail = fail  # operation -> fraction answered 500 without executing
        self.lose_response = lose_response  # operation -> fraction executed, then answered 500
        self.seed = seed
        # CreateCertificateFromCsr issues CN=AWS IoT Certificate instead of the CSR's subject
        # (read by apply_iot_corrections' correction 1 on every request).
        self.drop_csr_subject = drop_csr_subject

    def as_json(self) -> dict:
        return {
            "throttle": {
                op: int(v) if v.is_integer() else v for op, v in sorted(self.throttle.items())
            },
            "fail": dict(sorted(self.fail.items())),
            "lose_response": dict(sorted(self.lose_response.items())),
            "deny": sorted(self.deny),
            "drop_csr_subject": self.drop_csr_subject,
            "seed": self.seed,
        }


class FaultInjector:
    """WSGI middleware around moto's application: identifies AWS IoT operations, counts them,
    and injects the faults in `settings`; serves GET /_claimfab/stats. Everything else passes
    through untouched.

    Per IoT request, in this order: counted as a request; throttled if its operation's bucket
    is empty; else failed (500, not executed) with the --fail probability; else executed by
    moto, and then its answer replaced by a 500 with the --lose-response probability."""

    COUNTERS = ("requests", "denied", "throttled", "failed", "lost_response", "executed")

    def __init__(self, app, router: IotRouter, settings: FaultSettings, log: bool) -> None:
        self.app = app
        self.router = router
        self.settings = settings
        self.log = log
        self.buckets = {op: TokenBucket(rps) for op, rps in settings.throttle.items()}
        # One random stream per (fault, operation), so each operation's sequence of choices
        # follows from --seed alone, however requests of other operations interleave.
        self.rngs = {}
        for kind, table in (("fail", settings.fail), ("lose_response", settings.lose_response)):
            for op in table:
                self.rngs[(kind, op)] = random.Random(f"{settings.seed}/{kind}/{op}")
        self.rng_lock = threading.Lock()
        self.stats: dict[str, dict[str, int]] = {}
        self.stats_lock = threading.Lock()

    def count(self, op: str, counter: str) -> None:
        with self.stats_lock:
            entry = self.stats.get(op)
            if entry is None:
                entry = self.stats[op] = dict.fromkeys(self.COUNTERS, 0)
            entry[counter] += 1

    def roll(self, kind: str, op: str, table: dict) -> bool:
        fraction = table.get(op)
        if not fraction:
            return False
        with self.rng_lock:
            return self.rngs[(kind, op)].random() < fraction

    def note(self, what: str, op: str) -> None:
        if self.log:
            print(f"local_endpoint: fault: {what} {op}", file=sys.stderr, flush=True)

    @staticmethod
    def drain(environ) -> None:
        """Reads the unread request body, so a keep-alive connection stays in step when we
        answer without handing the request to moto."""
        stream = environ.get("wsgi.input")
        if stream is None:
            return
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        try:
            if length > 0:
                while length > 0:
                    chunk = stream.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
            elif environ.get("wsgi.input_terminated"):
                while stream.read(65536):
                    pass
        except (OSError, ValueError):
            pass

    @staticmethod
    def json_response(start_response, status: str, body: dict, headers=()):
        data = json.dumps(body).encode("utf-8")
        start_response(
            status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *headers,
            ],
        )
        return [data]

    def aws_error(self, start_response, status: str, code: str, message: str):
        # AWS IoT speaks REST-JSON: the error code travels in the x-amzn-ErrorType header and
        # the body is {"message": ...}. botocore (RestJSONParser._inject_error_code) and the
        # Rust SDK (aws-sdk-iot json_errors::parse_error_metadata) both take the code from that
        # header first (body "code"/"__type" only when it is absent).
        return self.json_response(
            start_response,
            status,
            {"message": message},
            [("x-amzn-ErrorType", code), ("x-amzn-RequestId", str(uuid.uuid4()))],
        )

    def throttled(self, start_response):
        # AWS IoT control-plane quotas (requests per second per account, per API) are enforced
        # by rejecting the excess request before it runs: HTTP 429 ThrottlingException,
        # "Rate exceeded"; the request had no effect and may be retried with backoff. (The
        # service model declares ThrottlingException with HTTP 400; SDKs classify by code.)
        return self.aws_error(
            start_response, "429 Too Many Requests", "ThrottlingException", "Rate exceeded"
        )

    def internal_failure(self, start_response):
        # AWS IoT's InternalFailureException: HTTP 500, "an unexpected error has occurred"
        # (a server fault, retryable; whether the request took effect is unknown to the client).
        return self.aws_error(
            start_response,
            "500 Internal Server Error",
            "InternalFailureException",
            "An unexpected error has occurred.",
        )

    def serve_stats(self, environ, start_response):
        if environ.get("REQUEST_METHOD", "GET").upper() != "GET":
            self.drain(environ)
            return self.json_response(
                start_response, "405 Method Not Allowed", {"message": "use GET"}, [("Allow", "GET")]
            )
        with self.stats_lock:
            operations = {op: dict(c) for op, c in sorted(self.stats.items())}
        return self.json_response(
            start_response, "200 OK", {"operations": operations, "faults": self.settings.as_json()}
        )

    def clear_faults(self, environ, start_response):
        self.drain(environ)
        if environ.get("REQUEST_METHOD", "").upper() != "DELETE":
            return self.json_response(
                start_response, "405 Method Not Allowed", {"message": "use DELETE"},
                [("Allow", "DELETE")],
            )
        with self.rng_lock:
            self.settings.throttle, self.settings.fail, self.settings.lose_response = {}, {}, {}
            self.settings.deny = set()
            self.settings.drop_csr_subject = False
            self.buckets = {}
        return self.json_response(start_response, "200 OK", {"faults": self.settings.as_json()})

    def serve_lambda_code(self, environ, start_response):
        self.drain(environ)
        token = environ.get("PATH_INFO", "")[len(LAMBDA_CODE_PATH):]
        with LAMBDA_CODE_LOCK:
            entry = LAMBDA_CODE.get(token)
        if entry is None or entry[1] < time.monotonic():
            return self.json_response(start_response, "403 Forbidden", {"message": "Request has expired"})
        start_response("200 OK", [("Content-Type", "application/zip"), ("Content-Length", str(len(entry[0])))])
        return [entry[0]]

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith(LAMBDA_CODE_PATH):
            return self.serve_lambda_code(environ, start_response)
        if environ.get("PATH_INFO") == STATS_PATH:
            return self.serve_stats(environ, start_response)
        if environ.get("PATH_INFO") == FAULTS_PATH:
            return self.clear_faults(environ, start_response)
        if not is_iot_request(environ) or environ.get("HTTP_X_CLAIMFAB_INTERNAL") == INTERNAL_TOKEN:
            return self.app(environ, start_response)
        op = self.router.match(environ.get("REQUEST_METHOD", ""), raw_request_path(environ))
        if op is None:
            return self.app(environ, start_response)

        self.count(op, "requests")
        if op in self.settings.deny:
            # An IAM identity without permission for the action: AWS answers HTTP 403
            # AccessDeniedException naming the action and resource, and does nothing.
            self.count(op, "denied")
            self.note("denied", op)
            self.drain(environ)
            return self.aws_error(
                start_response, "403 Forbidden", "AccessDeniedException",
                f"User: arn:aws:iam::123456789012:user/factory is not authorized to perform: "
                f"iot:{op} because no identity-based policy allows the iot:{op} action",
            )
        bucket = self.buckets.get(op)
        if bucket is not None and not bucket.take():
            self.count(op, "throttled")
            self.note("throttled", op)
            self.drain(environ)
            return self.throttled(start_response)
        if self.roll("fail", op, self.settings.fail):
            # Injected server fault before execution: 500 InternalFailureException, nothing
            # done (the client cannot tell this from a lost response; see below).
            self.count(op, "failed")
            self.note("failed (not executed)", op)
            self.drain(environ)
            return self.internal_failure(start_response)
        if op not in self.settings.lose_response:
            self.count(op, "executed")
            return self.app(environ, start_response)

        # Executed by moto, answer then possibly lost: run moto's app to completion with its
        # answer captured, then either send it on or replace it with a 500
        # InternalFailureException, as when AWS acts but the response never reaches the client
        # (the ambiguous case: the certificate exists although the client saw an error).
        captured = {}
        written = []

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return written.append

        result = self.app(environ, capture)
        try:
            body = b"".join([*written, *result])
        finally:
            if hasattr(result, "close"):
                result.close()
        self.count(op, "executed")
        if self.roll("lose_response", op, self.settings.lose_response):
            self.count(op, "lost_response")
            self.note("response lost (executed)", op)
            return self.internal_failure(start_response)
        start_response(captured["status"], captured["headers"])
        return [body]


def parse_fault_specs(parser, option: str, specs: list[str] | None, router: IotRouter, kind: str):
    """OP=VALUE pairs -> {operation: value}; exits with a usage error on anything invalid."""
    table = {}
    for spec in specs or ():
        op, sep, raw = spec.partition("=")
        op = op.strip()
        if not sep or not op or not raw.strip():
            parser.error(f"{option} {spec!r}: expected OPERATION=VALUE")
        if op not in router.operations:
            close = difflib.get_close_matches(op, router.operations, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            parser.error(
                f"{option} {spec!r}: {op!r} is not an AWS IoT operation{hint}; valid operations: "
                + ", ".join(router.operations)
            )
        if op in table:
            parser.error(f"{option} given twice for {op}")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if kind == "rate":
            if not (math.isfinite(value) and value > 0):
                parser.error(f"{option} {spec!r}: the rate must be requests per second, > 0")
        elif not (0.0 <= value <= 1.0):
            parser.error(f"{option} {spec!r}: the fraction must be between 0 and 1")
        table[op] = value
    return table


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def warm_up(url: str, region: str) -> None:
    """One ListCertificates so moto builds its IoT app and backend before clients arrive."""
    req = urllib.request.Request(
        f"{url}/certificates?pageSize=1",
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20200101/"
            f"{region}/iot/aws4_request, SignedHeaders=host, Signature=0",
            INTERNAL_HEADER: INTERNAL_TOKEN,
        },
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        if resp.status != 200:
            raise RuntimeError(f"warm-up request answered HTTP {resp.status}")
        resp.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--region", default="us-east-1", help="region warmed up at start")
    parser.add_argument("--log-requests", action="store_true", help="log each request to stderr")
    parser.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop when the process that started this one dies (test harnesses, demo scripts)",
    )
    parser.add_argument(
        "--throttle", action="append", metavar="OP=RPS",
        help="limit AWS IoT operation OP to RPS requests per second (token bucket of RPS "
        "tokens, refilled at RPS/s); the excess is answered 429 ThrottlingException, unexecuted",
    )
    parser.add_argument(
        "--fail", action="append", metavar="OP=FRACTION",
        help="answer this fraction of OP requests 500 InternalFailureException, unexecuted",
    )
    parser.add_argument(
        "--lose-response", action="append", metavar="OP=FRACTION",
        help="execute OP, then answer this fraction 500 InternalFailureException instead",
    )
    parser.add_argument(
        "--deny", action="append", metavar="OP",
        help="answer OP 403 AccessDeniedException, as for an identity lacking the permission",
    )
    parser.add_argument(
        "--seed", type=int, help="seed for --fail/--lose-response choices (default: random)"
    )
    parser.add_argument(
        "--drop-csr-subject", action="store_true",
        help="test switch, departs from AWS on purpose: CreateCertificateFromCsr (also the data "
        "plane's MQTT CreateCertificateFromCsr) issues certificates with AWS IoT's default "
        "subject CN=AWS IoT Certificate instead of the CSR's subject, as an endpoint that does "
        "not keep the CSR subject would",
    )
    parser.add_argument(
        "--data-plane", action="store_true",
        help="also run the local AWS IoT data plane: a TLS MQTT broker (mosquitto) and the "
        "fleet-provisioning service (scripts/dataplane/); see endpoint.json's data_plane",
    )
    args = parser.parse_args()
    parent = os.getppid()
    # From here on SIGTERM/SIGINT mean a clean stop, even mid-start.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")
    router = IotRouter(load_iot_routes())
    faults = FaultSettings(
        throttle=parse_fault_specs(parser, "--throttle", args.throttle, router, "rate"),
        fail=parse_fault_specs(parser, "--fail", args.fail, router, "fraction"),
        lose_response=parse_fault_specs(
            parser, "--lose-response", args.lose_response, router, "fraction"
        ),
        seed=args.seed if args.seed is not None else secrets.randbits(32),
        deny=frozenset(
            parse_fault_specs(parser, "--deny", [f"{op}=1" for op in args.deny or ()], router, "fraction")
        ),
        drop_csr_subject=args.drop_csr_subject,
    )

    # werkzeug logs every request at INFO; by default keep only warnings and errors (tracebacks
    # of failed requests) so a caller that never drains stderr cannot stall the server.
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.log_requests else logging.WARNING)

    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoint_json = state_dir / "endpoint.json"
    ca_path = state_dir / "test-ca.pem"
    endpoint_json.unlink(missing_ok=True)  # never leave a stale one for a poller to read

    from werkzeug.serving import make_server

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    ca = TestCa()
    apply_iot_corrections(ca, faults)
    # 8. The provisioning-template operations moto lacks. (scripts/ is on sys.path: this file
    #    runs as a script.)
    import endpoint_provisioning_templates

    endpoint_provisioning_templates.install(STATE_LOCK)
    if args.data_plane:
        apply_lambda_corrections()

    # ThreadedMotoServer's own start, minus its one flaw here: it binds inside its thread, so a
    # bind error (port taken) would leave start() waiting forever. Bind in this thread instead.
    try:
        server = make_server(
            HOST, args.port,
            FaultInjector(
                DomainDispatcherApplication(create_backend_app), router, faults, args.log_requests
            ),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
    except (OSError, SystemExit) as e:  # werkzeug reports EADDRINUSE itself, then exits
        print(f"local_endpoint: cannot listen on {HOST}:{args.port}: {e}", file=sys.stderr)
        return 1
    serving = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    serving.start()
    port = server.server_address[1]
    url = f"http://{HOST}:{port}"
    PUBLIC_URL["url"] = url
    data_plane = None
    try:
        warm_up(url, args.region)
        write_atomically(ca_path, ca.pem())
        info = {
            "url": url, "pid": os.getpid(), "ca_cert": str(ca_path), "region": args.region,
            "faults": faults.as_json(),
        }
        if args.data_plane:
            # The broker and the provisioning service (scripts/dataplane/launch.py). Their
            # certificates come from the test CA here, so its key stays in this process.
            sys.path.insert(0, str(Path(__file__).resolve().parent / "dataplane"))
            from launch import DataPlane

            account = "123456789012"  # moto's default account, the one clients use
            data_plane = DataPlane(
                ca, ca_path, state_dir, url, args.region, account,
                endpoint_host(account, args.region, "iot:Data-ATS"),
            )
            data_plane.start()
            info["data_plane"] = data_plane.info()
        write_atomically(endpoint_json, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    except Exception as e:  # noqa: BLE001 - report and stop, whatever went wrong
        print(f"local_endpoint: failed to start: {e}", file=sys.stderr)
        if data_plane is not None:
            data_plane.stop()
        server.shutdown()
        return 1

    if stop.is_set():
        if data_plane is not None:
            data_plane.stop()
        server.shutdown()
        endpoint_json.unlink(missing_ok=True)
        return 0
    print(f"ready {url}", flush=True)
    # moto prints a few diagnostics with print(); keep stdout to the one line promised above.
    sys.stdout = sys.stderr

    while not stop.wait(1.0):
        # A harness killed with SIGKILL cannot stop us; notice it is gone instead.
        if args.exit_with_parent and os.getppid() != parent:
            break

    try:
        if json.loads(endpoint_json.read_text()).get("pid") == os.getpid():
            endpoint_json.unlink()
    except (OSError, ValueError):
        pass
    if data_plane is not None:
        data_plane.stop()
    server.shutdown()
    serving.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
