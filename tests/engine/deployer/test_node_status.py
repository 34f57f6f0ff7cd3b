"""A node's status lives on the deployment; the history keeps real events only."""

from __future__ import annotations

import sqlalchemy as sa

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import bundles, rollback
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import deployment_history, now_iso, open_store
from nodal_demo import demo
from tests.homes import copy_home, seed_test_actors

DEPLOYMENT = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)


def _events(store, dep_id):
    return [
        (h["actor"], h["action"], h["from_version"], h["to_version"], h["outcome"])
        for h in deployer.history(store, dep_id)
    ]


def test_status_flips_stay_on_the_deployment_and_out_of_the_history(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'control.db'}")
    seed_test_actors(store)
    deployer.create_infra(store, "auto", "automation", "prod", actor="test")
    dep_id = deployer.set_version(store, "project", "shop", "auto", "v1", "dana").deployment_id
    deployer.report(store, dep_id, "v1", "HEALTHY", "bundle v1 active")
    activated = deployer.get_deployment(store, dep_id)
    assert activated.node_status_since == activated.node_reported_at

    since = []
    for status in ("HEALTHY", "WARNING", "WARNING", "HEALTHY", "UNHEALTHY", "HEALTHY"):
        deployer.report(store, dep_id, "v1", status, f"last run: {status.lower()}")
        dep = deployer.get_deployment(store, dep_id)
        assert dep.status == status and dep.node_message == f"last run: {status.lower()}"
        since.append(dep.node_status_since)
    # The time moves when the status changes, not at every report of the same status.
    assert since[0] == activated.node_status_since
    assert since[2] == since[1] != since[0]
    assert len(set(since[1:])) == 4

    # A failed activation is an event, recorded once however many syncs report it.
    deployer.set_version(store, "project", "shop", "auto", "v2", "dana", action="update")
    for _ in range(3):
        deployer.report(store, dep_id, "v1", "ERROR", "activation of v2 failed, v1 stays active")
    assert deployer.get_deployment(store, dep_id).status == "ERROR"
    deployer.report(store, dep_id, "v2", "HEALTHY", "bundle v2 active")
    assert _events(store, dep_id) == [
        ("node:auto", "activate", "v1", "v2", "HEALTHY"),
        ("node:auto", "activate", "v1", "v2", "ERROR"),
        ("dana", "update", "v1", "v2", "REQUESTED"),
        ("node:auto", "activate", None, "v1", "HEALTHY"),
        ("dana", "deploy", None, "v1", "REQUESTED"),
    ]
    # Rows an earlier version wrote for status flips stay stored but are not shown.
    with store.write() as conn:
        conn.execute(
            sa.insert(deployment_history).values(
                deployment_id=dep_id,
                action="activate",
                from_version="v2",
                to_version="v2",
                outcome="WARNING",
                message="last run aborted",
                actor="node:auto",
                at=now_iso(),
            )
        )
    assert _events(store, dep_id)[0] == ("node:auto", "activate", "v1", "v2", "HEALTHY")


def test_the_automation_node_reports_run_outcomes_without_writing_history(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path / "home")
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    before = deployer.history(store, DEPLOYMENT)

    def finished(status: str) -> None:
        run_id = runs.request_run(store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "t")
        runs.finish_run(store, run_id, status, f"run ended {status}")
        node.sync()

    seen = []
    for status in (runs.ABORTED, runs.SUCCESS, runs.FAILED, runs.WARNING, runs.SUCCESS):
        finished(status)
        seen.append(deployer.get_deployment(store, DEPLOYMENT).status)
    assert seen == ["WARNING", "HEALTHY", "UNHEALTHY", "WARNING", "HEALTHY"]
    assert deployer.history(store, DEPLOYMENT) == before

    # Real events still are: a new bundle deployed by a person, activated by the node, and
    # a rollback to the previous one.
    project = design.open_project(settings, demo.PROJECT)
    bundles.create_bundle(settings.home, store, project, "v2", "second", "analyst")
    deployer.deploy_bundle(store, demo.PROJECT, "v2", demo.AUTOMATION_INFRA, "dana")
    node.sync()
    finished(runs.ABORTED)
    finished(runs.SUCCESS)
    rollback.rollback(store, DEPLOYMENT, "ops")
    node.sync()
    finished(runs.FAILED)
    assert _events(store, DEPLOYMENT)[:4] == [
        ("node:automation-prod", "activate", "v2", "v1", "HEALTHY"),
        ("ops", "rollback", "v2", "v1", "REQUESTED"),
        ("node:automation-prod", "activate", "v1", "v2", "HEALTHY"),
        ("dana", "update", "v1", "v2", "REQUESTED"),
    ]
    assert len(deployer.history(store, DEPLOYMENT)) == len(before) + 4
