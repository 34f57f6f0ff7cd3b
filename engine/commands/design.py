"""Design-node commands: ``nodal project|dataset|recipe|flow|metric|check|lab|model|bundle …``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
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


def cmd_project_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    project = design.create_project(s, store(s), a.name, a.description)
    print(f"project {project.name} created in {project.root}")
    return 0


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    from engine.errors import NodalError

    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise NodalError(f"{what} {item!r}: write it as name=value")
        out[key.strip()] = value.strip()
    return out


def cmd_dataset_import(s: Settings, a: argparse.Namespace) -> int:
    from engine import dataset_import, design

    if a.infer_only:
        schema = dataset_import.infer_schema(Path(a.path), a.format)
        print_rows([{"column": k, "type": v} for k, v in schema.items()], ["column", "type"])
        return 0
    result = dataset_import.import_file(
        design.open_project(s, a.project),
        a.name or Path(a.path).stem,
        Path(a.path),
        _pairs(a.type, "--type"),
        a.format,
        a.partition_by,
        a.description,
    )
    parts = f", {len(result.partitions)} day partitions" if result.partitions else ""
    print(f"dataset {result.dataset}: {result.rows} rows, {len(result.schema)} columns{parts}")
    return 0


def cmd_dataset_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import design

    project = design.open_project(s, a.project)
    rows = []
    for name, d in project.datasets.items():
        ref = project.dataset(name)
        rows.append(
            {
                "dataset": name,
                "kind": d.kind,
                "partitioned_by": d.partitioned_by or "",
                "partitions": len(ref.partitions()) if d.partitioned_by else "",
                "has_data": "yes" if ref.exists() else "no",
            }
        )
    print_rows(rows, ["dataset", "kind", "partitioned_by", "partitions", "has_data"])
    return 0


def cmd_dataset_profile(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, profiling

    project = design.open_project(s, a.project)
    profiles = profiling.profile(project.dataset(a.dataset), a.partition or None)
    frame = profiling.summary_frame(profiles)
    print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


@contextlib.contextmanager
def _show_user_traceback() -> Iterator[None]:
    """A failed Python recipe: print the frames of the analyst's code before the error."""
    try:
        yield
    except Exception as exc:
        tb = getattr(exc, "user_traceback", "")
        if tb:
            print("Traceback (your code only):\n" + tb.rstrip(), file=sys.stderr)
        raise


def _recipe_body(a: argparse.Namespace) -> tuple[str, str] | None:
    """(text, language) from --sql/--sql-file/--python-file, if one was given."""
    if getattr(a, "python_file", None):
        return Path(a.python_file).read_text(), "python"
    if a.sql_file:
        return Path(a.sql_file).read_text(), "sql"
    if a.sql:
        return a.sql, "sql"
    return None


def _inputs(items: list[str] | None) -> dict[str, str]:
    inputs = {}
    for item in items or []:
        name, _, mode = item.partition(":")
        inputs[name] = mode or "all"
    return inputs


def cmd_recipe_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import definitions, design, recipes

    project = design.open_project(s, a.project)
    text, language = _recipe_body(a) or ("", "sql")
    inputs = _inputs(a.input)
    base = None if a.force else definitions.ABSENT
    if a.name in project.recipes and not a.force:
        base = recipes.read_recipe(project, a.name)[1]
    recipes.save_recipe(project, a.name, text, inputs, a.output, base, a.partitioned_by, language)
    file = design.open_project(s, a.project).recipes[a.name].sql_file
    print(f"recipe {a.name} saved ({file}): {', '.join(inputs)} -> {a.output}")
    return 0


