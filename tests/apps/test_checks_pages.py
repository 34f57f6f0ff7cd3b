"""The Studio's checks page (new check kinds, what failed, accept as the new baseline, pandera
YAML) and the Console's run details (what each data check of the run found)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from streamlit.testing.v1 import AppTest

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.design import projects as design
from engine.project import checks
from engine.storage.control import check_baselines
from nodal_demo import demo
from tests.homes import copy_home, environ, sign_in_app

APPS = Path(__file__).resolve().parents[2] / "apps"


def _open(app: str, page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APPS / app / "app.py"), default_timeout=120))
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def home(demo_env, tmp_path, monkeypatch):
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def _table(at: AppTest, column: str):  # noqa: ANN202 - a DataFrame
    for frame in at.dataframe:
        if column in frame.value.columns:
            return frame.value
    raise AssertionError(f"no table with a column {column!r}")


def _checks_yaml(settings) -> dict:  # noqa: ANN001
    root = design.open_project(settings, demo.PROJECT).root
    return yaml.safe_load((root / "checks.yaml").read_text())


def test_the_studio_adds_a_row_condition_refuses_an_unsafe_one_and_shows_what_failed(home):
    settings, _ = home
    at = _open("design_studio", "views/checks.py")
    at.text_input(key="check_name").set_value("sneaky")
    at.selectbox(key="check_type").set_value("row_condition")
    at.text_input(key="check_expression").set_value("amount > (SELECT max(amount) FROM t)")
    at.button[2].click().run()  # "Add check"
    assert "Not added" in " ".join(e.value for e in at.error)
    assert "sneaky" not in {c["name"] for c in _checks_yaml(settings)["transactions"]}

    at.text_input(key="check_name").set_value("small_amounts")
    at.selectbox(key="check_type").set_value("row_condition")
    at.text_input(key="check_expression").set_value("amount < 100 OR card_present")
    at.button[2].click().run()
    assert not at.error, [e.value for e in at.error]
    declared = {c["name"]: c for c in _checks_yaml(settings)["transactions"]}
    assert declared["small_amounts"] == {
        "name": "small_amounts",
        "type": "row_condition",
        "severity": "error",
        "expression": "amount < 100 OR card_present",
    }
    at = _open("design_studio", "views/checks.py")
    at.button(key="run_checks").click().run()
    assert not at.exception
    results = _table(at, "failing rows").set_index("name")
    assert results.loc["small_amounts", "outcome"] == "ERROR"
    assert int(results.loc["small_amounts", "failing rows"]) > 0
    assert "amount=" in results.loc["small_amounts", "examples"]
    assert "failing rows" in _table(at, "check_name").columns  # the history too


def test_the_studio_accepts_a_drifted_day_as_the_new_baseline(home):
    settings, store = home
    project = design.open_project(settings, demo.PROJECT)
    checks.add_check(
        project,
        "transactions",
        {
            "name": "cards_exact",
            "type": "distinct_count_in_range",
            "column": "card_id",
            "history_days": 1,
            "tolerance": 0,
        },
    )
    project = design.open_project(settings, demo.PROJECT)
    days = project.dataset("transactions").partitions()
    for day in days[-3:]:
        checks.run_checks(project, "transactions", day, store, "design", only=["cards_exact"])
    waiting = checks.awaiting_acceptance(project, store, "transactions")
    assert waiting, "a day whose card count differs from the day before fails"
    at = _open("design_studio", "views/checks.py")
    at.selectbox(key="baseline_choice").set_value(0).run()
    at.button(key="accept_baseline").click().run()
    assert not at.error and "accepted by test" in at.success[0].value
    with store.read() as conn:
        row = conn.execute(sa.select(check_baselines)).mappings().one()
    assert (row["actor"], row["check_name"], row["partition"]) == (
        "test",
        "cards_exact",
        waiting[0]["partition"],
    )
    assert not any(
        w["partition"] == row["partition"]
        for w in checks.awaiting_acceptance(project, store, "transactions")
    )


def test_the_studio_imports_a_pandera_schema(home):
    settings, _ = home
    text = (
        "schema_type: dataframe\nversion: 0.35.0\ncolumns:\n  amount:\n    dtype: float64\n"
        "    nullable: false\n    greater_than_or_equal_to:\n      min_value: 0\n"
    )
    at = _open("design_studio", "views/checks.py")
    at.text_area(key="schema_text").set_value(text)
    next(b for b in at.button if b.label == "Import checks").click().run()
    assert not at.error, [e.value for e in at.error]
    names = {c["name"] for c in _checks_yaml(settings)["transactions"]}
    assert {"amount_type", "amount_not_null", "amount_in_range"} <= names


def test_the_console_run_details_show_what_each_check_found(home):
    settings, store = home
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    project = node.project(demo.PROJECT)
    run_id = max(r["run_id"] for r in runs.list_runs(store, demo.AUTOMATION_INFRA))
    project.checks["transactions"] = [
        {"name": "tiny_amounts", "type": "in_range", "column": "amount", "max": 1}
    ]
    day = project.dataset("transactions").partitions()[-1]
    checks.run_checks(project, "transactions", day, store, demo.AUTOMATION_INFRA, run_id)
    at = _open("deployer_console", "views/runs.py")
    at.selectbox(key="run_detail").set_value(run_id).run()
    table = _table(at, "failing rows").set_index("check")
    assert table.loc["tiny_amounts", "outcome"] == "ERROR"
    assert int(table.loc["tiny_amounts", "failing rows"]) > 0
    assert len(table.loc["tiny_amounts", "examples"].split(", ")) == 5
    assert table.loc["columns_unchanged", "outcome"] == "OK"  # the run's own checks
