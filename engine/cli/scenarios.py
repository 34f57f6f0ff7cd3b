"""Scenario commands: ``nodal scenario …``: runs on automation nodes (run, show, abort,
runs) and the design project's scenario definitions (define, definition)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from engine.cli.common import (
    add,
    add_project,
    open_project,
    print_rows,
    project_name,
    read_text_file,
    store,
)
from engine.core.settings import Settings


def cmd_scenario_run(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation import runs

    control = store(s)
    params = {"day": a.day} if a.day else {}
    project = project_name(s, a)
    run_id = runs.request_manual_run(control, s.user, a.infra, project, a.scenario, params)
    if a.in_process:
        from engine.automation.node import AutomationNode

        node = AutomationNode(s, control, a.infra)
        node.sync()
        node.run(run_id)
    elif a.no_wait:
        print(f"run {run_id} of {project}/{a.scenario} queued on {a.infra}")
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
        f"run {run['run_id']} of {run['project']}/{run['scenario']} on {run['infra_id']}: "
        f"{run['status']} {run['message']}"
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


def cmd_scenario_definition(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    text, _ = design.read_folder_definition(open_project(s, a), "scenarios", a.name)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_scenario_define(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = open_project(s, a)
    existed = a.name in project.scenarios
    design.save_folder_definition(project, "scenarios", a.name, read_text_file(a.file), None)
    print(
        f"scenario {a.name} {'replaced' if existed else 'created'} in project {project.name} "
        f"(scenarios/{a.name}.yaml)"
    )
    return 0


def register(top: Any) -> None:
    scen = top.add_parser(
        "scenario", help="scenario definitions of a project, and their runs on automation nodes"
    ).add_subparsers(dest="cmd", required=True)
    p = add(
        scen,
        "run",
        cmd_scenario_run,
        "Run a scenario on an automation node now and show its steps.",
    )
    p.add_argument("scenario")
    add_project(p, "the deployed project (default: the current project, see `nodal project use`)")
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
    p = add(
        scen,
        "define",
        cmd_scenario_define,
        "Create or replace a scenario of the design project from a YAML file (as the Design "
        "Studio saves it): refused, with every problem listed, if it is invalid.",
    )
    p.add_argument("name")
    p.add_argument("--file", required=True, help="the scenario's YAML (- reads standard input)")
    add_project(p)
    p = add(
        scen,
        "definition",
        cmd_scenario_definition,
        "Print a design-project scenario's YAML (edit it, then `nodal scenario define`).",
    )
    p.add_argument("name")
    add_project(p)
