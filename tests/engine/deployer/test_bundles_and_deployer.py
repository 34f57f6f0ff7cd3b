"""Bundles are verified member by member; the deployer refuses bad input and changes nothing."""

from __future__ import annotations

import shutil
import zipfile

import pytest

from engine.automation.node import AutomationNode
from engine.core.artifacts import MANIFEST
from engine.deployer import bundles, rollback
from engine.deployer import deployments as deployer
from engine.design import projects as design
from nodal_demo import demo
from tests.conftest import DemoEnv
from tests.homes import copy_home

DEPLOYMENT = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)


def _flip_byte_in_member(zip_path, member: str) -> None:
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
    data = bytearray(zip_path.read_bytes())
    # local header: 30 bytes + name + extra, then the (compressed) member data
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))


@pytest.fixture
def env(demo_env, tmp_path):
    """A private copy of the demo home: these tests deploy, the shared home must not change."""
    settings, store = copy_home(demo_env.settings, tmp_path / "home")
    return DemoEnv(settings, store, design.open_project(settings, "fraud"), demo_env.run_id)


@pytest.fixture
def fresh_bundle(env, tmp_path):
    """A new bundle of the demo project, and an automation infra of its own."""
    store, project = env.store, env.project
    bundle_id = f"t-{tmp_path.name[-20:]}".replace("_", "-")
    info = bundles.create_bundle(env.settings.home, store, project, bundle_id, "test", "tester")
    deployer.create_infra(
        store, "automation-test", "automation", "test", exist_ok=True, actor="test"
    )
    return info


def test_bundle_manifest_lists_every_member_with_its_checksum(fresh_bundle):
    manifest = bundles.verify_bundle(fresh_bundle.path, project="fraud")
    assert manifest["bundle_id"] == fresh_bundle.bundle_id and manifest["created_by"] == "tester"
    members = manifest["members"]
    assert "recipes/features.sql" in members and "checks.yaml" in members
    version = manifest["models"]["fraud_model"]
    assert f"saved_models/fraud_model/{version}/model.txt" in members
    assert all(len(digest) == 64 for digest in members.values())


def test_a_changed_byte_is_refused_at_deploy_naming_the_member(env, fresh_bundle):
    _flip_byte_in_member(fresh_bundle.path, "recipes/features.sql")
    with pytest.raises(bundles.BundleError, match="recipes/features.sql"):
        deployer.deploy_bundle(env.store, "fraud", fresh_bundle.bundle_id, "automation-test", "ops")
    dep_ids = [d.deployment_id for d in deployer.list_deployments(env.store, "automation-test")]
    assert all(
        deployer.get_deployment(env.store, d).version != fresh_bundle.bundle_id for d in dep_ids
    )


