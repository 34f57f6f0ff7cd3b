"""Fresh enrichment without a new package (issue 15, item 3), on the fraud example.

A real `nodal serve` process answers over HTTP while the automation node's daily scenario
runs for a day that landed after the API package was built: its ``publish_enrichment``
step publishes the card profiles as of the next day, and the API's next answers use them,
with no new package. A published file whose bytes are not the ones published is refused
and the previous table keeps serving; a batch that stops publishing turns the endpoint's
status UNHEALTHY (stale enrichment) through the status alerts.
"""

from __future__ import annotations

import dataclasses
import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from engine.access import audit
from engine.apinode import window_bootstrap
from engine.apinode.realtime import KeyedTable, load_service
from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import apipackages, enrichments
from engine.design import projects as design
from engine.monitoring import enrichment_age, status
from engine.project import windows
from engine.storage import datasets as ds
from engine.storage.control import served_enrichments
from engine.storage.objects import open_store as open_objects
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

PROFILES = "card_profiles"


def _land_next_day(data_dir: Path) -> str:
    """A new day of transactions in the landing zone: the newest day's, one day later."""
    ref = ds.DatasetRef("transactions", data_dir / "transactions", "day")
    last = ref.partitions()[-1]
    nxt = (date.fromisoformat(last) + timedelta(days=1)).isoformat()
    table = pq.read_table(data_dir / "transactions" / f"day={last}" / ds.DATA_FILE)
    shifted = table.set_column(
        table.schema.get_field_index("ts"),
        "ts",
        pc.add(table.column("ts"), pa.scalar(timedelta(days=1), pa.duration("us"))).cast(
            table.schema.field("ts").type
        ),
    )
    ids = pc.binary_join_element_wise(shifted.column("transaction_id"), "-next", "")
    shifted = shifted.set_column(
        shifted.schema.get_field_index("transaction_id"), "transaction_id", ids
    )
    if "day" in shifted.column_names:
        shifted = shifted.set_column(
            shifted.schema.get_field_index("day"),
            "day",
            pa.array(
                [date.fromisoformat(nxt)] * shifted.num_rows, shifted.schema.field("day").type
            ),
        )
    out = data_dir / "transactions" / f"day={nxt}"
    out.mkdir()
    pq.write_table(shifted, out / ds.DATA_FILE)
    return nxt


def _busiest_cards(data_dir: Path, day: str, n: int = 30) -> list[str]:
    cards = pq.read_table(data_dir / "transactions" / f"day={day}" / ds.DATA_FILE).column("card_id")
    counts = sorted(pc.value_counts(cards).to_pylist(), key=lambda c: (-c["counts"], c["values"]))
    return [c["values"] for c in counts[:n]]


def _record(card: str, day: str) -> dict:
    return {
        "transaction_id": f"T-fresh-{card}",
        "ts": f"{day}T12:30:00",
        "card_id": card,
        "merchant_id": "M000017",
        "merchant_category": "electronics",
        "amount": 240.0,
        "channel": "online",
        "card_present": False,
        "merchant_latitude": 40.71,
        "merchant_longitude": -74.0,
    }


