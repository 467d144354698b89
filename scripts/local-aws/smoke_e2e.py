"""End-to-end smoke check of the local AWS IoT data plane (a developer's check, not a test
suite; the project's device is device.py beside it, written separately).

Usage: .venv/bin/python scripts/local-aws/smoke_e2e.py STATE_DIR
  where STATE_DIR belongs to a freshly started `scripts/local-aws/local_endpoint.py --data-plane`
  (it creates fixed names, so a second run against the same endpoint fails at setup).

It owns nothing but its own checks: it sets up, through boto3 on the local endpoint, a
provisioning role, a thing group, a core policy, claim policies shaped like claimfab's
(src/core/account_documents.rs claim_policy) and templates shaped like provisioning_template_body; then,
as devices over MQTT/TLS (paho-mqtt and awsiotsdk's iotidentity client), it runs
CreateCertificateFromCsr + RegisterThing and CreateKeysAndCertificate + RegisterThing,
reconnects with the new certificates, and checks the refusals: a claim policy without the
create-from-csr topics, a revoked claim, malformed JSON, replies going to their requester
only, a missing template parameter, and the pre-provisioning hook (allowed, refusing,
not invocable by iot.amazonaws.com, and a permission relying on SourceArn). Prints one line
per check; exits 1 on the first failure.
"""

from __future__ import annotations

import io
import json
import queue
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import boto3
import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ACCOUNT = "123456789012"
BASE = "$aws/certificates/create-from-csr/json"
PROV = "$aws/provisioning-templates/T/provision/json"
# Set by connect() from STATE_DIR/endpoint.json, before any check runs.
DP: dict = {}
REGION = ""
WORK = Path()
iot = iam = lam = None


def connect(state_dir: str) -> None:
    """The endpoint's clients and data plane, from its endpoint.json; WORK for the identities."""
    global REGION, WORK, iot, iam, lam
    state = Path(state_dir).resolve()
    info = json.loads((state / "endpoint.json").read_text())
    DP.update(info["data_plane"])
    REGION = info["region"]
    WORK = state / "smoke"
    WORK.mkdir(exist_ok=True)
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    iot = session.client("iot", endpoint_url=info["url"])
    iam = session.client("iam", endpoint_url=info["url"])
    lam = session.client("lambda", endpoint_url=info["url"])


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        sys.exit(1)


def arn(rest):
    return f"arn:aws:iot:{REGION}:{ACCOUNT}:{rest}"


