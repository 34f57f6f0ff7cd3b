"""The Lab, started from a model's own settings, trains the very file `nodal model train` does.

Same training rows and the same settings must give the same model, whichever way it was
trained: otherwise a Lab run deployed "as the model" and the model retrained by the CLI
(or the automation node) could not be compared. The Lab used to differ in its settings (its
own default parameters instead of the model's, a share of the days held out instead of the
model's validation days) and in the thread count written into the file.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from engine.core.settings import load_settings
from engine.design import lab
from engine.design import projects as design
from engine.models import saved as models
from engine.project.project import LAB_DIR
from nodal_demo import demo
from tests.engine.small_project import CLAIMS_PROJECT
from tests.homes import copy_home


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _both_ways(project, model: str, dataset: str) -> tuple[str, str, dict, dict]:
    meta = models.train(project, model, "test", activate=False)
    cli = project.saved_models_dir(model) / meta["version"] / models.MODEL_FILE
    spec = lab.default_spec(project, dataset)
    assert spec.model == model
    result = lab.train(project, spec, "test")
    run = project.root / LAB_DIR / model / result["run_id"] / models.MODEL_FILE
    return _sha(cli), _sha(run), meta, result


def test_the_lab_trains_the_fraud_model_file_of_nodal_model_train(demo_env, tmp_path):
    settings, _store = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    cli, lab_file, meta, result = _both_ways(project, demo.MODEL, "training_set")
    assert lab_file == cli
    # The same rows, validation days and threshold, said the same way in both metadata.
    assert result["training_data"] == meta["training_data"]
    assert result["validation"] == meta["validation_days"]
    assert result["metrics"]["threshold"] == meta["threshold"]
    # Deployed from the Lab, the model's file is still that file.
    version = lab.deploy(project, demo.MODEL, result["run_id"], "test")
    assert _sha(project.saved_models_dir(demo.MODEL) / version / models.MODEL_FILE) == cli


def test_the_lab_trains_the_claims_model_file_of_nodal_model_train(claims_env, tmp_path):
    # The second project, in another vocabulary (claims, booked_on, confirmed_fraud).
    home, _store = copy_home(claims_env.settings, tmp_path)
    shutil.copytree(claims_env.settings.data_dir, tmp_path / "data")
    settings = load_settings(environ={}, home=home.home, data_dir=tmp_path / "data", basemap="none")
    project = design.open_project(settings, CLAIMS_PROJECT)
    cli, lab_file, _meta, _result = _both_ways(project, "claim_risk", "history")
    assert lab_file == cli
