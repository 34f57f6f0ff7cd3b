"""The API node's request and answer vocabulary: body parsing, limits, API keys, errors
in the Dataiku format (``{"errorType", "message", "detailedMessage"}``, never echoing the
request)."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import Receive, Scope, Send

from engine.apinode.node import LoadedService
from engine.apinode.realtime import CSV_TEXT

log = logging.getLogger("nodal.serving")


MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_ITEMS = 10_000
MAX_EXPLANATIONS = 20
json_decoder = msgspec.json.Decoder()
json_encoder = msgspec.json.Encoder()
JSON_HEADERS = {"content-type": "application/json"}
JSON_HEADER = (b"content-type", b"application/json")


class ApiError(Exception):
    """A refused query: HTTP status, errorType and a message that echoes nothing."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


def error_body(error_type: str, message: str) -> dict[str, str]:
    return {"errorType": error_type, "message": message, "detailedMessage": message}


def error(status: int, error_type: str, message: str) -> Response:
    return Response(
        json_encoder.encode(error_body(error_type, message)),
        status_code=status,
        headers=JSON_HEADERS,
    )


class Answer:
    """A finished answer: sent as two ASGI messages, or written whole by the protocol's
    direct lane (status, headers and body are what it reads).

    The query routes return this instead of a Litestar ``Response``: the body is already
    JSON bytes, so Litestar's response machinery (headers objects, media-type handling,
    serialisation) would only add work: 20–50 µs of CPU a request, measured in process.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.status, self.body = status, body
        self.headers = [JSON_HEADER, (b"content-length", str(len(body)).encode())]
        if extra:
            self.headers += [(k.encode(), v.encode()) for k, v in extra.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


@dataclass(slots=True)
class Query:
    """What the audit log records about one query, filled in while it is answered."""

    service: str
    endpoint: str
    method: str
    generation: str | None = None
    n_records: int = 0
    features: Any = None
    context: Any = None
    result: Any = None
    extra_headers: dict[str, str] | None = None


def route_names(request: Request) -> tuple[str, str]:
    params = request.path_params
    return params["service"], params["endpoint"]


def short_name(name: str) -> str:
    return name[:100]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs more
class QueryRequest:
    """What the query methods read of an HTTP request: its body and two headers.

    ``body`` is None when the body was over :data:`MAX_BODY_BYTES` (it was not read whole).
    """

    body: bytes | None
    content_type: str = ""
    authorization: str | None = None

    @classmethod
    async def from_litestar(cls, request: Request) -> QueryRequest:
        try:
            body: bytes | None = await request.body()
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            body = None
        headers = request.headers
        return cls(body, headers.get("content-type", ""), headers.get("authorization"))


def parse_body(req: QueryRequest, mlflow: bool = False) -> dict[str, Any]:
    """The body as a JSON object whatever the Content-Type (the official client sends none);
    for MLflow's ``/invocations`` (``mlflow``), a ``text/csv`` body is kept as text under
    :data:`~engine.apinode.realtime.CSV_TEXT`, read only once the caller may call."""
    raw = req.body
    if raw is None or len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "RequestTooLarge", f"request body over {MAX_BODY_BYTES} bytes")
    if mlflow and req.content_type.startswith("text/csv"):
        try:
            return {CSV_TEXT: raw.decode()}
        except UnicodeDecodeError:
            raise ApiError(400, "InvalidCSV", "the CSV body is not UTF-8 text") from None
    if not raw.strip():
        return {}
    try:
        body = json_decoder.decode(raw)
    except RecursionError:
        raise ApiError(400, "InvalidJSON", "the request body is nested too deeply") from None
    except msgspec.DecodeError:
        # Python's json accepts NaN/Infinity, which some clients send; validation refuses them.
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            hint = " (/invocations takes application/json or text/csv)" if mlflow else ""
            raise ApiError(
                400, "InvalidJSON", f"the request body is not valid JSON{hint}"
            ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "InvalidRequest", "the request body must be a JSON object")
    return body


def api_key_of(authorization: str | None) -> str | None:
    """The key sent as HTTP Basic user name (empty password) or as a Bearer token."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user.split(":", 1)[0] or None
    return None


def items_of(body: dict[str, Any], what: str) -> list[Any]:
    items = body.get("items")
    if not isinstance(items, list):
        raise ApiError(400, "InvalidRequest", f"'items' must be a list of {{\"{what}\": {{...}}}}")
    if len(items) > MAX_ITEMS:
        raise ApiError(413, "RequestTooLarge", f"at most {MAX_ITEMS} items per request")
    return items


def n_explanations(body: dict[str, Any]) -> int:
    spec = body.get("explanations")
    if not isinstance(spec, dict) or spec.get("enabled") is not True:
        return 0
    n = spec.get("nExplanations")
    if n is None:
        return 3
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ApiError(
            400, "InvalidRequest", "'explanations.nExplanations' must be a positive integer"
        )
    return min(n, MAX_EXPLANATIONS)


def api_context(loaded: LoadedService, endpoint: str) -> dict[str, str]:
    return {
        "serviceId": loaded.service_id,
        "endpointId": endpoint,
        "serviceGeneration": loaded.version,
    }
