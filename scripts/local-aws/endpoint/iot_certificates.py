"""Corrections 1, 1b, 2, 3 and 9 to moto's IoT backend: how certificates are issued, named,
activated and described (each function's docstring cites the AWS behaviour it follows)."""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from moto.core.config import default_user_config
from moto.core.responses import ActionResult
from moto.iot import models as iot_models
from moto.iot import responses as iot_responses
from moto.iot.exceptions import InvalidRequestException

from endpoint.ca import AWS_DEFAULT_SUBJECT, TestCa
from endpoint.iot_locking import STATE_LOCK

ALLOWED_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def correct_certificate_ids() -> None:
    """2. Certificate ids. AWS: certificateId is the SHA-256 (hex) of the certificate's DER
    encoding. moto hashes the PEM text unless its "iot.use_valid_cert" setting is on. (moto
    5.2.5 has no environment variable for it: it is only in
    moto.core.config.default_user_config, which the server process shares with us.)"""
    default_user_config.setdefault("iot", {})["use_valid_cert"] = True


def check_csr(csr):
    """The parsed CSR and its public key, as AWS checks them: a valid signature and an RSA key
    of at least 2048 bits or an EC key on NIST P-256, P-384 or P-521; otherwise
    InvalidRequestException (HTTP 400)."""
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
        if not isinstance(public_key.curve, ALLOWED_CURVES):
            raise InvalidRequestException(
                "The certificate signing request is not valid: EC keys must be on NIST "
                f"P-256, P-384 or P-521 (got {public_key.curve.name})."
            )
    else:
        raise InvalidRequestException(
            "The certificate signing request is not valid: the key must be RSA or EC "
            f"(got {type(public_key).__name__})."
        )
    return req, public_key


def correct_create_certificate_from_csr(ca: TestCa, faults) -> None:
    """1. CreateCertificateFromCsr. AWS (API_CreateCertificateFromCsr): "Creates an X.509
    certificate using the specified certificate signing request"; the CSR must carry an RSA
    key of at least 2048 bits or an EC key on NIST P-256, P-384 or P-521, otherwise
    InvalidRequestException (HTTP 400); "reusing the same CSR results in a distinct
    certificate". The certificate is over the CSR's own key, signed by AWS's CA (here the test
    CA). moto instead certifies a freshly generated RSA key (and answers 500 on a bad CSR).

    `faults.drop_csr_subject` (--drop-csr-subject, a test switch, not AWS's behaviour, read on
    every request): issue the certificate with AWS IoT's default subject, as an endpoint that
    does not keep the CSR's subject would."""

    def create_certificate_from_csr(self, csr, set_as_active):
        req, public_key = check_csr(csr)
        subject = AWS_DEFAULT_SUBJECT if faults.drop_csr_subject else req.subject
        pem = ca.issue(subject, public_key)
        # Registered under the state lock (correction 6); through moto's own
        # register_certificate so it shows in List/DescribeCertificate and gets ACTIVE/INACTIVE
        # from setAsActive.
        with STATE_LOCK:
            return self.register_certificate(
                pem, ca_certificate_pem=None, set_as_active=bool(set_as_active), status="INACTIVE"
            )

    iot_models.IoTBackend.create_certificate_from_csr = create_certificate_from_csr


def correct_set_as_active() -> None:
    """1b. setAsActive travels as the query string "setAsActive=true|false" (REST binding of
    CreateCertificateFromCsr). moto reads it as the raw string, so "false" was truthy and
    every certificate came out ACTIVE. AWS: ACTIVE only when setAsActive is true."""

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

    iot_responses.IoTResponse.create_certificate_from_csr = response_create_certificate_from_csr


def _new_rsa_key_pair():
    """A 2048-bit RSA key and its keyPair answer {PublicKey, PrivateKey} (PEM)."""
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
    return private_key, key_pair


def correct_create_keys_and_certificate(ca: TestCa) -> None:
    """9. CreateKeysAndCertificate. AWS (API_CreateKeysAndCertificate): "Creates a 2048-bit RSA
    key pair and issues an X.509 certificate using the issued public key", signed by AWS's CA,
    with a default subject ("AWS IoT Certificate"); ACTIVE only when setAsActive is true. moto
    self-signs it, so no TLS server trusting the CA (the data plane's broker) would accept it;
    issue it from the test CA instead. setAsActive: as 1b."""

    def create_keys_and_certificate(self, set_as_active):
        private_key, key_pair = _new_rsa_key_pair()
        pem = ca.issue(AWS_DEFAULT_SUBJECT, private_key.public_key())
        with STATE_LOCK:
            cert = self.register_certificate(
                pem, ca_certificate_pem=None, set_as_active=bool(set_as_active), status="INACTIVE"
            )
        return cert, key_pair

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

    iot_models.IoTBackend.create_keys_and_certificate = create_keys_and_certificate
    iot_responses.IoTResponse.create_keys_and_certificate = response_create_keys_and_certificate


def correct_certificate_validity() -> None:
    """3. DescribeCertificate. AWS (CertificateDescription.validity): "When the certificate is
    valid", i.e. the certificate's own notBefore/notAfter. moto sets now-1d..now+1d for every
    certificate. Take them from the certificate when it parses."""
    FakeCertificate = iot_models.FakeCertificate
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
