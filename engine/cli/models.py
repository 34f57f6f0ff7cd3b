"""Lab and saved-model commands: ``nodal lab|model …``."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.common import add, add_project, choose, open_project, pairs, print_rows
from engine.core.settings import Settings


def _model(project: Any, a: argparse.Namespace) -> str:
    from engine.design import selection

    return choose("pass --model NAME", selection.model_name, project, a.model)


def _training_dataset(project: Any, a: argparse.Namespace) -> str:
    """--dataset, else what the model (--model, else the project's only one) trains on."""
    from engine.core.errors import NodalError
    from engine.design import selection

    if a.dataset:
        return a.dataset
    try:
        model = selection.model_name(project, a.model)
    except selection.SelectionError:
        model = None
    train_on = (project.models.get(model) or {}).get("train_on")
    if not train_on:
        raise NodalError(
            f"no dataset given and project {project.name} has no single model to take it from: "
            "pass --dataset NAME"
        )
    return str(train_on)


def cmd_lab_train(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import lab

    project = open_project(s, a)
    spec = lab.default_spec(project, _training_dataset(project, a))
    spec.target = a.target or spec.target
    spec.features = a.feature or [f for f in spec.features if f != spec.target]
    spec.model = a.model or spec.model
    spec.algorithm, spec.split, spec.imbalance = a.algorithm, a.split, a.imbalance
    spec.time_column = a.time_column or spec.time_column
    spec.validation_share = a.validation_share
    spec.params = {k: float(v) for k, v in pairs(a.param, "--param").items()}
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.1 or fraction >= 1.0:
            last[0] = fraction
            print(f"  {fraction:4.0%}  {message}", flush=True)

    result = lab.train(project, spec, s.user, progress)
    m = result["metrics"]
    line = f"{spec.model} lab run {result['run_id']} of project {project.name} ({spec.algorithm}): ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}"
    if result.get("best_possible"):
        b = result["best_possible"]
        line += f"; best possible AUC {b['auc']:.4f} (gap {b['gap']:.4f})"
    print(line)
    return 0


def cmd_lab_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import lab

    project = open_project(s, a)
    print(f"lab runs of project {project.name}:")
    rows = [
        {
            "model": r["spec"]["model"],
            "run": r["run_id"],
            "algorithm": r["spec"]["algorithm"],
            "split": r["spec"]["split"],
            "roc_auc": f"{r['metrics']['roc_auc']:.4f}",
            "pr_auc": f"{r['metrics']['pr_auc']:.4f}",
            "trained_at": r["trained_at"][:19],
        }
        for r in lab.list_runs(project, a.model)
    ]
    print_rows(rows, ["model", "run", "algorithm", "split", "roc_auc", "pr_auc", "trained_at"])
    return 0


def cmd_lab_deploy(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import lab, selection

    project = open_project(s, a)
    model = choose("pass --model NAME", selection.lab_model_name, project, a.run, a.model)
    version = lab.deploy(project, model, a.run, s.user)
    print(
        f"{model} {version} (from lab run {a.run}) is now the active version in project {project.name}"
    )
    return 0


def cmd_model_train(s: Settings, a: argparse.Namespace) -> int:
    from engine.models import saved as models

    project = open_project(s, a)
    model = _model(project, a)
    meta = models.train(project, model, s.user)
    m = meta["metrics"]
    print(
        f"{model} {meta['version']} of project {project.name} trained on {meta['train_rows']} rows: ROC AUC {m['roc_auc']:.4f}, "
        f"PR AUC {m['pr_auc']:.4f}, recall {m['recall_at_fpr']:.1%} at FPR {m['operating_fpr']:.0%} "
        f"(validation {meta['validation_days'][0]}..{meta['validation_days'][1]})"
    )
    return 0


def cmd_model_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.models import saved as models

    project = open_project(s, a)
    model = _model(project, a)
    print(f"versions of {model} in project {project.name}:")
    rows = [
        {
            "version": m["version"],
            "active": "*" if m["active"] else "",
            "roc_auc": f"{m['metrics']['roc_auc']:.4f}",
            "pr_auc": f"{m['metrics']['pr_auc']:.4f}",
            "trained_at": m["trained_at"],
        }
        for m in models.list_versions(project, model)
    ]
    print_rows(rows, ["version", "active", "roc_auc", "pr_auc", "trained_at"])
    return 0


def register(top: Any) -> None:
    lab = top.add_parser("lab", help="train and compare models, deploy one").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        lab, "train", cmd_lab_train, "Train a lab run (LightGBM or a logistic-regression baseline)."
    )
    p.add_argument(
        "--dataset",
        help="what to train on (default: the train_on dataset of --model, or of the "
        "project's only model)",
    )
    p.add_argument("--target")
    p.add_argument("--feature", action="append", help="repeatable; default: the project model's")
    p.add_argument("--model", help="saved model name the run belongs to")
    p.add_argument("--algorithm", choices=("lightgbm", "logistic_regression"), default="lightgbm")
    p.add_argument("--split", choices=("time", "random"), default="time")
    p.add_argument("--time-column")
    p.add_argument("--validation-share", type=float, default=0.2)
    p.add_argument("--imbalance", choices=("none", "balanced"), default="none")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="e.g. num_leaves=15")
    add_project(p)
    p = add(lab, "list", cmd_lab_list, "List lab runs and their metrics.")
    p.add_argument("--model", help="only this model's runs (default: every model's)")
    add_project(p)
    p = add(lab, "deploy", cmd_lab_deploy, "Make a LightGBM lab run the model's active version.")
    p.add_argument("run")
    p.add_argument(
        "--model", help="the model the run belongs to (default: the only one with a run RUN)"
    )
    add_project(p)

    model = top.add_parser("model", help="saved models").add_subparsers(dest="cmd", required=True)
    for name, fn, help in (
        ("train", cmd_model_train, "Train a new version and make it active."),
        ("list", cmd_model_list, "List a model's versions and metrics."),
    ):
        p = add(model, name, fn, help)
        add_project(p)
        p.add_argument("--model", help="the saved model (default: the project's only model)")
