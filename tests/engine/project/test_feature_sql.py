"""Feature recipes compiled for real time compute what DuckDB computes, or are refused
with the reason (engine/project/feature_sql.py)."""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.project import feature_sql
from engine.project.feature_sql import FeatureSqlError

EXAMPLE_SQL = (
    Path(__file__).resolve().parents[3] / "examples/fraud/recipes/features.sql"
).read_text()
TXN = {
    "transaction_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "card_id": "VARCHAR",
    "merchant_id": "VARCHAR",
    "merchant_category": "VARCHAR",
    "amount": "DOUBLE",
    "channel": "VARCHAR",
    "card_present": "BOOLEAN",
    "merchant_latitude": "DOUBLE",
    "merchant_longitude": "DOUBLE",
    "day": "DATE",  # the hive partition column the recipe passes through
}
PROFILE = {
    "card_id": "VARCHAR",
    "day": "DATE",
    "home_latitude": "DOUBLE",
    "home_longitude": "DOUBLE",
    "card_avg_amount": "DOUBLE",
    "card_txn_prev_day": "BIGINT",
    "card_txn_prev_7d": "BIGINT",
    "card_txn_rate_30d": "DOUBLE",
    "credit_score": "INTEGER",
    "account_open_date": "DATE",
}
# The card's windowed features (recipes/card_windows.yaml): a row computed live by the API.
WINDOWS = {
    "transaction_id": "VARCHAR",
    "card_txn_1h": "BIGINT",
    "card_amount_1h": "DOUBLE",
    "card_txn_24h": "BIGINT",
    "card_amount_24h": "DOUBLE",
    "card_seconds_since_last": "DOUBLE",
    "card_new_merchant_7d": "BOOLEAN",
}
WINDOWED = [
    "card_txn_1h",
    "card_amount_1h",
    "card_txn_24h",
    "card_amount_24h",
    "card_minutes_since_last",
    "card_new_merchant_7d",
]
EXAMPLE_FEATURES = [
    "amount",
    "hour_of_day",
    "distance_km",
    "amount_ratio",
    "card_txn_prev_day",
    "card_txn_prev_7d",
    "card_txn_rate_30d",
    "credit_score",
    "account_age_days",
    "card_present",
    "merchant_category",
    "channel",
]
# Another vocabulary, other functions: a shop's orders against its customers.
SHOP_SQL = """
SELECT
    o.order_id,
    CASE WHEN o.total >= 100 THEN 'big' WHEN o.total IS NULL THEN 'none' ELSE 'small' END AS size,
    coalesce(c.segment, 'unknown') AS segment,
    date_diff('hour', c.first_seen, o.placed_at) AS hours_since_first,
    dayofweek(o.placed_at) AS weekday,
    least(o.total, 500.0) AS capped_total,
    round(o.total / nullif(o.n_items, 0), 2) AS per_item,
    lower(o.channel) IN ('web', 'app') AS online,
    ln(o.total + 1) AS log_total,
    o.total * c.discount AS discount_amount
FROM orders o
LEFT JOIN customers c ON c.customer = o.customer
"""
ORDERS = {
    "order_id": "VARCHAR",
    "customer": "VARCHAR",
    "placed_at": "TIMESTAMP",
    "total": "DOUBLE",
    "n_items": "INTEGER",
    "channel": "VARCHAR",
}
CUSTOMERS = {
    "customer": "VARCHAR",
    "segment": "VARCHAR",
    "first_seen": "TIMESTAMP",
    "discount": "DOUBLE",
}
SHOP_FEATURES = [
    "size",
    "segment",
    "hours_since_first",
    "weekday",
    "capped_total",
    "per_item",
    "online",
    "log_total",
    "discount_amount",
]


