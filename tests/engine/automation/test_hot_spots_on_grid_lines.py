"""A hot spot does not depend on where a grid line falls.

A fraud ring in a city on a one-degree line used to split its rise between two cells (four
at a corner), each under the floors: an alarm one day, a warning or nothing the next.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.automation import drift

BOX = ((30.0, 45.0), (-120.0, -75.0))


def _uniform(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(*BOX[0], n), rng.uniform(*BOX[1], n)


@pytest.mark.parametrize(
    ("place", "what"),
    [((40.0, -100.0), "a corner of four cells"), ((37.0, -90.5), "a line between two cells")],
)
def test_a_ring_on_a_grid_line_alarms_every_day(place, what):
    reference = _uniform(np.random.default_rng(1), 60_000)
    for day in range(7):
        rng = np.random.default_rng(100 + day)
        lat, lon = _uniform(rng, 20_000)
        ring = 320  # 1.6 % of the day's rows: well above the 1-point alarm floor, whole
        ring_lat = place[0] + rng.normal(0, 0.05, ring)
        ring_lon = place[1] + rng.normal(0, 0.05, ring)
        hot = drift.hot_spot(*reference, np.r_[lat, ring_lat], np.r_[lon, ring_lon])
        assert hot.status == drift.ERROR, f"day {day}, ring on {what}: {hot.message}"
        assert abs(hot.latitude - place[0]) < 0.5 and abs(hot.longitude - place[1]) < 0.5
        assert hot.current_share - hot.reference_share > 0.012


def test_clean_days_raise_nothing_on_any_grid():
    reference = _uniform(np.random.default_rng(1), 60_000)
    for day in range(7):
        lat, lon = _uniform(np.random.default_rng(200 + day), 20_000)
        assert drift.hot_spot(*reference, lat, lon).status == drift.OK


def test_missed_fraud_on_a_corner_of_four_cells_alarms():
    rng = np.random.default_rng(5)
    n = 20_000
    lat, lon = _uniform(rng, n)
    p = np.full(n, 0.01)
    y = (rng.random(n) < p).astype(int)
    assert drift.missed_fraud_hot_spot(lat, lon, y, p).status == drift.OK
    # 16 frauds the model did not expect, around a corner: 4 per cell of the plain grid.
    k = 100
    lat[:k] = 40.0 + np.tile([-0.05, 0.05], k // 2)
    lon[:k] = -100.0 + np.repeat([-0.05, 0.05], k // 2)
    y[:k] = 0
    y[:8] = 1  # latitudes alternate: 4 frauds south-west of the corner, 4 north-west
    y[50:58] = 1  # and 4 south-east, 4 north-east
    hot = drift.missed_fraud_hot_spot(lat, lon, y, p)
    assert hot.status == drift.ERROR and hot.observed >= 16, hot.message
