"""SQL recipes: preview, the failing line, saves with concurrency, downstream builds."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.project import definitions, flow, recipes
from engine.storage import datasets as ds
from tests.engine.small_project import make_small

SQL = "SELECT city, sum(monthly_sales) AS sales\nFROM shops\nGROUP BY city"


def test_preview_gives_first_rows_and_the_output_schema(tmp_path):
    small = make_small(tmp_path)
    preview = recipes.preview(small.project(), SQL, ["shops"])
    assert preview.schema == {"city": "VARCHAR", "sales": "DOUBLE"}
    assert sorted(preview.rows["city"]) == ["Austin", "Boston", "Denver"]


def test_a_sql_error_names_the_failing_line(tmp_path):
    small = make_small(tmp_path)
    with pytest.raises(recipes.RecipeError, match=r"at line 2 \(sum\(nope\) AS sales\)"):
        recipes.preview(small.project(), "SELECT city,\nsum(nope) AS sales\nFROM shops", ["shops"])
    with pytest.raises(recipes.RecipeError, match="at line 3"):
        recipes.preview(small.project(), "SELECT city\nFROM shops\nWHERE AND", ["shops"])


def test_save_build_edit_and_rebuild_downstream(tmp_path):
    small = make_small(tmp_path)
    version = recipes.save_recipe(
        small.project(), "by_city", SQL, {"shops": "all"}, "by_city", definitions.ABSENT
    )
    recipes.save_recipe(
        small.project(),
        "top_city",
        "SELECT * FROM by_city ORDER BY sales DESC LIMIT 1",
        {"by_city": "all"},
        "top_city",
        definitions.ABSENT,
    )
    project = small.project()
    assert flow.downstream_order(project, "shops") == ["by_city", "top_city"]
    seen = []
    result = flow.build_downstream(
        project, "shops", progress=lambda i, n, r: seen.append((i, n, r))
    )
    assert [r.output for r in result.runs] == ["by_city", "top_city"]
    assert seen == [(0, 2, "by_city"), (1, 2, "top_city"), (2, 2, "")]
    # A second analyst's save from the same version is refused; the first one's stays.
    edited = SQL.replace("sum(", "max(")
    recipes.save_recipe(project, "by_city", edited, {"shops": "all"}, "by_city", version)
    with pytest.raises(definitions.DefinitionConflict):
        recipes.save_recipe(project, "by_city", SQL, {"shops": "all"}, "by_city", version)
    assert "max(" in (project.root / "recipes/by_city.sql").read_text()


def test_a_recipe_that_would_close_a_cycle_or_fails_is_not_saved(tmp_path):
    small = make_small(tmp_path)
    recipes.save_recipe(small.project(), "a", "SELECT * FROM shops", {"shops": "all"}, "a_out")
    with pytest.raises(recipes.RecipeError, match="not a dataset|cannot be both"):
        recipes.save_recipe(small.project(), "b", "SELECT 1", {"a_out": "all"}, "a_out")
    with pytest.raises(recipes.RecipeError, match="at line 1"):
        recipes.save_recipe(small.project(), "c", "SELECT nope FROM shops", {"shops": "all"}, "c")
    assert sorted(small.project().recipes) == ["a"]


# --- a build of some days of a partitioned output -----------------------------------------------

# Ends with a comment, as an analyst may write it: the build must still close its brackets.
SO_FAR_SQL = """WITH days AS (SELECT DISTINCT day FROM shops)
SELECT d.day, count(s.shop_id) AS shops_so_far, sum(s.monthly_sales) AS sales_so_far
FROM days d JOIN shops s ON s.day <= d.day
GROUP BY d.day
-- every day counts the shops of the days before it too"""

PYTHON_SO_FAR = """
def run(inputs, variables):
    shops = inputs["shops"].sort_values("day")
    out = shops.groupby("day", as_index=False)["shop_id"].count()
    out["shops_so_far"] = out["shop_id"].cumsum()
    return out[["day", "shops_so_far"]]
