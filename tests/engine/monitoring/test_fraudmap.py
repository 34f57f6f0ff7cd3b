"""The fraud map's data: published days only, KPIs and points that match the extract."""

from __future__ import annotations

import shutil

import pytest

from engine.automation.node import AutomationNode
from engine.core.settings import load_settings
from engine.core.us_cities import US_CITIES
from engine.monitoring import fraudmap
from engine.storage.control import open_store
from engine.storage.datasets import query_df
from nodal_demo import demo
from tests.homes import copy_home, copy_with_previous_day, latest_published


def _extract_partition(settings, store, day: str) -> str:
    """A read_parquet() over one day's extract file, found independently of the engine."""
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    path = node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}"
    files = sorted(path.glob("*.parquet"))
    assert files, f"no extract file in {path}"
    return f"read_parquet('{files[0]}')"


def _expected(settings, store, day: str, where: str = "is_flagged") -> dict:
    src = _extract_partition(settings, store, day)
    row = query_df(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE {where}) AS flagged, "
        f"coalesce(sum(amount) FILTER (WHERE {where}), 0) AS amount FROM {src}"
    ).iloc[0]
    return {"n": int(row["n"]), "flagged": int(row["flagged"]), "amount": float(row["amount"])}


@pytest.fixture(scope="module")
def two_days(demo_env, tmp_path_factory):
    """A copy of the demo home where the day before the latest published one is published too."""
    return copy_with_previous_day(demo_env.settings, tmp_path_factory.mktemp("fraudmap"))


def test_default_is_the_latest_published_day_with_kpis_from_the_extract(demo_env):
    settings, store = demo_env.settings, demo_env.store
    data = fraudmap.load_map_day(settings, store)
    assert data.ok, data.message
    assert data.day == latest_published(store) == data.published_days[0]
    expected = _expected(settings, store, data.day)
    assert data.kpis.transactions == expected["n"] > 0
    assert data.kpis.flagged == expected["flagged"] > 0
    assert data.kpis.flagged_amount == pytest.approx(expected["amount"])
    assert data.checks_passed_at and data.published_at and data.bundle_id
    assert data.checks_passed_at <= data.published_at


def test_points_are_the_flagged_transactions_only_most_likely_first(demo_env):
    data = fraudmap.load_map_day(demo_env.settings, demo_env.store)
    points = data.points
    assert list(points.columns) == fraudmap.POINT_COLUMNS
    assert len(points) == data.kpis.flagged and not data.points_truncated
    assert points["transaction_id"].is_unique
    assert points["proba"].is_monotonic_decreasing
    flagged_ids = set(
        query_df(
            "SELECT transaction_id FROM "
            + _extract_partition(demo_env.settings, demo_env.store, data.day)
            + " WHERE is_flagged"
        )["transaction_id"]
    )
    assert set(points["transaction_id"]) == flagged_ids
    assert points["lat"].between(18, 72).all() and points["lon"].between(-170, -60).all()


def test_a_probability_threshold_replaces_the_models_flags(demo_env):
    settings, store = demo_env.settings, demo_env.store
    data = fraudmap.load_map_day(settings, store, threshold=0.5)
    expected = _expected(settings, store, data.day, "fraud_proba >= 0.5")
    assert data.threshold == 0.5
    assert data.kpis.flagged == expected["flagged"] == len(data.points)
    assert (data.points["proba"] >= 0.5).all()
    assert data.model_threshold is not None and 0 < data.model_threshold < 1
    nothing = fraudmap.load_map_day(settings, store, threshold=1.0)
    assert nothing.ok and nothing.kpis.flagged == 0 and nothing.points.empty
    with pytest.raises(ValueError, match="between 0 and 1"):
        fraudmap.load_map_day(settings, store, threshold=1.5)


def test_points_are_capped_but_kpis_count_every_flag(demo_env):
    data = fraudmap.load_map_day(demo_env.settings, demo_env.store, threshold=0.01, max_points=5)
    assert len(data.points) == 5 and data.kpis.flagged > 5 and data.points_truncated
    assert data.points["proba"].min() >= 0.01


def test_change_is_against_the_previous_published_day(two_days):
    settings, store, latest, previous = two_days
    data = fraudmap.load_map_day(settings, store)
    assert data.day == latest and data.published_days[:2] == [latest, previous]
    now, before = _expected(settings, store, latest), _expected(settings, store, previous)
    assert data.kpis.previous_day == previous
    assert data.kpis.transactions_change == now["n"] - before["n"]
    assert data.kpis.flagged_change == now["flagged"] - before["flagged"]
    assert data.kpis.flagged_amount_change == pytest.approx(now["amount"] - before["amount"])
    older = fraudmap.load_map_day(settings, store, day=previous)
    assert older.day == previous and older.kpis.transactions == before["n"]
    assert older.kpis.previous_day is None and older.kpis.flagged_change is None


def test_a_day_not_published_is_a_clear_problem_not_an_exception(demo_env):
    data = fraudmap.load_map_day(demo_env.settings, demo_env.store, day="1999-01-01")
    assert data.problem == fraudmap.DAY_NOT_PUBLISHED and not data.ok
    assert "1999-01-01 is not a published day" in data.message
    assert data.published_days and data.points.empty and data.kpis is None


def test_an_empty_home_has_nothing_published(tmp_path):
    settings = load_settings(environ={}, home=tmp_path / "var", data_dir=tmp_path / "data")
    data = fraudmap.load_map_day(settings, open_store(settings.control_store_url))
    assert data.problem == fraudmap.NOTHING_PUBLISHED
    assert data.published_days == [] and data.day is None and data.kpis is None
    assert "daily scoring scenario" in data.message


def test_a_published_day_whose_extract_is_gone_says_so(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    day = latest_published(store)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    shutil.rmtree(node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}")
    data = fraudmap.load_map_day(settings, store)
    assert data.problem == fraudmap.NOT_READABLE
    assert day in data.message and "no partition" in data.message


def test_city_labels_cover_every_city_and_declutter_without_overlaps():
    every = fraudmap.city_labels()
    assert len(every) == len(US_CITIES) and every["name"].iloc[0] == "New York"
    placed = fraudmap.city_labels(zoom=3.4)
    assert 30 < len(placed) < len(US_CITIES)
    assert {"New York", "Los Angeles", "Chicago", "Miami", "Seattle"} <= set(placed["name"])
    boxes = []
    for _, c in placed.iterrows():
        x, y = fraudmap._web_mercator_px(c["lat"], c["lon"], 3.4)
        half = len(c["name"]) * 7.5 / 2
        top = y + 2 if c["below"] else y - 16
        boxes.append((x - half, top, x + half, top + 14))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    zoomed = fraudmap.city_labels(zoom=6)
    assert len(zoomed) > len(placed)
