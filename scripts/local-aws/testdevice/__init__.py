"""The test Greengrass core device (front door: ../device.py): reads a claimfab bundle as the
Java nucleus or nucleus lite would and provisions with AWS's IoT device SDK."""
