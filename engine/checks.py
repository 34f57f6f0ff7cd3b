"""Data checks on a dataset partition, with results recorded in the control store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, check_results, now_iso

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: str  # OK | WARNING | ERROR
    value: str
    message: str


def _failed(spec: dict[str, Any]) -> str:
    return ERROR if spec.get("severity", "error") == "error" else WARNING


def _distinct_count_in_range(
    project: Project, dataset: str, partition: str, spec: dict[str, Any]
) -> CheckResult:
    ref = project.dataset(dataset)
    column = spec["column"]
    parts = ref.partitions()
    if partition not in parts:
        raise ds.DatasetError(f"dataset {dataset!r} has no partition {partition}")
    history = parts[
        max(0, parts.index(partition) - int(spec.get("history_days", 14))) : parts.index(partition)
    ]
    key = ref.partitioned_by
    with ds.session() as con:
        rows = con.execute(
            f'SELECT CAST({key} AS VARCHAR), count(DISTINCT "{column}") '
            f"FROM {ds.scan_sql(ref, [*history, partition])} GROUP BY 1"
        ).fetchall()
    counts = dict(rows)
    value = int(counts.get(partition, 0))
    past = [int(counts[p]) for p in history if p in counts]
    if not past:
        return CheckResult(
            spec["name"],
            WARNING,
            str(value),
            "no earlier partitions to learn the typical range from",
        )
    tol = float(spec.get("tolerance", 0.2))
    low, high = min(past) * (1 - tol), max(past) * (1 + tol)
    if low <= value <= high:
        return CheckResult(
            spec["name"], OK, str(value), f"{value} distinct {column} within {low:.0f}..{high:.0f}"
        )
    return CheckResult(
        spec["name"],
        _failed(spec),
        str(value),
        f"{value} distinct {column}, outside the typical range {low:.0f}..{high:.0f} "
        f"learned from {len(past)} earlier partitions",
    )


def _schema_equals(
    project: Project, dataset: str, partition: str, spec: dict[str, Any]
) -> CheckResult:
    declared = project.datasets[dataset].schema
    if not declared:
        raise ProjectError(
            f"check {spec['name']}: dataset {dataset!r} declares no schema in datasets.yaml"
        )
    ref = project.dataset(dataset)
    actual = ds.schema(ref, partition)
    actual.pop(ref.partitioned_by or "", None)
    new = [c for c in actual if c not in declared]
    missing = [c for c in declared if c not in actual]
    retyped = [
        f"{c} {declared[c]}→{actual[c]}"
        for c in declared
        if c in actual and actual[c] != declared[c]
    ]
    problems = [
        f"{label}: {', '.join(cols)}"
        for label, cols in (
            ("new columns", new),
            ("missing columns", missing),
            ("retyped", retyped),
        )
        if cols
    ]
    if not problems:
        return CheckResult(spec["name"], OK, str(len(actual)), f"{len(actual)} columns as declared")
    return CheckResult(spec["name"], _failed(spec), str(len(actual)), "; ".join(problems))


CHECK_TYPES = {
    "distinct_count_in_range": _distinct_count_in_range,
    "schema_equals": _schema_equals,
}


def run_checks(
    project: Project,
    dataset: str,
    partition: str,
    store: ControlStore,
    node: str,
    run_id: int | None = None,
) -> list[CheckResult]:
    """Run every check declared on ``dataset`` against one partition and record the results."""
    specs = project.checks.get(dataset, [])
    results = []
    for spec in specs:
        fn = CHECK_TYPES.get(spec.get("type", ""))
        if fn is None:
            raise ProjectError(
                f"checks.yaml: {spec.get('name')}: unknown check type {spec.get('type')!r}"
            )
        results.append(fn(project, dataset, partition, spec))
    now = now_iso()
    with store.write() as conn:
        for r in results:
            conn.execute(
                sa.insert(check_results).values(
                    node=node,
                    project=project.name,
                    dataset=dataset,
                    partition=partition,
                    check_name=r.name,
                    outcome=r.outcome,
                    value=r.value,
                    message=r.message,
                    run_id=run_id,
                    at=now,
                )
            )
    return results


def worst(results: list[CheckResult]) -> str:
    outcomes = {r.outcome for r in results}
    return ERROR if ERROR in outcomes else WARNING if WARNING in outcomes else OK
