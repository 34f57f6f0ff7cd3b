"""Metrics with history; checks with hard/soft bounds, value-in-set, learned ranges."""

from __future__ import annotations

import pytest

from engine.project import checks, metrics
from tests.engine.small_project import make_small


@pytest.fixture
def shops(tmp_path):
    small = make_small(tmp_path)
    metrics.add_metric(small.project(), "shops", {"name": "rows", "type": "record_count"})
    metrics.add_metric(
        small.project(),
        "shops",
        {"name": "sales_missing", "type": "missing_share", "column": "monthly_sales"},
    )
    metrics.add_metric(
        small.project(),
        "shops",
        {
            "name": "austin",
            "type": "sql",
            "sql": "SELECT count(*) FROM dataset WHERE city = 'Austin'",
        },
    )
    return small


def test_metrics_are_computed_on_the_newest_partition_and_kept_as_history(shops):
    values = {v.name: v for v in metrics.compute(shops.project(), "shops", shops.store, "design")}
    assert values["rows"].value == 1 and values["rows"].partition == "2024-01-07"
    assert values["sales_missing"].value == 1.0  # Denver's sales are missing
    metrics.compute(shops.project(), "shops", shops.store, "design", partition="2024-01-05")
    history = metrics.history(shops.store, "shop", "shops", "austin")
    assert list(history["value"]) == [1.0, 0.0] and list(history["partition"]) == [
        "2024-01-05",
        "2024-01-07",
    ]


def test_metric_bounds_hard_is_an_error_soft_a_warning(shops):
    project = shops.project()
    checks.add_check(
        project, "shops", {"name": "enough", "type": "metric_bounds", "metric": "rows", "min": 2}
    )
    checks.add_check(
        project, "shops", {"name": "some", "type": "metric_bounds", "metric": "rows", "soft_min": 2}
    )
    checks.add_check(
        project,
        "shops",
        {
            "name": "inline",
            "type": "metric_bounds",
            "metric": {"type": "max", "column": "monthly_sales"},
            "max": 1000,
        },
    )
    got = {
        r.name: r
        for r in checks.run_checks(shops.project(), "shops", "2024-01-05", shops.store, "design")
    }
    assert got["enough"].outcome == checks.OK and got["some"].outcome == checks.OK
    assert got["inline"].outcome == checks.ERROR and "1200.5" in got["inline"].message
    got = {
        r.name: r
        for r in checks.run_checks(shops.project(), "shops", "2024-01-06", shops.store, "design")
    }
    assert got["enough"].outcome == checks.ERROR and got["some"].outcome == checks.WARNING
    assert set(checks.history(shops.store, "shop", "shops")["check_name"]) == {
        "enough",
        "some",
        "inline",
    }


def test_value_in_set_and_a_dropped_column_fail_loudly(shops):
    project = shops.project()
    checks.add_check(
        project,
        "shops",
        {
            "name": "cities",
            "type": "value_in_set",
            "column": "city",
            "values": ["Austin", "Boston"],
        },
    )
    got = checks.run_checks(shops.project(), "shops", "2024-01-07", shops.store, "design")
    assert got[0].outcome == checks.ERROR and "Denver" in got[0].message
    with pytest.raises(checks.CheckError, match="has no column 'town'"):
        checks.add_check(
            project,
            "shops",
            {"name": "t", "type": "value_in_set", "column": "town", "values": ["x"]},
        )
    with pytest.raises(checks.CheckError, match="at least one bound"):
        checks.add_check(project, "shops", {"name": "t", "type": "metric_bounds", "metric": "rows"})
    with pytest.raises(checks.CheckError, match="already has a check 'cities'"):
        checks.add_check(project, "shops", {"name": "cities", "type": "schema_equals"})


def test_distinct_count_range_of_an_unpartitioned_dataset_is_learned_from_earlier_runs(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    from engine.design import dataset_import

    csv = small.settings.data_dir / "c.csv"
    csv.write_text("city\nAustin\nBoston\nDenver\n")
    dataset_import.import_file(small.project(), "cities", csv)
    checks.add_check(
        small.project(),
        "cities",
        {"name": "n_cities", "type": "distinct_count_in_range", "column": "city", "tolerance": 0.0},
    )
    first = checks.run_checks(small.project(), "cities", None, small.store, "design")[0]
    assert first.outcome == checks.WARNING and "no history" in first.message
    assert (
        checks.run_checks(small.project(), "cities", None, small.store, "design")[0].outcome
        == checks.OK
    )
