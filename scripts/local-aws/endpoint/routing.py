"""Which AWS IoT operation a request is: the REST bindings in botocore's AWS IoT service model
(the model the SDKs are generated from), matched by HTTP method and path, for fault injection
and the request counters."""

from __future__ import annotations

from urllib.parse import urlsplit


def load_iot_routes() -> list[tuple[str, list[str], str]]:
    """(method, path-template segments, operation) for every AWS IoT operation, from the REST
    bindings (http.method + http.requestUri) in botocore's service model for iot, the same
    model the SDKs are generated from."""
    from botocore.loaders import Loader

    model = Loader().load_service_model("iot", "service-2")
    routes = []
    for name, op in model["operations"].items():
        method = op["http"]["method"].upper()
        path = op["http"]["requestUri"].split("?", 1)[0]
        routes.append((method, [s for s in path.split("/") if s], name))
    return routes


class IotRouter:
    """Maps (method, raw path) to an AWS IoT operation name."""

    def __init__(self, routes: list[tuple[str, list[str], str]]) -> None:
        self.operations = sorted({name for _, _, name in routes})
        self.by_method: dict[str, list[tuple[list[str], str]]] = {}
        for method, segments, name in routes:
            self.by_method.setdefault(method, []).append((segments, name))

    @staticmethod
    def _score(template: list[str], segments: list[str]):
        """None if `template` does not match; else a sort key, best match largest: literal
        segments beat {label}s, which beat {greedy+} labels (the usual REST routing rule)."""
        if template and template[-1].startswith("{") and template[-1].endswith("+}"):
            head = template[:-1]
            if len(segments) <= len(head):
                return None
            greedy = 1
        else:
            head = template
            if len(segments) != len(head):
                return None
            greedy = 0
        literals = 0
        for t, s in zip(head, segments):
            if t.startswith("{") and t.endswith("}"):
                continue
            if t != s:
                return None
            literals += 1
        return (literals, -greedy)

    def match(self, method: str, raw_path: str) -> str | None:
        segments = [s for s in raw_path.split("/") if s]
        best = None
        for template, name in self.by_method.get(method.upper(), ()):
            score = self._score(template, segments)
            if score is not None and (best is None or score > best[0]):
                best = (score, name)
        return best[1] if best else None


def is_iot_request(environ) -> bool:
    """True when moto dispatches this request to its IoT backend: a SigV4 Authorization header
    whose credential scope names the service "iot" (moto also maps the signing name
    "execute-api" to iot, except for API Gateway's /@connections). This mirrors
    moto.moto_server.werkzeug_app.DomainDispatcherApplication.infer_service_region_host; moto
    does not look at the Host header, and unsigned requests never reach IoT."""
    auth = environ.get("HTTP_AUTHORIZATION")
    if not auth:
        return False
    try:
        # "AWS4-HMAC-SHA256 Credential=AKID/20200101/us-east-1/iot/aws4_request, ..."
        scope = auth.split(",")[0].split()[1]
        _, _, _, service, _ = scope.split("/")
    except (IndexError, ValueError):
        return False
    service = service.lower()
    if service == "execute-api":
        return not environ.get("PATH_INFO", "").startswith("/@connections")
    return service == "iot"


def raw_request_path(environ) -> str:
    """The request path as sent (percent-encoding intact, so an encoded "/" inside a label
    stays one segment); PATH_INFO (already decoded) only if the server gives nothing else."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if "://" in raw.split("?", 1)[0]:  # absolute-form request target
            return urlsplit(raw).path
        return raw.split("?", 1)[0]
    return environ.get("PATH_INFO", "")
