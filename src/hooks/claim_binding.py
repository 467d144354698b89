"""claimfab's claim-binding pre-provisioning hook (AWS Lambda, Python 3.12; standard library
and boto3 only, as the Lambda runtime provides them). Handler: claim_binding.handler.

What it owns: the decision, for a fleet-provisioning template claimfab sets up, whether a
RegisterThing request may go on. claimfab makes one claim certificate per device (claim
scope "device"), through AWS IoT CreateCertificateFromCsr, from a CSR whose subject is
exactly CN=<thing name> (src/core/keys.rs), and attaches the station's claim policy to it.
The hook admits a request only when both hold:

  1. the certificate the request came in with (claimCertificateId) is a claim: it is ACTIVE
     and carries one of the station's claim policies (CLAIMFAB_CLAIM_POLICIES);
  2. that claim's subject Common Name is the ThingName parameter, exactly.

So a claim key pulled from one device cannot register another device (another thing name),
a claim that is not ACTIVE admits nothing, and a certificate that is not a claim admits
nothing, whatever its subject says.

Why (1), the claim policy, matters (issue 15). The CN rule alone trusts any certificate's
subject. But a claim's holder can call CreateCertificateFromCsr over MQTT with a CSR of its
own choosing, say CN=<victim>, and AWS IoT signs it: certificate C2. The holder registers C2
as its own thing (admitted: the claim's CN is its thing name), connects with C2, and asks to
register thing <victim>: with the CN rule alone C2 would be admitted (CN <victim> is
ThingName <victim>), so one claim would register every thing name. C2 is not a claim: a
device certificate made through the template carries the policy the template attaches (the
core policy), never the claim policy, so C2 is refused as not_a_claim.

Why the attached claim policy is the mark of a claim: AWS IoT is the source of truth. The
policy is what lets a certificate use the provisioning topics at all; detaching it from a
claim, or revoking or deactivating the claim, takes effect on the next request, and there is
no second store (a table of claim ids) to keep in sync with AWS. The hook reads it with
ListAttachedPolicies on the claim certificate's ARN.

What it relies on in AWS IoT:
  * CreateCertificateFromCsr keeps the CSR's subject in the certificate it makes. Check that
    on a real account before relying on the hook (a certificate made by
    CreateKeysAndCertificate, or one whose CSR subject AWS did not keep, has the subject
    CN=AWS IoT Certificate, which this hook refuses and logs as such):

        aws iot describe-certificate --certificate-id <claim certificate id> \\
            --query certificateDescription.certificatePem --output text \\
          | openssl x509 -noout -subject
        # expected: subject=CN = <thing name>

  * ListAttachedPolicies(target=<certificate ARN>) lists the policies attached to that
    certificate, and the template's device certificates never get the claim policy.
  * The event's templateArn is arn:PARTITION:iot:REGION:ACCOUNT:provisioningtemplate/NAME;
    the claim's ARN is arn:PARTITION:iot:REGION:ACCOUNT:cert/<claimCertificateId> (so the two
    lookups can start together; DescribeCertificate's certificateArn must agree with it).

IAM the function's role needs (setup grants it: src/core/account_documents.rs
claim_binding_access_policy): iot:DescribeCertificate on arn:...:cert/*, and
iot:ListAttachedPolicies (granted on "*"); plus its own logs. Nothing else.

In claim scope "batch" one shared claim certificate serves a whole batch; its CN is
"<template name> claim" (with a space, so it is never a thing name: src/pipeline/mod.rs
claim_holders). Such a claim binds to no device: it is refused unless the function's
environment has CLAIMFAB_ALLOW_SHARED_CLAIMS=true, in which case any valid thing name is
admitted and the log says that binding did not apply. A shared claim must carry a claim
policy too.

Time. AWS IoT Core Developer Guide, "Pre-provisioning hooks": "The Lambda function must
finish running and return within 5 seconds, otherwise the provisioning request fails." Those
5 seconds are wall clock as AWS IoT sees them, a cold start's init included. So:
  * the IoT client is made at import, in Lambda's init phase (import boto3, load the service
    model, make the client: the bulk of a cold start). That time still counts in AWS IoT's
    5 seconds, but not in the invocation's: the decision deadline below and the function's
    timeout (4 s, src/core/account_documents.rs) start after it. If making it at import fails, the
    failure is remembered and the client is made again on first use; if that fails too,
    the request is denied (iot_client_unavailable);
  * DescribeCertificate and ListAttachedPolicies run concurrently, on a module-level pool
    of threads;
  * the handler answers by a fixed decision deadline, DECISION_DEADLINE_S = 3.0 s after the
    invocation started, and never later than context.get_remaining_time_in_millis() minus
    250 ms: lookups not done by then mean deny (deadline_exceeded). A cold start's total is
    therefore its init (measured by scripts/bench/hook_cold_start.py) plus at most 3 s;
  * each AWS call: connect timeout 0.5 s, read timeout 1 s, at most 2 attempts (botocore
    "standard" retries); see _CLIENT_CONFIG for its worst case, which the deadline cuts.

The certificate is parsed with a small DER reader of its own (PEM -> DER; Certificate ->
TBSCertificate -> subject Name -> RDNs -> AttributeTypeAndValue, OID 2.5.4.3), so the
function needs no package beyond the runtime's. Anything it cannot read, or any error,
means deny: the handler never raises.

Contract (AWS IoT Core Developer Guide, "Pre-provisioning hooks"): the event carries
claimCertificateId, certificateId, certificatePem, templateArn, clientId and parameters;
the answer is {"allowProvisioning": bool}.

Decisions, in the order they are checked (the "reason" logged):
  bad_event, no_thing_name, invalid_thing_name   the event itself (no AWS call made)
  hook_misconfigured                             CLAIMFAB_CLAIM_POLICIES missing or invalid
  iot_client_unavailable                         no AWS IoT client could be made
  describe_certificate_failed,                   a lookup failed (error code in the detail)
  list_attached_policies_failed
  deadline_exceeded                              lookups not done by the decision deadline
  bad_event                                      the claim's ARN is not the one derived
  claim_not_active                               the claim certificate is not ACTIVE
  not_a_claim                                    it carries none of the claim policies
  unreadable_claim_subject                       its subject has not exactly one readable CN
  no_csr_subject                                 its CN is AWS's default (CSR subject lost)
  shared_claim / shared_claim_allowed            a batch's shared claim (allowed by env)
  claim_bound_to_other_thing                     its CN is not ThingName
  claim_matches_thing                            allowed
  internal_error                                 anything unexpected (deny)

Environment it reads:
  CLAIMFAB_CLAIM_POLICIES       comma-separated names of the station's claim policies (setup
                                sets it, e.g. GreengrassProvisioningClaimPolicy); missing or
                                empty: every request is denied (hook_misconfigured)
  CLAIMFAB_ALLOW_SHARED_CLAIMS  "true" admits batch-scoped shared claims (binding not applied)
  AWS_REGION                    region of the IoT client (set by Lambda)
  AWS_ENDPOINT_URL              honoured by boto3 >= 1.28 (tests point it at a local endpoint)

Logs: one JSON line per decision on stdout (CloudWatch Logs): decision, reason, detail,
claimCertificateId, certificateId, thingName, clientId, claimCommonName, claimPolicies (the
claim policies the claim carries, or null). Never a certificate PEM, a policy document, a
key or anything secret: a value taken from the event or from a certificate subject is logged
only when it has the shape expected of it (ids, thing name; otherwise at most 128 printable
characters without PEM armour), else as its length or type.
"""

