"""CSV and Parquet import: inferred schema, corrections, partitions, refused broken rows."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.design import dataset_import as di
from engine.design import profiling
from engine.storage import datasets as ds
from tests.engine.small_project import SHOPS_CSV, make_small


def test_the_inferred_schema_is_strict_about_numbers_and_dates(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    csv = tmp_path / "data" / "s.csv"
    csv.write_text(SHOPS_CSV)
    assert di.infer_schema(csv, project=small.project()) == {
        "shop_id": "BIGINT",
        "opened": "DATE",
        "city": "VARCHAR",
        "monthly_sales": "DOUBLE",  # 1200.5 is not an integer; the empty value is missing
        "channel": "VARCHAR",
    }


def test_a_csv_is_imported_partitioned_by_day_and_profiled(tmp_path):
    small = make_small(tmp_path)
    project = small.project()
    ref = project.dataset("shops")
    assert project.datasets["shops"].partitioned_by == "day"
    assert ref.partitions() == ["2024-01-05", "2024-01-06", "2024-01-07"]
    assert project.datasets["shops"].schema["monthly_sales"] == "DOUBLE"
    prof = {p.name: p for p in profiling.profile(ref)}
    assert prof["monthly_sales"].missing == 1 and prof["monthly_sales"].max == 1200.5
    assert prof["city"].top_values[0] == ("Austin", 2)
    assert sum(n for _, _, n in prof["monthly_sales"].histogram) == 3


@pytest.mark.parametrize(
    ("bad_line", "types", "expected"),
    [
        ("5,2024-01-08,Austin,12,online,extra", None, "line 6"),  # a field too many
        ("5,2024-01-08,Austin,twelve,online", {"monthly_sales": "DOUBLE"}, "line 6"),
    ],
)
def test_a_broken_row_refuses_the_import_with_its_line_and_changes_nothing(
    tmp_path, bad_line, types, expected
):
    small = make_small(tmp_path)
    project = small.project()
    before = (project.root / "datasets.yaml").read_text()
    csv = tmp_path / "data" / "more.csv"
    csv.write_text(SHOPS_CSV + bad_line + "\n")
    with pytest.raises(di.DatasetImportError, match=expected) as caught:
        di.import_file(project, "more", csv, types)
    assert "Nothing was imported" in str(caught.value)
    assert (project.root / "datasets.yaml").read_text() == before
    assert not (project.data_root / "more").exists()


def test_parquet_import_with_a_corrected_type_and_a_taken_name(tmp_path):
    small = make_small(tmp_path)
    path = tmp_path / "data" / "p.parquet"
    pd.DataFrame({"code": ["1", "2"], "v": [1.5, 2.5]}).to_parquet(path)
    result = di.import_file(small.project(), "codes", path, {"code": "BIGINT"})
    assert result.schema == {"code": "BIGINT", "v": "DOUBLE"}
    frame = ds.read_df(small.project().dataset("codes"))
    assert list(frame["code"]) == [1, 2]
    with pytest.raises(di.DatasetImportError, match="already has a dataset 'codes'"):
        di.import_file(small.project(), "codes", path)


def test_uploads_are_staged_under_the_home_and_leftovers_are_swept(tmp_path):
    import os
    import subprocess
    import sys
    import time

    home = tmp_path / "var"
    mine = di.stage_upload(home, "../../shops.csv", SHOPS_CSV.encode())
    assert mine.name == "shops.csv" and mine.read_text() == SHOPS_CSV
    assert mine.parent.parent == di.uploads_dir(home)
    # A Studio that stopped (its process is gone) left a file behind.
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = di.uploads_dir(home) / f"{gone.stdout.strip()}-left"
    dead.mkdir()
    (dead / "old.csv").write_text("a\n1\n")
    # A live Studio's upload abandoned two days ago.
    old = di.stage_upload(home, "abandoned.csv", b"a\n1\n")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old.parent, (two_days_ago, two_days_ago))
    assert di.sweep_uploads(home) == 2
    assert mine.exists() and not dead.exists() and not old.parent.exists()
    # discard removes a staged upload, and never a file it did not stage.
    outside = tmp_path / "keep.csv"
    outside.write_text("a\n1\n")
    di.discard_upload(home, outside)
    di.discard_upload(home, mine)
    assert outside.exists() and not mine.parent.exists()
    assert list(di.uploads_dir(home).iterdir()) == []


INDEXED_CSV = (  # what DataFrame.to_csv writes by default: the index first, its header empty
    ",shop_id,opened,city,monthly_sales\n0,1,2024-01-05,Austin,1200.5\n1,2,2024-01-06,Boston,900\n"
)


def test_the_column_with_no_name_is_dropped_or_named_before_import(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    csv = tmp_path / "data" / "indexed.csv"
    csv.write_text(INDEXED_CSV)
    assert di.infer_schema(csv, project=small.project()) == {
        "": "BIGINT",
        "shop_id": "BIGINT",
        "opened": "DATE",
        "city": "VARCHAR",
        "monthly_sales": "DOUBLE",
    }
    with pytest.raises(di.UnnamedColumnError, match="column 1 has no name") as caught:
        di.import_file(small.project(), "shops", csv)
    assert caught.value.position == 1 and "drop it or give it a name" in str(caught.value)
    assert not (small.project().data_root / "shops").exists()

    dropped = di.import_file(small.project(), "dropped", csv, drop=["", "city"])
    assert dropped.schema == {"shop_id": "BIGINT", "opened": "DATE", "monthly_sales": "DOUBLE"}
    named = di.import_file(
        small.project(),
        "named",
        csv,
        {"row": "VARCHAR", "opened": "TIMESTAMP"},  # a type by the new name or the file's
        partition_column="opened_at",  # … and the partition column too
        rename={"": "row", "opened": "opened_at", "monthly_sales": "sales"},
    )
    assert named.partitions == ["2024-01-05", "2024-01-06"]
    project = small.project()
    assert project.datasets["named"].schema == {
        "row": "VARCHAR",
        "shop_id": "BIGINT",
        "opened_at": "TIMESTAMP",
        "city": "VARCHAR",
        "sales": "DOUBLE",
    }
    frame = ds.read_df(project.dataset("named")).sort_values("row")
    assert list(frame["row"]) == ["0", "1"] and list(frame["sales"]) == [1200.5, 900.0]


def test_a_parquet_file_s_columns_are_dropped_and_renamed_too(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    path = tmp_path / "data" / "p.parquet"
    pd.DataFrame({"code": ["1", "2"], "v": [1.5, 2.5], "note": ["a", "b"]}).to_parquet(path)
    result = di.import_file(
        small.project(),
        "codes",
        path,
        {"code": "BIGINT"},
        drop=["note"],
        rename={"code": "v", "v": "value"},  # names may swap places
    )
    assert result.schema == {"v": "BIGINT", "value": "DOUBLE"}
    frame = ds.read_df(small.project().dataset("codes"))
    assert list(frame["v"]) == [1, 2] and list(frame["value"]) == [1.5, 2.5]


@pytest.mark.parametrize(
    ("drop", "rename", "partition", "expected"),
    [
        ([""], {"nope": "x"}, None, r"has no column 'nope' to rename \(its columns: '', shop_id"),
        (["", "nope"], {}, None, "has no column 'nope' to drop"),
        ([""], {"city": "shop_id"}, None, "columns 'shop_id' and 'city' would be named 'shop_id'"),
        ([""], {"city": "n", "monthly_sales": "n"}, None, "would be named 'n'"),
        ([""], {"city": "Shop_ID"}, None, "DuckDB takes for the same name"),
        (["", "city"], {"city": "town"}, None, "'city' is both dropped and renamed"),
        ([], {"": "  "}, None, "the new name of column '' .* is empty"),
        ([], {"city": "x"}, None, "column 1 has no name"),
        (["", "shop_id", "opened", "city", "monthly_sales"], {}, None, "every column is dropped"),
        ([""], {"city": "day"}, "opened", "adds a column day, and column 'day'"),
        (["", "opened"], {}, "opened", "'opened' is dropped: it cannot partition"),
    ],
)
def test_bad_drops_and_renames_are_refused_and_change_nothing(
    tmp_path, drop, rename, partition, expected
):
    small = make_small(tmp_path, with_shops=False)
    before = (small.project().root / "datasets.yaml").read_text()
    csv = tmp_path / "data" / "indexed.csv"
    csv.write_text(INDEXED_CSV)
    with pytest.raises(di.DatasetImportError, match=expected):
        di.import_file(
            small.project(), "shops", csv, partition_column=partition, drop=drop, rename=rename
        )
    assert (small.project().root / "datasets.yaml").read_text() == before
    assert not (small.project().data_root / "shops").exists()


def test_a_conversion_error_names_the_column_by_its_new_name(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    csv = tmp_path / "data" / "indexed.csv"
    csv.write_text(INDEXED_CSV + "2,3,2024-01-07,Austin,oops\n")
    with pytest.raises(di.DatasetImportError, match="line 4 .*column sales: Could not convert"):
        di.import_file(
            small.project(),
            "shops",
            csv,
            {"sales": "DOUBLE"},
            drop=[""],
            rename={"monthly_sales": "sales"},
        )
