"""Model quality as Monitoring reads it: the evaluation store's metrics and alarms.

The automation node writes them (``evaluate`` steps, :mod:`engine.automation.evaluation`).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from engine.automation import drift
from engine.automation.evaluation_plan import NOT_APPLICABLE
from engine.storage.control import ControlStore, evaluation_metrics


def read_metrics(
    store: ControlStore,
    node: str,
    project: str,
    model: str | None = None,
    families: list[str] | None = None,
) -> pd.DataFrame:
    """Stored metrics, oldest day first (columns of ``evaluation_metrics``)."""
    t = evaluation_metrics
    q = sa.select(t).where(t.c.node == node, t.c.project == project)
    if model:
        q = q.where(t.c.model == model)
    if families:
        q = q.where(t.c.family.in_(families))
    with store.read() as conn:
        rows = conn.execute(q.order_by(t.c.day, t.c.id)).mappings().all()
    return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in t.columns])


def newest_evaluations(store: ControlStore) -> dict[tuple[str, str], str]:
    """(node, project) → the newest day evaluated there."""
    t = evaluation_metrics
    q = sa.select(t.c.node, t.c.project, sa.func.max(t.c.day)).group_by(t.c.node, t.c.project)
    with store.read() as conn:
        return {(node, project): str(day) for node, project, day in conn.execute(q).all()}


def not_applicable(frame: pd.DataFrame) -> dict[str, str]:
    """Family → why the evaluation did not compute it (its newest ``not_applicable`` row)."""
    rows = frame[(frame["metric"] == NOT_APPLICABLE) & (frame["status"] == "INFO")]
    return {str(r["family"]): str(r["message"]) for r in rows.to_dict("records")}


def latest_alarms(store: ControlStore, node: str, project: str) -> pd.DataFrame:
    """Alarms and warnings of the newest evaluated day (one row per family and feature)."""
    frame = read_metrics(store, node, project)
    frame = frame[frame["family"] != "performance"]
    if frame.empty:
        return frame
    newest = frame["at"].max()
    day = frame.loc[frame["at"] == newest, "day"].max()
    day_rows = frame[(frame["day"] == day) & frame["status"].isin([drift.WARNING, drift.ERROR])]
    return day_rows.drop_duplicates(["role", "family", "feature"])
