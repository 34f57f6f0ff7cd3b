"""Python recipes: a recipe whose body is ``recipes/<name>.py``, run in its own process."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from engine.automation import runs, scenarios
from engine.cli import main as cli
from engine.design import bundle_contents
from engine.project import definitions, flow, recipes
from engine.project.project import definition_files
from engine.storage import datasets as ds
from tests.engine.small_project import make_small

CITY_SALES = textwrap.dedent(
    """
    import pandas as pd


    def run(inputs, variables):
        shops = inputs["shops"]
        out = shops.groupby("city", as_index=False)["monthly_sales"].sum()
        out["currency"] = variables.get("currency", "USD")
        return out.sort_values("city")
    """
).lstrip()

BROKEN = textwrap.dedent(
    """
    def helper(frame):
        return frame["no_such_column"]


    def run(inputs, variables):
        shops = inputs["shops"]
        return helper(shops)
    """
).lstrip()


@pytest.fixture
def small(tmp_path):
    return make_small(tmp_path)


def _save(small, name, code, output, inputs=None, **kw) -> str:
    return recipes.save_recipe(
        small.project(),
        name,
        code,
        inputs or {"shops": "all"},
        output,
        definitions.ABSENT,
        language="python",
        **kw,
    )


def _rows(small, dataset):
    return ds.read_df(small.project().dataset(dataset))


def test_a_python_recipe_is_saved_built_and_bundled(small):
    _save(small, "city_sales", CITY_SALES, "city_sales")
    project = small.project()
    assert (project.root / "recipes" / "city_sales.py").read_text() == CITY_SALES
    assert project.recipes["city_sales"].sql_file == "recipes/city_sales.py"
    assert flow.graph(project)["city_sales"] == {"shops"}

    result = flow.build(project, "city_sales")
    assert [(r.recipe, r.rows) for r in result.runs] == [("city_sales", 3)]
    frame = _rows(small, "city_sales").set_index("city")
    assert frame.loc["Austin", "monthly_sales"] == pytest.approx(1510.75)
    assert set(frame["currency"]) == {"USD"}
    # Nothing but the recipe lands in the project: no bytecode, no temporary files.
    files = {str(p) for p in definition_files(project.root)}
    assert "recipes/city_sales.py" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    members, _, _ = bundle_contents.bundle_members(project)
    assert members["recipes/city_sales.py"] == CITY_SALES.encode()


def test_a_failing_recipe_names_the_line_of_the_analysts_code_and_keeps_the_output(small):
    _save(small, "city_sales", CITY_SALES, "city_sales")
    flow.build(small.project(), "city_sales")
    before = _rows(small, "city_sales")
    (small.project().root / "recipes" / "city_sales.py").write_text(BROKEN)
    with pytest.raises(flow.FlowError) as failed:
        flow.build(small.project(), "city_sales")
    message = str(failed.value)
    assert "recipes/city_sales.py failed at line 2" in message
    assert 'frame["no_such_column"]' in message and "KeyError" in message
    tb = failed.value.user_traceback
    assert 'File "recipes/city_sales.py", line 7, in run' in tb
    assert 'File "recipes/city_sales.py", line 2, in helper' in tb
    assert "engine" not in tb and "pandas" not in tb and "site-packages" not in tb
    assert _rows(small, "city_sales").equals(before)


def test_a_recipe_that_runs_too_long_is_stopped_with_what_it_started(small, tmp_path):
    pid_file = tmp_path / "pids"
    # The pids are written as the module loads; the timeout (counted from the process start,
    # imports included) is generous enough for a loaded machine to get there.
    code = textwrap.dedent(
        f"""
        import os, subprocess, time
        TIMEOUT = 8
        helper = subprocess.Popen(["sleep", "300"])
        open({str(pid_file)!r}, "w").write(f"{{os.getpid()}} {{helper.pid}}")


        def run(inputs, variables):
            time.sleep(300)
        """
    )
    _save(small, "slow", code, "slow_out")
    with pytest.raises(flow.FlowError, match="stopped after its timeout of 8 s"):
        flow.build(small.project(), "slow_out")
    recipe_pid, helper_pid = map(int, pid_file.read_text().split())
    with pytest.raises(ProcessLookupError):
        os.kill(recipe_pid, 0)
    # The helper it started was killed with its group (it is a zombie until init reaps it).
    state = Path(f"/proc/{helper_pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] == "Z"
    assert not small.project().dataset("slow_out").exists()


def test_partitioned_output_is_written_per_partition(small):
    code = textwrap.dedent(
        """
        def run(inputs, variables):
            shops = inputs["shops"].copy()
            shops["sales_k"] = shops["monthly_sales"] / 1000
            shops["built_for"] = variables.get("partitions", "all")
            return shops
        """
    )
    _save(small, "shops_k", code, "shops_k", {"shops": "same"}, partitioned_by="opened")
    project = small.project()
    flow.build(project, "shops_k")
    assert project.dataset("shops_k").partitions() == ["2024-01-05", "2024-01-06", "2024-01-07"]
    run = flow.build(small.project(), "shops_k", ["2024-01-06"]).runs[0]
    assert run.partitions == ["2024-01-06"] and run.rows == 1
    frame = _rows(small, "shops_k")
    assert sorted(frame["built_for"]) == ["2024-01-06", "all", "all", "all"]

    (project.root / "recipes" / "shops_k.py").write_text(
        "def run(inputs, variables):\n    return inputs['shops'].drop(columns=['opened'])\n"
    )
    with pytest.raises(flow.FlowError, match="returned no 'opened' column"):
        flow.build(small.project(), "shops_k")
    assert len(_rows(small, "shops_k")) == 4


def test_code_that_cannot_be_a_recipe_is_refused_and_nothing_is_written(small):
    flow_yaml = (small.project().root / "flow.yaml").read_text()
    with pytest.raises(recipes.RecipeError, match=r"at line 2 \(return \(\): SyntaxError"):
        _save(small, "bad", "def run(inputs, variables):\n    return (\n", "bad_out")
    with pytest.raises(recipes.RecipeError, match=r"must define run\(inputs, variables\)"):
        _save(small, "bad", "def main():\n    pass\n", "bad_out")
    with pytest.raises(recipes.RecipeError, match="TIMEOUT must be a positive number"):
        _save(small, "bad", "TIMEOUT = 'x'\ndef run(i, v):\n    pass\n", "bad_out")
    assert (small.project().root / "flow.yaml").read_text() == flow_yaml
    assert not (small.project().root / "recipes" / "bad.py").exists()
    # A recipe keeps its language.
    _save(small, "city_sales", CITY_SALES, "city_sales")
    with pytest.raises(recipes.RecipeError, match="is a python recipe"):
        recipes.save_recipe(
            small.project(),
            "city_sales",
            "SELECT 1 AS x",
            {"shops": "all"},
            "city_sales",
            language="sql",
        )
    # A run() returning the wrong thing is caught when it runs.
    _save(small, "not_frame", "def run(inputs, variables):\n    return 3\n", "nf")
    with pytest.raises(flow.FlowError, match="returned int, not a pandas DataFrame"):
        flow.build(small.project(), "nf")


def test_preview_shows_first_rows_and_schema_or_the_failing_line(small):
    project = small.project()
    shown = recipes.preview(
        project, CITY_SALES, {"shops": "all"}, 2, "python", "city_sales", "city_sales"
    )
    assert list(shown.schema) == ["city", "monthly_sales", "currency"]
    assert shown.schema["monthly_sales"] == "DOUBLE" and len(shown.rows) == 2
    with pytest.raises(recipes.RecipeError) as failed:
        recipes.preview(project, BROKEN, {"shops": "all"}, language="python", name="city_sales")
    assert "at line 2" in str(failed.value)
    assert "line 7, in run" in failed.value.user_traceback


def test_the_build_step_of_a_scenario_runs_python_recipes(small):
    _save(small, "city_sales", CITY_SALES, "city_sales")
    project = small.project()
    (project.root / "scenarios").mkdir(exist_ok=True)
    (project.root / "scenarios" / "nightly.yaml").write_text(
        "name: nightly\nsteps:\n  - name: build\n    type: build\n    dataset: city_sales\n"
    )
    project = small.project()
    run_id = runs.request_run(small.store, "design", "shop", "nightly", "test")
    assert runs.claim_run(small.store, run_id, None)
    scenarios.execute(project, small.store, "design", run_id, None, actor="test")
    assert runs.get_run(small.store, run_id)["status"] == runs.SUCCESS
    assert len(_rows(small, "city_sales")) == 3


def test_cli_creates_previews_and_builds_a_python_recipe(small, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NODAL_HOME", str(small.settings.home))
    monkeypatch.setenv("NODAL_DATA_DIR", str(small.settings.data_dir))
    code_file = tmp_path / "city_sales.py"
    code_file.write_text(CITY_SALES)
    args = ["--project", "shop", "--input", "shops", "--python-file", str(code_file)]
    assert cli.main(["recipe", "preview", *args]) == 0
    assert "city VARCHAR" in capsys.readouterr().out
    assert cli.main(["recipe", "create", "city_sales", *args, "--output", "city_sales"]) == 0
    assert "recipes/city_sales.py" in capsys.readouterr().out
    assert cli.main(["recipe", "preview", "city_sales", "--project", "shop"]) == 0
    assert "currency" in capsys.readouterr().out
    assert cli.main(["flow", "build", "city_sales", "--project", "shop"]) == 0
    assert len(_rows(small, "city_sales")) == 3
    code_file.write_text(BROKEN)
    code = cli.main(["recipe", "preview", *args])
    err = capsys.readouterr().err
    assert code != 0 and "at line 2" in err and "line 7, in run" in err
