"""Per scored day, the sufficient statistics of a model's performance; kept, and pooled.

The evaluate step judges the model on the last matured days of its window (see
:mod:`engine.automation.performance`). Recomputing that from the rows every day made the
step grow with its window (every scored row of 21 days joined again with every label that
arrived since). Instead, each scored day keeps small statistics that **add up** over rows:

* at the model's threshold: labelled positives and negatives, true and false positives,
  the amount caught and missed, the sum of the probabilities (the expected positives);
* the labelled rows' scores, binned (:data:`BINS_PER_LOGIT` bins per unit of logit), by
  label: ROC AUC and PR AUC come from them (:func:`roc_auc`, :func:`pr_auc`);
* with a location, per cell of each grid of :data:`drift.HOTSPOT_OFFSETS`: labelled frauds,
  expected frauds and the coordinates' sums (``missed_fraud``).

A day's statistics plus the next day's are the two days' statistics, so pooling 7 days is
adding 7 small tables. They are stored once per scored day, model version and role, as one
small Parquet file under the node's ``data/_evaluation/`` (next to the cached reference): a
cache the node can always rebuild from the scored rows and the labels, local to the node
like the data it summarises; the control store keeps what people read (the metrics).

**Labels arrive late** (partitioned by arrival day; a row's label is the largest that
arrived for its id from the row's day on). A day's file records which label partitions it
has taken in, each with its files' name, size and modification time, and the scored
partition's. On the next evaluation only the label partitions it has not seen yet are read,
joined with the window's scored rows, and their effect is added: a row labelled for the
first time adds its statistics; a row whose label rose (a later correction) takes back the
old label's and adds the new one's. A day is rebuilt from its rows when its scored partition
changed, when a label partition it took in changed or went away, or when a day is evaluated
again as of an earlier date (its file already holds later labels). Files of days that left
the window are removed.

**Approximation.** Counts, amounts, expected frauds and the cells are exact (up to float
summation order). ROC AUC and PR AUC come from the binned scores: scores in the same bin
count as tied. :func:`roc_auc_error_bound` and :func:`pr_auc_error_bound` give, from the
same counts, how far the exact values can be (the tests check the exact value is within
them); at 1,024 bins per logit unit they are below 1e-3 (ROC) and a few 1e-3 (PR) on the
example's days, far under the 0.05 a drop must reach to warn.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from engine.automation import drift
from engine.automation.evaluation_plan import SCORE, Plan
from engine.models.saved import SavedModel
from engine.project.project import Project
from engine.storage import datasets as ds

FORMAT = 5  # bump when what a file holds changes: older files are rebuilt
BINS_PER_LOGIT = 1024
LOGIT_CLIP = 40.0
TOTALS = ("pos", "neg", "tp", "fp", "caught", "missed", "expected")
HIST_COLUMNS = ("bin", "pos", "neg", "lo", "hi")  # lo, hi: the bin's lowest and highest score
CELL_COLUMNS = ("observed", "expected", "rows", "lat_sum", "lat_n", "lon_sum", "lon_n")


@dataclass
class DayStats:
    """The statistics of one scored day's labelled rows (or of several days, pooled)."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TOTALS, 0.0))
    hist: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(
            {c: np.array([], np.int64 if c == "bin" else float) for c in HIST_COLUMNS}
        )
    )
    cells: pd.DataFrame | None = None
    rows: int = 0  # scored rows of the day(s), labelled or not

    def __add__(self, other: DayStats) -> DayStats:
        return pooled([self, other])

    @property
    def labelled(self) -> float:
        return self.totals["pos"] + self.totals["neg"]


