"""Windowed features, property style: random events on a coarse time grid (many same-time
ties, window edges hit exactly, NULL keys and values) give, in a full build and in every
daily build, exactly what a naive Python reading of the definition gives: an event at *t*
counts its key's events with ``t - window <= time < t``."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from engine.project import flow
from engine.storage import datasets as ds
from tests.engine.project.test_windows import _project

DECLARATION = """\
events: logins
key: user_id
time: at
id: login_id
features:
  logins_1h: {agg: count, window: 1h}
  logins_1d: {agg: count, window: 1d}
  seconds_1h: {agg: sum, of: seconds, window: 1h}
  mean_seconds_1d: {agg: mean, of: seconds, window: 1d}
  longest_2h: {agg: max, of: seconds, window: 2h}
  shortest_2h: {agg: min, of: seconds, window: 2h}
  devices_1d: {agg: distinct_count, of: device, window: 1d}
  since_last_1h: {agg: since_last, window: 1h}
  since_last_2d: {agg: since_last, window: 2d}
  new_device_1h: {agg: first_seen, of: device, window: 1h}
  new_device_2d: {agg: first_seen, of: device, window: 2d}
  new_length_1d: {agg: first_seen, of: seconds, window: 1d}
"""
WINDOWS = {"1h": 3600, "2h": 7200, "1d": 86400, "2d": 2 * 86400}
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def _events(seed: int, n: int) -> list[dict]:
    """Events on a 20-minute grid (so windows start exactly on other events' times), a few
    keys (one of them NULL), few devices, durations from a small set (repeated values)."""
    rng = np.random.default_rng(seed)
    start = datetime.fromisoformat(DAYS[0])
    rows = []
    for i in range(n):
        slot = int(rng.integers(0, len(DAYS) * 72))
        user = int(rng.integers(0, 4))
        rows.append(
            {
                "login_id": f"L{i}",
                "user_id": None if user == 3 and rng.random() < 0.5 else user,
                "at": start + timedelta(minutes=20 * slot),
                "device": None if rng.random() < 0.15 else f"dev{rng.integers(0, 4)}",
                "seconds": None if rng.random() < 0.15 else float(rng.integers(1, 6)) / 4,
            }
        )
    return rows


def _naive(events: list[dict]) -> dict[str, dict]:
    out = {}
    for e in events:
        t = e["at"]
        row = {}
        for name, agg, of, window in _features():
            w = timedelta(seconds=WINDOWS[window])
            inside = [x for x in events if x["user_id"] == e["user_id"] and t - w <= x["at"] < t]
            vals = [x[of] for x in inside if of and x[of] is not None]
            if agg == "count":
                row[name] = len(inside)
            elif agg == "sum":
                row[name] = math.fsum(vals)
            elif agg == "mean":
                row[name] = math.fsum(vals) / len(vals) if vals else None
            elif agg == "max":
                row[name] = max(vals, default=None)
            elif agg == "min":
                row[name] = min(vals, default=None)
            elif agg == "distinct_count":
                row[name] = len(set(vals))
            elif agg == "since_last":
                last = max((x["at"] for x in inside), default=None)
                row[name] = None if last is None else (t - last).total_seconds()
            else:
                row[name] = None if e[of] is None else e[of] not in vals
        out[e["login_id"]] = row
    return out


def _features() -> list[tuple[str, str, str | None, str]]:
    import yaml

    spec = yaml.safe_load(DECLARATION)["features"]
    return [(n, f["agg"], f.get("of"), f["window"]) for n, f in spec.items()]


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _check(rows: list[dict], expected: dict[str, dict]) -> None:
    assert rows
    for r in rows:
        want = expected[r["login_id"]]
        for name, value in want.items():
            got = _plain(r[name])
            if isinstance(value, float) and got is not None:
                assert abs(got - value) <= 1e-9 * max(1.0, abs(value)), (r["login_id"], name)
            else:
                assert got == value, (r["login_id"], name, got, value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_full_and_daily_builds_equal_a_naive_reading(tmp_path, seed):
    project = _project(tmp_path, DECLARATION)
    events = _events(seed, 500)
    ref = ds.DatasetRef("logins", tmp_path / "landing" / "logins", "day")
    for day in DAYS:
        part = [{**e, "day": day} for e in events if e["at"].date().isoformat() == day]
        ds.write(ref, pa.Table.from_pylist(part), partitions=[day])
    expected = _naive(events)
    assert sum(r["new_device_2d"] is False for r in expected.values()) > 50
    out = project.dataset("user_windows")

    flow.build(project, "user_windows")
    full = ds.query_df("SELECT * FROM w", {"w": out}).to_dict("records")
    assert len(full) == len(events)
    _check(full, expected)

    for day in DAYS:  # a daily build reads back what its windows reach, writes its day
        ds.delete(out)
        run = flow.run_recipe(project, "user_windows", [day])
        assert run.partitions == [day]
        daily = ds.query_df("SELECT * FROM w", {"w": out}).to_dict("records")
        assert len(daily) == sum(e["at"].date().isoformat() == day for e in events)
        _check(daily, expected)
