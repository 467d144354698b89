"""The local endpoint's test CA: EC P-256, its key in memory only and new at every start. It
signs the certificates the endpoint issues (CreateCertificateFromCsr, CreateKeysAndCertificate,
the data plane's broker and service certificates); the launcher writes its certificate to
STATE_DIR/test-ca.pem, which stands in for Amazon Root CA 1 in tests."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# AWS IoT CA-issued certificates (CreateKeysAndCertificate, CreateCertificateFromCsr) are
# valid until 2049-12-31T23:59:59Z.
AWS_ISSUED_NOT_AFTER = dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.timezone.utc)
# The subject AWS IoT gives the certificates it names itself (CreateKeysAndCertificate).
AWS_DEFAULT_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AWS IoT Certificate")])


def _key_usage(ca: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; a leaf only signs (its TLS handshakes)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


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
            .add_extension(_key_usage(ca=True), critical=True)
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
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(self.aki, critical=False)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
