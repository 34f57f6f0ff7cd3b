"""Parquet datasets through DuckDB: layout, partitions, atomic replace."""

from __future__ import annotations

import datetime as dt
import os
import threading

import pandas as pd
import pytest

from engine.storage import datasets as ds


def _frame(days: list[str], n: int = 3) -> pd.DataFrame:
    rows = [
        {"id": i, "value": float(i), "day": dt.date.fromisoformat(d)}
        for d in days
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_partitioned_write_replaces_only_the_partitions_written(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    assert ds.write(ref, _frame(["2026-01-01", "2026-01-02"])) == ["2026-01-01", "2026-01-02"]
    ds.write(ref, _frame(["2026-01-02"], n=5))
    assert ref.partitions() == ["2026-01-01", "2026-01-02"]
    counts = ds.query_df(
        "SELECT CAST(day AS VARCHAR) d, count(*) n FROM t GROUP BY 1 ORDER BY 1", {"t": ref}
    )
    assert counts["n"].tolist() == [3, 5]
    assert sorted(p.name for p in (ref.path / "day=2026-01-02").iterdir()) == ["data.parquet"]


def test_replace_all_drops_partitions_not_written(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    ds.write(ref, _frame(["2026-01-01", "2026-01-02"]))
    ds.write(ref, _frame(["2026-01-03"]), replace_all=True)
    assert ref.partitions() == ["2026-01-03"]


def test_reading_some_partitions_and_missing_ones(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    ds.write(ref, _frame(["2026-01-01", "2026-01-02"]))
    assert len(ds.read_df(ref, ["2026-01-02"])) == 3
    with pytest.raises(ds.DatasetError, match="no partition 2026-01-09"):
        ds.read_df(ref, ["2026-01-09"])
    with pytest.raises(ds.DatasetError, match="has no data yet"):
        ds.read_df(ds.DatasetRef("empty", tmp_path / "empty"))


def test_a_failed_write_leaves_the_old_version_and_no_debris(tmp_path):
    ref = ds.DatasetRef("u", tmp_path / "u")
    ds.write(ref, _frame(["2026-01-01"]))
    with ds.session() as con, pytest.raises(Exception, match="nonexistent"):
        ds.write(ref, "SELECT * FROM nonexistent_table", con=con)
    assert len(ds.read_df(ref)) == 3
    assert list((tmp_path / ".staging").iterdir()) == []


def test_readers_never_see_a_half_written_file(tmp_path):
    """A reader looping while a writer replaces the dataset sees either version, whole."""
    ref = ds.DatasetRef("u", tmp_path / "u")
    ds.write(ref, pd.DataFrame({"x": range(50_000)}))
    seen, stop = set(), threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(int(ds.query_df("SELECT count(*) n FROM u", {"u": ref})["n"][0]))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(15):
        ds.write(ref, pd.DataFrame({"x": range(50_000 if i % 2 else 80_000)}))
    stop.set()
    thread.join()
    assert seen <= {50_000, 80_000}


def test_schema_of_one_partition(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    ds.write(ref, _frame(["2026-01-01"]))
    extra = _frame(["2026-01-02"]).assign(extra="x")
    ds.write(ref, extra)
    assert "extra" not in ds.schema(ref, "2026-01-01")
    assert ds.schema(ref, "2026-01-02")["extra"] == "VARCHAR"
    assert os.path.exists(ref.partition_path("2026-01-02") / "data.parquet")
