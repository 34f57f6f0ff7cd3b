"""The Monitoring pages, run with AppTest: what a business user sees for a day of the example's
fraud map, the deployment and dashboard picking (deep links, newest activity first) on a
project in another vocabulary, and the other pages' empty states naming that project's own
scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.automation.node import AutomationNode
from engine.storage.datasets import query_df
from nodal_demo import demo
from tests.homes import copy_with_previous_day, environ, latest_published, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "monitoring" / "app.py"


def _run(day: str | None = None, **params: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    if day is not None:
        at.query_params["day"] = day
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("views/fraud_map.py").run()
    assert not at.exception, at.exception
    return at


def _deck(at: AppTest) -> dict:
    charts = at.get("deck_gl_json_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.json)


def _layer(spec: dict, layer_id: str) -> dict:
    return next(layer for layer in spec["layers"] if layer["id"] == layer_id)


def _day_truth(settings, store, day: str, flag: str = "is_flagged") -> dict:
    """Counts of one published day, straight from the extract's Parquet file with DuckDB."""
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    folder = node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}"
    src = f"read_parquet('{folder}/*.parquet')"
    totals = query_df(
        f"SELECT count(*) AS n, count(*) FILTER (WHERE {flag}) AS flagged, "
        f"coalesce(sum(amount) FILTER (WHERE {flag}), 0) AS amount FROM {src}"
    ).iloc[0]
    ids = set(query_df(f"SELECT transaction_id FROM {src} WHERE {flag}")["transaction_id"])
    return {
        "n": int(totals["n"]),
        "flagged": int(totals["flagged"]),
        "amount": float(totals["amount"]),
        "ids": ids,
    }


