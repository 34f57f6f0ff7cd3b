"""Which days' labels are mature: complete enough to train, validate and set baselines on.

Labels arrive late, and not all at once: a bank learns of a fraud from a chargeback days
before it can call a transaction legitimate. A recent day of a labelled dataset then holds
only the quick labels (often only positives): validating on it skews the decision threshold
and every baseline monitoring later compares with. A model declares when a day is mature
(``label_maturity`` in its YAML, :class:`engine.project.model_spec.LabelMaturity`);
:func:`assess` says it for each day of the rows training reads. Training
(:mod:`engine.models.saved`), retraining and the Lab use only mature days.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from engine.project import model_spec
from engine.project.model_spec import LabelMaturity, MaturityError
from engine.project.project import Project
from engine.storage import datasets as ds


@dataclass(frozen=True)
class DayMaturity:
    """One day of labelled rows and whether its labels are mature."""

    day: str
    labelled: int  # labelled rows of the day
    positives: int
    rows: int | None  # every row of the day (the rule's ``rows`` dataset), when declared
    mature: bool | None  # None: the model declares no rule
    why: str = ""  # why not mature

    @property
    def labelled_share(self) -> float | None:
        return None if not self.rows else self.labelled / self.rows


@dataclass(frozen=True)
class Maturity:
    """Every day's maturity under a model's rule (``rule`` None: none declared)."""

    rule: LabelMaturity | None
    as_of: str | None
    days: list[DayMaturity]

    @property
    def mature_days(self) -> list[str]:
        return [d.day for d in self.days if d.mature is not False]

    @property
    def immature_days(self) -> list[str]:
        return [d.day for d in self.days if d.mature is False]

    def only_positive_days(self) -> list[str]:
        """Days whose labelled rows are all positive (likely incomplete labels)."""
        return [d.day for d in self.days if d.labelled and d.positives == d.labelled]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{**asdict(d), "labelled_share": d.labelled_share} for d in self.days]

    def summary(self) -> dict[str, Any]:
        """What a model's metadata records about it."""
        return {
            "rule": None if self.rule is None else asdict(self.rule),
            "as_of": self.as_of,
            "immature_days_left_out": self.immature_days,
        }


def day_key(value: Any) -> str:
    """A time column's value as the day it falls on (``YYYY-MM-DD``)."""
    return str(value)[:10]


def _as_date(day: str) -> date:
    try:
        return date.fromisoformat(day)
    except ValueError:
        raise MaturityError(
            f"label_maturity delay_days needs a time column of dates, got {day!r}"
        ) from None


def _label_day(project: Project, model: str, newest_row_day: str) -> str:
    """The newest day labels are known for: the labels dataset's newest partition (the
    day they arrived), else the newest day of the labelled rows."""
    mon = model_spec.monitoring(project, model)
    if mon.labels and mon.labels in project.datasets:
        ref = project.dataset(mon.labels)
        if ref.exists() and ref.partitioned_by:
            arrived = [day_key(p) for p in ref.partitions()]
            if arrived:
                return max(max(arrived), newest_row_day)
    return newest_row_day


def _rows_per_day(project: Project, rule: LabelMaturity, time_column: str) -> dict[str, int]:
    ref = project.dataset(str(rule.rows))
    if not ref.exists():
        raise MaturityError(f"label_maturity rows {rule.rows!r} is not built yet")
    col = '"' + time_column.replace('"', '""') + '"'
    if time_column not in ds.schema(ref):
        raise MaturityError(f"label_maturity rows {rule.rows!r} has no column {time_column!r}")
    counts = ds.query_df(
        f"SELECT {col} AS d, count(*) AS n FROM every_row GROUP BY 1", {"every_row": ref}
    )
    out: dict[str, int] = {}
    for d, n in zip(counts["d"], counts["n"], strict=True):
        out[day_key(d)] = out.get(day_key(d), 0) + int(n)
    return out


def assess(
    project: Project, model: str | None, days: Sequence[str], y: np.ndarray, time_column: str
) -> Maturity:
    """Each day's maturity for labelled rows on ``days`` (one per row, as ``day_key``) with
    0/1 labels ``y``, under the rule of ``model`` (none without a model or a rule)."""
    rule = model_spec.label_maturity(project, model) if model else None
    frame = pd.DataFrame({"day": list(days), "y": np.asarray(y, dtype=int)})
    per_day = frame.groupby("day")["y"].agg(["size", "sum"]).sort_index()
    if per_day.empty:
        return Maturity(rule, None, [])
    newest = str(per_day.index[-1])
    if rule is None:
        return Maturity(
            None,
            None,
            [
                DayMaturity(str(d), int(r["size"]), int(r["sum"]), None, None)
                for d, r in per_day.iterrows()
            ],
        )
    as_of = _label_day(project, str(model), newest)
    totals = _rows_per_day(project, rule, time_column) if rule.min_labelled_share else {}
    out = []
    for d, r in per_day.iterrows():
        day, labelled = str(d), int(r["size"])
        why = []
        if rule.delay_days is not None:
            ready = _as_date(day) + timedelta(days=rule.delay_days)
            if ready > _as_date(as_of):
                why.append(f"labels complete from {ready} (known up to {as_of})")
        total = totals.get(day) if rule.min_labelled_share else None
        if rule.min_labelled_share is not None:
            share = labelled / total if total else 0.0
            if share < rule.min_labelled_share:
                why.append(
                    f"{share:.0%} of {total or 0:,} rows labelled (< {rule.min_labelled_share:.0%})"
                )
        out.append(DayMaturity(day, labelled, int(r["sum"]), total, not why, "; ".join(why)))
    return Maturity(rule, as_of, out)
