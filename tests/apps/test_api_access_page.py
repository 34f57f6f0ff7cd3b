"""The Deployer Console's API deployments page (AppTest): redeploying a key-protected service
keeps it key-protected; its access mode changes only when the person picks one."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.access import accounts
from engine.deployer import api_deployer, apipackages
from engine.deployer import deployments as deployer
from engine.design import projects as design
from nodal_demo import demo
from tests.homes import copy_home, environ

CONSOLE = Path(__file__).resolve().parents[2] / "apps" / "deployer_console" / "app.py"
DEP = deployer.deployment_id_for(demo.SERVICE, demo.API_INFRA)
ACTOR = "test"  # an administrator of test homes (tests/homes.py)


def _console(store) -> AppTest:
    at = AppTest.from_file(str(CONSOLE), default_timeout=120)
    at.session_state["nodal_session_token"] = accounts.open_session(store, ACTOR)
    at.run()
    at.switch_page("views/api_deployments.py").run()
    assert not at.exception, at.exception
    return at


def test_a_redeploy_from_the_console_keeps_a_key_protected_service_protected(
    demo_env, tmp_path, monkeypatch
):
    settings, store = copy_home(demo_env.settings, tmp_path)
    for key, value in environ(settings).items():
        monkeypatch.setenv(key, value)
    project = design.open_project(settings, demo.PROJECT)
    apipackages.create_package(settings.home, store, project, demo.SERVICE, "v2", "two", ACTOR)
    api_deployer.set_access(store, DEP, "keys", ACTOR)

    at = _console(store)
    at.selectbox(key="api_service").set_value(demo.SERVICE).run()
    at.selectbox(key="api_infra").set_value(demo.API_INFRA).run()
    at.multiselect(key="api_versions").set_value(["v2"]).run()
    at.button(key="api_deploy").click().run()  # "Access" left as the page shows it
    assert not at.exception and not at.error, [e.value for e in at.error]
    dep = api_deployer.get_api_deployment(store, DEP)
    assert (dep.deployment.version, dep.access_mode) == ("v2", "keys")
    assert "(keys)" in at.success[0].value
    access = at.selectbox(key="api_access")
    assert access.value is None and access.format_func(None) == "unchanged (keys)"

    # Choosing a mode is what changes it.
    at.selectbox(key="api_access").set_value("public").run()
    at.multiselect(key="api_versions").set_value(["v1"]).run()
    at.button(key="api_deploy").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    dep = api_deployer.get_api_deployment(store, DEP)
    assert (dep.deployment.version, dep.access_mode) == ("v1", "public")