"""


def _partitioned_output(small, name: str, body: str, suffix: str = "sql") -> None:
    """Recipe ``name`` reads shops whole and writes dataset ``name``, partitioned by day."""
    root = small.project().root
    (root / "recipes").mkdir(exist_ok=True)
    (root / "recipes" / f"{name}.{suffix}").write_text(body)
    with open(root / "datasets.yaml", "a") as fh:
        fh.write(f"{name}:\n  kind: managed\n  partitioned_by: day\n")
    flow_yaml = (root / "flow.yaml").read_text().replace("recipes: {}", "recipes:")
    if "recipes:" not in flow_yaml:
        flow_yaml += "recipes:\n"
    flow_yaml += (
        f"  {name}:\n    {'python' if suffix == 'py' else 'sql'}: recipes/{name}.{suffix}\n"
        f"    inputs: {{shops: all}}\n    output: {name}\n"
    )
    (root / "flow.yaml").write_text(flow_yaml)


def _files(ref) -> dict[str, tuple[int, int]]:
    """Each partition's file: (inode, mtime) change only when it is written again."""
    return {
        p: ((ref.partition_path(p) / ds.DATA_FILE).stat().st_ino,)
        + ((ref.partition_path(p) / ds.DATA_FILE).stat().st_mtime_ns,)
        for p in ref.partitions()
    }


def _so_far(ref) -> dict[str, int]:
    frame = ds.read_df(ref)
    return dict(zip(frame["day"].astype(str), frame["shops_so_far"], strict=True))


@pytest.mark.parametrize("language", ["sql", "py"])
def test_a_one_day_build_of_a_recipe_reading_all_writes_that_day_only(tmp_path, language):
    small = make_small(tmp_path)
    _partitioned_output(
        small, "so_far", SO_FAR_SQL if language == "sql" else PYTHON_SO_FAR, language
    )
    project = small.project()
    ref = project.dataset("so_far")
    (full,) = flow.build(project, "so_far").runs
    assert full.partitions is None
    assert _so_far(ref) == {"2024-01-05": 2, "2024-01-06": 3, "2024-01-07": 4}

    # Two more shops land on 2024-01-06; that day is rebuilt.
    shops = project.dataset("shops")
    more = ds.read_df(shops, ["2024-01-06"])
    more = pd.concat([more, more.assign(shop_id=[8]), more.assign(shop_id=[9])])
    more["day"] = more["day"].dt.date
    ds.write(shops, more, partitions=["2024-01-06"])
    before = _files(ref)
    (run,) = flow.build(project, "so_far", ["2024-01-06"]).runs
    after = _files(ref)
    assert after["2024-01-05"] == before["2024-01-05"]  # not written again
    assert after["2024-01-07"] == before["2024-01-07"]
    assert after["2024-01-06"] != before["2024-01-06"]
    assert (run.partitions, run.rows) == (["2024-01-06"], 1)
    # 2024-01-07 counts the shops of 2024-01-06 too: left stale, and the build says so.
    assert _so_far(ref) == {"2024-01-05": 2, "2024-01-06": 5, "2024-01-07": 4}
    assert full.note == ""
    assert "wrote 2024-01-06 only; 1 later partition(s) of so_far (2024-01-07)" in run.note
    assert "reads shops whole" in run.note and "build so_far without a partition" in run.note

    (run,) = flow.build(project, "so_far", ["2024-01-07"]).runs
    assert run.note == "" and _so_far(ref)["2024-01-07"] == 6
    assert _files(ref)["2024-01-06"] == after["2024-01-06"]


def test_a_one_day_build_writes_no_row_of_another_day(tmp_path):
    """A recipe reading its input 'same' but giving rows of other days (here: the next
    one): a build of one day writes that day, never a day it was not asked for."""
    small = make_small(tmp_path)
    _partitioned_output(
        small, "next_day", "SELECT day + 1 AS day, count(*) AS shops_so_far FROM shops GROUP BY 1"
    )
    root = small.project().root
    text = (root / "flow.yaml").read_text().replace("{shops: all}", "{shops: same}")
    (root / "flow.yaml").write_text(text)
    project = small.project()
    flow.build(project, "next_day")
    ref = project.dataset("next_day")
    assert ref.partitions() == ["2024-01-06", "2024-01-07", "2024-01-08"]
    before = _files(ref)
    (run,) = flow.build(project, "next_day", ["2024-01-06"]).runs
    # Reading shops of 2024-01-06 only, the recipe's one row is of 2024-01-07: not written.
    assert run.rows == 0 and _files(ref) == before
    assert run.note == "no rows for 2024-01-06: nothing written (2024-01-06 keeps its earlier rows)"


def test_an_unpartitioned_output_is_rebuilt_whole_and_the_build_says_so(tmp_path):
    small = make_small(tmp_path)
    recipes.save_recipe(
        small.project(), "by_city", SQL, {"shops": "all"}, "by_city", definitions.ABSENT
    )
    (run,) = flow.build(small.project(), "by_city", ["2024-01-06"]).runs
    assert run.partitions is None and run.rows == 3
    assert run.note.startswith("by_city is not partitioned: rebuilt whole for 2024-01-06")
