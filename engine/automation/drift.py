"""Drift statistics: is today's data distributed like the reference the model was validated on?

Pure functions over numpy arrays and pandas frames; :mod:`engine.automation.evaluation` runs them per
day and stores the results.

**Large samples.** A statistical test alone is useless on a day of a million rows: any
trivial shift gets a p-value of 0 and an alarm. A distance alone (PSI) is noisy on small
days. So a feature is flagged only when *both* say so:

* the **effect** is big enough: PSI (population stability index, over the reference's
  deciles, or its categories) at least :data:`PSI_WARNING` (0.1) for a warning and
  :data:`PSI_ALARM` (0.2) for an alarm, the usual credit-risk rule of thumb; and
* the shift is **significant** on a *fixed-size*, seeded subsample of at most
  :data:`TEST_SAMPLE` rows per side (two-sample Kolmogorov–Smirnov for numbers, chi-square
  for categories), p < :data:`P_VALUE`. The subsample keeps the test's power the same
  whether a day has 1,500 or 1,000,000 rows.

Shares of values never seen in the reference (unseen merchant ids, a category the model's
vocabulary lacks) and a geographic hot spot (a grid cell whose share of the day's
transactions jumped) have their own effect-size floors, described at their functions.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from engine.core.us_cities import US_CITIES

OK, WARNING, ERROR = "OK", "WARNING", "ERROR"
PSI_WARNING, PSI_ALARM = 0.1, 0.2
P_VALUE = 0.01
TEST_SAMPLE = 5000
BINS = 10
UNSEEN_WARNING, UNSEEN_ALARM = 0.01, 0.05
# A grid cell is a hot spot when its share of the day's rows rose by at least this
# many percentage points AND at least this factor (warning, alarm).
HOTSPOT_RISE = (0.005, 0.01)
HOTSPOT_FACTOR = (1.5, 2.0)
HOTSPOT_CELL_DEG = 1.0
# Grids looked at, as offsets in cells (latitude, longitude): the plain grid and the grids
# shifted by half a cell, so a place on a grid line falls inside some grid's cell whole.
HOTSPOT_OFFSETS = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))
DOMAIN_AUC_WARNING, DOMAIN_AUC_ALARM = 0.65, 0.75
_EPS = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one column: PSI, the test on the fixed-size subsample, and the verdict."""

    feature: str
    kind: str  # numeric | categorical
    psi: float
    statistic: float  # KS D, or chi-square Cramér's V for categories
    p_value: float
    n_reference: int
    n_current: int
    status: str
    message: str


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def subsample(values: np.ndarray, n: int = TEST_SAMPLE, seed: int = 0) -> np.ndarray:
    """At most ``n`` values, drawn without replacement with a fixed seed."""
    if len(values) <= n:
        return values
    rng = np.random.default_rng(seed)
    return values[rng.choice(len(values), n, replace=False)]


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Population stability index between two histograms over the same bins."""
    r = np.asarray(reference_counts, dtype=float)
    c = np.asarray(current_counts, dtype=float)
    if r.sum() == 0 or c.sum() == 0:
        return 0.0
    r = np.clip(r / r.sum(), _EPS, None)
    c = np.clip(c / c.sum(), _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


EDGE_TOLERANCE = 1e-12  # relative: values this close below a bin edge are on it


def decile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates dropped)."""
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.array([])
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    # Outer edges too, so values below or above everything the reference had get their own
    # bins (a constant reference would otherwise put every new value in its one bin).
    low, high = finite.min(), np.nextafter(finite.max(), np.inf)
    return np.unique(np.r_[low, inner, high])


