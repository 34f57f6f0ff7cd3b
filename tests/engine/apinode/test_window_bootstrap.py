"""Bootstrapping the online state from the batch's published events, on a project that is
not the fraud example (user logins): after replaying the window state published through
one day, real time answers the next day's events exactly as batch does, in the embedded
store and in Redis; events the API recorded before the bootstrap count once; a second
bootstrap of the same version changes nothing."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.apinode import online_state, window_bootstrap
from engine.deployer import enrichments
from engine.project import flow, windows
from engine.storage import datasets as ds
from engine.storage.control import open_store
from engine.storage.objects import LocalObjectStore
from tests.engine.project.test_windows import _events, _project, _same
from tests.redis_server import redis_server

THROUGH, NEXT = "2026-03-03", "2026-03-04"


@pytest.fixture(params=["sqlite", "redis"])
def state(request, tmp_path):
    if request.param == "sqlite":
        yield online_state.SqliteState(tmp_path / "state.sqlite")
        return
    with redis_server(tmp_path / "redis") as url:
        yield online_state.RedisState(url)


@pytest.fixture
def published(tmp_path):
    project = _project(tmp_path)
    events = _events(tmp_path)
    flow.build(project, "user_windows")
    objects = LocalObjectStore(tmp_path / "home")
    control = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    pub = enrichments.publish_window_state(
        objects, control, project, "user_windows", THROUGH, node="automation", actor="test"
    )
    spec = windows.declared(project)["user_windows"]
    batch = {
        r["login_id"]: r
        for r in ds.query_df(
            "SELECT * FROM w", {"w": (project.dataset("user_windows"), [NEXT])}
        ).to_dict("records")
    }
    return project, spec, objects, pub, sorted(events, key=lambda e: e["at"]), batch


def _agrees(spec, row: dict, batch_row: dict) -> None:
    for f in spec.features:
        b = batch_row[f.name]
        b = None if b is None or (isinstance(b, float) and np.isnan(b)) else b
        b = b.item() if hasattr(b, "item") else b
        assert _same(row[f.name], b), (f.name, row, b)


def test_the_snapshot_holds_the_longest_window_before_the_end_of_the_day(published):
    project, spec, objects, pub, events, _ = published
    assert pub.rows_selection == enrichments.WINDOW_EVENTS and pub.as_of == THROUGH
    table = pq.read_table(io.BytesIO(enrichments.verified_bytes(objects, pub)))
    assert table.column_names == ["user_id", "at", "login_id", "seconds", "device"]
    expected = {
        e["login_id"]
        for e in events
        if "2026-03-02" <= e["at"].isoformat() < "2026-03-04"  # 2 days (the longest window)
    }
    assert set(table.column("login_id").to_pylist()) == expected and pub.n_rows == len(expected)
    assert table.schema.metadata[enrichments.META_SPACE].decode() == spec.space


def test_after_a_bootstrap_the_next_day_answers_like_batch_and_counts_each_event_once(
    published, state, monkeypatch
):
    project, spec, objects, pub, events, batch = published
    monkeypatch.setattr(online_state, "BULK_CHUNK", 97)  # several transactions / pipelines
    live = windows.Windowed(spec, state)
    # The API was already serving: the end of the batch day and the first events of the next
    # went through it before the bootstrap (they are in the store with their ids).
    day_before = [e for e in events if e["at"].isoformat()[:10] == THROUGH]
    next_day = [e for e in events if e["at"].isoformat()[:10] == NEXT]
    served = day_before[-50:] + next_day[:30]
    newest: dict[str, int] = {}
    for e in served:
        live.find(e)
        key = windows.key_text(e["user_id"])
        newest[key] = max(newest.get(key, 0), windows.epoch_us(e["at"]))
    boot = window_bootstrap.WindowBootstrapper(objects)
    done = boot.bootstrap(state, spec, pub)
    assert done is not None and done.events == pub.n_rows
    # Added: the snapshot's events but the 50 the API recorded already (same key and id) and
    # those a later request of their key moved out of its window.
    evs = window_bootstrap.events_of(enrichments.verified_bytes(objects, pub), spec)
    ids = {e["login_id"] for e in served}
    stale = [e for e in evs if e[2][0] + spec.longest_us < newest.get(e[0], 0)]
    assert sum(e[1] in ids for e in evs) == 50 and stale
    assert done.added == pub.n_rows - 50 - len(stale)
    for e in next_day[30:]:
        _agrees(spec, live.find(e), batch[e["login_id"]])
    held = state.key_events(spec.space)
    # A second bootstrap of the same version is refused by the store's own record: the
    # store's per-key events are unchanged.
    assert boot.bootstrap(state, spec, pub) is None
    assert state.key_events(spec.space) == held
    # Replaying it anyway (a lost record) adds nothing: each (key, id) is there once, and
    # events a later request moved out of its key's window are not brought back.
    assert window_bootstrap.replay(state, spec, evs) == 0
    assert state.key_events(spec.space) == held


def test_an_empty_store_bootstraps_from_the_newest_version_through_the_poll(published, state):
    project, spec, objects, pub, events, batch = published
    live = windows.Windowed(spec, state)

    class Svc:  # the shape the refresher hands over: services → generations → endpoints
        generations = {"v1": type("L", (), {"endpoints": {}})()}

    ep = object.__new__(window_bootstrap.PredictionEndpoint)
    ep.enrichments = [live]
    Svc.generations["v1"].endpoints = {"e": ep}
    newest = {(spec.project, spec.output, enrichments.WINDOW_EVENTS): pub}
    boot = window_bootstrap.WindowBootstrapper(objects)
    assert [b.events for b in boot.run({"s": Svc()}, newest)] == [pub.n_rows]
    assert boot.run({"s": Svc()}, newest) == []  # the next poll: done already
    first = next(e for e in events if e["at"].isoformat()[:10] == NEXT)
    _agrees(spec, live.find(first), batch[first["login_id"]])


def test_a_snapshot_of_another_declaration_is_refused(published, tmp_path):
    project, spec, objects, pub, _, _ = published
    other = windows.WindowSpec(
        spec.recipe,
        spec.output,
        spec.events,
        spec.key,
        spec.time,
        spec.id,
        spec.partition,
        spec.features[:1],
        spec.project,
    )
    state = online_state.SqliteState(tmp_path / "other.sqlite")
    boot = window_bootstrap.WindowBootstrapper(objects)
    with pytest.raises(enrichments.EnrichmentRefused, match="another declaration"):
        boot.bootstrap(state, other, pub)
    assert state.key_events(other.space) == {}
    # The claim was released: nothing is left half done.
    assert state.claim_bootstrap(other.space, pub.sha256, 600)


def test_the_columnar_decoding_writes_what_python_writes_for_every_column_type(tmp_path):
    """columns_of (pyarrow kernels) against events_of (one Python object per value): the same
    key texts byte for byte (live requests must find the key), ids and times, and event texts
    that parse back to the same values of the same types; kernels where they write exactly
    that, Python for the rest (escapes, NaN, non-ASCII or NULL keys)."""
    import datetime as dt
    import decimal
    import json
    import math

    import pyarrow as pa

    spec = windows.WindowSpec(
        "w",
        "w",
        "e",
        "key",
        "t",
        "id",
        "day",
        tuple(
            windows.WindowFeature(f"f{c}", agg, c, "1h", 3_600_000_000)
            for c, agg in (("v1", "sum"), ("v2", "first_seen"), ("v3", "max"), ("v4", "max"))
        ),
        "p",
    )
    t = [dt.datetime(2026, 1, 1, 0, 0, 8 - i) for i in range(8)]  # not in time order
    keys = (
        ["C1", "é", 'a"b', "x\\y", "C1", "\n", "", None],
        [1, 2, 3, -4, 5, 6, 7, None],
        [1, 2, 3, -4, 1, 6, 7, 8],
        ["A", "B", "C", "D", "A", "F", "G", "H"],
    )
    ids = (["E1", "E2", "E3", "E4", "E5", "E6", "E7", "E8"], list(range(8)))
    dec = [decimal.Decimal(v) for v in ("12.50", "-3.10", "0", "1", "2", "3", "4", "5")]
    floats = (
        pa.array([1.0, 0.1, None, -0.0, 1e20, 1e-7, 1 / 3, 2.5]),
        pa.array([1.5, 0.1, None, 2, 3, 4, 5, 6], pa.float32()),
        pa.array([*dec[:2], None, *dec[3:]], pa.decimal128(10, 2)),
        pa.array([decimal.Decimal(12)] * 8, pa.decimal128(10, 0)),
        pa.array([float("nan"), 1.0, 2.0, 3.0, float("inf"), None, 1.0, 2.0]),
    )
    strings = (["M1", 'q"uote', "é", None, "\t", "a", "b", "c"], ["M", "N", "é", None] * 2)
    v3 = [1, 2, None, 4, 5, 6, 7, 2**60]
    v4 = [True, False, None, True, True, True, False, False]
    cases = 0
    for key in keys:
        for id_ in ids:
            for v1 in floats:
                for v2 in strings:
                    table = pa.table(
                        {"key": key, "t": t, "id": id_, "v1": v1, "v2": v2, "v3": v3, "v4": v4}
                    )
                    buf = io.BytesIO()
                    pq.write_table(table, buf)
                    ref = window_bootstrap.events_of(buf.getvalue(), spec)
                    cols = window_bootstrap.columns_of(buf.getvalue(), spec)
                    got = list(zip(*cols.rows(0, len(cols)), strict=True))
                    assert [g[0] for g in got] == sorted(g[0] for g in got)  # in key order
                    by_id = {g[1]: g for g in got}
                    assert len(by_id) == len(ref) == 8
                    for k, i, event in ref:
                        gk, _, gt, text = by_id[i]
                        assert (gk, gt) == (k, event[0])
                        for a, b in zip(event, json.loads(text), strict=True):
                            assert type(a) is type(b), (a, b, text)
                            assert a == b or (math.isnan(a) and math.isnan(b)), (a, b)
                    cases += 1
    assert cases == 4 * 2 * 5 * 2