import base64
import binascii
import json
import math
import os
import re
import time
from collections import namedtuple
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

ALLOW_SHARED_ENV = "CLAIMFAB_ALLOW_SHARED_CLAIMS"
CLAIM_POLICIES_ENV = "CLAIMFAB_CLAIM_POLICIES"
SHARED_CLAIM_SUFFIX = " claim"  # src/pipeline/mod.rs claim_holders: "<template name> claim"
AWS_DEFAULT_SUBJECT = "AWS IoT Certificate"  # the CN AWS IoT gives certificates it names itself
THING_NAME = re.compile(r"[a-zA-Z0-9:_-]{1,128}")  # AWS IoT thing name pattern
CERTIFICATE_ID = re.compile(r"[0-9a-f]{64}")
POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}", re.ASCII)  # AWS IoT policy name pattern
# arn:PARTITION:iot:REGION:ACCOUNT:provisioningtemplate/NAME (template names: 1-36 of
# [0-9A-Za-z_-]). Partition and region are kept loose: they are only copied into the claim's
# ARN, and AWS IoT itself writes templateArn.
TEMPLATE_ARN = re.compile(
    r"arn:(aws[a-z0-9-]{0,20}):iot:([a-z0-9-]{1,40}):([0-9]{12}):provisioningtemplate/[0-9A-Za-z_-]{1,36}"
)
MAX_EVENT_STRING = 2048  # longer claim ids or template ARNs are not read at all
MAX_PEM_CHARS = 64 * 1024
LOG_FIELD_MAX = 128  # AWS IoT's longest client id and thing name
LOG_POLICIES_MAX = 10  # AWS IoT attaches at most 10 policies to a certificate

