"""The evaluate step's performance read is bounded by its window, not by the history.

Every day, the labels of every earlier day used to be read and joined again (the step grew
from 1 s on its first day to 18-34 s at 200,000 rows a day); and every column of the
window's scored rows. Now: only the label partitions that arrived from the window's first
day on (a row's label cannot arrive before the row), and only the columns measured.
"""

from __future__ import annotations

import shutil

from engine.automation import evaluation_plan, performance
from engine.automation.node import AutomationNode
from engine.core.settings import load_settings
from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT
from tests.homes import copy_home


def test_labels_older_than_the_window_and_unmeasured_columns_are_not_read(claims_env, tmp_path):
    home, store = copy_home(claims_env.settings, tmp_path)
    shutil.copytree(claims_env.settings.data_dir, tmp_path / "data")
    settings = load_settings(environ={}, home=home.home, data_dir=tmp_path / "data", basemap="none")
    project = AutomationNode(settings, store, CLAIMS_INFRA).project(CLAIMS_PROJECT)
    day = claims_env.nightly_days[-1]
    options = {"model": "claim_risk", "input": "scores", "performance_window_days": 3}
    p = evaluation_plan.plan(project, options)
    scored_days = project.dataset("scores").partitions()
    wanted = performance.needed_columns(p)
    before = performance.labelled_days(project, p, day, scored_days, wanted)
    assert list(before.columns) == [*wanted, performance.LABEL]
    assert before[performance.LABEL].notna().any()

    # The oldest label partition, weeks before the window, becomes unreadable.
    outcomes = project.dataset("outcomes")
    oldest = outcomes.partitions()[0]
    assert oldest < min(d for d in scored_days if d < day)
    for file in outcomes.partition_path(oldest).glob("*.parquet"):
        file.write_bytes(b"not parquet")
    after = performance.labelled_days(project, p, day, scored_days, wanted)
    assert (
        after.sort_values("claim_ref")
        .reset_index(drop=True)
        .equals(before.sort_values("claim_ref").reset_index(drop=True))
    )
