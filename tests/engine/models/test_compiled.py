"""Compiled forests (lleaves): same probabilities as the Booster, cached once, refused if wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import yaml

from engine.automation.node import AutomationNode
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.design import projects as design
from engine.models import compiled
from engine.models import saved as models
from engine.models.saved import META_FILE, MODEL_FILE, ModelCompileError, SavedModel
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.homes import copy_home

REPO = Path(__file__).resolve().parents[3]


def _tiny_model(folder: Path, seed: int = 0, **params: object) -> Path:
    """A saved-model folder with a small real LightGBM model on three numeric features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=len(X)) > 0).astype(int)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 8, "verbose": -1, **params},
        lgb.Dataset(X, y),
        num_boost_round=8,
    )
    folder.mkdir(parents=True)
    booster.save_model(str(folder / MODEL_FILE))
    meta = {
        "model": "tiny",
        "version": "v1",
        "numeric": ["a", "b", "c"],
        "categorical": [],
        "vocab": {},
        "threshold": 0.5,
    }
    (folder / META_FILE).write_text(json.dumps(meta))
    return folder


def _example_rows(demo_env) -> pd.DataFrame:
    """Real feature rows of the example, plus rows with NaN features and unseen categories."""
    frame = ds.read_df(demo_env.project.dataset("features"))  # every day the design node built
    odd = frame.sample(300, random_state=0).reset_index(drop=True)
    odd.loc[:99, "merchant_category"] = "crypto_atm"  # never seen in training
    odd.loc[50:149, "channel"] = "carrier_pigeon"
    for i, col in enumerate(["distance_km", "amount_ratio", "credit_score", "account_age_days"]):
        odd.loc[i * 60 : i * 60 + 80, col] = None  # a card without a profile
    return pd.concat([frame, odd], ignore_index=True)


def test_compiled_example_model_equals_the_booster_on_real_rows(demo_env, compiled_cache):
    model_dir = demo_env.project.active_model_dir("fraud_model")
    saved = SavedModel.load(model_dir, compiled=compiled_cache)
    frame = _example_rows(demo_env)
    matrix = saved.encode(frame)
    assert np.isnan(matrix).any(axis=0).sum() >= 6  # NaN numerics and unseen categories
    assert len(matrix) > 10_000
    expected = saved.booster.predict(matrix, num_threads=1)
    for threads in (1, 0):
        got = saved.predict_proba(matrix, num_threads=threads)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
    for i in range(0, len(matrix), 997):  # one row at a time, as the API node does
        np.testing.assert_allclose(
            saved.predict_proba(matrix[i : i + 1], num_threads=1), expected[i : i + 1], rtol=1e-12
        )
    assert saved.compiled.cache_file.parent == compiled_cache
    assert SavedModel.load(model_dir).compiled is None  # plain load: the Booster


def test_cache_compiles_once_and_keys_on_the_model_bytes(tmp_path):
    cache = tmp_path / "cache"
    first = SavedModel.load(_tiny_model(tmp_path / "m1"), compiled=cache)
    stamp = first.compiled.cache_file.stat().st_mtime_ns
    again = SavedModel.load(tmp_path / "m1", compiled=cache)
    assert again.compiled.cache_file == first.compiled.cache_file
    assert again.compiled.cache_file.stat().st_mtime_ns == stamp  # loaded, not recompiled
    other = SavedModel.load(_tiny_model(tmp_path / "m2", seed=1), compiled=cache)
    assert other.compiled.cache_file != first.compiled.cache_file
    # only finished objects (and lock files) in the cache: no temporary left behind
    assert sorted(p.suffix for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        ".o",
        ".o",
    ]
    assert first.compiled.cache_file.name == compiled.cache_key(tmp_path / "m1" / MODEL_FILE) + ".o"


def test_a_cache_file_that_gives_other_answers_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    good = SavedModel.load(_tiny_model(tmp_path / "m1"), compiled=cache)
    impostor = SavedModel.load(_tiny_model(tmp_path / "m2", seed=7), compiled=cache)
    # model 2's machine code under model 1's name: loads fine, predicts wrong
    shutil.copyfile(impostor.compiled.cache_file, good.compiled.cache_file)
    reloaded = SavedModel.load(tmp_path / "m1", compiled=cache)
    X = np.random.default_rng(5).normal(size=(500, 3))
    np.testing.assert_allclose(
        reloaded.predict_proba(X), reloaded.booster.predict(X), rtol=1e-12, atol=0
    )
    assert good.compiled.cache_file.read_bytes() != impostor.compiled.cache_file.read_bytes()


def test_a_model_lleaves_gets_wrong_is_refused_not_used(tmp_path):
    # lleaves compiles linear trees without their linear part: the parity probe catches it.
    folder = _tiny_model(tmp_path / "linear", linear_tree=True)
    with pytest.raises(ModelCompileError, match="does not reproduce LightGBM's predictions"):
        SavedModel.load(folder, compiled=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.o"))
    assert SavedModel.load(folder).predict_proba(np.zeros((1, 3))).shape == (1,)


def test_processes_compiling_the_same_model_at_once_all_succeed(tmp_path):
    folder = _tiny_model(tmp_path / "m")
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from engine.models.saved import SavedModel; "
        "s = SavedModel.load(Path(sys.argv[1]), compiled=Path(sys.argv[2])); "
        "print(s.compiled.cache_file)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(folder), str(cache)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
    assert [p.name for p in cache.glob("*.o")] == [Path(outs[0][0].strip()).name]
    assert not list(cache.glob("*.tmp"))


def test_activation_refuses_a_bundle_whose_model_cannot_be_compiled(demo_env, tmp_path):
    settings, store = copy_home(demo_env.settings, tmp_path)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    project = design.open_project(settings, demo.PROJECT)
    spec_path = project.root / "models" / "fraud_model.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["params"].update(linear_tree=True, num_boost_round=5)  # lleaves ignores linear leaves
    spec_path.write_text(yaml.safe_dump(spec))
    models.train(design.open_project(settings, demo.PROJECT), "fraud_model", "analyst")
    bundles.create_bundle(
        settings.home, store, design.open_project(settings, demo.PROJECT), "v2", "linear", "ana"
    )
    deployer.deploy_bundle(store, demo.PROJECT, "v2", demo.AUTOMATION_INFRA, "ops")
    [result] = node.sync()
    assert result.status == "ERROR"
    assert "v1 stays active" in result.message
    assert "does not reproduce LightGBM's predictions" in result.message
    assert node.active_bundle(demo.PROJECT) == "v1"
