"""Bundles with chosen datasets and model versions; diffs; reverting a project."""

from __future__ import annotations

import pytest

from engine.deployer import bundles
from engine.design import bundle_contents as bc
from engine.design import lab
from engine.project import recipes
from tests.engine.small_project import add_labelled, make_small


@pytest.fixture
def small(tmp_path):
    small = make_small(tmp_path)
    add_labelled(small, with_truth=False)
    spec = lab.LabSpec("labelled", "is_fraud", ["x", "cat"], "risk", params={"num_boost_round": 10})
    for _ in range(2):
        lab.deploy(
            small.project(), "risk", lab.train(small.project(), spec, "ann")["run_id"], "ann"
        )
    return small


def test_a_bundle_carries_chosen_data_and_model_version_and_diffs_against_the_previous(small):
    project = small.project()
    home = small.settings.home
    first = bc.create_bundle(
        home, small.store, project, "b1", "first", "ann", model_versions={"risk": "v1"}
    )
    assert bundles.verify_bundle(first.path)["models"] == {"risk": "v1"}
    recipes.save_recipe(project, "by_city", "SELECT city FROM shops", {"shops": "all"}, "by_city")
    second = bc.create_bundle(home, small.store, small.project(), "b2", "second", "ann", ["shops"])
    manifest = bundles.verify_bundle(second.path)
    assert manifest["models"] == {"risk": "v2"} and manifest["datasets"]["shops"]["rows"] == 4
    diff = bc.diff_bundles(small.store, "shop", "b2")
    assert diff.before == "b1"
    changes = {f["path"]: f["change"] for f in diff.files}
    assert changes == {
        "recipes/by_city.sql": "added",
        "flow.yaml": "changed",
        "datasets.yaml": "changed",
    }
    assert diff.models == [{"model": "risk", "before": "v1", "after": "v2"}]
    assert [d["dataset"] for d in diff.data] == ["shops"]
    assert bc.diff_project(small.store, small.project(), ["shops"]).empty
    with pytest.raises(bundles.BundleError, match="already used"):
        bc.create_bundle(home, small.store, small.project(), "b2", "again", "ann")
    with pytest.raises(bundles.BundleError, match="has no dataset .nope."):
        bc.create_bundle(home, small.store, small.project(), "b3", "", "ann", ["shops", "nope"])


def test_revert_restores_definitions_model_version_and_data(small):
    home = small.settings.home
    bc.create_bundle(home, small.store, small.project(), "b1", "", "ann", ["shops"], {"risk": "v1"})
    recipes.save_recipe(
        small.project(), "by_city", "SELECT city FROM shops", {"shops": "all"}, "by_city"
    )
    ref = small.project().dataset("shops")
    for part in ref.partitions()[1:]:
        (ref.partition_path(part) / "data.parquet").unlink()
    changed = bc.revert(small.store, small.project(), "b1")
    assert {f["path"] for f in changed.files} >= {"recipes/by_city.sql", "flow.yaml"}
    project = small.project()
    assert "by_city" not in project.recipes and not (project.root / "recipes/by_city.sql").exists()
    assert project.active_model_version("risk") == "v1"
    assert project.dataset("shops").partitions() == ["2024-01-05", "2024-01-06", "2024-01-07"]
