"""Explore a dataset: a sample of rows and a profile per column, computed by DuckDB.

Distinct counts are exact (``count(DISTINCT …)``) up to :data:`EXACT_DISTINCT_MAX_ROWS`
rows: on 1 M rows that costs about a tenth more than DuckDB's HyperLogLog estimate, while the
estimate is off by up to a few percent (it can even exceed the row count). Above that, the
hash table of a unique column grows with the data, so the estimate is used: marked
``distinct_exact=False``, shown as "≈" wherever it is shown, and never above the number of
non-missing values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.storage import datasets as ds

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
BINS = 20
EXACT_DISTINCT_MAX_ROWS = 20_000_000
APPROX = "≈"


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: str
    rows: int
    missing: int
    distinct: int  # exact unless distinct_exact is False (then an estimate, ≤ rows - missing)
    min: Any = None
    max: Any = None
    mean: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # p05, p25, p50, p75, p95
    top_values: list[tuple[str, int]] = field(default_factory=list)
    histogram: list[tuple[float, float, int]] = field(default_factory=list)  # lo, hi, count
    distinct_exact: bool = True

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def distinct_label(self) -> str:
        """The distinct count as shown: ``12,345``, or ``≈12,345`` when estimated."""
        return ("" if self.distinct_exact else APPROX) + f"{self.distinct:,}"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_numeric(duck_type: str) -> bool:
    return duck_type.upper().split("(")[0] in NUMERIC


def sample(
    ref: ds.DatasetRef, rows: int = 100, partitions: Sequence[str] | None = None
) -> pd.DataFrame:
    """The first ``rows`` rows (of some partitions if given)."""
    with ds.session() as con:
        return con.sql(f"SELECT * FROM {ds.scan_sql(ref, partitions)} LIMIT {int(rows)}").df()


def profile(
    ref: ds.DatasetRef,
    partitions: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    top: int = 10,
    exact_max_rows: int = EXACT_DISTINCT_MAX_ROWS,
) -> list[ColumnProfile]:
    """One :class:`ColumnProfile` per column (or per column of ``columns``).

    Distinct counts are exact when the rows profiled are at most ``exact_max_rows``,
    estimated (and marked so) above.
    """
    out = []
    with ds.session() as con:
        con.execute(f"CREATE VIEW d AS SELECT * FROM {ds.scan_sql(ref, partitions)}")
        types = {r[0]: r[1] for r in con.execute("DESCRIBE d").fetchall()}
        total = con.execute("SELECT count(*) FROM d").fetchone()[0]
        for name in columns or list(types):
            if name not in types:
                raise ds.DatasetError(f"dataset {ref.name!r} has no column {name!r}")
            exact = total <= exact_max_rows
            out.append(_profile_column(con, name, types[name], total, top, exact))
    return out


def _profile_column(  # noqa: ANN001
    con, name: str, typ: str, total: int, top: int, exact: bool
) -> ColumnProfile:
    c = _ident(name)
    count = f"count(DISTINCT {c})" if exact else f"approx_count_distinct({c})"
    missing, distinct, lo, hi = con.execute(
        f"SELECT count(*) FILTER (WHERE {c} IS NULL), {count}, min({c}), max({c}) FROM d"
    ).fetchone()
    if not exact:  # HyperLogLog can overshoot: never more values than non-missing rows
        distinct = min(int(distinct), int(total) - int(missing))
    tops = con.execute(
        f"SELECT CAST({c} AS VARCHAR), count(*) AS n FROM d WHERE {c} IS NOT NULL "
        f"GROUP BY 1 ORDER BY n DESC, 1 LIMIT {int(top)}"
    ).fetchall()
    mean, quantiles, histogram = None, {}, []
    if is_numeric(typ) and lo is not None:
        row = con.execute(
            f"SELECT avg({c}), quantile_cont({c}, [0.05, 0.25, 0.5, 0.75, 0.95]) FROM d"
        ).fetchone()
        mean = float(row[0])
        quantiles = dict(zip(("p05", "p25", "p50", "p75", "p95"), map(float, row[1]), strict=True))
        lo_f, hi_f = float(lo), float(hi)
        width = (hi_f - lo_f) / BINS or 1.0
        counts = dict(
            con.execute(
                f"SELECT least(CAST(floor(({c} - {lo_f}) / {width}) AS INTEGER), {BINS - 1}), "
                f"count(*) FROM d WHERE {c} IS NOT NULL GROUP BY 1"
            ).fetchall()
        )
        histogram = [
            (lo_f + i * width, lo_f + (i + 1) * width, int(counts.get(i, 0))) for i in range(BINS)
        ]
    return ColumnProfile(
        name=name,
        type=typ,
        rows=int(total),
        missing=int(missing),
        distinct=int(distinct),
        min=lo,
        max=hi,
        mean=mean,
        quantiles=quantiles,
        top_values=[(str(v), int(n)) for v, n in tops],
        histogram=histogram,
        distinct_exact=exact,
    )


def summary_frame(profiles: list[ColumnProfile]) -> pd.DataFrame:
    """One row per column, for a table. ``distinct`` holds numbers when they are exact, and
    labels such as ``≈12,345`` when they are estimates (see :data:`EXACT_DISTINCT_MAX_ROWS`)."""
    exact = all(p.distinct_exact for p in profiles)
    return pd.DataFrame(
        [
            {
                "column": p.name,
                "type": p.type,
                "missing": p.missing_share,
                "distinct": p.distinct if exact else p.distinct_label,
                "min": None if p.min is None else str(p.min),
                "max": None if p.max is None else str(p.max),
                "mean": p.mean,
                "median": p.quantiles.get("p50"),
                "top value": p.top_values[0][0] if p.top_values else None,
            }
            for p in profiles
        ]
    )
