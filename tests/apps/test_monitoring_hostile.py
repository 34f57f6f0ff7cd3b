"""Every Monitoring page renders on a hostile home: an API audit log of refused queries only
(no generation, 4xx, unknown names), a published day whose extract is empty, and a day
whose map extract has a NULL in every column in turn (scores, flags, coordinates, ids…),
and a model evaluation of a day whose labels have not landed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from engine.apinode import querylog
from engine.automation import runs
from engine.automation.node import AutomationNode
from nodal_demo import demo
from tests.homes import copy_home, copy_with_previous_day, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "monitoring" / "app.py"
PAGES = [
    "views/status.py",
    "views/fraud_map.py",
    "views/pipeline_health.py",
    "views/model_quality.py",
    "views/api_health.py",
]


def _extract_files(settings, store, day: str) -> list[Path]:
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    folder = node.home / "projects" / demo.PROJECT / "data" / "fraud_map" / f"day={day}"
    files = sorted(folder.glob("*.parquet"))
    assert files, folder
    return files


def _with_nulls(table: pa.Table) -> pa.Table:
    """``table``'s first rows, then per column a copy of a row with that column NULL, then a
    row that is NULL everywhere."""
    head = table.slice(0, min(len(table), 50))
    rows = head.to_pylist()
    hostile = []
    for i, name in enumerate(table.column_names):
        row = dict(rows[i % len(rows)])
        row[name] = None
        hostile.append(row)
    hostile.append(dict.fromkeys(table.column_names))
    return pa.concat_tables([head, pa.Table.from_pylist(hostile, schema=table.schema)])


def _refused_queries(settings, answered: bool = True) -> None:
    """Only refused queries in the API node's audit log, as the node records them (one case
    answered by a generation, with ``answered``), and lines of NULLs."""
    log = querylog.QueryLog(settings.home, demo.API_INFRA)
    refused = {"refused": True, "n_records": 1}
    cases = [
        ("_unknown", "_unknown", None, "predict", 404, "UnknownService"),
        (demo.SERVICE, "_unknown", None, "predict", 404, "UnknownEndpoint"),
        (demo.SERVICE, demo.ENDPOINT, None, "predict", 401, "Unauthorized"),
        (demo.SERVICE, demo.ENDPOINT, None, "invocations", 400, "InvalidJSON"),
        (demo.SERVICE, demo.ENDPOINT, "v1", "predict-multi", 400, "InvalidRequest"),
        ("", "", None, "invocations", 404, "AmbiguousEndpoint"),
        (demo.SERVICE, demo.ENDPOINT, None, "predict", 413, "RequestTooLarge"),
    ]
    if not answered:
        cases = [c for c in cases if c[2] is None]
    try:
        for service, endpoint, generation, method, status, error_type in cases * 3:
            log.record(
                service=service, endpoint=endpoint, generation=generation, method=method,
                status=status, error_type=error_type, duration_us=0, n_records=0,
                features=refused, context=None, result=None,
            )  # fmt: skip
    finally:
        log.close()
    # Lines another writer (or a torn write) left: NULL in every column but the time, then
    # in every column.
    nulls = dict.fromkeys(querylog.JSON_COLUMNS)
    lines = [json.dumps({**nulls, "ts_us": time.time_ns() // 1000}), json.dumps(nulls), "{"]
    segment = querylog.querylog_dir(settings.home, demo.API_INFRA) / "segments" / "x-1-1.jsonl"
    segment.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def hostile(demo_env, tmp_path_factory):
    """A copy of the demo home: the latest day's extract with NULLs, the previous day's
    empty, and an audit log of refused queries only. Returns (settings, latest, previous)."""
    settings, store, latest, previous = copy_with_previous_day(
        demo_env.settings, tmp_path_factory.mktemp("hostile")
    )
    for i, path in enumerate(_extract_files(settings, store, latest)):
        table = pq.read_table(path)
        pq.write_table(_with_nulls(table) if i == 0 else table.slice(0, 0), path)
    for path in _extract_files(settings, store, previous):
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 0), path)
    _refused_queries(settings)
    # Model quality of a day whose labels have not landed yet (chargebacks come later).
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_evaluation", "test", {"day": latest}
    )
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    assert node.run(run_id) in (runs.SUCCESS, runs.WARNING), runs.get_run(store, run_id)
    return settings, latest, previous


@pytest.fixture
def hostile_environ(hostile, monkeypatch):
    settings, latest, previous = hostile
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return hostile


def _open(path: str, **params: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=60))
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, at.exception
    at.switch_page(path).run()
    assert not at.exception, (path, at.exception)
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_hostile_home(hostile_environ, page):
    at = _open(page)
    if page == "views/model_quality.py":
        assert "No labels yet for the evaluated days" in at.info[0].value


@pytest.mark.parametrize("which", ["latest", "previous"])
def test_the_map_renders_a_day_with_nulls_and_an_empty_day(hostile_environ, which):
    _, latest, previous = hostile_environ
    day = latest if which == "latest" else previous
    at = _open("views/fraud_map.py", day=day)
    assert at.selectbox(key="map_day").value == day
    at.toggle(key="map_custom").set_value(True).run()
    assert not at.exception, at.exception
    at.slider(key="map_threshold").set_value(0.0).run()
    assert not at.exception, at.exception


@pytest.mark.parametrize("group", ["endpoint", "generation", "service"])
@pytest.mark.parametrize("bucket", ["minute", "day"])
def test_api_health_renders_refused_queries_only(hostile_environ, group, bucket):
    at = _open("views/api_health.py")
    at.selectbox(key="api_bucket").set_value(bucket).run()
    at.selectbox(key="api_group").set_value(group).run()
    assert not at.exception, at.exception
    assert not at.info  # there is traffic: every query was refused
    for label in at.selectbox(key="api_ab_endpoint").options:
        at.selectbox(key="api_ab_endpoint").set_value(label).run()
        assert not at.exception, (label, at.exception)


def test_api_health_renders_when_no_generation_answered_any_query(demo_env, tmp_path, monkeypatch):
    settings, _ = copy_home(demo_env.settings, tmp_path)
    _refused_queries(settings, answered=False)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    at = _open("views/api_health.py")
    assert any("every one was refused" in c.value for c in at.caption)
