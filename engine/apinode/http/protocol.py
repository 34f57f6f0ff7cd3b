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

:class:`ApiNodeProtocol` also bounds what one client can hold (engine/apinode/http/limits.py,
settings ``NODAL_API_*``): a worker accepts at most ``max_connections`` connections (one more
gets a 503 and is closed, whichever lane its requests would take); a connection stops being
read while its answers wait (the transport paused writing: a client that pipelines and
never reads) or once ``max_pipeline`` requests wait for their answer, and is read again when
they drain, so a client cannot grow the worker's buffers; received bytes are parsed in
small pieces so that the cap holds within one read; a request's headers must arrive within
``header_timeout`` of its first byte (or of connecting) and its body within
``body_timeout`` of its headers, through either lane, else the client gets a 408 and the
connection is closed, with a log line.

``nodal serve`` passes :class:`ApiNodeProtocol` to uvicorn as its ``http`` protocol (an
import string, so that ``--workers N`` processes load it too), with ``proxy_headers`` off
so that uvicorn gives the protocol the app itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from engine.apinode.http.limits import DEFAULT_LIMITS, ConnectionLimits

IMPORT_PATH = "engine.apinode.http.protocol:ApiNodeProtocol"
log = logging.getLogger("nodal.serving")
_INTERNAL_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
)
PIECE = 4096  # bytes parsed at a time: the pipelining cap is checked between pieces


def _closing_answer(status: int, error_type: str, message: str) -> bytes:
    body = b'{"errorType":"%s","message":"%s","detailedMessage":"%s"}' % (
        error_type.encode(),
        message.encode(),
        message.encode(),
    )
    return STATUS_LINE[
        status
    ] + b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
        len(body),
        body,
    )


_TOO_MANY_CONNECTIONS = _closing_answer(
    503, "TooManyConnections", "this worker has as many connections as it accepts; retry later"
)
_HEADERS_TIMEOUT = _closing_answer(408, "RequestTimeout", "the request headers came too slowly")
_BODY_TIMEOUT = _closing_answer(408, "RequestTimeout", "the request body came too slowly")


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


class HoldingFlowControl(FlowControl):
    """uvicorn's flow control, except that reading stays paused while the protocol holds
    received bytes back (uvicorn resumes reading after each answer and on each ``receive``)."""

    def __init__(self, transport: asyncio.Transport, holding: Callable[[], bool]) -> None:
        super().__init__(transport)
        self.holding = holding

    def resume_reading(self) -> None:
        if not self.holding():
            super().resume_reading()


