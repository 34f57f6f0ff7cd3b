"""Dashboard definitions of a design project: ``nodal dashboard save|show``."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import add, add_project, open_project, read_text_file
from engine.core.settings import Settings


def cmd_dashboard_show(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    text, _ = design.read_folder_definition(open_project(s, a), "dashboards", a.name)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_dashboard_save(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = open_project(s, a)
    existed = a.name in project.dashboards
    design.save_folder_definition(project, "dashboards", a.name, read_text_file(a.file), None)
    print(
        f"dashboard {a.name} {'replaced' if existed else 'created'} in project {project.name} "
        f"(dashboards/{a.name}.yaml)"
    )
    return 0


def register(top: Any) -> None:
    dash = top.add_parser("dashboard", help="dashboard definitions of a project").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        dash,
        "save",
        cmd_dashboard_save,
        "Create or replace a dashboard of the design project from a YAML file (as the Design "
        "Studio saves it): refused, with every problem listed, if it is invalid.",
    )
    p.add_argument("name")
    p.add_argument("--file", required=True, help="the dashboard's YAML (- reads standard input)")
    add_project(p)
    p = add(dash, "show", cmd_dashboard_show, "Print a dashboard's YAML.")
    p.add_argument("name")
    add_project(p)
