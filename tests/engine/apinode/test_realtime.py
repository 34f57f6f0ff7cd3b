"""Validation of real-time requests: clear messages, never the input echoed."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.apinode.realtime import (
    InvalidRecord,
    compute_features,
    csv_records,
    haversine_km,
    validate_record,
    validate_records,
)

GOOD = {
    "ts": "2026-11-09T13:45:00",
    "card_id": "C0000001",
    "merchant_id": "M000001",
    "merchant_category": "grocery",
    "amount": 42.5,
    "channel": "in_store",
    "card_present": True,
    "merchant_latitude": 40.71,
    "merchant_longitude": -74.0,
}


def test_a_good_record_parses():
    assert validate_record(GOOD) == datetime(2026, 11, 9, 13, 45)


def test_timezones_are_converted_to_utc_like_the_batch_data():
    assert validate_record({**GOOD, "ts": "2026-11-09T13:45:00+02:00"}) == datetime(
        2026, 11, 9, 11, 45
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": None}, "missing feature(s): amount"),
        ({"amount": "12.5"}, "feature 'amount' must be a number"),
        ({"amount": True}, "feature 'amount' must be a number"),
        ({"amount": float("nan")}, "feature 'amount' must be a finite number"),
        ({"amount": -3}, "feature 'amount' must be positive"),
        ({"card_present": "yes"}, "feature 'card_present' must be a boolean"),
        ({"ts": "yesterday"}, "feature 'ts' must be an ISO-8601 timestamp"),
        ({"merchant_latitude": 123.0}, "out of range"),
        ({"card_id": 12}, "feature 'card_id' must be a string"),
    ],
)
def test_bad_fields_are_named_without_echoing_the_value(change, message):
    with pytest.raises(InvalidRecord) as err:
        validate_record({**GOOD, **change})
    assert message in str(err.value)
    assert "yesterday" not in str(err.value) and "12.5" not in str(err.value)


def test_features_must_be_an_object():
    with pytest.raises(InvalidRecord, match="must be a JSON object"):
        validate_record(["not", "a", "dict"])


def test_unknown_cards_get_missing_profile_features_not_an_error():
    feats = compute_features(GOOD, validate_record(GOOD), None)
    assert feats["hour_of_day"] == 13
    assert feats["distance_km"] is None and feats["amount_ratio"] is None


def test_haversine_new_york_to_los_angeles():
    assert haversine_km(40.7128, -74.0060, 34.0522, -118.2437) == pytest.approx(3936, rel=0.01)


# The fast check of many records (one typed conversion) must agree with validate_record.
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([0, -1, -0.0, 90, 90.5, -180, -181, 1e299, 1e300, 2**63, 10**300]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=25),
    st.sampled_from(["2026-11-09T13:45:00", "2026-11-09T13:45:00+05:30", "2026-13-40"]),
    st.lists(st.integers(), max_size=2),
)
_fields = st.sampled_from([*GOOD, "transaction_id", "extra"])
# A good record with up to two fields changed or removed: close to the edge, where it matters.
_records = st.builds(
    lambda changes, drop: {k: v for k, v in {**GOOD, **changes}.items() if k not in drop},
    st.dictionaries(_fields, _values, max_size=2),
    st.sets(_fields, max_size=1),
)


def _verdict(rec):
    try:
        return validate_record(rec)
    except InvalidRecord as exc:
        return str(exc)


def _fast(recs):
    return [v if isinstance(v, datetime) else str(v) for v in validate_records(recs)]


@hsettings(max_examples=500, deadline=None, derandomize=True)
@given(record=_records)
def test_the_typed_fast_check_accepts_exactly_what_validate_record_accepts(record):
    assert _fast([record]) == [_verdict(record)]


@hsettings(max_examples=150, deadline=None, derandomize=True)
@given(records=st.lists(st.one_of(_records, _values), min_size=1, max_size=4))
def test_validate_records_gives_validate_record_verdicts(records):
    assert _fast(records) == [_verdict(r) for r in records]


@pytest.mark.parametrize(
    "change",
    [{"amount": 0}, {"amount": 1e300}, {"merchant_latitude": 90.5}, {"card_present": 1}],
)
def test_edge_values_are_refused_on_the_fast_path_too(change):
    assert _fast([{**GOOD, **change}]) == [_verdict({**GOOD, **change})]
    assert isinstance(_verdict({**GOOD, **change}), str)


def test_csv_cells_get_the_contract_types():
    text = "amount,card_present,card_id,note\n12.5,False,C1,\n3,true,007,x\n"
    assert csv_records(text) == [
        {"amount": 12.5, "card_present": False, "card_id": "C1", "note": None},
        {"amount": 3.0, "card_present": True, "card_id": "007", "note": "x"},
    ]
    with pytest.raises(InvalidRecord, match="needs a header row"):
        csv_records("")
    with pytest.raises(InvalidRecord, match="cannot be read"):
        csv_records("amount\n" + "1" * 200_000 + "\n")
