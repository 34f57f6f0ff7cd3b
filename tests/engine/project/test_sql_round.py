"""Real time's ``round`` gives DuckDB's answer on the values where rounding is delicate:
ties in binary (0.125), decimal ties that are not ties in binary (0.075, 2.675), signs and
negative precisions. A found case: ``round(0.15 / 2, 2)`` is 0.07 in DuckDB; scaling by 100
first made it 0.08 in real time."""

from __future__ import annotations

import math

import duckdb
import pytest

from engine.project.sql_functions import round_half_away

VALUES = [0.125, 0.375, -0.125, 2.5, -2.5, 0.5, 1.5, 0.075, 0.15 / 2, 2.675, 1.005, -0.045]
VALUES += [123.456789, -0.0, 0.0, 5e-324, 1e17 + 0.5, 7, -12]


@pytest.mark.parametrize("decimals", [-2, -1, 0, 1, 2, 3])
def test_round_is_duckdbs_round(decimals):
    duck = duckdb.execute(
        "SELECT [round(x::DOUBLE, $d) for x in $v]",
        {"v": [float(v) for v in VALUES], "d": decimals},
    ).fetchone()[0]
    for value, expected in zip(VALUES, duck, strict=True):
        got = round_half_away(float(value), decimals)
        assert got == expected and math.copysign(1, got) == math.copysign(1, expected), (
            value,
            decimals,
        )