@pytest.fixture
def two_days(demo_env, tmp_path, monkeypatch):
    settings, store, latest, previous = copy_with_previous_day(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store, latest, previous


def test_the_map_shows_the_latest_days_flagged_transactions_and_kpis(demo_environ):
    settings, store = demo_environ.settings, demo_environ.store
    day = latest_published(store)
    truth = _day_truth(settings, store, day)
    at = _run()
    assert at.title[0].value == "Where today's predicted fraud happened"  # the dashboard's own
    assert at.selectbox(key="map_day").value == day
    assert at.query_params["day"] == day  # the URL names the day: a shareable link
    assert at.query_params["deployment"] == "fraud-on-automation-prod"
    assert at.query_params["dashboard"] == "fraud_map"
    tiles = {t.label: t.value for t in at.metric}
    assert tiles["Transactions"] == f"{truth['n']:,}"
    assert tiles["Flagged as fraud"] == f"{truth['flagged']:,}"
    assert tiles["Flagged amount"] == f"${truth['amount']:,.0f}"
    spec = _deck(at)
    points = _layer(spec, "flagged-points")
    assert points["@@type"] == "ScatterplotLayer" and points["pickable"]
    assert len(points["data"]) == truth["flagged"] > 0
    assert {p["id"] for p in points["data"]} == truth["ids"]
    labels = _layer(spec, "city-labels")
    assert labels["@@type"] == "TextLayer"
    assert {"New York", "Chicago", "Miami"} <= {c["name"] for c in labels["data"]}
    # Offline basemap: no provider, no style, so nothing is fetched from the internet.
    assert "mapProvider" not in spec and "mapStyle" not in spec
    assert "{id}" in at.get("deck_gl_json_chart")[0].proto.tooltip
    assert at.caption[0].value.startswith("data checks passed at ")
    top = at.dataframe[0].value
    assert len(top) == min(25, truth["flagged"])
    assert top["fraud probability"].is_monotonic_decreasing
    assert list(top.columns[:2]) == ["transaction_id", "ts"]  # the project's own column names
    assert top["reasons"].str.len().gt(0).any()  # computed for the declared id column


def test_a_shared_link_opens_its_day_and_compares_with_the_day_before(two_days):
    settings, store, latest, previous = two_days
    at = _run(latest)
    now, before = _day_truth(settings, store, latest), _day_truth(settings, store, previous)
    tiles = {t.label: t for t in at.metric}
    assert int(tiles["Transactions"].delta) == now["n"] - before["n"]
    assert int(tiles["Flagged as fraud"].delta) == now["flagged"] - before["flagged"]
    assert at.selectbox(key="map_day").options == [latest, previous]
    older = _run(previous)
    assert older.selectbox(key="map_day").value == previous
    assert {t.label: t.value for t in older.metric}["Transactions"] == f"{before['n']:,}"
    assert len(_layer(_deck(older), "flagged-points")["data"]) == before["flagged"]
    assert all(not t.delta for t in older.metric)  # nothing published before the oldest day


def test_picking_another_day_updates_the_url(two_days):
    _, _, latest, previous = two_days
    at = _run()
    at.selectbox(key="map_day").set_value(previous).run()
    assert not at.exception
    assert at.query_params["day"] == previous


def test_an_unpublished_day_in_the_link_falls_back_to_the_latest_with_a_warning(demo_environ):
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.query_params["day"] = "1999-01-01"
    at.run()
    at.switch_page("views/fraud_map.py").run()
    assert not at.exception and not at.error
    assert "1999-01-01 is not a published day" in at.warning[0].value
    day = latest_published(demo_environ.store)
    assert at.selectbox(key="map_day").value == day
    assert at.query_params["day"] == day


def test_an_own_threshold_flags_by_probability(demo_environ):
    settings, store = demo_environ.settings, demo_environ.store
    at = _run()
    assert at.slider(key="map_threshold").disabled
    at.toggle(key="map_custom").set_value(True).run()
    at.slider(key="map_threshold").set_value(0.5).run()
    assert not at.exception
    truth = _day_truth(settings, store, latest_published(store), "proba >= 0.5")
    assert {t.label: t.value for t in at.metric}["Flagged as fraud"] == f"{truth['flagged']:,}"
    points = _layer(_deck(at), "flagged-points")["data"]
    assert {p["id"] for p in points} == truth["ids"]
    assert all(p["score"] >= 0.5 for p in points)


def test_the_online_basemap_is_carto_light(demo_environ, monkeypatch):
    monkeypatch.setenv("NODAL_BASEMAP", "carto")
    spec = _deck(_run())
    assert spec["mapProvider"] == "carto" and "basemaps.cartocdn.com" in spec["mapStyle"]


def test_an_empty_home_explains_that_nothing_is_deployed_yet(tmp_path, monkeypatch):
    monkeypatch.setenv("NODAL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("NODAL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("NODAL_BASEMAP", "none")
    at = _run()
    assert "No project is deployed to an automation node yet" in at.info[0].value
    assert "nodal deploy bundle" in at.info[0].value
    assert not at.error and not at.get("deck_gl_json_chart") and not at.metric


# --- the other Monitoring pages -------------------------------------------------------------

EVAL_DAYS = ("2026-10-22", "2026-10-23")


@pytest.fixture(scope="module")
def evaluated(demo_env, tmp_path_factory):
    """A copy of the demo home with the daily evaluation run on two older days and the latest."""
    from engine.automation import runs
    from tests.homes import copy_home

    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("evaluated"))
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    for day in (*EVAL_DAYS, latest_published(store)):
        run_id = runs.request_run(
            store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_evaluation", "test", {"day": day}
        )
        assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    return settings, store


@pytest.fixture
def evaluated_environ(evaluated, monkeypatch):
    settings, store = evaluated
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def _page(path: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.run()
    at.switch_page(path).run()
    assert not at.exception, at.exception
    return at


def test_the_home_page_shows_a_worst_of_status_per_deployment_and_endpoint(evaluated_environ):
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Status"
    deployments, endpoints = (d.value for d in at.dataframe)
    prod = deployments[deployments["what"] == "fraud on automation-prod"]
    assert len(prod) == 1 and prod["status"].iloc[0] in ("HEALTHY", "WARNING", "UNHEALTHY")
    assert endpoints["what"].str.contains("fraud_detection").all()
    # No API node has run on this home: its report is missing, which is worse than no traffic.
    assert endpoints["status"].tolist() == ["UNKNOWN"]
    assert "no report yet" in endpoints["why"].iloc[0]


def test_pipeline_health_shows_runs_steps_and_checks(evaluated_environ):
    at = _page("views/pipeline_health.py")
    assert at.query_params["deployment"] == "fraud-on-automation-prod"  # the only deployment
    runs = at.dataframe[0].value
    assert {"daily_scoring", "daily_evaluation"} <= set(runs["scenario"])
    assert {m.label: m.value for m in at.metric}["Runs"] == f"{len(runs):,}"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 2  # runs timeline, checks over time
    spec = json.loads(charts[1].proto.spec)
    assert spec["mark"]["type"] == "square"


def test_model_quality_charts_drift_and_performance(evaluated_environ):
    settings, store = evaluated_environ
    at = _page("views/model_quality.py")
    assert at.selectbox(key="mq_model").value == "fraud_model"
    assert "no challenger" in at.caption[0].value
    assert len(at.get("vega_lite_chart")) >= 5
    assert not at.info  # labels have landed for the two older days: performance is shown


def test_model_quality_explains_when_nothing_is_evaluated_yet(demo_environ):
    at = _page("views/model_quality.py")
    assert "No model evaluation of fraud on automation-prod yet" in at.info[0].value
    # The project's own scenario with an evaluate step, as a command to run now.
    assert (
        "`nodal scenario run daily_evaluation --project fraud --infra automation-prod`"
        in at.info[0].value
    )
    assert not at.get("vega_lite_chart")


def test_api_health_explains_when_there_is_no_traffic_yet(demo_environ):
    at = _page("views/api_health.py")
    assert "No API traffic on api-prod yet" in at.info[0].value


# --- a project in another vocabulary: picking deployments and dashboards ------------------------


@pytest.fixture
def claims_environ(claims_env, monkeypatch):
    for key, value in environ(claims_env.settings).items():
        monkeypatch.setenv(key, value)
    return claims_env


def _claims_map(**params: str) -> AppTest:
    at = _run(**params)
    assert not at.error, [e.value for e in at.error]
    return at


def test_the_map_opens_the_deployment_and_dashboard_with_the_newest_published_day(
    claims_environ,
):
    at = _claims_map()
    # Two deployments of the claims project: prod has published days, test has none.
    assert at.selectbox(key="map_deployment").value == "claims-on-claims-prod"
    # Two maps: payout_map published the newest day.
    assert at.selectbox(key="map_dashboard").value == "payout_map"
    assert (at.query_params["deployment"], at.query_params["dashboard"]) == (
        "claims-on-claims-prod",
        "payout_map",
    )
    assert at.title[0].value == "Risky payouts"
    assert at.selectbox(key="map_day").value == claims_environ.payout_day
    # No amount, no own wording: generic tiles; the YAML threshold flags.
    tiles = {t.label: t.value for t in at.metric}
    assert set(tiles) == {"Rows", "Flagged", "Flag rate"} and tiles["Rows"] == "400"
    assert len(_layer(_deck(at), "flagged-points")["data"]) == int(tiles["Flagged"])


def test_a_deep_link_opens_another_dashboard_in_its_own_words(claims_environ):
    day = claims_environ.nightly_days[-1]
    at = _claims_map(deployment="claims-on-claims-prod", dashboard="claims_map")
    assert at.title[0].value == "Suspicious claims by site"
    assert at.selectbox(key="map_day").value == day
    tiles = {t.label: t.value for t in at.metric}
    assert {"Claims", "Suspicious", "Flagged amount", "Flag rate"} == set(tiles)
    assert tiles["Claims"] == "400" and tiles["Flagged amount"].startswith("€")
    points = _layer(_deck(at), "flagged-points")["data"]
    assert len(points) == int(tiles["Suspicious"]) > 0
    assert all(p["id"].startswith("CL") and "adjuster A" in p["detail"] for p in points)
    assert at.multiselect(key="map_filter::branch").options == ["east", "north", "south", "west"]
    top = at.dataframe[0].value
    assert list(top.columns[:4]) == ["claim_ref", "booked_at", "payout", "branch"]
    # Filter on the declared column: the URL keeps it, the KPIs follow.
    at.multiselect(key="map_filter::branch").set_value(["east"]).run()
    assert not at.exception and at.query_params["branch"] == "east"
    filtered = _layer(_deck(at), "flagged-points")["data"]
    assert 0 < len(filtered) < len(points) and all("east" in p["detail"] for p in filtered)
    # Switching to the other map drops this one's day and filters from the URL.
    at.selectbox(key="map_dashboard").set_value("payout_map").run()
    assert not at.exception
    assert at.query_params["dashboard"] == "payout_map" and "branch" not in at.query_params
    assert at.selectbox(key="map_day").value == claims_environ.payout_day


def test_a_deployment_with_nothing_published_says_which_of_its_scenarios_to_run(
    claims_environ,
):
    at = _claims_map(deployment="claims-on-claims-test", dashboard="claims_map")
    assert at.selectbox(key="map_deployment").value == "claims-on-claims-test"
    message = at.info[0].value
    assert "No day of claims_map has been published on claims-test yet" in message
    assert "`nodal scenario run nightly --project claims --infra claims-test`" in message
    assert "daily_scoring" not in message and not at.metric


def test_model_quality_and_pipeline_health_pick_the_newest_activity(claims_environ):
    quality = _page("views/model_quality.py")
    assert quality.selectbox(key="quality_deployment").value == "claims-on-claims-prod"
    assert quality.selectbox(key="mq_model").value == "claim_risk"
    assert len(quality.get("vega_lite_chart")) >= 4
    health = _page("views/pipeline_health.py")
    assert health.selectbox(key="ph_deployment").value == "claims-on-claims-prod"
    assert set(health.dataframe[0].value["scenario"]) == {"nightly", "payouts"}


def test_model_quality_and_pipeline_health_name_the_projects_scenarios(claims_environ):
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    at.query_params["deployment"] = "claims-on-claims-test"
    at.run()
    at.switch_page("views/model_quality.py").run()
    assert not at.exception
    assert "No model evaluation of claims on claims-test yet" in at.info[0].value
    assert "`nodal scenario run nightly --project claims --infra claims-test`" in at.info[0].value
    at.switch_page("views/pipeline_health.py").run()
    assert not at.exception
    assert "No scenario of claims has run on claims-test yet" in at.info[0].value
    assert "nightly, payouts" in at.info[0].value
