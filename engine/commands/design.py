"""Design-node commands: ``nodal project|flow|model|bundle …``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.commands.common import add, print_rows, store
from engine.settings import Settings


def cmd_project_import(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    project = design.import_project(s, store(s), Path(a.path), replace=a.replace)
    print(f"project {project.name} imported into {project.root}")
    return 0


def cmd_project_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    print_rows(design.list_projects(store(s)), ["name", "path", "created_at"])
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
    print_rows(rows, ["version", "active", "roc_auc", "pr_auc", "trained_at"])
    return 0


# --- bundles and project deployer -----------------------------------------------------------------


def cmd_bundle_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles, design

    info = bundles.create_bundle(
        s.home, store(s), design.open_project(s, a.project), a.bundle_id, a.notes, s.user
    )
    print(
        f"bundle {info.bundle_id} of {info.project} created: {info.path} (sha256 {info.sha256[:12]}…)"
    )
    return 0


def cmd_bundle_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles

    rows = [asdict(b) for b in bundles.list_bundles(store(s), a.project)]
    print_rows(rows, ["project", "bundle_id", "created_by", "created_at", "release_notes"])
    return 0


def cmd_bundle_verify(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundles

    path = Path(a.file) if a.file else bundles.get_bundle(store(s), a.project, a.bundle_id).path
    manifest = bundles.verify_bundle(path, project=a.project)
    print(f"bundle {manifest['bundle_id']} OK: {len(manifest['members'])} members verified")
    return 0


def register(top: Any) -> None:
    project = top.add_parser("project", help="design-node projects").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        project,
        "import",
        cmd_project_import,
        "Copy a project folder (YAML + SQL) into the design node.",
    )
    p.add_argument("path")
    p.add_argument(
        "--replace", action="store_true", help="replace the definitions of an existing project"
    )
    add(project, "list", cmd_project_list, "List the design node's projects.")

    flow = top.add_parser("flow", help="build datasets").add_subparsers(dest="cmd", required=True)
    p = add(
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
        p = add(model, name, fn, help)
        p.add_argument("--project", default="fraud")
        p.add_argument("--model", default="fraud_model")

    bundle = top.add_parser("bundle", help="project bundles").add_subparsers(
        dest="cmd", required=True
    )
    p = add(bundle, "create", cmd_bundle_create, "Snapshot the project as an immutable bundle.")
    p.add_argument("bundle_id")
    p.add_argument("--project", default="fraud")
    p.add_argument("--notes", default="", help="release notes")
    p = add(bundle, "list", cmd_bundle_list, "List bundles.")
    p.add_argument("--project")
    p = add(bundle, "verify", cmd_bundle_verify, "Check every member's SHA-256.")
    p.add_argument("bundle_id", nargs="?")
    p.add_argument("--project", default="fraud")
    p.add_argument("--file", help="verify this zip instead of a published bundle")
