"""The scenario engine on a real automation node: steps and conditions, abort, reporters
(a webhook that times out), the retrain gate, after-scenario and dataset triggers, and the
catch-up policy of the runner."""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from engine.automation import reporters, runs, scenarios
from engine.automation.node import AutomationNode
from engine.automation.scheduler import ALIVE, Runner
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.project.project import ProjectError
from nodal_demo import demo
from tests.homes import copy_home

INFRA = demo.AUTOMATION_INFRA
DEP = deployer.deployment_id_for(demo.PROJECT, INFRA)


@pytest.fixture
def node(demo_env, tmp_path):
    """A private copy of the demo home (and of its landing zone), seen by its automation node."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    shutil.copytree(demo_env.settings.data_dir, tmp_path / "data")
    settings = dataclasses.replace(settings, data_dir=tmp_path / "data")
    return AutomationNode(settings, store, INFRA)


def _run(node: AutomationNode, spec: dict, params: dict | None = None, name: str = "adhoc"):
    """Execute an in-memory scenario on the node's active bundle; return the run record."""
    project = node.project(demo.PROJECT)
    project.scenarios[name] = spec
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, name, "test", params)
    assert runs.claim_run(node.store, run_id, node.active_bundle(demo.PROJECT))
    scenarios.execute(project, node.store, INFRA, run_id, node.active_bundle(demo.PROJECT))
    return runs.get_run(node.store, run_id)


def _steps(run) -> dict[str, dict]:
    return {s["name"]: {**s, "outputs": json.loads(s["outputs_json"])} for s in run["steps"]}


def test_sql_and_python_steps_with_conditions_and_logs(node):
    run = _run(
        node,
        {
            # Its SQL reads {day} but names no dataset: the scenario says where the day is from.
            "day_from": "transactions",
            "steps": [
                {
                    "name": "count",
                    "type": "sql",
                    "sql": "SELECT count(*) AS n FROM scored WHERE day = '{day}'",
                },
                {
                    "name": "hello",
                    "type": "python",
                    "code": "import os\nprint('hello', os.environ['NODAL_RUN_ID'])",
                },
                {
                    "name": "boom",
                    "type": "python",
                    "code": "print('about to fail')\nraise SystemExit(3)",
                },
                {"name": "skipped", "type": "sql", "sql": "SELECT 1"},
                {"name": "cleanup", "type": "sql", "sql": "SELECT 2", "run_if": "always"},
                {"name": "alert", "type": "sql", "sql": "SELECT 3", "run_if": "prior_failure"},
            ],
        },
    )
    steps = _steps(run)
    assert run["status"] == runs.FAILED
    assert (
        steps["count"]["status"] == "SUCCESS" and steps["count"]["outputs"]["preview"][0]["n"] > 0
    )
    assert steps["hello"]["outputs"]["log"] == [f"hello {run['run_id']}"]
    assert steps["boom"]["status"] == "FAILED"
    assert steps["boom"]["message"] == "python step exited with code 3: about to fail"
    assert steps["skipped"]["status"] == "SKIPPED"
    assert (steps["cleanup"]["status"], steps["alert"]["status"]) == ("SUCCESS", "SUCCESS")
    assert all(s["started_at"] and s["ended_at"] for s in run["steps"] if s["status"] != "SKIPPED")


