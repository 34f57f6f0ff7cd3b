"""Column checks as pandera schemas validated inside DuckDB: same verdicts as the
hand-written checks on the fraud example's partitions, every new kind on the second example
(an online shop's orders), failures in the user's words, safe row conditions, pandera YAML
export and import."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from engine.project import checks, pandera_checks
from engine.project.project import load_project
from engine.storage import datasets as ds
from engine.storage.control import check_results, open_store
from nodal_demo import returns
from nodal_demo.datagen import GeneratorConfig, generate
from tests.conftest import EXAMPLE

RETURNS = Path(__file__).resolve().parents[3] / "examples" / "returns"

# --- the hand-written checks as they were before pandera (the reference for verdicts) ---


def _ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def before_value_in_set(ref: ds.DatasetRef, partition: str, spec: dict[str, Any]) -> bool:
    column, allowed = spec["column"], [str(v) for v in spec.get("values") or []]
    c = _ident(column)
    with ds.session({"d": (ref, [partition])}) as con:
        con.register("allowed", pd.DataFrame({"v": allowed}))
        bad, _ = con.execute(
            f"SELECT count(*), list(DISTINCT CAST({c} AS VARCHAR))[1:5] FROM d "
            f"WHERE {c} IS NOT NULL AND CAST({c} AS VARCHAR) NOT IN (SELECT v FROM allowed)"
        ).fetchone()
    return not bad


def before_schema_equals(ref: ds.DatasetRef, partition: str, declared: dict[str, str]) -> bool:
    actual = ds.schema(ref, partition)
    actual.pop(ref.partitioned_by or "", None)
    new = [c for c in actual if c not in declared]
    missing = [c for c in declared if c not in actual]
    retyped = [c for c in declared if c in actual and actual[c] != declared[c]]
    return not (new or missing or retyped)


@pytest.fixture(scope="module")
def fraud(tmp_path_factory):
    """The fraud example on 12 days: unseen merchants from day 9, an extra column from
    day 10, and a retyped, a renamed and an all-null column on the last day."""
    root = tmp_path_factory.mktemp("parity")
    cfg = dataclasses.replace(
        GeneratorConfig(n_cards=300, n_merchants=150, n_days=12, txns_per_day=800),
        unseen_merchants_from_day=9,
        extra_column_from_day=10,
    )
    summary = generate(cfg, root / "data")
    last = next((root / "data" / "transactions" / f"day={summary.days[-1]}").glob("*.parquet"))
    table = pq.read_table(last)
    i = table.schema.get_field_index("amount")
    table = table.set_column(i, "amount", pa.compute.cast(table.column("amount"), pa.float32()))
    j = table.schema.get_field_index("channel")
    table = table.set_column(j, "channel", pa.nulls(table.num_rows, pa.string()))
    table = table.rename_columns(["card" if c == "card_id" else c for c in table.column_names])
    pq.write_table(table, last)
    project = load_project(EXAMPLE, root / "managed", {"data_dir": str(root / "data")})
    store = open_store(f"sqlite:///{root / 'control.db'}")
    return project, store, summary.days


def test_every_former_check_type_gives_the_same_verdict_on_the_examples_partitions(fraud):
    project, store, days = fraud
    ref = project.dataset("transactions")
    declared = project.datasets["transactions"].schema
    first = ds.read_df(ref, [days[0]])
    channels = sorted(first["channel"].dropna().unique())
    merchants = sorted(first["merchant_id"].unique())
    specs = [
        {"name": "schema", "type": "schema_equals"},
        {"name": "channels", "type": "value_in_set", "column": "channel", "values": channels},
        {"name": "one_less", "type": "value_in_set", "column": "channel", "values": channels[1:]},
        {"name": "merchants", "type": "value_in_set", "column": "merchant_id", "values": merchants},
        {"name": "present", "type": "value_in_set", "column": "card_present", "values": ["true"]},
        {"name": "amounts", "type": "value_in_set", "column": "amount", "values": ["1.0"]},
    ]
    project.checks["transactions"] = specs
    seen: dict[str, set[bool]] = {s["name"]: set() for s in specs}
    for day in days:
        got = {r.name: r for r in checks.run_checks(project, "transactions", day, store, "t")}
        for spec in specs:
            if spec["type"] == "schema_equals":
                expected = before_schema_equals(ref, day, declared)
            else:
                expected = before_value_in_set(ref, day, spec)
            passed = got[spec["name"]].outcome == checks.OK
            assert passed == expected, (day, spec["name"], got[spec["name"]].message)
            seen[spec["name"]].add(passed)
    # Failing partitions were among them: each kind both passed and failed somewhere.
    assert seen["schema"] == {True, False} and seen["merchants"] == {True, False}
    assert False in seen["one_less"] and seen["present"] == {False}  # (all-null channel passes)
    last = {r.name: r for r in checks.run_checks(project, "transactions", days[-1], store, "t")}
    assert last["schema"].message == (
        "new columns: card, device_id; missing columns: card_id; retyped: amount DOUBLE→FLOAT"
    )


# --- the new kinds on the second example --------------------------------------------------


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The returns example's orders on 4 days; the last day has bad rows."""
    root = tmp_path_factory.mktemp("shop")
    cfg = dataclasses.replace(returns.ReturnsConfig(), n_days=4, orders_per_day=300)
    returns.generate(cfg, root / "data")
    project = load_project(RETURNS, root / "managed", {"data_dir": str(root / "data")})
    store = open_store(f"sqlite:///{root / 'control.db'}")
    days = project.dataset("orders").partitions()
    path = next((root / "data" / "orders" / f"day={days[-1]}").glob("*.parquet"))
    t = pq.read_table(path)

    def replace(name: str, values: list, typ: pa.DataType) -> None:
        nonlocal t
        t = t.set_column(t.schema.get_field_index(name), name, pa.array(values, typ))

    quantity = t.column("quantity").to_pylist()
    for i in range(20):  # more failing values than are shown
        quantity[10 + i] = -i
    ids = t.column("order_id").to_pylist()
    ids[5], ids[9], ids[11] = ids[4], "bad", None
    price = t.column("price").to_pylist()
    price[2] = -5.0
    category = t.column("category").to_pylist()
    category[1] = "garden"
    replace("quantity", quantity, pa.int32())
    replace("order_id", ids, pa.string())
    replace("price", price, pa.float64())
    replace("category", category, pa.string())
    pq.write_table(t, path)
    return project, store, days


