"""Partition values come from folder names, triggers and run parameters: a folder that is
not a valid partition is ignored (never "latest", never read), a requested value that is
not one is refused before any SQL runs, and no value ever becomes SQL text."""

from __future__ import annotations

import logging
import shutil

import pandas as pd
import pytest

from engine.storage import datasets as ds

DAYS = ["2024-01-05", "2024-01-06", "2024-01-07"]
EVIL = "9') OR true; COPY (SELECT 42 AS x) TO 'pwned.csv'; --"


def _days(tmp_path) -> ds.DatasetRef:
    ref = ds.DatasetRef("t", tmp_path / "t", "day")
    frame = pd.DataFrame(
        {"id": range(6), "day": [pd.Timestamp(d).date() for d in DAYS for _ in range(2)]}
    )
    assert ds.write(ref, frame) == DAYS
    return ref


def _copy_day(ref: ds.DatasetRef, folder: str) -> None:
    """A stray folder holding a copy of a real day's file (as a careless copy would)."""
    shutil.copytree(ref.partition_path(DAYS[0]), ref.path / folder)


@pytest.mark.parametrize("stray", [f"day={EVIL}", "day=tmp", "day=2024-13-01", "backup"])
def test_a_stray_folder_is_ignored_not_latest_and_never_read(tmp_path, stray, caplog):
    ref = _days(tmp_path)
    _copy_day(ref, stray)
    with caplog.at_level(logging.WARNING, "nodal.datasets"):
        assert ref.partitions() == DAYS  # the newest is still a real day
        assert ref.partitions() == DAYS
    warnings = [r.getMessage() for r in caplog.records if stray in r.getMessage()]
    assert len(warnings) == 1, warnings  # named once, not at every look
    assert ref.invalid_partitions() == [stray]
    # A whole read reads the real days only (the copy is not read a second time).
    frame = ds.read_df(ref)
    assert len(frame) == 6 and sorted(frame["day"].astype(str).unique()) == DAYS
    assert stray not in ds.scan_sql(ref)


def test_an_invalid_requested_partition_is_refused_before_any_sql(tmp_path, monkeypatch):
    ref = _days(tmp_path)
    _copy_day(ref, f"day={EVIL}")
    monkeypatch.chdir(tmp_path)
    for bad in (EVIL, "tmp", "2024-02-30", "../t", "2024-01-05' --"):
        with pytest.raises(ds.InvalidPartition, match="not an ISO date YYYY-MM-DD"):
            ds.scan_sql(ref, [bad])
        with pytest.raises(ds.InvalidPartition):
            ref.partition_path(bad)
        with pytest.raises(ds.InvalidPartition):
            ds.schema(ref, bad)
        with pytest.raises(ds.InvalidPartition):
            ds.write(ref, "SELECT 1 AS id, DATE '2024-01-05' AS day", partitions=[bad])
    assert not (tmp_path / "pwned.csv").exists()
    assert ref.partitions() == DAYS and len(ds.read_df(ref)) == 6
    # A valid day works as before, the one-partition fast path too (its value is bound).
    assert len(ds.read_df(ref, [DAYS[1]])) == 2
    new = "SELECT 7 AS id, DATE '2024-01-08' AS day"
    assert ds.write(ref, new, partitions=["2024-01-08"]) == ["2024-01-08"]
    assert ref.partitions() == [*DAYS, "2024-01-08"]
    assert ds.read_df(ref, ["2024-01-08"])["id"].tolist() == [7]


def test_other_keys_take_a_strict_pattern_and_a_declared_date_key_takes_days(tmp_path):
    plain = ds.DatasetRef("p", tmp_path / "p", "region")
    assert ds.write(plain, "SELECT 1 AS x, 'eu-west_1.a' AS region") == ["eu-west_1.a"]
    assert plain.partitions() == ["eu-west_1.a"]
    for bad in ("a b", "x'y", "", "." + "a", "a" * 65, "a/b"):
        with pytest.raises(ds.InvalidPartition, match="not a valid partition value"):
            plain.check_partition(bad)
    dated = ds.DatasetRef("d", tmp_path / "d", "booked", "DATE")
    assert dated.date_partitions and not plain.date_partitions
    with pytest.raises(ds.InvalidPartition, match="ISO date"):
        dated.check_partition("tmp")
    # Rows whose key would make a folder no reader accepts are refused, nothing installed.
    with pytest.raises(ds.InvalidPartition, match="'tmp'"):
        ds.write(dated, "SELECT 1 AS x, 'tmp' AS booked")
    assert dated.partitions() == []
