"""Metrics computed on datasets and kept as history in the control store.

Declared per dataset in ``metrics.yaml``::

    orders:
      - {name: rows, type: record_count}
      - {name: customers, type: distinct_count, column: customer_id}
      - {name: total_missing, type: missing_share, column: total}
      - {name: total_mean, type: mean, column: total}         # also min, max
      - {name: big_ones, type: sql, sql: "SELECT count(*) FROM dataset WHERE total > 1000"}

A SQL metric reads the dataset as ``dataset`` and returns one number. Every computation is
a row of ``metric_values``; checks (``engine/project/checks.py``) put bounds on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import sqlalchemy as sa

from engine.core import yamltext
from engine.core.errors import NodalError
from engine.project import definitions, flow
from engine.project.project import Project, ProjectError, check_name
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, metric_values, now_iso

METRIC_TYPES = ("record_count", "distinct_count", "missing_share", "min", "max", "mean", "sql")
_NEEDS_COLUMN = {"distinct_count", "missing_share", "min", "max", "mean"}
_EXPR = {
    "record_count": "count(*)",
    "distinct_count": "count(DISTINCT {c})",
    "missing_share": "avg(CASE WHEN {c} IS NULL THEN 1.0 ELSE 0.0 END)",
    "min": "min({c})",
    "max": "max({c})",
    "mean": "avg({c})",
}


class MetricError(NodalError):
    """A metric cannot be defined or computed; the message says which and why."""


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float | None
    partition: str | None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def columns_of(project: Project, dataset: str) -> dict[str, str]:
    """The dataset's columns: as stored when it has data, else as declared."""
    ref = project.dataset(dataset)
    if ref.exists():
        return ds.schema(ref)
    return dict(project.datasets[dataset].schema or {})


def check_column(project: Project, dataset: str, column: object, what: str) -> str:
    cols = columns_of(project, dataset)
    if not isinstance(column, str) or not column:
        raise MetricError(f"{what}: choose a column of {dataset}")
    if cols and column not in cols:
        raise MetricError(
            f"{what}: dataset {dataset!r} has no column {column!r} (it has {', '.join(cols)})"
        )
    return column


def validate_metric(project: Project, dataset: str, spec: dict[str, Any]) -> None:
    what = f"metric {spec.get('name', '?')} on {dataset}"
    if project.datasets.get(dataset) is None:
        raise ProjectError(f"project {project.name!r} has no dataset {dataset!r}")
    if spec.get("type") not in METRIC_TYPES:
        raise MetricError(f"{what}: type must be one of {', '.join(METRIC_TYPES)}")
    if spec["type"] in _NEEDS_COLUMN:
        check_column(project, dataset, spec.get("column"), what)
    if spec["type"] == "sql" and not str(spec.get("sql", "")).strip():
        raise MetricError(f"{what}: a SQL metric needs a query returning one number")


def value_sql(spec: dict[str, Any]) -> str:
    """A query over view ``dataset`` returning the metric's single value."""
    if spec["type"] == "sql":
        return str(spec["sql"]).strip().rstrip(";")
    expr = _EXPR[spec["type"]].format(c=_ident(str(spec.get("column", ""))))
    return f"SELECT {expr} FROM dataset"


def _partition_of(ref: ds.DatasetRef, partition: str | None) -> str | None:
    if not ref.partitioned_by:
        return None
    if partition is None:
        parts = ref.partitions()
        if not parts:
            raise ds.DatasetError(f"dataset {ref.name!r} has no partition yet")
        return parts[-1]
    return ref.check_partition(partition)


def compute_value(
    project: Project, dataset: str, spec: dict[str, Any], partition: str | None = None
) -> MetricValue:
    """Compute one metric (not recorded). ``partition`` defaults to the newest one."""
    ref = project.dataset(dataset)
    part = _partition_of(ref, partition)
    sql = value_sql(spec)
    folders = flow.data_folders(project)  # a metric's SQL is a person's: confined as a recipe's
    try:
        if spec["type"] == "sql":
            ds.check_query(sql, f"metric {spec.get('name')}")
        views = {"dataset": (ref, [part] if part else None)}
        with ds.session(views, confine_to=folders) as con:
            con.execute(f'CREATE VIEW {_ident(dataset)} AS SELECT * FROM "dataset"')
            row = con.execute(sql).fetchone()
    except ds.ForbiddenSQL as exc:
        raise MetricError(f"metric {spec.get('name')} on {dataset}: {exc}") from None
    except duckdb.Error as exc:
        detail = ds.outside_message(exc, folders) or exc
        raise MetricError(f"metric {spec.get('name')} on {dataset}: {detail}") from None
    value = row[0] if row else None
    try:
        number = None if value is None else float(value)
    except (TypeError, ValueError):
        raise MetricError(
            f"metric {spec.get('name')} on {dataset}: {value!r} is not a number"
        ) from None
    return MetricValue(str(spec.get("name")), number, part)


def record(
    store: ControlStore,
    project: str,
    dataset: str,
    values: list[MetricValue],
    node: str,
    run_id: int | None = None,
) -> None:
    at = now_iso()
    with store.write() as conn:
        for v in values:
            conn.execute(
                sa.insert(metric_values).values(
                    node=node,
                    project=project,
                    dataset=dataset,
                    partition=v.partition,
                    metric=v.name,
                    value=v.value,
                    run_id=run_id,
                    at=at,
                )
            )


def compute(
    project: Project,
    dataset: str,
    store: ControlStore,
    node: str,
    partition: str | None = None,
    run_id: int | None = None,
) -> list[MetricValue]:
    """Compute every metric declared on ``dataset`` and record the values."""
    specs = project.metrics.get(dataset, [])
    values = [compute_value(project, dataset, spec, partition) for spec in specs]
    record(store, project.name, dataset, values, node, run_id)
    return values


def history(
    store: ControlStore,
    project: str,
    dataset: str,
    metric: str | None = None,
    node: str | None = None,
    limit: int = 1000,
) -> pd.DataFrame:
    """Recorded values, newest first: at, node, partition, metric, value, run_id."""
    q = (
        sa.select(
            metric_values.c.at,
            metric_values.c.node,
            metric_values.c.partition,
            metric_values.c.metric,
            metric_values.c.value,
            metric_values.c.run_id,
        )
        .where(metric_values.c.project == project, metric_values.c.dataset == dataset)
        .order_by(metric_values.c.id.desc())
        .limit(limit)
    )
    if metric:
        q = q.where(metric_values.c.metric == metric)
    if node:
        q = q.where(metric_values.c.node == node)
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return pd.DataFrame(
        [dict(r) for r in rows],
        columns=["at", "node", "partition", "metric", "value", "run_id"],
    )


def add_metric(project: Project, dataset: str, spec: dict[str, Any]) -> None:
    """Declare a metric on ``dataset`` in ``metrics.yaml`` (refused if invalid or taken)."""
    spec = {k: v for k, v in spec.items() if v not in (None, "")}
    check_name(spec.get("name"), "metric name")
    validate_metric(project, dataset, spec)

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        doc = yamltext.load(current["metrics.yaml"])
        existing = list(doc.get(dataset) or [])
        if any(m.get("name") == spec["name"] for m in existing):
            raise MetricError(f"dataset {dataset} already has a metric {spec['name']!r}")
        text = current["metrics.yaml"] or "# Metrics computed on datasets and kept as history.\n"
        return {"metrics.yaml": yamltext.set_entry(text, dataset, [*existing, spec])}

    definitions.update_project(project, change, paths=["metrics.yaml"])
