"""Drift statistics: big shifts alarm, trivial shifts of huge samples and small-sample noise do not."""

from __future__ import annotations

import numpy as np
import pandas as pd

from engine.automation import drift


def test_a_trivial_shift_of_a_million_rows_is_not_an_alarm():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 1_000_000)
    cur = rng.normal(0.02, 1, 1_000_000)  # real, but trivial
    r = drift.numeric_drift("x", ref, cur)
    assert r.psi < drift.PSI_WARNING and r.status == drift.OK
    # The same shift tested on all rows would be "significant": the subsample is what saves us.
    from scipy import stats

    assert stats.ks_2samp(ref, cur).pvalue < 1e-10


def test_a_large_shift_is_an_alarm_and_a_moderate_one_a_warning():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 50_000)
    assert drift.numeric_drift("x", ref, rng.normal(1.0, 1, 50_000)).status == drift.ERROR
    assert drift.numeric_drift("x", ref, rng.normal(0.35, 1, 50_000)).status == drift.WARNING


def test_small_sample_noise_does_not_alarm():
    rng = np.random.default_rng(3)
    ref = rng.exponential(1, 5000)
    statuses = [
        drift.numeric_drift("x", ref, rng.exponential(1, 200), str(i)).status for i in range(20)
    ]
    assert drift.ERROR not in statuses


def test_categories_psi_with_missing_values_and_a_new_category():
    ref = pd.Series(["a"] * 500 + ["b"] * 500)
    same = drift.categorical_drift("c", ref, pd.Series(["a"] * 480 + ["b"] * 520))
    assert same.status == drift.OK
    moved = drift.categorical_drift("c", ref, pd.Series(["a"] * 200 + ["c"] * 600 + [None] * 200))
    assert moved.status == drift.ERROR and moved.psi > drift.PSI_ALARM


def test_unseen_values_share_and_examples():
    known = {f"M{i}" for i in range(100)}
    cur = pd.Series([f"M{i}" for i in range(90)] + ["X1"] * 6 + ["X2"] * 4 + [None] * 10)
    u = drift.unseen_values("merchant_id", known, cur)
    assert u.share == 0.1 and u.distinct_unseen == 2 and u.examples[0] == "X1"
    assert u.status == drift.ERROR
    assert drift.unseen_values("m", known, pd.Series(["M1"] * 99 + ["X"])).status == drift.WARNING


def test_a_hot_spot_is_named_after_its_city():
    rng = np.random.default_rng(4)
    lat = rng.uniform(30, 45, 20_000)
    lon = rng.uniform(-120, -75, 20_000)
    steady = drift.hot_spot(lat, lon, lat[:5000], lon[:5000])
    assert steady.status == drift.OK
    ring_lat = np.r_[lat[:5000], np.full(200, 39.74)]
    ring_lon = np.r_[lon[:5000], np.full(200, -104.99)]
    hot = drift.hot_spot(lat, lon, ring_lat, ring_lon)
    assert hot.status == drift.ERROR and hot.city == "Denver, CO"


def test_missed_fraud_needs_many_more_frauds_than_expected():
    rng = np.random.default_rng(5)
    n = 20_000
    lat, lon = rng.uniform(30, 45, n), rng.uniform(-120, -75, n)
    p = np.full(n, 0.01)
    y = (rng.random(n) < p).astype(int)
    assert drift.missed_fraud_hot_spot(lat, lon, y, p).status == drift.OK
    lat[:100], lon[:100], y[:100] = 39.74, -104.99, np.r_[np.ones(20), np.zeros(80)]
    hot = drift.missed_fraud_hot_spot(lat, lon, y, p)
    assert hot.status == drift.ERROR and hot.city == "Denver, CO" and hot.observed >= 20


def test_domain_classifier_tells_shifted_data_apart():
    rng = np.random.default_rng(6)
    ref = rng.normal(0, 1, (4000, 3))
    assert drift.domain_classifier_auc(ref, rng.normal(0, 1, (4000, 3))) < 0.6
    assert drift.domain_classifier_auc(ref, rng.normal(1.5, 1, (4000, 3))) > drift.DOMAIN_AUC_ALARM


def test_values_outside_a_constant_reference_are_seen():
    ref = np.zeros(10_000)
    assert drift.numeric_drift("x", ref, np.zeros(5000)).status == drift.OK
    moved = drift.numeric_drift("x", ref, np.full(5000, 3.0))
    assert moved.status == drift.ERROR and moved.psi > 1
