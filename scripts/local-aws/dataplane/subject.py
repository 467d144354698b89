"""A certificate's subject as AWS IoT names its fields (policy variables
iot:Certificate.Subject.*, template parameters AWS::IoT::Certificate::*). A field given more
than once (say two OUs) takes its first value, as AWS IoT's policy variables do."""

from __future__ import annotations

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
            out.setdefault(name, attr.value)
    return out
