"""The online state of windowed features: the embedded SQLite store shared by processes of
one home, and Redis (a real redis-server on loopback) shared by replicas. Each records an
event once per (key, id), drops what is older than the longest window, and answers in one
step (Redis: one EVALSHA)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

from engine.apinode import online_state
from engine.apinode.online_state import RedisState, SqliteState, StateStoreUnavailable
from engine.core.settings import load_settings
from engine.project import windows
from tests.redis_server import redis_server

REPO = Path(__file__).resolve().parents[3]

H = 3_600_000_000  # one hour in µs
SPEC = windows.WindowSpec(
    "user_windows",
    "user_windows",
    "logins",
    "user_id",
    "at",
    "login_id",
    "day",
    (
        windows.WindowFeature("logins_1h", "count", None, "1h", H),
        windows.WindowFeature("seconds_2h", "sum", "seconds", "2h", 2 * H),
        windows.WindowFeature("new_device_2h", "first_seen", "device", "2h", 2 * H),
    ),
    "logins",
)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteState(tmp_path / "state.sqlite")
        return
    with redis_server(tmp_path / "redis") as url:
        yield RedisState(url)


def _login(i: int, minutes: float, user: int = 7, device: str = "d1") -> dict:
    at = datetime(2026, 3, 1, 12) + timedelta(minutes=minutes)
    return {"login_id": f"L{i}", "user_id": user, "at": at, "device": device, "seconds": 10.0 * i}


def test_an_event_counts_once_and_a_retry_gets_the_same_answer(store):
    live = windows.Windowed(SPEC, store)
    assert live.find(_login(1, 0))["logins_1h"] == 0
    second = live.find(_login(2, 10))
    assert second["logins_1h"] == 1 and second["new_device_2h"] is False
    assert live.find(_login(2, 10)) == second  # a retry: same answer, not counted again
    assert live.find(_login(3, 10, device="d2"))["logins_1h"] == 1  # same time: not counted
    third = live.find(_login(4, 20, device="d2"))
    assert third["logins_1h"] == 3 and third["seconds_2h"] == 10.0 + 20.0 + 30.0
    assert third["new_device_2h"] is False
    assert live.find(_login(4, 20, device="d2")) == third  # a repeated id: still once
    assert live.find(_login(5, 20, user=8))["logins_1h"] == 0  # another key


def test_events_older_than_the_longest_window_are_dropped(store):
    live = windows.Windowed(SPEC, store)
    for i in range(5):
        live.find(_login(i, i))
    later = _login(9, 3 * 60)  # three hours later: everything before is out of every window
    row = live.find(later)
    assert row["logins_1h"] == 0 and row["seconds_2h"] == 0.0
    kept = store.record(SPEC.space, windows.key_text(7), "L9", [0], 0, 2 * H)
    assert len(kept) == 1  # only the newest event is left


_WORKER = """
import sys
from datetime import datetime, timedelta
from engine.apinode.online_state import SqliteState
from engine.project import windows
path, worker, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
H = int(timedelta(hours=1).total_seconds() * 1_000_000)
store = SqliteState(path)
t0 = windows.epoch_us(datetime(2026, 3, 1))
for i in range(n):
    store.record("s", "k", f"{worker}-{i}", [t0 + i], t0 - H, H)
    store.record("s", "k", f"{worker}-{i}", [t0 + i], t0 - H, H)  # a retry
