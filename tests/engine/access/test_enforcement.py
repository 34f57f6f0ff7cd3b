"""Every right is checked by the engine itself, whoever calls it: the demo's people on a
copy of the demo home (analyst: write on every project; ops: deploy, run and configure on
every stage, keys and access on every service, read projects; viewer: read projects)."""

from __future__ import annotations

import pytest

from engine.access import accounts, audit, rights
from engine.access.rights import PermissionDenied
from engine.automation import runs
from engine.deployer import api_deployer, apikeys, bundles
from engine.deployer import deployments as deployer
from engine.deployer import rollback as rollbacks
from engine.design import projects as design
from engine.project import flow, recipes
from nodal_demo import demo
from tests.homes import copy_home

PROD = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)
API = deployer.deployment_id_for(demo.SERVICE, demo.API_INFRA)


@pytest.fixture
def home(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = design.open_as(settings, store, "analyst", demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "v2", "next", "analyst")
    accounts.create_user(store, "admin", "newcomer")  # no grant at all
    return settings, store


def _refused(call, *args, match: str, **kwargs):
    with pytest.raises(PermissionDenied, match=match):
        call(*args, **kwargs)


def test_deploy_promote_and_rollback_need_deploy_on_the_infrastructure(home):
    _, store = home
    _refused(
        deployer.deploy_bundle,
        store,
        demo.PROJECT,
        "v2",
        demo.AUTOMATION_INFRA,
        "analyst",
        match="analyst may not deploy to infra 'automation-prod'",
    )
    assert deployer.get_deployment(store, PROD).version == "v1"  # nothing changed
    deployer.create_infra(store, "automation-dev", "automation", "dev", actor="admin")
    dev = deployer.deploy_bundle(store, demo.PROJECT, "v2", "automation-dev", "ops")
    _refused(
        deployer.promote,
        store,
        dev.deployment_id,
        demo.AUTOMATION_INFRA,
        "analyst",
        match="deploy to infra",
    )
    deployer.promote(store, dev.deployment_id, demo.AUTOMATION_INFRA, "ops")
    _refused(rollbacks.rollback, store, PROD, "viewer", match="viewer may not deploy")
    assert rollbacks.rollback(store, PROD, "ops").version == "v1"
    # a stage grant covers its infrastructures, and takes effect at once
    rights.grant(store, "admin", "user", "analyst", "stage", "dev", "deploy")
    deployer.deploy_bundle(store, demo.PROJECT, "v1", "automation-dev", "analyst")
    _refused(
        deployer.deploy_bundle,
        store,
        demo.PROJECT,
        "v2",
        demo.AUTOMATION_INFRA,
        "analyst",
        match="deploy",
    )


def test_running_and_aborting_scenarios_need_run(home):
    _, store = home
    _refused(
        runs.request_manual_run,
        store,
        "viewer",
        demo.AUTOMATION_INFRA,
        demo.PROJECT,
        "daily_scoring",
        match="viewer may not run or abort scenarios on infra",
    )
    run_id = runs.request_manual_run(
        store, "ops", demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring"
    )
    assert runs.get_run(store, run_id)["trigger"] == "manual (ops)"
    _refused(runs.request_abort, store, run_id, "analyst", match="run or abort")
    assert runs.get_run(store, run_id)["status"] == runs.QUEUED
    assert runs.request_abort(store, run_id, "ops") == runs.ABORTED


def test_variables_and_triggers_need_configure(home):
    _, store = home
    _refused(
        deployer.set_variables,
        store,
        PROD,
        {"x": "1"},
        "analyst",
        match="change variables and triggers",
    )
    _refused(
        deployer.set_trigger,
        store,
        PROD,
        "daily_scoring",
        0,
        False,
        "viewer",
        match="change variables and triggers",
    )
    assert deployer.get_deployment(store, PROD).variables == {}
    deployer.set_variables(store, PROD, {"x": "1"}, "ops")
    deployer.set_trigger(store, PROD, "daily_scoring", 0, False, "ops")


def test_api_keys_and_access_mode_need_their_service_rights(home):
    _, store = home
    _refused(apikeys.create_key, store, demo.SERVICE, "analyst", match="manage the API keys")
    key, _secret = apikeys.create_key(store, demo.SERVICE, "ops")
    _refused(apikeys.revoke_key, store, key.key_id, "viewer", match="manage the API keys")
    apikeys.revoke_key(store, key.key_id, "ops")
    _refused(api_deployer.set_access, store, API, "keys", "analyst", match="deploy")
    rights.grant(store, "admin", "user", "analyst", "infra", demo.API_INFRA, "deploy")
    _refused(api_deployer.set_access, store, API, "keys", "analyst", match="change the access mode")
    assert api_deployer.set_access(store, API, "keys", "ops").access_mode == "keys"


def test_project_changes_need_write_and_seeing_it_needs_read(home):
    settings, store = home
    _refused(
        design.open_as,
        settings,
        store,
        "newcomer",
        demo.PROJECT,
        match="newcomer may not read project 'fraud'",
    )
    assert design.visible_projects(store, "newcomer") == []
    assert [p["name"] for p in design.visible_projects(store, "viewer")] == [demo.PROJECT]
    seen = design.open_as(settings, store, "viewer", demo.PROJECT)  # reading is fine
    _refused(flow.build, seen, "card_profiles", match="viewer may not change project")
    _refused(recipes.preview, seen, "SELECT 1 AS x", [], match="may not change")
    _refused(
        bundles.create_bundle,
        settings.home,
        store,
        seen,
        "v3",
        "",
        "viewer",
        match="may not change",
    )
    _refused(design.create_project, settings, store, "mine", actor="viewer", match="change")


def test_infrastructure_stages_people_and_rights_are_for_administrators(home):
    _, store = home
    _refused(
        deployer.create_infra,
        store,
        "x",
        "automation",
        "prod",
        actor="ops",
        match="not an administrator",
    )
    _refused(deployer.create_stage, store, "qa", actor="ops", match="not an administrator")
    _refused(
        rights.grant,
        store,
        "ops",
        "user",
        "ops",
        "project",
        "*",
        "admin",
        match="not an administrator",
    )
    _refused(accounts.create_user, store, "analyst", "friend", match="not an administrator")


def test_each_kind_of_change_is_in_the_audit_trail_with_its_person(home):
    _, store = home
    deployer.deploy_bundle(store, demo.PROJECT, "v2", demo.AUTOMATION_INFRA, "ops")
    deployer.set_variables(store, PROD, {"x": "1"}, "ops")
    deployer.set_trigger(store, PROD, "daily_scoring", 0, False, "ops")
    run_id = runs.request_manual_run(
        store, "ops", demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring"
    )
    runs.request_abort(store, run_id, "ops")
    api_deployer.set_access(store, API, "keys", "ops")
    key, _ = apikeys.create_key(store, demo.SERVICE, "ops")
    apikeys.revoke_key(store, key.key_id, "ops")
    rights.grant(store, "admin", "user", "newcomer", "project", demo.PROJECT, "read")
    seen = {(e.action, e.actor) for e in audit.events(store)}
    for action, actor in [
        ("bundle.create", "analyst"),
        ("deployment.update", "ops"),
        ("deployment.variables", "ops"),
        ("deployment.trigger", "ops"),
        ("run.request", "ops"),
        ("run.abort", "ops"),
        ("api.access", "ops"),
        ("key.create", "ops"),
        ("key.revoke", "ops"),
        ("user.create", "admin"),
        ("grant", "admin"),
    ]:
        assert (action, actor) in seen, (action, actor)
    variables = audit.events(store, action="deployment.variables")[0]
    assert (variables.before, variables.after) == ({}, {"x": "1"})


def test_accepting_a_new_baseline_on_a_production_node_needs_configure(home):
    from engine.automation.node import AutomationNode
    from engine.project import checks

    settings, store = home
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    project = node.project(demo.PROJECT)
    day = max(flow.available_partitions(project, "transactions"))  # the day the run checked
    args = (
        project,
        "transactions",
        "distinct_merchants_in_typical_range",
        day,
        store,
        demo.AUTOMATION_INFRA,
    )
    _refused(checks.accept_baseline, *args, "analyst", match="change variables and triggers")
    base = checks.accept_baseline(*args, "ops")
    assert base.actor == "ops"
    event = audit.events(store, action="baseline.accept")[0]
    assert event.actor == "ops" and event.after["partition"] == day


def test_activating_a_model_version_needs_write_and_is_audited(home):
    from engine.models import saved as models

    settings, store = home
    viewer = design.open_as(settings, store, "viewer", demo.PROJECT)
    _refused(models.set_active, viewer, demo.MODEL, "v1", match="viewer may not change")
    analyst = design.open_as(settings, store, "analyst", demo.PROJECT)
    models.set_active(analyst, demo.MODEL, "v1")
    event = audit.events(store, action="model.activate")[0]
    assert (event.actor, event.object_id) == ("analyst", f"{demo.PROJECT}/{demo.MODEL}")
    assert event.after == {"version": "v1"}


def test_editing_a_projects_definitions_needs_write(home):
    from engine.project import checks, definitions

    settings, store = home
    viewer = design.open_as(settings, store, "viewer", demo.PROJECT)
    before = (viewer.root / "checks.yaml").read_text()
    _refused(
        checks.add_check,
        viewer,
        "transactions",
        {"name": "c", "type": "not_null", "column": "amount"},
        match="viewer may not change",
    )
    _refused(definitions.save_project, viewer, {"notes.yaml": "x: 1\n"}, match="may not change")
    assert (viewer.root / "checks.yaml").read_text() == before
    assert not (viewer.root / "notes.yaml").exists()
    analyst = design.open_as(settings, store, "analyst", demo.PROJECT)
    checks.add_check(analyst, "transactions", {"name": "c", "type": "not_null", "column": "amount"})


def test_people_see_the_deployments_of_projects_they_read_or_nodes_they_serve(home):
    _, store = home
    every = deployer.list_deployments(store)
    assert deployer.visible_to(store, "newcomer", every) == []
    seen = {d.deployment_id for d in deployer.visible_to(store, "viewer", every)}
    assert seen == {PROD, API}  # the project, and its service (by its packages' project)
    assert len(deployer.visible_to(store, "ops", every)) == len(every)  # stage rights: all


def test_what_an_automation_node_changes_is_in_the_audit_trail_as_the_node(home):
    from engine.automation.node import AutomationNode
    from engine.models import saved as models

    settings, store = home
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    project = node.project(demo.PROJECT)  # its copy of the deployed bundle
    models.set_active(project, demo.MODEL, "v1")  # what a retrain that passes its gate does
    event = audit.events(store, action="model.activate")[0]
    assert event.actor == f"node:{demo.AUTOMATION_INFRA}"
    assert event.object_id == f"{demo.PROJECT}/{demo.MODEL}"
    assert event.after == {"version": "v1"}


def test_the_console_lists_only_the_bundles_packages_and_nodes_a_person_has_a_right_on(home):
    from engine.deployer import apipackages, visibility

    _, store = home
    every_bundle, every_package = bundles.list_bundles(store), apipackages.list_packages(store)
    every_infra = deployer.list_infras(store)
    assert every_bundle and every_package and every_infra
    assert visibility.bundles_for(store, "newcomer", every_bundle) == []
    assert visibility.packages_for(store, "newcomer", every_package) == []
    assert visibility.infras_for(store, "newcomer", every_infra) == []
    assert visibility.bundles_for(store, "viewer", every_bundle) == every_bundle  # reads all
    assert visibility.infras_for(store, "viewer", every_infra) == []  # no right on a node
    assert visibility.infras_for(store, "ops", every_infra) == every_infra  # every stage
    rights.grant(store, "admin", "user", "newcomer", "infra", demo.API_INFRA, "view")
    assert [i["infra_id"] for i in visibility.infras_for(store, "newcomer", every_infra)] == [
        demo.API_INFRA
    ]
    assert visibility.infras_for(store, "newcomer", every_infra, "deploy") == []
