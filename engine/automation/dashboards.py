"""Dashboards: publish a checked partition's extract, and read what was published."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, now_iso, published_days


@dataclass(frozen=True)
class PublishResult:
    dashboard: str
    day: str
    rows: int


def publish(
    project: Project,
    dashboard: str,
    day: str,
    store: ControlStore,
    node: str,
    run_id: int | None = None,
    bundle_id: str | None = None,
    checks_passed_at: str | None = None,
) -> PublishResult:
    """Write the dashboard extract for ``day`` and record the day as published."""
    spec = project.dashboards.get(dashboard)
    if spec is None:
        raise ProjectError(f"project {project.name!r} has no dashboard {dashboard!r}")
    source, output = project.dataset(spec["source"]), project.dataset(spec["output"])
    columns = [str(c) for c in spec.get("columns") or []]
    # The extract keeps the day it belongs to, under its own partition column.
    key_in = source.partitioned_by or str(spec.get("date_column") or "day")
    key_out = output.partitioned_by or key_in
    if not columns:
        select = "*" if key_in == key_out else f'* EXCLUDE ("{key_in}"), "{key_in}" AS "{key_out}"'
    else:
        kept = [c for c in columns if c not in (key_in, key_out)]
        select = ", ".join([*(f'"{c}"' for c in kept), f'"{key_in}" AS "{key_out}"'])
    with ds.session({"src": (source, [day])}) as con:
        ds.write(output, f"SELECT {select} FROM src", con=con)
        rows = con.execute("SELECT count(*) FROM src").fetchone()[0]
    with store.write() as conn:
        key = dict(infra_id=node, project=project.name, dashboard=dashboard, day=day)
        conn.execute(
            sa.delete(published_days).where(*[published_days.c[k] == v for k, v in key.items()])
        )
        conn.execute(
            sa.insert(published_days).values(
                **key,
                run_id=run_id,
                bundle_id=bundle_id,
                checks_passed_at=checks_passed_at,
                published_at=now_iso(),
            )
        )
    return PublishResult(dashboard, day, int(rows))


def published(
    store: ControlStore, project: str, dashboard: str, node: str | None = None
) -> pd.DataFrame:
    """Published days, newest first (columns of the ``published_days`` table)."""
    q = sa.select(published_days).where(
        published_days.c.project == project, published_days.c.dashboard == dashboard
    )
    if node is not None:
        q = q.where(published_days.c.infra_id == node)
    with store.read() as conn:
        rows = conn.execute(q.order_by(published_days.c.day.desc())).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in published_days.columns])
