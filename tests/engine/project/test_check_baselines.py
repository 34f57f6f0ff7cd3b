"""A check learned from history learns only from accepted partitions: a drifted day keeps
failing until someone accepts it as the new baseline (issue 18, item 2)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from engine.project import check_baselines, checks
from engine.storage import datasets as ds
from engine.storage.control import check_baselines as baselines_table
from tests.engine.small_project import make_small

NORMAL, DRIFTED = 100, 160  # distinct visitors a day; drifted is outside 100 ± 20 %


def _day(i: int) -> str:
    return (dt.date(2026, 3, 1) + dt.timedelta(days=i)).isoformat()


@pytest.fixture
def visits(tmp_path):
    """14 normal days of visits, then 3 drifted days, in a managed dataset of the test
    project (nothing named like an example), with a learned distinct-count check."""
    small = make_small(tmp_path, with_shops=False)
    project = small.project()
    rng = np.random.default_rng(4)
    frames = []
    for i in range(17):
        n = NORMAL if i < 14 else DRIFTED
        visitors = [f"v{j}" for j in range(n)] + [f"v{x}" for x in rng.integers(0, n, 200)]
        frames.append(pd.DataFrame({"visitor": visitors, "day": _day(i)}))
    ds.write(ds.DatasetRef("visits", project.data_root / "visits", "day"), pd.concat(frames))
    (project.root / "datasets.yaml").write_text(
        (project.root / "datasets.yaml").read_text()
        + "visits:\n  kind: managed\n  partitioned_by: day\n"
    )
    checks.add_check(
        small.project(),
        "visits",
        {
            "name": "visitors",
            "type": "distinct_count_in_range",
            "column": "visitor",
            "history_days": 14,
            "tolerance": 0.2,
        },
    )
    return small


def _run(small, day: str) -> checks.CheckResult:
    (result,) = checks.run_checks(small.project(), "visits", day, small.store, "node-a")
    return result


@pytest.fixture(params=["sqlite", "postgresql"])
def visits_on(request, visits):
    """``visits`` with its control store on SQLite, or on PostgreSQL (NODAL_TEST_PG_URL)."""
    if request.param == "sqlite":
        yield visits
        return
    from tests.engine.storage.test_control_store import _postgres_store

    store = _postgres_store()
    visits.store = store
    yield visits
    store.dispose()


def test_a_drifted_day_keeps_failing_until_it_is_accepted_as_the_new_baseline(visits_on):
    visits = visits_on
    for i in range(14):  # the normal days, checked as they arrive
        assert _run(visits, _day(i)).outcome in (checks.OK, checks.WARNING)
    first = _run(visits, _day(14))
    assert first.outcome == checks.ERROR and "outside the typical range" in first.message
    # The next drifted day fails too: the failed day did not widen the range.
    second = _run(visits, _day(15))
    assert second.outcome == checks.ERROR, second.message
    assert "learned from 14 earlier accepted partitions" in second.message

    base = checks.accept_baseline(
        visits.project(), "visits", "visitors", _day(14), visits.store, "node-a", "ann"
    )
    assert base.actor == "ann" and base.value == str(DRIFTED) and base.at
    with visits.store.read() as conn:
        row = conn.execute(sa.select(baselines_table)).mappings().one()
    assert (row["actor"], row["partition"], row["node"]) == ("ann", _day(14), "node-a")

    again = _run(visits, _day(14))
    assert again.outcome == checks.OK and "accepted as the new baseline by ann" in again.message
    after = _run(visits, _day(15))
    assert after.outcome == checks.OK, after.message
    assert after.message == "160 distinct visitor within 128..192"
    assert _run(visits, _day(16)).outcome == checks.OK
    # Another node keeps its own judgement: nobody accepted anything there.
    (other,) = checks.run_checks(visits.project(), "visits", _day(15), visits.store, "node-b")
    assert other.outcome == checks.OK  # never checked there: history is taken as it is


def test_accepting_is_refused_without_an_actor_a_result_or_a_learned_check(visits):
    project = visits.project()
    with pytest.raises(check_baselines.BaselineError, match="has not run on partition"):
        checks.accept_baseline(project, "visits", "visitors", _day(3), visits.store, "n", "ann")
    _run(visits, _day(3))
    with pytest.raises(check_baselines.BaselineError, match="say who accepts"):
        checks.accept_baseline(project, "visits", "visitors", _day(3), visits.store, "node-a", " ")
    with pytest.raises(checks.CheckError, match="has no check 'nope'"):
        checks.accept_baseline(project, "visits", "nope", _day(3), visits.store, "node-a", "ann")
    with pytest.raises(checks.CheckError, match="say which partition"):
        checks.accept_baseline(project, "visits", "visitors", None, visits.store, "node-a", "ann")
    with visits.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(baselines_table)).scalar() == 0
