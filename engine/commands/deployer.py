"""Project deployer commands: ``nodal infra|deploy …``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.commands.common import add, print_rows, store
from engine.settings import Settings


def cmd_infra_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    deployer.create_infra(store(s), a.infra_id, a.kind, a.stage, exist_ok=a.exist_ok)
    print(f"infrastructure {a.infra_id} ({a.kind}, stage {a.stage}) ready")
    return 0


def cmd_infra_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    print_rows(deployer.list_infras(store(s)), ["infra_id", "kind", "stage", "created_at"])
    return 0


def cmd_deploy_bundle(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    dep = deployer.deploy_bundle(store(s), a.project, a.bundle_id, a.infra, s.user)
    print(f"{dep.deployment_id}: desired bundle is now {dep.version} (the runner activates it)")
    return 0


def cmd_deploy_rollback(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    dep = deployer.rollback(store(s), a.deployment_id, s.user, a.to)
    print(f"{dep.deployment_id}: rolled back, desired version is now {dep.version}")
    return 0


def cmd_deploy_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    rows = [{**asdict(d), "status": d.status} for d in deployer.list_deployments(store(s))]
    print_rows(rows, ["deployment_id", "kind", "version", "node_version", "status", "node_message"])
    return 0


def cmd_deploy_history(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    print_rows(
        deployer.history(store(s), a.deployment_id),
        ["at", "actor", "action", "from_version", "to_version", "outcome", "message"],
    )
    return 0


def register(top: Any) -> None:
    infra = top.add_parser("infra", help="infrastructures").add_subparsers(
        dest="cmd", required=True
    )
    p = add(infra, "create", cmd_infra_create, "Declare an automation or API node infrastructure.")
    p.add_argument("infra_id")
    p.add_argument("--kind", required=True, choices=["automation", "apinode"])
    p.add_argument("--stage", required=True, help="e.g. dev, test, prod")
    p.add_argument(
        "--exist-ok", action="store_true", help="succeed if it already exists identically"
    )
    add(infra, "list", cmd_infra_list, "List infrastructures.")

    deploy = top.add_parser("deploy", help="project deployments").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        deploy,
        "bundle",
        cmd_deploy_bundle,
        "Deploy (or update to) a bundle on an automation infrastructure.",
    )
    p.add_argument("bundle_id")
    p.add_argument("--project", default="fraud")
    p.add_argument("--infra", required=True)
    p = add(
        deploy,
        "rollback",
        cmd_deploy_rollback,
        "Go back to the previous (or a given) version in one action.",
    )
    p.add_argument("deployment_id")
    p.add_argument("--to", help="version to go back to (default: the previous one)")
    add(deploy, "list", cmd_deploy_list, "List deployments and their status.")
    p = add(
        deploy, "history", cmd_deploy_history, "Who changed a deployment, when, from what to what."
    )
    p.add_argument("deployment_id")
