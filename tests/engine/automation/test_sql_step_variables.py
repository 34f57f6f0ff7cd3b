"""Every scenario variable in a ``sql`` step is a bound parameter, never SQL text
(engine/automation/sql_binding.py): quoted, inside a longer literal (a path), unquoted, or
typed; a hostile value is a value (or a type error), never a statement; in comments
placeholders stay text."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.automation import runs, scenarios
from engine.automation.sql_binding import SqlVariableError, bind_variables
from engine.storage import datasets as ds
from tests.engine.small_project import make_small

EVIL = "x'); COPY (SELECT 42 AS x) TO 'pwned.csv'; --"


def _run(small, project, sql: str) -> tuple[str, dict]:
    spec = {"name": "probe", "steps": [{"name": "q", "type": "sql", "sql": sql, "output": "out"}]}
    project.scenarios["probe"] = spec
    run_id = runs.request_run(small.store, "node-a", project.name, "probe", "manual", {})
    assert runs.claim_run(small.store, run_id, None)
    status = scenarios.execute(project, small.store, "node-a", run_id, None)
    return status, runs.get_run(small.store, run_id)


@pytest.fixture
def small_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a relative COPY … TO would write
    small = make_small(tmp_path)
    with open(small.project().root / "datasets.yaml", "a") as fh:
        fh.write("out:\n  kind: managed\n")
    project = small.project()
    shops = project.dataset("shops")
    project.variables.update(
        {
            "label": EVIL,
            "folder": str(shops.partition_path(shops.partitions()[0])),
            "n": "2",
            "since": "2024-01-06",
            "note": "fine\nCOPY (SELECT 1 AS x) TO 'pwned.csv'",
        }
    )
    return small, project


def test_hostile_values_are_values_wherever_the_variable_stands(small_project, tmp_path):
    small, project = small_project
    sql = (
        "SELECT '{label}' AS label, 'label: {label}' AS prefixed, {n} + 1 AS n1, "
        "DATE '{since}' AS since, count(*) AS rows\n"
        "FROM read_parquet('{folder}/*.parquet') -- read {note}\n"
        "/* {label} */ WHERE '{label}' <> 'x' LIMIT {n}"
    )
    status, run = _run(small, project, sql)
    assert status == runs.SUCCESS, run["message"]
    frame = ds.read_df(project.dataset("out"))
    assert frame["label"].tolist() == [EVIL]
    assert frame["prefixed"].tolist() == ["label: " + EVIL]
    assert frame["n1"].tolist() == [3]
    assert frame["since"].astype(str).tolist() == ["2024-01-06"]
    assert frame["rows"].tolist() == [2]  # 2024-01-05's two shops
    assert not list(tmp_path.glob("pwned*"))


@pytest.mark.parametrize(
    "variable,value",
    [
        ("n", "1; COPY (SELECT 42 AS x) TO 'pwned.csv'"),  # unquoted: LIMIT {n}
        ("folder", "/nowhere/*.parquet') ; COPY (SELECT 42 AS x) TO 'pwned.csv'; --"),
    ],
)
def test_a_hostile_value_where_sql_expects_a_number_or_a_path_fails_the_step_inertly(
    small_project, tmp_path, variable, value
):
    small, project = small_project
    project.variables[variable] = value
    sql = "SELECT count(*) AS rows FROM read_parquet('{folder}/*.parquet') LIMIT {n}"
    status, run = _run(small, project, sql)
    assert status == runs.FAILED, run["message"]
    assert not list(tmp_path.glob("pwned*"))
    assert not project.dataset("out").exists()


def test_a_variable_in_an_identifier_or_unknown_is_a_clear_error():
    with pytest.raises(SqlVariableError, match=r'inside the identifier "col_\{n\}"'):
        bind_variables('SELECT 1 AS "col_{n}"', {"n": "1"}, "step q")
    with pytest.raises(SqlVariableError, match=r"step q: unknown variable \{nope\}"):
        bind_variables("SELECT '{nope}'", {}, "step q")


def test_the_bound_text_names_parameters_only():
    sql, params = bind_variables(
        "SELECT TIMESTAMP '{d} 00:00:00', 'it''s {d}', {x} -- {x}\n/* '{x}' */",
        {"d": "2024-01-01", "x": EVIL},
        "step q",
    )
    assert sql == (
        "SELECT CAST(($d || ' 00:00:00') AS TIMESTAMP), ('it''s ' || $d), $x__value -- {x}\n"
        "/* '{x}' */"
    )
    assert params == {"d": "2024-01-01", "x__value": EVIL}


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "COPY (SELECT 1 AS x) TO '/tmp/nodal-sql-step-escape.csv'",
        "ATTACH '/tmp/nodal-sql-step.db' AS other",
    ],
)
def test_a_sql_step_reads_and_writes_only_the_projects_data_and_the_landing_zone(
    small_project, sql
):
    small, project = small_project
    project.scenarios["probe"] = {
        "name": "probe",
        "steps": [{"name": "q", "type": "sql", "sql": sql}],
    }
    run_id = runs.request_run(small.store, "node-a", project.name, "probe", "manual", {})
    assert runs.claim_run(small.store, run_id, None)
    status = scenarios.execute(project, small.store, "node-a", run_id, None)
    assert status == runs.FAILED, runs.get_run(small.store, run_id)["message"]
    assert not any(
        p.exists() for p in (Path("/tmp/nodal-sql-step-escape.csv"), Path("/tmp/nodal-sql-step.db"))
    )