def test_every_new_kind_passes_a_clean_day_of_the_second_example(shop):
    project, store, days = shop
    results = checks.run_checks(project, "orders", days[0], store, "design")
    assert {r.outcome for r in results} == {checks.OK}, [r.message for r in results]
    kinds = {s["type"] for s in project.checks["orders"]}
    assert {"not_null", "unique", "matches", "in_range", "row_condition"} <= kinds


def test_a_failed_check_says_which_check_column_how_many_rows_and_a_few_values(shop):
    project, store, days = shop
    got = {r.name: r for r in checks.run_checks(project, "orders", days[-1], store, "design")}
    assert got["order_id_present"].outcome == checks.ERROR
    assert got["order_id_present"].message == "1 row: order_id has missing values"
    assert got["order_id_unique"].details["failing_rows"] == 2
    (dup,) = got["order_id_unique"].details["examples"]
    assert dup.startswith("O") and got["order_id_unique"].message.endswith(f"e.g. {dup}")
    assert got["order_id_format"].message == "1 row: order_id not matching '^O[0-9]{8}$', e.g. bad"
    q = got["quantity_positive"]
    assert q.outcome == checks.ERROR and q.details["failing_rows"] == 20
    assert q.details["column"] == "quantity" and len(q.details["examples"]) == 5
    assert q.message.startswith("20 rows: quantity outside >= 1, e.g. ")
    # a warning check warns; the row condition shows the row's columns it reads
    assert got["known_categories"].outcome == checks.WARNING
    assert got["known_categories"].details["examples"] == ["garden"]
    rule = got["price_positive_unless_free_gift"]
    assert rule.outcome == checks.ERROR
    assert rule.message.endswith("does not hold, e.g. price=-5.0, discount_pct=0.0")
    assert got["discount_is_a_percentage"].outcome == checks.OK
    # recorded with its details in the control store
    with store.read() as conn:
        rows = conn.execute(
            sa.select(check_results.c.check_name, check_results.c.details).where(
                check_results.c.partition == days[-1]
            )
        ).all()
    details = {name: json.loads(d) for name, d in rows}
    assert details["quantity_positive"]["failing_rows"] == 20
    assert details["quantity_positive"]["kind"] == "in_range"
    assert len(details["quantity_positive"]["examples"]) == 5


