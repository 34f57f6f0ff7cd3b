"""The API node's answers leave in one socket write (engine/http_protocol.py)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from engine.http_protocol import IMPORT_PATH, CoalescingTransport


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_writes_of_one_tick_leave_as_one_and_close_flushes_first():
    async def scenario() -> RecordingTransport:
        raw = RecordingTransport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert raw.writes == [] and t.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        t.write(b"bye")
        t.close()  # a closing connection still sends what was written
        assert raw.writes[-1] == b"bye" and raw.closed
        return raw

    asyncio.run(scenario())


def test_abort_drops_what_was_not_sent():
    async def scenario() -> None:
        raw = RecordingTransport()
        t = CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"partial")
        t.abort()
        await asyncio.sleep(0)
        assert raw.writes == [] and raw.aborted

    asyncio.run(scenario())


def test_uvicorn_serves_http_through_the_protocol():
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b"echo:" + (await receive())["body"]
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=IMPORT_PATH, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)

    async def scenario() -> list[bytes]:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        answers = []
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for body in (b"a", b"bc"):  # two requests on one kept-alive connection
            writer.write(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ).split(b":")[1]
            )
            answers.append(head.split(b"\r\n")[0] + b" " + await reader.readexactly(length))
        writer.close()
        server.should_exit = True
        await task
        return answers

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK echo:a", b"HTTP/1.1 200 OK echo:bc"]
