"""Data checks on a dataset (one partition, or the whole of an unpartitioned one).

Declared per dataset in ``checks.yaml``; each has a ``severity``: a failed ``error`` check
stops a scenario, a ``warning`` is recorded and lets it go on. Types:

* ``metric_bounds``: a metric (a name from ``metrics.yaml``, or inline ``{type, column}``)
  with hard bounds ``min``/``max`` (ERROR outside) and soft bounds ``soft_min``/``soft_max``
  (WARNING outside);
* ``value_in_set``: every value of ``column`` is one of ``values``;
* ``schema_equals``: no new, missing or retyped column against ``datasets.yaml``;
* ``distinct_count_in_range``: the distinct count of ``column`` lies within the range
  learned from history (earlier partitions, or earlier runs for an unpartitioned dataset),
  widened by ``tolerance``.

Results are recorded in ``check_results``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import sqlalchemy as sa

from engine.core import yamltext
from engine.core.errors import NodalError
from engine.project import definitions, metrics
from engine.project.project import Project, ProjectError, check_name
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, check_results, metric_values, now_iso

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
SEVERITIES = ("error", "warning")


class CheckError(NodalError):
    """A check cannot be defined; the message says which and why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: str  # OK | WARNING | ERROR
    value: str
    message: str


@dataclass(frozen=True)
class CheckContext:
    project: Project
    dataset: str
    partition: str | None  # None: the whole dataset (unpartitioned)
    store: ControlStore
    node: str

    @property
    def ref(self) -> ds.DatasetRef:
        return self.project.dataset(self.dataset)

    @property
    def parts(self) -> list[str] | None:
        return [self.partition] if self.partition else None


