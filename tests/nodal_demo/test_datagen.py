"""The example data generator: schemas, determinism, truth quality, label delays, knobs."""

from __future__ import annotations

import dataclasses
import functools
import json
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from engine.core.us_cities import CITY_BY_NAME, US_CITIES
from engine.storage.datasets import query_df, read_df, schema
from nodal_demo.datagen import (
    CARDS,
    LABELS,
    MERCHANTS,
    TRANSACTION_COLUMNS,
    TRANSACTIONS,
    TRUTH,
    GenerationSummary,
    GeneratorConfig,
    dataset_refs,
    generate,
    haversine_km,
    history_features,
)

SMALL = GeneratorConfig(n_cards=400, n_merchants=100, n_days=12, txns_per_day=600)
KNOBS = GeneratorConfig(
    ring_city="Miami", ring_start_day=20, unseen_merchants_from_day=30, extra_column_from_day=35
)


def _day(cfg: GeneratorConfig, i: int) -> str:
    return str(cfg.start_day + timedelta(days=i))


def _read(out: Path, name: str) -> pd.DataFrame:
    """A dataset sorted by its natural key, so equal data compares equal (a private copy)."""
    return _read_cached(out, name).copy()


@functools.cache
def _read_cached(out: Path, name: str) -> pd.DataFrame:
    df = read_df(dataset_refs(out)[name])
    key = {CARDS: "card_id", MERCHANTS: "merchant_id"}.get(name, "transaction_id")
    return df.sort_values(key).reset_index(drop=True)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("default")
    return out, generate(GeneratorConfig(), out)


@pytest.fixture(scope="module")
def knobs_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("knobs")
    generate(KNOBS, out)
    return out


# --------------------------------------------------------------------------------------
# Cities
# --------------------------------------------------------------------------------------


def test_us_cities_are_real_looking_and_unique() -> None:
    assert 55 <= len(US_CITIES) <= 80
    assert len(CITY_BY_NAME) == len(US_CITIES)  # names are unique (the ring knob uses them)
    for c in US_CITIES:
        assert len(c.state) == 2 and c.state.isupper()
        assert 18 < c.latitude < 65 and -160 < c.longitude < -65
        assert c.population > 30_000
    ny, la = CITY_BY_NAME["New York"], CITY_BY_NAME["Los Angeles"]
    assert 3900 < haversine_km(ny.latitude, ny.longitude, la.latitude, la.longitude) < 4000


# --------------------------------------------------------------------------------------
# Schemas and content
# --------------------------------------------------------------------------------------


def test_schemas(default_run: tuple[Path, GenerationSummary]) -> None:
    out, summary = default_run
    refs = dataset_refs(out)
    assert schema(refs[CARDS]) == {
        "card_id": "VARCHAR",
        "home_city": "VARCHAR",
        "home_state": "VARCHAR",
        "home_latitude": "DOUBLE",
        "home_longitude": "DOUBLE",
        "credit_score": "INTEGER",
        "account_open_date": "DATE",
    }
    assert schema(refs[MERCHANTS]) == {
        "merchant_id": "VARCHAR",
        "merchant_name": "VARCHAR",
        "merchant_category": "VARCHAR",
        "city": "VARCHAR",
        "state": "VARCHAR",
        "merchant_latitude": "DOUBLE",
        "merchant_longitude": "DOUBLE",
    }
    tx = schema(refs[TRANSACTIONS], summary.days[0])
    assert list(tx) == [*TRANSACTION_COLUMNS, "day"]  # exact order, no label; day = the key
    assert [tx[c] for c in ("ts", "amount", "card_present", "merchant_latitude")] == [
        "TIMESTAMP",
        "DOUBLE",
        "BOOLEAN",
        "DOUBLE",
    ]
    assert schema(refs[LABELS]) == {
        "transaction_id": "VARCHAR",
        "tx_day": "DATE",
        "is_fraud": "INTEGER",
        "day": "DATE",
    }
    assert schema(refs[TRUTH]) == {
        "transaction_id": "VARCHAR",
        "true_fraud_proba": "DOUBLE",
        "is_fraud": "INTEGER",
        "day": "DATE",
    }
    assert refs[TRANSACTIONS].partitions() == summary.days == refs[TRUTH].partitions()
    assert summary.days[0] == "2026-10-01" and len(summary.days) == 40


