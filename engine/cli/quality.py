"""Metric and check commands: ``nodal metric|check …``."""

from __future__ import annotations

import argparse
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

# engine.project.checks.CHECK_TYPES, spelled out so that --help does not import pandera
CHECK_TYPES = (
    "metric_bounds",
    "distinct_count_in_range",
    "dtype",
    "not_null",
    "unique",
    "in_range",
    "value_in_set",
    "matches",
    "row_condition",
    "schema_equals",
)


def cmd_metric_add(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import metrics

    spec = {"name": a.name, "type": a.type, "column": a.column, "sql": a.sql}
    project = open_project(s, a)
    metrics.add_metric(project, a.dataset, spec)
    print(f"metric {a.name} added to {a.dataset} of project {project.name}")
    return 0


def cmd_metric_compute(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import metrics

    project = open_project(s, a)
    values = metrics.compute(project, a.dataset, store(s), "design", a.partition)
    print(f"metrics of {a.dataset} in project {project.name}:")
    rows = [{"metric": v.name, "partition": v.partition or "", "value": v.value} for v in values]
    print_rows(rows, ["metric", "partition", "value"])
    return 0


def cmd_metric_history(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import metrics

    project = project_name(s, a)
    frame = metrics.history(store(s), project, a.dataset, a.metric, limit=a.limit)
    print(f"metric history of {a.dataset} in project {project}:")
    print_rows(frame.to_dict("records"), list(frame.columns))
    return 0


def cmd_check_add(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import checks

    spec: dict[str, Any] = {"name": a.name, "type": a.type, "severity": a.severity}
    if a.column:
        spec["column"] = a.column
    if a.values:
        spec["values"] = [v.strip() for v in a.values.split(",")]
    if a.metric:
        spec["metric"] = a.metric
    for key in ("dtype", "pattern", "expression"):
        if getattr(a, key):
            spec[key] = getattr(a, key)
    for key in ("min", "max", "soft_min", "soft_max", "tolerance"):
        if getattr(a, key) is not None:
            value = getattr(a, key)
            spec[key] = int(value) if value.is_integer() and key != "tolerance" else value
    project = open_project(s, a)
    checks.add_check(project, a.dataset, spec)
    print(f"check {a.name} added to {a.dataset} of project {project.name}")
    return 0


def cmd_check_run(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import checks

    project = open_project(s, a)
    results = checks.run_checks(project, a.dataset, a.partition, store(s), "design")
    print(f"checks of {a.dataset} in project {project.name}:")
    print_rows([r.__dict__ for r in results], ["name", "outcome", "value", "message"])
    return 1 if checks.worst(results) == checks.ERROR else 0


def cmd_check_export(s: Settings, a: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.project import checks

    project = open_project(s, a)
    text = checks.export_schema(project, a.dataset)
    if a.output in (None, "-"):
        print(text, end="")
    else:
        Path(a.output).write_text(text)
        print(f"pandera schema of {a.dataset} written to {a.output}")
    return 0


def cmd_check_import(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import checks

    project = open_project(s, a)
    names = checks.import_schema(project, a.dataset, read_text_file(a.file), a.severity)
    print(f"{len(names)} checks added to {a.dataset} of project {project.name}: {', '.join(names)}")
    return 0


def cmd_check_accept(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import checks

    project = open_project(s, a)
    base = checks.accept_baseline(
        project, a.dataset, a.check, a.partition, store(s), a.node, s.user, a.note or ""
    )
    where = f"partition {base.partition}" if base.partition else "the latest run"
    print(
        f"{a.check} on {a.dataset} ({a.node}): {where} (value {base.value}) accepted as the new "
        f"baseline by {base.actor} at {base.at}"
    )
    return 0


def cmd_check_history(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import checks

    project = project_name(s, a)
    frame = checks.history(store(s), project, a.dataset, limit=a.limit)
    print(f"check history of {a.dataset or 'every dataset'} in project {project}:")
    print_rows(
        frame.to_dict("records"), ["at", "node", "partition", "check_name", "outcome", "message"]
    )
    return 0


def register(top: Any) -> None:
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
    add_project(p)
    p = add(metric, "compute", cmd_metric_compute, "Compute a dataset's metrics and record them.")
    p.add_argument("dataset")
    p.add_argument("--partition", help="default: the newest partition")
    add_project(p)
    p = add(metric, "history", cmd_metric_history, "Recorded values of a dataset's metrics.")
    p.add_argument("dataset")
    p.add_argument("--metric")
    p.add_argument("--limit", type=int, default=50)
    add_project(p)

    check = top.add_parser("check", help="data checks").add_subparsers(dest="cmd", required=True)
    p = add(check, "add", cmd_check_add, "Declare a check on a dataset (checks.yaml).")
    p.add_argument("dataset")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--type",
        required=True,
        choices=CHECK_TYPES,
        help="column checks (dtype, not_null, unique, in_range, value_in_set, matches, "
        "row_condition, schema_equals) run as pandera schemas inside DuckDB; metric_bounds "
        "and distinct_count_in_range are nodal's own",
    )
    p.add_argument("--column")
    p.add_argument("--values", help="value_in_set: allowed values, comma-separated")
    p.add_argument("--metric", help="metric_bounds: a metric name from metrics.yaml")
    p.add_argument("--dtype", help="dtype: the column's DuckDB type, e.g. VARCHAR, DOUBLE")
    p.add_argument("--pattern", help="matches: a regular expression each value must match")
    p.add_argument(
        "--expression",
        help="row_condition: a SQL condition every row must meet, e.g. 'low <= high AND qty > 0'",
    )
    p.add_argument("--min", type=float, help="hard lower bound (error); in_range: lowest value")
    p.add_argument("--max", type=float, help="hard upper bound (error); in_range: highest value")
    p.add_argument("--soft-min", type=float, help="soft lower bound (warning)")
    p.add_argument("--soft-max", type=float, help="soft upper bound (warning)")
    p.add_argument("--tolerance", type=float, help="distinct_count_in_range: widening, e.g. 0.2")
    p.add_argument("--severity", choices=("error", "warning"), default="error")
    add_project(p)
    p = add(
        check, "run", cmd_check_run, "Run a dataset's checks on the design node (exit 1 on ERROR)."
    )
    p.add_argument("dataset")
    p.add_argument("--partition", help="default: the newest partition")
    add_project(p)
    p = add(
        check,
        "export",
        cmd_check_export,
        "Write a dataset's declared schema and column checks as pandera YAML.",
    )
    p.add_argument("dataset")
    p.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_project(p)
    p = add(
        check,
        "import",
        cmd_check_import,
        "Add the column checks of a pandera YAML schema to a dataset (checks.yaml).",
    )
    p.add_argument("dataset")
    p.add_argument("file", help="a pandera YAML schema (- for standard input)")
    p.add_argument("--severity", choices=("error", "warning"), default="error")
    add_project(p)
    p = add(
        check,
        "accept",
        cmd_check_accept,
        "Accept a learned check's result on a partition as the new baseline (NODAL_USER is "
        "recorded as who accepted it).",
    )
    p.add_argument("dataset")
    p.add_argument("check", help="a distinct_count_in_range check of the dataset")
    p.add_argument("--partition", help="the partition to accept (partitioned datasets)")
    p.add_argument(
        "--node", default="design", help="where the check ran: design or an infrastructure id"
    )
    p.add_argument("--note", help="why, kept with the baseline")
    add_project(p)
    p = add(check, "history", cmd_check_history, "Recorded check results of a dataset.")
    p.add_argument("dataset", nargs="?")
    p.add_argument("--limit", type=int, default=50)
    add_project(p)
