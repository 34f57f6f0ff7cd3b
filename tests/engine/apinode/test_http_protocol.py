"""The API node's answers leave in one socket write (engine/apinode/http/protocol.py)."""

from __future__ import annotations

import asyncio
import socket

import uvicorn

from engine.apinode.http.protocol import IMPORT_PATH, CoalescingTransport


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


# --- the direct lane: queries answered inside the protocol --------------------------------


class Direct:
    """An app with a direct lane: POST /q… is answered by ``respond``, the rest by ASGI."""

    max_body = 1000

    def __init__(self) -> None:
        self.direct_bodies: list[bytes] = []

    def route(self, method: str, path: str) -> str | None:
        return path if method == "POST" and path.startswith("/q") else None

    def respond(self, route, headers, body):  # noqa: ANN001, ANN201
        if route == "/q-broken":
            raise RuntimeError("a bug")
        self.direct_bodies.append(body)
        auth = dict(headers).get(b"authorization", b"-")
        out = b"direct:%s:%s:%s" % (route.encode(), auth, body)
        return type(
            "A",
            (),
            {
                "status": 201,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(out)),
                ],
                "body": out,
            },
        )

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)
        out = b"asgi:%s:%s" % (scope["path"].encode(), body)
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": out})


def _serve_and_talk(app, talk):  # noqa: ANN001, ANN202
    """Run uvicorn with the API node's protocol on a free port and ``talk(port)`` to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=IMPORT_PATH, log_level="critical", lifespan="off", proxy_headers=False
    )
    server = uvicorn.Server(config)

    async def scenario():  # noqa: ANN202
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            return await talk(sock.getsockname()[1])
        finally:
            server.should_exit = True
            await task

    return asyncio.run(scenario())


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    return lines[0], headers, await reader.readexactly(int(headers[b"content-length"]))


def _post(path: str, body: bytes, *extra: bytes, version: bytes = b"1.1") -> bytes:
    head = b"POST %s HTTP/%s\r\nhost: x\r\ncontent-length: %d\r\n" % (
        path.encode(),
        version,
        len(body),
    )
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def test_direct_routes_are_answered_in_the_protocol_with_uvicorns_headers():
    app = Direct()

    async def talk(port: int):  # noqa: ANN202
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        out = []
        for request in (
            _post("/q1", b"one", b"Authorization: Bearer k"),
            _post("/other", b"two"),  # not a direct route: ASGI
            _post("/q%32", b"three"),  # percent-encoded path, as ASGI decodes it
            _post("/q3?x=1", b"four"),  # the query string is not part of the path
            _post("/q1", b"x" * 1001),  # declared body over the app's limit: ASGI
            b"POST /q1 HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",  # chunked: ASGI
            b"GET /q1 HTTP/1.1\r\nhost: x\r\n\r\n",  # not a POST: ASGI
        ):
            writer.write(request)
            out.append(await _answer(reader))
        writer.close()
        return out

    answers = _serve_and_talk(app, talk)
    status, headers, body = answers[0]
    assert status == b"HTTP/1.1 201 Created" and body == b"direct:/q1:Bearer k:one"
    assert headers[b"content-type"] == b"text/plain" and b"date" in headers
    assert b"connection" not in headers  # kept alive: the next requests used the same socket
    assert [a[2] for a in answers[1:]] == [
        b"asgi:/other:two",
        b"direct:/q2:-:three",
        b"direct:/q3:-:four",
        b"asgi:/q1:" + b"x" * 1001,
        b"asgi:/q1:abcde",
        b"asgi:/q1:",
    ]
    assert app.direct_bodies == [b"one", b"three", b"four"]


def test_pipelined_requests_are_answered_in_order_and_close_is_honoured():
    app = Direct()

    async def talk(port: int):  # noqa: ANN202
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # A slow ASGI request with two queries pipelined behind it: they wait their turn.
        writer.write(_post("/slow", b"a") + _post("/q1", b"b") + _post("/q1", b"c"))
        pipelined = [await _answer(reader) for _ in range(3)]
        writer.write(_post("/q1", b"d", b"Connection: close"))
        closing = await _answer(reader)
        rest = await reader.read()  # b"" once the server has closed the connection
        writer.close()
        return pipelined, closing, rest

    pipelined, closing, rest = _serve_and_talk(app, talk)
    assert [a[2] for a in pipelined] == [b"asgi:/slow:a", b"asgi:/q1:b", b"asgi:/q1:c"]
    assert closing[2] == b"direct:/q1:-:d" and closing[1][b"connection"] == b"close"
    assert rest == b""


def test_http_1_0_goes_through_asgi_and_a_failing_answer_is_a_500_not_a_hang():
    app = Direct()

    async def talk(port: int):  # noqa: ANN202
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/q1", b"old", version=b"1.0"))
        old = await _answer(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/q-broken", b"x"))
        broken = await _answer(reader)
        closed = await reader.read()
        writer.close()
        return old, broken, closed

    old, broken, closed = _serve_and_talk(app, talk)
    assert old[2] == b"asgi:/q1:old"
    assert broken[0] == b"HTTP/1.1 500 Internal Server Error" and closed == b""
