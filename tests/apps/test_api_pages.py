"""API pages with AppTest: the Deployer Console's API deployments and keys, and the
Design Studio's API Designer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.deployer import api_deployer, apikeys, apipackages
from engine.deployer import deployments as deployer
from engine.design import apidesigner
from engine.design import projects as design
from nodal_demo import demo
from tests.homes import copy_home, environ, sign_in_app

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "apps" / "deployer_console" / "app.py"
STUDIO = ROOT / "apps" / "design_studio" / "app.py"
DEP = deployer.deployment_id_for(demo.SERVICE, demo.API_INFRA)


@pytest.fixture(scope="module")
def api_copy(demo_env, tmp_path_factory):
    """A copy of the demo home with API package v2 next to v1."""
    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("api_pages"))
    project = design.open_project(settings, demo.PROJECT)
    apipackages.create_package(settings.home, store, project, demo.SERVICE, "v2", "two", "analyst")
    return settings, store


@pytest.fixture
def seen(api_copy, monkeypatch):
    for key, value in environ(api_copy[0]).items():
        monkeypatch.setenv(key, value)
    return api_copy


def _open(app: Path, page: str) -> AppTest:
    at = sign_in_app(AppTest.from_file(str(app), default_timeout=120))
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_api_deployments_page_deploys_a_split_and_rolls_back(seen):
    _, store = seen
    at = _open(CONSOLE, "views/api_deployments.py")
    table = at.dataframe[0].value.set_index("deployment")
    assert table.loc[DEP, "traffic"] == "v1"
    at.multiselect(key="api_versions").set_value(["v1", "v2"]).run()
    at.number_input(key="api_share_v1").set_value(80).run()
    at.number_input(key="api_share_v2").set_value(30).run()
    at.button(key="api_deploy").click().run()
    assert "sum to 1" in at.error[0].value
    assert api_deployer.get_api_deployment(store, DEP).traffic[0]["generation"] == "v1"
    at.number_input(key="api_share_v2").set_value(20).run()
    at.button(key="api_deploy").click().run()
    assert not at.exception, at.exception
    assert "v1=80%,v2=20%" in at.success[0].value
    assert api_deployer.get_api_deployment(store, DEP).deployment.version == "v1=80%,v2=20%"
    history = at.dataframe[1].value
    assert history.iloc[0]["to"] == "v1=80%,v2=20%" and history.iloc[0]["from"] == "v1"
    at.button(key="api_rollback").click().run()
    assert "rolled back to **v1**" in at.success[0].value
    at.button(key="api_switch").click().run()
    assert api_deployer.get_api_deployment(store, DEP).deployment.version == "v2"


def test_api_keys_page_shows_a_new_key_once_and_revokes_it(seen):
    _, store = seen
    at = _open(CONSOLE, "views/api_keys.py")
    at.text_input(key="key_label").set_value("bank app").run()
    at.button(key="key_create").click().run()
    assert not at.exception, at.exception
    secret = at.code[0].value
    [key] = [k for k in apikeys.list_keys(store) if k.label == "bank app"]
    assert secret.startswith(f"nk_{key.key_id}_")
    at.run()
    assert not at.code  # shown once
    assert key.key_id in at.dataframe[0].value["key_id"].tolist()
    at.selectbox(key="key_revoke").set_value(key.key_id).run()
    at.button(key="key_revoke_button").click().run()
    assert "revoked" in at.success[0].value
    assert next(k for k in apikeys.list_keys(store) if k.key_id == key.key_id).revoked_at


def test_api_designer_page_edits_endpoints_tests_and_packages(seen):
    settings, store = seen
    at = _open(STUDIO, "views/api_designer.py")
    assert at.selectbox(key="api_service_pick").value == demo.SERVICE
    # A lookup endpoint on a built dataset.
    at.text_input(key="le_id").set_value("card_profile")
    at.selectbox(key="le_dataset").set_value("card_profiles")
    at.text_input(key="le_key").set_value("card_id")
    at.text_input(key="le_columns_text").set_value("credit_score, nope")
    at.button[1].click().run()  # the lookup form's submit button
    assert "no column nope" in at.error[0].value
    at.text_input(key="le_columns_text").set_value("credit_score")
    at.button[1].click().run()
    assert "Lookup endpoint **card_profile** saved" in at.success[0].value
    project = design.open_project(settings, demo.PROJECT)
    assert [e["id"] for e in project.api_services[demo.SERVICE]["endpoints"]] == [
        demo.ENDPOINT,
        "card_profile",
    ]
    # A hand-written test query missing a feature is refused; generated ones are saved.
    at.selectbox(key="tq_endpoint").set_value(demo.ENDPOINT).run()
    at.text_input(key="tq_name").set_value("no amount")
    at.text_area(key="tq_json").set_value(
        json.dumps({"card_id": "C1", "ts": "2026-11-10T00:00:00"})
    )
    at.button(key="tq_add").click().run()
    assert "missing feature" in at.error[0].value and "amount" in at.error[0].value
    at.selectbox(key="tq_dataset").set_value("transactions")
    at.number_input(key="tq_n").set_value(3)
    at.button(key="tq_generate").click().run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 6
    # Package with release notes, published to the deployer.
    at.text_input(key="pkg_version").set_value("v3")
    at.text_area(key="pkg_notes").set_value("adds the card lookup")
    at.button(key="pkg_create").click().run()
    assert "Package **v3**" in at.success[0].value
    info = apipackages.get_package(store, demo.SERVICE, "v3")
    assert info.release_notes == "adds the card lookup"
    assert len(apipackages.test_queries(info.path)[demo.ENDPOINT]) == 6
    at.text_input(key="pkg_version").set_value("v3")
    at.button(key="pkg_create").click().run()
    assert "already exists" in at.error[0].value


def test_dev_server_started_from_the_studio_answers_the_test_queries(seen, tmp_path):
    settings, _ = seen
    project = design.open_project(settings, demo.PROJECT)
    queries = apidesigner.queries_from_dataset(
        project, demo.SERVICE, demo.ENDPOINT, "transactions", 2
    )
    for q in queries:
        q["name"] = "dev-" + q["name"]
    apidesigner.add_test_queries(project, demo.SERVICE, demo.ENDPOINT, queries)
    at = _open(STUDIO, "views/api_designer.py")
    at.selectbox(key="tq_endpoint").set_value(demo.ENDPOINT).run()
    from tests.e2e import procs

    at.number_input(key="dev_port_input").set_value(procs.free_port())
    at.button(key="dev_start").click().run()
    pid = at.session_state["api_dev_pid"]
    try:
        url = f"http://127.0.0.1:{at.session_state['api_dev_port']}"
        procs.wait_for(
            lambda: apidesigner.dev_server_ready(url, demo.SERVICE), 60, "the dev server"
        )
        at.run()
        at.button(key="dev_run").click().run()
        assert not at.exception, at.exception
        results = at.session_state["api_test_results"]
        assert len(results) >= 2 and all(r["ok"] for r in results), results
        assert {r["generation"] for r in results} == {"dev"}
    finally:
        apidesigner.stop_dev_server(pid)
    at.button(key="dev_stop").click().run()
    assert "api_dev_pid" not in at.session_state


def test_api_designer_page_refuses_a_stale_save_and_shows_the_difference(seen):
    settings, _ = seen
    at = _open(STUDIO, "views/api_designer.py")
    service_file = design.open_project(settings, demo.PROJECT).root / apidesigner.service_rel(
        demo.SERVICE
    )
    # Another analyst saves the service after this page showed it.
    apidesigner.save_lookup_endpoint(
        design.open_project(settings, demo.PROJECT),
        demo.SERVICE,
        "their_lookup",
        "card_profiles",
        "card_id",
    )
    theirs = service_file.read_bytes()
    at.text_input(key="le_id").set_value("my_lookup")
    at.selectbox(key="le_dataset").set_value("card_profiles")
    at.text_input(key="le_key").set_value("card_id")
    at.button[1].click().run()  # the lookup form's submit button
    assert not at.exception, at.exception
    assert "changed by someone else" in at.error[0].value
    diff = next(c.value for c in at.code if c.language == "diff")
    assert "-- id: their_lookup" in diff and "+- id: my_lookup" in diff
    assert service_file.read_bytes() == theirs
    # The page now shows their version; saving again lands on top of it.
    at.button[1].click().run()
    assert "Lookup endpoint **my_lookup** saved" in at.success[0].value
    ids = [
        e["id"]
        for e in design.open_project(settings, demo.PROJECT).api_services[demo.SERVICE]["endpoints"]
    ]
    assert "their_lookup" in ids and "my_lookup" in ids
    # Removing a test query from a stale page is refused the same way.
    at.selectbox(key="tq_endpoint").set_value("my_lookup").run()
    apidesigner.add_test_queries(
        design.open_project(settings, demo.PROJECT),
        demo.SERVICE,
        "my_lookup",
        [{"name": "c1", "data": {"card_id": "C1"}}],
    )
    at.run()
    assert at.selectbox(key="tq_remove").value == "c1"
    apidesigner.add_test_queries(
        design.open_project(settings, demo.PROJECT),
        demo.SERVICE,
        "my_lookup",
        [{"name": "c2", "data": {"card_id": "C2"}}],
    )
    at.button(key="tq_remove_button").click().run()
    assert "changed by someone else" in at.error[0].value
    at.button(key="tq_remove_button").click().run()
    assert "Test query **c1** removed" in at.success[0].value
    endpoints = design.open_project(settings, demo.PROJECT).api_services[demo.SERVICE]["endpoints"]
    mine = next(e for e in endpoints if e["id"] == "my_lookup")
    assert [q["name"] for q in mine["test_queries"]] == ["c2"]