def test_cards_and_merchants_content(default_run: tuple[Path, GenerationSummary]) -> None:
    out, _ = default_run
    cfg = GeneratorConfig()
    cards, merchants = _read(out, CARDS), _read(out, MERCHANTS)
    assert len(cards) == cfg.n_cards and cards.card_id.is_unique
    assert cards.card_id.iloc[0] == "C0000001" and cards.card_id.str.fullmatch(r"C\d{7}").all()
    assert cards.credit_score.between(300, 850).all() and cards.credit_score.std() > 30
    assert (pd.to_datetime(cards.account_open_date) < pd.Timestamp(cfg.start_day)).all()
    assert len(merchants) == cfg.n_merchants and merchants.merchant_id.is_unique
    assert merchants.merchant_id.iloc[0] == "M000001"
    assert merchants.merchant_category.nunique() >= 10
    assert merchants.city.nunique() == len(US_CITIES)  # every city has a merchant
    for df, city, lat, lon in (
        (cards, "home_city", "home_latitude", "home_longitude"),
        (merchants, "city", "merchant_latitude", "merchant_longitude"),
    ):
        centre = df[city].map(CITY_BY_NAME)
        km = haversine_km(
            df[lat], df[lon], centre.map(lambda c: c.latitude), centre.map(lambda c: c.longitude)
        )
        assert km.max() < 30 and km.mean() > 1  # jittered a few km around the city
    # Cards live where people live: New York holds many more cards than Billings.
    counts = cards.home_city.value_counts()
    assert counts.get("New York", 0) > 5 * counts.get("Billings", 0)


def test_transactions_content(default_run: tuple[Path, GenerationSummary]) -> None:
    out, summary = default_run
    tx = _read(out, TRANSACTIONS)
    assert len(tx) == summary.n_transactions and tx.transaction_id.is_unique
    assert tx.transaction_id.iloc[0] == "T00000000000"
    assert (tx.ts.dt.normalize() == tx.day).all()  # every ts falls within its partition day
    assert (tx.amount > 0).all() and np.allclose(tx.amount * 100, np.round(tx.amount * 100))
    assert set(tx.channel) == {"in_store", "online", "contactless"}
    assert (tx.card_present == (tx.channel != "online")).all()
    cards, merchants = _read(out, CARDS), _read(out, MERCHANTS)
    assert set(tx.card_id) <= set(cards.card_id) and set(tx.merchant_id) <= set(
        merchants.merchant_id
    )
    # Category and location come from the merchant.
    joined = tx.merge(merchants, on="merchant_id", suffixes=("", "_m"))
    assert (joined.merchant_category == joined.merchant_category_m).all()
    assert (joined.merchant_latitude == joined.merchant_latitude_m).all()
    # Most spending happens in the card's home city, in daytime.
    joined = joined.merge(cards, on="card_id")
    assert (joined.city == joined.home_city).mean() > 0.7
    assert tx.ts.dt.hour.between(8, 21).mean() > 0.75
    # Weekday volume varies a little, not a lot.
    per_day = tx.groupby("day").size()
    assert per_day.min() / per_day.mean() > 0.8 and per_day.max() / per_day.mean() < 1.2


def test_generator_json(default_run: tuple[Path, GenerationSummary]) -> None:
    out, summary = default_run
    doc = json.loads((out / "generator.json").read_text())
    assert doc["config"]["start_day"] == "2026-10-01"
    assert doc["config"] == {
        **dataclasses.asdict(GeneratorConfig()),
        "start_day": "2026-10-01",
    }
    assert doc["summary"]["n_transactions"] == summary.n_transactions
    assert doc["summary"]["n_fraud"] == summary.n_fraud
    assert doc["summary"]["days"] == summary.days


# --------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------


