"""The API Deployer: traffic splits, switch to newest, rollback, history, test queries, keys."""

from __future__ import annotations

import json

import pytest

from engine.apinode.node import ApiNode
from engine.deployer import api_deployer, apikeys, apipackages, rollback
from engine.deployer import deployments as deployer
from engine.deployer.deployments import DeployerError
from engine.design import apidesigner
from engine.design import projects as design
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

SERVICE = demo.SERVICE
DEP = deployer.deployment_id_for(SERVICE, demo.API_INFRA)


@pytest.fixture(scope="module")
def home(demo_env, tmp_path_factory):
    settings, store = copy_home(demo_env.settings, tmp_path_factory.mktemp("apideployer"))
    project = design.open_project(settings, demo.PROJECT)
    queries = apidesigner.queries_from_dataset(project, SERVICE, demo.ENDPOINT, "transactions", 2)
    apidesigner.add_test_queries(project, SERVICE, demo.ENDPOINT, queries)
    project = design.open_project(settings, demo.PROJECT)
    for version in ("v2", "v3"):
        apipackages.create_package(settings.home, store, project, SERVICE, version, "", "analyst")
    return settings, store


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ([("v1", 0.5), ("v2", 0.6)], "sum to 1"),
        ([("v1", 1.5)], "between 0 and 1"),
        ([("v1", 0.5), ("v1", 0.5)], "appears twice"),
        ([("v9", 1.0)], "no package version 'v9'"),
        ([], "at least one"),
    ],
)
def test_bad_splits_are_refused_and_change_nothing(home, split, message):
    _, store = home
    before = api_deployer.get_api_deployment(store, DEP)
    history = deployer.history(store, DEP)
    with pytest.raises((DeployerError, apipackages.PackageError), match=message):
        api_deployer.deploy(store, SERVICE, demo.API_INFRA, split, "ops")
    assert api_deployer.get_api_deployment(store, DEP) == before
    assert deployer.history(store, DEP) == history


def test_split_switch_rollback_and_history(home):
    settings, store = home
    dep = api_deployer.deploy(store, SERVICE, demo.API_INFRA, [("v1", 0.9), ("v2", 0.1)], "alice")
    assert dep.deployment.version == "v1=90%,v2=10%" and dep.primary == "v1"
    node = ApiNode(settings, store, demo.API_INFRA)
    node.sync()
    served = node.services[SERVICE]
    assert set(served.generations) == {"v1", "v2"}
    assert api_deployer.get_api_deployment(store, DEP).deployment.status == "HEALTHY"

    api_deployer.switch_to_newest(store, SERVICE, demo.API_INFRA, "bob")
    assert api_deployer.get_api_deployment(store, DEP).traffic == [
        {"generation": "v3", "proba": 1.0}
    ]
    assert api_deployer.get_api_deployment(store, DEP).deployment.status == "OUT_OF_SYNC"
    node.sync()
    assert set(node.services[SERVICE].generations) == {"v3"}

    back = api_deployer.rollback(store, DEP, "carol")
    assert back.traffic == [
        {"generation": "v1", "proba": 0.9},
        {"generation": "v2", "proba": 0.1},
    ]
    changes = api_deployer.changes(store, DEP)
    assert [(c["actor"], c["action"], c["from"], c["to"]) for c in changes[:3]] == [
        ("carol", "rollback", "v3", "v1=90%,v2=10%"),
        ("bob", "switch", "v1=90%,v2=10%", "v3"),
        ("alice", "deploy", "v1", "v1=90%,v2=10%"),
    ]
    # The project deployer's history and rollback read API splits too.
    hist = deployer.history(store, DEP)
    assert (hist[0]["actor"], hist[0]["from_version"], hist[0]["to_version"]) == (
        "carol",
        "v3",
        "v1=90%,v2=10%",
    )
    rollback.rollback(store, DEP, "dave")
    assert api_deployer.get_api_deployment(store, DEP).generations == ["v3"]


def test_package_test_queries_run_in_process_and_failures_are_named(home):
    _, store = home
    results = apidesigner.run_package_tests_locally(store, SERVICE, "v2")
    assert len(results) == 5 and all(r.ok for r in results), results
    assert all(0 <= r.proba <= 1 for r in results)
    tests = apidesigner.package_tests(store, SERVICE, "v2")
    broken = {demo.ENDPOINT: [{**tests[demo.ENDPOINT][0], "expect": {"prediction": "2"}}]}
    node = ApiNode(home[0], store, demo.API_INFRA)
    endpoints = node.load_version(SERVICE, "v2").endpoints
    [bad] = apidesigner.run_test_queries(broken, SERVICE, endpoints=endpoints)
    assert not bad.ok and "expected prediction='2'" in bad.message


def test_a_test_query_missing_a_feature_is_refused(home):
    settings, _ = home
    project = design.open_project(settings, demo.PROJECT)
    path = apidesigner.service_path(project, SERVICE)
    before = path.read_text()
    with pytest.raises(apidesigner.DesignerError, match="missing feature.*amount"):
        apidesigner.add_test_queries(
            project,
            SERVICE,
            demo.ENDPOINT,
            [{"name": "no amount", "features": {"card_id": "C1", "ts": "2026-11-10T00:00:00"}}],
        )
    assert path.read_text() == before


def test_cli_deploys_with_tests_lists_history_and_manages_keys(home):
    settings, store = home
    env = environ(settings)
    out = procs.nodal(["api", "deploy", "v2=0.5", "v3=0.5", "--infra", demo.API_INFRA], env)
    assert out.returncode == 0, out.stderr
    assert "v2 before switching: 5/5 test queries passed" in out.stdout
    assert "now v2=50%,v3=50%" in out.stdout
    out = procs.nodal(["api", "deploy", "v2=0.5", "v3=0.6", "--infra", demo.API_INFRA], env)
    assert out.returncode == 2 and "sum to 1" in out.stderr and "Traceback" not in out.stderr
    out = procs.nodal(["api", "history", "--infra", demo.API_INFRA], env)
    assert "v2=50%,v3=50%" in out.stdout and "before:v2: 5 ok, 0 failed" in out.stdout
    out = procs.nodal(["api", "keys", "create", "--label", "bank"], env)
    assert out.returncode == 0
    secret = out.stdout.splitlines()[1]
    key_id = secret.split("_")[1]
    revoked = procs.nodal(["api", "keys", "revoke", key_id], env)
    assert revoked.returncode == 0 and f"API key {key_id} revoked" in revoked.stdout
    assert [k.revoked_at is not None for k in apikeys.list_keys(store)] == [True]
    changes = api_deployer.changes(store, DEP)
    assert json.loads(changes[0]["to_json"])[0]["generation"] == "v2"
