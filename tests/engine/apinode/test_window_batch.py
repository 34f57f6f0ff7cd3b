"""A ``predict-multi`` records its windowed events in one step (``record_batch``: one SQLite
transaction, one Redis pipeline) and answers exactly what the same records sent one by one,
in the batch's order, answer: the features and the probabilities, on both stores. Events
of the batch at earlier times count for later ones, same-time ones never count each other,
a repeated id counts once. Also: the embedded store's expired events are swept by a thread
of its own, not by the requests."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from engine.apinode import online_state
from engine.apinode.node import ApiNode
from engine.apinode.online_state import RedisState, SqliteState
from engine.deployer import api_deployer
from engine.project import windows
from nodal_demo import demo
from tests.homes import copy_home
from tests.redis_server import redis_server

BASE = {
    "transaction_id": "T1",
    "ts": "2026-11-10T02:13:00",
    "card_id": "C0000042",
    "merchant_id": "M000017",
    "merchant_category": "electronics",
    "amount": 1299.99,
    "channel": "online",
    "card_present": False,
    "merchant_latitude": 25.76,
    "merchant_longitude": -80.19,
}
CARDS = ["C0000042", "C0000007", "C0000013", "C9999999"]  # the last one has no profile
MERCHANTS = ["M000017", "M000003", "M000099"]


@pytest.fixture(scope="module")
def endpoint(demo_env, tmp_path_factory):
    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("batch"))
    dep = api_deployer.list_api_deployments(store, demo.API_INFRA)[0]
    loaded = ApiNode(settings, store, demo.API_INFRA).load_version(demo.SERVICE, dep.primary)
    ep = loaded.endpoints[demo.ENDPOINT]
    assert any(isinstance(t, windows.Windowed) for t in ep.enrichments)
    return ep


def _records(n: int, start: datetime, prefix: str) -> list[dict]:
    """Transactions of a few cards, mostly in time order, with same-time pairs, repeated
    ids, a late one and an invalid one."""
    out = []
    for i in range(n):
        at = start + timedelta(minutes=37 * (i // 2))  # two records at each time
        out.append(
            {
                **BASE,
                "transaction_id": f"{prefix}{i}",
                "ts": at.isoformat(),
                "card_id": CARDS[i % len(CARDS)] if i % 5 else CARDS[0],
                "merchant_id": MERCHANTS[i % 3],
                "amount": 10.0 + 7.5 * i,
            }
        )
    out.append({**out[3]})  # a repeated id (same event): counts once
    out.append({**out[8], "amount": 1.0})  # a repeated id with other values: the first counts
    out.append({**out[-3], "transaction_id": f"{prefix}late", "ts": out[-10]["ts"]})  # late
    out.append({**BASE, "transaction_id": f"{prefix}bad", "amount": "-5"})  # refused
    out.append(out[5])
    return out


def _stores(kind, tmp_path):
    if kind == "sqlite":
        yield SqliteState(tmp_path / "a.sqlite"), SqliteState(tmp_path / "b.sqlite")
        return
    with (
        redis_server(tmp_path / "ra") as a,
        redis_server(tmp_path / "rb") as b,
    ):
        yield RedisState(a), RedisState(b)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_batch_answers_what_the_records_one_by_one_answer(endpoint, kind, tmp_path):
    ep = endpoint
    for batched, single in _stores(kind, tmp_path):
        # Some history first (the same in both stores), including an id the batch repeats.
        before = [r for r in _records(24, datetime(2026, 11, 8), "H") if r["amount"] != "-5"]
        for state in (batched, single):
            ep.use_state(state)
            for rec in before:
                ep.predict(rec)
        batch = _records(60, datetime(2026, 11, 9, 20), "B") + [before[-2], before[0]]

        ep.use_state(batched)
        many = ep._features_many(batch)
        ep.use_state(single)
        one = [ep._try(r) for r in batch]
        assert [isinstance(x, Exception) for x in many] == [isinstance(x, Exception) for x in one]
        assert sum(isinstance(x, Exception) for x in one) == 1
        for a, b in zip(many, one, strict=True):
            if isinstance(a, Exception):
                assert str(a) == str(b)
            else:
                assert a == b  # every feature, None and NaN-free exact
        # The windows did see the batch: counts grow within it.
        counts = [f["card_txn_24h"] for f in one if isinstance(f, dict)]
        assert max(counts) >= 5

        # Through predict-multi: the same probabilities as predict one by one (a new batch).
        nxt = _records(40, datetime(2026, 11, 10, 20), "N")
        ep.use_state(batched)
        multi = ep.predict_multi([{"features": r} for r in nxt])
        ep.use_state(single)
        for rec, res in zip(nxt, multi, strict=True):
            try:
                want = ep.predict(rec)
            except Exception as exc:  # noqa: BLE001 - the refused record
                assert res["ignored"] and res["ignoreReason"] == str(exc)
                continue
            assert res["probas"] == want["probas"]
        assert batched.key_events(ep_space(ep)) == single.key_events(ep_space(ep))


def ep_space(ep) -> str:
    return next(t for t in ep.enrichments if isinstance(t, windows.Windowed)).spec.space


H = 3_600_000_000
SPEC = windows.WindowSpec(
    "w",
    "w",
    "logins",
    "user_id",
    "at",
    "login_id",
    None,
    (
        windows.WindowFeature("n_1h", "count", None, "1h", H),
        windows.WindowFeature("new_2h", "first_seen", "device", "2h", 2 * H),
    ),
    "p",
)


def _login(i, minutes, user=1, device="d"):
    at = datetime(2026, 3, 1, 12) + timedelta(minutes=minutes)
    return {"login_id": f"L{i}", "user_id": user, "at": at, "device": device}


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_an_older_record_of_a_batch_still_sees_its_window(kind, tmp_path):
    """One by one, a newer record first would trim what an older one after it needs; in a
    batch each key is trimmed only to the batch's oldest window start."""

    def run(state):
        live = windows.Windowed(SPEC, state)
        live.find_many([_login(0, 0), _login(1, 30), _login(2, 40, device="e")])
        # The newer first (3 h later), then one 50 min after the history.
        return live.find_many([_login(3, 180), _login(4, 50), _login(4, 50)])

    if kind == "memory":
        rows = run(windows.MemoryState())
    elif kind == "sqlite":
        rows = run(SqliteState(tmp_path / "s.sqlite"))
    else:
        with redis_server(tmp_path / "r") as url:
            rows = run(RedisState(url))
    assert [r["n_1h"] for r in rows] == [0, 3, 3]
    assert [r["new_2h"] for r in rows] == [True, False, False]


