"""What a project declares instead of the platform assuming it: the day a scenario processes,
what a model's evaluation watches, what a map dashboard draws (definitions only, no data)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from engine.project import dashboard_spec, model_spec, scenario_spec
from engine.project.project import Project, load_project
from tests.conftest import EXAMPLE


@pytest.fixture
def project(tmp_path: Path) -> Project:
    loaded = load_project(EXAMPLE, tmp_path / "managed", {"data_dir": str(tmp_path / "data")})
    loaded.models = copy.deepcopy(loaded.models)
    return loaded


def test_the_example_is_valid_and_declares_its_day_source(project):
    for name in project.scenarios:
        assert scenario_spec.validate(project, name) == [], name
    assert scenario_spec.day_source(project, project.scenarios["daily_scoring"]) == "transactions"
    assert dashboard_spec.problems(project, "fraud_map") == []
    assert dashboard_spec.map_dashboards(project) == ["fraud_map"]


def test_without_day_from_the_day_comes_from_the_first_partitioned_dataset(project):
    spec = {"steps": [{"name": "s", "type": "score", "model": "fraud_model", "input": "features",
                       "output": "scored"}]}  # fmt: skip
    assert scenario_spec.day_source(project, spec) == "features"
    project.scenarios["adhoc"] = spec
    assert scenario_spec.validate(project, "adhoc") == []
    # A step that reads {day} with nothing to take it from: validation says to declare it.
    project.scenarios["counts"] = {
        "steps": [{"name": "q", "type": "sql", "sql": "SELECT * FROM scored WHERE day = '{day}'"}]
    }
    (problem,) = scenario_spec.validate(project, "counts")
    assert "use {day}" in problem and "day_from" in problem
    project.scenarios["counts"]["day_from"] = "cards"
    (problem,) = scenario_spec.validate(project, "counts")
    assert "'cards' is not a partitioned dataset" in problem
    project.scenarios["counts"]["day_from"] = "transactions"
    assert scenario_spec.validate(project, "counts") == []
    # No {day} anywhere: nothing to declare.
    project.scenarios["plain"] = {"steps": [{"name": "q", "type": "sql", "sql": "SELECT 1"}]}
    assert scenario_spec.validate(project, "plain") == []


def test_an_evaluate_step_needs_model_and_input_and_known_options(project):
    steps = project.scenarios["daily_evaluation"]["steps"]
    evaluate = next(s for s in steps if s["type"] == "evaluate")
    evaluate.pop("input")
    evaluate["id_columns"] = ["merchant_id"]  # the old option: refused with the known ones
    problems = " | ".join(scenario_spec.validate(project, "daily_evaluation"))
    assert "an evaluate step needs input:" in problems
    assert "unknown option(s) id_columns" in problems and "unseen_ids" in problems


def test_the_model_declares_what_its_evaluation_reads(project):
    m = model_spec.monitoring(project, "fraud_model")
    assert (m.id_column, m.label_column, m.labels) == ("transaction_id", "is_fraud", "labels")
    assert m.location == ("merchant_latitude", "merchant_longitude") and m.not_applicable() == {}
    # A step override switches a family off; it is then not applicable, with the reason.
    off = model_spec.monitoring(project, "fraud_model", {"location": [], "labels": ""})
    assert set(off.not_applicable()) == {
        "location",
        "performance",
        "performance_decay",
        "missed_fraud",
    }
    spec = project.models["fraud_model"]
    spec["monitoring"] = {**spec["monitoring"], "labels": "cards", "location": ["a"], "x": 1}
    del spec["id_column"]
    problems = " | ".join(model_spec.problems(project, "fraud_model"))
    assert "unknown monitoring key(s) x" in problems
    assert "location must name two columns" in problems
    assert "labels 'cards' must be partitioned" in problems
    assert "labels need id_column" in problems
    assert model_spec.truth(project, "fraud_model") is None  # no id column to join it on


def test_a_map_dashboard_declares_its_roles(project):
    doc = project.dashboards["fraud_map"]
    spec = dashboard_spec.map_spec("fraud_map", doc, ("proba", "is_flagged"))
    assert (spec.latitude, spec.id, spec.amount) == (
        "merchant_latitude",
        "transaction_id",
        "amount",
    )
    assert spec.filters == ["merchant_category", "channel"] and spec.label("rows") == "Transactions"
    bare = {"type": "map", "source": "scored", "output": "fraud_map", "roles": {"latitude": "a"}}
    problems = " | ".join(dashboard_spec.problems(project, "m", bare))
    assert "a map needs roles: longitude" in problems
    shipped = {**doc, "roles": {**doc["roles"], "id": "nope", "colour": "x"}, "filters": ["day"]}
    problems = " | ".join(dashboard_spec.problems(project, "fraud_map", shipped))
    assert "id 'nope' is not one of its columns" in problems
    assert "unknown role(s) colour" in problems
    assert "filter 'day' has a name the map page keeps" in problems
    # A dashboard without a type is not a map: only its datasets are checked.
    assert dashboard_spec.problems(project, "t", {"source": "scored", "output": "nope"}) == [
        "dashboard t: output 'nope' is not a dataset of the project"
    ]


def test_a_run_without_a_day_processes_the_newest_day_of_its_first_partitioned_dataset(
    claims_env, demo_env
):
    from engine.automation.scenarios import resolve_variables
    from engine.project import flow

    claims = claims_env.node_project()
    nightly = claims.scenarios["nightly"]  # no day_from: its score step's input, claims
    assert scenario_spec.day_source(claims, nightly) == "claims"
    assert resolve_variables(claims, nightly, {})["day"] == claims_env.days[-1]
    assert resolve_variables(claims, nightly, {"day": "2026-03-02"})["day"] == "2026-03-02"
    # A dataset the flow builds: the newest day its sources read `same` all have.
    fraud = demo_env.project
    transactions = fraud.dataset("transactions").partitions()
    assert flow.partitioned_sources(fraud, "features") == ["transactions"]
    assert flow.available_partitions(fraud, "features") == transactions
    assert flow.partitioned_sources(fraud, "training_set") == []  # reads its inputs whole
