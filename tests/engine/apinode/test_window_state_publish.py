"""Publishing a windows output's state by hand, and seeing it replayed (issue 15).

On a project that is not the fraud example (user logins): ``publish_by_hand`` of a windows
output publishes its window state (not its rows) through its newest built day, as the
person who ran it; a day it was not built for is refused and publishes nothing. An API
worker's next sync replays it, its next answer uses the replayed events (like batch), and
Monitoring's enrichment age shows, per endpoint, the window-state version the store
replayed: stale while a newer published one is not replayed, healthy once it is.
"""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow.parquet as pq
import pytest

from engine.access import accounts, audit
from engine.access.rights import PermissionDenied
from engine.apinode import online_state, window_bootstrap
from engine.apinode.enrichment_refresh import EnrichmentRefresher
from engine.deployer import enrichments
from engine.monitoring import enrichment_age
from engine.project import flow, windows
from engine.storage import datasets as ds
from engine.storage.control import open_store
from engine.storage.objects import LocalObjectStore
from tests.engine.project.test_windows import DAYS, _events, _project, _same


@pytest.fixture
def home(tmp_path):
    project = _project(tmp_path)
    events = _events(tmp_path)
    flow.build(project, "user_windows", DAYS[:3])  # the newest built day: DAYS[2]
    control = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    accounts.bootstrap_admin(control, "ada")
    objects = LocalObjectStore(tmp_path / "home")
    return project, sorted(events, key=lambda e: e["at"]), control, objects


def test_a_hand_publish_of_a_windows_output_publishes_its_window_state(home):
    project, _, control, objects = home
    pub = enrichments.publish_by_hand(
        objects, control, project, "user_windows", "latest_day", node="design", actor="ada"
    )
    assert pub.rows_selection == enrichments.WINDOW_EVENTS and pub.as_of == DAYS[2]
    assert pub.published_by == "ada" and pub.run_id is None
    # Byte for byte what the daily step publishes for that day.
    data, n = enrichments.window_state_bytes(project, "user_windows", DAYS[2])
    assert enrichments.verified_bytes(objects, pub) == data and pub.n_rows == n > 0
    spec = windows.declared(project)["user_windows"]
    table = pq.read_table(io.BytesIO(data))
    assert table.schema.metadata[enrichments.META_SPACE].decode() == spec.space
    event = audit.events(control, action="enrichment.publish", limit=1)[0]
    assert (event.actor, event.object_id) == ("ada", "logins/user_windows")

    # Another day it was built for; then days it was not, refused, nothing published.
    older = enrichments.publish_window_state_by_hand(
        objects, control, project, "user_windows", DAYS[1], node="design", actor="ada"
    )
    assert (older.version, older.as_of) == (pub.version + 1, DAYS[1])
    for day, why in (("2026-03-09", "has no data for 2026-03-09"), ("03/09", "is not a day")):
        with pytest.raises(enrichments.EnrichmentError, match=why):
            enrichments.publish_window_state_by_hand(
                objects, control, project, "user_windows", day, node="design", actor="ada"
            )
    with pytest.raises(PermissionDenied):
        enrichments.publish_window_state_by_hand(
            objects, control, project, "user_windows", None, node="design", actor="nobody"
        )
    assert len(enrichments.versions(control, "logins", "user_windows")) == 2


class _Loaded:
    definition: dict = {}

    def __init__(self, endpoints):
        self.endpoints = endpoints


class _Service:  # the shape the node hands the refresher: services → generations → endpoints
    def __init__(self, live):
        ep = object.__new__(window_bootstrap.PredictionEndpoint)
        ep.enrichments = [live]
        self.service_id = "logins_api"
        self.generations = {"v1": _Loaded({"score": ep})}


def _batch(project, day):
    flow.build(project, "user_windows", [day])
    rows = ds.query_df("SELECT * FROM w", {"w": (project.dataset("user_windows"), [day])})
    return {r["login_id"]: r for r in rows.to_dict("records")}


def _agrees(spec, row, batch_row):
    for f in spec.features:
        b = batch_row[f.name]
        b = None if b is None or (isinstance(b, float) and math.isnan(b)) else b
        b = b.item() if isinstance(b, np.generic) else b
        assert _same(row[f.name], b), (f.name, row, b)


