"""Scenario commands: ``nodal scenario …``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.commands.common import add, print_rows, store
from engine.settings import Settings


def cmd_scenario_run(s: Settings, a: argparse.Namespace) -> int:
    from engine import scenarios

    control = store(s)
    params = {"day": a.day} if a.day else {}
    run_id = scenarios.request_run(control, a.infra, a.project, a.scenario, "manual", params)
    if a.in_process:
        from engine.automation import AutomationNode

        node = AutomationNode(s, control, a.infra)
        node.sync()
        node.run(run_id)
    elif a.no_wait:
        print(f"run {run_id} queued on {a.infra}")
        return 0
    deadline = time.monotonic() + a.timeout
    run = scenarios.get_run(control, run_id)
    while run["status"] in ("QUEUED", "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.5)
        run = scenarios.get_run(control, run_id)
    if run["status"] == "QUEUED":
        print(
            f"error: run {run_id} is still queued after {a.timeout:.0f}s: is `nodal runner --infra {a.infra}` "
            "running?",
            file=sys.stderr,
        )
        return 1
    for step in run["steps"]:
        print(f"  {step['name']:<16} {step['status']:<8} {step['message']}")
    print(f"run {run_id} of {a.scenario} on {a.infra}: {run['status']} {run['message']}")
    return 0 if run["status"] in ("SUCCESS", "WARNING") else 1


def cmd_scenario_runs(s: Settings, a: argparse.Namespace) -> int:
    from engine import scenarios

    print_rows(
        scenarios.list_runs(store(s), a.infra, a.limit),
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
    p = add(scen, "runs", cmd_scenario_runs, "List recent scenario runs.")
    p.add_argument("--infra")
    p.add_argument("--limit", type=int, default=20)
