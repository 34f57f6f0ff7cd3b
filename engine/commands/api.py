"""API service commands: ``nodal api …``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.commands.common import add, print_rows, store
from engine.settings import Settings


def cmd_api_package(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages, design

    info = apipackages.create_package(
        s.home, store(s), design.open_project(s, a.project), a.service, a.version, a.notes, s.user
    )
    print(f"package {info.version} of {info.service} created: {info.path}")
    return 0


def cmd_api_deploy(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages

    dep = apipackages.deploy_package(store(s), a.service, a.version, a.infra, s.user)
    print(f"{dep.deployment_id}: desired package is now {dep.version} (API nodes load it)")
    return 0


def cmd_api_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages

    print_rows(
        [asdict(p) for p in apipackages.list_packages(store(s), a.service)],
        ["service", "version", "project", "created_by", "created_at", "release_notes"],
    )
    return 0


def register(top: Any) -> None:
    api = top.add_parser("api", help="API services").add_subparsers(dest="cmd", required=True)
    p = add(
        api, "package", cmd_api_package, "Freeze an API service as an immutable package version."
    )
    p.add_argument("version")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--project", default="fraud")
    p.add_argument("--notes", default="")
    p = add(
        api, "deploy", cmd_api_deploy, "Deploy a package version to an API node infrastructure."
    )
    p.add_argument("version")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", required=True)
    p = add(api, "list", cmd_api_list, "List API packages.")
    p.add_argument("--service")
