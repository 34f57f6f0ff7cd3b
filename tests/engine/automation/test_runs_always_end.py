"""A run always ends: a fault outside a step (the control store, a reporter) marks it
FAILED with the reason, and reporter settings that would fail are refused up front."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.automation import reporters, runs, scenarios
from engine.automation.node import AutomationNode
from engine.project import scenario_spec
from nodal_demo import demo
from tests.homes import copy_home

INFRA = demo.AUTOMATION_INFRA
ONE_STEP = {
    "name": "probe",
    "steps": [{"name": "noop", "type": "sql", "sql": "SELECT 1"}],
}


@pytest.fixture
def node(demo_env, tmp_path) -> AutomationNode:
    settings, store = copy_home(demo_env.settings, tmp_path)
    return AutomationNode(settings, store, INFRA)


def _execute(node: AutomationNode, spec: dict) -> tuple[str, dict]:
    project = node.project(demo.PROJECT)
    project.scenarios["probe"] = spec
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, "probe", "manual")
    assert runs.claim_run(node.store, run_id, node.active_bundle(demo.PROJECT))
    status = scenarios.execute(project, node.store, INFRA, run_id, node.active_bundle(demo.PROJECT))
    return status, runs.get_run(node.store, run_id)


def test_a_control_store_fault_while_recording_a_step_ends_the_run_failed(node, monkeypatch):
    def broken(*args, **kwargs):
        raise sa.exc.OperationalError("INSERT INTO step_runs", {}, Exception("disk I/O error"))

    monkeypatch.setattr(scenarios, "_start_step", broken)
    status, run = _execute(node, ONE_STEP)
    assert status == runs.FAILED
    assert run["status"] == runs.FAILED and "disk I/O error" in run["message"]
    monkeypatch.undo()
    again, _ = _execute(node, ONE_STEP)  # the scenario runs again, no restart needed
    assert again == runs.SUCCESS


def test_a_reporter_that_raises_anything_is_a_failed_report_not_a_stuck_run(node, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("an URL httpx cannot parse")

    monkeypatch.setattr(reporters.httpx, "post", broken)
    spec = {**ONE_STEP, "reporters": [{"type": "webhook", "url": "http://127.0.0.1:9/hook"}]}
    status, run = _execute(node, spec)
    assert status == runs.SUCCESS and run["status"] == runs.SUCCESS
    assert "reporter failed: webhook1" in run["message"]
    (report,) = reporters.list_reports(node.store, run["run_id"])
    assert report["outcome"] == reporters.FAILED and "ValueError" in report["message"]


@pytest.mark.parametrize(
    ("reporter", "problem"),
    [
        ({"type": "webhook", "url": "http://[::1"}, "webhook url must be"),
        ({"type": "webhook", "url": "http://host:99999/x"}, "webhook url must be"),
        ({"type": "webhook", "url": "https://"}, "webhook url must be"),
        ({"type": "webhook", "url": "http://a b/"}, "webhook url must be"),
        ({"type": "webhook", "url": "http://h/", "timeout": "soon"}, "timeout must be"),
        ({"type": "webhook", "url": "http://h/", "timeout": True}, "timeout must be"),
        ({"type": "email", "to": "ops@bank.example", "timeout": -1}, "timeout must be"),
        ({"type": "email", "to": "ops@bank.example\nBcc: all@x.example"}, "e-mail addresses"),
        ({"type": "email", "to": ["ops@bank.example", 7]}, "e-mail addresses"),
        ({"type": "email", "to": []}, "needs to:"),
    ],
)
def test_reporter_settings_that_would_fail_are_refused_with_the_reason(reporter, problem):
    problems = scenario_spec.reporter_problems("s", {"reporters": [reporter]})
    assert len(problems) == 1 and problem in problems[0], problems


def test_good_reporters_pass():
    good = [
        {"type": "webhook", "url": "https://hooks.example/nodal?x=1", "timeout": 5},
        {"type": "email", "to": ["ops@bank.example", "risk@bank.example"]},
        {"type": "log"},
    ]
    assert scenario_spec.reporter_problems("s", {"reporters": good}) == []
