"""The Studio's recipe editor shows and edits a windows recipe as YAML: previewed by the
real batch computation, checked by the windows parser on save (a wrong declaration is
refused naming its field and nothing is written), and saved under ``windows:`` in
flow.yaml (AppTest against a copy of the prepared demo home)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from engine.design import projects as design
from tests.homes import copy_home, environ, sign_in_app

APP = Path(__file__).resolve().parents[2] / "apps" / "design_studio" / "app.py"


@pytest.fixture
def studio_copy(demo_env, tmp_path, monkeypatch):
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    return settings, store


def _editor(at: AppTest):
    return at.text_area(key="sql::card_windows")


def test_a_windows_recipe_is_edited_as_yaml_and_checked_on_save(studio_copy):
    settings, _ = studio_copy
    project = design.open_project(settings, "fraud")
    body = project.root / "recipes" / "card_windows.yaml"
    flow_file = project.root / "flow.yaml"
    before_body, before_flow = body.read_text(), flow_file.read_text()

    at = sign_in_app(AppTest.from_file(str(APP), default_timeout=120))
    at.run()
    at.switch_page("views/recipes.py").run()
    at.selectbox(key="recipe_choice").set_value("card_windows").run()
    assert not at.exception, at.exception
    editor = _editor(at)
    assert editor.label.startswith("Windowed features (YAML")
    assert editor.value == before_body

    # Preview: the real batch features of the newest day.
    at.button(key="preview").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rows, schema = (frame.value for frame in at.dataframe)
    assert "card_new_merchant_7d" in list(schema["column"])
    assert len(rows) > 0 and "card_new_merchant_7d" in rows.columns

    # A wrong declaration: refused, naming the field; nothing written.
    _editor(at).set_value(before_body.replace("window: 1h}", "window: 1x}", 1)).run()
    at.button(key="save_recipe").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("features.card_txn_1h.window" in e and "1x" in e for e in errors), errors
    assert body.read_text() == before_body and flow_file.read_text() == before_flow

    # A good one: saved as YAML, still a windows recipe in flow.yaml.
    changed = before_body.replace(
        "card_txn_1h: {agg: count, window: 1h}", "card_txn_1h: {agg: count, window: 2h}"
    )
    assert changed != before_body
    _editor(at).set_value(changed).run()
    at.button(key="save_recipe").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert body.read_text() == changed
    entry = yaml.safe_load(flow_file.read_text())["recipes"]["card_windows"]
    assert entry["windows"] == "recipes/card_windows.yaml" and "sql" not in entry
    reopened = design.open_project(settings, "fraud")
    assert reopened.recipes["card_windows"].sql == changed
