"""Scenario commands: ``nodal scenario …``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.cli.common import add, print_rows, store
from engine.core.settings import Settings


def cmd_scenario_run(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation import runs

    control = store(s)
    params = {"day": a.day} if a.day else {}
    run_id = runs.request_run(control, a.infra, a.project, a.scenario, "manual", params)
    if a.in_process:
        from engine.automation.node import AutomationNode

        node = AutomationNode(s, control, a.infra)
        node.sync()
        node.run(run_id)
    elif a.no_wait:
        print(f"run {run_id} queued on {a.infra}")
        return 0
    deadline = time.monotonic() + a.timeout
    run = runs.get_run(control, run_id)
    while run["status"] in ("QUEUED", "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.5)
        run = runs.get_run(control, run_id)
    if run["status"] == "QUEUED":
        print(
            f"error: run {run_id} is still queued after {a.timeout:.0f}s: is `nodal runner --infra {a.infra}` "
            "running?",
            file=sys.stderr,
        )
        return 1
    _print_run(control, run)
    return 0 if run["status"] in ("SUCCESS", "WARNING") else 1


def _print_run(control, run: dict) -> None:  # noqa: ANN001
    from engine.automation import reporters

    for step in run["steps"]:
        print(f"  {step['name']:<16} {step['status']:<8} {step['message']}")
    for rep in reporters.list_reports(control, run["run_id"]):
        print(f"  reporter {rep['reporter']:<7} {rep['outcome']:<8} {rep['message']}")
    print(
        f"run {run['run_id']} of {run['scenario']} on {run['infra_id']}: {run['status']} {run['message']}"
    )


def cmd_scenario_show(s: Settings, a: argparse.Namespace) -> int:
    import json

    from engine.automation import runs

    control = store(s)
    run = runs.get_run(control, a.run_id)
    print(
        f"trigger: {run['trigger']}  bundle: {run['bundle_id'] or '-'}  requested {run['requested_at']}"
        f"  started {run['started_at'] or '-'}  ended {run['ended_at'] or '-'}"
    )
    _print_run(control, run)
    if a.logs:
        for step in run["steps"]:
            outputs = json.loads(step["outputs_json"] or "{}")
            for line in outputs.get("log", []):
                print(f"  [{step['name']}] {line}")
    return 0


def cmd_scenario_abort(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation import runs, scenarios

    status = runs.request_abort(store(s), a.run_id, s.user)
    if status == runs.ABORTED:
        print(f"run {a.run_id} aborted before it started")
    else:
        print(
            f"run {a.run_id}: abort requested; the runner interrupts its running step within "
            f"{scenarios.ABORT_POLL_SECONDS:g} s"
        )
    return 0


def cmd_scenario_runs(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation import runs

    print_rows(
        runs.list_runs(store(s), a.infra, a.limit),
        [
            "run_id",
            "infra_id",
            "scenario",
            "trigger",
            "status",
            "requested_at",
            "ended_at",
            "message",
        ],
    )
    return 0


def register(top: Any) -> None:
    scen = top.add_parser("scenario", help="scenarios on automation nodes").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        scen,
        "run",
        cmd_scenario_run,
        "Run a scenario on an automation node now and show its steps.",
    )
    p.add_argument("scenario")
    p.add_argument("--project", default="fraud")
    p.add_argument("--infra", required=True)
    p.add_argument("--day", help="partition to process (default: the newest)")
    p.add_argument("--no-wait", action="store_true", help="queue the run and return")
    p.add_argument(
        "--in-process", action="store_true", help="run it in this process instead of the runner"
    )
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds to wait for the runner (default 600)"
    )
    p = add(scen, "show", cmd_scenario_show, "Show one run: its steps, timing, reporters.")
    p.add_argument("run_id", type=int)
    p.add_argument("--logs", action="store_true", help="print every step's log lines")
    p = add(scen, "abort", cmd_scenario_abort, "Abort a queued or running scenario run.")
    p.add_argument("run_id", type=int)
    p = add(scen, "runs", cmd_scenario_runs, "List recent scenario runs.")
    p.add_argument("--infra")
    p.add_argument("--limit", type=int, default=20)
