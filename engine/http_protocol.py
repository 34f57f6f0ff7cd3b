"""uvicorn's httptools protocol, with each answer sent in one write.

uvicorn writes a response's status line and headers, then its body, as two socket writes.
A replica killed (SIGKILL, OOM, a lost machine) between the two has sent a header without
its body: the load balancer in front has already passed that header on, so it can neither
retry the request on another replica nor answer it, and the client gets a broken
connection. Holding every write of one event-loop tick and sending them together makes an
answer reach the socket whole or not at all; a request whose replica died before answering
is then retried by the balancer (nginx ``proxy_next_upstream error non_idempotent``; see
docs/operations.md). It also halves the send syscalls per request.

``nodal serve`` passes :class:`CoalescingHttpToolsProtocol` to uvicorn as its ``http``
protocol (an import string, so that ``--workers N`` processes load it too).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

IMPORT_PATH = "engine.http_protocol:CoalescingHttpToolsProtocol"


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
