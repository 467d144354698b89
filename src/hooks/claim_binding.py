"""claimfab's claim-binding pre-provisioning hook (AWS Lambda, Python 3.12; standard library
and boto3 only, as the Lambda runtime provides them). Handler: claim_binding.handler.

What it owns: the decision, for a fleet-provisioning template claimfab sets up, whether a
RegisterThing request may go on. claimfab makes one claim certificate per device (claim
scope "device"), through AWS IoT CreateCertificateFromCsr, from a CSR whose subject is
exactly CN=<thing name> (src/core/keys.rs). This hook binds each claim to its device: it
reads the claim certificate the request came in with (DescribeCertificate on
claimCertificateId), takes its subject Common Name and admits the request only if that CN
is the ThingName parameter, exactly. So a claim key pulled from one device cannot be used to
register another device (another thing name), and a claim certificate that is not ACTIVE
admits nothing.

It relies on AWS IoT keeping the CSR's subject in the certificates CreateCertificateFromCsr
makes. Check that on a real account before relying on the hook (a certificate made by
CreateKeysAndCertificate, or one whose CSR subject AWS did not keep, has the subject
CN=AWS IoT Certificate, which this hook refuses and logs as such):

    aws iot describe-certificate --certificate-id <claim certificate id> \\
        --query certificateDescription.certificatePem --output text \\
      | openssl x509 -noout -subject
    # expected: subject=CN = <thing name>

In claim scope "batch" one shared claim certificate serves a whole batch; its CN is
"<template name> claim" (with a space, so it is never a thing name: src/pipeline.rs
claim_holders). Such a claim binds to no device: it is refused unless the function's
environment has CLAIMFAB_ALLOW_SHARED_CLAIMS=true, in which case any valid thing name is
admitted and the log says that binding did not apply.

The certificate is parsed with a small DER reader of its own (PEM -> DER; Certificate ->
TBSCertificate -> subject Name -> RDNs -> AttributeTypeAndValue, OID 2.5.4.3), so the
function needs no package beyond the runtime's. Anything it cannot read, or any error,
means deny: the handler never raises.

Contract (AWS IoT Core Developer Guide, "Pre-provisioning hooks"): the event carries
claimCertificateId, certificateId, certificatePem, templateArn, clientId and parameters;
the answer is {"allowProvisioning": bool}; AWS IoT waits at most 5 seconds for it.

Environment it reads:
  CLAIMFAB_ALLOW_SHARED_CLAIMS  "true" admits batch-scoped shared claims (binding not applied)
  AWS_REGION                    region of the IoT client (set by Lambda)
  AWS_ENDPOINT_URL              honoured by boto3 >= 1.28 (tests point it at a local endpoint)

Logs: one JSON line per decision on stdout (CloudWatch Logs): decision, reason, detail,
claimCertificateId, certificateId, thingName, clientId, claimCommonName. Never a
certificate PEM, key or anything secret.
"""

import base64
import binascii
import json
import os
import re

ALLOW_SHARED_ENV = "CLAIMFAB_ALLOW_SHARED_CLAIMS"
SHARED_CLAIM_SUFFIX = " claim"  # src/pipeline.rs claim_holders: "<template name> claim"
AWS_DEFAULT_SUBJECT = "AWS IoT Certificate"  # the CN AWS IoT gives certificates it names itself
THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")  # AWS IoT thing name pattern
CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}")
MAX_PEM_CHARS = 64 * 1024
LOG_FIELD_MAX = 200

# --------------------------------------------------------------------------------------------
# AWS IoT client: one per container, made on first use
# --------------------------------------------------------------------------------------------

_iot = None


def _iot_client():
    """The IoT client, made once per container. boto3 (>= 1.28) reads AWS_ENDPOINT_URL itself;
    the timeouts keep a slow or throttled DescribeCertificate inside AWS IoT's 5-second
    budget (worst case about 1 + 1.5 + backoff + 1 + 1.5 s)."""
    global _iot
    if _iot is None:
        import boto3
        from botocore.config import Config

        _iot = boto3.client(
            "iot",
            region_name=os.environ.get("AWS_REGION") or None,
            config=Config(
                connect_timeout=1,
                read_timeout=1.5,
                retries={"total_max_attempts": 2, "mode": "standard"},
            ),
        )
    return _iot