def _duckdb_row(sql, tables, features):
    con = duckdb.connect()
    try:
        for name, (schema, row) in tables.items():
            cols = ", ".join(f'"{c}" {t}' for c, t in schema.items())
            con.execute(f'CREATE TABLE "{name}" ({cols})')
            if row is not None:
                con.execute(
                    f'INSERT INTO "{name}" VALUES ({", ".join("?" for _ in schema)})',
                    [row.get(c) for c in schema],
                )
        out = con.sql(sql).to_arrow_table().to_pylist()[0]
    finally:
        con.close()
    return {f: out[f] for f in features}


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _check(sql, request, request_schema, join_name, join_schema, row, features, keys, more=None):
    plan = feature_sql.plan(sql, request_schema, features, keys)
    raw = {k: (v.isoformat() if isinstance(v, (datetime, date)) else v) for k, v in request.items()}
    typed = feature_sql.typed_record(plan.request_fields, raw)
    joined = {join_name: (join_schema, row), **(more or {})}  # more: other joins' rows
    got = plan.compute(typed, tuple(joined[j.dataset][1] or {} for j in plan.joins))
    request_name = plan.request_dataset
    want = _duckdb_row(sql, {request_name: (request_schema, request), **joined}, features)
    for f in features:
        assert _same(got[f], want[f]), (f, got[f], want[f])


_finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_stamp = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2030, 12, 31))


@hsettings(max_examples=150, deadline=None, derandomize=True)
@given(
    lat=st.floats(min_value=-90, max_value=90),
    lon=st.floats(min_value=-180, max_value=180),
    amount=_finite,
    ts=_stamp,
    home=st.one_of(st.none(), st.tuples(st.floats(-90, 90), st.floats(-180, 180))),
    avg=st.one_of(st.none(), st.just(0.0), _finite),
    opened=st.dates(min_value=date(1990, 1, 1), max_value=date(2030, 1, 1)),
)
def test_the_example_recipe_compiles_to_what_duckdb_computes(
    lat, lon, amount, ts, home, avg, opened
):
    request = {
        "ts": ts,
        "card_id": "C1",
        "merchant_category": "grocery",
        "amount": amount,
        "channel": "online",
        "card_present": False,
        "merchant_latitude": lat,
        "merchant_longitude": lon,
        "day": ts.date(),
    }
    row = {
        "card_id": "C1",
        "day": ts.date(),
        "home_latitude": home[0] if home else None,
        "home_longitude": home[1] if home else None,
        "card_avg_amount": avg,
        "card_txn_prev_day": 2,
        "card_txn_prev_7d": 9,
        "card_txn_rate_30d": 1.4,
        "credit_score": 700,
        "account_open_date": opened,
    }
    keys = {
        "card_profiles": {"card_id": "card_id"},
        "card_windows": {"transaction_id": "transaction_id"},
    }
    windowed = {
        "transaction_id": "T1",
        "card_txn_1h": 1,
        "card_amount_1h": amount,
        "card_txn_24h": 3,
        "card_amount_24h": 120.5,
        "card_seconds_since_last": None if home is None else 754.0,
        "card_new_merchant_7d": None if avg is None else avg > 0,
    }
    _check(
        EXAMPLE_SQL,
        request | {"transaction_id": "T1", "merchant_id": "M1"},
        TXN,
        "card_profiles",
        PROFILE,
        row,
        EXAMPLE_FEATURES + WINDOWED,
        keys,
        {"card_windows": (WINDOWS, windowed)},
    )


@hsettings(max_examples=150, deadline=None, derandomize=True)
@given(
    total=st.one_of(st.none(), _finite),
    n_items=st.integers(min_value=-3, max_value=50),
    placed=_stamp,
    channel=st.sampled_from(["WEB", "app", "store", "Web "]),
    customer=st.one_of(
        st.none(),
        st.tuples(st.sampled_from(["gold", None]), _stamp, st.floats(0, 1)),
    ),
)
def test_another_vocabulary_compiles_to_what_duckdb_computes(
    total, n_items, placed, channel, customer
):
    order = {
        "order_id": "O1",
        "customer": "K1",
        "placed_at": placed,
        "total": total,
        "n_items": n_items,
        "channel": channel,
    }
    row = None
    if customer:
        row = {
            "customer": "K1",
            "segment": customer[0],
            "first_seen": customer[1],
            "discount": customer[2],
        }
    plan = feature_sql.plan(
        SHOP_SQL, ORDERS, SHOP_FEATURES, {"customers": {"customer": "customer"}}
    )
    if total is None:  # the contract needs every field the features read
        with pytest.raises(feature_sql.RecordError, match="missing feature"):
            feature_sql.typed_record(
                plan.request_fields, {**order, "placed_at": placed.isoformat()}
            )
        return
    _check(
        SHOP_SQL,
        order,
        ORDERS,
        "customers",
        CUSTOMERS,
        row,
        SHOP_FEATURES,
        {"customers": {"customer": "customer"}},
    )