def _merge(frames: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    """Rows of ``frames`` with equal ``keys`` added up (``lo`` the least, ``hi`` the most)."""
    frames = [f for f in frames if len(f)]
    if len(frames) <= 1:
        return frames[0] if frames else _empty_like(keys)
    cols = {c: np.concatenate([f[c].to_numpy() for f in frames]) for c in frames[0].columns}
    if len(keys) == 1:
        uniq, inv = np.unique(cols[keys[0]], return_inverse=True)
        out = {keys[0]: uniq}
    else:
        uniq, inv = np.unique(
            np.stack([cols[k] for k in keys], axis=1), axis=0, return_inverse=True
        )
        out = {k: uniq[:, i] for i, k in enumerate(keys)}
    inv, n = np.asarray(inv).ravel(), len(uniq)
    for c, v in cols.items():
        if c in keys:
            continue
        if c in ("lo", "hi"):
            acc = np.full(n, np.inf if c == "lo" else -np.inf)
            (np.minimum if c == "lo" else np.maximum).at(acc, inv, v.astype(float))
        else:
            acc = np.bincount(inv, weights=v.astype(float), minlength=n)
        out[c] = acc
    return pd.DataFrame(out)


def _empty_like(keys: list[str]) -> pd.DataFrame:
    if keys == ["bin"]:
        return DayStats().hist
    return pd.DataFrame(
        {"grid": np.array([], np.int64), "cell": np.array([], np.int64)}
        | {c: np.array([]) for c in CELL_COLUMNS}
    )


def pooled(days: list[DayStats]) -> DayStats:
    """The statistics of several days (or of the parts of one): their sum."""
    cells = [d.cells for d in days if d.cells is not None]
    return DayStats(
        {k: float(sum(d.totals[k] for d in days)) for k in TOTALS},
        _merge([d.hist for d in days], ["bin"]),
        _merge(cells, ["grid", "cell"]) if cells else None,
        sum(d.rows for d in days),
    )


# --- from rows ---------------------------------------------------------------------------------


def score_bins(proba: np.ndarray) -> np.ndarray:
    """Each score's bin: :data:`BINS_PER_LOGIT` per unit of logit (order-preserving)."""
    p = np.clip(np.asarray(proba, dtype=float), 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        logit = np.log(p) - np.log1p(-np.minimum(p, 1.0 - 1e-17))
    logit = np.where(p >= 1.0, LOGIT_CLIP, logit)
    return np.floor(np.clip(logit, -LOGIT_CLIP, LOGIT_CLIP) * BINS_PER_LOGIT).astype(np.int64)


def rows_stats(
    day: np.ndarray,
    proba: np.ndarray,
    label: np.ndarray,
    threshold: float,
    weight: np.ndarray | None = None,
    amount: np.ndarray | None = None,
    location: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, DayStats]:
    """Per day: the statistics of the rows with a label (``label`` NaN: not labelled).

    ``weight`` (default 1) lets rows be taken back (-1). ``rows`` is left 0 (the caller
    knows how many rows each day has). Cells only with a ``location``.
    """
    label = np.asarray(label, dtype=float)
    keep = ~np.isnan(label)
    w = np.ones(len(label)) if weight is None else np.asarray(weight, dtype=float)
    day, w = np.asarray(day)[keep], w[keep]
    p = np.asarray(proba, dtype=float)[keep]
    y = label[keep].astype(np.int64)
    pos, flagged = y == 1, p >= threshold
    bins = score_bins(p)
    parts = {
        "pos": w * pos,
        "neg": w * ~pos,
        "tp": w * (flagged & pos),
        "fp": w * (flagged & ~pos),
        "expected": w * p,
    }
    if amount is not None:
        a = np.asarray(amount, dtype=float)[keep]
        parts["caught"] = np.where(flagged & pos, w * a, 0.0)
        parts["missed"] = np.where(~flagged & pos, w * a, 0.0)
    else:
        parts["caught"] = parts["missed"] = np.zeros(len(p))
    codes, names = pd.factorize(pd.Series(day, dtype=object))
    out: dict[str, DayStats] = {}
    for c, name in enumerate(names):
        idx = np.flatnonzero(codes == c)
        uniq, inv = np.unique(bins[idx], return_inverse=True)
        lo, hi = np.full(len(uniq), np.inf), np.full(len(uniq), -np.inf)
        np.minimum.at(lo, inv, p[idx])
        np.maximum.at(hi, inv, p[idx])
        hist = pd.DataFrame(
            {
                "bin": uniq.astype(np.int64),
                "pos": np.bincount(inv, weights=parts["pos"][idx], minlength=len(uniq)),
                "neg": np.bincount(inv, weights=parts["neg"][idx], minlength=len(uniq)),
                "lo": lo,
                "hi": hi,
            }
        )
        cells = None
        if location is not None:
            lat = np.asarray(location[0], dtype=float)[keep][idx]
            lon = np.asarray(location[1], dtype=float)[keep][idx]
            cells = drift.missed_fraud_cells(lat, lon, y[idx], p[idx], w[idx])
        totals = {k: float(np.sum(parts[k][idx])) for k in TOTALS}
        out[str(name)] = DayStats(totals, hist, cells)
    return out


# --- metrics from the statistics -----------------------------------------------------------------


def _sorted_hist(hist: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    h = hist[(hist["pos"] != 0) | (hist["neg"] != 0)].sort_values("bin")
    return h["pos"].to_numpy(float), h["neg"].to_numpy(float)


def _spread(hist: pd.DataFrame, descending: bool = False) -> np.ndarray:
    """Whether each bin (in :func:`_sorted_hist`'s order) holds more than one score value: a
    bin of one value is an exact tie, which the exact metrics count as the binned ones do."""
    h = hist[(hist["pos"] != 0) | (hist["neg"] != 0)].sort_values("bin")
    spread = (h["hi"] > h["lo"]).to_numpy()
    return spread[::-1] if descending else spread


def roc_auc(hist: pd.DataFrame) -> float:
    """ROC AUC of the binned scores (scores in one bin count as ties: half a pair)."""
    pos, neg = _sorted_hist(hist)
    P, N = pos.sum(), neg.sum()
    below = np.cumsum(neg) - neg
    return float(np.sum(pos * (below + 0.5 * neg)) / (P * N))


def roc_auc_error_bound(hist: pd.DataFrame) -> float:
    """How far the exact ROC AUC can be from :func:`roc_auc`: half the pairs a bin ties."""
    pos, neg = _sorted_hist(hist)
    return float(0.5 * np.sum(pos * neg * _spread(hist)) / (pos.sum() * neg.sum()))


def _pr_terms(hist: pd.DataFrame) -> tuple[np.ndarray, ...]:
    pos, neg = _sorted_hist(hist)
    pos, neg = pos[::-1], neg[::-1]  # highest scores first
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    return pos, neg, tp, fp


def pr_auc(hist: pd.DataFrame) -> float:
    """Average precision of the binned scores (as scikit-learn computes it, ties by bin)."""
    pos, neg, tp, fp = _pr_terms(hist)
    return float(np.sum(pos * tp / (tp + fp)) / pos.sum())


def pr_auc_error_bound(hist: pd.DataFrame) -> float:
    """How far the exact average precision can be from :func:`pr_auc`.

    A positive in a bin with ``a`` positives and ``b`` negatives, below ``TA`` true and
    ``FA`` false positives, has an exact precision between (TA+1)/(TA+FA+b+1) (first of its
    bin, after all of the bin's negatives) and (TA+a)/(TA+FA+a) (the bin's positives first);
    the binned value is (TA+a)/(TA+FA+a+b).
    """
    pos, neg, tp, fp = _pr_terms(hist)
    ta, fa = tp - pos, fp - neg
    value = tp / (tp + fp)
    lo = (ta + 1) / (ta + fa + neg + 1)
    hi = (ta + pos) / (ta + fa + pos)
    gap = np.where((pos > 0) & _spread(hist, True), np.maximum(value - lo, hi - value), 0.0)
    return float(np.sum(pos * gap) / pos.sum())


def performance(stats: DayStats, with_amount: bool) -> dict[str, float]:
    """The performance metrics of (pooled) statistics, as the evaluation records them."""
    t = stats.totals
    out = {
        "labelled_rows": float(round(stats.labelled)),
        "frauds": float(round(t["pos"])),
        "recall": float(t["tp"] / max(t["pos"], 1)),
        "precision": float(t["tp"] / max(t["tp"] + t["fp"], 1)),
    }
    if with_amount:
        out["fraud_caught_amount"] = float(t["caught"])
        out["fraud_missed_amount"] = float(t["missed"])
    if t["pos"] > 0 and t["neg"] > 0:
        out["roc_auc"] = roc_auc(stats.hist)
        out["pr_auc"] = pr_auc(stats.hist)
    return out


# --- the store: one file per scored day ----------------------------------------------------------


def _fingerprint(folder: Path) -> list[list[object]]:
    """The partition's files as (name, size, modification time): any rewrite changes it."""
    out = []
    for f in sorted(folder.glob("*.parquet")):
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


@dataclass
class _Stored:
    stats: DayStats
    scored: list[list[object]]
    labels: dict[str, list[list[object]]]


_FILE_COLUMNS = ("kind", "grid", "key", *TOTALS, *HIST_COLUMNS[1:], *CELL_COLUMNS)


def _save(path: Path, config: str, stored: _Stored) -> None:
    """One file: a row of totals, the histogram's rows, the cells' rows; the manifest in the
    Parquet metadata. Written to a temporary name and renamed (never half a file)."""
    s = stored.stats
    cells = s.cells if s.cells is not None else _empty_like(["grid", "cell"])
    n_hist, n_cells = len(s.hist), len(cells)
    n = 1 + n_hist + n_cells

    def column(name: str) -> np.ndarray:
        out = np.full(n, np.nan)
        if name in TOTALS:
            out[0] = s.totals[name]
        if name in s.hist.columns and name != "bin":
            out[1 : 1 + n_hist] = s.hist[name].to_numpy(float)
        if name in cells.columns:
            out[1 + n_hist :] = cells[name].to_numpy(float)
        return out

    arrays = {
        "kind": np.repeat(np.array([0, 1, 2], np.int8), [1, n_hist, n_cells]),
        "grid": np.r_[np.zeros(1 + n_hist, np.int64), cells["grid"].to_numpy(np.int64)],
        "key": np.r_[
            np.zeros(1, np.int64),
            s.hist["bin"].to_numpy(np.int64),
            cells["cell"].to_numpy(np.int64),
        ],
    }
    arrays |= {c: column(c) for c in dict.fromkeys(_FILE_COLUMNS[3:])}
    manifest = {
        "config": config,
        "rows": s.rows,
        "cells": s.cells is not None,
        "scored_files": stored.scored,
        "labels": stored.labels,
    }
    table = pa.table(arrays).replace_schema_metadata(
        {b"nodal_day_stats": json.dumps(manifest).encode()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _load(path: Path, config: str) -> _Stored | None:
    if not path.exists():
        return None
    try:
        table = pq.read_table(path)
        manifest = json.loads((table.schema.metadata or {})[b"nodal_day_stats"])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None  # unreadable or foreign: rebuilt
    if manifest.get("config") != config:
        return None
    cols = {c: table.column(c).to_numpy() for c in table.column_names}
    kind = cols["kind"]
    hist = pd.DataFrame(
        {"bin": cols["key"][kind == 1]} | {c: cols[c][kind == 1] for c in HIST_COLUMNS[1:]}
    )
    cells = None
    if manifest["cells"]:
        cells = pd.DataFrame(
            {"grid": cols["grid"][kind == 2], "cell": cols["key"][kind == 2]}
            | {c: cols[c][kind == 2] for c in CELL_COLUMNS}
        )
    stats = DayStats({k: float(cols[k][0]) for k in TOTALS}, hist, cells, int(manifest["rows"]))
    return _Stored(stats, manifest["scored_files"], manifest["labels"])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Role:
    """One model whose statistics are kept: its version, how it scores the rows, cells or not."""

    name: str  # champion | challenger
    saved: SavedModel
    columns: tuple[str, ...]  # scored columns it needs besides the plan's
    proba: Callable[[pd.DataFrame], np.ndarray]
    cells: bool


def window_stats(
    project: Project, plan: Plan, day: str, scored_days: list[str], role: Role
) -> dict[str, DayStats]:
    """The statistics of every scored day of the window before ``day``, labels as of ``day``.

    Reads only what the stored files have not taken in yet (see the module's docstring).
    Empty when there is no window or no label arrived in it yet.
    """
    mon = plan.monitoring
    if not mon.measures_performance:
        return {}
    start = str(
        pd.Timestamp(day).date() - pd.Timedelta(days=int(plan.options["performance_window_days"]))
    )
    days = [d for d in scored_days if start <= d < day]
    labels = project.dataset(str(mon.labels))
    arrived = (
        [a for a in labels.partitions() if days and days[0] <= a <= day] if labels.exists() else []
    )
    if not days or not arrived:
        return {}
    scored = project.dataset(plan.input)
    have = ds.schema(scored, days[-1])
    amount = mon.amount if mon.amount and mon.amount in have else None
    location = (
        tuple(mon.location)
        if role.cells and mon.location and all(c in have for c in mon.location)
        else None
    )
    config = hashlib.sha256(
        json.dumps(
            [FORMAT, BINS_PER_LOGIT, LOGIT_CLIP, role.saved.meta.get("model"), role.saved.version,
             role.saved.threshold, plan.input, mon.labels, mon.id_column, mon.label_column,
             labels.partitioned_by, amount, location],
            default=str,
        ).encode()
    ).hexdigest()  # fmt: skip
    folder = (
        project.data_root / "_evaluation" / "performance" / plan.input
        / str(role.saved.meta.get("model", plan.model)) / str(role.saved.version) / role.name
    )  # fmt: skip
    label_fp = {a: _fingerprint(labels.partition_path(a)) for a in arrived}
    # Days that left the window are not pooled again (evaluating one of them again would
    # rebuild it): the folder holds about one window of files, not the whole history.
    for old in folder.glob("*.parquet") if folder.exists() else []:
        if old.stem < days[0]:
            old.unlink(missing_ok=True)
    out: dict[str, DayStats] = {}
    stored: dict[str, _Stored] = {}
    todo: dict[tuple[str, ...] | None, list[str]] = defaultdict(list)
    for d in days:
        want = {a: fp for a, fp in label_fp.items() if a >= d}
        scored_fp = _fingerprint(scored.partition_path(d))
        s = _load(folder / f"{d}.parquet", config)
        if (
            s is None
            or s.scored != scored_fp
            or any(want.get(a) != fp for a, fp in s.labels.items())
        ):
            s = None  # rebuilt from its rows and every label partition from its day on
            todo[None].append(d)
        else:
            new = tuple(a for a in want if a not in s.labels)
            if new:
                todo[new].append(d)
            else:
                out[d] = s.stats
        stored[d] = s or _Stored(DayStats(cells=_empty_like(["grid", "cell"]) if location else None),
                                 scored_fp, {})  # fmt: skip
    for new, group in todo.items():
        added = _label_delta(project, plan, day, group, new, arrived, role, amount, location)
        counts = _row_counts(scored, group) if new is None else {}
        for d in group:
            s = stored[d]
            stats = s.stats + added[d] if d in added else s.stats
            if d in counts:
                stats.rows = counts[d]
            taken = {a: fp for a, fp in label_fp.items() if a >= d}
            _save(folder / f"{d}.parquet", config, _Stored(stats, s.scored, taken))
            out[d] = stats
    return out


def _row_counts(scored: ds.DatasetRef, days: list[str]) -> dict[str, int]:
    """Each day's scored rows (one partition is one day), from the Parquet footers."""
    return {
        d: sum(
            pq.ParquetFile(f).metadata.num_rows for f in scored.partition_path(d).glob("*.parquet")
        )
        for d in days
    }


def _label_delta(
    project: Project,
    plan: Plan,
    day: str,
    group: list[str],
    new: tuple[str, ...] | None,
    arrived: list[str],
    role: Role,
    amount: str | None,
    location: tuple[str, ...] | None,
) -> dict[str, DayStats]:
    """What the label partitions ``new`` (None: all from each row's day) change in ``group``.

    Each row of the group's days with a label in ``new`` (arrived on or after its day) is
    read with its best label among ``new`` and its best label among the partitions taken in
    before (arrived from its day on, up to ``day``, not in ``new``); its statistics under
    the new label are added and those under the old one taken back.
    """
    mon = plan.monitoring
    labels = project.dataset(str(mon.labels))
    scored = project.dataset(plan.input)
    fresh = [a for a in arrived if a >= group[0]] if new is None else list(new)
    before = [] if new is None else [a for a in arrived if a >= group[0] and a not in new]
    key, label, when = _q(str(mon.id_column)), _q(str(mon.label_column)), _q(plan.day_column)
    arrival = _q(str(labels.partitioned_by))
    cols = [
        c for c in dict.fromkeys([str(mon.id_column), SCORE, *role.columns]) if c != plan.day_column
    ]
    if amount:
        cols.append(amount)
    cols += list(location or ())
    picked = ", ".join(f"s.{_q(c)}" for c in dict.fromkeys(cols))
    views = {
        "day_rows": (scored, group),
        "fresh": (labels, fresh),
    }
    old = "NULL"
    old_join = ""
    if before:
        views["taken"] = (labels, before)
        old = "o.__nodal_old"
        old_join = f"""
        LEFT JOIN (
            SELECT n.__nodal_id, n.__nodal_day, max(CAST(l.{label} AS DOUBLE)) AS __nodal_old
            FROM n JOIN taken l
              ON n.__nodal_id = l.{key} AND CAST(l.{arrival} AS VARCHAR) >= n.__nodal_day
            GROUP BY 1, 2
        ) o ON o.__nodal_id = n.__nodal_id AND o.__nodal_day = n.__nodal_day"""
    frame = ds.query_df(
        f"""
        WITH s AS (
            SELECT {picked}, CAST(s.{when} AS VARCHAR) AS __nodal_day FROM day_rows s
        ), n AS (
            SELECT s.{key} AS __nodal_id, s.__nodal_day, max(CAST(l.{label} AS DOUBLE)) AS __nodal_new
            FROM s JOIN fresh l
              ON s.{key} = l.{key} AND CAST(l.{arrival} AS VARCHAR) >= s.__nodal_day
            GROUP BY 1, 2
        )
        SELECT s.*, n.__nodal_new, {old} AS __nodal_old
        FROM s JOIN n ON s.{key} = n.__nodal_id AND s.__nodal_day = n.__nodal_day {old_join}
        """,
        views,
    )
    if frame.empty:
        return {}
    old_y = frame["__nodal_old"].to_numpy(float)
    new_y = np.fmax(old_y, frame["__nodal_new"].to_numpy(float))
    changed = ~(old_y == new_y) & ~(np.isnan(old_y) & np.isnan(new_y))
    frame, old_y, new_y = frame[changed].reset_index(drop=True), old_y[changed], new_y[changed]
    if frame.empty:
        return {}
    proba = role.proba(frame)
    both = np.r_[new_y, old_y]  # the new labels added, the old ones taken back
    weight = np.r_[np.ones(len(frame)), -np.ones(len(frame))]
    day_of = np.r_[frame["__nodal_day"].to_numpy(), frame["__nodal_day"].to_numpy()]

    def twice(c: str) -> np.ndarray:
        v = frame[c].to_numpy(float)
        return np.r_[v, v]

    return rows_stats(
        day_of,
        np.r_[proba, proba],
        both,
        role.saved.threshold,
        weight,
        twice(amount) if amount else None,
        (twice(location[0]), twice(location[1])) if location else None,
    )