# Decision deadline, from the start of the invocation (seconds). Module constants, read at
# each invocation, so tests can patch them.
DECISION_DEADLINE_S = 3.0
REMAINING_TIME_MARGIN_S = 0.25  # answer at least this long before Lambda's own timeout

POLICY_PAGE_SIZE = 250  # ListAttachedPolicies' largest page
MAX_POLICY_PAGES = 4  # a certificate has at most 10 policies: more pages than this is wrong

# --------------------------------------------------------------------------------------------
# AWS IoT client: made at import (Lambda's init phase), once per container
# --------------------------------------------------------------------------------------------

# Worst case of one call with these settings, before the deadline cuts it: attempt 1 (connect
# up to 0.5 s, then up to 1 s for each socket read: 1.5 s when the answer never comes), one
# backoff of up to 1 s (botocore's "standard" mode: random * 1 s before the first retry; newer
# botocore waits up to 1 s for throttling, 50 ms otherwise, and may stretch it to an
# x-amz-retry-after header's value, at most 5 s more), attempt 2 (1.5 s): about 4 s, 9 s with
# a retry-after header. A response trickling in (each read under 1 s) and DNS resolution are
# not bounded at all. So the handler does not wait for the calls: it answers by its decision
# deadline (3 s), and a lookup still running then is abandoned (its worker thread ends when
# the call does).
_CLIENT_CONFIG = {
    "connect_timeout": 0.5,
    "read_timeout": 1.0,
    "retries": {"total_max_attempts": 2, "mode": "standard"},
}