def _proba(url: str, record: dict) -> float:
    answer = httpx.post(
        f"{url}/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict",
        json={"features": record},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return float(answer.json()["result"]["probas"]["1"])


def _served(store) -> list[dict]:
    t = served_enrichments
    with store.read() as conn:
        q = sa.select(t).where(t.c.infra_id == demo.API_INFRA, t.c.dataset == PROFILES)
        return [dict(r) for r in conn.execute(q).mappings()]


@pytest.fixture(scope="module")
def fresh(demo_env, tmp_path_factory):
    """A copy of the demo home (with its own landing zone) whose API node serves package v1
    over HTTP; then a day lands and the daily scenario runs for it on the automation node."""
    root = tmp_path_factory.mktemp("fresh")
    copy, store = copy_home(demo_env.settings, root)
    shutil.copytree(demo_env.settings.data_dir, root / "data")
    settings = dataclasses.replace(copy, data_dir=root / "data")
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5"}
    port, log = procs.free_port(), root / "api.log"
    proc = procs.start(
        ["-m", "engine.serving", "--infra", demo.API_INFRA, "--port", str(port)], env, log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        procs.wait_for(
            lambda: httpx.get(f"{url}/isAlive/").json()["services"], 90, "the API node", log
        )
        packages = len(apipackages.list_packages(store, demo.SERVICE))
        day = _land_next_day(settings.data_dir)
        today = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        records = [_record(card, today) for card in _busiest_cards(settings.data_dir, day)]
        before = {r["card_id"]: _proba(url, r) for r in records}
        node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
        node.sync()
        run_id = runs.request_run(
            store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test", {"day": day}
        )
        assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
        yield {
            "settings": settings,
            "store": store,
            "url": url,
            "log": log,
            "records": records,
            "before": before,
            "day": day,
            "today": today,
            "run_id": run_id,
            "packages": packages,
        }
    finally:
        procs.stop(proc)


class _Here:
    """The package's prediction endpoint loaded in this process, scoring with the package's
    copy of the profiles or with a published version's."""

    def __init__(self, fresh: dict, pub: enrichments.Published) -> None:
        settings = fresh["settings"]
        package = settings.home / "apinode" / demo.API_INFRA / "packages" / demo.SERVICE / "v1"
        service, endpoints = load_service(package)
        self.ep = endpoints[demo.ENDPOINT]
        spec = next(e for e in service["endpoints"] if e["id"] == demo.ENDPOINT)
        self.copy = next(t for t in self.ep.enrichments if getattr(t, "name", None) == PROFILES)
        self.published = KeyedTable.load(PROFILES, settings.home / pub.path, spec["enrichments"][0])
        self.tables = list(self.ep.enrichments)
        # The card windows' state the API node replayed (window_bootstrap): the version the
        # daily run published ("after") and the one it served before the run ("before").
        states = [
            p
            for p in enrichments.versions(fresh["store"], demo.PROJECT, "card_windows")
            if p.rows_selection == enrichments.WINDOW_EVENTS
        ]
        self.windows = {
            "after": states[0] if states else None,
            "before": next((p for p in states if p.run_id != fresh["run_id"]), None),
        }
        self.objects = open_objects(settings)

    def proba(self, record: dict, table: KeyedTable, windows_of: str = "after") -> float:
        tables = []
        for t in self.tables:
            if isinstance(t, windows.Windowed):  # a state of its own, bootstrapped as the API's
                t = windows.Windowed(t.spec, windows.MemoryState())
                pub = self.windows[windows_of]
                if pub is not None:
                    data = enrichments.verified_bytes(self.objects, pub)
                    window_bootstrap.replay(
                        t.state, t.spec, window_bootstrap.events_of(data, t.spec)
                    )
            tables.append(table if t is self.copy else t)
        self.ep.enrichments = tables
        return self.ep.predict_records([record])[0]


def _changed(fresh: dict, here: _Here) -> dict:
    """A record of the fixture whose probability the published profiles change."""
    for record in fresh["records"]:
        if abs(here.proba(record, here.published) - here.proba(record, here.copy)) > 1e-6:
            return record
    raise AssertionError("no busy card's probability changed with its fresh profile")


def test_the_daily_run_refreshes_the_profiles_the_api_answers_with(fresh):
    store = fresh["store"]
    pub = enrichments.versions(store, demo.PROJECT, PROFILES)[0]
    assert pub.run_id == fresh["run_id"] and pub.node == demo.AUTOMATION_INFRA
    assert pub.as_of == fresh["today"]  # the profiles as of the day after the run's day
    event = audit.events(store, action="enrichment.publish", limit=1)[0]
    assert event.actor == f"node:{demo.AUTOMATION_INFRA}" and event.after["version"] == pub.version
    here = _Here(fresh, pub)
    record = _changed(fresh, here)
    old, new = here.copy.find(record), here.published.find(record)
    assert str(new["day"]) == fresh["today"] and new != old  # the new day counts now
    # Before the run, the API answered with the package's profiles; now with the published.
    before = here.proba(record, here.copy, windows_of="before")
    assert abs(fresh["before"][record["card_id"]] - before) < 1e-9
    expected = here.proba(record, here.published)
    procs.wait_for(
        lambda: abs(_proba(fresh["url"], record) - expected) < 1e-9,
        60,
        "the API node to answer with the published profiles",
        fresh["log"],
    )
    assert len(apipackages.list_packages(store, demo.SERVICE)) == fresh["packages"]
    served = _served(store)
    assert served and all(r["version"] == pub.version for r in served), served
    ages = {a.dataset: a for a in enrichment_age.ages(store, demo.API_INFRA, demo.SERVICE)}
    assert [a.status for a in ages.values()] == ["HEALTHY", "HEALTHY"], ages
    profiles = ages[PROFILES]
    assert profiles.as_of == fresh["today"] and profiles.version == pub.version
    # The card windows' state the node's online store replayed: the version the run published.
    state = ages["card_windows"]
    assert (state.source, state.version) == ("window_state", here.windows["after"].version)
    assert state.as_of == here.windows["after"].as_of and state.endpoint == demo.ENDPOINT


def test_a_stalled_batch_makes_the_status_alarm(fresh):
    store, home = fresh["store"], fresh["settings"].home
    pub = enrichments.versions(store, demo.PROJECT, PROFILES)[0]
    procs.wait_for(
        lambda: all(r["version"] == pub.version for r in _served(store)),
        60,
        "the API node to serve the published profiles",
        fresh["log"],
    )
    published = datetime.fromisoformat(pub.published_at)

    def endpoint(at: datetime) -> status.Status:
        statuses = status.endpoint_statuses(store, home, now=at)
        return next(s for s in statuses if s.object_id.endswith(f"/{demo.ENDPOINT}"))

    assert "max_age_hours" not in endpoint(published + timedelta(hours=29)).message
    # No publish for 31 hours: the example declares max_age_hours: 30 on the enrichment.
    stalled = endpoint(published + timedelta(hours=31))
    assert stalled.status == "UNHEALTHY" and "max_age_hours 30" in stalled.message, stalled
    assert PROFILES in stalled.message and "stale" in stalled.message
    changed = status.check_and_alert(store, [stalled], [{"type": "log"}])
    assert [c.object_id for c in changed] == [stalled.object_id]  # alerted once, on change


def test_a_corrupted_version_is_refused_and_the_old_table_keeps_serving(fresh, monkeypatch):
    store, settings = fresh["store"], fresh["settings"]
    pub = enrichments.versions(store, demo.PROJECT, PROFILES)[0]
    here = _Here(fresh, pub)
    record = fresh["records"][0]
    expected = here.proba(record, here.published)
    procs.wait_for(
        lambda: abs(_proba(fresh["url"], record) - expected) < 1e-9,
        60,
        "the API node to serve the published profiles",
        fresh["log"],
    )
    real_write = enrichments.write_snapshot

    def faulty_disk(objects, key, data):  # the bytes stored are not the ones published
        real_write(objects, key, data[: len(data) // 2] + b"\0" * (len(data) - len(data) // 2))

    monkeypatch.setattr(enrichments, "write_snapshot", faulty_disk)
    # Other rows than v2's (the design node's profiles, as of the day before), so another file.
    bad = enrichments.publish(
        open_objects(settings),
        store,
        design.open_project(settings, demo.PROJECT),
        PROFILES,
        "latest_day",
        node=demo.AUTOMATION_INFRA,
        actor="test",
    )
    procs.wait_for(
        lambda: all("SHA-256" in (r["problem"] or "") for r in _served(store)),
        60,
        "the API node to try the corrupted version",
        fresh["log"],
    )
    assert abs(_proba(fresh["url"], record) - expected) < 1e-9  # still v2's rows
    assert all(r["version"] == pub.version for r in _served(store))
    assert "refused" in fresh["log"].read_text()
    later = datetime.fromisoformat(bad.published_at) + timedelta(minutes=5)
    ages = [
        a
        for a in enrichment_age.ages(store, demo.API_INFRA, demo.SERVICE, now=later)
        if a.dataset == PROFILES
    ]
    assert ages[0].status == "UNHEALTHY", ages
    assert f"v{bad.version}" in ages[0].message and "SHA-256" in ages[0].message
