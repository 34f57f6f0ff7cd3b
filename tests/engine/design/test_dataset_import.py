"""CSV and Parquet import: inferred schema, corrections, partitions, refused broken rows."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.design import dataset_import as di
from engine.design import profiling
from engine.storage import datasets as ds
from tests.engine.small_project import SHOPS_CSV, make_small


def test_the_inferred_schema_is_strict_about_numbers_and_dates(tmp_path):
    csv = tmp_path / "s.csv"
    csv.write_text(SHOPS_CSV)
    assert di.infer_schema(csv) == {
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
    csv = tmp_path / "more.csv"
    csv.write_text(SHOPS_CSV + bad_line + "\n")
    with pytest.raises(di.DatasetImportError, match=expected) as caught:
        di.import_file(project, "more", csv, types)
    assert "Nothing was imported" in str(caught.value)
    assert (project.root / "datasets.yaml").read_text() == before
    assert not (project.data_root / "more").exists()


def test_parquet_import_with_a_corrected_type_and_a_taken_name(tmp_path):
    small = make_small(tmp_path)
    path = tmp_path / "p.parquet"
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
