"""The daily map's data on the example: published days only, KPIs and points that match the
extract, all read through the dashboard's declared roles (the second part draws a project
with other column names)."""

from __future__ import annotations

import shutil

import pytest

from engine.automation.node import AutomationNode
from engine.core.settings import load_settings
from engine.core.us_cities import US_CITIES
from engine.monitoring import map_catalog, map_overlays, maps
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
    return copy_with_previous_day(demo_env.settings, tmp_path_factory.mktemp("maps"))


def _load(settings, store, **kw) -> maps.MapDay:
    return maps.load_map_day(settings, store, demo.PROJECT, demo.AUTOMATION_INFRA, **kw)


def test_default_is_the_latest_published_day_with_kpis_from_the_extract(demo_env):
    settings, store = demo_env.settings, demo_env.store
    data = _load(settings, store)
    assert data.ok, data.message
    assert (
        data.dashboard == "fraud_map"
        and data.spec.title == "Where today's predicted fraud happened"
    )
    assert data.publishers == ["daily_scoring"]
    assert data.day == latest_published(store) == data.published_days[0]
    expected = _expected(settings, store, data.day)
    assert data.kpis.rows == expected["n"] > 0
    assert data.kpis.flagged == expected["flagged"] > 0
    assert data.kpis.flagged_amount == pytest.approx(expected["amount"])
    assert data.checks_passed_at and data.published_at and data.bundle_id
    assert data.checks_passed_at <= data.published_at


def test_points_are_the_flagged_transactions_only_most_likely_first(demo_env):
    data = _load(demo_env.settings, demo_env.store)
    points = data.points
    assert list(points.columns) == [*maps.POINT_COLUMNS, "merchant_id"]  # + its details
    assert data.detail_columns == ["merchant_id"]
    assert len(points) == data.kpis.flagged and not data.points_truncated
    assert points["id"].is_unique
    assert points["score"].is_monotonic_decreasing
    flagged_ids = set(
        query_df(
            "SELECT transaction_id FROM "
            + _extract_partition(demo_env.settings, demo_env.store, data.day)
            + " WHERE is_flagged"
        )["transaction_id"]
    )
    assert set(points["id"]) == flagged_ids
    assert points["lat"].between(18, 72).all() and points["lon"].between(-170, -60).all()
    assert points["category"].notna().all() and points["time"].str.match(r"\d{4}-").all()
    # The view frames the day's rows: the continental US here.
    lat, lon, zoom = map_overlays.view_state(data.bounds)
    assert 30 < lat < 45 and -105 < lon < -85 and 3 <= zoom <= 4.5


def test_a_probability_threshold_replaces_the_models_flags(demo_env):
    settings, store = demo_env.settings, demo_env.store
    data = _load(settings, store, threshold=0.5)
    expected = _expected(settings, store, data.day, "proba >= 0.5")
    assert data.threshold == 0.5
    assert data.kpis.flagged == expected["flagged"] == len(data.points)
    assert (data.points["score"] >= 0.5).all()
    assert data.model_threshold is not None and 0 < data.model_threshold < 1
    nothing = _load(settings, store, threshold=1.0)
    assert nothing.ok and nothing.kpis.flagged == 0 and nothing.points.empty
    with pytest.raises(ValueError, match="between 0 and 1"):
        _load(settings, store, threshold=1.5)


def test_filters_on_the_declared_columns_and_the_amount(demo_env):
    settings, store = demo_env.settings, demo_env.store
    every = _load(settings, store, threshold=0.05)
    categories = every.filter_options["merchant_category"]
    assert set(every.filter_options) == {"merchant_category", "channel"} and len(categories) > 2
    wanted = tuple(categories[:2])
    where = "proba >= 0.05 AND merchant_category IN ('" + "', '".join(wanted) + "')"
    where += " AND amount BETWEEN 10 AND 500"
    filters = maps.MapFilters({"merchant_category": wanted}, min_amount=10, max_amount=500)
    data = _load(settings, store, threshold=0.05, filters=filters)
    expected = _expected(settings, store, data.day, where)
    assert data.kpis.flagged == expected["flagged"] == len(data.points) > 0
    assert set(data.points["category"]) <= set(wanted)
    assert data.points["amount"].between(10, 500).all()
    # The choices stay those of the whole day, whatever is filtered.
    assert data.filter_options == every.filter_options


