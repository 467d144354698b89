"""Correction 4 to moto's IoT backend: DescribeEndpoint, and the account's endpoint hosts (the
data plane's broker certificate names the ATS data endpoint)."""

from __future__ import annotations

import hashlib

ENDPOINT_FORMATS = {
    "iot:Data": "{p}.iot.{r}.amazonaws.com",
    "iot:Data-ATS": "{p}-ats.iot.{r}.amazonaws.com",
    "iot:CredentialProvider": "{p}.credentials.iot.{r}.amazonaws.com",
    "iot:Jobs": "{p}.jobs.iot.{r}.amazonaws.com",
}


def endpoint_host(account_id: str, region: str, endpoint_type: str = "iot:Data-ATS") -> str:
    """The account's DescribeEndpoint answer (correction 4): a 14-character prefix from
    sha256(account|region|kind), in AWS's host formats."""
    kind = "credentials" if endpoint_type == "iot:CredentialProvider" else "data"
    prefix = hashlib.sha256(f"{account_id}|{region}|{kind}".encode("utf-8")).hexdigest()[:14]
    return ENDPOINT_FORMATS[endpoint_type].format(p=prefix, r=region)


def correct_describe_endpoint() -> None:
    """4. DescribeEndpoint. AWS: the endpoint is specific to the account (and region) and the
    same on every call. moto draws a new random prefix on every call. Derive the 14-character
    prefix from sha256(account|region|kind), keeping AWS's host formats; data and
    credential-provider prefixes differ, as they do on AWS."""
    from moto.iot import models as iot_models

    def describe_endpoint(self, endpoint_type):
        endpoint = iot_models.FakeEndpoint(endpoint_type, self.region_name)  # validates type
        endpoint.endpoint = endpoint_host(self.account_id, self.region_name, endpoint_type)
        self.endpoint = endpoint
        return endpoint

    iot_models.IoTBackend.describe_endpoint = describe_endpoint
