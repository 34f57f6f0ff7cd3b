"""An API service's access mode changes only when someone asks for it: a redeploy, a switch or a
rollback keeps a key-protected service protected; and a deployment whose access mode the
control store does not hold is refused by the API node (403 ``AccessNotConfigured``), never
served to everyone."""

from __future__ import annotations

import sqlalchemy as sa
from litestar.testing import TestClient

from engine.apinode.http.app import create_app
from engine.deployer import api_deployer, apikeys, apipackages
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import api_traffic
from nodal_demo import demo
from tests.homes import copy_home

SERVICE = demo.SERVICE
URL = f"/public/api/v1/{SERVICE}/{demo.ENDPOINT}/predict"
DEP = deployer.deployment_id_for(SERVICE, demo.API_INFRA)
ACTOR = "test"  # an administrator of test homes (tests/homes.py)


def _home(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    apipackages.create_package(settings.home, store, project, SERVICE, "v2", "two", ACTOR)
    return settings, store


def test_a_redeploy_switch_or_rollback_keeps_the_access_mode(demo_env, tmp_path):
    _, store = _home(demo_env, tmp_path)
    api_deployer.set_access(store, DEP, "keys", ACTOR)
    assert api_deployer.get_api_deployment(store, DEP).access_mode == "keys"
    # A new split, as the Console's Deploy button sends it when nobody touches "Access".
    dep = api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v1", 0.8), ("v2", 0.2)], ACTOR)
    assert (dep.deployment.version, dep.access_mode) == ("v1=80%,v2=20%", "keys")
    assert api_deployer.rollback(store, DEP, ACTOR).access_mode == "keys"
    dep = api_deployer.switch_to_newest(store, SERVICE, demo.API_INFRA, ACTOR)
    assert (dep.deployment.version, dep.access_mode) == ("v2", "keys")
    # Only a caller that names a mode changes it.
    dep = api_deployer.deploy(
        store, SERVICE, demo.API_INFRA, [("v1", 1)], ACTOR, access_mode="public"
    )
    assert dep.access_mode == "public"
    dep = api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v2", 1)], ACTOR)
    assert dep.access_mode == "public"


def _forget_access(store, value: str | None) -> None:
    """The control store as a deployment made some other way leaves it: no access row (or a
    value that is not an access mode)."""
    with store.write() as conn:
        if value is None:
            conn.execute(sa.delete(api_traffic).where(api_traffic.c.deployment_id == DEP))
        else:
            conn.execute(
                sa.update(api_traffic)
                .where(api_traffic.c.deployment_id == DEP)
                .values(access_mode=value)
            )


def test_a_missing_access_mode_means_refused_not_public(demo_env, tmp_path):
    settings, store = _home(demo_env, tmp_path)
    api_deployer.set_access(store, DEP, "keys", ACTOR)
    _, secret = apikeys.create_key(store, SERVICE, ACTOR, infra_id=demo.API_INFRA)
    body = {"features": _good_record()}
    app = create_app(settings, demo.API_INFRA)
    with TestClient(app) as client:
        node = app.state.node
        for value in (None, "KEYS", ""):
            _forget_access(store, value)
            assert api_deployer.get_api_deployment(store, DEP).access_mode == "unset"
            node.sync()
            for headers in ({}, {"Authorization": f"Bearer {secret}"}):
                refused = client.post(URL, json=body, headers=headers)
                assert refused.status_code == 403, (value, refused.text)
                assert refused.json()["errorType"] == "AccessNotConfigured"
                assert "no access mode" in refused.json()["message"]
            report = deployer.get_deployment(store, DEP)
            assert report.status == "WARNING" and "refusing every request" in report.node_message
        # A redeploy that names no mode records the safe one: keys.
        dep = api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v1", 1)], ACTOR)
        assert dep.access_mode == "keys"
        node.sync()
        assert client.post(URL, json=body).status_code == 401
        ok = client.post(URL, json=body, headers={"Authorization": f"Bearer {secret}"})
        assert ok.status_code == 200, ok.text
        assert deployer.get_deployment(store, DEP).status == "HEALTHY"


def _good_record() -> dict:
    from tests.engine.apinode.test_api_serving import GOOD

    return dict(GOOD)