def test_the_contract_is_what_the_model_features_read():
    keys = {
        "card_profiles": {"card_id": "card_id"},
        "card_windows": {"transaction_id": "transaction_id"},  # joined by the event id
    }
    plan = feature_sql.plan(EXAMPLE_SQL, TXN, EXAMPLE_FEATURES, keys)
    assert set(plan.request_fields) == {
        "transaction_id",
        "card_id",
        "ts",
        "amount",
        "merchant_latitude",
        "merchant_longitude",
        "card_present",
        "merchant_category",
        "channel",
    }
    assert plan.request_fields["ts"] == "timestamp"
    only = feature_sql.plan(EXAMPLE_SQL, TXN, ["amount"], keys)
    # join keys and conditions (the windows' own fields are added by the package builder)
    assert set(only.request_fields) == {"transaction_id", "card_id", "ts", "amount"}


def test_a_feature_named_like_the_examples_gets_its_own_formula():
    sql = "SELECT t.minutes / 60 AS hour_of_day, t.km * 1000 AS distance_km FROM trips t"
    plan = feature_sql.plan(
        sql, {"minutes": "DOUBLE", "km": "DOUBLE"}, ["hour_of_day", "distance_km"]
    )
    rec = feature_sql.typed_record(plan.request_fields, {"minutes": 90, "km": 1.5})
    assert plan.compute(rec, ()) == {"hour_of_day": 1.5, "distance_km": 1500.0}


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT count(*) AS x FROM t", "COUNT is not supported in real time"),
        ("SELECT sum(t.a) OVER () AS x FROM t", "not supported in real time"),
        ("SELECT my_udf(t.a) AS x FROM t", "my_udf() is not supported in real time"),
        ("SELECT t.a AS x FROM t WHERE t.a > 1", "cannot use a WHERE clause"),
        ("SELECT t.a AS x FROM t GROUP BY t.a", "cannot use GROUP BY"),
        ("SELECT t.a AS x FROM t JOIN u ON u.k = t.k", "LEFT JOIN"),
        ("SELECT t.a AS x FROM t LEFT JOIN u ON u.v > t.a", "needs at least one equality"),
        (
            "SELECT t.a AS x FROM t LEFT JOIN u ON u.k = t.k LEFT JOIN w ON w.k = t.k AND w.v = u.v",
            "request columns only",
        ),
        ("SELECT t.b AS x FROM t", "no column 'b'"),
        ("SELECT t.a AS y FROM t", "outputs no column 'x'"),
        ("SELECT * FROM t", "columns instead of [*]"),
        ("SELECT 1 AS x; SELECT 2 AS x", "one SELECT statement"),
        ("SELEC x", "one SELECT statement"),
    ],
)
def test_what_real_time_cannot_run_is_refused_with_the_reason(sql, reason):
    with pytest.raises(FeatureSqlError, match=reason.replace("()", r"\(\)")):
        feature_sql.plan(sql, {"a": "DOUBLE", "k": "VARCHAR"}, ["x"])


def test_the_joins_keys_must_be_the_endpoints_lookup_keys():
    sql = "SELECT p.score AS s FROM t LEFT JOIN p ON p.id = t.customer"
    with pytest.raises(
        FeatureSqlError, match="joins p on customer=id but the endpoint looks it up by"
    ):
        feature_sql.plan(sql, {"customer": "VARCHAR"}, ["s"], {"p": {"id": "id"}})
    with pytest.raises(FeatureSqlError, match="declares no enrichment of it"):
        feature_sql.plan(sql, {"customer": "VARCHAR"}, ["s"], {})
