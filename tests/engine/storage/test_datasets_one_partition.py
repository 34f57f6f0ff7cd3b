"""Writing one partition straight to its file (the daily build) instead of PARTITION_BY.

``datasets.write(..., partitions=[day])`` must install exactly what the general write
installs (same rows, columns, Parquet schema), leave every other partition alone, refuse
to take a row of another day into the partition (the general write then does it), and stay
atomic and interruptible. Real files, real DuckDB.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.storage import datasets as ds

DAY, OTHER = "2026-03-02", "2026-03-01"


def _source(folder: Path, first: str = DAY, rows: int = 3000, days: int = 1) -> str:
    """SQL over a Parquet file like the example's sources: its non-null columns REQUIRED
    (DuckDB carries that into what it writes), a nullable one, strings, a DATE day."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"src-{first}-{rows}-{days}.parquet"
    ids = np.arange(rows)
    table = pa.table(
        {
            "id": ids,
            "category": pa.array([f"c{i % 7}" for i in ids], pa.string()),
            "ratio": pa.array(ids / 3, mask=ids % 5 == 0),
            "day": pa.array(
                np.datetime64(first, "D") + (ids % days).astype("timedelta64[D]"), pa.date32()
            ),
        },
        schema=pa.schema(
            [
                pa.field("id", pa.int64(), nullable=False),
                pa.field("category", pa.string(), nullable=False),
                pa.field("ratio", pa.float64()),
                pa.field("day", pa.date32(), nullable=False),
            ]
        ),
    )
    pq.write_table(table, path)
    return f"SELECT * FROM read_parquet('{path}')"


def _file(ref: ds.DatasetRef, day: str) -> Path:
    return ref.partition_path(day) / ds.DATA_FILE


def _rows(path: Path) -> list[tuple]:
    with duckdb.connect() as con:
        return con.sql(
            f"SELECT * FROM read_parquet('{path}', hive_partitioning=false) ORDER BY id"
        ).fetchall()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _write(ref: ds.DatasetRef, sql: str, partitions: list[str] | None) -> list[str]:
    with ds.session() as con:
        return ds.write(ref, sql, con=con, partitions=partitions)


def test_one_partition_write_installs_what_the_general_write_installs(tmp_path):
    general = ds.DatasetRef("g", tmp_path / "g", "day")
    direct = ds.DatasetRef("d", tmp_path / "d", "day")
    assert _write(general, _source(tmp_path / "src"), None) == [DAY]
    assert _write(direct, _source(tmp_path / "src"), [DAY]) == [DAY]
    a, b = _file(general, DAY), _file(direct, DAY)
    # The same Parquet schema, nullability included (a plain COPY would mark id REQUIRED),
    # and the same rows; the day is the folder, not a column, in both.
    assert pq.read_schema(b) == pq.read_schema(a)
    assert pq.read_schema(b).field("id").nullable
    assert "day" not in pq.read_schema(b).names
    assert _rows(b) == _rows(a) and len(_rows(b)) == 3000
    assert ds.schema(direct) == ds.schema(general)
    assert sorted(p.name for p in b.parent.iterdir()) == [ds.DATA_FILE]
    assert list((tmp_path / ds.STAGING_DIR).iterdir()) == []


