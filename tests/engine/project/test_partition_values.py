"""A stray landing-zone folder never becomes "latest" nor reaches SQL: builds and scenario
runs asked for a day that is not an ISO date are refused before any SQL runs, with the
reason; a valid day builds as before."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from engine.automation import runs, scenarios
from engine.monitoring import deployed
from engine.project import flow
from engine.storage import datasets as ds
from tests.engine.small_project import make_small

EVIL = "9') OR true; COPY (SELECT 42 AS x) TO 'pwned.csv'; --"
DAYS = ["2024-01-05", "2024-01-06", "2024-01-07"]

# ``targets`` is not partitioned but read "same": a build of some days filters it on the
# day column, which is where a day used to be formatted into the SQL.
DAILY_SQL = "SELECT t.day, t.goal, (SELECT count(*) FROM shops) AS shops FROM targets t -- per day"
DAILY_PY = """
def run(inputs, variables):
    out = inputs["targets"][["day", "goal"]].copy()
    out["shops"] = len(inputs["shops"])
    return out
"""
SCENARIO = {
    "name": "daily",
    "day_from": "shops",  # "latest": the newest day of the landing zone
    "steps": [{"name": "build", "type": "build", "dataset": "daily"}],
}


def _project(tmp_path, language: str = "sql"):
    small = make_small(tmp_path)
    root = small.project().root
    (root / "recipes").mkdir(exist_ok=True)
    (root / "recipes" / f"daily.{language}").write_text(
        DAILY_SQL if language == "sql" else DAILY_PY
    )
    with open(root / "datasets.yaml", "a") as fh:
        fh.write("targets:\n  kind: managed\n")
        fh.write("daily:\n  kind: managed\n  partitioned_by: day\n")
    text = (root / "flow.yaml").read_text().replace("recipes: {}", "recipes:")
    if "recipes:" not in text:
        text += "recipes:\n"
    text += (
        f"  daily:\n    {'python' if language == 'py' else 'sql'}: recipes/daily.{language}\n"
        "    inputs: {shops: same, targets: same}\n    output: daily\n"
    )
    (root / "flow.yaml").write_text(text)
    project = small.project()
    goals = pd.DataFrame({"day": [pd.Timestamp(d).date() for d in DAYS], "goal": [1, 2, 3]})
    ds.write(project.dataset("targets"), goals)
    shops = project.dataset("shops")
    assert shops.partitions() == DAYS
    # A careless copy of a real day under a hostile (or merely stray) name.
    for stray in (f"day={EVIL}", "day=tmp"):
        shutil.copytree(shops.partition_path(DAYS[0]), shops.path / stray)
    return small, project


@pytest.mark.parametrize("language", ["sql", "py"])
def test_a_build_of_an_invalid_day_is_refused_and_runs_nothing(tmp_path, monkeypatch, language):
    small, project = _project(tmp_path, language)
    monkeypatch.chdir(tmp_path)  # where the injected COPY would write
    for bad in (EVIL, "tmp", "2024-01-32"):
        with pytest.raises(ds.InvalidPartition, match="not an ISO date YYYY-MM-DD"):
            flow.build(project, "daily", [bad])
    assert not (tmp_path / "pwned.csv").exists()
    assert not project.dataset("daily").exists()
    assert project.dataset("shops").partitions() == DAYS
    assert len(ds.read_df(project.dataset("shops"))) == 4  # the copies are never read
    # A valid day builds as before.
    (run,) = flow.build(project, "daily", ["2024-01-06"]).runs
    assert (run.partitions, run.rows) == (["2024-01-06"], 1)
    frame = ds.read_df(project.dataset("daily"))
    assert frame["day"].astype(str).tolist() == ["2024-01-06"]
    assert frame["goal"].tolist() == [2] and frame["shops"].tolist() == [1]


def test_stray_folders_do_not_become_latest(tmp_path):
    small, project = _project(tmp_path)
    assert flow.available_partitions(project, "shops")[-1] == DAYS[-1]
    variables = scenarios.resolve_variables(project, SCENARIO, {})
    assert variables["day"] == DAYS[-1]
    stray = sorted([f"day={EVIL}", "day=tmp"])
    assert project.dataset("shops").invalid_partitions() == stray
    # What Monitoring's Pipeline health page warns about.
    assert deployed.stray_partitions(project) == {"shops": stray}


def _run(small, project, params: dict[str, str]) -> tuple[str, dict]:
    project.scenarios["daily"] = SCENARIO
    run_id = runs.request_run(small.store, "node-a", project.name, "daily", "manual", params)
    assert runs.claim_run(small.store, run_id, None)
    status = scenarios.execute(project, small.store, "node-a", run_id, None)
    return status, runs.get_run(small.store, run_id)


def test_a_scenario_run_for_an_invalid_day_fails_with_the_reason(tmp_path, monkeypatch):
    small, project = _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    status, run = _run(small, project, {"day": EVIL})
    assert status == runs.FAILED
    assert "invalid partition for dataset 'shops'" in run["message"]
    assert "not an ISO date YYYY-MM-DD" in run["message"]
    assert not (tmp_path / "pwned.csv").exists() and not project.dataset("daily").exists()
    # A valid day, and "latest" (the newest real day), run as before.
    status, run = _run(small, project, {"day": "2024-01-06"})
    assert status == runs.SUCCESS, run["message"]
    status, run = _run(small, project, {})
    assert status == runs.SUCCESS, run["message"]
    assert project.dataset("daily").partitions() == ["2024-01-06", "2024-01-07"]


def test_a_sql_step_binds_quoted_variables_as_parameters(tmp_path):
    """``'{day}'`` in a sql step is a bound parameter (``DATE '{day}'`` too), so a variable
    holding a quote is a value, not SQL; a quoted placeholder in a comment stays text."""
    small, project = _project(tmp_path)
    with open(project.root / "datasets.yaml", "a") as fh:
        fh.write("counts:\n  kind: managed\n")
    project = small.project()
    project.variables["label"] = "it's -- not SQL'); DROP TABLE x; --"
    sql = (
        "SELECT DATE '{day}' AS day, '{label}' AS label, count(*) AS n\n"
        "FROM daily WHERE day = '{day}' -- only '{day}'"
    )
    spec = {
        "name": "daily",
        "day_from": "shops",
        "steps": [
            {"name": "build", "type": "build", "dataset": "daily"},
            {"name": "count", "type": "sql", "sql": sql, "output": "counts"},
        ],
    }
    project.scenarios["daily"] = spec
    run_id = runs.request_run(small.store, "node-a", project.name, "daily", "manual", {})
    assert runs.claim_run(small.store, run_id, None)
    status = scenarios.execute(project, small.store, "node-a", run_id, None)
    assert status == runs.SUCCESS, runs.get_run(small.store, run_id)["message"]
    frame = ds.read_df(project.dataset("counts"))
    assert frame["day"].astype(str).tolist() == [DAYS[-1]]
    assert frame["label"].tolist() == [project.variables["label"]]
    assert frame["n"].tolist() == [1]
