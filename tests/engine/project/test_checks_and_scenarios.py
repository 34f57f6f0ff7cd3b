"""The seed's two data checks and scenario validation, on real generated data."""

from __future__ import annotations

import dataclasses

import pytest

from engine.project import checks, scenario_spec
from engine.project.project import ProjectError, load_project
from engine.storage.control import open_store
from nodal_demo.datagen import GeneratorConfig, generate
from tests.conftest import EXAMPLE
from tests.homes import seed_test_actors

CONFIG = GeneratorConfig(n_cards=300, n_merchants=150, n_days=12, txns_per_day=800)


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """Unseen merchant ids from day 10, an extra column from day 11."""
    root = tmp_path_factory.mktemp("checks")
    cfg = dataclasses.replace(CONFIG, unseen_merchants_from_day=10, extra_column_from_day=11)
    summary = generate(cfg, root / "data")
    project = load_project(EXAMPLE, root / "managed", {"data_dir": str(root / "data")})
    store = open_store(f"sqlite:///{root / 'control.db'}")
    seed_test_actors(store)
    return project, store, summary.days


def _by_name(results):
    return {r.name: r for r in results}


def test_a_normal_day_passes_both_checks(drifted):
    project, store, days = drifted
    results = _by_name(checks.run_checks(project, "transactions", days[9], store, "design"))
    assert results["distinct_merchants_in_typical_range"].outcome == checks.OK
    assert results["columns_unchanged"].outcome == checks.OK


def test_unseen_merchants_break_the_typical_distinct_range(drifted):
    project, store, days = drifted
    result = _by_name(checks.run_checks(project, "transactions", days[10], store, "design"))
    assert result["distinct_merchants_in_typical_range"].outcome == checks.ERROR
    assert "outside the typical range" in result["distinct_merchants_in_typical_range"].message


def test_an_added_column_breaks_the_schema_check(drifted):
    project, store, days = drifted
    result = _by_name(checks.run_checks(project, "transactions", days[11], store, "design"))
    assert result["columns_unchanged"].outcome == checks.ERROR
    assert result["columns_unchanged"].message == "new columns: device_id"


def test_the_first_day_has_no_history_to_learn_from(drifted):
    project, store, days = drifted
    result = _by_name(checks.run_checks(project, "transactions", days[0], store, "design"))
    assert result["distinct_merchants_in_typical_range"].outcome == checks.WARNING


def test_the_example_scenario_is_valid(drifted):
    project, _, _ = drifted
    assert scenario_spec.validate(project, "daily_scoring") == []


def test_invalid_cron_and_unknown_step_types_are_reported(drifted, tmp_path):
    project, _, _ = drifted
    spec = project.scenarios["daily_scoring"]
    project.scenarios["broken"] = {
        **spec,
        "triggers": [{"type": "time", "cron": "61 * * *"}],
        "steps": [*spec["steps"], {"name": "x", "type": "teleport"}],
    }
    problems = " | ".join(scenario_spec.validate(project, "broken"))
    assert "invalid cron '61 * * *'" in problems
    assert "unknown type 'teleport'" in problems
    del project.scenarios["broken"]


def test_a_project_with_a_bad_recipe_input_is_refused(tmp_path):
    import shutil

    shutil.copytree(EXAMPLE, tmp_path / "p")
    flow_yaml = tmp_path / "p" / "flow.yaml"
    flow_yaml.write_text(
        flow_yaml.read_text().replace("{transactions: same", "{transactionz: same")
    )
    with pytest.raises(ProjectError, match="input 'transactionz' is not a dataset"):
        load_project(tmp_path / "p", tmp_path / "m", {"data_dir": "/nowhere"})


# --- triggers, reporters and the validation of scenarios -------------------------------------


@pytest.mark.parametrize(
    ("words", "cron"),
    [
        ("daily at 06:00", "0 6 * * *"),
        ("every day at 6:30", "30 6 * * *"),
        ("weekdays at 07:30", "30 7 * * mon-fri"),
        ("every monday at 05:00", "0 5 * * mon"),
        ("every 15 minutes", "*/15 * * * *"),
        ("hourly", "0 * * * *"),
        ("monthly on day 2 at 01:00", "0 1 2 * *"),
    ],
)
def test_plain_word_schedules_become_cron(words, cron):
    from engine.project import triggers

    assert triggers.schedule_to_cron(words) == cron


def test_unreadable_schedules_are_refused_with_examples():
    from engine.project import triggers

    with pytest.raises(triggers.TriggerError, match="cannot read the schedule 'daily at noon'"):
        triggers.schedule_to_cron("daily at noon")
    with pytest.raises(triggers.TriggerError, match="25:00 is not a time of day"):
        triggers.schedule_to_cron("daily at 25:00")


def _with_scenarios(project, extra):
    saved = dict(project.scenarios)
    project.scenarios.update(extra)
    return saved


def test_a_cycle_of_after_scenario_triggers_is_refused(drifted):
    project, _, _ = drifted
    step = [{"name": "s", "type": "sql", "sql": "SELECT 1"}]
    saved = _with_scenarios(
        project,
        {
            "a": {"steps": step, "triggers": [{"type": "after_scenario", "scenario": "b"}]},
            "b": {"steps": step, "triggers": [{"type": "after_scenario", "scenario": "c"}]},
            "c": {"steps": step, "triggers": [{"type": "after_scenario", "scenario": "a"}]},
            "d": {"steps": step, "triggers": [{"type": "after_scenario", "scenario": "a"}]},
        },
    )
    try:
        problems = " | ".join(scenario_spec.validate(project, "a"))
        assert "after_scenario triggers form a cycle" in problems
        assert {"a", "b", "c"} <= set(problems.split("cycle: ")[1].split(" -> "))
        assert scenario_spec.validate(project, "d") == []  # downstream of a cycle, not in it
    finally:
        project.scenarios.clear()
        project.scenarios.update(saved)


def test_bad_triggers_reporters_and_steps_are_each_named(drifted):
    project, _, _ = drifted
    saved = _with_scenarios(
        project,
        {
            "bad": {
                "steps": [
                    {"name": "q", "type": "sql"},
                    {
                        "name": "t",
                        "type": "train",
                        "model": "fraud_model",
                        "gate": {"metric": "f1"},
                    },
                ],
                "triggers": [
                    {"type": "time", "every": "at teatime"},
                    {"type": "dataset_changed", "dataset": "nope"},
                    {"type": "after_scenario", "scenario": "ghost"},
                    {"type": "moon_phase"},
                ],
                "reporters": [
                    {"type": "webhook", "url": "ftp://x", "timeout": 0},
                    {"type": "pigeon"},
                ],
            }
        },
    )
    try:
        problems = " | ".join(scenario_spec.validate(project, "bad"))
    finally:
        project.scenarios.clear()
        project.scenarios.update(saved)
    for expected in (
        "a sql step needs sql: or file:",
        "gate metric must be one of roc_auc, pr_auc",
        "cannot read the schedule 'at teatime'",
        "dataset 'nope' is not a dataset of the project",
        "scenario 'ghost' is not a scenario of the project",
        "unknown trigger type 'moon_phase'",
        "webhook url must be an http:// or https:// URL with a host",
        "timeout must be a number of seconds in (0, 3600]",
        "unknown reporter type 'pigeon'",
    ):
        assert expected in problems, (expected, problems)


def test_the_example_retrain_scenario_is_valid(drifted):
    project, _, _ = drifted
    assert scenario_spec.validate(project, "retrain") == []