def _make_iot_client():
    """A new AWS IoT client. boto3 (>= 1.28) reads AWS_ENDPOINT_URL itself."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "iot",
        region_name=os.environ.get("AWS_REGION") or None,
        config=Config(**_CLIENT_CONFIG),
    )


_iot = None
_iot_failure = None  # why the last attempt to make the client failed (exception class name)


def _try_make_iot_client():
    global _iot, _iot_failure
    try:
        _iot, _iot_failure = _make_iot_client(), None
    except Exception as e:  # noqa: BLE001 - remembered; the handler denies if it persists
        _iot, _iot_failure = None, type(e).__name__


_try_make_iot_client()  # at import: a cold start pays for it in Lambda's init phase


class IotClientUnavailable(RuntimeError):
    """No AWS IoT client could be made (at import nor on first use)."""


def _iot_client():
    """The IoT client; made again here if making it at import failed (or after
    set_iot_client(None)). IotClientUnavailable if that fails too."""
    if _iot is None:
        earlier = _iot_failure
        _try_make_iot_client()
        if _iot is None:
            at_import = f" (earlier: {earlier})" if earlier else ""
            raise IotClientUnavailable(f"cannot make the AWS IoT client: {_iot_failure}{at_import}")
    return _iot


def set_iot_client(client):
    """Replace the IoT client (tests); None makes the next invocation create a real one."""
    global _iot, _iot_failure
    _iot, _iot_failure = client, None


# The two lookups of an invocation run side by side. Lambda runs one invocation at a time per
# container; threads start on first use. A lookup abandoned at the deadline keeps its worker
# until its call ends (bounded by _CLIENT_CONFIG): two spare workers let the next
# invocation's lookups start at once instead of waiting for them.
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="claim-lookup")


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
# The lookups (run on _pool)
# --------------------------------------------------------------------------------------------


class UnusableAnswer(Exception):
    """An AWS answer the hook cannot use (the message says why; it goes to the log)."""


def _describe_claim(client, claim_id):
    """DescribeCertificate: the claim's certificateDescription."""
    description = client.describe_certificate(certificateId=claim_id)["certificateDescription"]
    if not isinstance(description, dict):
        raise UnusableAnswer("certificateDescription is not an object")
    return description


def _attached_policy_names(client, claim_arn, deadline):
    """ListAttachedPolicies on the claim's ARN, every page (at most MAX_POLICY_PAGES): the
    names of the policies attached to it."""
    names = []
    marker = None
    for _ in range(MAX_POLICY_PAGES):
        request = {"target": claim_arn, "pageSize": POLICY_PAGE_SIZE}
        if marker is not None:
            request["marker"] = marker
        page = client.list_attached_policies(**request)
        policies = page["policies"]
        if not isinstance(policies, list):
            raise UnusableAnswer("policies is not a list")
        for policy in policies:
            name = policy.get("policyName") if isinstance(policy, dict) else None
            if not isinstance(name, str):
                raise UnusableAnswer("a policy without a policyName")
            names.append(name)
        marker = page.get("nextMarker")
        if not marker:
            return names
        if not isinstance(marker, str):
            raise UnusableAnswer("nextMarker is not a string")
        if time.monotonic() >= deadline:  # the handler has answered already: stop here
            raise UnusableAnswer("decision deadline passed between pages")
    raise UnusableAnswer(f"more than {MAX_POLICY_PAGES} pages of attached policies")


# --------------------------------------------------------------------------------------------
# Handler
# --------------------------------------------------------------------------------------------

Decision = namedtuple("Decision", "allow reason detail cn policies", defaults=(None, None))


def _deny(reason, detail, cn=None, policies=None):
    return Decision(False, reason, detail, cn, policies)


def _shown(value, pattern=None):
    """A value for the log: itself when it has the expected shape (pattern; by default short,
    printable and without PEM armour), else only its type or length. Fields the event or a
    certificate subject carries are chosen by whoever sent them, so nothing else is logged."""
    if value is None:
        return None
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    if len(value) <= LOG_FIELD_MAX and (
        pattern.fullmatch(value) if pattern is not None else value.isprintable() and "-----" not in value
    ):
        return value
    return f"<{len(value)} characters, not shown>"


def _error_code(error):
    if isinstance(error, UnusableAnswer):
        return str(error)
    response = getattr(error, "response", None)
    details = response.get("Error") if isinstance(response, dict) else None
    code = details.get("Code") if isinstance(details, dict) else None
    return _shown(str(code)) if code else type(error).__name__


def _claim_policies():
    """The configured claim policy names (a frozenset), or None when missing or invalid."""
    value = os.environ.get(CLAIM_POLICIES_ENV)
    if not value:
        return None
    names = [name.strip() for name in value.split(",")]
    names = [name for name in names if name]
    if not names or not all(POLICY_NAME.fullmatch(name) for name in names):
        return None
    return frozenset(names)