"""


def test_the_embedded_store_is_shared_by_the_processes_of_one_home(tmp_path):
    # Separate interpreters, as the API node's workers are (not multiprocessing's spawn, which
    # re-runs whatever script an earlier test left as __main__, e.g. a Streamlit page).
    path = str(tmp_path / "state.sqlite")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, path, str(w), "150"], cwd=REPO)
        for w in range(3)
    ]
    for p in procs:
        assert p.wait(120) == 0
    events = SqliteState(path).record("s", "k", "probe", [0], 0, H)
    assert len(events) == 3 * 150 + 1  # every worker's events, each once


def test_redis_answers_in_one_round_trip_and_expires_idle_keys(tmp_path):
    with redis_server(tmp_path / "redis") as url:
        store = RedisState(url)
        live = windows.Windowed(SPEC, store)
        client = redis.Redis.from_url(url)
        live.find(_login(0, 0))  # the first call loads the script (NOSCRIPT, SCRIPT LOAD)
        client.config_resetstat()
        for i in range(1, 6):
            live.find(_login(i, i))
        stats = client.info("commandstats")
        calls = {k: v["calls"] for k, v in stats.items()}
        assert calls.get("cmdstat_evalsha") == 5 and calls.get("cmdstat_hgetall") == 5
        keys = client.keys("nodal:win:*")
        assert len(keys) == 1 and 0 < client.pttl(keys[0]) <= 2 * 3600 * 1000


def test_a_store_that_cannot_be_reached_is_a_503_not_a_crash(tmp_path):
    with redis_server(tmp_path / "redis") as url:
        pass  # stopped: nothing listens there any more
    live = windows.Windowed(SPEC, RedisState(url))
    with pytest.raises(StateStoreUnavailable) as err:
        live.find(_login(1, 0))
    assert err.value.status == 503 and "unavailable" in err.value.message


def test_the_setting_chooses_the_store(tmp_path):
    embedded = online_state.open_state(load_settings(environ={}), tmp_path)
    assert isinstance(embedded, SqliteState) and embedded.path.parent == tmp_path
    remote = load_settings(environ={"NODAL_ONLINE_STORE_URL": "redis://127.0.0.1:1/0"})
    assert isinstance(online_state.open_state(remote, tmp_path), RedisState)
    assert "127.0.0.1:1" not in repr(remote)  # a URL may hold a password: never shown
    with pytest.raises(online_state.OnlineStoreError, match="NODAL_ONLINE_STORE_URL"):
        online_state.open_state(load_settings(environ={"NODAL_ONLINE_STORE_URL": "x"}), tmp_path)


def test_a_store_remembers_which_snapshot_it_replayed(store):
    assert not store.bootstrap_done("s", "sha1")
    assert store.claim_bootstrap("s", "sha1", 600)
    assert not store.claim_bootstrap("s", "sha1", 600)  # another worker: it is claimed
    assert not store.bootstrap_done("s", "sha1")  # claimed is not done
    store.finish_bootstrap("s", "sha1", 600)
    assert store.bootstrap_done("s", "sha1") and not store.bootstrap_done("s", "sha2")
    assert not store.claim_bootstrap("s", "sha1", 600)


def test_a_bulk_record_counts_each_key_and_id_once_and_never_brings_back_a_trimmed_event(store):
    t0 = windows.epoch_us(datetime(2026, 3, 1))
    live = [("k1", "live", [t0 + 5 * H])]  # recorded live, 5 h after the bulk's events
    store.record("s", *live[0], t0 + 3 * H, 2 * H)
    bulk = [("k1", f"e{i}", [t0 + i * 60_000_000, float(i), "d"]) for i in range(10)]
    bulk += [("k2", f"e{i}", [t0 + i * 60_000_000, None, 'é"q"']) for i in range(10)]
    bulk += [("k2", "e3", [t0, 99.0, "dup"])]  # a repeated id of the same key
    assert store.record_many("s", online_state.EventColumns.of(bulk), 2 * H, 2 * H) == 10
    assert store.record_many("s", online_state.EventColumns.of(bulk), 2 * H, 2 * H) == 0
    assert store.key_events("s") == {"k1": 1, "k2": 10}
    events = store.record("s", "k2", "probe", [t0 + H], t0 - H, 2 * H)
    assert sorted(e[0] for e in events) == sorted(
        [t0 + i * 60_000_000 for i in range(10)] + [t0 + H]
    )
    assert [e for e in events if e[0] == t0 + 3 * 60_000_000] == [[t0 + 180_000_000, None, 'é"q"']]
