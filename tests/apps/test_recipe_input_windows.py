"""The Studio shows and edits a recipe input read over a window of days ({days_before: N}),
and the flow graph draws it (AppTest against a copy of the prepared demo home)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from engine.design import projects as design
from engine.project import input_modes
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "design_studio" / "app.py"


def _open(page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=120))
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def studio_copy(demo_env, tmp_path, monkeypatch):
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def test_the_recipes_page_shows_and_changes_a_window_of_days(studio_copy):
    settings, _ = studio_copy
    at = _open("views/recipes.py")
    at.selectbox(key="recipe_choice").set_value("card_profiles").run()
    assert not at.exception, at.exception
    mode = at.selectbox(key="mode::card_profiles::transactions")
    assert mode.value == "days before"
    days = at.number_input(key="days::card_profiles::transactions")
    assert days.value == 30
    days.set_value(14).run()
    at.button(key="save_recipe").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    project = design.open_project(settings, "fraud")
    assert project.recipes["card_profiles"].inputs["transactions"] == input_modes.DaysBefore(14)
    flow_doc = yaml.safe_load((project.root / "flow.yaml").read_text())
    assert flow_doc["recipes"]["card_profiles"]["inputs"]["transactions"] == {"days_before": 14}

    at.switch_page("views/flow.py").run()
    assert not at.exception, at.exception
    dot = at.get("graphviz_chart")[0].proto.spec
    edge = next(
        line for line in dot.splitlines() if '"ds:transactions" -> "recipe:card_profiles"' in line
    )
    assert "style=dotted" in edge and "14 days before" in edge
