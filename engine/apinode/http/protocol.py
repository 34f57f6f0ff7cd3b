"""uvicorn's httptools protocol, with each answer sent in one write.

uvicorn writes a response's status line and headers, then its body, as two socket writes.
A replica killed (SIGKILL, OOM, a lost machine) between the two has sent a header without
its body: the load balancer in front has already passed that header on, so it can neither
retry the request on another replica nor answer it, and the client gets a broken
connection. Holding every write of one event-loop tick and sending them together makes an
answer reach the socket whole or not at all; a request whose replica died before answering
is then retried by the balancer (nginx ``proxy_next_upstream error non_idempotent``; see
docs/operations.md). It also halves the send syscalls per request.

:class:`ApiNodeProtocol` adds a direct lane: when the app has one (``route`` and
``respond``, as :class:`engine.apinode.http.lane.QueryLane` has), its query requests are answered in
the protocol's own parser callbacks, without the ASGI round (request scope, cycle object,
event, task, message dicts, header checks): that round was ~30 % of a worker's CPU per query
under load. Everything else, and any query the lane does not take (HTTP/1.0, ``Expect:
100-continue``, a declared body over the app's limit, a request pipelined behind one still
being answered), goes through ASGI as before.

``nodal serve`` passes :class:`ApiNodeProtocol` to uvicorn as its ``http`` protocol (an
import string, so that ``--workers N`` processes load it too), with ``proxy_headers`` off
so that uvicorn gives the protocol the app itself.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

IMPORT_PATH = "engine.apinode.http.protocol:ApiNodeProtocol"
log = logging.getLogger("nodal.serving")
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)


class CoalescingTransport:
    """A transport proxy that sends all writes of one loop tick as one ``write``."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # get_extra_info, is_closing, pause_reading, …
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose answers leave in one write each."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        # The answer is whole. With a single client connection, send it now: waiting for the
        # end of the loop tick made one client ~15 % slower. With several, leave it for the
        # tick, which sends the answers of every request handled meanwhile back to back: 16
        # clients got ~20 % more answers a second that way (A/B with wrk on a quiet machine).
        if len(self.connections) <= 1:
            self.transport.flush()  # type: ignore[attr-defined]
        super().on_response_complete()


class DirectAnswer(Protocol):
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class DirectApp(Protocol):
    """What an app offers to be answered inside the protocol (engine.apinode.http.lane.QueryLane)."""

    max_body: int

    def route(self, method: str, path: str) -> Any: ...

    def respond(
        self, route: Any, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> DirectAnswer: ...


class ApiNodeProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` that answers the app's direct routes itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct: DirectApp | None = self.app if hasattr(self.app, "respond") else None
        self.direct_route: Any = None
        self.direct_body: bytearray | None = None

    def _direct_route(self) -> Any:
        """The app's route for the request whose headers were just parsed, or None."""
        app = self.direct
        if (
            app is None
            or self.root_path
            or self.expect_100_continue
            or self.pipeline
            or (self.cycle is not None and not self.cycle.response_complete)
            or self.parser.get_http_version() != "1.1"
            or self.parser.should_upgrade()
        ):
            return None
        url = self.url
        try:
            if b"?" in url or b"#" in url or not url.startswith(b"/"):
                url = httptools.parse_url(url).path
            path = url.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None
        if "%" in path:
            path = urllib.parse.unquote(path)
        route = app.route(self.parser.get_method().decode("ascii"), path)
        if route is None:
            return None
        for name, value in self.headers:
            if name == b"content-length" and (not value.isdigit() or int(value) > app.max_body):
                return None  # the ASGI lane refuses it without reading it
            if name == b"transfer-encoding":
                return None  # a chunked body: streamed through ASGI
        return route

    def on_headers_complete(self) -> None:
        self.direct_route = self._direct_route()
        if self.direct_route is None:
            super().on_headers_complete()
        else:
            self.direct_body = bytearray()

    def on_body(self, body: bytes) -> None:
        if self.direct_route is None:
            super().on_body(body)
        elif self.direct_body is not None:
            self.direct_body += body

    def on_message_complete(self) -> None:
        if self.direct_route is None:
            super().on_message_complete()
            return
        route, body = self.direct_route, bytes(self.direct_body or b"")
        self.direct_route = self.direct_body = None
        try:
            answer = self.direct.respond(route, self.headers, body)  # type: ignore[union-attr]
        except Exception:
            log.exception("internal error answering %s", route)
            self.transport.write(_INTERNAL_ERROR)
            self.transport.close()
            return
        keep_alive = self.parser.should_keep_alive()
        content = [STATUS_LINE[answer.status]]
        for name, value in self.server_state.default_headers:  # date, server
            content += [name, b": ", value, b"\r\n"]
        for name, value in answer.headers:
            content += [name, b": ", value, b"\r\n"]
        if not keep_alive:
            content.append(b"connection: close\r\n")
        content += [b"\r\n", answer.body]
        self.transport.write(b"".join(content))
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()
