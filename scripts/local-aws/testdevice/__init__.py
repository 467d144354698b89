"""The test Greengrass core device (front door: ../device.py): reads a claimfab bundle as the
Java nucleus or nucleus lite would and provisions with AWS's IoT device SDK, on the wire as
that runtime does (Java: session.py's MQTT 3.1.1 with exact subscriptions; lite:
lite_session.py's MQTT 5 without any SUBSCRIBE)."""