def test_a_running_scenario_is_aborted_between_and_inside_steps(node):
    project = node.project(demo.PROJECT)
    project.scenarios["slow"] = {
        "steps": [
            {"name": "sleep", "type": "python", "code": "import time\ntime.sleep(60)"},
            {"name": "after", "type": "sql", "sql": "SELECT 1"},
        ]
    }
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, "slow", "test")
    assert runs.claim_run(node.store, run_id, "v1")
    worker = threading.Thread(
        target=scenarios.execute, args=(project, node.store, INFRA, run_id, "v1")
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not runs.get_run(node.store, run_id)["steps"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runs.request_abort(node.store, run_id, "ops") == runs.RUNNING
    worker.join(timeout=20)
    assert not worker.is_alive()
    run = runs.get_run(node.store, run_id)
    steps = _steps(run)
    assert run["status"] == runs.ABORTED and "aborted by ops" in run["message"]
    assert steps["sleep"]["status"] == "ABORTED"  # ended early: the thread joined above
    assert (steps["after"]["status"], steps["after"]["message"]) == (
        "SKIPPED",
        "skipped: run aborted",
    )
    # A queued run is aborted at once; an ended one cannot be.
    queued = runs.request_run(node.store, INFRA, demo.PROJECT, "slow", "test")
    assert runs.request_abort(node.store, queued, "ops") == runs.ABORTED
    assert not runs.claim_run(node.store, queued, "v1")
    with pytest.raises(ProjectError, match="already ended"):
        runs.request_abort(node.store, run_id, "ops")


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/slow":
            time.sleep(3)
        _Hook.received.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def webhook_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_webhook_that_times_out_is_recorded_and_the_run_completes(node, webhook_server):
    run = _run(
        node,
        {
            "steps": [{"name": "q", "type": "sql", "sql": "SELECT 1"}],
            "reporters": [
                {"type": "webhook", "url": f"{webhook_server}/slow", "timeout": 0.5},
                {"type": "webhook", "url": f"{webhook_server}/fast", "name": "chat"},
                {"type": "webhook", "url": f"{webhook_server}/fast", "on": ["FAILED"]},
                {"type": "email", "to": ["ops@example.com"]},
                {"type": "log"},
            ],
        },
    )
    assert run["status"] == runs.SUCCESS
    assert "reporter failed: webhook1, email4" in run["message"]
    reports = {r["reporter"]: r for r in reporters.list_reports(node.store, run["run_id"])}
    assert set(reports) == {"webhook1", "chat", "email4", "log5"}  # webhook3 is for failures
    assert (reports["webhook1"]["outcome"], reports["webhook1"]["message"]) == (
        "FAILED",
        "webhook timed out after 0.5 s",  # it gave up; the 3 s hook did not hold the run
    )
    assert reports["chat"]["outcome"] == "SENT"
    assert (
        reports["email4"]["outcome"] == "FAILED"
        and "NODAL_SMTP_HOST" in reports["email4"]["message"]
    )
    payload = next(p for p in _Hook.received if p["run_id"] == run["run_id"])
    assert payload["status"] == "SUCCESS" and payload["steps"][0]["name"] == "q"


def test_retrain_promotes_only_a_challenger_at_least_as_good(node):
    project = node.project(demo.PROJECT)
    champion = project.active_model_version("fraud_model")
    spec = {
        "steps": [
            {
                "name": "retrain",
                "type": "train",
                "model": "fraud_model",
                "gate": {"metric": "pr_auc", "min_gain": 1.0},
            }
        ]
    }
    kept = _steps(_run(node, spec))["retrain"]["outputs"]
    assert kept["promoted"] is False and kept["champion"] == champion
    assert 0 < kept["champion_score"] <= 1 and 0 < kept["challenger_score"] <= 1
    assert kept["window_rows"] > 0 and "stays active" in kept["message"]
    assert node.project(demo.PROJECT).active_model_version("fraud_model") == champion

    spec["steps"][0].update(gate={"metric": "roc_auc", "min_gain": -1.0}, build=False)
    promoted = _steps(_run(node, spec))["retrain"]["outputs"]
    assert promoted["promoted"] is True and promoted["challenger"] != champion
    assert node.project(demo.PROJECT).active_model_version("fraud_model") == promoted["challenger"]
    # The bundle itself is untouched: its zip still verifies.
    info = bundles.get_bundle(node.store, demo.PROJECT, node.active_bundle(demo.PROJECT))
    bundles.verify_bundle(info.path, project=demo.PROJECT)


def test_after_scenario_and_dataset_changed_triggers_queue_runs(node):
    design_project = design.open_project(node.settings, demo.PROJECT)
    (design_project.root / "scenarios" / "after_scoring.yaml").write_text(
        "name: after_scoring\n"
        "day_from: scored\n"
        "triggers:\n  - {type: after_scenario, scenario: daily_scoring}\n"
        "steps:\n  - {name: count, type: sql, sql: \"SELECT count(*) FROM scored WHERE day = '{day}'\"}\n"
    )
    bundles.create_bundle(node.settings.home, node.store, design_project, "v-trig", "", "t")
    deployer.deploy_bundle(node.store, demo.PROJECT, "v-trig", INFRA, "ops")
    assert node.sync()[0].status == "HEALTHY"

    day = node.project(demo.PROJECT).dataset("transactions").partitions()[-2]
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, "daily_scoring", "t", {"day": day})
    assert node.run(run_id) == runs.SUCCESS
    followers = node.queue_followers(run_id)
    assert len(followers) == 1
    follower = runs.get_run(node.store, followers[0])
    assert follower["scenario"] == "after_scoring" and follower["trigger"].startswith(
        "after daily_scoring"
    )
    assert json.loads(follower["params_json"]) == {"day": day}
    assert node.run(followers[0]) == runs.SUCCESS
    deployer.set_trigger(node.store, DEP, "after_scoring", 0, False, "ops")
    assert node.queue_followers(run_id) == []

    # The example's dataset trigger is off in YAML; ops switch it on for this deployment.
    assert node.watch_datasets() == []
    deployer.set_trigger(node.store, DEP, "daily_scoring", 1, True, "ops")
    assert node.watch_datasets() == []  # the first look only records what is there
    transactions = node.project(demo.PROJECT).dataset("transactions")
    last = transactions.partitions()[-1]
    shutil.copytree(transactions.partition_path(last), transactions.partition_path("2099-01-01"))
    (queued,) = node.watch_datasets()
    run = runs.get_run(node.store, queued)
    assert (run["scenario"], json.loads(run["params_json"])) == (
        "daily_scoring",
        {"day": "2099-01-01"},
    )
    assert run["trigger"] == "dataset transactions changed (2099-01-01)"
    assert node.watch_datasets() == []


def _catch_up_runs(node) -> list[dict]:
    return [r for r in runs.list_runs(node.store, INFRA) if r["trigger"] == "time (catch-up)"]


def test_catch_up_policy_one_run_for_missed_fires_only_after_a_runner_was_down(node):
    node.sync()
    # Never ran here: nothing was missed.
    Runner(node, BackgroundScheduler(timezone="UTC")).reconcile_schedules()
    assert _catch_up_runs(node) == []

    node.set_state(ALIVE, (datetime.now(UTC) - timedelta(days=3)).isoformat())
    skipping = Runner(node, BackgroundScheduler(timezone="UTC"), catch_up="skip")
    skipping.reconcile_schedules()
    assert _catch_up_runs(node) == []

    runner = Runner(node, BackgroundScheduler(timezone="UTC"), catch_up="once")
    trigger = runner.node.enabled_triggers(demo.PROJECT)
    daily = next(t for name, _, t in trigger if name == "daily_scoring")
    from engine.project import triggers

    fires = runner.missed_fires(demo.PROJECT, "daily_scoring", triggers.cron_trigger(daily))
    assert len(fires) == 3 and all(f.hour == 6 and f.minute == 0 for f in fires)
    runner.reconcile_schedules()
    caught = [r for r in _catch_up_runs(node) if r["scenario"] == "daily_scoring"]
    assert len(caught) == 1 and caught[0]["status"] == "QUEUED"  # three fires, one run
    runner.reconcile_schedules()  # later ticks never catch up again
    again = Runner(node, BackgroundScheduler(timezone="UTC"))  # nor does the next start:
    again.reconcile_schedules()  # the catch-up run counts as the scenario's last time run
    assert len([r for r in _catch_up_runs(node) if r["scenario"] == "daily_scoring"]) == 1