def cmd_recipe_preview(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, recipes

    project = design.open_project(s, a.project)
    body = _recipe_body(a)
    if body:
        (text, language), inputs, name = body, _inputs(a.input), a.name
    else:
        recipe = project.recipes.get(a.name or "")
        if recipe is None:
            raise recipes.RecipeError(f"project {project.name!r} has no recipe {a.name!r}")
        text, inputs, name = recipe.sql, recipe.inputs, recipe.name
        language = recipes.language_of(recipe.sql_file)
    output = project.recipes[name].output if name in project.recipes else None
    with _show_user_traceback():
        preview = recipes.preview(project, text, inputs, a.rows, language, output, name)
    print("schema: " + ", ".join(f"{k} {v}" for k, v in preview.schema.items()))
    print(preview.rows.to_string(index=False))
    return 0


def cmd_flow_build(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, flow

    project = design.open_project(s, a.project)
    build = flow.build_downstream if a.downstream else flow.build
    with _show_user_traceback():
        result = build(project, a.dataset, a.partition or None)
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


def cmd_metric_add(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, metrics

    spec = {"name": a.name, "type": a.type, "column": a.column, "sql": a.sql}
    metrics.add_metric(design.open_project(s, a.project), a.dataset, spec)
    print(f"metric {a.name} added to {a.dataset}")
    return 0


def cmd_metric_compute(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, metrics

    project = design.open_project(s, a.project)
    values = metrics.compute(project, a.dataset, store(s), "design", a.partition)
    rows = [{"metric": v.name, "partition": v.partition or "", "value": v.value} for v in values]
    print_rows(rows, ["metric", "partition", "value"])
    return 0


def cmd_metric_history(s: Settings, a: argparse.Namespace) -> int:
    from engine import metrics

    frame = metrics.history(store(s), a.project, a.dataset, a.metric, limit=a.limit)
    print_rows(frame.to_dict("records"), list(frame.columns))
    return 0


def cmd_check_add(s: Settings, a: argparse.Namespace) -> int:
    from engine import checks, design

    spec: dict[str, Any] = {"name": a.name, "type": a.type, "severity": a.severity}
    if a.column:
        spec["column"] = a.column
    if a.values:
        spec["values"] = [v.strip() for v in a.values.split(",")]
    if a.metric:
        spec["metric"] = a.metric
    for key in ("min", "max", "soft_min", "soft_max", "tolerance"):
        if getattr(a, key) is not None:
            spec[key] = getattr(a, key)
    checks.add_check(design.open_project(s, a.project), a.dataset, spec)
    print(f"check {a.name} added to {a.dataset}")
    return 0


def cmd_check_run(s: Settings, a: argparse.Namespace) -> int:
    from engine import checks, design

    project = design.open_project(s, a.project)
    results = checks.run_checks(project, a.dataset, a.partition, store(s), "design")
    print_rows([r.__dict__ for r in results], ["name", "outcome", "value", "message"])
    return 1 if checks.worst(results) == checks.ERROR else 0


def cmd_check_history(s: Settings, a: argparse.Namespace) -> int:
    from engine import checks

    frame = checks.history(store(s), a.project, a.dataset, limit=a.limit)
    print_rows(
        frame.to_dict("records"), ["at", "node", "partition", "check_name", "outcome", "message"]
    )
    return 0


def cmd_lab_train(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, lab

    project = design.open_project(s, a.project)
    spec = lab.default_spec(project, a.dataset)
    spec.target = a.target or spec.target
    spec.features = a.feature or [f for f in spec.features if f != spec.target]
    spec.model = a.model or spec.model
    spec.algorithm, spec.split, spec.imbalance = a.algorithm, a.split, a.imbalance
    spec.time_column = a.time_column or spec.time_column
    spec.validation_share = a.validation_share
    spec.params = {k: float(v) for k, v in _pairs(a.param, "--param").items()}
    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.1 or fraction >= 1.0:
            last[0] = fraction
            print(f"  {fraction:4.0%}  {message}", flush=True)

    result = lab.train(project, spec, s.user, progress)
    m = result["metrics"]
    line = f"{spec.model} lab run {result['run_id']} ({spec.algorithm}): ROC AUC {m['roc_auc']:.4f}, PR AUC {m['pr_auc']:.4f}"
    if result.get("best_possible"):
        b = result["best_possible"]
        line += f"; best possible AUC {b['auc']:.4f} (gap {b['gap']:.4f})"
    print(line)
    return 0


def cmd_lab_list(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, lab

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
        for r in lab.list_runs(design.open_project(s, a.project), a.model)
    ]
    print_rows(rows, ["model", "run", "algorithm", "split", "roc_auc", "pr_auc", "trained_at"])
    return 0


def cmd_lab_deploy(s: Settings, a: argparse.Namespace) -> int:
    from engine import design, lab

    version = lab.deploy(design.open_project(s, a.project), a.model, a.run, s.user)
    print(f"{a.model} {version} (from lab run {a.run}) is now the active version")
    return 0


# --- bundles and project deployer -----------------------------------------------------------------


def cmd_bundle_create(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundle_contents, bundles, design

    project = design.open_project(s, a.project)
    if a.dataset or a.model_version:
        info = bundle_contents.create_bundle(
            s.home,
            store(s),
            project,
            a.bundle_id,
            a.notes,
            s.user,
            a.dataset or (),
            _pairs(a.model_version, "--model-version"),
        )
    else:
        info = bundles.create_bundle(s.home, store(s), project, a.bundle_id, a.notes, s.user)
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


def _print_diff(diff: Any, full: bool) -> None:
    print(f"{diff.before or '(no earlier bundle)'} -> {diff.after}")
    if diff.empty:
        print("  no change")
    for f in diff.files:
        print(f"  {f['change']:<8} {f['path']}")
        if full and f["diff"]:
            print("    " + f["diff"].replace("\n", "\n    ").rstrip())
    for m in diff.models:
        print(f"  model    {m['model']}: {m['before'] or '-'} -> {m['after'] or '-'}")
    for d in diff.data:
        before = f"{d['before']['rows']} rows" if d["before"] else "-"
        after = f"{d['after']['rows']} rows" if d["after"] else "-"
        print(f"  data     {d['dataset']}: {before} -> {after}")


def cmd_bundle_diff(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundle_contents, design

    if a.bundle_id:
        diff = bundle_contents.diff_bundles(store(s), a.project, a.bundle_id, a.against)
    else:
        diff = bundle_contents.diff_project(store(s), design.open_project(s, a.project))
    _print_diff(diff, a.full)
    return 0


def cmd_bundle_revert(s: Settings, a: argparse.Namespace) -> int:
    from engine import bundle_contents, design

    diff = bundle_contents.revert(store(s), design.open_project(s, a.project), a.bundle_id)
    print(f"project {a.project} reverted to bundle {a.bundle_id}")
    _print_diff(diff, False)
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
    p = add(project, "create", cmd_project_create, "Create an empty project on the design node.")
    p.add_argument("name")
    p.add_argument("--description", default="")

    dataset = top.add_parser("dataset", help="import, list and profile datasets").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        dataset,
        "import",
        cmd_dataset_import,
        "Import a CSV or Parquet file as a managed dataset (a broken row refuses the import, "
        "with its line number, and changes nothing).",
    )
    p.add_argument("path")
    p.add_argument("--name", help="dataset name (letters, digits, _); default: the file name")
    p.add_argument("--project", default="fraud")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    p.add_argument(
        "--type",
        action="append",
        metavar="COLUMN=TYPE",
        help="correct an inferred type (repeatable)",
    )
    p.add_argument("--partition-by", metavar="COLUMN", help="partition by day of this date column")
    p.add_argument("--description", default="")
    p.add_argument("--infer-only", action="store_true", help="print the inferred schema and stop")
    p = add(dataset, "list", cmd_dataset_list, "List the project's datasets.")
    p.add_argument("--project", default="fraud")
    p = add(
        dataset, "profile", cmd_dataset_profile, "Profile each column (missing, distinct, range)."
    )
    p.add_argument("dataset")
    p.add_argument("--project", default="fraud")
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")

    recipe = top.add_parser("recipe", help="SQL and Python recipes").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        recipe,
        "create",
        cmd_recipe_create,
        "Create or update a recipe: SQL (refused if it fails on the current data) or Python "
        "(recipes/NAME.py defining run(inputs, variables) -> DataFrame; refused on a syntax "
        "error or without run()).",
    )
    p.add_argument("name")
    p.add_argument("--project", default="fraud")
    p.add_argument(
        "--input", action="append", required=True, metavar="DATASET[:all|same]", help="repeatable"
    )
    p.add_argument("--output", required=True)
    p.add_argument("--sql", help="the SQL text")
    p.add_argument("--sql-file", help="read the SQL from this file")
    p.add_argument(
        "--python-file", help="a Python recipe: read its code from this file (new recipes)"
    )
    p.add_argument("--partitioned-by", help="partition a new output dataset by this column")
    p.add_argument("--force", action="store_true", help="overwrite even if changed meanwhile")
    p = add(
        recipe,
        "preview",
        cmd_recipe_preview,
        "Show a recipe's first rows and output schema (a Python recipe runs in full, in its "
        "own process).",
    )
    p.add_argument("name", nargs="?")
    p.add_argument("--project", default="fraud")
    p.add_argument("--sql")
    p.add_argument("--sql-file")
    p.add_argument("--python-file", help="preview this Python recipe code instead")
    p.add_argument("--input", action="append", metavar="DATASET[:all|same]")
    p.add_argument("--rows", type=int, default=10)

    flow = top.add_parser("flow", help="build datasets").add_subparsers(dest="cmd", required=True)
    p = add(
        flow, "build", cmd_flow_build, "Build a dataset and everything upstream of it, in order."
    )
    p.add_argument("dataset")
    p.add_argument("--project", default="fraud")
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
    p.add_argument(
        "--downstream", action="store_true", help="rebuild everything built from DATASET instead"
    )

    metric = top.add_parser("metric", help="dataset metrics and their history").add_subparsers(
        dest="cmd", required=True
    )
    p = add(metric, "add", cmd_metric_add, "Declare a metric on a dataset (metrics.yaml).")
    p.add_argument("dataset")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--type",
        required=True,
        choices=("record_count", "distinct_count", "missing_share", "min", "max", "mean", "sql"),
    )
    p.add_argument("--column")
    p.add_argument("--sql", help="for type sql: a query over 'dataset' returning one number")
    p.add_argument("--project", default="fraud")
    p = add(metric, "compute", cmd_metric_compute, "Compute a dataset's metrics and record them.")
    p.add_argument("dataset")
    p.add_argument("--partition", help="default: the newest partition")
    p.add_argument("--project", default="fraud")
    p = add(metric, "history", cmd_metric_history, "Recorded values of a dataset's metrics.")
    p.add_argument("dataset")
    p.add_argument("--metric")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--project", default="fraud")

    check = top.add_parser("check", help="data checks").add_subparsers(dest="cmd", required=True)
    p = add(check, "add", cmd_check_add, "Declare a check on a dataset (checks.yaml).")
    p.add_argument("dataset")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--type",
        required=True,
        choices=("metric_bounds", "value_in_set", "schema_equals", "distinct_count_in_range"),
    )
    p.add_argument("--column")
    p.add_argument("--values", help="value_in_set: allowed values, comma-separated")
    p.add_argument("--metric", help="metric_bounds: a metric name from metrics.yaml")
    p.add_argument("--min", type=float, help="hard lower bound (error)")
    p.add_argument("--max", type=float, help="hard upper bound (error)")
    p.add_argument("--soft-min", type=float, help="soft lower bound (warning)")
    p.add_argument("--soft-max", type=float, help="soft upper bound (warning)")
    p.add_argument("--tolerance", type=float, help="distinct_count_in_range: widening, e.g. 0.2")
    p.add_argument("--severity", choices=("error", "warning"), default="error")
    p.add_argument("--project", default="fraud")
    p = add(
        check, "run", cmd_check_run, "Run a dataset's checks on the design node (exit 1 on ERROR)."
    )
    p.add_argument("dataset")
    p.add_argument("--partition", help="default: the newest partition")
    p.add_argument("--project", default="fraud")
    p = add(check, "history", cmd_check_history, "Recorded check results of a dataset.")
    p.add_argument("dataset", nargs="?")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--project", default="fraud")

    lab = top.add_parser("lab", help="train and compare models, deploy one").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        lab, "train", cmd_lab_train, "Train a lab run (LightGBM or a logistic-regression baseline)."
    )
    p.add_argument("--dataset", default="training_set")
    p.add_argument("--target")
    p.add_argument("--feature", action="append", help="repeatable; default: the project model's")
    p.add_argument("--model", help="saved model name the run belongs to")
    p.add_argument("--algorithm", choices=("lightgbm", "logistic_regression"), default="lightgbm")
    p.add_argument("--split", choices=("time", "random"), default="time")
    p.add_argument("--time-column")
    p.add_argument("--validation-share", type=float, default=0.2)
    p.add_argument("--imbalance", choices=("none", "balanced"), default="none")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="e.g. num_leaves=15")
    p.add_argument("--project", default="fraud")
    p = add(lab, "list", cmd_lab_list, "List lab runs and their metrics.")
    p.add_argument("--model")
    p.add_argument("--project", default="fraud")
    p = add(lab, "deploy", cmd_lab_deploy, "Make a LightGBM lab run the model's active version.")
    p.add_argument("run")
    p.add_argument("--model", default="fraud_model")
    p.add_argument("--project", default="fraud")

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
    p.add_argument(
        "--dataset", action="append", help="carry this managed dataset's data (repeatable)"
    )
    p.add_argument(
        "--model-version", action="append", metavar="MODEL=VERSION", help="default: the active one"
    )
    p = add(
        bundle,
        "diff",
        cmd_bundle_diff,
        "Compare a bundle with the one before it (or the project with the newest bundle).",
    )
    p.add_argument("bundle_id", nargs="?")
    p.add_argument("--against", help="compare with this bundle instead")
    p.add_argument("--full", action="store_true", help="show the text differences")
    p.add_argument("--project", default="fraud")
    p = add(
        bundle,
        "revert",
        cmd_bundle_revert,
        "Make the project's definitions, model versions and carried data those of a bundle.",
    )
    p.add_argument("bundle_id")
    p.add_argument("--project", default="fraud")
    p = add(bundle, "list", cmd_bundle_list, "List bundles.")
    p.add_argument("--project")
    p = add(bundle, "verify", cmd_bundle_verify, "Check every member's SHA-256.")
    p.add_argument("bundle_id", nargs="?")
    p.add_argument("--project", default="fraud")
    p.add_argument("--file", help="verify this zip instead of a published bundle")