def claim_policy(template, with_csr=True):
    """src/core/account_documents.rs claim_policy (optionally without the create-from-csr topics)."""
    topics = ["$aws/certificates/create/*"]
    if with_csr:
        topics.append("$aws/certificates/create-from-csr/*")
    topics.append(f"$aws/provisioning-templates/{template}/provision/*")
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": arn("client/*")},
            {"Effect": "Allow", "Action": ["iot:Publish", "iot:Receive"], "Resource": [arn(f"topic/{t}") for t in topics]},
            {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [arn(f"topicfilter/{t}") for t in topics]},
        ],
    }


def template_body(policy_name="GGCorePolicy", with_group=True):
    """src/core/account_documents.rs provisioning_template_body (CorePolicy::Named)."""
    params = {"ThingName": {"Type": "String"}, "AWS::IoT::Certificate::Id": {"Type": "String"}}
    thing_props = {"AttributePayload": {}, "ThingName": {"Ref": "ThingName"}}
    if with_group:
        params["ThingGroupName"] = {"Type": "String"}
        thing_props["ThingGroups"] = [{"Ref": "ThingGroupName"}]
    return {
        "Parameters": params,
        "Resources": {
            "MyThing": {
                "OverrideSettings": {"AttributePayload": "REPLACE", "ThingGroups": "REPLACE", "ThingTypeName": "REPLACE"},
                "Properties": thing_props,
                "Type": "AWS::IoT::Thing",
            },
            "MyPolicy": {"Properties": {"PolicyName": policy_name}, "Type": "AWS::IoT::Policy"},
            "MyCertificate": {
                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"},
                "Type": "AWS::IoT::Certificate",
            },
        },
    }


def new_key_and_csr(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return key_pem, csr.public_bytes(serialization.Encoding.PEM).decode()


def write_identity(name, cert_pem, key_pem):
    c, k = WORK / f"{name}.pem", WORK / f"{name}.key"
    c.write_text(cert_pem)
    k.write_text(key_pem)
    return str(c), str(k)


def make_claim(name, policy_name):
    key_pem, csr = new_key_and_csr(name)
    out = iot.create_certificate_from_csr(certificateSigningRequest=csr, setAsActive=True)
    iot.attach_policy(policyName=policy_name, target=out["certificateArn"])
    cert, key = write_identity(name, out["certificatePem"], key_pem)
    return cert, key, out["certificateId"]


class Device(mqtt.Client):
    """paho client that connects to the data plane's 127.0.0.1:port while verifying the
    server certificate for server_name (as a device configured with the ATS host does)."""

    def __init__(self, client_id, cert, key):
        super().__init__(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        self.tls_set(ca_certs=DP["ca_cert"], certfile=cert, keyfile=key)
        self.messages: queue.Queue = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.suback: queue.Queue = queue.Queue()
        self.on_connect = lambda c, u, f, rc, p: (self.connected.set() if not rc.is_failure else None)
        self.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.on_subscribe = lambda c, u, mid, rcs, p: self.suback.put(rcs)

    def _create_socket_connection(self):
        return socket.create_connection((DP["host"], DP["port"]), timeout=5)

    def start(self, timeout=5):
        self.connect(DP["server_name"], DP["port"], keepalive=30)
        self.loop_start()
        ok = self.connected.wait(timeout)
        return ok

    def stop(self):
        self.disconnect()
        self.loop_stop()

    def sub(self, *filters):
        for f in filters:
            self.subscribe(f, qos=1)
            self.suback.get(timeout=5)

    def request(self, topic, payload, timeout=10):
        self.publish(topic, payload if isinstance(payload, (bytes, str)) else json.dumps(payload), qos=1)
        t, body = self.messages.get(timeout=timeout)
        return t, json.loads(body)


def set_up_account() -> str:
    """What `claimfab setup` makes (role, thing group, core policy, template T, claim
    policies); returns the provisioning role's ARN."""
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "iot.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    role_arn = iam.create_role(RoleName="SmokeProvisioningRole", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iot.create_thing_group(thingGroupName="factory-a")
    core = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["iot:Publish", "iot:Subscribe", "iot:Receive", "iot:Connect", "greengrass:*"], "Resource": ["*"]}]}
    iot.create_policy(policyName="GGCorePolicy", policyDocument=json.dumps(core))
    iot.create_provisioning_template(templateName="T", templateBody=json.dumps(template_body()), enabled=True, provisioningRoleArn=role_arn)
    iot.create_policy(policyName="ClaimPolicy", policyDocument=json.dumps(claim_policy("T")))
    iot.create_policy(policyName="ClaimPolicyNoCsr", policyDocument=json.dumps(claim_policy("T", with_csr=False)))
    return role_arn


def check_csr_flow(claim_cert, claim_key):
    """CreateCertificateFromCsr + RegisterThing over paho, replies to the requester only, the
    token single use, malformed JSON; returns (the CSR, the device key, the accepted body)."""
    dev = Device("gg-1", claim_cert, claim_key)
    check(dev.start(), f"claim certificate connects to {DP['host']}:{DP['port']} verifying {DP['server_name']}")
    dev.sub(BASE + "/accepted", BASE + "/rejected", PROV + "/accepted", PROV + "/rejected")
    other = Device("gg-spy", claim_cert, claim_key)
    check(other.start(), "a second claim connection subscribes to the same reply topics")
    other.sub(BASE + "/accepted", BASE + "/rejected")

    dev_key, csr = new_key_and_csr("gg-1")
    topic, body = dev.request(BASE, {"certificateSigningRequest": csr})
    check(topic == BASE + "/accepted" and set(body) == {"certificateId", "certificatePem", "certificateOwnershipToken"}, f"CreateCertificateFromCsr accepted: {sorted(body)}")
    new_id = body["certificateId"]
    check(iot.describe_certificate(certificateId=new_id)["certificateDescription"]["status"] == "INACTIVE", "new certificate is INACTIVE until RegisterThing")
    time.sleep(0.3)
    check(other.messages.empty(), "the other client subscribed to .../accepted did not get the reply")

    topic, reg = dev.request(PROV, {"certificateOwnershipToken": body["certificateOwnershipToken"], "parameters": {"ThingName": "gg-1", "ThingGroupName": "factory-a"}})
    check(topic == PROV + "/accepted" and reg.get("thingName") == "gg-1" and reg.get("deviceConfiguration") == {}, f"RegisterThing accepted: {reg}")
    check(iot.describe_certificate(certificateId=new_id)["certificateDescription"]["status"] == "ACTIVE", "template made the certificate ACTIVE")
    check("gg-1" in iot.list_principal_things(principal=arn(f"cert/{new_id}"))["things"], "thing gg-1 attached to the new certificate")
    check([p["policyName"] for p in iot.list_attached_policies(target=arn(f"cert/{new_id}"))["policies"]] == ["GGCorePolicy"], "GGCorePolicy attached")
    check([g["groupName"] for g in iot.list_thing_groups_for_thing(thingName="gg-1")["thingGroups"]] == ["factory-a"], "gg-1 in factory-a")
    topic, again = dev.request(PROV, {"certificateOwnershipToken": body["certificateOwnershipToken"], "parameters": {"ThingName": "gg-1", "ThingGroupName": "factory-a"}})
    check(topic == PROV + "/rejected" and again["errorCode"] == "InvalidCertificateOwnershipToken", f"token is single use: {again}")
    topic, bad = dev.request(BASE, b"{not json")
    check(topic == BASE + "/rejected" and bad == {"statusCode": 400, "errorCode": "InvalidPayload", "errorMessage": bad["errorMessage"]}, f"malformed JSON rejected: {bad}")
    dev.stop()
    other.stop()
    return csr, dev_key, body


def check_device_certificate(body, dev_key, started: float) -> None:
    """The new device certificate connects as gg-1 and works under its core policy."""
    cert_path, key_path = write_identity("gg-1", body["certificatePem"], dev_key)
    core_dev = Device("gg-1", cert_path, key_path)
    check(core_dev.start(), f"reconnect with the new device certificate as gg-1 ({time.monotonic() - started:.2f}s for the whole flow)")
    core_dev.sub("gg/test")
    core_dev.publish("gg/test", "hi", qos=1)
    check(core_dev.messages.get(timeout=5) == ("gg/test", b"hi"), "device publishes and receives under its core policy")
    core_dev.stop()


def check_keys_flow(claim_cert, claim_key) -> None:
    """CreateKeysAndCertificate + RegisterThing with awsiotsdk's iotidentity client."""
    from awscrt import mqtt as crt_mqtt
    from awsiot import iotidentity, mqtt_connection_builder

    # awscrt's MQTT 3 connection verifies the server for the host it connects to; the broker's
    # certificate also names 127.0.0.1, so the SDK connects by address here.
    conn = mqtt_connection_builder.mtls_from_path(
        endpoint=DP["host"], port=DP["port"], cert_filepath=claim_cert, pri_key_filepath=claim_key,
        ca_filepath=DP["ca_cert"], client_id="gg-2", clean_session=True, keep_alive_secs=30,
    )
    conn.connect().result(10)
    identity = iotidentity.IotIdentityClient(conn)
    got: queue.Queue = queue.Queue()
    identity.subscribe_to_create_keys_and_certificate_accepted(iotidentity.CreateKeysAndCertificateSubscriptionRequest(), crt_mqtt.QoS.AT_LEAST_ONCE, lambda r: got.put(("ok", r)))[0].result(10)
    identity.subscribe_to_create_keys_and_certificate_rejected(iotidentity.CreateKeysAndCertificateSubscriptionRequest(), crt_mqtt.QoS.AT_LEAST_ONCE, lambda r: got.put(("err", r)))[0].result(10)
    identity.subscribe_to_register_thing_accepted(iotidentity.RegisterThingSubscriptionRequest(template_name="T"), crt_mqtt.QoS.AT_LEAST_ONCE, lambda r: got.put(("ok", r)))[0].result(10)
    identity.subscribe_to_register_thing_rejected(iotidentity.RegisterThingSubscriptionRequest(template_name="T"), crt_mqtt.QoS.AT_LEAST_ONCE, lambda r: got.put(("err", r)))[0].result(10)
    identity.publish_create_keys_and_certificate(iotidentity.CreateKeysAndCertificateRequest(), crt_mqtt.QoS.AT_LEAST_ONCE).result(10)
    kind, keys = got.get(timeout=10)
    check(kind == "ok" and keys.private_key and keys.certificate_ownership_token, "awsiotsdk CreateKeysAndCertificate accepted")
    identity.publish_register_thing(iotidentity.RegisterThingRequest(template_name="T", certificate_ownership_token=keys.certificate_ownership_token, parameters={"ThingName": "gg-2"}), crt_mqtt.QoS.AT_LEAST_ONCE).result(10)
    kind, resp = got.get(timeout=10)
    check(kind == "err" and resp.status_code == 400 and resp.error_code == "InvalidParameters", f"missing ThingGroupName rejected: {resp.status_code} {resp.error_code} {resp.error_message}")
    identity.publish_register_thing(iotidentity.RegisterThingRequest(template_name="T", certificate_ownership_token=keys.certificate_ownership_token, parameters={"ThingName": "gg-2", "ThingGroupName": "factory-a"}), crt_mqtt.QoS.AT_LEAST_ONCE).result(10)
    kind, resp = got.get(timeout=10)
    check(kind == "ok" and resp.thing_name == "gg-2", f"awsiotsdk RegisterThing accepted: thing {getattr(resp, 'thing_name', resp)}")
    conn.disconnect().result(10)
    cert2, key2 = write_identity("gg-2", keys.certificate_pem, keys.private_key)
    d2 = Device("gg-2", cert2, key2)
    check(d2.start(), "reconnect with the CreateKeysAndCertificate certificate (signed by the test CA)")
    d2.stop()


def check_refusals(csr) -> None:
    """A claim policy without the create-from-csr topics, and a revoked claim."""
    nocsr_cert, nocsr_key, _ = make_claim("claim-nocsr", "ClaimPolicyNoCsr")
    d = Device("gg-3", nocsr_cert, nocsr_key)
    check(d.start(), "claim without create-from-csr topics connects")
    d.subscribe(BASE + "/accepted", qos=1)
    check(d.disconnected.wait(5), "... and is disconnected when it subscribes to create-from-csr/json/accepted (AWS drops the connection)")
    d.loop_stop()
    d = Device("gg-3b", nocsr_cert, nocsr_key)
    d.start()
    d.publish(BASE, json.dumps({"certificateSigningRequest": csr}), qos=1)
    check(d.disconnected.wait(5), "... and when it publishes to create-from-csr/json")
    d.loop_stop()

    revoked_cert, revoked_key, revoked_id = make_claim("claim-revoked", "ClaimPolicy")
    iot.update_certificate(certificateId=revoked_id, newStatus="REVOKED")
    d = Device("gg-4", revoked_cert, revoked_key)
    check(not d.start(timeout=3), "revoked claim certificate cannot connect")
    d.loop_stop()


def create_hook_function() -> str:
    """The Lambda a hook template names: allows gg-* things, supplies ThingGroupName."""
    lambda_role = iam.create_role(RoleName="SmokeHookRole", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    code = (
        "def handler(event, context):\n"
        "    ok = event['parameters'].get('ThingName', '').startswith('gg-') and len(event['certificateId']) == 64\n"
        "    return {'allowProvisioning': ok, 'parameterOverrides': {'ThingGroupName': 'factory-a'}}\n"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hook.py", code)
    return lam.create_function(FunctionName="smoke-hook", Runtime="python3.11", Role=lambda_role, Handler="hook.handler", Code={"ZipFile": buf.getvalue()})["FunctionArn"]


def check_hook(role_arn: str) -> None:
    """The pre-provisioning hook: not invocable by iot.amazonaws.com, a permission relying on
    SourceArn, allowed (its overrides applied), refusing."""
    fn_arn = create_hook_function()
    iot.create_provisioning_template(templateName="THook", templateBody=json.dumps(template_body()), enabled=True, provisioningRoleArn=role_arn, preProvisioningHook={"targetArn": fn_arn})
    iot.create_policy(policyName="ClaimPolicyHook", policyDocument=json.dumps(claim_policy("THook")))
    hook_cert, hook_key, _ = make_claim("claim-hook", "ClaimPolicyHook")
    hprov = "$aws/provisioning-templates/THook/provision/json"
    d = Device("gg-5", hook_cert, hook_key)
    d.start()
    d.sub(BASE + "/accepted", hprov + "/accepted", hprov + "/rejected")
    _, b5 = d.request(BASE, {"certificateSigningRequest": new_key_and_csr("gg-5")[1]})
    topic, r = d.request(hprov, {"certificateOwnershipToken": b5["certificateOwnershipToken"], "parameters": {"ThingName": "gg-5"}})
    check(topic == hprov + "/rejected" and r["statusCode"] == 403, f"hook without a resource policy for iot.amazonaws.com: {r}")
    template_arn = iot.describe_provisioning_template(templateName="THook")["templateArn"]
    # AWS IoT's hook invocation carries aws:SourceAccount and no (documented) aws:SourceArn.
    lam.add_permission(FunctionName="smoke-hook", StatementId="iot-arn", Action="lambda:InvokeFunction", Principal="iot.amazonaws.com", SourceArn=template_arn)
    topic, r = d.request(hprov, {"certificateOwnershipToken": b5["certificateOwnershipToken"], "parameters": {"ThingName": "gg-5"}})
    check(topic == hprov + "/rejected" and r["statusCode"] == 403, f"hook permission relying on SourceArn: {r}")
    lam.remove_permission(FunctionName="smoke-hook", StatementId="iot-arn")
    lam.add_permission(FunctionName="smoke-hook", StatementId="iot", Action="lambda:InvokeFunction", Principal="iot.amazonaws.com", SourceAccount=ACCOUNT)
    topic, r = d.request(hprov, {"certificateOwnershipToken": b5["certificateOwnershipToken"], "parameters": {"ThingName": "gg-5"}})
    check(topic == hprov + "/accepted" and r["thingName"] == "gg-5", f"hook allowed, its parameterOverrides supplied ThingGroupName: {r}")
    check([g["groupName"] for g in iot.list_thing_groups_for_thing(thingName="gg-5")["thingGroups"]] == ["factory-a"], "gg-5 in factory-a (from the hook's override)")
    _, b6 = d.request(BASE, {"certificateSigningRequest": new_key_and_csr("x")[1]})
    topic, r = d.request(hprov, {"certificateOwnershipToken": b6["certificateOwnershipToken"], "parameters": {"ThingName": "other-6"}})
    check(topic == hprov + "/rejected" and r["statusCode"] == 403, f"hook refusing: {r}")
    d.stop()


def main():
    connect(sys.argv[1])
    role_arn = set_up_account()
    claim_cert, claim_key, _ = make_claim("claim", "ClaimPolicy")
    started = time.monotonic()
    csr, dev_key, body = check_csr_flow(claim_cert, claim_key)
    check_device_certificate(body, dev_key, started)
    check_keys_flow(claim_cert, claim_key)
    check_refusals(csr)
    check_hook(role_arn)
    print("all checks passed")


if __name__ == "__main__":
    main()
