"""Local AWS IoT fleet-provisioning service and policy decision point (claimfab's data plane).

Started by scripts/local-aws/local_endpoint.py --data-plane (one process, beside the mosquitto
broker, run as `python -m dataplane.service` from scripts/local-aws); not meant to be run by
hand. This process owns (the modules beside this file named in brackets):

  * [authorizer.py] the authorization decisions of the broker plugin (claimfab_auth.c): it
    listens on a Unix socket (--auth-socket) for JSON lines {"op", "conn", "cert", "client",
    "topic"?} and answers "allow", "deny" or "disconnect", as AWS IoT Core decides:
      - connect: the certificate (id = SHA-256 of its DER) must be registered in the local
        endpoint and ACTIVE (DescribeCertificate), and the policies that apply to it
        (ListAttachedPolicies on the certificate ARN and on the thing groups of the
        connection's thing and their parents, GetPolicy) must allow iot:Connect on
        client/CLIENT_ID; a read that fails for another reason than "not found" denies
        everything and caches nothing;
      - publish (topic/T; publish_retained needs iot:RetainPublish too) and subscribe
        (topicfilter/F): allowed, or "disconnect" (AWS IoT
        closes the connection of a client that publishes or subscribes without
        permission); receive (topic/T): allowed or "deny" (the message is not delivered),
        also for the provisioning API's replies, which reach the requesting connection
        without a subscription;
      - evaluation in iot_policy.py, with the connection's policy variables (client id, the
        connection's thing -- the thing the certificate is exclusively attached to, else the
        attached thing whose name is the client id, see connection_thing -- and the
        certificate's subject). "conn" is the broker's serial number of the connection.
        What a connection's decisions rest on (certificate status, policies, thing) is read
        again whenever the local endpoint's change counter (/_claimfab/generation) moved
        since it was read: AWS IoT checks each request against the account as it is, not
        as it was at CONNECT (AWS may take minutes to apply a change; this is the strict
        side);
      - next_kick: every 0.2 s the service looks for live connections whose certificate
        left ACTIVE and hands their serials to the plugin, which closes them: AWS IoT
        "disconnects all devices that used that certificate to connect"
        (API_UpdateCertificate);
  * [mqtt_api.py, provisioning.py, things.py] the Device provisioning MQTT API (AWS IoT Core
    Developer Guide, "Device provisioning MQTT API"), over its own MQTT connection
    (paho-mqtt, TLS, its own certificate). Devices' requests reach it rewritten by the plugin
    as $claimfab/request/CONN/CERT_ID/HEX(CLIENT_ID)/TOPIC; it answers on
    $claimfab/reply/CONN/TOPIC/{accepted,rejected}, which the plugin delivers on
    TOPIC/{accepted,rejected} to that connection only, subscribed or not (AWS "returns the
    device provisioning MQTT API results through the same MQTT connection used to publish
    the API request"; nucleus lite 2.3 and later never subscribes), after its iot:Receive
    check:
      - $aws/certificates/create/json (CreateKeysAndCertificate) -> {certificateId,
        certificatePem, privateKey, certificateOwnershipToken};
      - $aws/certificates/create-from-csr/json (CreateCertificateFromCsr,
        {"certificateSigningRequest": PEM}) -> {certificateId, certificatePem,
        certificateOwnershipToken};
      - $aws/provisioning-templates/NAME/provision/json (RegisterThing,
        {"certificateOwnershipToken", "parameters"}) -> {deviceConfiguration, thingName}; the
        template (template.py) is carried out through the local endpoint, the certificate
        attached to the thing with the template's ThingPrincipalType (EXCLUSIVE_THING or, by
        default, NON_EXCLUSIVE_THING);
      - rejected: {statusCode, errorCode, errorMessage}.
    Certificates are made through the local endpoint, INACTIVE (AWS: PENDING_ACTIVATION
    until RegisterThing applies the template's Status; the IoT API has no such status, so
    they show as INACTIVE). Ownership tokens are opaque, random, bound to the new
    certificate and to the connection that obtained them (another connection, even with
    the same claim and client id, is answered InvalidCertificateOwnershipToken: AWS
    documents no binding, so the strict one), single use (spent by a successful
    RegisterThing) and expire after one hour;
    a certificate whose token expired while it was still inactive and unattached is deleted,
    as AWS does. Only the json payload format is offered: a request on a .../cbor topic is
    answered on .../cbor/rejected with a JSON error (statusCode 400,
    "UnsupportedPayloadFormat"): AWS would answer in CBOR, which this service does not speak.
  * [hook.py, hook_permission.py] the pre-provisioning hook: when the template has
    preProvisioningHook.targetArn, the function's resource policy must let iot.amazonaws.com
    invoke it (Lambda GetPolicy; conditions evaluated with aws:SourceAccount = the account
    and no aws:SourceArn, as _allows_iot explains: a permission that relies on SourceArn
    does not match), then its deployment package is fetched (Lambda GetFunction ->
    Code.Location) and its Python handler is run in a subprocess with AWS's documented
    payload; provisioning goes on only on {"allowProvisioning": true}, with
    parameterOverrides merged into the parameters.

AWS documents no list of the MQTT API's error codes; the ones used here are:
InvalidPayload (400, not JSON / not an object), InvalidCertificateOwnershipToken (400),
InvalidParameters (400, missing or bad parameters, values the template cannot use),
InvalidTemplate (400), InvalidCSR (400, the endpoint refused the CSR), InvalidRequest (400,
the endpoint refused a step, e.g. the certificate's thing association conflicts with the
template's ThingPrincipalType), ResourceNotFound (404, no such template, thing group, thing
type or policy), TemplateDisabled (400), ResourceConflictsException (409: OverrideSettings FAIL
on an existing thing; the guide names the error, not its status),
AccessDenied (403: the hook refused or cannot be invoked, the provisioning role is missing),
ThrottlingException (429, the endpoint throttled), InternalError (500, anything else).

Logs go to stderr. stdout carries one line, "ready", once the MQTT subscription is in place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time

from dataplane.authorizer import AuthHandler, Authorizer, AuthServer
from dataplane.endpoint_client import Endpoint
from dataplane.mqtt_api import Service
from dataplane.provisioning import Provisioning

log = logging.getLogger("dataplane")

STARTUP_S = 20  # the broker connection and the subscription must be in place by then
SWEEP_EVERY_S = 60  # expired ownership tokens
KICK_SWEEP_S = 0.2  # certificates made inactive: their connections closed within this


def parse_args():
    parser = argparse.ArgumentParser(description="claimfab local fleet-provisioning service")
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--account", default="123456789012")
    parser.add_argument("--auth-socket", required=True)
    parser.add_argument("--broker-port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-id", default="claimfab-fleet-provisioning")
    return parser.parse_args()


def remove_socket(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def serve_decisions(path: str, authorizer: Authorizer) -> AuthServer:
    """The plugin's decision socket, answered on its own threads."""
    remove_socket(path)
    server = AuthServer(path, AuthHandler)
    server.authorizer = authorizer  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, name="auth", daemon=True).start()
    return server


