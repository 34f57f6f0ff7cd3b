"""Done means: injected drift is flagged, and the same days without drift raise no alarm.

The demo's model was trained on 30 days of clean data. Both homes here run the same model
on 12 more days of the same world: in one, the generator's knobs inject a fraud ring in
Denver from day 30 and unseen merchant ids from day 32; in the other, nothing changes. The
automation node runs the real ``daily_scoring`` and ``daily_evaluation`` scenarios.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.monitoring import maps, model_quality
from nodal_demo import datagen, demo
from tests.conftest import SMALL
from tests.homes import copy_home

RING_CITY = "Denver"
RING_LAT, RING_LON = 39.74, -104.99
RING_DAY, UNSEEN_DAY = "2026-10-31", "2026-11-02"
EVAL_DAYS = ("2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03", "2026-11-10")
KNOBS_ON = dict(ring_city=RING_CITY, ring_start_day=30, unseen_merchants_from_day=32)


def _home(demo_env, root, knobs: dict):
    data_dir = root / "data"
    datagen.generate(dataclasses.replace(SMALL, n_days=42, **knobs), data_dir)
    settings, store = copy_home(demo_env.settings, root)
    settings = dataclasses.replace(settings, data_dir=data_dir)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    outcomes = {}
    for scenario, day in [("daily_scoring", RING_DAY), ("daily_scoring", UNSEEN_DAY)] + [
        ("daily_evaluation", d) for d in EVAL_DAYS
    ]:
        run_id = runs.request_run(
            store, demo.AUTOMATION_INFRA, demo.PROJECT, scenario, "test", {"day": day}
        )
        outcomes[(scenario, day)] = node.run(run_id)
    metrics = model_quality.read_metrics(store, demo.AUTOMATION_INFRA, demo.PROJECT)
    return settings, store, outcomes, metrics


@pytest.fixture(scope="module")
def drifted(demo_env, tmp_path_factory):
    return _home(demo_env, tmp_path_factory.mktemp("knobs_on"), KNOBS_ON)


@pytest.fixture(scope="module")
def steady(demo_env, tmp_path_factory):
    return _home(demo_env, tmp_path_factory.mktemp("knobs_off"), {})


def _alarms(metrics, family: str):
    return metrics[(metrics["family"] == family) & (metrics["status"] == "ERROR")]


def test_with_the_knobs_off_no_drift_alarm_is_raised(steady):
    _, _, outcomes, metrics = steady
    assert set(metrics["day"]) >= set(EVAL_DAYS)
    assert metrics[metrics["status"] == "ERROR"].empty, metrics[metrics["status"] == "ERROR"]
    assert not any(o == runs.FAILED for o in outcomes.values()), outcomes
    # Performance was measured once labels landed, and judged steady.
    decay = metrics[(metrics["family"] == "performance_decay") & (metrics["day"] == EVAL_DAYS[-1])]
    assert not decay.empty and set(decay["status"]) <= {"OK", "WARNING"}


def test_the_fraud_ring_lights_up_its_city_on_the_map_and_in_the_evaluation(drifted, steady):
    on, off = drifted[3], steady[3]
    ring = _alarms(on, "location")
    assert RING_DAY in set(ring["day"]) and ring["feature"].str.startswith("Denver").all()
    assert _alarms(off, "location").empty

    # The map marks the evaluation's hot spot on the ring's day; the steady home has none.
    lit = maps.load_map_day(*drifted[:2], demo.PROJECT, demo.AUTOMATION_INFRA, day=RING_DAY)
    assert lit.ok, lit.message
    spots = lit.hot_spots
    assert len(spots) == 1 and spots["place"].iloc[0].startswith("Denver")
    assert abs(spots["lat"].iloc[0] - RING_LAT) < 1 and abs(spots["lon"].iloc[0] - RING_LON) < 1
    calm = maps.load_map_day(*steady[:2], demo.PROJECT, demo.AUTOMATION_INFRA, day=RING_DAY)
    assert calm.hot_spots.empty


def test_unseen_merchant_ids_are_flagged_and_the_map_keeps_the_last_checked_day(drifted):
    settings, store, outcomes, metrics = drifted
    unseen = _alarms(metrics, "unseen_values")
    assert set(unseen["feature"]) == {"merchant_id"}
    assert set(unseen["day"]) == {d for d in EVAL_DAYS if d >= UNSEEN_DAY}
    share = unseen[unseen["metric"] == "unseen_share"]["value"]
    assert np.all(share > 0.2)
    # The same day failed its data checks in daily_scoring: not published, and the map says so.
    assert outcomes[("daily_scoring", UNSEEN_DAY)] == runs.FAILED
    data = maps.load_map_day(settings, store, demo.PROJECT, demo.AUTOMATION_INFRA)
    assert data.day == RING_DAY and data.failed_check_day == UNSEEN_DAY
    assert "distinct_merchants_in_typical_range" in data.failed_check_message


def test_performance_decay_is_flagged_once_the_delayed_labels_land(drifted):
    metrics = drifted[3]
    missed = _alarms(metrics, "missed_fraud")
    # Before labels land nothing can be judged; on the last day, the ring's frauds are in.
    assert set(missed["day"]) == {EVAL_DAYS[-1]}
    assert missed["feature"].str.startswith("Denver").all()
    perf = metrics[(metrics["family"] == "performance") & (metrics["metric"] == "recall")]
    assert {"2026-10-31", "2026-11-01"} <= set(perf["day"])  # labels landed for these days
    early = metrics[(metrics["family"] == "missed_fraud") & (metrics["day"] < EVAL_DAYS[-1])]
    assert early.empty
