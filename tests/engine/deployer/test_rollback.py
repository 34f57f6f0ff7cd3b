"""Deploy v1, then a worse v2, roll back to v1 in one command: the next scored partition is
exactly v1's output, and nothing retrained."""

from __future__ import annotations

import shutil
import zipfile

import pandas as pd
import yaml

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.models import saved as models
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.e2e import procs
from tests.homes import copy_home, environ

DEPLOYMENT = deployer.deployment_id_for(demo.PROJECT, demo.AUTOMATION_INFRA)


def _score_day(node: AutomationNode, store, day: str) -> pd.DataFrame:
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "test", {"day": day}
    )
    assert node.run(run_id) == runs.SUCCESS, runs.get_run(store, run_id)
    scored = ds.read_df(node.project(demo.PROJECT).dataset("scored"), [day])
    # DuckDB's parallel join does not promise a row order: compare rows by transaction.
    return scored.sort_values("transaction_id").reset_index(drop=True)


def test_rollback_to_v1_brings_back_v1s_exact_output(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    assert node.active_bundle(demo.PROJECT) == "v1"
    day = node.project(demo.PROJECT).dataset("transactions").partitions()[-3]
    v1_output = _score_day(node, store, day)

    # A worse model: two tiny trees. Trained on the design node, bundled as v2.
    project = design.open_project(settings, demo.PROJECT)
    spec_path = project.root / "models" / "fraud_model.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["params"].update(num_boost_round=2, num_leaves=2, early_stopping_rounds=1)
    spec_path.write_text(yaml.safe_dump(spec))
    worse = models.train(design.open_project(settings, demo.PROJECT), "fraud_model", "analyst")
    v1_meta = next(m for m in models.list_versions(project, "fraud_model") if m["version"] == "v1")
    assert worse["metrics"]["roc_auc"] < v1_meta["metrics"]["roc_auc"]
    bundles.create_bundle(
        settings.home, store, design.open_project(settings, demo.PROJECT), "v2", "worse", "analyst"
    )
    deployer.deploy_bundle(store, demo.PROJECT, "v2", demo.AUTOMATION_INFRA, "ops")
    node.sync()
    v2_output = _score_day(node, store, day)
    assert set(v2_output["model_version"]) == {worse["version"]}
    assert not v2_output["proba"].equals(v1_output["proba"])

    # One command, as ops or a CI pipeline would run it.
    result = procs.nodal(["deploy", "rollback", DEPLOYMENT], environ(settings))
    assert result.returncode == 0, result.stderr
    assert "rolled back, desired version is now v1" in result.stdout
    node.sync()
    assert deployer.get_deployment(store, DEPLOYMENT).status == "HEALTHY"
    after = _score_day(node, store, day)
    pd.testing.assert_frame_equal(after, v1_output)
    assert sorted(p.name for p in (node.home / "bundles" / demo.PROJECT).iterdir()) == ["v1", "v2"]
    latest = deployer.history(store, DEPLOYMENT)
    assert (latest[0]["action"], latest[0]["from_version"], latest[0]["to_version"]) == (
        "activate",
        "v2",
        "v1",
    )
    assert (latest[1]["action"], latest[1]["to_version"]) == ("rollback", "v1")


def test_bad_bundles_are_refused_at_deploy_in_one_line_and_change_nothing(demo_env, tmp_path):
    """As ops would meet them in a CI pipeline: `nodal deploy bundle` exits 2 with one line."""
    settings, store = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    folder = project.root / "scenarios"
    step = "steps:\n  - {name: q, type: sql, sql: 'SELECT 1'}\n"
    (folder / "ping.yaml").write_text(
        "name: ping\ntriggers:\n  - {type: after_scenario, scenario: pong}\n" + step
    )
    (folder / "pong.yaml").write_text(
        "name: pong\ntriggers:\n  - {type: after_scenario, scenario: ping}\n" + step
    )
    bundles.create_bundle(
        settings.home, store, design.open_project(settings, demo.PROJECT), "v-cycle", "", "analyst"
    )
    (folder / "pong.yaml").write_text(
        "name: pong\ntriggers:\n  - {type: time, cron: '0 25 * * *'}\n" + step
    )
    bundles.create_bundle(
        settings.home, store, design.open_project(settings, demo.PROJECT), "v-cron", "", "analyst"
    )
    (folder / "ping.yaml").unlink()
    (folder / "pong.yaml").unlink()
    good = bundles.create_bundle(
        settings.home,
        store,
        design.open_project(settings, demo.PROJECT),
        "v-tampered",
        "",
        "analyst",
    )
    original = good.path.with_suffix(".orig")
    shutil.move(good.path, original)
    with zipfile.ZipFile(original) as zin, zipfile.ZipFile(good.path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "scenarios/daily_scoring.yaml":
                data += b"\n# edited after bundling\n"
            zout.writestr(item, data)

    before = (
        deployer.get_deployment(store, DEPLOYMENT).version,
        len(deployer.history(store, DEPLOYMENT)),
    )
    fraud = ["--project", demo.PROJECT]
    cases = [
        (
            ["v-cycle", *fraud],
            "bundle 'v-cycle' cannot be deployed: scenario ping: its after_scenario triggers form a cycle: ping -> pong -> ping",
        ),
        (
            ["v-cron", *fraud],
            "bundle 'v-cron' cannot be deployed: scenario pong: invalid cron '0 25 * * *'",
        ),
        (["v-tampered", *fraud], "member scenarios/daily_scoring.yaml fails its SHA-256 check"),
        (["v1", "--project", "churn"], "project 'churn' has no bundle 'v1'"),
    ]
    for args, message in cases:
        result = procs.nodal(
            ["deploy", "bundle", *args, "--infra", demo.AUTOMATION_INFRA], environ(settings)
        )
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    result = procs.nodal(
        ["deploy", "bundle", "v1", "--project", demo.PROJECT, "--infra", "automation-nowhere"],
        environ(settings),
    )
    assert (result.returncode, result.stderr.count("\n")) == (2, 1)
    assert "unknown infrastructure 'automation-nowhere'" in result.stderr
    after = (
        deployer.get_deployment(store, DEPLOYMENT).version,
        len(deployer.history(store, DEPLOYMENT)),
    )
    assert after == before
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    (synced,) = node.sync()
    assert (synced.active, synced.status) == ("v1", "HEALTHY")
