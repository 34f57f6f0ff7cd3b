"""What one hostile client can hold of a real ``nodal serve`` worker, over raw sockets on
loopback (engine/apinode/http/protocol.py, settings NODAL_API_*): a client that pipelines and
never reads stalls its own connection, not the worker's memory (direct lane and ASGI);
headers and bodies have deadlines (both lanes); a worker takes at most so many connections.

The node serves nothing (an empty home): a query for an unknown service still takes the
direct lane and is answered (404) like any query, cheaply."""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import procs

QUERY = b"POST /public/api/v1/nosuch/ep/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
ALIVE = b"GET /isAlive/ HTTP/1.1\r\nHost: x\r\n\r\n"  # answered through ASGI (Litestar)


@contextlib.contextmanager
def node(root: Path, **env: str) -> Iterator[tuple[str, int, Path]]:
    """A real ``nodal serve`` (one worker) on an empty home; yields (url, pid, log)."""
    port, log = procs.free_port(), root / "api.log"
    environ = {"NODAL_HOME": str(root / "var"), "NODAL_DATA_DIR": str(root / "data"), **env}
    proc = procs.start(
        ["-m", "engine.serving", "--infra", "limits", "--port", str(port)], environ, log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_for(lambda: httpx.get(f"{url}/isAlive/").status_code == 200, 60, "the node", log)
        yield url, proc.pid, log
    finally:
        procs.stop(proc)
    assert "Traceback" not in log.read_text()


def connect(url: str, rcvbuf: int | None = None, timeout: float = 30) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:  # a client that reads little: the kernel holds few answers for it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((host, int(port)))
    return sock


def rss_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))


def answered_queries(url: str) -> int:
    text = httpx.get(f"{url}/metrics").text
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("nodal_api_requests_total{")
    )


def send_until_stalled(sock: socket.socket, payload: bytes, stall: float = 3.0) -> int:
    """Send ``payload`` without reading any answer; stop when the server stops taking bytes
    for ``stall`` seconds. Returns the bytes sent."""
    sock.setblocking(False)
    sent = 0
    while sent < len(payload):
        _, writable, _ = select.select([], [sock], [], stall)
        if not writable:
            break
        try:
            sent += sock.send(payload[sent : sent + 65536])
        except BlockingIOError:
            continue
    sock.setblocking(True)
    return sent


def read_answers(sock: socket.socket, payload: bytes, sent: int, expected: int) -> list[bytes]:
    """Send the rest of ``payload`` (in a thread) while reading ``expected`` answers' status
    lines."""
    sender = threading.Thread(target=sock.sendall, args=(payload[sent:],), daemon=True)
    sender.start()
    statuses: list[bytes] = []
    buf = b""
    while len(statuses) < expected:
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {len(statuses)} of {expected} answers"
        buf += chunk
        # every answer has a content-length: skip bodies exactly
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break
            head = buf[:head_end]
            length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
            if len(buf) < head_end + 4 + length:
                break
            statuses.append(head.split(b"\r\n", 1)[0])
            buf = buf[head_end + 4 + length :]
    sender.join(30)
    return statuses


def wait_stable(read: Callable[[], int], what: str) -> int:
    """``read()`` once it stays the same for a second (the worker is done with what it took)."""
    last = read()
    for _ in range(60):
        time.sleep(1)
        value, last = last, read()
        if value == last:
            return last
    raise AssertionError(f"{what} did not settle")


def test_a_client_that_pipelines_queries_and_never_reads_stalls_only_its_connection(tmp_path):
    n = 150_000  # ~11 MB of queries; their answers would be ~45 MB
    payload = QUERY * n
    with node(tmp_path) as (url, _, _):
        sock = connect(url, rcvbuf=4096)
        sent = send_until_stalled(sock, payload)
        answered = wait_stable(lambda: answered_queries(url), "the worker to stop answering")
        # The worker stopped reading once its answers piled up (write back-pressure): it
        # answered what the kernel buffers took, not everything the client sent.
        assert sent < len(payload) and answered < n // 2, (sent, answered)
        # Nothing was lost: once the client reads, every query is answered, in order.
        statuses = read_answers(sock, payload, sent, n)
        assert statuses == [b"HTTP/1.1 404 Not Found"] * n
        # and the worker still serves others alike
        assert httpx.post(f"{url}/public/api/v1/nosuch/ep/predict", json={}).status_code == 404
        sock.close()


