#!/usr/bin/env python3
"""A test Greengrass core device that provisions from claimfab bundles with AWS's IoT device SDK.

Usage (from the repository root):

    .venv/bin/python scripts/local-aws/device.py --nucleus java|lite \\
        --bundle DEV1.zip [--bundle DEV2.zip ...] \\
        --connect-to 127.0.0.1:PORT --root-ca TEST_CA.pem \\
        [--init-config /greengrass/v2/init-config/config.yaml]   (java only) \\
        [--jobs 4] [--timeout 10] [--keep-roots DIR] [--json]

Each bundle is extracted into its own temporary "device root" (zip entries are device paths
with the leading '/' dropped). The device reads the Greengrass config from it exactly as the
chosen runtime does (the FACTS, read from the runtimes' sources, are in
testdevice/java_config.py and testdevice/lite_config.py), connects with mTLS using the claim
certificate and key the config points at, obtains its device certificate the way that
runtime does, calls RegisterThing with the config's template and parameters, then reconnects
with the new certificate and key (client id = thing name, as the nucleus does after
provisioning; lite again over MQTT 5) and disconnects.

On the wire each runtime is modelled from its source:
  * Java (FleetProvisioningByClaim plugin v1.2.2): MQTT 3.1.1 with the SDK's v1 client, clean
    session, the SDK's metrics username; per call the v1 IotIdentityClient subscribes to
    `<topic>/accepted` and then `<topic>/rejected` at QoS 1, each SUBACK awaited, then
    publishes (4 SUBSCRIBEs per device, never an UNSUBSCRIBE); RegisterThing leaves out an
    empty `parameters` (testdevice/session.py, certificates.py, register.py).
  * lite (aws-greengrass-lite v2.6.0, testdevice/lite_session.py has the source lines): MQTT 5
    with awscrt's mqtt5 client (lite 2.4.0 and 2.5.1+ speak MQTT 5, 2.3.x and 2.5.0 MQTT
    3.1.1), clean start, keepalive 30 s, no username, client id a random UUID, "dialed" ends
    with "(MQTT 5)"; NO SUBSCRIBE: each call registers `<topic>/+` only
    locally ("virtual subscribe", modules/fleet-provisioning/src/cloud_request.c L45-52 and
    L144-145), publishes its request at QoS 1 without waiting for the PUBACK, takes the answer
    as an unsolicited PUBLISH on `<topic>/accepted` or `<topic>/rejected` (one carrying a
    clientToken is skipped, with a warning: lite's requests carry none), then sends an
    UNSUBSCRIBE for `<topic>/+` it never subscribed (an UNSUBACK "no subscription existed" is
    fine). RegisterThing always sends `parameters`, never templateName. A dropped connection
    fails the attempt (lite's iotcored would reconnect, but its request is never re-sent).

Network: the device always dials the config's iotDataEndpoint (TLS server name and
certificate check use that name) on the runtime's port (Java: the config's mqttPort, default
443 with ALPN x-amzn-mqtt-ca as the Java SDK's builder does, then 8883 for the nucleus's own
reconnect; lite: 8883, no ALPN), but the TCP connection goes to --connect-to instead: the
runtime's port only shows in the tunnel request and the report ("dialed"). awscrt's MQTT
clients have no separate TLS server name (their native connect sets the server name to the
host name; TlsConnectionOptions.set_server_name is only reachable for HTTP/S3 connections), so
the device runs a tiny in-process HTTP CONNECT proxy and hands it to the SDK as
awscrt.http.HttpProxyOptions(connection_type=Tunneling) (the v1 connection's proxy_options,
the mqtt5 ClientOptions' http_proxy_options) -- the same proxy code path a Java device with
`proxyUrl` uses. The proxy forwards every tunnel to --connect-to. --root-ca (the
local test CA) stands in for Amazon Root CA 1; the config's rootCaPath must still exist in the
bundle. After a failed connect the device makes one plain TLS handshake (no MQTT) with the same
certificate to say why (awscrt reports TLS failures only after s2n's 10-30 s blinding delay, so
a wrong CA or server name otherwise shows up as a connect timeout).

Files land in the device root where the runtime puts them (Java: certificatePath/privateKeyPath,
default rootPath/thingCert.crt and privKey.key; lite: /var/lib/greengrass/credentials/...);
--keep-roots DIR keeps the roots for inspection. Answers meant for another device (AWS answers
only the connection that asked) are caught where the device can tell: a certificate that does
not carry the device's key fails the create stage; extra answers are listed as warnings.

Output: one line per bundle, as it finishes. With --json each line is a JSON object:
    {"bundle": ..., "ok": true, "thing_name": ..., "certificate_id": ...,
     "device_configuration": {...}, "client_id": ..., "dialed": ..., "runtime_config": {...},
     "warnings": [...]}
    {"bundle": ..., "ok": false, "stage": "config|connect|create|register|reconnect",
     "error": "...", "status_code": ..., "error_code": ..., "error_message": ...,
     "warnings": [...]}
status_code/error_code/error_message are AWS's rejection fields verbatim (null when the
failure was not a rejection). Exit status: 0 all provisioned, 1 any failed, 2 bad usage.
Private keys are never printed.

The code is the package testdevice/ beside this file: settings.py (what is read, how a stage
fails), paths.py, java_config.py, lite_config.py and lite_settings.py (reading a config as each
runtime does), bundle.py, tunnel.py, session.py (the network and the SDK's MQTT 3.1.1
connection) and lite_session.py (lite's MQTT 5 session and calls), answers.py, certificates.py
and register.py (the provisioning MQTT API calls), provision.py (one device, stage by stage)
and cli.py.
"""

import sys

from testdevice.cli import main

if __name__ == "__main__":
    sys.exit(main())