class _Sweeper:
    """One timer per worker that enforces the connections' receive deadlines (cheaper than a
    timer per request: a request only stores a number)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, connections: set, period: float) -> None:
        self.loop, self.connections, self.period = loop, connections, period
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self.handle is None:
            self.handle = self.loop.call_later(self.period, self.sweep)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for conn in list(self.connections):
            if isinstance(conn, ApiNodeProtocol):
                try:
                    conn.check_deadline(now)
                except Exception:  # noqa: BLE001 - one connection must not stop the sweeps
                    log.exception("checking a connection's deadline failed")
        if self.connections:
            self.start()


_refusals = {"count": 0, "logged": 0.0, "lingering": 0}


def _log_refusal(limit: int) -> None:
    """A warning for refused connections, at most one every 10 s (a flood must not flood the log)."""
    _refusals["count"] += 1
    now = time.monotonic()
    if now - _refusals["logged"] >= 10:
        log.warning(
            "refused %d connection(s): this worker already has %d open (NODAL_API_MAX_CONNECTIONS)",
            _refusals["count"],
            limit,
        )
        _refusals["count"], _refusals["logged"] = 0, now


class ApiNodeProtocol(CoalescingHttpToolsProtocol):
    """:class:`CoalescingHttpToolsProtocol` that answers the app's direct routes itself and
    bounds what one connection can hold (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.direct: DirectApp | None = self.app if hasattr(self.app, "respond") else None
        self.direct_route: Any = None
        self.direct_body: bytearray | None = None
        self.limits: ConnectionLimits = getattr(self.app, "limits", None) or DEFAULT_LIMITS
        self.refused = False
        self.linger: asyncio.TimerHandle | None = None
        self.held = b""  # received, not parsed yet: the connection waits for its answers to drain
        self.feeding = False
        self.answered = 0  # direct answers written during this loop tick
        self.receiving: str | None = None  # "headers" or "body" while a request arrives
        self.deadline: float | None = None  # loop time by which it must have arrived
        self.write_paused_at: float | None = None

    # --- connections ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.refuse(transport)
            return
        super().connection_made(transport)
        self.flow = HoldingFlowControl(self.transport, self._holding)
        self.deadline = self.loop.time() + self.limits.header_timeout
        sweeper = getattr(self.server_state, "nodal_sweeper", None)
        if sweeper is None:
            period = min(1.0, self.limits.header_timeout / 4, self.limits.body_timeout / 4)
            sweeper = _Sweeper(self.loop, self.connections, max(0.05, period))
            self.server_state.nodal_sweeper = sweeper  # type: ignore[attr-defined]
        sweeper.start()

    def refuse(self, transport: asyncio.Transport) -> None:
        """A 503, then the door: the connection is never counted nor parsed. The answer is
        followed by end-of-file and what the client sent is read and dropped until it closes
        (at most 2 s), since closing with its request unread would reset the connection and
        could destroy the 503 before the client reads it."""
        self.refused = True
        _log_refusal(self.limits.max_connections)
        transport.write(_TOO_MANY_CONNECTIONS)
        if _refusals["lingering"] >= self.limits.max_connections or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        _refusals["lingering"] += 1
        self.linger = self.loop.call_later(2.0, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            if self.linger is not None:
                self.linger.cancel()
                _refusals["lingering"] -= 1
            return
        self.held, self.deadline, self.write_paused_at = b"", None, None
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            super().pause_writing()
            self.write_paused_at = self.loop.time()

    def resume_writing(self) -> None:
        if not self.refused:
            super().resume_writing()
            self.write_paused_at = None
            self._pump()

    # --- reading: back-pressure and the pipelining cap -------------------------------------

    def _must_wait(self) -> bool:
        """Whether this connection has as much waiting for the client as it may have."""
        cap = self.limits.max_pipeline
        return self.flow.write_paused or self.answered >= cap or len(self.pipeline) >= cap

    def _holding(self) -> bool:
        return bool(self.held) or self._must_wait()

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.held or self._must_wait():
            self._hold(self.held + data)
            return
        self._feed(data)

    def _hold(self, data: bytes) -> None:
        """Keep received requests for later and stop reading: the connection is busy, so the
        keep-alive timeout (for idle connections) must not close it meanwhile."""
        self.held = data
        self.flow.pause_reading()
        self._unset_keepalive_if_required()

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` piece by piece; once the connection must wait, hold the rest back and
        stop reading it."""
        view, start, end = memoryview(data), 0, len(data)
        self.feeding = True
        try:
            while start < end:
                if self._must_wait():
                    self._hold(bytes(view[start:]))
                    return
                super().data_received(view[start : start + PIECE])
                if self.parser is None or self.transport.is_closing():
                    return
                start += PIECE
        finally:
            self.feeding = False

    def _pump(self) -> None:
        """Parse what was held back, if the connection may go on; then read again."""
        if self.feeding or self.parser is None or self.transport.is_closing():
            return
        if self.held and not self._must_wait():
            data, self.held = self.held, b""
            self._feed(data)
        if self.held:
            self._unset_keepalive_if_required()  # busy, not idle
        elif not self._must_wait():
            self.flow.resume_reading()

    def _end_of_tick(self) -> None:
        self.answered = 0
        self._pump()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._pump()  # a pipelined request was answered: parse what waited behind it

    # --- deadlines --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.receiving = "headers"
        self.deadline = self.loop.time() + self.limits.header_timeout

    def check_deadline(self, now: float) -> None:
        """Close the connection if its client is past a deadline (called by the sweeper)."""
        if self.transport is None or self.transport.is_closing():
            return
        limits = self.limits
        if self.write_paused_at is not None and now - self.write_paused_at > limits.body_timeout:
            log.warning(
                "closed a connection whose client left its answers unread for %ss",
                limits.body_timeout,
            )
            self.transport.abort()
            return
        if self.deadline is None or now < self.deadline:
            return
        kind = self.receiving
        timeout = limits.body_timeout if kind == "body" else limits.header_timeout
        if self.flow.read_paused:  # the worker, not the client, is why nothing arrives
            self.deadline = now + timeout
            return
        self.deadline = None
        if kind is None:  # connected and sent nothing: as an idle keep-alive connection
            self.transport.close()
            return
        log.warning("closed a connection: request %s not received within %ss", kind, timeout)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # no answer under way: say why
            self.transport.write(_HEADERS_TIMEOUT if kind == "headers" else _BODY_TIMEOUT)
        elif kind == "body" and self.direct_route is None and not cycle.response_started:
            # the ASGI request whose body never came: answer it, and tell its app it is gone
            self.transport.write(_BODY_TIMEOUT)
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # --- the direct lane --------------------------------------------------------------------

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
        self.receiving = "body"
        self.deadline = self.loop.time() + self.limits.body_timeout
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
        self.receiving = self.deadline = None
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
        self.answered += 1
        if self.answered == 1:  # after this tick's answers are sent, read on (_end_of_tick)
            self.loop.call_soon(self._end_of_tick)
        self.on_response_complete()
