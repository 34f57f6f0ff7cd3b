"""The parity guard of windowed features, end to end: a day's transactions replayed in time
order through two real `nodal serve` replicas that share one real redis-server give the
probabilities (and every feature's TreeSHAP contribution) batch gives for that day, to 1e-9,
although one replica is SIGKILLed after recording a transaction it never answered and the
request is retried on the other; every event is in the shared state exactly once."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from collections import defaultdict

import httpx
import pytest
import redis

from engine.apinode.online_state import RedisState
from engine.deployer import api_deployer, apipackages
from engine.design import projects as design
from engine.models.saved import SavedModel
from engine.project import windows
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ
from tests.redis_server import redis_server
from tests.window_state import as_request

URL = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"


def _rows(frame) -> list[dict]:
    rows = frame.to_dict("records")
    for row in rows:
        row["ts"] = row["ts"].to_pydatetime()
    return rows


def _serve(env: dict, log, port: int):
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


def _ask(client: httpx.Client, base: str, rec: dict) -> dict:
    body = {"features": rec, "explanations": {"enabled": True, "nExplanations": 100}}
    answer = client.post(base + URL, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def _send_unanswered(port: int, rec: dict) -> socket.socket:
    """Send a predict request and never read the answer (what a balancer loses when the
    replica dies after answering into a dead connection)."""
    body = json.dumps({"features": rec}).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {URL} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


@pytest.fixture(scope="module")
def day_and_batch(demo_env, tmp_path_factory):
    """A copy of the demo home; the newest day's transactions in time order, with batch's
    probabilities and per-feature contributions; the events of the week before."""
    root = tmp_path_factory.mktemp("window_parity")
    settings, store = copy_home(demo_env.settings, root)
    project = design.open_project(settings, demo.PROJECT)
    spec = windows.declared(project)["card_windows"]
    tx = project.dataset("transactions")
    day = tx.partitions()[-1]
    # The card profiles the API serves are those of its newest day: as of the day replayed
    # (the profile of the day after, which counts that day's transactions, is set aside).
    profiles = project.dataset("card_profiles")
    for later in [p for p in profiles.partitions() if p > day]:
        shutil.rmtree(profiles.partition_path(later))
    apipackages.create_package(settings.home, store, project, demo.SERVICE, "vw", "", "test")
    api_deployer.deploy(store, demo.SERVICE, demo.API_INFRA, [("vw", 1.0)], "ops")
    before = [p for p in windows.needed_partitions(spec, tx, [day]) if p != day]
    order = "ORDER BY ts, transaction_id"
    history = _rows(ds.query_df(f"SELECT * FROM t {order}", {"t": (tx, before)}))
    rows = _rows(ds.query_df(f"SELECT * FROM t {order}", {"t": (tx, [day])}))
    features = ds.query_df(
        "SELECT f.* FROM f JOIN t USING (transaction_id) ORDER BY t.ts, t.transaction_id",
        {"f": (project.dataset("features"), [day]), "t": (tx, [day])},
    )
    model = SavedModel.load(project.active_model_dir("fraud_model"))
    matrix = model.encode(features)
    probas = model.booster.predict(matrix, num_threads=1)
    contribs = model.booster.predict(matrix, pred_contrib=True, num_threads=1)
    assert list(features["transaction_id"]) == [r["transaction_id"] for r in rows]
    # The windows really move during the day: a card's earlier transactions within the hour
    # and the day count, and some merchants are new to the card.
    assert features["card_txn_1h"].max() > 0 and features["card_txn_24h"].max() > 1
    assert 0 < features["card_new_merchant_7d"].mean() < 1
    batch = [
        (float(p), dict(zip(model.feature_names, map(float, c), strict=False)))
        for p, c in zip(probas, contribs, strict=True)
    ]
    return settings, root, spec, history, rows, batch


def test_two_replicas_sharing_redis_reproduce_batch_through_a_crash(day_and_batch):
    settings, root, spec, history, rows, batch = day_and_batch
    assert len(rows) > 1000
    with redis_server(root / "redis") as url:
        # The week before the day: the state a running deployment would hold at its start.
        state = RedisState(url)
        live = windows.Windowed(spec, state)
        for row in history:
            live.find(as_request(row) | {"ts": row["ts"]})  # typed as the node types it
        env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5", "NODAL_ONLINE_STORE_URL": url}
        ports = [procs.free_port(), procs.free_port()]
        replicas = [_serve(env, root / f"api{i}.log", p) for i, p in enumerate(ports)]
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        killed_at = len(rows) // 2
        answers: list[dict] = []
        try:
            with httpx.Client(timeout=10) as client:
                for i, row in enumerate(rows):
                    rec = as_request(row)
                    if i == killed_at:
                        sock = _send_unanswered(ports[0], rec)
                        key = f"nodal:win:{spec.space}:{windows.key_text(rec['card_id'])}"
                        procs.wait_for(
                            lambda k=key, r=rec: any(
                                f.decode().startswith(r["transaction_id"])
                                for f in redis.Redis.from_url(url).hkeys(k)
                            ),
                            10,
                            "the first replica to record the transaction",
                        )
                        procs.stop(replicas[0], signal.SIGKILL)  # recorded, never answered
                        sock.close()
                    # Round robin while both live, then the survivor (the balancer's retry).
                    base = bases[i % 2] if i < killed_at else bases[1]
                    answers.append(_ask(client, base, rec))
        finally:
            for proc in replicas:
                procs.stop(proc)
        assert len(answers) == len(rows)
        for i, (result, (proba, contrib)) in enumerate(zip(answers, batch, strict=True)):
            got = result["probas"]["1"]
            assert got == pytest.approx(proba, rel=1e-9, abs=1e-12), (i, rows[i], got, proba)
            for name, value in result["explanations"].items():
                assert value == pytest.approx(contrib[name], rel=1e-9, abs=1e-9), (i, name)
        # Every event is in the shared state exactly once: each card holds its events of the
        # longest window before its newest one, no more (no double count), no fewer.
        times: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for row in history + rows:
            times[row["card_id"]].append((windows.epoch_us(row["ts"]), row["transaction_id"]))
        client = redis.Redis.from_url(url)
        for card, events in times.items():
            newest = max(t for t, _ in events)
            expected = {i for t, i in events if t >= newest - spec.longest_us}
            key = f"nodal:win:{spec.space}:{windows.key_text(card)}"
            assert {k.decode() for k in client.hkeys(key)} == expected, card
            assert client.hlen(key) == len(expected)
