"""The automation node activates only the bundle that was published, and one broken
deployment does not stop the others: it is reported as ERROR, the good ones activate and
their queued runs run (real zips, a real control store, the runner's own tick)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.automation.scheduler import Runner
from engine.core.artifacts import sha256_file
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.storage.control import bundles as bundle_rows
from tests.engine.core.zips import patch_member, swap
from tests.engine.small_project import make_small

INFRA = "auto"
HELLO = "name: hello\nsteps:\n  - {name: q, type: sql, sql: 'SELECT 1'}\n"


class NowScheduler:
    """Runs what the runner submits at once; keeps its cron jobs without firing them."""

    def __init__(self) -> None:
        self.cron: dict[str, object] = {}

    def add_job(self, func, trigger=None, args=(), id=None, **_):
        if trigger is None:
            func(*args)
        else:
            self.cron[id] = trigger

    def remove_job(self, job_id: str) -> None:
        del self.cron[job_id]


def _two_projects(tmp_path):
    """``shop`` and ``depot`` bundled (s1, d1) and deployed on one automation node."""
    small = make_small(tmp_path, with_shops=False)
    settings, store = small.settings, small.store
    design.create_project(settings, store, "depot", "the other project", actor="test")
    deployer.create_infra(store, INFRA, "automation", "prod", actor="test")
    infos = {}
    for name, bundle_id in (("shop", "s1"), ("depot", "d1")):
        project = design.open_project(settings, name)
        (project.root / "scenarios").mkdir(exist_ok=True)
        (project.root / "scenarios" / "hello.yaml").write_text(HELLO)
        project = design.open_project(settings, name)
        infos[name] = bundles.create_bundle(settings.home, store, project, bundle_id, "", "ann")
        deployer.deploy_bundle(store, name, bundle_id, INFRA, "ops")
    return settings, store, infos


def _status(store, project):
    dep = deployer.get_deployment(store, deployer.deployment_id_for(project, INFRA))
    return dep.status, dep.node_version, dep.node_message


def test_a_swapped_bundle_with_a_self_consistent_manifest_is_refused_by_the_node(tmp_path):
    settings, store, infos = _two_projects(tmp_path)
    depot = infos["depot"]
    evil = HELLO.replace("SELECT 1", "SELECT 2").encode()  # a valid bundle, not the published one
    swap(depot.path, {"scenarios/hello.yaml": evil})
    bundles.verify_bundle(depot.path, project="depot", bundle_id="d1")  # agrees with itself

    node = AutomationNode(settings, store, INFRA)
    results = {r.project: r for r in node.sync()}
    assert results["shop"].status == "HEALTHY" and node.active_bundle("shop") == "s1"
    assert results["depot"].status == "ERROR" and node.active_bundle("depot") is None
    status, version, message = _status(store, "depot")
    assert (status, version) == ("ERROR", None)
    assert "activation of d1 failed, nothing stays active: bundle d1.zip" in message
    assert "SHA-256" in message and "recorded in the control store" in message
    assert not node.bundle_dir("depot", "d1").exists()  # nothing of it was extracted


def _break(store, info, how, monkeypatch):
    if how == "unreadable member":
        # A member no zip reader can decompress, in the zip the control store vouches for.
        patch_member(info.path, "scenarios/hello.yaml", method=99)
        with store.write() as conn:
            conn.execute(
                sa.update(bundle_rows)
                .where(bundle_rows.c.project == info.project)
                .values(sha256=sha256_file(info.path))
            )
        return "member scenarios/hello.yaml is corrupted"
    # A failure nobody foresaw (a bug), raised while checking this one bundle.
    checks = AutomationNode.preactivation_checks

    def failing(self, project):
        if project.name == info.project:
            raise RuntimeError("boom in a check")
        return checks(self, project)

    monkeypatch.setattr(AutomationNode, "preactivation_checks", failing)
    return "unexpected RuntimeError: boom in a check"


@pytest.mark.parametrize("how", ["unreadable member", "unexpected error"])
def test_one_broken_deployment_does_not_stop_the_others_nor_their_queued_runs(
    tmp_path, monkeypatch, caplog, how
):
    settings, store, infos = _two_projects(tmp_path)
    expected = _break(store, infos["depot"], how, monkeypatch)
    run_id = runs.request_run(store, INFRA, "shop", "hello", "manual")

    node = AutomationNode(settings, store, INFRA)
    Runner(node, NowScheduler()).tick()  # one poll of the runner: sync, then queued runs

    assert "sync failed" not in caplog.text
    assert runs.get_run(store, run_id)["status"] == runs.SUCCESS
    assert node.active_bundle("shop") == "s1"
    assert _status(store, "shop")[:2] == ("HEALTHY", "s1")
    status, version, message = _status(store, "depot")
    assert (status, version) == ("ERROR", None) and node.active_bundle("depot") is None
    assert message.startswith("activation of d1 failed, nothing stays active: ")
    assert expected in message, message
    if how == "unexpected error":
        assert "Traceback" in caplog.text and "boom in a check" in caplog.text

    # The next poll reports the same, once in the history, and the good project still runs.
    again = runs.request_run(store, INFRA, "shop", "hello", "manual")
    Runner(node, NowScheduler()).tick()
    assert runs.get_run(store, again)["status"] == runs.SUCCESS
    errors = [
        h
        for h in deployer.history(store, deployer.deployment_id_for("depot", INFRA))
        if h["outcome"] == "ERROR"
    ]
    assert len(errors) == 1


def test_the_deployer_refuses_to_deploy_a_swapped_bundle(tmp_path):
    settings, store, infos = _two_projects(tmp_path)
    depot = infos["depot"]
    swap(depot.path, {"scenarios/hello.yaml": HELLO.replace("SELECT 1", "SELECT 2").encode()})
    with pytest.raises(bundles.BundleError, match="recorded in the control store"):
        deployer.deploy_bundle(store, "depot", "d1", INFRA, "ops", action="update")


def test_a_project_whose_triggers_cannot_be_read_keeps_its_schedule_and_spares_the_others(
    tmp_path, monkeypatch
):
    from apscheduler.schedulers.background import BackgroundScheduler

    settings, store, _ = _two_projects(tmp_path)
    node = AutomationNode(settings, store, INFRA)
    node.sync()
    runner = Runner(node, BackgroundScheduler(timezone="UTC"))
    monkeypatch.setattr(
        node, "enabled_triggers", lambda p: [("hello", 0, {"type": "time", "cron": "0 6 * * *"})]
    )
    runner.reconcile_schedules()
    assert set(runner._triggers) == {"depot:hello:0", "shop:hello:0"}
    real = [("hello", 0, {"type": "time", "cron": "0 7 * * *"})]

    def broken(project):
        if project == "depot":
            raise OSError("bundle folder damaged")
        return real

    monkeypatch.setattr(node, "enabled_triggers", broken)
    runner.reconcile_schedules()  # used to raise, and the tick skipped every queued run
    assert runner._triggers == {"depot:hello:0": "0 6 * * *", "shop:hello:0": "0 7 * * *"}
