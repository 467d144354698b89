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
    AWS IoT API behaviour it follows (see apply_iot_corrections below).

Usage:
    .venv/bin/python scripts/local_endpoint.py --state-dir DIR [--port 0] [--region us-east-1]
                                              [--log-requests]

stdout carries exactly one line, "ready http://127.0.0.1:PORT", once the endpoint answers
requests; everything else (errors, optional request log) goes to stderr. SIGTERM or SIGINT
stops the server and exits 0. Clients use any credentials (e.g. testing/testing); the account
is moto's default, 123456789012.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import urllib.request
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

    def issue(self, subject: x509.Name, public_key) -> str:
        """A leaf certificate over `public_key`, shaped like the ones AWS IoT issues."""
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        cert = (
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
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


# --------------------------------------------------------------------------------------------
# Corrections to moto's IoT backend
# --------------------------------------------------------------------------------------------


def apply_iot_corrections(ca: TestCa) -> None:
    """Monkeypatches moto's IoT backend/responses; call once, before serving."""
    from moto.core.config import default_user_config
    from moto.iot import models as iot_models
    from moto.iot import responses as iot_responses
    from moto.iot.exceptions import InvalidRequestException
    from moto.core.responses import ActionResult

    IoTBackend = iot_models.IoTBackend
    FakeCertificate = iot_models.FakeCertificate
    IoTResponse = iot_responses.IoTResponse

    # 2. Certificate ids. AWS: certificateId is the SHA-256 (hex) of the certificate's DER
    #    encoding. moto hashes the PEM text unless its "iot.use_valid_cert" setting is on.
    #    (moto 5.2.5 has no environment variable for it: it is only in
    #    moto.core.config.default_user_config, which the server process shares with us.)
    default_user_config.setdefault("iot", {})["use_valid_cert"] = True

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
        pem = ca.issue(req.subject, public_key)
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
    endpoint_formats = {
        "iot:Data": "{p}.iot.{r}.amazonaws.com",
        "iot:Data-ATS": "{p}-ats.iot.{r}.amazonaws.com",
        "iot:CredentialProvider": "{p}.credentials.iot.{r}.amazonaws.com",
        "iot:Jobs": "{p}.jobs.iot.{r}.amazonaws.com",
    }

    def describe_endpoint(self, endpoint_type):
        endpoint = iot_models.FakeEndpoint(endpoint_type, self.region_name)  # validates type
        kind = "credentials" if endpoint_type == "iot:CredentialProvider" else "data"
        seed = f"{self.account_id}|{self.region_name}|{kind}".encode("utf-8")
        prefix = hashlib.sha256(seed).hexdigest()[:14]
        endpoint.endpoint = endpoint_formats[endpoint_type].format(p=prefix, r=self.region_name)
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
        "create_thing",
        "describe_thing",
        "delete_thing",
        "list_things",
    ):
        setattr(IoTBackend, name, locked(getattr(IoTBackend, name)))


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
    args = parser.parse_args()
    parent = os.getppid()
    # From here on SIGTERM/SIGINT mean a clean stop, even mid-start.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    if not 0 <= args.port <= 65535:
        parser.error("--port must be 0..65535")

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
    apply_iot_corrections(ca)

    # ThreadedMotoServer's own start, minus its one flaw here: it binds inside its thread, so a
    # bind error (port taken) would leave start() waiting forever. Bind in this thread instead.
    try:
        server = make_server(
            HOST, args.port, DomainDispatcherApplication(create_backend_app), threaded=True,
            request_handler=MotoRequestHandler,
        )
    except (OSError, SystemExit) as e:  # werkzeug reports EADDRINUSE itself, then exits
        print(f"local_endpoint: cannot listen on {HOST}:{args.port}: {e}", file=sys.stderr)
        return 1
    serving = threading.Thread(target=server.serve_forever, name="moto-server", daemon=True)
    serving.start()
    port = server.server_address[1]
    url = f"http://{HOST}:{port}"
    try:
        warm_up(url, args.region)
        write_atomically(ca_path, ca.pem())
        info = {"url": url, "pid": os.getpid(), "ca_cert": str(ca_path), "region": args.region}
        write_atomically(endpoint_json, (json.dumps(info, indent=2) + "\n").encode("utf-8"))
    except Exception as e:  # noqa: BLE001 - report and stop, whatever went wrong
        print(f"local_endpoint: failed to start: {e}", file=sys.stderr)
        server.shutdown()
        return 1

    if stop.is_set():
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
    server.shutdown()
    serving.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
