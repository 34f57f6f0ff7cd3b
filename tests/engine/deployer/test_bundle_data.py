"""A bundle that carries data seeds the automation node's datasets at activation, never
over data the node wrote itself (the rule is in docs/architecture.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from engine.automation.node import AutomationNode
from engine.deployer import deployments as deployer
from engine.deployer import rollback
from engine.design import bundle_contents
from engine.design import projects as design
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.homes import copy_home

INFRA = demo.AUTOMATION_INFRA


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _ship(settings, store, node: AutomationNode, bundle_id: str) -> str:
    """Bundle the design project with its training set and features, deploy it, activate it."""
    project = design.open_project(settings, demo.PROJECT)
    bundle_contents.create_bundle(
        settings.home,
        store,
        project,
        bundle_id,
        "with data",
        "analyst",
        ["training_set", "features"],
    )
    deployer.deploy_bundle(store, demo.PROJECT, bundle_id, INFRA, "ops")
    (result,) = node.sync()
    assert (result.status, result.active) == ("HEALTHY", bundle_id), result
    return result.message


def test_carried_data_seeds_the_node_but_never_overwrites_what_the_node_wrote(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    node = AutomationNode(settings, store, INFRA)
    node.sync()
    studio = design.open_project(settings, demo.PROJECT)
    on_node = node.project(demo.PROJECT)
    studio_training = studio.dataset("training_set").path / ds.DATA_FILE
    node_training = on_node.dataset("training_set").path / ds.DATA_FILE
    assert not node_training.exists()  # the node never built it: retraining would fail
    # The node scored one day itself: its features partition is its own. The same rows as
    # the design node's (the same recipes on the same data), so the node writes them again
    # in another order: its file's bytes are its own.
    own_day = on_node.dataset("features").partitions()[-1]
    own_ref = on_node.dataset("features")
    ds.write(
        own_ref,
        f"SELECT * FROM {ds.scan_sql(own_ref, [own_day])} ORDER BY transaction_id DESC",
        partitions=[own_day],
    )
    own_file = on_node.dataset("features").partition_path(own_day) / ds.DATA_FILE
    own_bytes = own_file.read_bytes()
    assert (
        own_bytes
        != (studio.dataset("features").partition_path(own_day) / ds.DATA_FILE).read_bytes()
    )

    # v2 carries the training set and every features partition.
    message = _ship(settings, store, node, "v2")
    assert f"{len(studio.dataset('features').partitions())} file(s) added" in message, message
    assert _sha(node_training) == _sha(studio_training)  # added
    assert own_file.read_bytes() == own_bytes  # the node's own partition kept
    studio_days = studio.dataset("features").partitions()
    assert set(studio_days) <= set(on_node.dataset("features").partitions())  # the rest added
    other_day = next(d for d in studio_days if d != own_day)
    assert _sha(on_node.dataset("features").partition_path(other_day) / ds.DATA_FILE) == _sha(
        studio.dataset("features").partition_path(other_day) / ds.DATA_FILE
    )

    # v3 carries a newer training set: the node's copy is still v2's, so v3's replaces it.
    frame = ds.read_df(studio.dataset("training_set"))
    ds.write(studio.dataset("training_set"), frame.iloc[: len(frame) // 2])
    _ship(settings, store, node, "v3")
    assert _sha(node_training) == _sha(studio_training)
    assert len(ds.read_df(on_node.dataset("training_set"))) == len(frame) // 2

    # The node now writes its own training set: rolling back to v2 keeps it (and says so).
    ds.write(on_node.dataset("training_set"), frame.iloc[:100])
    node_own = _sha(node_training)
    rollback.rollback(store, deployer.deployment_id_for(demo.PROJECT, INFRA), "ops")
    (result,) = node.sync()
    assert result.active == "v2"
    # Kept: its training set and its own features partition.
    assert "0 replaced, 2 kept (written by the node itself)" in result.message, result.message
    assert _sha(node_training) == node_own
    assert len(ds.read_df(on_node.dataset("training_set"))) == 100
    # Nothing half-written or left over next to the data.
    leftovers = [
        p for p in on_node.data_root.rglob("*") if p.name.startswith((".seed-", ".seeds-"))
    ]
    assert leftovers == []
