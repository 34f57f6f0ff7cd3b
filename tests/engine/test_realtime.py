"""Validation of real-time requests: clear messages, never the input echoed."""

from __future__ import annotations

from datetime import datetime

import pytest

from engine.realtime import InvalidRecord, compute_features, haversine_km, validate_record

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
