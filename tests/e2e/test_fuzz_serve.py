"""The fuzzer of tests/engine/apinode/test_fuzz.py against a real ``nodal serve`` process:
uvicorn with httptools, where queries take the direct lane (engine/apinode/http/protocol.py
answers them in its parser callbacks, lane.py routes them). No 5xx, errors in the node's
format, no echo; public and with API keys; then what the lane declines or parses itself
(chunked bodies, HTTP/1.0, Expect, pipelining, odd URLs), sent over a raw socket."""

from __future__ import annotations

import os
import socket
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

from engine.deployer import api_deployer, apikeys, apipackages
from engine.design import apidesigner
from engine.design import projects as design
from nodal_demo import demo
from tests.e2e import procs
from tests.engine.apinode import fuzzing
from tests.engine.apinode.fuzzing import GOOD, LOOKUP, PREFIX, SERVICE, check_answer
from tests.homes import copy_home, environ

HUNT = int(os.environ.get("NODAL_FUZZ_EXAMPLES", "0"))
FUZZ = hsettings(
    max_examples=HUNT or 120,
    deadline=None,
    derandomize=not HUNT,
    database=None,
    suppress_health_check=list(HealthCheck),
)
DEPLOYMENT = f"{SERVICE}-on-{demo.API_INFRA}"


@pytest.fixture(scope="module")
def served(demo_env, tmp_path_factory):
    """A real API node on a copy of the demo home (v1 and v2 with a lookup endpoint, split
    70/30); yields (url, store, key secret, log path)."""
    root = tmp_path_factory.mktemp("fuzzserve")
    settings, store = copy_home(demo_env.settings, root)
    project = design.open_project(settings, demo.PROJECT)
    apidesigner.save_lookup_endpoint(
        project, SERVICE, LOOKUP, "card_profiles", {"card": "card_id"},
        columns=["credit_score"], rows="latest_day", on_missing="error",
    )  # fmt: skip
    project = design.open_project(settings, demo.PROJECT)
    apipackages.create_package(settings.home, store, project, SERVICE, "v2", "lookup", "analyst")
    api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v1", 0.7), ("v2", 0.3)], "ops")
    _, secret = apikeys.create_key(store, SERVICE, "ops", infra_id=demo.API_INFRA)
    port, log = procs.free_port(), root / "api.log"
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5"}
    proc = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)], env, log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_for(
            lambda: (
                set(httpx.get(f"{url}/isAlive/").json()["generations"].get(SERVICE, []))
                == {"v1", "v2"}
            ),
            60,
            "the API node to load v1 and v2",
            log,
        )
        yield url, store, secret, log
    finally:
        procs.stop(proc)
    assert "internal error" not in log.read_text()


def _set_access(url: str, store, mode: str) -> None:
    api_deployer.set_access(store, DEPLOYMENT, mode, "ops")
    want = 401 if mode == "keys" else 200
    procs.wait_for(
        lambda: httpx.post(f"{url}{PREFIX}/{SERVICE}/{demo.ENDPOINT}/predict",
                           json={"features": GOOD}).status_code == want,
        30, f"the node to serve {mode}",
    )  # fmt: skip


@pytest.mark.parametrize("access", ["public", "keys"])
def test_the_direct_lane_never_answers_5xx_or_echoes(served, access):
    url, store, secret, _ = served
    _set_access(url, store, access)
    auths = fuzzing.Auth(secret).strategy()
    with httpx.Client(base_url=url, timeout=30) as client:

        @FUZZ
        @given(
            method=fuzzing.st.sampled_from(fuzzing.QUERY_METHODS).flatmap(
                lambda m: fuzzing.requests(m)
            ),
            auth=auths,
        )
        def run(method, auth):
            path, body, ctype = method
            headers = {}
            if ctype is not None:
                headers["content-type"] = ctype
            if auth is not None:
                headers["authorization"] = auth
            resp = client.post(path, content=body, headers=headers)
            check_answer(path, resp.status_code, resp.headers, resp.text)

        try:
            run()
        finally:
            _set_access(url, store, "public")


def _raw(url: str, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _statuses(answer: bytes) -> list[int]:
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.")]


BODY = b'{"features": {"amount": "qzx000001qzx"}}'
CSV = b"amount,ts\nqzx000002qzx,\xff\n"
P = f"{PREFIX}/{SERVICE}/{demo.ENDPOINT}/predict".encode()
RAW = {
    "chunked": b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n5\r\n{\"fea\r\n0\r\n\r\n",
    "http/1.0": b"POST " + P + b" HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "expect": b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "pipelined": (b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(BODY)
                  + BODY) * 3 + b"GET /isAlive/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "percent": b"POST " + PREFIX.encode() + b"/fraud%5Fdetection/%ff%00/pr%65dict?x=%ff#f "
    b"HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    "absolute": b"POST http://x" + P + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "bad length": b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Length: 99999999999999999999\r\n\r\n{}",
    "two types": b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Content-Type: text/csv\r\nContent-Type: application/json\r\nAuthorization: \xff\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "spaced key": b"POST " + P + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    b"Authorization:  Bearer   nk_a_b  \t\r\nContent-Length: 2\r\n\r\n{}",
    "csv": b"POST " + P.removesuffix(b"predict") + b"invocations HTTP/1.1\r\nHost: x\r\n"
    b"Connection: close\r\nContent-Type: text/csv\r\nContent-Length: %d\r\n\r\n" % len(CSV)
    + CSV,
}  # fmt: skip


@pytest.mark.parametrize("name", list(RAW))
def test_what_the_lane_declines_or_parses_itself_gets_no_5xx(served, name):
    url = served[0]
    answer = _raw(url, RAW[name])
    statuses = _statuses(answer)
    assert statuses, answer[:300]
    assert all(s < 500 for s in statuses), answer[:600]
    assert b"qzx" not in answer, answer[:600]


segments = fuzzing.st.sampled_from(
    [SERVICE, demo.ENDPOINT, LOOKUP, "", "%ff", "%00", "%2F", "%2e%2e", "a%20b", "%", "é"]
) | fuzzing.st.text(max_size=8).map(lambda t: urllib.parse.quote(t, safe=""))
header_values = fuzzing.st.binary(max_size=20).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
) | fuzzing.st.sampled_from([b"text/csv", b"application/json", b"Bearer ", b"Basic \xff"])


@FUZZ
@given(
    service=segments,
    endpoint=segments,
    method=fuzzing.st.sampled_from([*fuzzing.QUERY_METHODS, "predict/", "x"]),
    query=fuzzing.st.sampled_from(["", "?", "?a=%ff", "#x", "?a=1&a=2"]),
    ctype=header_values,
    auth=header_values,
    body=fuzzing.garbage,
)
def test_raw_requests_with_odd_urls_and_headers_get_no_5xx(
    served, service, endpoint, method, query, ctype, auth, body
):
    path = f"{PREFIX}/{service}/{endpoint}/{method}{query}".encode()
    request = (
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: " + ctype + b"\r\nAuthorization: " + auth + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    answer = _raw(served[0], request)
    statuses = _statuses(answer)
    assert statuses and all(s < 500 for s in statuses), answer[:600]
