"""Project deployer commands: ``nodal infra|deploy …``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from engine.cli.common import add, add_project, print_rows, project_name, store
from engine.core.settings import Settings


def cmd_infra_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    deployer.create_infra(store(s), a.infra_id, a.kind, a.stage, exist_ok=a.exist_ok, actor=s.user)
    print(f"infrastructure {a.infra_id} ({a.kind}, stage {a.stage}) ready")
    return 0


def cmd_infra_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation.lease import lease_info
    from engine.deployer import deployments as deployer

    control = store(s)
    order = {st["name"]: st["position"] for st in deployer.list_stages(control)}
    rows = sorted(
        deployer.list_infras(control), key=lambda i: (order.get(i["stage"], 0), i["infra_id"])
    )
    for row in rows:  # automation nodes: which runner holds the lease, which stand by
        row["runner"] = ""
        if row["kind"] == "automation":
            info = lease_info(control, row["infra_id"])
            row["runner"] = info.describe() if info else "no runner has run here yet"
    print_rows(rows, ["infra_id", "kind", "stage", "created_at", "runner"])
    return 0


def cmd_stage_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    deployer.create_stage(store(s), a.name, a.after, a.description, actor=s.user)
    stages = " < ".join(st["name"] for st in deployer.list_stages(store(s)))
    print(f"stage {a.name} created; stages in order: {stages}")
    return 0


def cmd_stage_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    print_rows(deployer.list_stages(store(s)), ["name", "position", "description"])
    return 0


def cmd_stage_delete(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    deployer.delete_stage(store(s), a.name, actor=s.user)
    print(f"stage {a.name} deleted")
    return 0


def cmd_deploy_bundle(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    dep = deployer.deploy_bundle(store(s), project_name(s, a), a.bundle_id, a.infra, s.user)
    print(f"{dep.deployment_id}: desired bundle is now {dep.version} (the runner activates it)")
    return 0


def cmd_deploy_rollback(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import rollback

    dep = rollback.rollback(store(s), a.deployment_id, s.user, a.to)
    print(f"{dep.deployment_id}: rolled back, desired version is now {dep.version}")
    return 0


def cmd_deploy_promote(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    dep = deployer.promote(store(s), a.deployment_id, a.to_infra, s.user)
    print(
        f"{dep.deployment_id}: desired bundle is now {dep.version} (promoted from {a.deployment_id})"
    )
    return 0


def cmd_deploy_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    deps = deployer.list_deployments(store(s))
    rows = [{**asdict(d), "status": d.status} for d in deps]
    print(f"overall: {deployer.worst_status([d.status for d in deps])}")
    print_rows(rows, ["deployment_id", "kind", "version", "node_version", "status", "node_message"])
    return 0


def cmd_deploy_variables(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

    control = store(s)
    dep = deployer.get_deployment(control, a.deployment_id)
    if a.set or a.unset or a.clear:
        variables = {} if a.clear else dict(dep.variables)
        for item in a.set or []:
            if "=" not in item:
                raise deployer.DeployerError(f"--set needs NAME=VALUE, not {item!r}")
            key, value = item.split("=", 1)
            variables[key] = value
        for key in a.unset or []:
            variables.pop(key, None)
        dep = deployer.set_variables(control, a.deployment_id, variables, s.user)
    print_rows(
        [{"name": k, "value": v} for k, v in sorted(dep.variables.items())], ["name", "value"]
    )
    return 0


def cmd_deploy_triggers(s: Settings, a: argparse.Namespace) -> int:
    from engine.automation.node import AutomationNode
    from engine.deployer import deployments as deployer
    from engine.project import triggers
    from engine.project.project import ProjectError

    control = store(s)
    dep = deployer.get_deployment(control, a.deployment_id)
    if a.enable or a.disable:
        target = a.enable or a.disable
        scenario, _, number = target.partition(":")
        if not number.isdigit():
            raise deployer.DeployerError(
                f"name a trigger as SCENARIO:NUMBER (e.g. nightly:1), not {target!r}"
            )
        deployer.set_trigger(
            control, a.deployment_id, scenario, int(number) - 1, bool(a.enable), s.user
        )
    flags = deployer.trigger_flags(control, a.deployment_id)
    node = AutomationNode(s, control, dep.infra_id)
    rows = []
    try:
        project = node.project(dep.target)
    except ProjectError:  # not activated yet: show the overrides only
        project = None
    if project is not None:
        for name, spec in sorted(project.scenarios.items()):
            for i, trig in enumerate(spec.get("triggers") or []):
                on = flags.get((name, i), bool(trig.get("enabled", True)))
                rows.append(
                    {
                        "trigger": f"{name}:{i + 1}",
                        "enabled": "yes" if on else "no",
                        "what": triggers.describe(trig),
                    }
                )
    else:
        rows = [
            {
                "trigger": f"{n}:{i + 1}",
                "enabled": "yes" if on else "no",
                "what": "(bundle not active yet)",
            }
            for (n, i), on in flags.items()
        ]
    print_rows(rows, ["trigger", "enabled", "what"])
    return 0


def cmd_deploy_history(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import deployments as deployer

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
    add(
        infra,
        "list",
        cmd_infra_list,
        "List infrastructures (by stage), with the runner holding each automation node's lease.",
    )

    stage = top.add_parser("stage", help="lifecycle stages (dev, test, prod, …)").add_subparsers(
        dest="cmd", required=True
    )
    p = add(stage, "create", cmd_stage_create, "Add a lifecycle stage.")
    p.add_argument("name")
    p.add_argument("--after", help="place it right after this stage (default: last)")
    p.add_argument("--description", default="")
    add(stage, "list", cmd_stage_list, "List stages in lifecycle order.")
    p = add(stage, "delete", cmd_stage_delete, "Delete a stage no infrastructure uses.")
    p.add_argument("name")

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
    add_project(p)
    p.add_argument("--infra", required=True)
    p = add(
        deploy,
        "rollback",
        cmd_deploy_rollback,
        "Go back to the previous (or a given) version in one action.",
    )
    p.add_argument("deployment_id")
    p.add_argument("--to", help="version to go back to (default: the previous one)")
    p = add(
        deploy,
        "promote",
        cmd_deploy_promote,
        "Deploy the bundle a deployment runs to another infrastructure (e.g. test to prod).",
    )
    p.add_argument("deployment_id", help="the source deployment, PROJECT-on-INFRA")
    p.add_argument("--to-infra", required=True, help="the target infrastructure")
    add(deploy, "list", cmd_deploy_list, "List deployments, their status and the worst of them.")
    p = add(
        deploy,
        "variables",
        cmd_deploy_variables,
        "Show or change a deployment's variables (they override the project's on its node).",
    )
    p.add_argument("deployment_id")
    p.add_argument("--set", action="append", metavar="NAME=VALUE")
    p.add_argument("--unset", action="append", metavar="NAME")
    p.add_argument("--clear", action="store_true", help="remove every variable first")
    p = add(
        deploy,
        "triggers",
        cmd_deploy_triggers,
        "Show a deployment's scenario triggers, or switch one on or off.",
    )
    p.add_argument("deployment_id")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--enable", metavar="SCENARIO:N", help="switch trigger N of SCENARIO on")
    g.add_argument("--disable", metavar="SCENARIO:N", help="switch trigger N of SCENARIO off")
    p = add(
        deploy, "history", cmd_deploy_history, "Who changed a deployment, when, from what to what."
    )
    p.add_argument("deployment_id")