def numeric_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin, plus a last bin for missing values (NaN is a value too)."""
    values = np.asarray(values, dtype=float)
    missing = ~np.isfinite(values)
    # A value a few ulps below an edge counts as on it: one model's score computed by the
    # compiled forest and by LightGBM differs in the last bit, and tree models give many
    # tied scores, often exactly on a quantile edge (champion and challenger must agree).
    present = values[~missing]
    nudged = present + np.abs(present) * EDGE_TOLERANCE
    counts = np.bincount(np.searchsorted(edges, nudged, side="right"), minlength=len(edges) + 1)
    return np.append(counts, missing.sum())


def verdict(psi_value: float, p_value: float) -> str:
    """ERROR/WARNING only when the effect is big enough *and* significant (module docstring)."""
    if p_value >= P_VALUE:
        return OK
    if psi_value >= PSI_ALARM:
        return ERROR
    if psi_value >= PSI_WARNING:
        return WARNING
    return OK


def numeric_drift(
    name: str, reference: np.ndarray, current: np.ndarray, salt: str = ""
) -> FeatureDrift:
    reference = np.asarray(reference, dtype=float)
    current = np.asarray(current, dtype=float)
    edges = decile_edges(reference)
    value = psi(numeric_histogram(reference, edges), numeric_histogram(current, edges))
    ref_s = subsample(reference[np.isfinite(reference)], seed=_seed(name, salt, "r"))
    cur_s = subsample(current[np.isfinite(current)], seed=_seed(name, salt, "c"))
    if len(ref_s) and len(cur_s):
        test = stats.ks_2samp(ref_s, cur_s)
        d, p = float(test.statistic), float(test.pvalue)
    else:
        d, p = 0.0, 1.0
    status = verdict(value, p)
    return FeatureDrift(
        name, "numeric", value, d, p, len(reference), len(current), status,
        f"PSI {value:.3f}, KS D {d:.3f} (p={p:.2g} on ≤{TEST_SAMPLE:,} rows per side)",
    )  # fmt: skip


def _as_labels(values: pd.Series | np.ndarray) -> np.ndarray:
    series = pd.Series(values)
    return (
        series.astype(object).where(series.notna(), "<missing>").astype(str).to_numpy(dtype=object)
    )


def categorical_drift(
    name: str, reference: pd.Series | np.ndarray, current: pd.Series | np.ndarray, salt: str = ""
) -> FeatureDrift:
    ref = _as_labels(reference)
    cur = _as_labels(current)
    cats = sorted(set(pd.unique(ref)) | set(pd.unique(cur)))

    def counts(values: np.ndarray) -> np.ndarray:
        codes = pd.Categorical(values, categories=cats).codes
        return np.bincount(codes, minlength=len(cats))

    value = psi(counts(ref), counts(cur))
    table = np.vstack(
        [
            counts(subsample(ref, seed=_seed(name, salt, "r"))),
            counts(subsample(cur, seed=_seed(name, salt, "c"))),
        ]
    )
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] > 1 and table.sum(axis=1).min() > 0:
        chi2, p, _, _ = stats.chi2_contingency(table)
        v = math.sqrt(chi2 / (table.sum() * (min(table.shape) - 1)))
    else:
        p, v = 1.0, 0.0
    status = verdict(value, float(p))
    return FeatureDrift(
        name, "categorical", value, v, float(p), len(ref), len(cur), status,
        f"PSI {value:.3f}, chi-square Cramér's V {v:.3f} (p={p:.2g} on ≤{TEST_SAMPLE:,} rows per side)",
    )  # fmt: skip


@dataclass(frozen=True)
class UnseenValues:
    feature: str
    share: float  # of today's rows whose value the reference never had
    distinct_unseen: int
    examples: list[str]
    status: str
    message: str


def unseen_values(name: str, known: set[str], current: pd.Series) -> UnseenValues:
    """Share of today's rows with a value not in ``known`` (missing values do not count).

    Effect floors: a warning from :data:`UNSEEN_WARNING` (1 %) of the day's rows, an alarm
    from :data:`UNSEEN_ALARM` (5 %). No test is needed: a value is unseen or it is not.
    """
    values = pd.Series(current).dropna()
    if values.dtype != object:
        values = values.astype(str)
    unseen_mask = ~values.isin(known)
    share = float(unseen_mask.mean()) if len(values) else 0.0
    unseen = values[unseen_mask]
    top = unseen.value_counts().head(5).index.tolist()
    status = ERROR if share >= UNSEEN_ALARM else WARNING if share >= UNSEEN_WARNING else OK
    return UnseenValues(
        name, share, int(unseen.nunique()), [str(x) for x in top], status,
        f"{share:.1%} of rows have a {name} never seen in the reference "
        f"({unseen.nunique():,} distinct{', e.g. ' + ', '.join(top[:3]) if top else ''})",
    )  # fmt: skip


@dataclass(frozen=True)
class HotSpot:
    """The grid cell whose share of the day's rows rose the most."""

    city: str
    latitude: float
    longitude: float
    reference_share: float
    current_share: float
    current_count: int
    p_value: float
    status: str
    message: str


