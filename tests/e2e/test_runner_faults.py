"""The automation runner killed with SIGKILL in the middle of a scoring run: nothing partial
is visible, the run shows ABORTED after the restart, the next run succeeds, and a scheduled
run missed while the runner was stopped is caught up once (the documented policy)."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import time
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from engine.automation import dashboards, runs
from engine.automation.node import AutomationNode
from engine.automation.scheduler import ALIVE
from engine.deployer import deployments as deployer
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

INFRA = demo.AUTOMATION_INFRA
DEP = deployer.deployment_id_for(demo.PROJECT, INFRA)
COPIES = 250  # the big day: the last generated day 250 times over (~400 k rows)


@pytest.fixture
def big_day_home(demo_env, tmp_path):
    """A private home and landing zone whose newest day is big enough to kill mid-scoring."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(demo_env.settings.data_dir, data)
    settings = dataclasses.replace(settings, data_dir=data)
    tx = data / "transactions"
    last = sorted(p.name.split("=")[1] for p in tx.glob("day=*"))[-1]
    big = str(date.fromisoformat(last) + timedelta(days=1))
    (tx / f"day={big}").mkdir()
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT t.* REPLACE (t.transaction_id || '-' || r.c AS transaction_id, "
        f"t.ts + INTERVAL 1 DAY AS ts) FROM read_parquet('{tx}/day={last}/*.parquet') t, "
        f"range({COPIES}) r(c)) TO '{tx}/day={big}/data.parquet' (FORMAT parquet)"
    )
    rows = con.execute(f"SELECT count(*) FROM '{tx}/day={big}/data.parquet'").fetchone()[0]
    con.close()
    env = {**environ(settings), "NODAL_POLL_SECONDS": "0.5", "NODAL_SCORE_CHUNK_ROWS": "20000"}
    return settings, store, env, big, rows


def _start_runner(env, log):
    return procs.start(["-m", "engine.runner", "--infra", INFRA], env, log)


def _status(store, run_id) -> str:
    return runs.get_run(store, run_id)["status"]


def test_sigkill_mid_scoring_then_restart_then_catch_up(big_day_home, tmp_path):
    settings, store, env, big, rows = big_day_home
    node = AutomationNode(settings, store, INFRA)
    log = tmp_path / "runner.log"
    runner = _start_runner(env, log)
    try:
        procs.wait_for(
            lambda: deployer.get_deployment(store, DEP).status == "HEALTHY", 60, "activation", log
        )
        run_id = runs.request_run(store, INFRA, demo.PROJECT, "daily_scoring", "t", {"day": big})
        scored = node.project(demo.PROJECT).dataset("scored")
        staging = scored.path.parent / ".staging"

        def scoring_midway() -> bool:
            steps = {s["name"]: s["status"] for s in runs.get_run(store, run_id)["steps"]}
            return steps.get("score") == "RUNNING" and any(staging.glob(f"day={big}-*/*.parquet"))

        deadline = time.monotonic() + 120
        while not scoring_midway():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert _status(store, run_id) in ("QUEUED", "RUNNING"), runs.get_run(store, run_id)
            time.sleep(0.02)
        procs.stop(runner, signal.SIGKILL)
    finally:
        procs.stop(runner)

    # Killed mid-write: a staging file exists, the output partition does not.
    assert any(staging.glob(f"day={big}-*/*.parquet"))
    assert big not in scored.partitions() and not scored.partition_path(big).exists()
    published = dashboards.published(store, demo.PROJECT, "fraud_map", INFRA)["day"].tolist()
    assert big not in published
    assert _status(store, run_id) == "RUNNING"  # nobody has noticed yet

    runner = _start_runner(env, log)
    try:
        procs.wait_for(lambda: _status(store, run_id) == "ABORTED", 60, "orphan marked", log)
        steps = {s["name"]: s for s in runs.get_run(store, run_id)["steps"]}
        assert steps["score"]["status"] == "ABORTED"
        assert steps["check_incoming"]["status"] == steps["build_features"]["status"] == "SUCCESS"

        again = runs.request_run(store, INFRA, demo.PROJECT, "daily_scoring", "t", {"day": big})
        procs.wait_for(
            lambda: _status(store, again) not in ("QUEUED", "RUNNING"), 180, "the next run", log
        )
        assert _status(store, again) == "SUCCESS", runs.get_run(store, again)
        con = duckdb.connect()
        total, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT transaction_id) FROM "
            f"'{scored.partition_path(big)}/*.parquet'"
        ).fetchone()
        con.close()
        assert total == distinct == rows

        # Only daily_scoring's time trigger stays on (the other scenarios' are switched off).
        node.sync()
        for name, index, _trig in node.enabled_triggers(demo.PROJECT):
            if (name, index) != ("daily_scoring", 0):
                deployer.set_trigger(store, DEP, name, index, False, "test")
    finally:
        procs.stop(runner)  # a clean stop (SIGTERM)

    # The runner stays down across two 06:00 fires (its last "alive" is moved 2 days back).
    node.set_state(ALIVE, (datetime.now(UTC) - timedelta(days=2)).isoformat())
    before = {r["run_id"] for r in runs.list_runs(store, INFRA, limit=500)}
    runner = _start_runner(env, log)
    try:

        def caught_up() -> list[dict]:
            return [
                r
                for r in runs.list_runs(store, INFRA, limit=500)
                if r["run_id"] not in before and r["trigger"] == "time (catch-up)"
            ]

        procs.wait_for(
            lambda: caught_up() and caught_up()[0]["status"] == "SUCCESS", 180, "catch-up", log
        )
        time.sleep(1.5)  # a few more ticks: still one catch-up run, not one per missed fire
        (run,) = caught_up()
        assert run["scenario"] == "daily_scoring"
        assert "missed 2 scheduled run(s)" in log.read_text()
        new = [r for r in runs.list_runs(store, INFRA, limit=500) if r["run_id"] not in before]
        assert [r["run_id"] for r in new] == [run["run_id"]]
    finally:
        procs.stop(runner)
