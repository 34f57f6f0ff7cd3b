"""Data checks on a dataset (one partition, or the whole of an unpartitioned one).

Declared per dataset in ``checks.yaml``; each has a ``severity``: a failed ``error`` check
stops a scenario, a ``warning`` is recorded and lets it go on. Column-level kinds
(``dtype``, ``not_null``, ``unique``, ``in_range``, ``value_in_set``, ``matches``,
``row_condition``, ``schema_equals``) are pandera schemas validated inside DuckDB
(:mod:`engine.project.pandera_checks`). What pandera has no equivalent for stays here:

* ``metric_bounds``: a metric (a name from ``metrics.yaml``, or inline ``{type, column}``)
  with hard bounds ``min``/``max`` (ERROR outside) and soft bounds ``soft_min``/``soft_max``
  (WARNING outside);
* ``distinct_count_in_range``: the distinct count of ``column`` lies within the range
  learned from history (earlier *accepted* partitions, or earlier passed runs for an
  unpartitioned dataset, :mod:`engine.project.check_baselines`), widened by ``tolerance``.

Results are recorded in ``check_results`` (``details``: JSON of what failed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import ibis.common.exceptions as ibis_errors
import pandas as pd
import sqlalchemy as sa

from engine.core import yamltext
from engine.core.errors import NodalError
from engine.project import check_baselines, definitions, metrics, pandera_checks
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
    # what failed, in the user's words: kind, column, failing_rows, examples (≤ 5), failed
    details: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CheckContext:
    project: Project
    dataset: str
    partition: str | None  # None: the whole dataset (unpartitioned)
    store: ControlStore
    node: str
    # One DuckDB connection over the partition for every pandera check of a run, opened
    # at the first one (run_checks closes it).
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _validator: list[pandera_checks.Validator] = field(default_factory=list)

    @property
    def validator(self) -> pandera_checks.Validator:
        if not self._validator:
            self._validator.append(
                self.resources.enter_context(pandera_checks.validator(self.ref, self.partition))
            )
        return self._validator[0]

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


def _learned(spec: dict[str, Any], value: int, past: list[float], source: str, column: str):
    if not past:
        return CheckResult(
            spec["name"],
            WARNING,
            str(value),
            "no history yet to learn the typical range from",
            {"kind": spec["type"], "column": column, "failed": False},
        )
    tol = float(spec.get("tolerance", 0.2))
    low, high = min(past) * (1 - tol), max(past) * (1 + tol)
    details = {"kind": spec["type"], "column": column, "low": low, "high": high}
    if low <= value <= high:
        return CheckResult(
            spec["name"],
            OK,
            str(value),
            f"{value} distinct {column} within {low:.0f}..{high:.0f}",
            {**details, "failed": False},
        )
    return CheckResult(
        spec["name"],
        _failed(spec),
        str(value),
        f"{value} distinct {column}, outside the typical range {low:.0f}..{high:.0f} "
        f"learned from {source}",
        {**details, "failed": True},
    )


def _distinct_count_in_range(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    ref, column = ctx.ref, spec["column"]
    n_hist = int(spec.get("history_days", 14))
    if ctx.partition is None:
        with ds.session({"d": ref}) as con:
            value = int(
                con.execute(f"SELECT count(DISTINCT {_ident(column)}) FROM d").fetchone()[0]
            )
        past = _past_values(ctx, f"check:{spec['name']}", n_hist, spec["name"])
        result = _learned(spec, value, past, f"{len(past)} earlier accepted runs", column)
        if not (result.details or {}).get("failed"):  # learn only from accepted runs
            metrics.record(
                ctx.store,
                ctx.project.name,
                ctx.dataset,
                [metrics.MetricValue(f"check:{spec['name']}", value, None)],
                ctx.node,
            )
        return result
    parts = ref.partitions()
    if ctx.partition not in parts:
        raise ds.DatasetError(f"dataset {ctx.dataset!r} has no partition {ctx.partition}")
    base = check_baselines.latest(ctx.store, ctx.node, ctx.project.name, ctx.dataset, spec["name"])
    if base is not None and base.partition == ctx.partition:
        return CheckResult(
            spec["name"],
            OK,
            base.value or "",
            f"{base.value} distinct {column}, accepted as the new baseline by {base.actor} "
            f"at {base.at[:16].replace('T', ' ')}",
            {"kind": spec["type"], "column": column, "failed": False, "accepted_by": base.actor},
        )
    i = parts.index(ctx.partition)
    accepted = check_baselines.learnable(
        ctx.store, ctx.node, ctx.project.name, ctx.dataset, spec["name"], parts[:i]
    )
    history = accepted[-n_hist:]
    with ds.session() as con:
        rows = con.execute(
            f"SELECT CAST({ref.partitioned_by} AS VARCHAR), count(DISTINCT {_ident(column)}) "
            f"FROM {ds.scan_sql(ref, [*history, ctx.partition])} GROUP BY 1"
        ).fetchall()
    counts = dict(rows)
    value = int(counts.get(ctx.partition, 0))
    past = [int(counts[p]) for p in history if p in counts]
    return _learned(spec, value, past, f"{len(past)} earlier accepted partitions", column)


def _past_values(ctx: CheckContext, metric: str, n: int, check: str) -> list[float]:
    base = check_baselines.latest(ctx.store, ctx.node, ctx.project.name, ctx.dataset, check)
    where = [
        metric_values.c.project == ctx.project.name,
        metric_values.c.dataset == ctx.dataset,
        metric_values.c.metric == metric,
        metric_values.c.node == ctx.node,
        metric_values.c.value.is_not(None),
    ]
    if base is not None:
        where.append(metric_values.c.at >= base.at)
    with ctx.store.read() as conn:
        rows = conn.execute(
            sa.select(metric_values.c.value)
            .where(*where)
            .order_by(metric_values.c.id.desc())
            .limit(n)
        ).all()
    return [float(r[0]) for r in rows]


def _pandera(ctx: CheckContext, spec: dict[str, Any]) -> CheckResult:
    """A column-level check: a pandera schema validated inside DuckDB."""
    declared = ctx.project.datasets[ctx.dataset].schema
    if spec.get("type") == "schema_equals" and not declared:
        raise ProjectError(
            f"check {spec['name']}: dataset {ctx.dataset!r} declares no schema in datasets.yaml"
        )
    verdict = ctx.validator.validate(spec, declared)
    outcome = OK if verdict.passed else _failed(spec)
    return CheckResult(
        spec["name"],
        outcome,
        verdict.value,
        verdict.message,
        {**verdict.details, "failed": not verdict.passed},
    )


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
        return CheckResult(
            spec["name"], _failed(spec), shown, f"{label}: no value to check", _mb(mspec, True)
        )
    lo, hi = spec.get("min"), spec.get("max")
    if (lo is not None and value < float(lo)) or (hi is not None and value > float(hi)):
        return CheckResult(
            spec["name"],
            ERROR,
            shown,
            f"{label}, outside the hard bounds {lo}..{hi}",
            _mb(mspec, True),
        )
    slo, shi = spec.get("soft_min"), spec.get("soft_max")
    if (slo is not None and value < float(slo)) or (shi is not None and value > float(shi)):
        return CheckResult(
            spec["name"],
            WARNING,
            shown,
            f"{label}, outside the soft bounds {slo}..{shi}",
            _mb(mspec, True),
        )
    return CheckResult(spec["name"], OK, shown, f"{label} within bounds", _mb(mspec, False))


def _mb(mspec: dict[str, Any], failed: bool) -> dict[str, Any]:
    return {"kind": "metric_bounds", "metric": mspec.get("name"), "failed": failed}


CHECK_TYPES: dict[str, Callable[[CheckContext, dict[str, Any]], CheckResult]] = {
    "metric_bounds": _metric_bounds,
    "distinct_count_in_range": _distinct_count_in_range,
    **{kind: _pandera for kind in pandera_checks.KINDS},
}
_NEEDS_COLUMN = {"distinct_count_in_range", *pandera_checks.NEEDS_COLUMN}


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
    with ctx.resources:
        for spec in specs:
            fn = CHECK_TYPES.get(spec.get("type", ""))
            if fn is None:
                raise ProjectError(
                    f"checks.yaml: {spec.get('name')}: unknown check type {spec.get('type')!r}"
                )
            try:
                results.append(fn(ctx, spec))
            except (
                duckdb.Error,
                ibis_errors.IbisError,
                metrics.MetricError,
                CheckError,
                pandera_checks.PanderaCheckError,
            ) as exc:
                # A check that cannot be evaluated (e.g. its column was dropped) fails loudly.
                message = str(exc).splitlines()[0]
                results.append(
                    CheckResult(
                        spec["name"],
                        _failed(spec),
                        "",
                        f"cannot run: {message}",
                        {"kind": spec.get("type"), "failed": True},
                    )
                )
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
                    details=pandera_checks.details_json(r.details),
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
        if kind in pandera_checks.KINDS:
            pandera_checks.validate_spec(spec, metrics.columns_of(project, dataset), what)
        if kind == "metric_bounds":
            if all(spec.get(k) is None for k in ("min", "max", "soft_min", "soft_max")):
                raise CheckError(f"{what}: give at least one bound (min, max, soft_min, soft_max)")
            metric = spec.get("metric")
            if isinstance(metric, dict):
                metrics.validate_metric(project, dataset, {"name": spec.get("name"), **metric})
            elif metric not in {m["name"] for m in project.metrics.get(dataset, [])}:
                raise CheckError(f"{what}: dataset {dataset} has no metric {metric!r}")
    except (metrics.MetricError, pandera_checks.PanderaCheckError) as exc:
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

    definitions.update_project(project, change, paths=["checks.yaml"])


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

    definitions.update_project(project, change, paths=["checks.yaml"])


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
        "details",
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


def accept_baseline(
    project: Project,
    dataset: str,
    check: str,
    partition: str | None,
    store: ControlStore,
    node: str,
    actor: str,
    note: str = "",
) -> check_baselines.Baseline:
    """ "Accept as the new baseline": the learned check ``check`` of ``dataset`` learns from
    ``partition`` on (None: an unpartitioned dataset's latest run), recorded with ``actor``
    and the time. Only learned checks have a baseline; the check must have run there."""
    specs = {s.get("name"): s for s in project.checks.get(dataset, [])}
    if dataset not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {dataset!r}")
    if check not in specs:
        raise CheckError(f"dataset {dataset} has no check {check!r}")
    if specs[check].get("type") not in check_baselines.LEARNED_KINDS:
        raise CheckError(
            f"check {check} is a {specs[check].get('type')} check: only checks learned from "
            f"history ({', '.join(check_baselines.LEARNED_KINDS)}) have a baseline to accept"
        )
    ref = project.dataset(dataset)
    if ref.partitioned_by:
        if partition is None:
            raise CheckError(f"dataset {dataset} is partitioned: say which partition to accept")
        partition = ref.check_partition(partition)
    else:
        partition = None
    base = check_baselines.accept(store, node, project.name, dataset, check, partition, actor, note)
    if partition is None and base.value not in (None, ""):
        # An unpartitioned dataset learns from the values of accepted runs.
        metrics.record(
            store,
            project.name,
            dataset,
            [metrics.MetricValue(f"check:{check}", float(base.value), None)],
            node,
        )
    return base


def export_schema(project: Project, dataset: str) -> str:
    """The dataset's declared schema and column checks as pandera YAML."""
    if dataset not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {dataset!r}")
    declared = dict(project.datasets[dataset].schema or {})
    return pandera_checks.export_yaml(dataset, declared, project.checks.get(dataset, []))


def import_schema(project: Project, dataset: str, text: str, severity: str = "error") -> list[str]:
    """Add the checks a pandera YAML schema declares to ``dataset`` (``checks.yaml``), all
    or none; returns their names. A check whose name is taken is refused."""
    if severity not in SEVERITIES:
        raise CheckError("severity must be 'error' or 'warning'")
    try:
        _declared, specs = pandera_checks.import_yaml(text, severity)
    except pandera_checks.PanderaCheckError as exc:
        raise CheckError(str(exc)) from None
    if not specs:
        raise CheckError("the schema declares no column type or check to import")
    for spec in specs:
        check_name(spec.get("name"), "check name")
        validate_check(project, dataset, spec)

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        existing = list(yamltext.load(current["checks.yaml"]).get(dataset) or [])
        taken = {c.get("name") for c in existing} & {s["name"] for s in specs}
        if taken:
            raise CheckError(f"dataset {dataset} already has checks {', '.join(sorted(taken))}")
        return {
            "checks.yaml": yamltext.set_entry(current["checks.yaml"], dataset, [*existing, *specs])
        }

    definitions.update_project(project, change, paths=["checks.yaml"])
    return [s["name"] for s in specs]


def awaiting_acceptance(project: Project, store: ControlStore, dataset: str) -> list[dict]:
    """Failed results of the dataset's learned checks that nobody accepted yet."""
    learned = [
        s["name"]
        for s in project.checks.get(dataset, [])
        if s.get("type") in check_baselines.LEARNED_KINDS
    ]
    return check_baselines.awaiting(store, project.name, dataset, learned)


def describe_details(details: str | dict | None) -> tuple[object, str]:
    """(failing rows, examples as text) of a recorded result's details, for tables."""
    if isinstance(details, str):
        try:
            details = json.loads(details)
        except ValueError:
            details = None
    if not isinstance(details, dict):
        return None, ""
    return details.get("failing_rows"), ", ".join(map(str, details.get("examples") or []))


def run_results(store: ControlStore, run_id: int) -> pd.DataFrame:
    """The check results a scenario run recorded, with what failed (rows, a few values)."""
    t = check_results
    q = (
        sa.select(
            t.c.dataset,
            t.c.partition,
            t.c.check_name,
            t.c.outcome,
            t.c.value,
            t.c.message,
            t.c.details,
        )
        .where(t.c.run_id == run_id)
        .order_by(t.c.id)
    )
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        failing, examples = describe_details(r["details"])
        out.append(
            {
                "dataset": r["dataset"],
                "partition": r["partition"],
                "check": r["check_name"],
                "outcome": r["outcome"],
                "failing rows": failing,
                "examples": examples,
                "message": r["message"],
            }
        )
    columns = ["dataset", "partition", "check", "outcome", "failing rows", "examples", "message"]
    return pd.DataFrame(out, columns=columns)
