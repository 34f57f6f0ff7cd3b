"""The automation node's retrain gives the design node's model, byte for byte, and says what
it was trained on."""

from __future__ import annotations

import hashlib

from engine.automation import retrain
from engine.design import projects as design
from engine.models import saved as models
from nodal_demo import demo
from tests.homes import copy_home


def _sha(project, model: str, version: str) -> str:
    path = project.saved_models_dir(model) / version / models.MODEL_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_retraining_twice_on_the_same_data_gives_the_same_model_file(demo_env, tmp_path):
    settings, _ = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    model = "fraud_model"
    on_design = models.train(project, model, "ana", activate=False)
    # Each retrain rebuilds the training set from the sources first (a new file, its rows
    # in whatever order the recipe's JOIN returns them), then trains a challenger.
    first = retrain.retrain(project, model, "runner", gate={"metric": "roc_auc"})
    second = retrain.retrain(project, model, "runner", gate={"metric": "roc_auc"})

    assert len({on_design["version"], first.challenger, second.challenger}) == 3
    shas = {
        _sha(project, model, v) for v in (on_design["version"], first.challenger, second.challenger)
    }
    assert len(shas) == 1
    metas = [
        models.SavedModel.load(project.saved_models_dir(model) / v).meta
        for v in (on_design["version"], first.challenger, second.challenger)
    ]
    data = metas[0]["training_data"]
    assert all(m["training_data"] == data for m in metas)
    assert data["dataset"] == project.models[model]["train_on"] and len(data["sha256"]) == 64
    assert data["rows"] == metas[0]["train_rows"] + metas[0]["metrics"]["validation_rows"]
    settings_used = metas[0]["settings"]
    assert all(m["settings"] == settings_used for m in metas)
    assert settings_used["params"]["deterministic"] is True
    assert settings_used["params"]["seed"] == project.models[model]["params"]["seed"]
    assert settings_used["validation_days"] == project.models[model]["validation_days"]
