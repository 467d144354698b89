"""The local endpoint (the control plane), as the fleet-provisioning service reaches it: boto3
clients for IoT, IAM and Lambda, and the rejections its errors become on the MQTT API."""

from __future__ import annotations

import json


class Rejected(Exception):
    """A provisioning request's rejection: {statusCode, errorCode, errorMessage}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def payload(self) -> dict:
        return {"statusCode": self.status, "errorCode": self.code, "errorMessage": self.message}


class Endpoint:
    def __init__(self, url: str, region: str):
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=32)
        self.url = url
        self.region = region
        self.iot = session.client("iot", endpoint_url=url, config=config)
        self.iam = session.client("iam", endpoint_url=url, config=config)
        self.lam = session.client("lambda", endpoint_url=url, config=config)
        import urllib3

        self._http = urllib3.PoolManager(maxsize=16)

    def generation(self) -> int | None:
        """The local endpoint's change counter (endpoint/injector.py GENERATION_PATH): it grows
        after every IoT request that may have changed something. None when it cannot be read
        (then nothing may be trusted from a cache)."""
        import urllib3

        try:
            resp = self._http.request("GET", self.url.rstrip("/") + "/_claimfab/generation", timeout=5.0, retries=False)
            return int(json.loads(resp.data)["generation"]) if resp.status == 200 else None
        except (urllib3.exceptions.HTTPError, ValueError, KeyError, TypeError):
            return None

    @staticmethod
    def code(error) -> str:
        return getattr(error, "response", {}).get("Error", {}).get("Code", "")

    def pages(self, method, key, **kwargs):
        marker = None
        while True:
            args = dict(kwargs)
            if marker:
                args["marker"] = marker
            page = method(**args)
            yield from page.get(key, [])
            marker = page.get("nextMarker")
            if not marker:
                return


def endpoint_error(e, csr: bool = False) -> Rejected:
    """The rejection for an endpoint error: throttling 429, a refused request 400 (InvalidCSR
    for a CSR), not found 404, anything else 500 InternalError."""
    code = Endpoint.code(e)
    message = getattr(e, "response", {}).get("Error", {}).get("Message", str(e))
    if code == "ThrottlingException":
        return Rejected(429, "ThrottlingException", "Rate exceeded")
    if code == "InvalidRequestException":
        return Rejected(400, "InvalidCSR" if csr else "InvalidRequest", message)
    if code == "ResourceNotFoundException":
        return Rejected(404, "ResourceNotFound", message)
    return Rejected(500, "InternalError", "An unexpected error has occurred.")