NEAREST_CITY_DEG = 2.0  # farther than this from every city of the gazetteer: coordinates


def nearest_city(lat: float, lon: float) -> str:
    """The gazetteer's nearest city, or the coordinates where none is near (outside the US)."""
    best = min(US_CITIES, key=lambda c: (c.latitude - lat) ** 2 + ((c.longitude - lon) * 0.8) ** 2)
    if (best.latitude - lat) ** 2 + ((best.longitude - lon) * 0.8) ** 2 > NEAREST_CITY_DEG**2:
        ns, ew = "N" if lat >= 0 else "S", "E" if lon >= 0 else "W"
        return f"{abs(lat):.1f}°{ns} {abs(lon):.1f}°{ew}"
    return f"{best.name}, {best.state}"


def cell_keys(
    lat: np.ndarray, lon: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)
) -> np.ndarray:
    """Each point's cell of the grid of :data:`HOTSPOT_CELL_DEG` shifted by ``offset`` cells."""
    row = np.floor(np.asarray(lat, dtype=float) / HOTSPOT_CELL_DEG + offset[0]).astype(np.int64)
    col = np.floor(np.asarray(lon, dtype=float) / HOTSPOT_CELL_DEG + offset[1]).astype(np.int64)
    return row * 10_000 + col


_RANK = {OK: 0, WARNING: 1, ERROR: 2}


def hot_spot(
    ref_lat: np.ndarray, ref_lon: np.ndarray, cur_lat: np.ndarray, cur_lon: np.ndarray
) -> HotSpot:
    """Where did the share of rows jump? One-degree cells, reference vs today.

    A cell is a hot spot (warning / alarm) when its share rose by at least
    :data:`HOTSPOT_RISE` percentage points *and* by :data:`HOTSPOT_FACTOR`, and the rise is
    significant (binomial z-test, p < :data:`P_VALUE`, with today's count capped at
    :data:`TEST_SAMPLE` rows so that huge days do not make every wobble significant).

    Where a grid line falls must not matter: a place on a line would split its rise
    between two cells (four at a corner), each under the floors. The grid and its copies
    shifted by half a cell (:data:`HOTSPOT_OFFSETS`) are each searched for their
    fastest-rising cell, and the strongest of those is reported (the worst status, then the
    largest rise). A place anywhere is then within a quarter cell of some cell's centre.
    """
    best: tuple[tuple[int, float], HotSpot] | None = None
    for offset in HOTSPOT_OFFSETS:
        found, rise = _grid_hot_spot(ref_lat, ref_lon, cur_lat, cur_lon, offset)
        key = (_RANK[found.status], rise)
        if best is None or key > best[0]:
            best = (key, found)
    assert best is not None
    return best[1]


