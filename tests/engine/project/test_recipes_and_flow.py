"""SQL recipes: preview, the failing line, saves with concurrency, downstream builds."""

from __future__ import annotations

import pytest

from engine.project import definitions, flow, recipes
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
