"""Training: the same data gives the same model."""

from __future__ import annotations

from engine.design import projects as design
from engine.models import saved as models
from engine.storage import datasets as ds
from nodal_demo import demo
from tests.homes import copy_home


def _model_text(project, meta) -> str:
    path = project.saved_models_dir(meta["model"]) / meta["version"] / models.MODEL_FILE
    return path.read_text()


def test_the_same_rows_in_another_order_train_the_same_model(demo_env, tmp_path):
    # A recipe's JOIN returns its rows in another order from one build to the next; the
    # example's model bags rows (bagging_fraction < 1), which draws them by position.
    settings, _ = copy_home(demo_env.settings, tmp_path)
    project = design.open_project(settings, demo.PROJECT)
    ref = project.dataset(project.models["fraud_model"]["train_on"])
    first = models.train(project, "fraud_model", "ana", activate=False)

    rows = ds.read_df(ref)
    shuffled = rows.sample(frac=1, random_state=3, ignore_index=True)
    ds.write(ref, shuffled, replace_all=True)
    reread = ds.read_df(ref)
    assert len(reread) == len(rows) and not reread.equals(rows)  # really another order
    second = models.train(project, "fraud_model", "ana", activate=False)

    assert second["version"] != first["version"]
    assert _model_text(project, second) == _model_text(project, first)
    assert second["metrics"] == first["metrics"] and second["threshold"] == first["threshold"]