def test_a_member_rewritten_with_a_valid_zip_fails_its_checksum(env, fresh_bundle, tmp_path):
    rebuilt = tmp_path / "rebuilt.zip"
    with zipfile.ZipFile(fresh_bundle.path) as src, zipfile.ZipFile(rebuilt, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "checks.yaml":
                data = data.replace(b"tolerance: 0.2", b"tolerance: 9.0")
            dst.writestr(item, data)
    shutil.copy(rebuilt, fresh_bundle.path)
    with pytest.raises(bundles.BundleError, match="checks.yaml fails its SHA-256 check"):
        deployer.deploy_bundle(env.store, "fraud", fresh_bundle.bundle_id, "automation-test", "ops")


def test_an_added_member_or_a_broken_manifest_is_refused(fresh_bundle):
    with zipfile.ZipFile(fresh_bundle.path, "a") as zf:
        zf.writestr("recipes/evil.sql", "SELECT 1")
    with pytest.raises(bundles.BundleError, match="recipes/evil.sql is not in the manifest"):
        bundles.verify_bundle(fresh_bundle.path)
    fresh_bundle.path.write_bytes(b"not a zip")
    with pytest.raises(bundles.BundleError, match="not a readable zip"):
        bundles.verify_bundle(fresh_bundle.path)
    assert MANIFEST == "manifest.json"


def test_a_bundle_of_another_project_is_refused(fresh_bundle):
    with pytest.raises(bundles.BundleError, match="belongs to project 'fraud', not 'churn'"):
        bundles.verify_bundle(fresh_bundle.path, project="churn")


def test_unknown_infrastructure_and_bundle_are_refused(env, fresh_bundle):
    with pytest.raises(deployer.DeployerError, match="unknown infrastructure 'nowhere'"):
        deployer.deploy_bundle(env.store, "fraud", fresh_bundle.bundle_id, "nowhere", "ops")
    with pytest.raises(bundles.BundleError, match="no bundle 'v999'"):
        deployer.deploy_bundle(env.store, "fraud", "v999", "automation-test", "ops")
    with pytest.raises(deployer.DeployerError, match="apinode node"):
        deployer.deploy_bundle(env.store, "fraud", fresh_bundle.bundle_id, "api-prod", "ops")
    with pytest.raises(bundles.BundleError, match="already exists"):
        bundles.create_bundle(
            env.settings.home,
            env.store,
            env.project,
            fresh_bundle.bundle_id,
            "",
            "test",
        )
    with pytest.raises(bundles.BundleError, match="invalid"):
        bundles.create_bundle(env.settings.home, env.store, env.project, "../x", "", "test")


def test_deploy_activate_and_roll_back_with_history(env, fresh_bundle):
    store = env.store
    dep = deployer.deploy_bundle(store, "fraud", "v1", "automation-test", "alice")
    node = AutomationNode(env.settings, store, "automation-test")
    node.sync()
    assert node.active_bundle("fraud") == "v1"
    deployer.deploy_bundle(store, "fraud", fresh_bundle.bundle_id, "automation-test", "bob")
    assert deployer.get_deployment(store, dep.deployment_id).status == "OUT_OF_SYNC"
    node.sync()
    assert node.active_bundle("fraud") == fresh_bundle.bundle_id
    assert deployer.get_deployment(store, dep.deployment_id).status == "HEALTHY"

    rollback.rollback(store, dep.deployment_id, "carol")
    node.sync()
    assert node.active_bundle("fraud") == "v1"
    requested = [
        h for h in deployer.history(store, dep.deployment_id) if h["outcome"] == "REQUESTED"
    ]
    assert [(h["actor"], h["action"], h["from_version"], h["to_version"]) for h in requested][
        :2
    ] == [
        ("carol", "rollback", fresh_bundle.bundle_id, "v1"),
        ("bob", "update", "v1", fresh_bundle.bundle_id),
    ]


def test_a_bundle_failing_preactivation_leaves_the_previous_one_active(env, fresh_bundle):
    store = env.store
    deployer.create_infra(
        store, "automation-pre", "automation", "test", exist_ok=True, actor="test"
    )
    dep = deployer.deploy_bundle(store, "fraud", "v1", "automation-pre", "alice")
    node = AutomationNode(env.settings, store, "automation-pre")
    node.sync()
    # The bundle verifies, but its model file is unusable once extracted.
    deployer.deploy_bundle(store, "fraud", fresh_bundle.bundle_id, "automation-pre", "bob")
    target = node.bundle_dir("fraud", fresh_bundle.bundle_id)
    from engine.core.artifacts import extract_verified

    extract_verified(fresh_bundle.path, target, "bundle")
    version = env.project.active_model_version("fraud_model")
    (target / "saved_models" / "fraud_model" / version / "model.txt").write_text("garbage")
    results = node.sync()
    assert node.active_bundle("fraud") == "v1"
    assert results[0].status == "ERROR" and "v1 stays active" in results[0].message
    assert deployer.get_deployment(store, dep.deployment_id).status == "ERROR"


def test_stages_are_user_defined_and_ordered(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    assert [s["name"] for s in deployer.list_stages(store)] == ["dev", "test", "prod"]
    deployer.create_stage(store, "staging", after="test", actor="test")
    deployer.create_stage(store, "dr", actor="test")
    assert [s["name"] for s in deployer.list_stages(store)] == [
        "dev",
        "test",
        "staging",
        "prod",
        "dr",
    ]
    with pytest.raises(deployer.DeployerError, match="unknown stage 'qa'.*nodal stage create qa"):
        deployer.create_infra(store, "automation-qa", "automation", "qa", actor="test")
    with pytest.raises(deployer.DeployerError, match="stage 'prod' already exists"):
        deployer.create_stage(store, "prod", actor="test")
    deployer.create_infra(store, "automation-staging", "automation", "staging", actor="test")
    with pytest.raises(deployer.DeployerError, match="used by automation-staging"):
        deployer.delete_stage(store, "staging", actor="test")
    deployer.delete_stage(store, "dr", actor="test")
    by_stage = deployer.deployments_by_stage(store)
    assert [s["name"] for s, _ in by_stage] == ["dev", "test", "staging", "prod"]
    assert DEPLOYMENT in [
        d.deployment_id for s, deps in by_stage if s["name"] == "prod" for d in deps
    ]


def test_promote_variables_and_triggers_are_recorded_in_the_history(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, "fraud")
    bundles.create_bundle(settings.home, store, project, "v2", "second", "analyst")
    deployer.create_infra(store, "automation-dev", "automation", "dev", actor="test")
    dev = deployer.deploy_bundle(store, "fraud", "v2", "automation-dev", "dana")
    prod = deployer.promote(store, dev.deployment_id, demo.AUTOMATION_INFRA, "paul")
    assert prod.deployment_id == DEPLOYMENT and prod.version == "v2"
    with pytest.raises(deployer.DeployerError, match="unknown infrastructure 'nowhere'"):
        deployer.promote(store, dev.deployment_id, "nowhere", "paul")

    deployer.set_variables(store, DEPLOYMENT, {"threshold_note": "strict", "n": 3}, "vera")
    assert deployer.get_deployment(store, DEPLOYMENT).variables == {
        "n": "3",
        "threshold_note": "strict",
    }
    with pytest.raises(deployer.DeployerError, match="variable name 'bad name' is invalid"):
        deployer.set_variables(store, DEPLOYMENT, {"bad name": 1}, "vera")
    deployer.set_trigger(store, DEPLOYMENT, "daily_scoring", 0, False, "tom")
    assert deployer.trigger_flags(store, DEPLOYMENT) == {("daily_scoring", 0): False}
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    assert ("daily_scoring", 0) not in {(n, i) for n, i, _ in node.enabled_triggers("fraud")}
    assert node.load("fraud", "v2").variables["threshold_note"] == "strict"

    rows = [
        (h["actor"], h["action"], h["from_version"], h["to_version"])
        for h in deployer.history(store, DEPLOYMENT)
    ]
    assert rows[:4] == [
        ("node:automation-prod", "activate", "v1", "v2"),
        ("tom", "trigger", "v2", "v2"),
        ("vera", "variables", "v2", "v2"),
        ("paul", "promote", "v1", "v2"),
    ]
    with pytest.raises(deployer.DeployerError, match="already runs 'v2'"):
        rollback.rollback(store, DEPLOYMENT, "ops", to_version="v2")


def test_a_bundle_with_a_trigger_cycle_or_a_bad_cron_is_not_activated(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    project = design.open_project(settings, "fraud")
    step = "steps:\n  - {name: q, type: sql, sql: 'SELECT 1'}\n"
    folder = project.root / "scenarios"
    (folder / "ping.yaml").write_text(
        "name: ping\ntriggers:\n  - {type: after_scenario, scenario: pong}\n" + step
    )
    (folder / "pong.yaml").write_text(
        "name: pong\ntriggers:\n  - {type: after_scenario, scenario: ping}\n"
        "  - {type: time, cron: '0 25 * * *'}\n" + step
    )
    bundles.create_bundle(settings.home, store, project, "v-cycle", "", "analyst")
    with pytest.raises(deployer.DeployerError, match="cannot be deployed"):
        deployer.deploy_bundle(store, "fraud", "v-cycle", demo.AUTOMATION_INFRA, "ops")
    # a node still refuses such a bundle if it gets there anyway
    deployer.set_version(store, "project", "fraud", demo.AUTOMATION_INFRA, "v-cycle", "ops")
    (result,) = node.sync()
    assert node.active_bundle("fraud") == "v1"
    assert result.status == "ERROR" and "v1 stays active" in result.message
    assert "after_scenario triggers form a cycle" in result.message
    assert "invalid cron '0 25 * * *'" in result.message
    assert deployer.get_deployment(store, DEPLOYMENT).status == "ERROR"
