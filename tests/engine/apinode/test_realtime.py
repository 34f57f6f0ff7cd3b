"""Typing of real-time requests against an endpoint's contract: clear messages, never the
input echoed."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from engine.apinode.realtime import InvalidRecord, csv_records
from engine.project.feature_sql import RecordError, typed_record

CONTRACT = {
    "ts": "timestamp",
    "card_id": "string",
    "amount": "number",
    "n_items": "integer",
    "card_present": "boolean",
}
GOOD = {
    "ts": "2026-11-09T13:45:00",
    "card_id": "C1",
    "amount": 42.5,
    "n_items": 3,
    "card_present": True,
}


def test_a_good_record_is_typed_like_the_batch_data():
    rec = typed_record(CONTRACT, {**GOOD, "extra": "ignored", "amount": 42})
    assert rec == {
        "ts": datetime(2026, 11, 9, 13, 45),
        "card_id": "C1",
        "amount": 42.0,
        "n_items": 3,
        "card_present": True,
    }
    assert isinstance(rec["amount"], float)


def test_timezones_are_converted_to_utc_like_the_batch_data():
    rec = typed_record(CONTRACT, {**GOOD, "ts": "2026-11-09T13:45:00+02:00"})
    assert rec["ts"] == datetime(2026, 11, 9, 11, 45)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": None}, "missing feature(s): amount"),
        ({"amount": "12.5"}, "feature 'amount' must be a number"),
        ({"amount": True}, "feature 'amount' must be a number"),
        ({"amount": float("nan")}, "feature 'amount' must be a finite number"),
        ({"amount": 10**400}, "feature 'amount' must be a finite number"),
        ({"n_items": 2.5}, "feature 'n_items' must be an integer"),
        ({"card_present": "yes"}, "feature 'card_present' must be a boolean"),
        ({"ts": "yesterday"}, "feature 'ts' must be an ISO-8601 timestamp"),
        ({"ts": "0001-01-01T00:00:00+14:00"}, "feature 'ts' is outside the supported dates"),
        ({"card_id": 12}, "feature 'card_id' must be a string"),
    ],
)
def test_bad_fields_are_named_without_echoing_the_value(change, message):
    with pytest.raises(RecordError) as err:
        typed_record(CONTRACT, {**GOOD, **change})
    assert message in str(err.value)
    assert "yesterday" not in str(err.value) and "12.5" not in str(err.value)


def test_features_must_be_an_object():
    with pytest.raises(RecordError, match="must be a JSON object"):
        typed_record(CONTRACT, ["not", "a", "dict"])


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=25),
    st.sampled_from(["2026-11-09T13:45:00", "9999-12-31T23:59:59-05:00", "2026-13-40"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@hsettings(max_examples=400, deadline=None, derandomize=True)
@given(record=st.dictionaries(st.sampled_from([*CONTRACT, "x"]), _values, max_size=6))
def test_any_json_record_is_typed_or_refused_with_a_record_error(record):
    try:
        typed = typed_record(CONTRACT, record)
    except RecordError as exc:
        assert "must" in str(exc) or "missing" in str(exc) or "outside" in str(exc)
        return
    assert set(typed) == set(CONTRACT)


def test_csv_cells_stay_text_until_the_endpoint_types_them():
    text = "amount,card_present,card_id,note\n12.5,False,C1,\n3,true,007,x\n"
    assert csv_records(text) == [
        {"amount": "12.5", "card_present": "False", "card_id": "C1", "note": None},
        {"amount": "3", "card_present": "true", "card_id": "007", "note": "x"},
    ]
    with pytest.raises(InvalidRecord, match="needs a header row"):
        csv_records("")
    with pytest.raises(InvalidRecord, match="cannot be read"):
        csv_records("amount\n" + "1" * 200_000 + "\n")