def test_expired_events_are_swept_by_a_thread_not_by_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(online_state, "SWEEP_SECONDS", 0.05)
    state = SqliteState(tmp_path / "state.sqlite")
    t0 = windows.epoch_us(datetime(2026, 3, 1))
    state.record("s", "old", "e1", [t0], t0 - H, 1)  # a TTL of 1 µs: expired at once
    state.record("s", "kept", "e2", [t0], t0 - H, 3_600_000_000)
    deadline = time.monotonic() + 10
    while "old" in state.key_events("s") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.key_events("s") == {"kept": 1}
    assert state.swept >= 1
    con = state._connect()
    indexes = con.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    assert ("window_events_expiry",) not in indexes


def test_a_file_of_an_older_nodal_loses_its_expiry_index_and_a_request_never_sweeps(
    tmp_path, monkeypatch
):
    import sqlite3

    path = tmp_path / "state.sqlite"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE window_events (space TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, "
        "t INTEGER NOT NULL, event TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (space, "
        "key, id)) WITHOUT ROWID"
    )
    con.execute("CREATE INDEX window_events_expiry ON window_events (expires)")
    con.execute("INSERT INTO window_events VALUES ('s', 'old', 'e0', 0, '[0]', 1.0)")
    con.commit()
    con.close()
    monkeypatch.setattr(online_state, "_start_sweeper", lambda state: None)  # no thread
    state = SqliteState(path)
    for i in range(3):
        state.record("s", "k", f"e{i}", [i], 0, H)
    assert state.key_events("s") == {"old": 1, "k": 3}  # requests never sweep
    names = state._connect().execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    assert ("window_events_expiry",) not in names.fetchall()
    assert state.sweep() == 1 and state.key_events("s") == {"k": 3}
