"""Design Studio pages, run with AppTest against a real prepared home."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import design, models
from engine.storage.datasets import query_df, scan_sql
from tests.homes import copy_home, environ

APP = Path(__file__).resolve().parents[2] / "apps" / "design_studio" / "app.py"


def _open(page: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def studio_copy(demo_env, tmp_path, monkeypatch):
    """A private copy of the demo home, seen by the app (the build changes its files)."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def _node_line(dot: str, node_id: str) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f'"{node_id}" ['))


def test_flow_page_draws_recipes_between_datasets_with_sources_shaded(demo_environ):
    at = _open("pages/flow.py")
    project = demo_environ.project
    assert at.title[0].value == "Flow of fraud"
    dot = at.get("graphviz_chart")[0].proto.spec
    for recipe in project.recipes.values():
        assert f'"recipe:{recipe.name}" -> "ds:{recipe.output}"' in dot
        for name in recipe.inputs:
            assert f'"ds:{name}" -> "recipe:{recipe.name}"' in dot
    assert 'fillcolor="#dbeafe"' in _node_line(dot, "ds:transactions")  # a source
    assert 'fillcolor="#f1f5f9"' in _node_line(dot, "ds:features")  # managed
    assert '"ds:training_set" -> "model:fraud_model"' in dot


def test_flow_page_lists_every_dataset_with_its_partitions(demo_environ):
    at = _open("pages/flow.py")
    table = at.dataframe[0].value.set_index("dataset")
    project = demo_environ.project
    assert sorted(table.index) == sorted(project.datasets)
    transactions = project.dataset("transactions")
    assert table.loc["transactions", "kind"] == "source"
    assert table.loc["transactions", "partitions"] == len(transactions.partitions()) > 0
    assert table.loc["features", "built by"] == "recipes/features.sql"
    assert bool(table.loc["training_set", "exists"]) is True
    assert bool(table.loc["scored", "exists"]) is False  # scored on the automation node only
    assert table.loc["scored", "built by"] == "scenario daily_scoring: score"


def test_build_button_builds_training_set_and_shows_each_recipe(studio_copy):
    settings, _ = studio_copy
    at = _open("pages/flow.py")
    at.button(key="build_training_set").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Built training_set: 3 recipes in")
    runs = at.dataframe[1].value
    assert list(runs["recipe"]) == ["card_profiles", "features", "training_set"]
    project = design.open_project(settings, "fraud")
    expected = query_df(f"SELECT count(*) AS n FROM {scan_sql(project.dataset('training_set'))}")
    assert runs["rows"].iloc[-1] == expected["n"].iloc[0] > 0


def test_a_failing_recipe_is_an_error_message_not_a_traceback(studio_copy):
    settings, _ = studio_copy
    sql = design.open_project(settings, "fraud").root / "recipes" / "training_set.sql"
    sql.write_text("SELECT no_such_column FROM features")
    at = _open("pages/flow.py")
    at.button(key="build_training_set").click().run()
    assert not at.exception
    message = at.error[0].value
    assert "Build of training_set failed" in message and "training_set.sql" in message
    assert "no_such_column" in message
    assert not at.success


def test_model_page_shows_the_active_versions_metrics(demo_environ):
    at = _open("pages/model.py")
    versions = models.list_versions(demo_environ.project, "fraud_model")
    active = next(v for v in versions if v["active"])
    m = active["metrics"]
    tiles = {t.label: t.value for t in at.metric}
    assert tiles["ROC AUC"] == f"{m['roc_auc']:.3f}"
    assert tiles["PR AUC"] == f"{m['pr_auc']:.3f}"
    assert tiles["Recall at 1% FPR"] == f"{m['recall_at_fpr']:.1%}"
    assert tiles["Threshold"] == f"{m['threshold']:.3f}"
    assert f"Validated on {active['validation_days'][0]} to {active['validation_days'][1]}" in (
        at.caption[0].value
    )
    table = at.dataframe[0].value
    assert list(table["version"]) == [v["version"] for v in versions]
    assert list(table["active"]) == [v["active"] for v in versions]


def test_an_empty_home_explains_how_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("NODAL_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("NODAL_DATA_DIR", str(tmp_path / "data"))
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    assert "no project on the design node yet" in at.info[0].value
    assert "nodal project import examples/fraud" in at.info[0].value
    at.switch_page("pages/flow.py").run()  # a bookmarked page URL does not break either
    assert not at.exception and at.info
