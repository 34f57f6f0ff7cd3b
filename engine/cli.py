"""``nodal``: the command line ops, CI pipelines and ``make demo`` use.

Every command is a thin adapter over one engine function. Expected failures (bad input, a
refused deployment, a failed check) print ``error: …`` and exit 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from engine.settings import Settings, describe_settings, load_settings

EXIT_USER_ERROR = 2


def _store(settings: Settings):  # noqa: ANN202 - keeps sqlalchemy import out of --help
    from engine.storage.control import open_store

    return open_store(settings.control_store_url)


def _print_rows(rows: list[dict[str, Any]], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


# --- data ------------------------------------------------------------------------------------


def cmd_data_generate(s: Settings, a: argparse.Namespace) -> int:
    from engine import datagen

    out = Path(a.out) if a.out else s.data_dir
    if a.if_missing and (out / datagen.META_FILE).exists():
        print(f"example data already in {out} (kept)")
        return 0
    overrides = {
        f.name: getattr(a, f.name)
        for f in fields(datagen.GeneratorConfig)
        if getattr(a, f.name, None) is not None
    }
    summary = datagen.generate(datagen.GeneratorConfig(**overrides), out)
    print(
        f"{summary.n_transactions} transactions over {len(summary.days)} days "
        f"({summary.fraud_rate:.2%} fraud) written to {out} in {summary.seconds:.1f}s"
    )
    return 0


# --- design node -----------------------------------------------------------------------------


def cmd_project_import(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    project = design.import_project(s, _store(s), Path(a.path), replace=a.replace)
    print(f"project {project.name} imported into {project.root}")
    return 0


def cmd_project_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    _print_rows(design.list_projects(_store(s)), ["name", "path", "created_at"])
    return 0


def cmd_flow_build(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, flow

    result = flow.build(design.open_project(s, a.project), a.dataset, a.partition or None)
    for r in result.runs:
        print(f"{r.recipe:<16} -> {r.output:<16} {r.rows:>10} rows  {r.seconds:6.2f}s")
    return 0


def cmd_model_train(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, models

    meta = models.train(design.open_project(s, a.project), a.model, s.user)
    m = meta["metrics"]
    print(
        f"{a.model} {meta['version']} trained on {meta['train_rows']} rows: ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, recall {m['recall_at_fpr']:.1%} at FPR {m['operating_fpr']:.0%} "
        f"(validation {meta['validation_days'][0]}..{meta['validation_days'][1]})"
    )
    return 0


def cmd_model_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, models

    rows = [
        {
            "version": m["version"],
            "active": "*" if m["active"] else "",
            "roc_auc": f"{m['metrics']['roc_auc']:.4f}",
            "pr_auc": f"{m['metrics']['pr_auc']:.4f}",
            "trained_at": m["trained_at"],
        }
        for m in models.list_versions(design.open_project(s, a.project), a.model)
    ]
    _print_rows(rows, ["version", "active", "roc_auc", "pr_auc", "trained_at"])
    return 0


# --- bundles and project deployer -----------------------------------------------------------------


def cmd_bundle_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles, design

    info = bundles.create_bundle(
        s.home, _store(s), design.open_project(s, a.project), a.bundle_id, a.notes, s.user
    )
    print(
        f"bundle {info.bundle_id} of {info.project} created: {info.path} (sha256 {info.sha256[:12]}…)"
    )
    return 0


def cmd_bundle_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles

    rows = [asdict(b) for b in bundles.list_bundles(_store(s), a.project)]
    _print_rows(rows, ["project", "bundle_id", "created_by", "created_at", "release_notes"])
    return 0


def cmd_bundle_verify(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles

    path = Path(a.file) if a.file else bundles.get_bundle(_store(s), a.project, a.bundle_id).path
    manifest = bundles.verify_bundle(path, project=a.project)
    print(f"bundle {manifest['bundle_id']} OK: {len(manifest['members'])} members verified")
    return 0


def cmd_infra_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    deployer.create_infra(_store(s), a.infra_id, a.kind, a.stage, exist_ok=a.exist_ok)
    print(f"infrastructure {a.infra_id} ({a.kind}, stage {a.stage}) ready")
    return 0


def cmd_infra_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    _print_rows(deployer.list_infras(_store(s)), ["infra_id", "kind", "stage", "created_at"])
    return 0


def cmd_deploy_bundle(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    dep = deployer.deploy_bundle(_store(s), a.project, a.bundle_id, a.infra, s.user)
    print(f"{dep.deployment_id}: desired bundle is now {dep.version} (the runner activates it)")
    return 0


def cmd_deploy_rollback(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    dep = deployer.rollback(_store(s), a.deployment_id, s.user, a.to)
    print(f"{dep.deployment_id}: rolled back, desired version is now {dep.version}")
    return 0


def cmd_deploy_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    rows = [{**asdict(d), "status": d.status} for d in deployer.list_deployments(_store(s))]
    _print_rows(
        rows, ["deployment_id", "kind", "version", "node_version", "status", "node_message"]
    )
    return 0


def cmd_deploy_history(s: Settings, a: argparse.Namespace) -> int:
    from engine import deployer

    _print_rows(
        deployer.history(_store(s), a.deployment_id),
        ["at", "actor", "action", "from_version", "to_version", "outcome", "message"],
    )
    return 0


# --- scenarios ------------------------------------------------------------------------------


def cmd_scenario_run(s: Settings, a: argparse.Namespace) -> int:
    from engine import scenarios

    store = _store(s)
    params = {"day": a.day} if a.day else {}
    run_id = scenarios.request_run(store, a.infra, a.project, a.scenario, "manual", params)
    if a.in_process:
        from engine.automation import AutomationNode

        node = AutomationNode(s, store, a.infra)
        node.sync()
        node.run(run_id)
    elif a.no_wait:
        print(f"run {run_id} queued on {a.infra}")
        return 0
    deadline = time.monotonic() + a.timeout
    run = scenarios.get_run(store, run_id)
    while run["status"] in ("QUEUED", "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.5)
        run = scenarios.get_run(store, run_id)
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

    _print_rows(
        scenarios.list_runs(_store(s), a.infra, a.limit),
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


# --- API services ----------------------------------------------------------------------------


def cmd_api_package(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages, design

    info = apipackages.create_package(
        s.home, _store(s), design.open_project(s, a.project), a.service, a.version, a.notes, s.user
    )
    print(f"package {info.version} of {info.service} created: {info.path}")
    return 0


def cmd_api_deploy(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages

    dep = apipackages.deploy_package(_store(s), a.service, a.version, a.infra, s.user)
    print(f"{dep.deployment_id}: desired package is now {dep.version} (API nodes load it)")
    return 0


def cmd_api_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import apipackages

    _print_rows(
        [asdict(p) for p in apipackages.list_packages(_store(s), a.service)],
        ["service", "version", "project", "created_by", "created_at", "release_notes"],
    )
    return 0


# --- processes ---------------------------------------------------------------------------------


def cmd_runner(s: Settings, a: argparse.Namespace) -> int:
    from engine import runner

    return runner.main(["--infra", a.infra])


def cmd_serve(s: Settings, a: argparse.Namespace) -> int:
    from engine import serving

    return serving.main(
        ["--infra", a.infra, "--port", str(a.port), "--host", a.host, "--workers", str(a.workers)]
    )


def cmd_demo(s: Settings, a: argparse.Namespace) -> int:
    from engine import demo

    return demo.main(s, prepare_only=a.prepare_only)


# --- parser ------------------------------------------------------------------------------------


def _add(
    sub: Any, name: str, fn: Callable[[Settings, argparse.Namespace], int], help: str
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=fn)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nodal",
        description="nodal: design, bundle, deploy, score in batch and real time, monitor.",
        epilog="Settings (environment):\n" + describe_settings(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")

    data = top.add_parser("data", help="example data").add_subparsers(dest="cmd", required=True)
    p = _add(
        data,
        "generate",
        cmd_data_generate,
        "Generate the synthetic card-fraud data into the landing zone.",
    )
    p.add_argument("--out", help="output folder (default: NODAL_DATA_DIR)")
    p.add_argument(
        "--if-missing", action="store_true", help="do nothing if data already exists there"
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--n-cards", dest="n_cards", type=int)
    p.add_argument("--n-merchants", dest="n_merchants", type=int)
    p.add_argument("--n-days", dest="n_days", type=int)
    p.add_argument("--txns-per-day", dest="txns_per_day", type=int)
    p.add_argument(
        "--ring-city", dest="ring_city", help="drift: a fraud ring appears in this city …"
    )
    p.add_argument(
        "--ring-start-day", dest="ring_start_day", type=int, help="… from this day index"
    )
    p.add_argument(
        "--unseen-merchants-from-day",
        dest="unseen_merchants_from_day",
        type=int,
        help="drift: merchant ids absent from the merchants table from this day index",
    )
    p.add_argument(
        "--extra-column-from-day",
        dest="extra_column_from_day",
        type=int,
        help="drift: transactions gain a device_id column from this day index",
    )

    project = top.add_parser("project", help="design-node projects").add_subparsers(
        dest="cmd", required=True
    )
    p = _add(
        project,
        "import",
        cmd_project_import,
        "Copy a project folder (YAML + SQL) into the design node.",
    )
    p.add_argument("path")
    p.add_argument(
        "--replace", action="store_true", help="replace the definitions of an existing project"
    )
    _add(project, "list", cmd_project_list, "List the design node's projects.")

    flow = top.add_parser("flow", help="build datasets").add_subparsers(dest="cmd", required=True)
    p = _add(
        flow, "build", cmd_flow_build, "Build a dataset and everything upstream of it, in order."
    )
    p.add_argument("dataset")
    p.add_argument("--project", default="fraud")
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")

    model = top.add_parser("model", help="saved models").add_subparsers(dest="cmd", required=True)
    for name, fn, help in (
        ("train", cmd_model_train, "Train a new version and make it active."),
        ("list", cmd_model_list, "List a model's versions and metrics."),
    ):
        p = _add(model, name, fn, help)
        p.add_argument("--project", default="fraud")
        p.add_argument("--model", default="fraud_model")

    bundle = top.add_parser("bundle", help="project bundles").add_subparsers(
        dest="cmd", required=True
    )
    p = _add(bundle, "create", cmd_bundle_create, "Snapshot the project as an immutable bundle.")
    p.add_argument("bundle_id")
    p.add_argument("--project", default="fraud")
    p.add_argument("--notes", default="", help="release notes")
    p = _add(bundle, "list", cmd_bundle_list, "List bundles.")
    p.add_argument("--project")
    p = _add(bundle, "verify", cmd_bundle_verify, "Check every member's SHA-256.")
    p.add_argument("bundle_id", nargs="?")
    p.add_argument("--project", default="fraud")
    p.add_argument("--file", help="verify this zip instead of a published bundle")

    infra = top.add_parser("infra", help="infrastructures").add_subparsers(
        dest="cmd", required=True
    )
    p = _add(infra, "create", cmd_infra_create, "Declare an automation or API node infrastructure.")
    p.add_argument("infra_id")
    p.add_argument("--kind", required=True, choices=["automation", "apinode"])
    p.add_argument("--stage", required=True, help="e.g. dev, test, prod")
    p.add_argument(
        "--exist-ok", action="store_true", help="succeed if it already exists identically"
    )
    _add(infra, "list", cmd_infra_list, "List infrastructures.")

    deploy = top.add_parser("deploy", help="project deployments").add_subparsers(
        dest="cmd", required=True
    )
    p = _add(
        deploy,
        "bundle",
        cmd_deploy_bundle,
        "Deploy (or update to) a bundle on an automation infrastructure.",
    )
    p.add_argument("bundle_id")
    p.add_argument("--project", default="fraud")
    p.add_argument("--infra", required=True)
    p = _add(
        deploy,
        "rollback",
        cmd_deploy_rollback,
        "Go back to the previous (or a given) version in one action.",
    )
    p.add_argument("deployment_id")
    p.add_argument("--to", help="version to go back to (default: the previous one)")
    _add(deploy, "list", cmd_deploy_list, "List deployments and their status.")
    p = _add(
        deploy, "history", cmd_deploy_history, "Who changed a deployment, when, from what to what."
    )
    p.add_argument("deployment_id")

    scen = top.add_parser("scenario", help="scenarios on automation nodes").add_subparsers(
        dest="cmd", required=True
    )
    p = _add(
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
    p = _add(scen, "runs", cmd_scenario_runs, "List recent scenario runs.")
    p.add_argument("--infra")
    p.add_argument("--limit", type=int, default=20)

    api = top.add_parser("api", help="API services").add_subparsers(dest="cmd", required=True)
    p = _add(
        api, "package", cmd_api_package, "Freeze an API service as an immutable package version."
    )
    p.add_argument("version")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--project", default="fraud")
    p.add_argument("--notes", default="")
    p = _add(
        api, "deploy", cmd_api_deploy, "Deploy a package version to an API node infrastructure."
    )
    p.add_argument("version")
    p.add_argument("--service", default="fraud_detection")
    p.add_argument("--infra", required=True)
    p = _add(api, "list", cmd_api_list, "List API packages.")
    p.add_argument("--service")

    p = _add(
        top, "runner", cmd_runner, "Run the automation node of one infrastructure (foreground)."
    )
    p.add_argument("--infra", required=True)
    p = _add(top, "serve", cmd_serve, "Run an API node (foreground).")
    p.add_argument("--infra", required=True)
    p.add_argument("--port", type=int, default=12000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, default=1)
    p = _add(
        top, "demo", cmd_demo, "Prepare the fraud example end to end and start all five processes."
    )
    p.add_argument("--prepare-only", action="store_true", help="prepare everything, start nothing")
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from engine.apipackages import PackageError
    from engine.artifacts import ArtifactError
    from engine.automation import ActivationError
    from engine.bundles import BundleError
    from engine.deployer import DeployerError
    from engine.flow import FlowError
    from engine.models import TrainingError
    from engine.project import ProjectError
    from engine.scenarios import StepFailed
    from engine.storage.datasets import DatasetError

    return (
        PackageError,
        ArtifactError,
        ActivationError,
        BundleError,
        DeployerError,
        FlowError,
        TrainingError,
        ProjectError,
        StepFailed,
        DatasetError,
        ValueError,
        FileNotFoundError,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        return args.func(settings, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if isinstance(exc, _user_errors()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USER_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