def test_one_partition_write_leaves_the_other_partitions_alone(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    ds.write(ref, _source(tmp_path / "src", OTHER, rows=100))
    other = _snapshot(ref.partition_path(OTHER))
    assert _write(ref, _source(tmp_path / "src", rows=500), [DAY]) == [DAY]
    assert _write(ref, _source(tmp_path / "src", rows=700), [DAY]) == [
        DAY
    ]  # a rebuild replaces the day
    assert ref.partitions() == [OTHER, DAY]
    assert _snapshot(ref.partition_path(OTHER)) == other
    assert len(ds.read_df(ref, [DAY])) == 700


def test_rows_of_another_partition_are_written_the_general_way(tmp_path):
    """A recipe restricted to one day that still yields other days: nothing is lost."""
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    two_days = _source(tmp_path / "src", OTHER, rows=1000, days=2)  # OTHER and DAY, interleaved
    assert _write(ref, two_days, [DAY]) == [OTHER, DAY]
    expected = ds.DatasetRef("e", tmp_path / "e", "day")
    _write(expected, two_days, None)
    for day in (OTHER, DAY):
        assert _rows(_file(ref, day)) == _rows(_file(expected, day))
    # A NULL key is another partition too; the general write refuses it for a dataset of
    # days (a NULL day is no ISO date: readers would ignore its folder) and installs nothing.
    one_day = _source(tmp_path / "src")
    with_null = f"SELECT id, CASE WHEN id = 3 THEN NULL ELSE day END AS day FROM ({one_day})"
    nulls = ds.DatasetRef("n", tmp_path / "n", "day")
    with pytest.raises(ds.InvalidPartition, match="NULL"):
        _write(nulls, with_null, [DAY])
    assert not nulls.path.exists() or list(nulls.path.iterdir()) == []
    assert list((tmp_path / ds.STAGING_DIR).iterdir()) == []


def test_an_empty_result_installs_nothing_and_keeps_the_old_partition(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    _write(ref, _source(tmp_path / "src", rows=50), [DAY])
    before = _snapshot(ref.path)
    assert _write(ref, _source(tmp_path / "src", rows=0), [DAY]) == []
    assert _snapshot(ref.path) == before


def test_a_frame_is_written_straight_to_its_partition(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    frame = pd.DataFrame({"x": [1.5, 2.5], "day": [dt.date(2026, 3, 2)] * 2})
    assert ds.write(ref, frame, partitions=[DAY]) == [DAY]
    assert ds.read_df(ref, [DAY])["x"].tolist() == [1.5, 2.5]


def test_a_failing_one_partition_write_leaves_the_old_file_and_no_debris(tmp_path):
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    _write(ref, _source(tmp_path / "src", rows=200), [DAY])
    before = _snapshot(ref.path)
    # Fails after the COPY has started producing rows (the cast of row 150_000 fails).
    many = _source(tmp_path / "src", rows=300_000)
    failing = (
        f"SELECT id, CAST(CASE WHEN id = 150000 THEN 'x' ELSE '1' END AS INTEGER) AS n, day "
        f"FROM ({many})"
    )
    with pytest.raises(duckdb.ConversionException):
        _write(ref, failing, [DAY])
    assert _snapshot(ref.path) == before
    assert list((tmp_path / ds.STAGING_DIR).iterdir()) == []


def test_an_interrupted_one_partition_write_leaves_the_old_file(tmp_path):
    """Mid-write only the staged file changes; the connection joins the interrupt scope."""
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    _write(ref, _source(tmp_path / "src", rows=200), [DAY])
    before = _snapshot(ref.path)
    endless = (  # a 10^12-row cross join yielding a row in a million, all in partition DAY
        f"SELECT a.range AS x, DATE '{DAY}' AS day FROM range(1000000) a, range(1000000) b "
        "WHERE (a.range * b.range) % 1000003 = 7"
    )
    scopes: list[ds.InterruptScope] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with ds.interrupt_scope() as scope:
                scopes.append(scope)
                ds.write(ref, endless, partitions=[DAY])
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    staging = tmp_path / ds.STAGING_DIR
    deadline = time.monotonic() + 60
    while not list(staging.rglob("*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(staging.rglob("*.parquet")), "the COPY writes its staged file"
    assert _snapshot(ref.path) == before  # nothing a reader globs has changed mid-write
    while worker.is_alive():
        scopes[0].interrupt()  # DuckDB forgets an interrupt when a statement starts
        worker.join(0.2)
    assert len(errors) == 1 and isinstance(errors[0], duckdb.InterruptException), errors
    assert _snapshot(ref.path) == before
    assert list(staging.iterdir()) == []


def test_a_value_duckdb_would_escape_is_refused_by_both_writes(tmp_path):
    """PARTITION_BY would name ``k=a:b`` as ``k=a%3Ab``, which is no valid partition (readers
    would ignore it): the direct write refuses the value, the general write its rows."""
    sql = "SELECT range AS x, 'a:b' AS k FROM range(10)"
    ref = ds.DatasetRef("t", tmp_path / "t", "k")
    with pytest.raises(ds.InvalidPartition, match="'a:b'"):
        _write(ref, sql, ["a:b"])
    general = ds.DatasetRef("g", tmp_path / "g", "k")
    with pytest.raises(ds.InvalidPartition, match="a%3Ab"):
        _write(general, sql, None)
    assert ref.partitions() == [] and general.partitions() == []
    assert not general.path.exists() or list(general.path.iterdir()) == []