def _deadline(context, started):
    """When the handler must answer (time.monotonic()): DECISION_DEADLINE_S after the start,
    and no later than Lambda's remaining time minus REMAINING_TIME_MARGIN_S."""
    deadline = started + DECISION_DEADLINE_S
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        try:
            ms = remaining()
        except Exception:  # noqa: BLE001 - a context without a usable clock: the fixed deadline
            ms = None
        if isinstance(ms, (int, float)) and not isinstance(ms, bool) and math.isfinite(ms):
            deadline = min(deadline, started + ms / 1000.0 - REMAINING_TIME_MARGIN_S)
    return deadline


def _lookups(client, claim_id, claim_arn, deadline, started):
    """Run both lookups concurrently: (description, attached policy names), or a denying
    Decision as soon as one fails or when the deadline comes first."""
    if time.monotonic() >= deadline:
        return _deny("deadline_exceeded", "no time left for the lookups before the decision deadline")
    lookups = (
        (_pool.submit(_describe_claim, client, claim_id), "DescribeCertificate", "describe_certificate_failed"),
        (_pool.submit(_attached_policy_names, client, claim_arn, deadline), "ListAttachedPolicies",
         "list_attached_policies_failed"),
    )
    while True:
        for future, operation, reason in lookups:
            if future.done() and future.exception() is not None:
                for other, _, _ in lookups:
                    other.cancel()
                return _deny(reason, f"{operation} failed: {_error_code(future.exception())}")
        pending = [future for future, _, _ in lookups if not future.done()]
        if not pending:
            return lookups[0][0].result(), lookups[1][0].result()
        left = deadline - time.monotonic()
        if left <= 0:
            for future in pending:
                future.cancel()  # only those not started yet can be
            names = ", ".join(operation for future, operation, _ in lookups if not future.done())
            return _deny(
                "deadline_exceeded",
                f"lookups not done {deadline - started:.2f} s after the invocation started: {names}",
            )
        wait(pending, timeout=left, return_when=FIRST_COMPLETED)


def _read_event(event):
    """The event's ThingName, claim certificate id and that claim's ARN (derived from
    templateArn), or a denying Decision when the event does not carry them well-formed."""
    if not isinstance(event, dict):
        return _deny("bad_event", "event is not an object")
    parameters = event.get("parameters")
    thing_name = parameters.get("ThingName") if isinstance(parameters, dict) else None
    if not isinstance(thing_name, str):
        return _deny("no_thing_name", "parameters.ThingName is missing or not a string")
    if len(thing_name) > 128 or not THING_NAME.fullmatch(thing_name):
        return _deny("invalid_thing_name", "ThingName is not a valid AWS IoT thing name")
    claim_id = event.get("claimCertificateId")
    if not isinstance(claim_id, str) or len(claim_id) != 64 or not CERTIFICATE_ID.fullmatch(claim_id):
        return _deny("bad_event", "claimCertificateId is missing or not a certificate id")
    template_arn = event.get("templateArn")
    match = (
        TEMPLATE_ARN.fullmatch(template_arn)
        if isinstance(template_arn, str) and len(template_arn) <= MAX_EVENT_STRING
        else None
    )
    if match is None:
        return _deny("bad_event", "templateArn is missing or not a provisioning template ARN")
    partition, region, account = match.groups()
    return thing_name, claim_id, f"arn:{partition}:iot:{region}:{account}:cert/{claim_id}"


def _judge_claim(description, attached, claim_arn, claim_policies):
    """Condition 1, the certificate is a claim: the claim policies it carries (sorted), or a
    denying Decision when its ARN disagrees, it is not ACTIVE or it carries none of them."""
    reported_arn = description.get("certificateArn")
    if reported_arn is not None and reported_arn != claim_arn:
        return _deny("bad_event", "the claim certificate's ARN is not the one derived from templateArn")
    status = description.get("status")
    if status != "ACTIVE":
        return _deny("claim_not_active", f"claim certificate status is {_shown(status)}")
    matched = sorted(set(attached) & claim_policies)
    if not matched:
        count = len(attached)
        return _deny(
            "not_a_claim",
            f"the certificate carries none of the claim policies ({CLAIM_POLICIES_ENV}); "
            f"it has {count} attached {'policy' if count == 1 else 'policies'}",
        )
    return matched


