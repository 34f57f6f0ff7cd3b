"""A recipe's SQL (its Studio preview and its builds) reads and writes only the project's data
and the landing zone: reading a file of the host, copying to one, attaching a database,
installing an extension or changing DuckDB's settings is refused with a clear error and writes
nothing, while the flow's own recipes build as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core import yamltext
from engine.project import flow, recipes
from engine.storage import datasets as ds
from tests.engine.small_project import make_small


def _attacks(outside: Path) -> dict[str, str]:
    """SQL an attacker would try, each aimed at ``outside`` (a folder out of the project)."""
    secret = outside / "secret.csv"
    return {
        "read a host file": "SELECT * FROM read_csv('/etc/passwd')",
        "read a file next to the home": f"SELECT * FROM read_csv('{secret}')",
        "read a file by a relative path": "SELECT * FROM read_text('../outside/secret.csv')",
        "list a folder": "SELECT * FROM glob('/etc/*')",
        "copy to a file": f"COPY (SELECT 1) TO '{outside / 'x.csv'}'",
        "copy in a subquery's tail": f"SELECT 1) TO '{outside / 'y.csv'}'; SELECT (1",
        "two statements": f"SELECT 1; COPY (SELECT 1) TO '{outside / 'z.csv'}'",
        "attach a database": f"ATTACH '{outside / 'db.duckdb'}' AS evil",
        "install an extension": "INSTALL httpfs",
        "load an extension": "LOAD httpfs",
        "re-enable file access": "SET enable_external_access = true",
        "widen the allowed folders": "SET allowed_directories = ['/']",
        "a pragma": "PRAGMA enable_profiling",
        "export the database": f"EXPORT DATABASE '{outside / 'export'}'",
    }


@pytest.fixture
def small(tmp_path, monkeypatch):
    small = make_small(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.csv").write_text("secret\nthe bank's key\n")
    small.settings.data_dir.mkdir(exist_ok=True)
    monkeypatch.chdir(small.settings.data_dir)  # a relative path starts in the landing zone
    return small


def _written(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "outside").rglob("*") if p.name != "secret.csv")


def test_the_preview_refuses_sql_that_reaches_outside_the_project(small, tmp_path):
    project = small.project()
    for what, sql in _attacks(tmp_path / "outside").items():
        with pytest.raises(recipes.RecipeError) as caught:
            recipes.preview(project, sql, {"shops": "all"})
        message = str(caught.value)
        assert (
            "may only query data" in message
            or "must be one query" in message
            or "may read and write only the project's data and the landing zone" in message
            or "Parser Error" in message
        ), (what, message)
        assert "the bank's key" not in message and "root:" not in message, what
    assert _written(tmp_path) == []
    # What an analyst writes still previews, a file of the landing zone too.
    (small.settings.data_dir / "rates.csv").write_text("city,rate\nAustin,0.5\n")
    ok = recipes.preview(
        project,
        "SELECT s.city, r.rate FROM shops s JOIN read_csv('rates.csv') r USING (city)",
        {"shops": "all"},
    )
    assert sorted(ok.rows["city"]) == ["Austin", "Austin"]


def test_the_error_says_what_was_refused(small, tmp_path):
    project = small.project()
    with pytest.raises(recipes.RecipeError, match="a COPY statement is refused"):
        recipes.preview(project, f"COPY (SELECT 1) TO '{tmp_path / 'outside' / 'x.csv'}'", [])
    with pytest.raises(recipes.RecipeError, match="an? ATTACH statement is refused|ATTACH"):
        recipes.preview(project, "ATTACH ':memory:' AS other", ["shops"])
    with pytest.raises(recipes.RecipeError, match="SET statement is refused"):
        recipes.preview(project, "SET enable_external_access = true", ["shops"])
    with pytest.raises(recipes.RecipeError, match=r"landing zone .*/etc/passwd"):
        recipes.preview(project, "SELECT * FROM read_csv('/etc/passwd')", ["shops"])
    with pytest.raises(recipes.RecipeError, match="not 2 statements"):
        recipes.preview(project, "SELECT 1; SELECT 2", ["shops"])


def _hand_written_recipe(small, name: str, sql: str) -> None:
    """A recipe written straight into the project's files (as a bundle or an editor would),
    so that the build, not the save, is what meets it."""
    root = small.project().root
    (root / "recipes").mkdir(exist_ok=True)
    (root / "recipes" / f"{name}.sql").write_text(sql + "\n")
    entry = {"sql": f"recipes/{name}.sql", "inputs": {"shops": "all"}, "output": name}
    flow_text = (root / "flow.yaml").read_text()
    (root / "flow.yaml").write_text(yamltext.set_entry(flow_text, name, entry, "recipes"))
    datasets_text = (root / "datasets.yaml").read_text()
    (root / "datasets.yaml").write_text(
        yamltext.set_entry(datasets_text, name, {"kind": "managed"})
    )


def test_a_build_refuses_a_recipe_that_reaches_outside(small, tmp_path):
    attacks = _attacks(tmp_path / "outside")
    for i, sql in enumerate(attacks.values()):
        _hand_written_recipe(small, f"evil{i}", sql)
    project = small.project()
    for i, what in enumerate(attacks):
        with pytest.raises(flow.FlowError) as caught:
            flow.build(project, f"evil{i}")
        message = str(caught.value)
        assert f"recipe 'evil{i}'" in message, (what, message)
        assert (
            "may only query data" in message
            or "must be one query" in message
            or "may read and write only the project's data and the landing zone" in message
            or "Parser Error" in message
        ), (what, message)
        assert not project.dataset(f"evil{i}").exists(), what
    assert _written(tmp_path) == []
    assert [p.name for p in Path(small.settings.data_dir).glob("*.csv")] == ["shops.csv"]
    assert not (Path.cwd() / ".tmp").exists()  # DuckDB's default spill folder is not open


def test_the_flow_still_builds_and_leaves_no_spill_folder(small):
    project = small.project()
    recipes.save_recipe(
        project,
        "city_sales",
        "SELECT city, sum(monthly_sales) AS sales, count(*) AS shops FROM shops GROUP BY city",
        {"shops": "all"},
        "city_sales",
    )
    (run,) = flow.build(small.project(), "city_sales").runs
    assert run.rows == 3
    frame = ds.read_df(small.project().dataset("city_sales"))
    assert sorted(frame["city"]) == ["Austin", "Boston", "Denver"]
    staging = small.project().data_root / ds.STAGING_DIR
    assert not staging.exists() or not list(staging.iterdir())


def test_a_confined_session_cannot_be_unlocked(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (tmp_path / "allowed2").mkdir()
    with ds.session(confine_to=[allowed]) as con:
        con.execute(f"COPY (SELECT 1 AS a) TO '{allowed / 'a.parquet'}' (FORMAT parquet)")
        assert con.execute(f"SELECT a FROM read_parquet('{allowed / 'a.parquet'}')").fetchall()
        for sql in (
            "SET enable_external_access = true",
            "RESET enable_external_access",
            "SET lock_configuration = false",
            "SET allowed_directories = ['/']",
        ):
            with pytest.raises(Exception, match="locked"):
                con.execute(sql)
        # "/allowed" does not open "/allowed2" (a prefix of the name, not of the folder).
        with pytest.raises(Exception, match="Permission"):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'allowed2' / 'x.csv'}'")
    assert not (tmp_path / "allowed2" / "x.csv").exists()


def test_a_metric_s_sql_is_confined_too(small, tmp_path):
    from engine.project import metrics

    project = small.project()
    for what, sql in _attacks(tmp_path / "outside").items():
        spec = {"name": "m", "type": "sql", "sql": sql}
        with pytest.raises(metrics.MetricError) as caught:
            metrics.compute_value(project, "shops", spec)
        assert "the bank's key" not in str(caught.value), what
    assert _written(tmp_path) == []
    spec = {"name": "m", "type": "sql", "sql": "SELECT count(*) FROM dataset"}
    assert metrics.compute_value(project, "shops", spec).value == 1  # the newest day's rows
