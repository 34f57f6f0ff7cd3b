"""A property-based fuzzer over every route of the API node, in process (Litestar's
TestClient through the app ``nodal serve`` runs, QueryLane in front): no request gets a 5xx,
an error is in the node's format, and no answer echoes what was sent (tests/engine/apinode/
fuzzing.py says what is generated). The same over a real process: tests/e2e/test_fuzz_serve.py.

The service is public or needs a key, drawn per example; the bodies of each query method
are drawn with the others', CSV and garbage; each also under the other content types.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from litestar.testing import TestClient

from engine.apinode.http.app import create_app
from engine.deployer import api_deployer, apikeys, apipackages
from engine.design import apidesigner
from engine.design import projects as design
from nodal_demo import demo
from tests.engine.apinode import fuzzing
from tests.engine.apinode.fuzzing import GOOD, LOOKUP, PREFIX, SERVICE, check_answer
from tests.homes import copy_home

# NODAL_FUZZ_EXAMPLES=5000 hunts longer, on new random examples each run.
HUNT = int(os.environ.get("NODAL_FUZZ_EXAMPLES", "0"))
FUZZ = hsettings(
    max_examples=HUNT or 200,
    deadline=None,
    derandomize=not HUNT,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzzed(demo_env, tmp_path_factory):
    """A TestClient on a copy of the demo home: v1 and v2 (with a lookup endpoint) split
    70/30, an API key for the service; and the key's secret."""
    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("fuzz"))
    project = design.open_project(settings, demo.PROJECT)
    apidesigner.save_lookup_endpoint(
        project,
        SERVICE,
        LOOKUP,
        "card_profiles",
        {"card": "card_id"},
        columns=["credit_score"],
        rows="latest_day",
        on_missing="error",
    )
    project = design.open_project(settings, demo.PROJECT)
    apipackages.create_package(settings.home, store, project, SERVICE, "v2", "lookup", "analyst")
    api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v1", 0.7), ("v2", 0.3)], "ops")
    _, secret = apikeys.create_key(store, SERVICE, "ops", infra_id=demo.API_INFRA)
    app = create_app(settings, demo.API_INFRA)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app.state.node, secret


def _access(node, mode: str) -> None:
    """Serve every service public or with keys (no store round trip: the node's mapping)."""
    node.services = {
        name: dataclasses.replace(served, access_mode=mode)
        for name, served in node.services.items()
    }


def _post(client, path: str, body: bytes, ctype: str | None, auth: str | None):
    headers = {}
    if ctype is not None:
        headers["content-type"] = ctype
    if auth is not None:
        headers["authorization"] = auth
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("method", fuzzing.QUERY_METHODS)
def test_no_query_gets_a_5xx_or_an_echo(fuzzed, method):
    client, node, secret = fuzzed
    auths = fuzzing.Auth(secret).strategy()

    @FUZZ
    @given(
        request=fuzzing.requests(method),
        auth=auths,
        access=st.sampled_from(["public", "keys"]),
    )
    def run(request, auth, access):
        path, body, ctype = request
        _access(node, access)
        resp = _post(client, path, body, ctype, auth)
        check_answer(path, resp.status_code, resp.headers, resp.text)
        error_type = resp.json().get("errorType", "") if resp.status_code >= 400 else ""
        event(f"{resp.status_code} {error_type}")  # pytest --hypothesis-show-statistics

    try:
        run()
    finally:
        _access(node, "public")


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.sampled_from(
        ["/isAlive/", "/isAlive", "/metrics", "/ping", "/invocations", "/schema/openapi.json"]
        + [f"{PREFIX}/{SERVICE}/{demo.ENDPOINT}/{m}" for m in fuzzing.QUERY_METHODS]
        + [f"{PREFIX}/{SERVICE}/predict", f"{PREFIX}/{SERVICE}/{demo.ENDPOINT}/nope", "/"]
    ),
    body=fuzzing.garbage,
    ctype=fuzzing.content_types,
)
def test_every_route_and_method_answers_without_a_5xx(fuzzed, method, path, body, ctype):
    client, _, _ = fuzzed
    headers = {"content-type": ctype} if ctype is not None else {}
    resp = client.request(method, path, content=body, headers=headers)
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400 and method != "HEAD":
        assert "errorType" in resp.json()


def test_a_good_query_still_answers_on_every_route(fuzzed):
    """The fuzzer's requests reach the scoring code: the good record scores everywhere."""
    client, _, _ = fuzzed
    url = f"{PREFIX}/{SERVICE}/{demo.ENDPOINT}"
    assert client.post(f"{url}/predict", json={"features": GOOD}).status_code == 200
    multi = client.post(f"{url}/predict-multi", json={"items": [{"features": GOOD}]})
    assert multi.json()["results"][0]["ignored"] is False
    inv = client.post(f"{url}/invocations", json={"dataframe_records": [GOOD]})
    assert len(inv.json()["predictions"]) == 1
    force = {"dispatch": {"forcedGeneration": "v2"}}
    found = client.post(
        f"{PREFIX}/{SERVICE}/{LOOKUP}/lookup", json={"data": {"card": "C0000042"}, **force}
    )
    assert found.json()["results"][0]["found"] is True


def test_the_echo_check_sees_a_canary_and_lets_a_lookup_answer_its_record():
    with pytest.raises(AssertionError):
        check_answer("/x/predict", 400, {}, '{"errorType":"E","message":"qzx000042qzx",'
                     '"detailedMessage":""}')  # fmt: skip
    with pytest.raises(AssertionError):
        check_answer("/x/predict", 502, {}, "{}")
    check_answer(f"{PREFIX}/{SERVICE}/{LOOKUP}/lookup", 200, {}, '{"data":"qzx000042qzx"}')