def test_same_config_same_data(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate(SMALL, a)
    generate(SMALL, b)
    for name in (CARDS, MERCHANTS, TRANSACTIONS, LABELS, TRUTH):
        pd.testing.assert_frame_equal(_read(a, name), _read(b, name))
    other = tmp_path / "other"
    generate(dataclasses.replace(SMALL, seed=SMALL.seed + 1), other)
    assert not _read(a, TRANSACTIONS).equals(_read(other, TRANSACTIONS))


def test_prefix_is_stable_when_adding_days(tmp_path: Path) -> None:
    short, long = tmp_path / "short", tmp_path / "long"
    generate(dataclasses.replace(SMALL, n_days=10), short)
    generate(SMALL, long)
    for name in (CARDS, MERCHANTS):
        pd.testing.assert_frame_equal(_read(short, name), _read(long, name))
    first = [_day(SMALL, i) for i in range(10)]
    for name in (TRANSACTIONS, TRUTH):
        got = read_df(dataset_refs(long)[name], partitions=first)
        got = got.sort_values("transaction_id").reset_index(drop=True)
        pd.testing.assert_frame_equal(_read(short, name), got)
    # Labels that had arrived by day 10 are exactly those of the 10-day run.
    long_labels = _read(long, LABELS)
    long_labels = long_labels[long_labels.day <= pd.Timestamp(first[-1])].reset_index(drop=True)
    pd.testing.assert_frame_equal(_read(short, LABELS), long_labels)
    assert len(_read(long, LABELS)) > len(long_labels)  # the two extra days brought labels


def test_history_features_only_look_backwards() -> None:
    card = np.array([0, 0, 0, 1, 0, 0])
    t = np.array([0, 100, 86_450, 50, 86_450, 200_000])
    cents = np.array([1000, 3000, 2000, 500, 8000, 100])
    f = history_features(card, t, cents)
    assert f["n_prior"].tolist() == [0, 1, 2, 0, 3, 4]
    # 24 h window: row 2 sees t=100 but not t=0 (86450 s > 24 h); row 4 (same t) also row 2.
    assert f["n_24h"].tolist() == [0, 1, 1, 0, 2, 0]
    # amount vs mean of strictly earlier amounts: 3000/1000, 2000/2000, 8000/2000.
    assert np.allclose(f["amount_ratio"], [1.0, 3.0, 1.0, 1.0, 4.0, 100 / 3500])
    assert f["gap_s"][1] == 100 and f["gap_s"][4] == 0


# --------------------------------------------------------------------------------------
# Truth and labels
# --------------------------------------------------------------------------------------


def test_fraud_rate_and_truth_auc(default_run: tuple[Path, GenerationSummary]) -> None:
    out, summary = default_run
    truth = _read(out, TRUTH)
    rate = truth.is_fraud.mean()
    assert 0.005 <= rate <= 0.02
    assert summary.n_fraud == truth.is_fraud.sum() and summary.fraud_rate == pytest.approx(rate)
    auc = roc_auc_score(truth.is_fraud, truth.true_fraud_proba)
    assert 0.88 <= auc <= 0.98  # high, but a model cannot be perfect
    # Labels were drawn from the probability: it is calibrated.
    assert truth.true_fraud_proba.mean() == pytest.approx(rate, rel=0.2)
    assert truth.true_fraud_proba.between(0, 1).all()


def test_labels_arrive_after_their_transaction(default_run: tuple[Path, GenerationSummary]) -> None:
    out, summary = default_run
    labels = _read(out, LABELS)
    delay = (labels.day - labels.tx_day).dt.days
    assert (delay > 0).all()
    assert (delay[labels.is_fraud == 0] == 7).all()  # legitimate: confirmed after 7 days
    fraud_delay = delay[labels.is_fraud == 1]
    assert fraud_delay.min() >= 3 and 5 < fraud_delay.mean() < 9  # chargebacks: 2 + geometric
    # Labels agree with the truth and only arrived days exist.
    truth = _read(out, TRUTH).set_index("transaction_id")
    assert (truth.loc[labels.transaction_id, "is_fraud"].to_numpy() == labels.is_fraud).all()
    assert labels.day.max() <= pd.Timestamp(summary.days[-1])
    # Recent transactions are (mostly) unlabelled.
    per_tx_day = labels.groupby("tx_day").size()
    tx_per_day = _read(out, TRANSACTIONS).groupby("day").size()
    share = per_tx_day.reindex(tx_per_day.index, fill_value=0) / tx_per_day
    assert (share.iloc[:-7] > 0.98).all()
    assert (share.iloc[-7:] < 0.05).all() and (share.iloc[-3:] == 0).all()


# --------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------


def test_knobs_are_off_by_default(default_run: tuple[Path, GenerationSummary]) -> None:
    cfg = GeneratorConfig()
    assert cfg.ring_city is None and cfg.ring_start_day is None
    assert cfg.unseen_merchants_from_day is None and cfg.extra_column_from_day is None
    out, summary = default_run
    refs = dataset_refs(out)
    assert "device_id" not in schema(refs[TRANSACTIONS])
    assert all("device_id" not in schema(refs[TRANSACTIONS], d) for d in summary.days[-3:])
    tx = _read(out, TRANSACTIONS)
    assert set(tx.merchant_id) <= set(_read(out, MERCHANTS).merchant_id)


def _miami(out: Path) -> pd.DataFrame:
    """Per-transaction: before/after ring start, at a Miami merchant, fraud."""
    refs = dataset_refs(out)
    return query_df(
        "SELECT t.day >= DATE '2026-10-21' AS after, m.city = 'Miami' AS miami, "
        "count(*) AS n, avg(r.is_fraud) AS rate FROM tx t JOIN truth r USING (transaction_id) "
        "JOIN merchants m USING (merchant_id) GROUP BY ALL",
        {"tx": refs[TRANSACTIONS], "truth": refs[TRUTH], "merchants": refs[MERCHANTS]},
    ).set_index(["after", "miami"])


def test_ring_city_lights_up(default_run: tuple[Path, GenerationSummary], knobs_run: Path) -> None:
    on, off = _miami(knobs_run), _miami(default_run[0])
    ring_rate = on.loc[(True, True), "rate"]
    assert ring_rate > 4 * on.loc[(False, True), "rate"]  # than before the ring started
    assert ring_rate > 4 * off.loc[(True, True), "rate"]  # than the same days without the knob
    assert ring_rate > 4 * on.loc[(True, False), "rate"]  # than other cities
    assert on.loc[(True, True), "n"] > 1.5 * off.loc[(True, True), "n"]  # more volume there
    assert on.loc[(False, True), "n"] == off.loc[(False, True), "n"]  # nothing before


def test_unseen_merchants(knobs_run: Path) -> None:
    tx = _read(knobs_run, TRANSACTIONS)
    known = set(_read(knobs_run, MERCHANTS).merchant_id)
    tx["unseen"] = ~tx.merchant_id.isin(known)
    after = tx.day >= pd.Timestamp(_day(KNOBS, 30))
    assert not tx.unseen[~after].any()
    assert 0.2 < tx.unseen[after].mean() < 0.4
    distinct = tx.groupby("day").merchant_id.nunique()
    before_days = distinct.index < pd.Timestamp(_day(KNOBS, 30))
    assert distinct[~before_days].min() > 1.5 * distinct[before_days].max()
    # Unseen merchants are still located in real cities.
    unseen = tx[tx.unseen].drop_duplicates("merchant_id")
    lat, lon = unseen.merchant_latitude.to_numpy(), unseen.merchant_longitude.to_numpy()
    nearest = np.min([haversine_km(lat, lon, c.latitude, c.longitude) for c in US_CITIES], axis=0)
    assert nearest.max() < 30


def test_extra_column_from_its_day(knobs_run: Path) -> None:
    ref = dataset_refs(knobs_run)[TRANSACTIONS]
    for i in (0, 34):
        assert list(schema(ref, _day(KNOBS, i))) == [*TRANSACTION_COLUMNS, "day"]
    for i in (35, 39):
        got = schema(ref, _day(KNOBS, i))
        assert (
            list(got) == [*TRANSACTION_COLUMNS, "device_id", "day"]
            and got["device_id"] == "VARCHAR"
        )
    tx = read_df(ref, partitions=[_day(KNOBS, 35)])
    assert tx.device_id.notna().all() and tx.device_id.str.fullmatch(r"D\d{8}").all()


def test_knobs_leave_earlier_days_alone(
    default_run: tuple[Path, GenerationSummary], knobs_run: Path
) -> None:
    first = [_day(KNOBS, i) for i in range(20)]
    refs_on, refs_off = dataset_refs(knobs_run), dataset_refs(default_run[0])
    for name in (TRANSACTIONS, TRUTH):
        on = read_df(refs_on[name], partitions=first).sort_values("transaction_id")
        off = read_df(refs_off[name], partitions=first).sort_values("transaction_id")
        pd.testing.assert_frame_equal(on.reset_index(drop=True), off.reset_index(drop=True))


def test_bad_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Atlantis"):
        generate(GeneratorConfig(ring_city="Atlantis", ring_start_day=1), tmp_path)
    with pytest.raises(ValueError, match="together"):
        generate(GeneratorConfig(ring_city="Miami"), tmp_path)
    with pytest.raises(ValueError):
        generate(GeneratorConfig(n_days=0), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written


def test_regenerating_replaces_old_partitions(tmp_path: Path) -> None:
    generate(SMALL, tmp_path)
    summary = generate(dataclasses.replace(SMALL, n_days=5), tmp_path)
    refs = dataset_refs(tmp_path)
    assert refs[TRANSACTIONS].partitions() == summary.days
    assert refs[TRUTH].partitions() == summary.days
    assert all(p <= summary.days[-1] for p in refs[LABELS].partitions())
    assert date.fromisoformat(summary.days[-1]) == SMALL.start_day + timedelta(days=4)
