"""The test device's create step, as its runtime does it: CreateKeysAndCertificate (Java, no
csrPath), CreateCertificateFromCsr with the config's CSR (Java, csrPath; subscribed to the
exact answer topics on the MQTT 3.1.1 Session) or with a key and CSR made on the device (lite:
no subscription, on the MQTT 5 LiteSession, see lite_session.py); the new certificate and key
written where the runtime puts them."""

from __future__ import annotations

import os
from pathlib import Path

from testdevice.answers import _create_answer, note_extra_answers
from testdevice.lite_session import LiteSession, lite_create_certificate_from_csr
from testdevice.paths import map_device_path
from testdevice.session import Session
from testdevice.settings import DeviceFailure, Settings


def make_csr(common_name: str):
    """Lite's pki_ops.c: EC P-256 key, CSR with subject CN only, SHA-256."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)] if 0 < len(common_name) <= 64 else []
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def create_certificate_from_csr(session: Session, csr: str):
    """Subscribes to `<topic>/accepted` and `<topic>/rejected` (each SUBACK awaited, as the SDK's
    v1 IotIdentityClient does for the Java plugin), publishes CreateCertificateFromCsr, waits
    for its PUBACK and answer. Returns (response, extra answers count list); a rejection raises
    DeviceFailure at stage create with AWS's fields. (Nucleus lite subscribes to nothing:
    lite_create_certificate_from_csr.)"""
    from awscrt import mqtt
    from awsiot import iotidentity

    identity = iotidentity.IotIdentityClient(session.connection)
    answer, on_accepted, on_rejected, extra_answers = _create_answer()
    req = iotidentity.CreateCertificateFromCsrSubscriptionRequest()
    session.subscribe(lambda: identity.subscribe_to_create_certificate_from_csr_accepted(
        req, mqtt.QoS.AT_LEAST_ONCE, on_accepted), "create", "$aws/certificates/create-from-csr/json/accepted")
    session.subscribe(lambda: identity.subscribe_to_create_certificate_from_csr_rejected(
        req, mqtt.QoS.AT_LEAST_ONCE, on_rejected), "create", "$aws/certificates/create-from-csr/json/rejected")
    published = identity.publish_create_certificate_from_csr(
        iotidentity.CreateCertificateFromCsrRequest(certificate_signing_request=csr), mqtt.QoS.AT_LEAST_ONCE)
    session.wait(published, "create", "PUBACK for CreateCertificateFromCsr")
    return session.wait(answer, "create", "CreateCertificateFromCsr response"), extra_answers



def create_keys_and_certificate(session: Session, settings: Settings, root: Path) -> tuple[str, str, str]:
    """The Java plugin without csrPath: CreateKeysAndCertificate, subscribed to the exact
    accepted/rejected topics; AWS's key and certificate written to the output paths."""
    from awscrt import mqtt
    from awsiot import iotidentity

    identity = iotidentity.IotIdentityClient(session.connection)
    answer, on_accepted, on_rejected, extra_answers = _create_answer()
    req = iotidentity.CreateKeysAndCertificateSubscriptionRequest()
    session.subscribe(lambda: identity.subscribe_to_create_keys_and_certificate_accepted(
        req, mqtt.QoS.AT_LEAST_ONCE, on_accepted), "create", "$aws/certificates/create/json/accepted")
    session.subscribe(lambda: identity.subscribe_to_create_keys_and_certificate_rejected(
        req, mqtt.QoS.AT_LEAST_ONCE, on_rejected), "create", "$aws/certificates/create/json/rejected")
    published = identity.publish_create_keys_and_certificate(
        iotidentity.CreateKeysAndCertificateRequest(), mqtt.QoS.AT_LEAST_ONCE)
    session.wait(published, "create", "PUBACK for CreateKeysAndCertificate")
    response = session.wait(answer, "create", "CreateKeysAndCertificate response")
    if not response.private_key:
        raise DeviceFailure("create", "CreateKeysAndCertificate accepted response has no privateKey")
    check_key_matches("create", response.certificate_pem, response.private_key.encode(), "its privateKey")
    note_extra_answers(settings, extra_answers[0], "CreateKeysAndCertificate")
    write_private(map_device_path(root, settings.out_cert), response.certificate_pem.encode())
    write_private(map_device_path(root, settings.out_key), response.private_key.encode())
    return response.certificate_id, response.certificate_ownership_token, response.certificate_pem


def create_from_csr_file(session: Session, settings: Settings, root: Path) -> tuple[str, str, str]:
    """The Java plugin with csrPath: the config's CSR, its key copied to the output key path."""
    csr = map_device_path(root, settings.csr_path).read_text()
    response, extra_answers = create_certificate_from_csr(session, csr)
    check_key_matches("create", response.certificate_pem, map_device_path(root, settings.csr_key).read_bytes(),
                      "the key of the device's CSR")
    note_extra_answers(settings, extra_answers[0], "CreateCertificateFromCsr")
    write_private(map_device_path(root, settings.out_cert), response.certificate_pem.encode())
    write_private(map_device_path(root, settings.out_key), map_device_path(root, settings.csr_key).read_bytes())
    return response.certificate_id, response.certificate_ownership_token, response.certificate_pem


def create_from_device_csr(session: LiteSession, settings: Settings, root: Path) -> tuple[str, str, str]:
    """Lite: key and CSR made on the device, the request made as lite's aws_iot_call makes it
    (no SUBSCRIBE; lite_session.py) (the certificate is written only once registered, see
    provision.py)."""
    key_pem, csr = make_csr(settings.csr_common_name)
    write_private(map_device_path(root, settings.out_key), key_pem)
    write_private(map_device_path(root, settings.csr_path), csr.encode())
    response = lite_create_certificate_from_csr(session, settings, csr)
    check_key_matches("create", response.certificate_pem, key_pem, "the key of the device's CSR")
    return response.certificate_id, response.certificate_ownership_token, response.certificate_pem


def obtain_certificate(session, settings: Settings, root: Path) -> tuple[str, str, str]:
    """The runtime's create step. Returns (certificate id, ownership token, certificate PEM);
    writes the device certificate and key where the runtime does."""
    if settings.method == "create-keys":
        return create_keys_and_certificate(session, settings, root)
    if settings.method == "csr-file":
        return create_from_csr_file(session, settings, root)
    return create_from_device_csr(session, settings, root)


def check_key_matches(stage: str, certificate_pem: str, key_pem: bytes, what: str) -> None:
    """The certificate must carry the device's public key; otherwise the data plane answered
    with another device's certificate (AWS answers only the connection that asked)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
        key = serialization.load_pem_private_key(key_pem, None)
    except ValueError as e:
        raise DeviceFailure(stage, f"the accepted certificate or key does not parse: {e}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise DeviceFailure(
            stage,
            f"the accepted certificatePem does not carry {what}: the answer was meant for another "
            "device (AWS delivers fleet-provisioning answers only to the connection that asked)",
        )