def test_points_are_capped_but_kpis_count_every_flag(demo_env):
    data = _load(demo_env.settings, demo_env.store, threshold=0.01, max_points=5)
    assert len(data.points) == 5 and data.kpis.flagged > 5 and data.points_truncated
    assert data.points["score"].min() >= 0.01


def test_change_is_against_the_previous_published_day(two_days):
    settings, store, latest, previous = two_days
    data = _load(settings, store)
    assert data.day == latest and data.published_days[:2] == [latest, previous]
    now, before = _expected(settings, store, latest), _expected(settings, store, previous)
    assert data.kpis.previous_day == previous
    assert data.kpis.rows_change == now["n"] - before["n"]
    assert data.kpis.flagged_change == now["flagged"] - before["flagged"]
    assert data.kpis.flagged_amount_change == pytest.approx(now["amount"] - before["amount"])
    older = _load(settings, store, day=previous)
    assert older.day == previous and older.kpis.rows == before["n"]
    assert older.kpis.previous_day is None and older.kpis.flagged_change is None


def test_a_day_not_published_is_a_clear_problem_not_an_exception(demo_env):
    data = _load(demo_env.settings, demo_env.store, day="1999-01-01")
    assert data.problem == maps.DAY_NOT_PUBLISHED and not data.ok
    assert "1999-01-01 is not a published day" in data.message
    assert data.published_days and data.points.empty and data.kpis is None


def test_an_empty_home_has_nothing_active(tmp_path):
    settings = load_settings(environ={}, home=tmp_path / "var", data_dir=tmp_path / "data")
    data = maps.load_map_day(settings, open_store(settings.control_store_url), "shop", "node")
    assert data.problem == maps.NOT_ACTIVE
    assert data.published_days == [] and data.day is None and data.kpis is None
    assert "'shop' is not active on node" in data.message


