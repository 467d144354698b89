"""Correction 5 to moto's IoT responses: ListCertificates pages and order."""

from __future__ import annotations

from moto.core.responses import ActionResult
from moto.iot import responses as iot_responses
from moto.iot.exceptions import InvalidRequestException

DEFAULT_PAGE_SIZE = 25  # AWS's


def page_size_param(raw) -> int:
    """pageSize: 1..250, DEFAULT_PAGE_SIZE when absent."""
    if raw is None:
        return DEFAULT_PAGE_SIZE
    try:
        page_size = int(raw)
    except (TypeError, ValueError):
        raise InvalidRequestException("pageSize must be an integer between 1 and 250.")
    if not 1 <= page_size <= 250:
        raise InvalidRequestException("pageSize must be an integer between 1 and 250.")
    return page_size


def sort_key(cert) -> tuple[str, str]:
    """Creation date, then id: the order of the listing, and what a marker names."""
    return (cert.creation_date.isoformat(timespec="microseconds"), cert.certificate_id)


def encode_marker(key: tuple[str, str]) -> str:
    return f"{key[0]}|{key[1]}".encode("utf-8").hex()


def decode_marker(marker: str) -> tuple[str, str]:
    try:
        created, _, cert_id = bytes.fromhex(marker).decode("utf-8").partition("|")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestException("The marker is not valid.")
    if not cert_id:
        raise InvalidRequestException("The marker is not valid.")
    return (created, cert_id)


def correct_list_certificates() -> None:
    """5. ListCertificates. AWS (API_ListCertificates): pageSize 1..250, marker, and
    ascendingOrder (query "isAscendingOrder"; true = oldest first by creation date, the
    default false = newest first); "nextMarker" is returned while more results exist. moto
    returns everything in insertion order and ignores all three. The default page size, 25,
    is AWS's. Markers are opaque to clients: here, hex of "creationDate|id" of the last
    certificate returned, so pages stay consistent while certificates are added."""

    def response_list_certificates(self):
        page_size = page_size_param(self._get_param("pageSize"))
        ascending = self._get_bool_param("isAscendingOrder", False)
        marker = self._get_param("marker")
        certs = sorted(self.iot_backend.list_certificates(), key=sort_key, reverse=not ascending)
        if marker:
            after = decode_marker(marker)
            certs = [c for c in certs if (sort_key(c) > after if ascending else sort_key(c) < after)]
        page = certs[:page_size]
        result = {"certificates": [c.to_dict() for c in page]}
        if len(certs) > page_size:
            result["nextMarker"] = encode_marker(sort_key(page[-1]))
        return ActionResult(result)

    iot_responses.IoTResponse.list_certificates = response_list_certificates