def test_pipelined_requests_through_asgi_are_capped_per_connection(tmp_path):
    n = 100_000  # ~3.7 MB of liveness requests, each a request object if queued
    payload = ALIVE * n
    with node(tmp_path, NODAL_API_MAX_PIPELINE="8") as (url, pid, _):
        before = rss_kb(pid)
        sock = connect(url, rcvbuf=4096)
        sent = send_until_stalled(sock, payload)
        after = wait_stable(lambda: rss_kb(pid), "the worker's memory to settle")
        # uvicorn alone queued every pipelined request it read (and read on after each
        # answer): hundreds of MB here. Capped, the worker holds a few requests and bytes.
        assert after - before < 40_000, (before, after, sent)
        statuses = read_answers(sock, payload, sent, n)
        assert statuses == [b"HTTP/1.1 200 OK"] * n
        sock.close()


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


HALF_HEADERS = b"POST /public/api/v1/nosuch/ep/predict HTTP/1.1\r\nHost: x\r\nContent-Le"
HALF_BODY = (
    b"POST /public/api/v1/nosuch/ep/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
)
HALF_BODY_ASGI = (  # HTTP/1.0 queries are answered through ASGI, not the direct lane
    b"POST /public/api/v1/nosuch/ep/predict HTTP/1.0\r\nContent-Length: 100\r\n\r\n{"
)


@pytest.fixture(scope="module")
def quick_deadlines(tmp_path_factory):
    with node(
        tmp_path_factory.mktemp("deadlines"),
        NODAL_API_HEADER_TIMEOUT="1",
        NODAL_API_BODY_TIMEOUT="1",
    ) as served:
        yield served


@pytest.mark.parametrize(
    "request_bytes,kind",
    [(HALF_HEADERS, "headers"), (HALF_BODY, "body"), (HALF_BODY_ASGI, "body")],
    ids=["slow headers", "half a body (direct lane)", "half a body (ASGI)"],
)
def test_a_request_that_does_not_arrive_in_time_gets_a_408_and_the_door(
    quick_deadlines, request_bytes, kind
):
    url, _, log = quick_deadlines
    with connect(url, timeout=20) as sock:
        sock.sendall(request_bytes)
        answer = read_all(sock)  # the worker closes the connection (old: waited forever)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b'"errorType":"RequestTimeout"' in answer
    procs.wait_for(
        lambda: f"request {kind} not received within 1.0s" in log.read_text(), 10, "the log line"
    )


def test_deadlines_apply_after_a_kept_alive_answer_and_to_silent_connections(quick_deadlines):
    url = quick_deadlines[0]
    with connect(url, timeout=20) as sock:
        sock.sendall(QUERY)
        assert sock.recv(65536).startswith(b"HTTP/1.1 404")
        sock.sendall(HALF_HEADERS)
        assert read_all(sock).startswith(b"HTTP/1.1 408 ")
    with connect(url, timeout=20) as sock:  # connects, says nothing: closed, quietly
        assert read_all(sock) == b""
    # whole requests are unaffected
    assert httpx.post(f"{url}/public/api/v1/nosuch/ep/predict", json={}).status_code == 404


def test_a_worker_refuses_connections_beyond_its_cap_with_a_503(tmp_path):
    with node(tmp_path, NODAL_API_MAX_CONNECTIONS="4") as (url, _, log):
        held = [connect(url) for _ in range(4)]
        for sock in held:  # each one accepted and answered (through the direct lane)
            sock.sendall(QUERY)
            assert sock.recv(65536).startswith(b"HTTP/1.1 404")
        with connect(url) as extra:
            extra.sendall(QUERY)
            answer = read_all(extra)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert b'"errorType":"TooManyConnections"' in answer
        held.pop().close()

        def a_slot_is_free() -> bool:
            with connect(url) as sock:
                sock.sendall(QUERY)
                return sock.recv(65536).startswith(b"HTTP/1.1 404")

        procs.wait_for(a_slot_is_free, 10, "the closed connection's slot")
        for sock in held:
            sock.close()
        assert "refused 1 connection(s)" in log.read_text()