def test_nothing_published_names_the_projects_own_scenario(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    from engine.storage.control import published_days

    with store.write() as conn:
        conn.execute(published_days.delete())
    data = _load(settings, store)
    assert data.problem == maps.NOTHING_PUBLISHED and data.publishers == ["daily_scoring"]
    assert (
        "nodal scenario run daily_scoring --project fraud --infra automation-prod" in data.message
    )
    other = _load(settings, store, dashboard="nope")
    assert other.problem == maps.UNKNOWN_DASHBOARD and "its maps: fraud_map" in other.message


def test_a_published_day_whose_extract_is_gone_says_so(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    day = latest_published(store)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    shutil.rmtree(node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}")
    data = _load(settings, store)
    assert data.problem == maps.NOT_READABLE
    assert day in data.message and "no partition" in data.message


def test_city_labels_cover_every_city_and_declutter_without_overlaps():
    every = map_overlays.city_labels()
    assert len(every) == len(US_CITIES) and every["name"].iloc[0] == "New York"
    placed = map_overlays.city_labels(zoom=3.4)
    assert 30 < len(placed) < len(US_CITIES)
    assert {"New York", "Los Angeles", "Chicago", "Miami", "Seattle"} <= set(placed["name"])
    boxes = []
    for _, c in placed.iterrows():
        x, y = map_overlays.web_mercator_px(c["lat"], c["lon"], 3.4)
        half = len(c["name"]) * 7.5 / 2
        top = y + 2 if c["below"] else y - 16
        boxes.append((x - half, top, x + half, top + 14))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    zoomed = map_overlays.city_labels(zoom=6)
    assert len(zoomed) > len(placed)


# --- a project in another vocabulary: two maps of insurance claims --------------------------


def _claims_extract(claims, dashboard: str, day: str) -> str:
    from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT

    node = AutomationNode(claims.settings, claims.store, CLAIMS_INFRA)
    folder = node.home / "projects" / CLAIMS_PROJECT / "data" / dashboard / f"booked_on={day}"
    assert list(folder.glob("*.parquet")), folder
    return f"read_parquet('{folder}/*.parquet')"


def test_a_map_in_another_vocabulary_defaults_to_the_newest_published_dashboard(claims_env):
    from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT

    settings, store = claims_env.settings, claims_env.store
    choices = map_catalog.map_choices(settings, store, CLAIMS_PROJECT, CLAIMS_INFRA)
    assert [(c.dashboard, c.newest_day) for c in choices] == [
        ("payout_map", claims_env.payout_day),
        ("claims_map", claims_env.nightly_days[-1]),
    ]
    data = maps.load_map_day(settings, store, CLAIMS_PROJECT, CLAIMS_INFRA)
    assert data.ok, data.message
    assert (data.dashboard, data.day, data.spec.title) == (
        "payout_map",
        claims_env.payout_day,
        "Risky payouts",
    )
    # No flag column shipped: the dashboard's own threshold flags; no amount, no id role.
    src = _claims_extract(claims_env, "payout_map", data.day)
    truth = query_df(f"SELECT count(*) FILTER (WHERE proba >= 0.3) AS f, count(*) AS n FROM {src}")
    assert data.threshold == 0.3 and data.kpis.flagged == int(truth["f"].iloc[0]) == len(
        data.points
    )
    assert data.kpis.rows == int(truth["n"].iloc[0]) and data.kpis.flagged_amount is None
    assert data.points["id"].isna().all() and data.points["amount"].isna().all()
    assert data.filter_options == {} and data.max_amount == 0.0
    assert (
        map_overlays.top_reasons(
            settings, store, CLAIMS_PROJECT, CLAIMS_INFRA, "payout_map", ["x"], data.day
        )
        == {}
    )


def test_a_map_in_another_vocabulary_reads_its_declared_roles(claims_env):
    from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT

    settings, store = claims_env.settings, claims_env.store
    day, previous = claims_env.nightly_days[-1], claims_env.nightly_days[-2]
    data = maps.load_map_day(settings, store, CLAIMS_PROJECT, CLAIMS_INFRA, dashboard="claims_map")
    assert data.ok, data.message
    assert data.day == day and data.publishers == ["nightly"]
    assert data.spec.label("rows") == "Claims" and data.spec.label("currency") == "€"
    src = _claims_extract(claims_env, "claims_map", day)
    truth = query_df(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE is_flagged) AS f, "
        f"sum(payout) FILTER (WHERE is_flagged) AS amount FROM {src}"
    ).iloc[0]
    assert data.kpis.rows == int(truth["n"]) and data.kpis.flagged == int(truth["f"]) > 0
    assert data.kpis.flagged_amount == pytest.approx(float(truth["amount"]))
    assert data.kpis.previous_day == previous
    flagged = set(query_df(f"SELECT claim_ref FROM {src} WHERE is_flagged")["claim_ref"])
    points = data.points
    assert set(points["id"]) == flagged and points["score"].is_monotonic_decreasing
    assert list(points.columns) == [*maps.POINT_COLUMNS, "adjuster"]
    assert set(points["category"]) <= {"north", "south", "east", "west"}
    assert points["time"].str.startswith(day).all()
    assert data.filter_options == {"branch": ["east", "north", "south", "west"]}
    east = maps.MapFilters({"branch": ("east",)})
    only = maps.load_map_day(
        settings, store, CLAIMS_PROJECT, CLAIMS_INFRA, filters=east, dashboard="claims_map"
    )
    expected = query_df(f"SELECT count(*) AS f FROM {src} WHERE is_flagged AND branch = 'east'")
    assert only.kpis.flagged == int(expected["f"].iloc[0]) and set(only.points["category"]) == {
        "east"
    }
    # The view frames France, where its sites are.
    lat, lon, zoom = map_overlays.view_state(data.bounds)
    assert 44 < lat < 49 and 0 < lon < 5 and zoom >= 4
    # Top reasons are keyed by the declared id, computed from the model's features.
    ids = points["id"].head(3).tolist()
    reasons = map_overlays.top_reasons(
        settings, store, CLAIMS_PROJECT, CLAIMS_INFRA, "claims_map", ids, day
    )
    assert set(reasons) == set(ids)
    assert {name for r in reasons.values() for name, _ in r} <= {"x1", "payout", "branch"}


def test_a_deployment_with_nothing_published_names_its_own_scenarios(claims_env):
    from tests.engine.small_project import CLAIMS_PROJECT, CLAIMS_TEST_INFRA

    settings, store = claims_env.settings, claims_env.store
    data = maps.load_map_day(
        settings, store, CLAIMS_PROJECT, CLAIMS_TEST_INFRA, dashboard="claims_map"
    )
    assert data.problem == maps.NOTHING_PUBLISHED
    assert "nodal scenario run nightly --project claims --infra claims-test" in data.message
    assert "daily_scoring" not in data.message
    from engine.deployer import deployments as deployer

    newest = map_catalog.newest_map_days(settings, store, deployer.list_deployments(store))
    assert newest == {("claims-prod", CLAIMS_PROJECT): claims_env.payout_day}