def _grid_hot_spot(
    ref_lat: np.ndarray,
    ref_lon: np.ndarray,
    cur_lat: np.ndarray,
    cur_lon: np.ndarray,
    offset: tuple[float, float],
) -> tuple[HotSpot, float]:
    """The fastest-rising cell of one grid, judged against the floors; and its rise."""
    cur_keys = cell_keys(cur_lat, cur_lon, offset)
    ref = pd.Series(cell_keys(ref_lat, ref_lon, offset)).value_counts()
    cur = pd.Series(cur_keys).value_counts()
    n_ref, n_cur = int(ref.sum()), int(cur.sum())
    frame = pd.DataFrame({"ref": ref, "cur": cur}).fillna(0)
    if frame.empty:
        return HotSpot("", 0.0, 0.0, 0.0, 0.0, 0, 1.0, OK, "no located rows"), -1.0
    frame["ref_share"] = frame["ref"] / max(n_ref, 1)
    frame["cur_share"] = frame["cur"] / max(n_cur, 1)
    frame["rise"] = frame["cur_share"] - frame["ref_share"]
    cell = frame["rise"].idxmax()
    row = frame.loc[cell]
    n_eff = min(n_cur, TEST_SAMPLE)
    p0 = max(row["ref_share"], 1.0 / max(n_ref, 1))
    z = row["rise"] / math.sqrt(p0 * (1 - p0) / max(n_eff, 1))
    p_value = float(stats.norm.sf(z))
    factor = row["cur_share"] / p0
    mask = cur_keys == cell
    lat = float(np.mean(np.asarray(cur_lat, dtype=float)[mask])) if mask.any() else 0.0
    lon = float(np.mean(np.asarray(cur_lon, dtype=float)[mask])) if mask.any() else 0.0
    status = OK
    if p_value < P_VALUE:
        if row["rise"] >= HOTSPOT_RISE[1] and factor >= HOTSPOT_FACTOR[1]:
            status = ERROR
        elif row["rise"] >= HOTSPOT_RISE[0] and factor >= HOTSPOT_FACTOR[0]:
            status = WARNING
    city = nearest_city(lat, lon)
    return HotSpot(
        city, lat, lon, float(row["ref_share"]), float(row["cur_share"]), int(row["cur"]), p_value, status,
        f"around {city}: {row['cur_share']:.2%} of the day's rows vs "
        f"{row['ref_share']:.2%} in the reference (×{factor:.1f}, p={p_value:.2g})",
    ), float(row["rise"])  # fmt: skip


def domain_classifier_auc(reference: np.ndarray, current: np.ndarray, seed: int = 7) -> float:
    """How well a small classifier tells today's rows from the reference's (ROC AUC).

    0.5 means indistinguishable. Both sides are subsampled to :data:`TEST_SAMPLE` rows; the
    classifier is trained on one half and scored on the other.
    """
    ref = subsample(np.asarray(reference, dtype=float), seed=seed)
    cur = subsample(np.asarray(current, dtype=float), seed=seed + 1)
    if len(ref) < 20 or len(cur) < 20:
        return 0.5
    X = np.vstack([ref, cur])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    rng = np.random.default_rng(seed)
    train = rng.random(len(y)) < 0.5
    if len(set(y[train])) < 2 or len(set(y[~train])) < 2:
        return 0.5
    params = {
        "objective": "binary", "num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 20,
        "verbose": -1, "num_threads": 1, "seed": seed, "force_col_wise": True,
    }  # fmt: skip
    booster = lgb.train(params, lgb.Dataset(X[train], y[train]), num_boost_round=60)
    return float(roc_auc_score(y[~train], booster.predict(X[~train])))


def domain_verdict(auc: float) -> str:
    return ERROR if auc >= DOMAIN_AUC_ALARM else WARNING if auc >= DOMAIN_AUC_WARNING else OK


def worst(statuses: list[str]) -> str:
    return ERROR if ERROR in statuses else WARNING if WARNING in statuses else OK


@dataclass(frozen=True)
class MissedFraud:
    """The grid cell where labelled fraud most exceeds what the model predicted."""

    city: str
    latitude: float
    longitude: float
    observed: int
    expected: float
    p_value: float
    cells: int
    status: str
    message: str


def missed_fraud_hot_spot(
    lat: np.ndarray, lon: np.ndarray, label: np.ndarray, proba: np.ndarray
) -> MissedFraud:
    """Where do labelled frauds most exceed the model's expectation (the sum of its probabilities)?

    A model that still fits the world predicts about as many frauds as arrive, everywhere.
    A new fraud ring the model cannot see shows as one place with far more frauds than
    predicted. Alarm when, in one one-degree cell, the observed frauds are at least twice
    and at least 5 more than expected, and a Poisson test is significant after a Bonferroni
    correction over the cells (p < :data:`P_VALUE` / cells).
    """
    return missed_fraud_verdict(missed_fraud_cells(lat, lon, label, proba))