def connect(service: Service, port: int, stop: threading.Event, deadline: float) -> bool:
    """Connects to the broker (retrying while it starts) and waits for the subscription."""
    while not stop.is_set():
        try:
            service.client.connect("127.0.0.1", port, keepalive=30)
            break
        except OSError:
            if time.monotonic() > deadline:
                log.error("cannot connect to the broker on 127.0.0.1:%d", port)
                return False
            time.sleep(0.05)
    service.client.loop_start()
    while not stop.is_set() and not service.ready.wait(0.05):
        if time.monotonic() > deadline:
            log.error("no MQTT subscription after 20 s")
            return False
    return True


def sweep_until_stopped(provisioning: Provisioning, authorizer: Authorizer, stop: threading.Event) -> None:
    """Until stopped: connections whose certificate left ACTIVE queued for closing (every
    KICK_SWEEP_S, when the account changed), expired ownership tokens (every SWEEP_EVERY_S)."""
    last_sweep = time.monotonic()
    while not stop.wait(KICK_SWEEP_S):
        try:
            authorizer.sweep()
        except Exception:  # noqa: BLE001
            log.exception("certificate status sweep failed")
        if time.monotonic() - last_sweep > SWEEP_EVERY_S:
            last_sweep = time.monotonic()
            try:
                provisioning.expire_tokens()
            except Exception:  # noqa: BLE001
                log.exception("token sweep failed")


def main() -> int:
    args = parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="dataplane: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    endpoint = Endpoint(args.endpoint_url, args.region)
    authorizer = Authorizer(endpoint, args.region, args.account, args.client_id)
    provisioning = Provisioning(endpoint, args.region, args.account)
    server = serve_decisions(args.auth_socket, authorizer)
    service = Service(args, endpoint, provisioning, authorizer)
    if not connect(service, args.broker_port, stop, time.monotonic() + STARTUP_S):
        return 1
    if not stop.is_set():
        print("ready", flush=True)
    sweep_until_stopped(provisioning, authorizer, stop)
    log.info("stopping; counters: %s", json.dumps(authorizer.stats, sort_keys=True))
    service.client.loop_stop()
    server.shutdown()
    remove_socket(args.auth_socket)
    return 0


if __name__ == "__main__":
    sys.exit(main())
