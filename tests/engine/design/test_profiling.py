"""Column profiles: distinct counts are exact, or marked as estimates and never too high."""

from __future__ import annotations

import pytest

from engine.design import profiling
from engine.storage import datasets as ds

ROWS = 50_000


@pytest.fixture
def ids(tmp_path) -> ds.DatasetRef:
    """50,000 rows: a unique id, 997 codes, one missing code in ten, over two days."""
    ref = ds.DatasetRef("ids", tmp_path / "ids", "day")
    with ds.session() as con:
        ds.write(
            ref,
            f"SELECT 'id' || range::VARCHAR AS id, "
            f"CASE WHEN range % 10 = 0 THEN NULL ELSE range % 997 END AS code, "
            f"DATE '2026-01-01' + CAST(range % 2 AS INTEGER) AS day FROM range({ROWS})",
            con=con,
        )
    return ref


def test_distinct_counts_are_exact(ids):
    prof = {p.name: p for p in profiling.profile(ids)}
    assert prof["id"].distinct == ROWS  # HyperLogLog says 51,973 here
    assert prof["code"].distinct == 997 and prof["code"].missing == ROWS // 10
    assert all(p.distinct_exact for p in prof.values())
    assert prof["id"].distinct_label == "50,000"
    assert prof["id"].min == "id0"
    frame = profiling.summary_frame(list(prof.values())).set_index("column")
    assert frame.loc["id", "distinct"] == ROWS
    one_day = {p.name: p for p in profiling.profile(ids, ["2026-01-02"])}
    assert one_day["id"].distinct == ROWS // 2


def test_above_the_exact_limit_counts_are_estimates_shown_as_such(ids):
    profiles = profiling.profile(ids, exact_max_rows=ROWS - 1)
    prof = {p.name: p for p in profiles}
    assert not any(p.distinct_exact for p in profiles)
    with ds.session() as con:
        (raw,) = con.execute(f"SELECT approx_count_distinct(id) FROM {ds.scan_sql(ids)}").fetchone()
    # The estimate overshoots (51,973 with DuckDB 2.0): capped at the non-missing values.
    assert prof["id"].distinct == min(raw, ROWS)
    assert prof["code"].distinct <= ROWS - prof["code"].missing
    assert prof["id"].distinct_label == f"≈{prof['id'].distinct:,}"
    frame = profiling.summary_frame(profiles).set_index("column")
    assert frame.loc["id", "distinct"] == f"≈{prof['id'].distinct:,}"
    assert frame.loc["code", "distinct"] == f"≈{prof['code'].distinct:,}"
