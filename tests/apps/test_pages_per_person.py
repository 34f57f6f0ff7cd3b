"""Pages show a person only what their rights cover (AppTest, the demo's home and people)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.access import accounts, audit, rights
from nodal_demo import demo
from tests.homes import copy_home, environ, sign_in_app

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


@pytest.fixture
def console_copy(demo_env, tmp_path, monkeypatch):
    """The Console's pages on a copy of the demo home (these tests grant rights)."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    if "outsider" not in {u.name for u in accounts.list_users(store)}:
        accounts.create_user(store, "admin", "outsider")  # no right at all
    return store


def _console(name: str, page: str) -> AppTest:
    app = APPS / "deployer_console/app.py"
    at = sign_in_app(AppTest.from_file(str(app), default_timeout=60), name)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_console_lists_bundles_and_nodes_only_to_who_has_a_right_on_them(console_copy):
    outsider = _console("outsider", "views/bundles.py")
    assert not outsider.dataframe
    assert "No bundle of a project you may read" in outsider.info[0].value
    viewer = _console("viewer", "views/bundles.py")  # reads every project
    assert any("v1" in set(d.value["bundle"]) for d in viewer.dataframe if "bundle" in d.value)

    infras = _console("ops", "views/infrastructures.py")  # rights on every stage
    shown = {i for d in infras.dataframe for i in d.value["infrastructure"]}
    assert {demo.AUTOMATION_INFRA, demo.API_INFRA} <= shown
    assert [b.key for b in infras.button] == ["nodal_sign_out"]  # adding: administrators
    assert not _console("outsider", "views/infrastructures.py").dataframe
    admin = _console("admin", "views/infrastructures.py")
    assert {b.key for b in admin.button} >= {"stage_button", "infra_button"}


def test_a_projects_administrator_grants_rights_on_it_from_the_people_page(console_copy):
    store = console_copy
    accounts.create_user(store, "admin", "lead")
    rights.grant(store, "admin", "user", "lead", "project", demo.PROJECT, "admin")
    assert not rights.allowed(store, "outsider", "read", project=demo.PROJECT)
    assert not _console("viewer", "views/people.py").get("form")  # no project to administer

    at = _console("lead", "views/people.py")
    assert "Rights on the projects you administer" in [s.value for s in at.subheader]
    at.text_input[0].input("outsider")
    assert at.selectbox[0].options == [demo.PROJECT]
    at.selectbox[1].select("read")
    at.button[0].click().run()  # Grant
    assert not at.exception, at.exception
    assert rights.allowed(store, "outsider", "read", project=demo.PROJECT)
    assert "outsider may now read on project fraud" in at.success[0].value
    event = audit.events(store, action="grant")[0]
    assert (event.actor, event.object_id) == ("lead", "outsider")
