"""Correction 6, thread safety of moto's IoT backend, and the lock it rests on.

moto's server handles each request on its own thread and its backends keep plain dicts, so
concurrent writers and readers (e.g. ListCertificates iterating while CreateCertificateFromCsr
inserts) must not overlap. STATE_LOCK is the one lock for the IoT backend's certificate,
policy and thing state; the other corrections and the provisioning templates take it too.
"""

from __future__ import annotations

import threading

from moto.iot import models as iot_models

STATE_LOCK = threading.RLock()

# The backend methods that read or write certificates, policies, things and their attachments.
LOCKED_METHODS = (
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
)


def locked(fn):
    """`fn` run under STATE_LOCK, a live dict view it returns copied to a list under it."""

    def wrapper(*args, **kwargs):
        with STATE_LOCK:
            result = fn(*args, **kwargs)
            if type(result).__name__ in ("odict_values", "dict_values", "odict_keys", "dict_keys"):
                result = list(result)
            return result

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def correct_certificate_lookups() -> None:
    """6 (lookups). DescribeCertificate and certificate-ARN principal lookups become dict
    lookups: moto scans every certificate; same result, O(1), which matters at bulk sizes."""
    IoTBackend = iot_models.IoTBackend

    def describe_certificate(self, certificate_id):
        cert = self.certificates.get(certificate_id)
        if cert is None:
            raise iot_models.ResourceNotFoundException()
        return cert

    original_get_principal = IoTBackend._get_principal

    def get_principal(self, principal_arn):
        if ":cert/" in principal_arn:
            cert = self.certificates.get(principal_arn.rsplit("/", 1)[-1])
            if cert is None or cert.arn != principal_arn:
                raise iot_models.ResourceNotFoundException()
            return cert
        return original_get_principal(self, principal_arn)

    IoTBackend.describe_certificate = describe_certificate
    IoTBackend._get_principal = get_principal


def correct_thread_safety() -> None:
    """6. The backend methods in LOCKED_METHODS run under STATE_LOCK, and list results are
    copied under it (moto returns live dict views that the response then iterates unlocked).
    Apply after the corrections that replace any of those methods, so that theirs are locked."""
    IoTBackend = iot_models.IoTBackend
    for name in LOCKED_METHODS:
        setattr(IoTBackend, name, locked(getattr(IoTBackend, name)))