def test_checks_read_the_partition_inside_duckdb_not_in_pandas(shop, monkeypatch):
    project, store, days = shop

    def no_pandas(*args, **kwargs):
        raise AssertionError("a partition was read into pandas")

    monkeypatch.setattr(ds, "read_df", no_pandas)
    monkeypatch.setattr(ds, "query_df", no_pandas)
    results = checks.run_checks(project, "orders", days[-1], store, "design")
    assert len(results) == len(project.checks["orders"])


def test_a_dtype_check_and_a_missing_column(shop):
    project, store, days = shop
    project = dataclasses.replace(
        project,
        checks={
            "orders": [
                {"name": "qty_int", "type": "dtype", "column": "quantity", "dtype": "INTEGER"},
                {"name": "qty_big", "type": "dtype", "column": "quantity", "dtype": "BIGINT"},
                {"name": "gone", "type": "not_null", "column": "coupon"},
            ]
        },
    )
    got = {r.name: r for r in checks.run_checks(project, "orders", days[0], store, "design")}
    assert got["qty_int"].outcome == checks.OK
    assert got["qty_big"].outcome == checks.ERROR
    assert got["qty_big"].message == "quantity is INTEGER, expected BIGINT"
    assert got["gone"].outcome == checks.ERROR and "coupon" in got["gone"].message


# --- row conditions are expressions, nothing else ------------------------------------------


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("price > (SELECT max(price) FROM orders)", "subqueries"),
        ("price > 0; DROP TABLE orders", "one expression"),
        ("sum(price) > 0", "aggregate"),
        ("read_csv('/etc/passwd') IS NULL", "function 'read_csv' is not allowed"),
        ("getenv('HOME') = 'x'", "function 'getenv' is not allowed"),
        ("o.price > 0", "without a table name"),
        ("coupon > 0", "no column 'coupon'"),
        ("1 = 1", "reads no column"),
        ("row_number() OVER () > 1", "aggregate or window"),
    ],
)
def test_a_row_condition_that_is_not_a_pure_expression_is_refused(tmp_path, expression, reason):
    root = tmp_path / "p"
    shutil.copytree(RETURNS, root)
    (root / "checks.yaml").write_text("")
    project = load_project(root, tmp_path / "m", {"data_dir": str(tmp_path / "nodata")})
    with pytest.raises(checks.CheckError, match=reason):
        checks.add_check(
            project,
            "orders",
            {"name": "rule", "type": "row_condition", "expression": expression},
        )
    assert (root / "checks.yaml").read_text() == ""


def test_a_row_condition_runs_the_regenerated_sql_only():
    sql, used = pandera_checks.row_expression(
        "price > 0 or discount_pct = 100", ["price", "discount_pct"]
    )
    assert sql == "price > 0 OR discount_pct = 100" and used == ["price", "discount_pct"]


# --- pandera YAML ---------------------------------------------------------------------------


