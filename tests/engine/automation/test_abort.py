"""Abort interrupts a step stuck in one long DuckDB statement or in LightGBM training.

Each aborted step below would not end by itself within any test session (a 10^12-row cross
join, an endless recipe, 10 M boosting rounds): the step ending at all, ABORTED with who
asked and nothing partial left behind, is what the tests prove. A broken abort hangs the
test until pytest's own timeout fails it.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from engine.automation import runs, scenarios
from engine.automation.node import AutomationNode
from engine.models import saved as models
from engine.project import flow
from engine.project.project import Project
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.homes import copy_home

INFRA = demo.AUTOMATION_INFRA
# A 10^12-row cross join: minutes to hours on this machine, unless interrupted.
ENDLESS_SQL = (
    "SELECT a.range AS x, '{day}' AS day FROM range(1000000) a, range(1000000) b "
    "WHERE (a.range * b.range) % 7 = 3"
)
START_WAIT = 90.0  # how long to wait for the step (or the training) to have started


@pytest.fixture(scope="module")
def node(demo_env, tmp_path_factory) -> AutomationNode:
    """A private copy of the demo home (training set built); aborts must leave its data as is."""
    root = tmp_path_factory.mktemp("abort")
    settings, store = copy_home(demo_env.settings, root)
    shutil.copytree(demo_env.settings.data_dir, root / "data")
    node = AutomationNode(dataclasses.replace(settings, data_dir=root / "data"), store, INFRA)
    flow.build(node.project(demo.PROJECT), "training_set")
    return node


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` (staging debris included) with its size and mtime."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _abort_while_running(
    node: AutomationNode,
    project: Project,
    name: str,
    spec: dict,
    started: threading.Event | None = None,
) -> dict:
    """Start scenario ``spec`` in a thread, abort it once its step runs; the run record.

    With ``started``, the abort waits for that event too (e.g. training has begun).
    """
    project.scenarios[name] = spec
    run_id = runs.request_run(node.store, INFRA, demo.PROJECT, name, "test")
    assert runs.claim_run(node.store, run_id, node.active_bundle(demo.PROJECT))
    worker = threading.Thread(
        target=scenarios.execute,
        args=(project, node.store, INFRA, run_id, node.active_bundle(demo.PROJECT)),
        daemon=True,
    )
    worker.start()
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        steps = runs.get_run(node.store, run_id)["steps"]
        if steps and steps[0]["status"] == runs.RUNNING:
            break
        time.sleep(0.05)
    if started is not None:
        assert started.wait(START_WAIT)
    assert runs.request_abort(node.store, run_id, "ops-on-call") == runs.RUNNING
    worker.join()  # returns only because the abort stopped the step
    return runs.get_run(node.store, run_id)


def _assert_aborted_by_ops(run: dict) -> None:
    step = run["steps"][0]
    assert run["status"] == runs.ABORTED, run
    assert "aborted by ops-on-call" in run["message"]
    assert step["status"] == runs.ABORTED and "aborted by ops-on-call" in step["message"]
    assert step["ended_at"]


def test_abort_interrupts_a_long_sql_step_and_writes_nothing(node):
    project = node.project(demo.PROJECT)
    day = project.dataset("scored").partitions()[-1]
    before = _snapshot(project.data_root)
    run = _abort_while_running(
        node,
        project,
        "endless_sql",
        {
            "steps": [
                {"name": "endless", "type": "sql", "sql": ENDLESS_SQL, "output": "scored"},
                {"name": "after", "type": "sql", "sql": "SELECT 1"},
            ]
        },
    )
    _assert_aborted_by_ops(run)
    assert "Interrupted" in run["steps"][0]["message"]  # stopped inside DuckDB, not after it
    assert run["steps"][1]["status"] == runs.SKIPPED
    # The partition it was rewriting is the old file, byte for byte; no staging debris.
    assert _snapshot(project.data_root) == before
    assert day in project.dataset("scored").partitions()


def test_abort_interrupts_a_build_step_inside_its_recipe(node):
    project = node.project(demo.PROJECT)
    recipe = project.recipes["card_profiles"]
    # card_profiles is partitioned by day: the build keeps the rows of the day it writes,
    # a filter DuckDB must not be able to push into one side of the join (the empty result
    # would come at once)
    project.recipes["card_profiles"] = dataclasses.replace(
        recipe, sql=ENDLESS_SQL.replace("'{day}'", "CAST(a.range + b.range AS VARCHAR)")
    )
    before = _snapshot(project.data_root)
    run = _abort_while_running(
        node,
        project,
        "endless_build",
        {"steps": [{"name": "profiles", "type": "build", "dataset": "card_profiles"}]},
    )
    _assert_aborted_by_ops(run)
    assert "card_profiles" in run["steps"][0]["message"]  # the recipe that was interrupted
    assert _snapshot(project.data_root) == before


def test_abort_stops_a_long_training_and_saves_no_version(node, monkeypatch):
    # A pass-through spy: the real LightGBM training runs; the test learns when it began,
    # so the abort lands inside the boosting loop, not before it.
    boosting = threading.Event()
    real_train = models.lgb.train

    def lgb_train(*args, **kwargs):
        boosting.set()
        return real_train(*args, **kwargs)

    monkeypatch.setattr(models.lgb, "train", lgb_train)
    project = node.project(demo.PROJECT)
    spec = project.models["fraud_model"]
    # Hours of boosting: ten million rounds and no early stop.
    spec["params"] = {
        **spec["params"],
        "num_boost_round": 10_000_000,
        "early_stopping_rounds": 10_000_000,
    }
    model_dir = project.saved_models_dir("fraud_model")
    before = _snapshot(model_dir)
    run = _abort_while_running(
        node,
        project,
        "endless_training",
        {"steps": [{"name": "retrain", "type": "train", "model": "fraud_model", "build": False}]},
        started=boosting,
    )
    _assert_aborted_by_ops(run)
    assert _snapshot(model_dir) == before  # no new version, no staging folder, same ACTIVE


class _Enough(Exception):
    pass


def test_should_stop_is_asked_at_every_boosting_iteration(node):
    project = node.project(demo.PROJECT)
    spec = project.models["fraud_model"]
    spec["params"] = {**spec["params"], "num_boost_round": 1000, "early_stopping_rounds": 1000}
    model_dir = project.saved_models_dir("fraud_model")
    before = _snapshot(model_dir)
    calls = []

    def stop_after_three_iterations() -> None:
        calls.append(1)
        if len(calls) > 3:  # once before training, then after iterations 1, 2, 3
            raise _Enough

    with pytest.raises(_Enough):
        models.train(
            project, "fraud_model", "test", activate=False, should_stop=stop_after_three_iterations
        )
    assert len(calls) == 4
    assert _snapshot(model_dir) == before


def test_a_scope_interrupt_refuses_new_connections():
    with ds.interrupt_scope() as scope:
        with ds.session() as con:
            assert con.execute("SELECT 42").fetchone() == (42,)
        scope.interrupt()
        with pytest.raises(ds.Interrupted), ds.session():
            pass
    with ds.session() as con:  # outside the scope: unaffected
        assert con.execute("SELECT 1").fetchone() == (1,)


def test_abort_kills_a_python_recipe_running_in_a_build_step(node, tmp_path):
    """The recipe's child process (and what it started) is killed, not left to its timeout."""
    project = node.project(demo.PROJECT)
    pid_file = tmp_path / "recipe.pid"
    code = (
        "import os, subprocess, time\n"
        "def run(inputs, variables):\n"
        "    child = subprocess.Popen(['sleep', '3600'])  # started by the recipe: dies too\n"
        f"    open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "    time.sleep(3600)\n"
    )
    recipe = project.recipes["card_profiles"]
    project.recipes["card_profiles"] = dataclasses.replace(
        recipe, sql_file="recipes/card_profiles.py", sql=code
    )
    before = _snapshot(project.data_root)
    started = threading.Event()
    threading.Thread(target=lambda: (_wait_for(pid_file), started.set()), daemon=True).start()
    run = _abort_while_running(
        node,
        project,
        "endless_python",
        {"steps": [{"name": "profiles", "type": "build", "dataset": "card_profiles"}]},
        started,
    )
    _assert_aborted_by_ops(run)
    assert "recipes/card_profiles.py was stopped" in run["steps"][0]["message"]
    for pid in map(int, pid_file.read_text().split()):
        assert not _alive(pid), pid
    assert _snapshot(project.data_root) == before


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline and not (
        path.exists() and len(path.read_text().split()) == 2
    ):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its parent counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
