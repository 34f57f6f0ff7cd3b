"""The direct lane: an ASGI app that answers query routes without Litestar's per-request
machinery and hands every other request to Litestar."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Litestar
from litestar.types import Receive, Scope, Send

from engine.apinode.http.handlers import METHODS
from engine.apinode.http.limits import DEFAULT_LIMITS, ConnectionLimits
from engine.apinode.http.messages import (
    MAX_BODY_BYTES,
    Answer,
    QueryRequest,
)
from engine.apinode.node import ServedService
from engine.deployer.apikeys import KeyChecker

log = logging.getLogger("nodal.serving")


_QUERY_PREFIX = "/public/api/v1/"


def query_route(path: str) -> tuple[str, str, str] | None:
    """(service, endpoint, method) when ``path`` is a query route, else None.

    The same paths the Litestar routes below declare: ``/public/api/v1/{service}/{endpoint}/
    {method}`` and ``/invocations`` (a trailing slash allowed, as Litestar allows it).
    """
    if path.endswith("/"):
        path = path[:-1]
    if path == "/invocations":
        return "", "", "invocations"
    if not path.startswith(_QUERY_PREFIX):
        return None
    parts = path[len(_QUERY_PREFIX) :].split("/")
    if len(parts) != 3 or parts[2] not in METHODS or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]


def declared_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The request's Content-Length (0 when absent or not a number)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


class QueryLane:
    """The API node's ASGI app: query routes go straight to the answering function, every
    other request (liveness, metrics, OpenAPI, wrong methods, unknown paths) to Litestar.

    A query's work is a few tens of microseconds; Litestar's per-request machinery (routing,
    connection and signature objects, header parsing, body streaming) took about a quarter of
    a worker's CPU under load (py-spy, bench/bench_serving.py). The lane reads the body and the
    two headers the query methods use, calls the same function the Litestar routes call
    (which stay declared: they are the OpenAPI schema, and they answer alike: a test holds
    the two paths equal), and sends the answer as the routes would.

    ``route`` and ``respond`` are also what :class:`engine.apinode.http.protocol.ApiNodeProtocol`
    calls to answer a query inside the HTTP protocol, without an ASGI round.
    """

    max_body = MAX_BODY_BYTES

    def __init__(
        self,
        app: Litestar,
        answer: Callable[[QueryRequest, str, str, str], Answer],
        limits: ConnectionLimits = DEFAULT_LIMITS,
    ):
        self.app, self.answer = app, answer
        self.limits = limits  # what the protocol grants a connection (http/protocol.py)

    @property
    def state(self) -> Any:  # the Litestar app's state (node, query log, housekeeping)
        return self.app.state

    @staticmethod
    def route(method: str, path: str) -> tuple[str, str, str] | None:
        """(service, endpoint, method) of a query request, None for anything else."""
        return query_route(path) if method == "POST" else None

    def respond(
        self, route: tuple[str, str, str], headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> Answer:
        """The answer to a query (``headers`` as ASGI gives them; ``body`` None: too large)."""
        content_type, authorization = "", None
        for name, value in headers:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        return self.answer(QueryRequest(body, content_type, authorization), *route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        if declared_length(scope["headers"]) <= MAX_BODY_BYTES:
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # the client left: nothing to answer
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    break
                chunks.append(chunk)
                if not message.get("more_body", False):
                    body = b"".join(chunks)
                    break
        await self.respond(route, scope["headers"], body)(scope, receive, send)


class StaticNode:
    """A node whose services are given, not pulled (the Studio's dev server)."""

    def __init__(self, services: dict[str, ServedService]) -> None:
        self.services = services
        self.keys = KeyChecker()

    def sync(self) -> None:
        return None