def missed_fraud_cells(
    lat: np.ndarray,
    lon: np.ndarray,
    label: np.ndarray,
    proba: np.ndarray,
    weight: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per grid of :data:`HOTSPOT_OFFSETS` and cell: the sums :func:`missed_fraud_verdict` needs.

    Columns ``grid``, ``cell``, ``observed`` (labelled frauds), ``expected`` (the sum of the
    model's probabilities), ``rows``, and the sums and counts of the coordinates that are
    known (``lat_sum``, ``lat_n``, ``lon_sum``, ``lon_n``). They add up: the cells of several
    days are the sums of each day's cells (``weight``, default 1 per row, takes a row back
    with -1).
    """
    lat, lon = np.asarray(lat, dtype=float), np.asarray(lon, dtype=float)
    w = np.ones(len(lat)) if weight is None else np.asarray(weight, dtype=float)
    y = np.asarray(label, dtype=float)
    p = np.asarray(proba, dtype=float)
    sums = {
        "observed": w * y,
        "expected": w * p,
        "rows": w,
        "lat_sum": w * np.nan_to_num(lat),
        "lat_n": w * ~np.isnan(lat),
        "lon_sum": w * np.nan_to_num(lon),
        "lon_n": w * ~np.isnan(lon),
    }
    grids = []
    for g, offset in enumerate(HOTSPOT_OFFSETS):
        cells, inv = np.unique(cell_keys(lat, lon, offset), return_inverse=True)
        grids.append(
            pd.DataFrame(
                {"grid": np.full(len(cells), g, np.int64), "cell": cells}
                | {k: np.bincount(inv, weights=v, minlength=len(cells)) for k, v in sums.items()}
            )
        )
    return pd.concat(grids, ignore_index=True)


def missed_fraud_verdict(cells: pd.DataFrame) -> MissedFraud:
    """The verdict of :func:`missed_fraud_hot_spot` from (pooled) :func:`missed_fraud_cells`."""
    cells = cells[cells["rows"] > 0].sort_values(["grid", "cell"], kind="stable")
    cells = cells.reset_index(drop=True)
    if cells.empty:
        return MissedFraud("", 0.0, 0.0, 0, 0.0, 1.0, 0, OK, "no labelled transactions yet")
    cells["lat"] = cells["lat_sum"] / cells["lat_n"].where(cells["lat_n"] > 0)
    cells["lon"] = cells["lon_sum"] / cells["lon_n"].where(cells["lon_n"] > 0)
    n = int(cells.groupby("grid").size().max())
    cells["p_value"] = stats.poisson.sf(cells["observed"] - 1, cells["expected"].clip(lower=1e-9))
    # Equal p-values (to 1e-9, relative) are ties, whatever the order the sums were added
    # in: the first cell in grid and cell order wins, as it would with exact sums.
    cells["rank"] = np.round(np.log(np.maximum(cells["p_value"], 1e-300)), 9)
    best = cells.sort_values(["rank", "observed"], ascending=[True, False], kind="stable").iloc[0]
    observed, expected, p_value = (
        int(round(float(best["observed"]))),
        float(best["expected"]),
        float(best["p_value"]),
    )
    status = OK
    if observed >= 2 * expected and observed - expected >= 5:
        if p_value < P_VALUE / n:
            status = ERROR
        elif p_value < P_VALUE:
            status = WARNING
    city = nearest_city(float(best["lat"]), float(best["lon"]))
    return MissedFraud(
        city, float(best["lat"]), float(best["lon"]), observed, expected, p_value, n, status,
        f"around {city}: {observed} labelled frauds where the model expected {expected:.1f} "
        f"(p={p_value:.2g}, {n} cells)",
    )  # fmt: skip