def _judge_subject(description, thing_name, matched):
    """Condition 2, the claim's subject CN is ThingName (a batch's shared claim only with
    ALLOW_SHARED_ENV): the final Decision."""
    try:
        cn = common_name(description.get("certificatePem"))
    except CertificateError as e:
        return _deny("unreadable_claim_subject", f"claim certificate subject: {e}", None, matched)
    if cn == AWS_DEFAULT_SUBJECT:
        return _deny(
            "no_csr_subject",
            "claim certificate has AWS IoT's default subject (CN=AWS IoT Certificate): AWS did "
            "not keep a CSR subject, so the claim cannot be bound to a device",
            cn,
            matched,
        )
    if cn.endswith(SHARED_CLAIM_SUFFIX):
        if os.environ.get(ALLOW_SHARED_ENV) == "true":
            return Decision(
                True,
                "shared_claim_allowed",
                f"batch-scoped shared claim; {ALLOW_SHARED_ENV}=true, so binding does not apply",
                cn,
                matched,
            )
        return _deny(
            "shared_claim",
            f"batch-scoped shared claim binds to no device; set {ALLOW_SHARED_ENV}=true to admit it",
            cn,
            matched,
        )
    if cn != thing_name:
        return _deny("claim_bound_to_other_thing", "claim certificate CN is not ThingName", cn, matched)
    return Decision(True, "claim_matches_thing", "claim certificate CN is ThingName", cn, matched)


def _decide(event, context, started):
    read = _read_event(event)
    if isinstance(read, Decision):
        return read
    thing_name, claim_id, claim_arn = read

    claim_policies = _claim_policies()
    if claim_policies is None:
        return _deny(
            "hook_misconfigured",
            f"{CLAIM_POLICIES_ENV} is missing, empty or not a comma-separated list of policy names",
        )
    deadline = _deadline(context, started)
    try:
        client = _iot_client()
    except IotClientUnavailable as e:
        return _deny("iot_client_unavailable", str(e))

    found = _lookups(client, claim_id, claim_arn, deadline, started)
    if isinstance(found, Decision):
        return found
    description, attached = found
    matched = _judge_claim(description, attached, claim_arn, claim_policies)
    if isinstance(matched, Decision):
        return matched
    return _judge_subject(description, thing_name, matched)


def _log_record(event, decision):
    ev = event if isinstance(event, dict) else {}
    parameters = ev.get("parameters")
    policies = decision.policies
    return {
        "decision": "allow" if decision.allow else "deny",
        "reason": decision.reason,
        "detail": decision.detail,
        "claimCertificateId": _shown(ev.get("claimCertificateId"), CERTIFICATE_ID),
        "certificateId": _shown(ev.get("certificateId"), CERTIFICATE_ID),
        "thingName": _shown(parameters.get("ThingName") if isinstance(parameters, dict) else None, THING_NAME),
        "clientId": _shown(ev.get("clientId")),
        "claimCommonName": _shown(decision.cn),
        "claimPolicies": [_shown(name, POLICY_NAME) for name in policies[:LOG_POLICIES_MAX]] if policies else None,
    }


def handler(event, context):
    started = time.monotonic()
    try:
        decision = _decide(event, context, started)
    except Exception as e:  # noqa: BLE001 - never raise: deny and say why
        decision = _deny("internal_error", f"hook error: {type(e).__name__}")
    allow = decision.allow is True
    try:
        record = _log_record(event, decision)
    except Exception as e:  # noqa: BLE001 - a hostile event must not stop the answer
        allow = False
        record = {"decision": "deny", "reason": "internal_error", "detail": f"log error: {type(e).__name__}"}
    try:
        print(json.dumps(record, sort_keys=True), flush=True)
    except Exception:  # noqa: BLE001 - no log is better than no answer
        pass
    return {"allowProvisioning": allow}
