"""The Lab page shows each day's label maturity and what it left out (the example model
declares label_maturity: {delay_days: 7})."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.design import lab, lab_jobs
from engine.design import projects as design
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "design_studio" / "app.py"


@pytest.fixture
def studio_copy(demo_env, tmp_path, monkeypatch):
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def test_the_lab_page_leaves_immature_days_out_and_shows_each_days_maturity(studio_copy):
    settings, _ = studio_copy
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=120))
    at.run()
    at.switch_page("views/lab.py").run()
    assert at.selectbox(key="lab_dataset").value == "training_set"
    assert at.checkbox(key="lab_mature_only").value is True
    at.number_input(key="lab_rounds").set_value(30).run()
    at.button(key="train").click().run()
    assert not at.exception and not at.error
    lab_jobs.get_job(at.session_state["lab_job"]).thread.join(timeout=300)
    at.run()
    assert not at.exception, at.exception

    project = design.open_project(settings, "fraud")
    run = lab.list_runs(project, "fraud_model")[0]
    # Mature: 7 days old as of the newest day labels arrived on.
    newest = date.fromisoformat(project.dataset("labels").partitions()[-1])
    expected = [
        d["day"] for d in run["maturity"] if date.fromisoformat(d["day"]) + timedelta(7) > newest
    ]
    immature = [d["day"] for d in run["maturity"] if d["mature"] is False]
    assert immature == expected and immature
    assert run["validation"][1] < immature[0]
    warned = f"{len(immature)} days with immature labels left out"
    assert any(warned in w.value for w in at.warning)
    # AppTest cannot look a dataframe up by key: the table with a "labelled_share" column.
    table = next(t.value for t in at.dataframe if "labelled_share" in t.value.columns)
    assert len(table) == len(run["maturity"])
    assert (table["mature"] == "immature").sum() == len(immature)
