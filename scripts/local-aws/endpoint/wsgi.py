"""Small WSGI helpers of the endpoint's own answers (fault injection, stats, Lambda code)."""

from __future__ import annotations

import json
import uuid


def drain(environ) -> None:
    """Reads the unread request body, so a keep-alive connection stays in step when we
    answer without handing the request to moto."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    try:
        if length > 0:
            while length > 0:
                chunk = stream.read(min(length, 65536))
                if not chunk:
                    break
                length -= len(chunk)
        elif environ.get("wsgi.input_terminated"):
            while stream.read(65536):
                pass
    except (OSError, ValueError):
        pass


def json_response(start_response, status: str, body: dict, headers=()):
    data = json.dumps(body).encode("utf-8")
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *headers,
        ],
    )
    return [data]


def aws_error(start_response, status: str, code: str, message: str):
    """An AWS IoT error. AWS IoT speaks REST-JSON: the error code travels in the
    x-amzn-ErrorType header and the body is {"message": ...}. botocore
    (RestJSONParser._inject_error_code) and the Rust SDK (aws-sdk-iot
    json_errors::parse_error_metadata) both take the code from that header first (body
    "code"/"__type" only when it is absent)."""
    return json_response(
        start_response,
        status,
        {"message": message},
        [("x-amzn-ErrorType", code), ("x-amzn-RequestId", str(uuid.uuid4()))],
    )
