"""The API node as applications and ops meet it: real `nodal serve` processes, the official
Dataiku client, a version switch under load, and two replicas behind nginx losing one."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import dataikuapi
import httpx
import pytest
from dataikuapi.utils import DataikuException

from engine.apinode import querylog
from engine.deployer import api_deployer, apikeys, apipackages
from engine.design import apidesigner
from engine.design import projects as design
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

SERVICE, ENDPOINT, LOOKUP = demo.SERVICE, demo.ENDPOINT, "card_profile"


def _record(i: int, card: str = "C0000042") -> dict:
    return {
        "transaction_id": f"T-load-{i}",
        "ts": "2026-11-10T02:13:00",
        "card_id": card,
        "merchant_id": "M000017",
        "merchant_category": "electronics",
        "amount": 100.0 + i % 1000,
        "channel": "online",
        "card_present": False,
        "merchant_latitude": 25.76,
        "merchant_longitude": -80.19,
    }


@pytest.fixture(scope="module")
def api_home(demo_env, tmp_path_factory):
    """A copy of the demo home whose service has a lookup endpoint and test queries, packaged
    as v2 and v3; v2 is deployed on the API infrastructure."""
    root = tmp_path_factory.mktemp("apinode")
    settings, store = copy_home(demo_env.settings, root)
    project = design.open_project(settings, demo.PROJECT)
    apidesigner.save_lookup_endpoint(
        project,
        SERVICE,
        LOOKUP,
        "card_profiles",
        "card_id",
        columns=["credit_score", "card_txn_rate_30d"],
        rows="latest_day",
    )
    queries = apidesigner.queries_from_dataset(project, SERVICE, ENDPOINT, "transactions", 3)
    apidesigner.add_test_queries(project, SERVICE, ENDPOINT, queries)
    apidesigner.add_test_queries(
        project, SERVICE, LOOKUP, [{"name": "known card", "data": {"card_id": "C0000042"}}]
    )
    project = design.open_project(settings, demo.PROJECT)
    for version in ("v2", "v3"):
        apipackages.create_package(
            settings.home, store, project, SERVICE, version, f"{version} notes", "analyst"
        )
    api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v2", 1.0)], "ops")
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5"}
    return settings, store, env, root


def _serve(env: dict, log: Path, port: int) -> subprocess.Popen:
    proc = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)], env, log
    )
    procs.wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/isAlive/").json()["services"],
        60,
        "the API node to load its packages",
        log,
    )
    return proc


@pytest.fixture(scope="module")
def node(api_home):
    settings, store, env, root = api_home
    port = procs.free_port()
    proc = _serve(env, root / "api.log", port)
    try:
        yield settings, store, f"http://127.0.0.1:{port}", root / "api.log"
    finally:
        procs.stop(proc)


def _queries(settings, where: str = "") -> list[dict]:
    return list(querylog.read_queries(settings.home, demo.API_INFRA, where))


def test_the_official_client_drives_every_endpoint(node):
    settings, store, url, _ = node
    client = dataikuapi.APINodeClient(url, SERVICE)
    one = client.predict_record(ENDPOINT, _record(1), context={"channel": "test"})
    assert one["apiContext"] == {
        "serviceId": SERVICE,
        "endpointId": ENDPOINT,
        "serviceGeneration": "v2",
    }
    p = one["result"]["probas"]["1"]
    assert 0 < p < 1 and one["result"]["ignored"] is False
    assert one["result"]["prediction"] in ("0", "1") and one["timing"]["total"] > 0

    explained = client.predict_record(
        ENDPOINT, _record(1), with_explanations=True, n_explanations=3
    )["result"]
    assert explained["probas"]["1"] == p
    assert len(explained["explanations"]) == 3
    assert set(explained["explanations"]) <= set(
        ["amount", "hour_of_day", "distance_km", "amount_ratio", "card_txn_prev_day"]
        + ["card_txn_prev_7d", "card_txn_rate_30d", "credit_score", "account_age_days"]
        + ["card_present", "merchant_category", "channel"]
        + ["card_txn_1h", "card_amount_1h", "card_txn_24h", "card_amount_24h"]
        + ["card_minutes_since_last", "card_new_merchant_7d"]
    )

    multi = client.predict_records(
        ENDPOINT, [{"features": _record(1)}, {"features": {"card_id": "C1"}}]
    )["results"]
    assert multi[0]["probas"]["1"] == p
    assert multi[1]["ignored"] is True and "missing feature" in multi[1]["ignoreReason"]

    found = client.lookup_record(LOOKUP, {"card_id": "C0000042"})
    assert found["found"] is True and found["data"]["card_id"] == "C0000042"
    assert isinstance(found["data"]["credit_score"], int)
    many = client.lookup_records(
        LOOKUP, [{"data": {"card_id": "C0000042"}}, {"data": {"card_id": "nope"}}]
    )
    assert [r["found"] for r in many["results"]] == [True, False]

    with pytest.raises(DataikuException, match="InvalidRecord: missing feature.*amount"):
        client.predict_record(ENDPOINT, {"card_id": "C0000001", "ts": "2026-10-21T10:00:00"})
    with pytest.raises(DataikuException, match="UnknownGeneration: .*'v9'"):
        client.predict_record(ENDPOINT, _record(1), forced_generation="v9")
    with pytest.raises(DataikuException, match="WrongEndpointType"):
        client.lookup_record(ENDPOINT, {"card_id": "C0000042"})
    with pytest.raises(DataikuException, match="UnknownEndpoint"):
        client.predict_record("nope", _record(1))
    with pytest.raises(DataikuException, match="UnknownService"):
        dataikuapi.APINodeClient(url, "nope").predict_record(ENDPOINT, _record(1))

    # Everything above is in the audit log, with its generation, status and error type.
    logged = _queries(
        settings, "WHERE method IN ('predict', 'predict-multi', 'lookup', 'lookup-multi')"
    )
    by_method = {(q["method"], q["status"], q["error_type"]) for q in logged}
    assert {
        ("predict", 200, None),
        ("predict-multi", 200, None),
        ("lookup", 200, None),
    } <= by_method
    assert ("lookup-multi", 200, None) in by_method
    assert ("predict", 400, "InvalidRecord") in by_method
    assert ("predict", 404, "UnknownGeneration") in by_method
    ok = [q for q in logged if q["method"] == "predict" and q["status"] == 200]
    assert all(q["generation"] == "v2" for q in ok)
    assert any('"channel":"test"' in (q["context"] or "") for q in ok)


def test_same_transaction_same_probability_through_every_route(node):
    _, _, url, _ = node
    rec = _record(7)
    base = f"{url}/public/api/v1/{SERVICE}/{ENDPOINT}"
    single = httpx.post(f"{base}/predict", json={"features": rec}).json()["result"]["probas"]["1"]
    multi = httpx.post(f"{base}/predict-multi", json={"items": [{"features": rec}]}).json()
    split = {"dataframe_split": {"columns": list(rec), "data": [list(rec.values())]}}
    answers = [
        httpx.post(f"{base}/invocations", json=split).json(),
        httpx.post(f"{url}/invocations", json={"dataframe_records": [rec]}).json(),
        httpx.post(f"{url}/invocations", json={"inputs": {k: [v] for k, v in rec.items()}}).json(),
    ]
    assert multi["results"][0]["probas"]["1"] == single
    assert [a["predictions"] for a in answers] == [[single]] * 3
    bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"amount": 3}]})
    assert bad.status_code == 400 and bad.json()["error_code"] == "BAD_REQUEST"
    assert "record 0: missing feature" in bad.json()["message"]


def test_api_keys_basic_and_bearer_and_revocation(node):
    settings, store, url, _ = node
    dep_id = f"{SERVICE}-on-{demo.API_INFRA}"
    key, secret = apikeys.create_key(store, SERVICE, "ops", label="bank app")
    api_deployer.set_access(store, dep_id, "keys", "ops")
    try:
        procs.wait_for(
            lambda: (
                httpx.post(
                    f"{url}/public/api/v1/{SERVICE}/{ENDPOINT}/predict",
                    json={"features": _record(1)},
                ).status_code
                == 401
            ),
            30,
            "the node to require keys",
        )
        with pytest.raises(DataikuException, match="Unauthorized: this service needs an API key"):
            dataikuapi.APINodeClient(url, SERVICE).predict_record(ENDPOINT, _record(1))
        with pytest.raises(DataikuException, match="Unauthorized: this API key is not valid"):
            dataikuapi.APINodeClient(url, SERVICE, api_key=secret + "x").predict_record(
                ENDPOINT, _record(1)
            )
        basic = dataikuapi.APINodeClient(url, SERVICE, api_key=secret)
        assert basic.predict_record(ENDPOINT, _record(1))["result"]["ignored"] is False
        bearer = dataikuapi.APINodeClient(url, SERVICE, bearer_token=secret)
        assert bearer.lookup_record(LOOKUP, {"card_id": "C0000042"})["found"]
        apikeys.revoke_key(store, key.key_id, "ops")
        procs.wait_for(
            lambda: (
                httpx.post(
                    f"{url}/public/api/v1/{SERVICE}/{ENDPOINT}/predict",
                    json={"features": _record(1)},
                    auth=(secret, ""),
                ).status_code
                == 401
            ),
            30,
            "the node to refuse the revoked key",
        )
    finally:
        api_deployer.set_access(store, dep_id, "public", "ops")
    procs.wait_for(
        lambda: (
            httpx.post(
                f"{url}/public/api/v1/{SERVICE}/{ENDPOINT}/predict", json={"features": _record(1)}
            ).status_code
            == 200
        ),
        30,
        "the service to be public again",
    )


def test_metrics_count_requests_by_generation(node):
    _, _, url, _ = node
    text = httpx.get(f"{url}/metrics").text
    assert "# TYPE nodal_api_request_duration_seconds histogram" in text
    line = next(
        ln
        for ln in text.splitlines()
        if ln.startswith("nodal_api_requests_total")
        and 'generation="v2",method="predict",status="200"' in ln
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert 'nodal_api_errors_total{service="fraud_detection"' in text


def _hammer(url: str, stop: threading.Event, out: list, prefix: str) -> None:
    """Send predicts in a loop; record (transaction id, status, generation) of each."""
    with httpx.Client(timeout=30) as client:
        i = 0
        while not stop.is_set():
            rec = _record(i)
            rec["transaction_id"] = f"{prefix}-{i}"
            try:
                r = client.post(url, json={"features": rec})
                gen = (
                    r.json().get("apiContext", {}).get("serviceGeneration")
                    if r.status_code == 200
                    else None
                )
                out.append((rec["transaction_id"], r.status_code, gen))
            except httpx.HTTPError as exc:
                out.append((rec["transaction_id"], type(exc).__name__, None))
            i += 1


def test_switching_versions_under_load_fails_no_request(node):
    settings, store, url, _ = node
    target = f"{url}/public/api/v1/{SERVICE}/{ENDPOINT}/predict"
    stop, results, threads = threading.Event(), [], []
    for t in range(4):
        th = threading.Thread(target=_hammer, args=(target, stop, results, f"switch{t}"))
        th.start()
        threads.append(th)
    try:
        time.sleep(1.5)
        api_deployer.switch_to_newest(store, SERVICE, demo.API_INFRA, "ops")  # v2 → v3
        procs.wait_for(lambda: any(g == "v3" for _, _, g in results[-20:]), 30, "answers from v3")
        time.sleep(1.0)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    gens = [g for _, _, g in results]
    assert {"v2", "v3"} <= set(gens)
    logged = _queries(
        settings, "WHERE json_extract_string(features, '$.transaction_id') LIKE 'switch%'"
    )
    assert len(logged) == len(results)
    in_order = [q["generation"] for q in logged]  # the node's order (one worker)
    assert set(in_order) == {"v2", "v3"}
    # One atomic swap: once v3 answered, v2 never answered again.
    assert "v2" not in in_order[in_order.index("v3") :]


def test_two_replicas_behind_nginx_survive_a_sigkill(api_home, tmp_path):
    settings, store, env, _ = api_home
    a, b, port = procs.free_port(), procs.free_port(), procs.free_port()
    rep_a = _serve(env, tmp_path / "a.log", a)
    rep_b = _serve(env, tmp_path / "b.log", b)
    conf = procs.balancer_conf(tmp_path, [f"127.0.0.1:{a}", f"127.0.0.1:{b}"], f"127.0.0.1:{port}")
    nginx = subprocess.Popen(
        [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp_path), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "nginx.out", "wb"),  # noqa: SIM115 - closed with the process
        start_new_session=True,
    )
    try:
        procs.wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/isAlive/").status_code == 200,
            20,
            "nginx",
            tmp_path / "nginx-error.log",
        )
        target = f"http://127.0.0.1:{port}/public/api/v1/{SERVICE}/{ENDPOINT}/predict"
        stop, results, threads = threading.Event(), [], []
        for t in range(4):
            th = threading.Thread(target=_hammer, args=(target, stop, results, f"ha{t}"))
            th.start()
            threads.append(th)
        time.sleep(1.5)
        before_kill = len(results)
        procs.stop(rep_a, signal.SIGKILL)
        time.sleep(2.0)
        stop.set()
        for th in threads:
            th.join(30)
    finally:
        stop_all = [rep_a, rep_b]
        for p in stop_all:
            procs.stop(p)
        procs.stop(nginx)
    assert before_kill > 0 and len(results) > before_kill
    failed = [r for r in results if r[1] != 200]
    assert not failed, failed[:5]
    answered = {tid for tid, status, _ in results if status == 200}
    logged = {
        q["transaction_id"]
        for q in ds.query_df(
            "SELECT json_extract_string(features, '$.transaction_id') AS transaction_id, worker "
            f"FROM {querylog.scan_sql(settings.home, demo.API_INFRA)} WHERE status = 200"
        ).to_dict("records")
    }
    assert answered <= logged, f"{len(answered - logged)} answered queries missing from the log"
    workers = ds.query_df(
        "SELECT DISTINCT worker FROM "
        + querylog.scan_sql(settings.home, demo.API_INFRA)
        + " WHERE json_extract_string(features, '$.transaction_id') LIKE 'ha%'"
    )
    assert len(workers) == 2  # both replicas answered, including the one killed