def test_schemas_export_as_pandera_yaml_and_import_into_checks(shop, tmp_path):
    from pandera.io.pandas_io import from_yaml

    project, store, days = shop
    text = checks.export_schema(project, "orders")
    schema = from_yaml(text)  # pandera reads it back
    assert schema.columns["order_id"].unique and not schema.columns["order_id"].nullable
    assert set(yaml.safe_load(text)["columns"]) >= set(project.datasets["orders"].schema)
    assert "price_positive_unless_free_gift (row_condition)" in schema.description

    root = tmp_path / "copy"
    shutil.copytree(RETURNS, root)
    (root / "checks.yaml").write_text("# imported\n")
    fresh = load_project(root, project.data_root.parent, project.variables)
    names = checks.import_schema(fresh, "orders", text)
    fresh = load_project(root, project.data_root.parent, project.variables)
    declared = {s["name"]: s for s in fresh.checks["orders"]}
    assert set(names) == set(declared)
    assert declared["order_id_type"] == {
        "name": "order_id_type",
        "type": "dtype",
        "column": "order_id",
        "dtype": "VARCHAR",
        "severity": "error",
    }
    assert {"quantity_positive", "order_id_format", "known_categories"} <= set(declared)
    # The imported checks judge the data as the originals do.
    failing = {
        r.name
        for r in checks.run_checks(fresh, "orders", days[-1], store, "design")
        if r.outcome != checks.OK
    }
    assert {
        "order_id_not_null",
        "order_id_unique",
        "order_id_format",
        "quantity_positive",
    } <= failing
    assert "placed_at_type" not in failing
    # Importing again is refused as a whole, naming the taken names.
    with pytest.raises(checks.CheckError, match="already has checks"):
        checks.import_schema(fresh, "orders", text)


def test_a_pandera_check_nodal_cannot_run_in_duckdb_is_refused_at_import(shop):
    project, _, _ = shop
    text = "schema_type: dataframe\nversion: 0.35.0\ncolumns:\n  price:\n    dtype: float64\n    nullable: true\n    checks:\n      str_length: {min_value: 1, max_value: 3}\n"
    with pytest.raises(checks.CheckError, match="'str_length' has no nodal equivalent"):
        checks.import_schema(project, "orders", text)


def test_schema_equals_compares_types_pandera_cannot_represent_by_their_duckdb_name(tmp_path):
    import duckdb

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "project.yaml").write_text("name: tags\n")
    (tmp_path / "p" / "flow.yaml").write_text("recipes: {}\n")
    folder = tmp_path / "data" / "things"
    folder.mkdir(parents=True)
    duckdb.sql(f"COPY (SELECT 1::BIGINT AS n, ['a', 'b'] AS tags) TO '{folder / 'data.parquet'}'")

    def run(tags_type: str) -> checks.CheckResult:
        (tmp_path / "p" / "datasets.yaml").write_text(
            'things:\n  kind: source\n  path: "{data_dir}/things"\n'
            f"  schema: {{n: BIGINT, tags: '{tags_type}'}}\n"
        )
        (tmp_path / "p" / "checks.yaml").write_text(
            "things:\n  - {name: same, type: schema_equals}\n"
        )
        project = load_project(tmp_path / "p", tmp_path / "m", {"data_dir": str(tmp_path / "data")})
        store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
        (result,) = checks.run_checks(project, "things", None, store, "design")
        return result

    assert run("VARCHAR[]").outcome == checks.OK
    wrong = run("INTEGER[]")
    assert wrong.outcome == checks.ERROR and wrong.message == "retyped: tags INTEGER[]→VARCHAR[]"
    project = load_project(tmp_path / "p", tmp_path / "m", {"data_dir": str(tmp_path / "data")})
    with pytest.raises(checks.CheckError, match="'NOTATYPE' is not a DuckDB type"):
        checks.add_check(
            project, "things", {"name": "t", "type": "dtype", "column": "n", "dtype": "NOTATYPE"}
        )


def test_the_cli_offers_exactly_the_engines_check_kinds():
    # The CLI spells them out so that `nodal --help` does not import pandera.
    from engine.cli import quality
    from engine.project import checks

    assert set(quality.CHECK_TYPES) == set(checks.CHECK_TYPES)