def test_the_next_sync_replays_a_hand_publish_and_monitoring_shows_its_version(home, tmp_path):
    project, events, control, objects = home
    spec = windows.declared(project)["user_windows"]
    state = online_state.SqliteState(tmp_path / "api" / online_state.FILE)
    live = windows.Windowed(spec, state)
    services = {"logins_api": _Service(live)}
    refresher = EnrichmentRefresher(tmp_path / "home", control, "api-test", objects)
    refresher._packages[("logins_api", "v1")] = ("logins", "2026-03-01T00:00:00+00:00")

    def row():
        [age] = [
            a
            for a in enrichment_age.ages(control, "api-test", now=now, grace=grace)
            if a.dataset == "user_windows"
        ]
        return age

    grace = timedelta(seconds=15)
    # Nothing published yet: the endpoint is reported, with no window state replayed.
    refresher.refresh(services)
    now = datetime.now(UTC)
    first = row()
    assert (first.source, first.version, first.endpoint) == ("window_state", None, "score")
    assert first.served == "window state: none" and first.status == "HEALTHY"

    older = enrichments.publish_window_state_by_hand(
        objects, control, project, "user_windows", DAYS[1], node="design", actor="ada"
    )
    pub = enrichments.publish_by_hand(
        objects, control, project, "user_windows", "latest_day", node="design", actor="ada"
    )
    assert (older.as_of, pub.as_of) == (DAYS[1], DAYS[2])
    # Published, not replayed yet: stale once the grace has passed.
    now = datetime.now(UTC) + timedelta(minutes=1)
    behind = row()
    assert behind.status == enrichment_age.STALE and behind.newest_version == pub.version
    assert "not replayed into the online store" in behind.message

    # The worker's next sync replays the newest (through DAYS[2]) and reports it.
    refresher.refresh(services)
    done = row()
    assert (done.version, done.as_of, done.status) == (pub.version, DAYS[2], "HEALTHY")
    assert done.served == f"window state v{pub.version}"
    assert f"user_windows window state v{pub.version} (replayed)" in done.message
    frame = enrichment_age.frame([done])
    assert frame.loc[0, "served"] == f"window state v{pub.version}"
    assert frame.loc[0, "as of"] == DAYS[2]

    # Its next answers (the next day's events) use the replayed events: like batch.
    batch = _batch(project, DAYS[3])
    for e in [e for e in events if e["at"].isoformat()[:10] == DAYS[3]][:60]:
        _agrees(spec, live.find(e), batch[e["login_id"]])

    # Another worker sharing the store reports the same version without replaying it.
    other = EnrichmentRefresher(tmp_path / "home", control, "api-test", objects)
    other.worker = "other-worker"
    other._packages = refresher._packages
    held = state.key_events(spec.space)
    other.refresh({"logins_api": _Service(windows.Windowed(spec, state))})
    assert state.key_events(spec.space) == held
    assert row().workers == 2 and row().version == pub.version


def test_a_refused_window_state_is_shown_with_why(home, tmp_path):
    project, _, control, objects = home
    spec = windows.declared(project)["user_windows"]
    state = online_state.SqliteState(tmp_path / "api" / online_state.FILE)
    services = {"logins_api": _Service(windows.Windowed(spec, state))}
    refresher = EnrichmentRefresher(tmp_path / "home", control, "api-test", objects)
    refresher._packages[("logins_api", "v1")] = ("logins", "2026-03-01T00:00:00+00:00")
    pub = enrichments.publish_by_hand(
        objects, control, project, "user_windows", "latest_day", node="design", actor="ada"
    )
    path = tmp_path / "home" / pub.path
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # damaged after publish
    refresher.refresh(services)
    [age] = enrichment_age.ages(
        control, "api-test", now=datetime.now(UTC) + timedelta(minutes=1), grace=timedelta(0)
    )
    assert age.status == enrichment_age.STALE and age.version is None
    assert "refused" in (age.problem or "") and "refused" in age.message
    assert state.key_events(spec.space) == {}
    assert json.loads(json.dumps(enrichment_age.frame([age]).to_dict("records")))