def _failed(spec: dict[str, Any]) -> str:
    return ERROR if spec.get("severity", "error") == "error" else WARNING


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _distinct_count_in_range(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    ref, column = ctx.ref, spec["column"]
    n_hist = int(spec.get("history_days", 14))
    if ctx.partition is None:
        with ds.session({"d": ref}) as con:
            value = int(
                con.execute(f"SELECT count(DISTINCT {_ident(column)}) FROM d").fetchone()[0]
            )
        past = _past_values(ctx, f"check:{spec['name']}", n_hist)
        metrics.record(
            ctx.store,
            ctx.project.name,
            ctx.dataset,
            [metrics.MetricValue(f"check:{spec['name']}", value, None)],
            ctx.node,
        )
        source = f"{len(past)} earlier runs"
    else:
        parts = ref.partitions()
        if ctx.partition not in parts:
            raise ds.DatasetError(f"dataset {ctx.dataset!r} has no partition {ctx.partition}")
        i = parts.index(ctx.partition)
        history = parts[max(0, i - n_hist) : i]
        with ds.session() as con:
            rows = con.execute(
                f"SELECT CAST({ref.partitioned_by} AS VARCHAR), count(DISTINCT {_ident(column)}) "
                f"FROM {ds.scan_sql(ref, [*history, ctx.partition])} GROUP BY 1"
            ).fetchall()
        counts = dict(rows)
        value = int(counts.get(ctx.partition, 0))
        past = [int(counts[p]) for p in history if p in counts]
        source = f"{len(past)} earlier partitions"
    if not past:
        return CheckResult(
            spec["name"], WARNING, str(value), "no history yet to learn the typical range from"
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
        f"learned from {source}",
    )


def _past_values(ctx: CheckContext, metric: str, n: int) -> list[float]:
    with ctx.store.read() as conn:
        rows = conn.execute(
            sa.select(metric_values.c.value)
            .where(
                metric_values.c.project == ctx.project.name,
                metric_values.c.dataset == ctx.dataset,
                metric_values.c.metric == metric,
                metric_values.c.node == ctx.node,
                metric_values.c.value.is_not(None),
            )
            .order_by(metric_values.c.id.desc())
            .limit(n)
        ).all()
    return [float(r[0]) for r in rows]


def _schema_equals(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    declared = ctx.project.datasets[ctx.dataset].schema
    if not declared:
        raise ProjectError(
            f"check {spec['name']}: dataset {ctx.dataset!r} declares no schema in datasets.yaml"
        )
    ref = ctx.ref
    actual = ds.schema(ref, ctx.partition)
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


def _metric_spec(ctx: CheckContext, spec: dict[str, Any]) -> dict[str, Any]:
    metric = spec.get("metric")
    if isinstance(metric, dict):
        return {"name": f"check:{spec['name']}", **metric}
    declared = {m["name"]: m for m in ctx.project.metrics.get(ctx.dataset, [])}
    if metric not in declared:
        raise CheckError(
            f"check {spec['name']}: dataset {ctx.dataset} has no metric {metric!r} in metrics.yaml"
        )
    return declared[metric]


def _metric_bounds(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    mspec = _metric_spec(ctx, spec)
    mv = metrics.compute_value(ctx.project, ctx.dataset, mspec, ctx.partition)
    metrics.record(ctx.store, ctx.project.name, ctx.dataset, [mv], ctx.node)
    value = mv.value
    shown = "null" if value is None else f"{value:g}"
    label = f"{mspec['name']} = {shown}"
    if value is None:
        return CheckResult(spec["name"], _failed(spec), shown, f"{label}: no value to check")
    lo, hi = spec.get("min"), spec.get("max")
    if (lo is not None and value < float(lo)) or (hi is not None and value > float(hi)):
        return CheckResult(
            spec["name"], ERROR, shown, f"{label}, outside the hard bounds {lo}..{hi}"
        )
    slo, shi = spec.get("soft_min"), spec.get("soft_max")
    if (slo is not None and value < float(slo)) or (shi is not None and value > float(shi)):
        return CheckResult(
            spec["name"], WARNING, shown, f"{label}, outside the soft bounds {slo}..{shi}"
        )
    return CheckResult(spec["name"], OK, shown, f"{label} within bounds")


def _value_in_set(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    column, allowed = spec["column"], [str(v) for v in spec.get("values") or []]
    c = _ident(column)
    with ds.session({"d": (ctx.ref, ctx.parts)}) as con:
        con.register("allowed", pd.DataFrame({"v": allowed}))
        bad, examples = con.execute(
            f"SELECT count(*), list(DISTINCT CAST({c} AS VARCHAR))[1:5] FROM d "
            f"WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN (SELECT v FROM allowed)"
        ).fetchone()
    if not bad:
        return CheckResult(spec["name"], OK, "0", f"every {column} is one of {len(allowed)} values")
    return CheckResult(
        spec["name"],
        _failed(spec),
        str(bad),
        f"{bad} rows have a {column} outside the set, e.g. {', '.join(sorted(examples or []))}",
    )


CHECK_TYPES: dict[str, Callable[[CheckContext, dict[str, Any]], CheckResult]] = {
    "metric_bounds": _metric_bounds,
    "value_in_set": _value_in_set,
    "schema_equals": _schema_equals,
    "distinct_count_in_range": _distinct_count_in_range,
}
_NEEDS_COLUMN = {"value_in_set", "distinct_count_in_range"}


def run_checks(
    project: Project,
    dataset: str,
    partition: str | None,
    store: ControlStore,
    node: str,
    run_id: int | None = None,
    only: list[str] | None = None,
) -> list[CheckResult]:
    """Run the checks declared on ``dataset`` and record the results.

    ``partition`` None means the newest partition of a partitioned dataset, or the whole
    of an unpartitioned one. ``only`` restricts to some check names.
    """
    ref = project.dataset(dataset)
    if ref.partitioned_by and partition is not None:
        ref.check_partition(partition)  # a requested partition must be one, before any SQL
    if ref.partitioned_by and partition is None:
        parts = ref.partitions()
        if not parts:
            raise ds.DatasetError(f"dataset {dataset!r} has no partition yet")
        partition = parts[-1]
    if not ref.partitioned_by:
        partition = None
    ctx = CheckContext(project, dataset, partition, store, node)
    specs = [s for s in project.checks.get(dataset, []) if only is None or s.get("name") in only]
    results = []
    for spec in specs:
        fn = CHECK_TYPES.get(spec.get("type", ""))
        if fn is None:
            raise ProjectError(
                f"checks.yaml: {spec.get('name')}: unknown check type {spec.get('type')!r}"
            )
        try:
            results.append(fn(ctx, spec))
        except (duckdb.Error, metrics.MetricError, CheckError) as exc:
            # A check that cannot be evaluated (e.g. its column was dropped) fails loudly.
            message = str(exc).splitlines()[0]
            results.append(CheckResult(spec["name"], _failed(spec), "", f"cannot run: {message}"))
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


def validate_check(project: Project, dataset: str, spec: dict[str, Any]) -> None:
    """Raise :class:`CheckError` when ``spec`` cannot work on ``dataset``."""
    what = f"check {spec.get('name', '?')} on {dataset}"
    if dataset not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {dataset!r}")
    kind = spec.get("type")
    if kind not in CHECK_TYPES:
        raise CheckError(f"{what}: type must be one of {', '.join(CHECK_TYPES)}")
    if spec.get("severity", "error") not in SEVERITIES:
        raise CheckError(f"{what}: severity must be 'error' or 'warning'")
    try:
        if kind in _NEEDS_COLUMN:
            metrics.check_column(project, dataset, spec.get("column"), what)
        if kind == "value_in_set" and not spec.get("values"):
            raise CheckError(f"{what}: list the allowed values")
        if kind == "schema_equals" and not project.datasets[dataset].schema:
            raise CheckError(f"{what}: dataset {dataset} declares no schema to compare with")
        if kind == "metric_bounds":
            if all(spec.get(k) is None for k in ("min", "max", "soft_min", "soft_max")):
                raise CheckError(f"{what}: give at least one bound (min, max, soft_min, soft_max)")
            metric = spec.get("metric")
            if isinstance(metric, dict):
                metrics.validate_metric(project, dataset, {"name": spec.get("name"), **metric})
            elif metric not in {m["name"] for m in project.metrics.get(dataset, [])}:
                raise CheckError(f"{what}: dataset {dataset} has no metric {metric!r}")
    except metrics.MetricError as exc:
        raise CheckError(str(exc)) from None


def add_check(project: Project, dataset: str, spec: dict[str, Any]) -> None:
    """Declare a check on ``dataset`` in ``checks.yaml`` (refused if invalid or taken)."""
    spec = {k: v for k, v in spec.items() if v is not None and v != ""}
    check_name(spec.get("name"), "check name")
    validate_check(project, dataset, spec)

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        existing = list(yamltext.load(current["checks.yaml"]).get(dataset) or [])
        if any(c.get("name") == spec["name"] for c in existing):
            raise CheckError(f"dataset {dataset} already has a check {spec['name']!r}")
        return {
            "checks.yaml": yamltext.set_entry(current["checks.yaml"], dataset, [*existing, spec])
        }

    definitions.update(project.root, change, paths=["checks.yaml"], variables=project.variables)


def remove_check(project: Project, dataset: str, name: str) -> None:
    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        existing = list(yamltext.load(current["checks.yaml"]).get(dataset) or [])
        kept = [c for c in existing if c.get("name") != name]
        if len(kept) == len(existing):
            raise CheckError(f"dataset {dataset} has no check {name!r}")
        text = current["checks.yaml"]
        if kept:
            return {"checks.yaml": yamltext.set_entry(text, dataset, kept)}
        return {"checks.yaml": yamltext.remove_entry(text, dataset)}

    definitions.update(project.root, change, paths=["checks.yaml"], variables=project.variables)


def history(
    store: ControlStore, project: str, dataset: str | None = None, limit: int = 500
) -> pd.DataFrame:
    """Recorded check results, newest first."""
    cols = [
        "at",
        "node",
        "dataset",
        "partition",
        "check_name",
        "outcome",
        "value",
        "message",
        "run_id",
    ]
    q = (
        sa.select(*(check_results.c[c] for c in cols))
        .where(check_results.c.project == project)
        .order_by(check_results.c.id.desc())
        .limit(limit)
    )
    if dataset:
        q = q.where(check_results.c.dataset == dataset)
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=cols)