def set_iot_client(client):
    """Replace the IoT client (tests); None makes the next invocation create a real one."""
    global _iot
    _iot = client


# --------------------------------------------------------------------------------------------
# Certificate subject Common Name, standard library only
# --------------------------------------------------------------------------------------------


class CertificateError(ValueError):
    """The certificate cannot be read (not PEM, not DER, not an X.509 certificate)."""


_PEM = re.compile(
    r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]*?)\s*-----END CERTIFICATE-----"
)

SEQUENCE, SET, INTEGER, OID = 0x30, 0x31, 0x02, 0x06
EXPLICIT_0 = 0xA0  # [0] EXPLICIT Version
OID_COMMON_NAME = b"\x55\x04\x03"  # 2.5.4.3

# DirectoryString and the other string types a Common Name may be written in.
_STRING_CODECS = {
    0x0C: "utf-8",  # UTF8String
    0x13: "ascii",  # PrintableString
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x14: "latin-1",  # TeletexString (T.61; read as Latin-1, as most software does)
    0x1E: "utf-16-be",  # BMPString
    0x1C: "utf-32-be",  # UniversalString
}


def pem_to_der(pem):
    if not isinstance(pem, str) or len(pem) > MAX_PEM_CHARS:
        raise CertificateError("not a PEM string")
    match = _PEM.search(pem)
    if not match:
        raise CertificateError("no PEM certificate block")
    body = "".join(match.group(1).split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise CertificateError("PEM body is not base64") from None
    if not der:
        raise CertificateError("empty PEM body")
    return der


def _tlv(der, pos, end):
    """One DER element at pos (not past end): (tag, content start, content end)."""
    if pos + 2 > end:
        raise CertificateError("truncated element")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise CertificateError("high tag numbers are not used in certificate names")
    first = der[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise CertificateError("indefinite length (BER, not DER)")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise CertificateError("bad length")
        length = int.from_bytes(der[pos : pos + count], "big")
        if der[pos] == 0 or length < 0x80:
            raise CertificateError("length not in minimal (DER) form")
        pos += count
    if pos + length > end:
        raise CertificateError("truncated element")
    return tag, pos, pos + length


def _expect(der, pos, end, tag):
    got, start, stop = _tlv(der, pos, end)
    if got != tag:
        raise CertificateError(f"expected tag 0x{tag:02x}, found 0x{got:02x}")
    return start, stop


def _decode_string(tag, raw):
    codec = _STRING_CODECS.get(tag)
    if codec is None:
        raise CertificateError(f"Common Name in an unknown string type (tag 0x{tag:02x})")
    try:
        return bytes(raw).decode(codec)
    except UnicodeDecodeError:
        raise CertificateError("Common Name is not valid in its string type") from None


def subject_common_names(der):
    """Every Common Name in the certificate's subject, in order."""
    der = memoryview(der)
    start, stop = _expect(der, 0, len(der), SEQUENCE)  # Certificate
    if stop != len(der):
        raise CertificateError("data after the certificate")
    pos, tbs_end = _expect(der, start, stop, SEQUENCE)  # TBSCertificate
    tag, _, after = _tlv(der, pos, tbs_end)
    if tag == EXPLICIT_0:  # version
        pos = after
    for tag in (INTEGER, SEQUENCE, SEQUENCE, SEQUENCE):  # serial, signature, issuer, validity
        _, pos = _expect(der, pos, tbs_end, tag)
    pos, subject_end = _expect(der, pos, tbs_end, SEQUENCE)  # subject Name
    names = []
    while pos < subject_end:
        attr, rdn_end = _expect(der, pos, subject_end, SET)  # RelativeDistinguishedName
        if attr == rdn_end:
            raise CertificateError("empty RDN")
        while attr < rdn_end:
            field, field_end = _expect(der, attr, rdn_end, SEQUENCE)  # AttributeTypeAndValue
            oid_start, oid_end = _expect(der, field, field_end, OID)
            tag, value_start, value_end = _tlv(der, oid_end, field_end)
            if value_end != field_end:
                raise CertificateError("data after an attribute value")
            if der[oid_start:oid_end] == OID_COMMON_NAME:
                names.append(_decode_string(tag, der[value_start:value_end]))
            attr = field_end
        pos = rdn_end
    return names


def common_name(pem):
    """The subject's single Common Name; CertificateError if there is none or several."""
    names = subject_common_names(pem_to_der(pem))
    if len(names) != 1:
        raise CertificateError(f"subject has {len(names)} Common Names, expected 1")
    return names[0]


# --------------------------------------------------------------------------------------------
# Handler
# --------------------------------------------------------------------------------------------


def _short(value):
    if value is None:
        return None
    if not isinstance(value, str):
        value = f"<{type(value).__name__}>"
    return value if len(value) <= LOG_FIELD_MAX else value[:LOG_FIELD_MAX] + "..."


def _error_code(error):
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code:
            return str(code)
    return type(error).__name__


def _decide(event):
    """(allow, reason, detail, claim CN or None)."""
    if not isinstance(event, dict):
        return False, "bad_event", "event is not an object", None
    parameters = event.get("parameters")
    thing_name = parameters.get("ThingName") if isinstance(parameters, dict) else None
    if not isinstance(thing_name, str):
        return False, "no_thing_name", "parameters.ThingName is missing or not a string", None
    if not THING_NAME.fullmatch(thing_name):
        return False, "invalid_thing_name", "ThingName is not a valid AWS IoT thing name", None
    claim_id = event.get("claimCertificateId")
    if not isinstance(claim_id, str) or not CERTIFICATE_ID.fullmatch(claim_id):
        return False, "bad_event", "claimCertificateId is missing or not a certificate id", None

    try:
        description = _iot_client().describe_certificate(certificateId=claim_id)["certificateDescription"]
        status = description.get("status")
        pem = description.get("certificatePem")
    except Exception as e:  # noqa: BLE001 - any failure to look the claim up means deny
        return False, "describe_certificate_failed", f"DescribeCertificate failed: {_error_code(e)}", None
    if status != "ACTIVE":
        return False, "claim_not_active", f"claim certificate status is {_short(status)}", None
    try:
        cn = common_name(pem)
    except CertificateError as e:
        return False, "unreadable_claim_subject", f"claim certificate subject: {e}", None

    if cn == AWS_DEFAULT_SUBJECT:
        return (
            False,
            "no_csr_subject",
            "claim certificate has AWS IoT's default subject (CN=AWS IoT Certificate): AWS did "
            "not keep a CSR subject, so the claim cannot be bound to a device",
            cn,
        )
    if cn.endswith(SHARED_CLAIM_SUFFIX):
        if os.environ.get(ALLOW_SHARED_ENV) == "true":
            return (
                True,
                "shared_claim_allowed",
                f"batch-scoped shared claim; {ALLOW_SHARED_ENV}=true, so binding does not apply",
                cn,
            )
        return (
            False,
            "shared_claim",
            f"batch-scoped shared claim binds to no device; set {ALLOW_SHARED_ENV}=true to admit it",
            cn,
        )
    if cn != thing_name:
        return False, "claim_bound_to_other_thing", "claim certificate CN is not ThingName", cn
    return True, "claim_matches_thing", "claim certificate CN is ThingName", cn


def handler(event, context):
    try:
        allow, reason, detail, cn = _decide(event)
    except Exception as e:  # noqa: BLE001 - never raise: deny and say why
        allow, reason, detail, cn = False, "internal_error", f"hook error: {type(e).__name__}", None
    ev = event if isinstance(event, dict) else {}
    parameters = ev.get("parameters")
    record = {
        "decision": "allow" if allow else "deny",
        "reason": reason,
        "detail": detail,
        "claimCertificateId": _short(ev.get("claimCertificateId")),
        "certificateId": _short(ev.get("certificateId")),
        "thingName": _short(parameters.get("ThingName") if isinstance(parameters, dict) else None),
        "clientId": _short(ev.get("clientId")),
        "claimCommonName": _short(cn),
    }
    print(json.dumps(record, sort_keys=True), flush=True)
    return {"allowProvisioning": allow}
