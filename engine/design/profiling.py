"""Explore a dataset: a sample of rows and a profile per column, computed by DuckDB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from engine.storage import datasets as ds

NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
BINS = 20


@dataclass(frozen=True)
class ColumnProfile:
    name: str
    type: str
    rows: int
    missing: int
    distinct: int  # approximate above a few thousand values
    min: Any = None
    max: Any = None
    mean: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)  # p05, p25, p50, p75, p95
    top_values: list[tuple[str, int]] = field(default_factory=list)
    histogram: list[tuple[float, float, int]] = field(default_factory=list)  # lo, hi, count

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


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
) -> list[ColumnProfile]:
    """One :class:`ColumnProfile` per column (or per column of ``columns``)."""
    out = []
    with ds.session() as con:
        con.execute(f"CREATE VIEW d AS SELECT * FROM {ds.scan_sql(ref, partitions)}")
        types = {r[0]: r[1] for r in con.execute("DESCRIBE d").fetchall()}
        total = con.execute("SELECT count(*) FROM d").fetchone()[0]
        for name in columns or list(types):
            if name not in types:
                raise ds.DatasetError(f"dataset {ref.name!r} has no column {name!r}")
            out.append(_profile_column(con, name, types[name], total, top))
    return out


def _profile_column(con, name: str, typ: str, total: int, top: int) -> ColumnProfile:  # noqa: ANN001
    c = _ident(name)
    missing, distinct, lo, hi = con.execute(
        f"SELECT count(*) FILTER (WHERE {c} IS NULL), approx_count_distinct({c}), "
        f"min({c}), max({c}) FROM d"
    ).fetchone()
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
    )


def summary_frame(profiles: list[ColumnProfile]) -> pd.DataFrame:
    """One row per column, for a table."""
    return pd.DataFrame(
        [
            {
                "column": p.name,
                "type": p.type,
                "missing": p.missing_share,
                "distinct": p.distinct,
                "min": None if p.min is None else str(p.min),
                "max": None if p.max is None else str(p.max),
                "mean": p.mean,
                "median": p.quantiles.get("p50"),
                "top value": p.top_values[0][0] if p.top_values else None,
            }
            for p in profiles
        ]
    )
