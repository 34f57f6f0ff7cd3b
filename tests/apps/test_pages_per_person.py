"""Pages show a person only what their rights cover (AppTest, the demo's home and people)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.access import accounts
from nodal_demo import demo
from tests.homes import sign_in_app

APPS = Path(__file__).resolve().parents[2] / "apps"


def _map_for(name: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APPS / "monitoring/app.py"), default_timeout=60), name)
    at.run()
    at.switch_page("views/fraud_map.py").run()
    assert not at.exception, at.exception
    return at


def test_the_map_shows_granted_projects_only(demo_environ):
    store = demo_environ.store
    if "outsider" not in {u.name for u in accounts.list_users(store)}:
        accounts.create_user(store, "admin", "outsider")  # an account with no right
    assert "No deployed project you may read" in _map_for("outsider").info[0].value
    viewer = _map_for("viewer")  # business: read on every project
    assert viewer.title[0].value != "Daily map" or not viewer.info
    assert demo.PROJECT in viewer.query_params["deployment"]


def test_no_one_signed_in_gets_the_sign_in_form_and_no_page(demo_environ):
    at = AppTest.from_file(str(APPS / "deployer_console/app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Sign in · Deployer Console"
    assert [b.label for b in at.button] == ["Sign in"] and at.text_input(key="sign_in_name")
    assert not at.dataframe  # nothing of the Console shows


def _page_for(name: str, page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(APPS / "monitoring/app.py"), default_timeout=60), name)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_status_lists_only_what_the_person_may_see(demo_environ):
    store = demo_environ.store
    if "outsider" not in {u.name for u in accounts.list_users(store)}:
        accounts.create_user(store, "admin", "outsider")
    viewer = _page_for("viewer", "")  # reads the fraud project: its deployment and endpoints
    shown = [set(d.value["what"]) for d in viewer.dataframe]
    assert any("fraud on automation-prod" in s for s in shown)
    outsider = _page_for("outsider", "")
    assert not any(len(d.value) for d in outsider.dataframe)


def test_api_query_logs_are_for_people_with_a_right_on_the_node(demo_environ):
    viewer = _page_for("viewer", "views/api_health.py")
    assert "query logs are shown to people with a right on the node" in viewer.info[0].value
    ops = _page_for("ops", "views/api_health.py")  # view on every stage
    assert not any("query logs are shown" in i.value for i in ops.info)


def test_api_keys_show_only_to_who_manages_them(demo_environ):
    def keys_page(name: str) -> AppTest:
        app = APPS / "deployer_console/app.py"
        at = sign_in_app(AppTest.from_file(str(app), default_timeout=60), name)
        at.run()
        at.switch_page("views/api_keys.py").run()
        assert not at.exception, at.exception
        return at

    viewer = keys_page("viewer")
    assert "You manage the keys of no API service" in viewer.info[-1].value
    assert [b.key for b in viewer.button] == ["nodal_sign_out"]
    ops = keys_page("ops")  # keys on every service
    assert ops.button(key="key_create")
