"""The evaluation's performance metrics, once the delayed labels of scored days land.

Part of the evaluate step (:mod:`engine.automation.evaluation` calls it per model role):
each scored day of the window keeps statistics that add up, updated as its labels land
(:mod:`engine.automation.day_stats`); :func:`metrics_from_stats` measures every matured day,
pools the last ones against the model's validation metrics (``performance_decay``) and, with
a declared location, looks for the cell where positives most exceed the model's expectation
(``missed_fraud``). :func:`labelled_days` and :func:`performance_metrics` do the same from
all the window's rows at once (what the incremental statistics must equal).
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from engine.automation import day_stats, drift
from engine.automation.evaluation_plan import CHAMPION, INFO, SCORE, Metric, Plan, missing_columns
from engine.models.saved import SavedModel
from engine.project.project import Project
from engine.storage import datasets as ds

LABEL = "__nodal_label"  # the joined label, under a name no project column has


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def needed_columns(plan: Plan, extra: list[str] | None = None) -> list[str]:
    """The scored columns :func:`performance_metrics` reads (and ``extra``, e.g. a
    challenger's features): the id, the day, the score, the amount and the location."""
    mon = plan.monitoring
    cols = [str(mon.id_column), plan.day_column, SCORE]
    cols += [mon.amount] if mon.amount else []
    cols += list(mon.location or ())
    return list(dict.fromkeys([*cols, *(extra or [])]))


def labelled_days(
    project: Project,
    plan: Plan,
    day: str,
    scored_days: list[str],
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Scored rows of recent days joined with the labels that arrived by ``day``.

    The label comes back as column :data:`LABEL` (1.0, 0.0, or missing when not arrived).
    ``columns``: only these scored columns (those the scored dataset has; all when None).
    What is read is bounded by the window, not by the history: the window's scored days,
    and the labels that arrived from the window's first day on (a row's label cannot
    arrive before the row's day).
    """
    mon = plan.monitoring
    if not mon.measures_performance:
        return pd.DataFrame()
    labels = project.dataset(str(mon.labels))
    window_start = str(
        date.fromisoformat(day) - timedelta(days=int(plan.options["performance_window_days"]))
    )
    days = [d for d in scored_days if window_start <= d < day]
    arrived = (
        [d for d in labels.partitions() if days and days[0] <= d <= day] if labels.exists() else []
    )
    if not arrived or not days:
        return pd.DataFrame()
    key, label, when = _q(str(mon.id_column)), _q(str(mon.label_column)), _q(plan.day_column)
    scored = project.dataset(plan.input)
    if columns is None:
        picked = f"s.* REPLACE (CAST(s.{when} AS VARCHAR) AS {when})"
    else:
        have = ds.schema(scored, days[-1])
        keep = [c for c in dict.fromkeys(columns) if c in have or c == plan.day_column]
        picked = ", ".join(
            f"CAST(s.{when} AS VARCHAR) AS {when}" if c == plan.day_column else f"s.{_q(c)}"
            for c in keep
        )
    return ds.query_df(
        f"""
        SELECT {picked}, l.{LABEL}
        FROM day_rows s LEFT JOIN (
            SELECT {key} AS __nodal_id, max(CAST({label} AS DOUBLE)) AS {LABEL}
            FROM known GROUP BY 1
        ) l ON s.{key} = l.__nodal_id
        """,
        {"day_rows": (scored, days), "known": (labels, arrived)},
    )


def performance_metrics(
    role: str,
    saved: SavedModel,
    day: str,
    rows: pd.DataFrame,
    proba: np.ndarray,
    plan: Plan,
) -> list[Metric]:
    """The metrics of :func:`metrics_from_stats`, computed from all the window's rows at once.

    ``rows`` as :func:`labelled_days` returns them. The evaluate step does not use this (it
    keeps each day's statistics and adds only what new labels change:
    :func:`engine.automation.day_stats.window_stats`); it is the same computation done in
    one go, which the tests compare the incremental one with.
    """
    if rows.empty:
        return []
    mon = plan.monitoring
    amount = mon.amount if mon.amount and mon.amount in rows.columns else None
    located = (
        role == CHAMPION and bool(mon.location) and not missing_columns(list(mon.location), rows)
    )
    days = rows[plan.day_column].astype(str).to_numpy()
    per_day = day_stats.rows_stats(
        days,
        proba,
        rows[LABEL].to_numpy(float),
        saved.threshold,
        amount=rows[amount].to_numpy(float) if amount else None,
        location=(
            (rows[mon.location[0]].to_numpy(float), rows[mon.location[1]].to_numpy(float))
            if located and mon.location
            else None
        ),
    )
    for d, n in pd.Series(days).value_counts().items():
        per_day.setdefault(str(d), day_stats.DayStats()).rows = int(n)
    return metrics_from_stats(role, saved, day, per_day, plan, amount is not None)


def metrics_from_stats(
    role: str,
    saved: SavedModel,
    day: str,
    per_day: dict[str, day_stats.DayStats],
    plan: Plan,
    with_amount: bool,
) -> list[Metric]:
    """Per matured day (label coverage ≥ min), then pooled over the last ones vs validation."""
    out: list[Metric] = []
    options = plan.options
    matured: list[str] = []
    for d in sorted(per_day):
        stats = per_day[d]
        coverage = stats.labelled / stats.rows if stats.rows else 0.0
        if (
            coverage < float(options["min_label_coverage"])
            or stats.totals["pos"] <= 0
            or stats.totals["neg"] <= 0
        ):
            continue
        matured.append(d)
        perf = day_stats.performance(stats, with_amount)
        perf["label_coverage"] = coverage
        msg = (
            f"{int(perf['frauds'])} positives in {int(perf['labelled_rows']):,} labelled rows: recall "
            f"{perf['recall']:.2f}, precision {perf['precision']:.2f}, ROC AUC {perf.get('roc_auc', float('nan')):.3f}"
        )
        out += [
            Metric(role, saved.version, d, "performance", "", k, v, INFO, msg)
            for k, v in perf.items()
        ]
    recent = matured[-int(options["decay_window_days"]) :]
    if not recent:
        return out
    pool = day_stats.pooled([per_day[d] for d in recent])
    pooled = day_stats.performance(pool, with_amount)
    valid = saved.meta.get("metrics", {})
    auc_drop = float(valid.get("roc_auc", np.nan)) - pooled.get("roc_auc", np.nan)
    recall_drop = float(valid.get("recall_at_fpr", np.nan)) - pooled["recall"]
    enough = pooled["frauds"] >= int(options["min_frauds"])
    status = drift.OK
    if not enough:
        status = INFO
    elif auc_drop >= float(options["max_roc_auc_drop"]) or recall_drop >= float(
        options["max_recall_drop"]
    ):
        status = drift.ERROR
    elif (
        auc_drop >= float(options["max_roc_auc_drop"]) / 2
        or recall_drop >= float(options["max_recall_drop"]) / 2
    ):
        status = drift.WARNING
    msg = (
        f"over {len(recent)} labelled days ({recent[0]}..{recent[-1]}, {int(pooled['frauds'])} positives): "
        f"ROC AUC {pooled.get('roc_auc', float('nan')):.3f} vs {valid.get('roc_auc', float('nan')):.3f} at validation, "
        f"recall {pooled['recall']:.2f} vs {valid.get('recall_at_fpr', float('nan')):.2f}"
        + ("" if enough else f" (fewer than {options['min_frauds']} positives: not judged)")
    )
    pooled["expected_frauds"] = float(pool.totals["expected"])
    for k, v in (("roc_auc_drop", auc_drop), ("recall_drop", recall_drop), *pooled.items()):
        out.append(
            Metric(
                role,
                saved.version,
                day,
                "performance_decay",
                "",
                k,
                None if np.isnan(v) else float(v),
                status,
                msg,
            )
        )
    if role == CHAMPION and pool.cells is not None:
        h = drift.missed_fraud_verdict(pool.cells)
        for k, v in (("observed_frauds", h.observed), ("expected_frauds", h.expected), ("p_value", h.p_value),
                     ("latitude", h.latitude), ("longitude", h.longitude)):  # fmt: skip
            out.append(
                Metric(role, saved.version, day, "missed_fraud", h.city, k, float(v), h.status, h.message)
            )  # fmt: skip
    return out
