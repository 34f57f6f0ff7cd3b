"""The Lab: LightGBM and a logistic-regression baseline, splits, imbalance, progress, results,
the gap to the best possible AUC, deployment as a saved-model version."""

from __future__ import annotations

import pytest
from sklearn.metrics import roc_auc_score

from engine.design import lab, lab_jobs
from engine.models import saved as models
from engine.models.saved import SavedModel, TrainingError
from tests.engine.small_project import add_labelled, make_small


@pytest.fixture
def small(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    add_labelled(small)
    return small


def _spec(**kw) -> lab.LabSpec:
    base = dict(dataset="labelled", target="is_fraud", features=["x", "cat"], model="risk")
    return lab.LabSpec(**{**base, **kw})


def test_lightgbm_time_split_reports_progress_results_and_the_gap_to_the_truth(small):
    seen = []
    result = lab.train(
        small.project(), _spec(params={"num_boost_round": 40}), "ann", lambda f, m: seen.append(f)
    )
    assert seen == sorted(seen) and seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) > 10
    assert result["validation"] == ["2026-01-09", "2026-01-10"]  # the last 20 % of days
    m = result["metrics"]
    assert 0.8 < m["roc_auc"] < 1 and m["validation_rows"] == 800
    assert len(result["roc"]["fpr"]) <= 200 and result["roc"]["tpr"][-1] == 1.0
    assert sum(b["rows"] for b in result["calibration"]) == 800
    assert set(result["importance"]) == {"x", "cat"} and result["importance"]["x"] > 0.5
    # The truth is the generator's probability, declared in models/risk.yaml (best_possible):
    # its AUC on the same rows bounds the model's.
    frame = small.project().dataset("labelled")
    best = result["best_possible"]
    assert best["rows"] == 800 and best["gap"] == pytest.approx(best["auc"] - m["roc_auc"])
    assert best["auc"] > 0.85 and frame.exists()
    cm = lab.confusion(small.project(), "risk", result["run_id"], m["threshold"], 1, 10)
    assert cm["tp"] + cm["fn"] == m["validation_frauds"] and cm["cost"] == cm["fp"] + 10 * cm["fn"]


def test_without_a_declared_truth_there_is_no_best_possible_auc(tmp_path):
    small = make_small(tmp_path, with_shops=False)
    add_labelled(small, declare=False)  # the truth files exist, but no model names them
    result = lab.train(small.project(), _spec(params={"num_boost_round": 20}), "ann")
    assert result["best_possible"] is None and result["metrics"]["roc_auc"] > 0.8
    # A model the project does not define yet gets its definition when deployed.
    assert lab.deploy(small.project(), "risk", result["run_id"], "ann") == "v1"
    assert small.project().models["risk"]["train_on"] == "labelled"  # models/risk.yaml


def test_the_default_spec_comes_from_the_model_training_on_the_dataset(small):
    default = lab.default_spec(small.project(), "labelled")
    assert (default.model, default.target, default.id_column) == (
        "risk",
        "is_fraud",
        "transaction_id",
    )
    assert default.features == ["x", "cat"]


def test_logistic_regression_baseline_with_balanced_classes_on_a_random_split(small):
    result = lab.train(
        small.project(),
        _spec(algorithm="logistic_regression", split="random", imbalance="balanced"),
        "bob",
    )
    assert (
        result["validation"][0] == "random split"
        and 600 < result["metrics"]["validation_rows"] < 1000
    )
    assert result["metrics"]["roc_auc"] > 0.8
    with pytest.raises(TrainingError, match="only LightGBM"):
        lab.deploy(small.project(), "risk", result["run_id"], "bob")


def test_deploy_makes_a_new_active_saved_model_version_that_scores_like_the_lab(small):
    result = lab.train(small.project(), _spec(params={"num_boost_round": 30}), "ann")
    version = lab.deploy(small.project(), "risk", result["run_id"], "ann")
    project = small.project()
    assert project.models["risk"]["train_on"] == "labelled"  # its definition, kept as it was
    assert project.active_model_version("risk") == version == "v1"
    assert models.list_versions(project, "risk")[0]["lab_run"] == result["run_id"]
    from engine.storage import datasets as ds

    frame = ds.read_df(project.dataset("labelled"))
    valid = frame[frame["day"].astype(str) >= "2026-01-09"]
    saved = SavedModel.load(project.active_model_dir("risk"))
    p = saved.predict_proba(saved.encode(valid))
    assert roc_auc_score(valid["is_fraud"], p) == pytest.approx(result["metrics"]["roc_auc"])


def test_bad_targets_and_specs_are_refused(small):
    with pytest.raises(TrainingError, match="has 3 distinct values"):
        lab.train(small.project(), _spec(target="cat", features=["x"]), "ann")
    with pytest.raises(TrainingError, match="cannot also be a feature"):
        lab.train(small.project(), _spec(features=["x", "is_fraud"]), "ann")
    with pytest.raises(TrainingError, match="no column nope"):
        lab.train(small.project(), _spec(features=["nope"]), "ann")
    assert lab.list_runs(small.project()) == []


def test_background_training_job_reports_failure_as_data(small):
    job = lab_jobs.start(small.project(), _spec(target="cat", features=["x"]), "ann")
    job.thread.join(timeout=60)
    assert job.status == "FAILED" and "distinct values" in job.error


CHILD = """
import sys, time
from engine.design import lab, lab_jobs
from engine.design.projects import open_project
from engine.core.settings import load_settings

# In this child only, training never ends by itself: it is killed mid-way, as a Studio
# process is when it restarts.
lab.train = lambda *args, **kwargs: time.sleep(600)
settings = load_settings(environ={}, home=sys.argv[1], data_dir=sys.argv[2], basemap="none")
project = open_project(settings, "shop")
for model in ("risk", "other"):
    spec = lab.LabSpec(dataset="labelled", target="is_fraud", features=["x", "cat"],
                       model=model, params={"num_boost_round": 20.0})
    print(lab_jobs.start(project, spec, "ann").job_id, flush=True)
time.sleep(600)
"""


def test_a_training_whose_process_stopped_is_reported_interrupted_and_can_run_again(small):
    import subprocess
    import sys

    project = small.project()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(small.settings.home), str(small.settings.data_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ids = [child.stdout.readline().strip() for _ in range(2)]
        assert all(ids), ids
        assert lab_jobs.interrupted_jobs(project) == []  # still training in a live process
    finally:
        child.kill()  # the Studio process dies mid-training
        child.wait()
        child.stdout.close()
    interrupted = lab_jobs.interrupted_jobs(project)
    assert {r["job_id"] for r in interrupted} == set(ids)
    risk = next(r for r in interrupted if r["spec"]["model"] == "risk")
    assert risk["status"] == lab_jobs.INTERRUPTED
    assert "was interrupted" in risk["message"] and "train again" in risk["message"]
    assert risk["spec"]["params"] == {"num_boost_round": 20.0} and risk["user"] == "ann"

    job = lab_jobs.train_again(project, risk["job_id"], "bob")
    job.thread.join()
    assert job.status == "DONE", job.error
    assert job.spec.model == "risk" and job.spec.params == {"num_boost_round": 20.0}
    assert lab.get_run(project, "risk", job.result["run_id"])["spec"]["features"] == ["x", "cat"]
    other = [r["job_id"] for r in lab_jobs.interrupted_jobs(project)]
    assert other == [i for i in ids if i != risk["job_id"]]
    lab_jobs.dismiss_job(project, other[0])
    assert lab_jobs.interrupted_jobs(project) == []
    with pytest.raises(lab.ProjectError, match="no interrupted training"):
        lab_jobs.train_again(project, other[0], "bob")


def test_a_training_running_in_this_process_is_not_reported_interrupted(small, monkeypatch):
    import threading

    release = threading.Event()
    monkeypatch.setattr(lab, "train", lambda *a, **k: release.wait(60) and {"run_id": "r0"})
    job = lab_jobs.start(small.project(), _spec(), "ann")
    try:
        assert lab_jobs.interrupted_jobs(small.project()) == []
        assert len(list((small.project().root / "lab" / ".jobs").glob("*.json"))) == 1
    finally:
        release.set()
        job.thread.join()
    assert job.status == "DONE"
    assert list((small.project().root / "lab" / ".jobs").glob("*")) == []


def _lab_model_sha(project, model: str, run_id: str) -> str:
    import hashlib

    from engine.project.project import LAB_DIR

    return hashlib.sha256(
        (project.root / LAB_DIR / model / run_id / "model.txt").read_bytes()
    ).hexdigest()


def test_the_same_rows_in_any_order_train_a_byte_identical_lab_model(small):
    # Bagging draws rows by position and the dataset may come back in another order (a
    # recipe's JOIN, a parallel scan): the Lab must still train the same model file.
    from engine.storage import datasets as ds

    spec = _spec(params={"num_boost_round": 40, "bagging_fraction": 0.7, "bagging_freq": 1})
    project = small.project()
    first = lab.train(project, spec, "ann")
    ref = project.dataset("labelled")
    rows = ds.read_df(ref)
    ds.write(ref, rows.sample(frac=1, random_state=5, ignore_index=True), replace_all=True)
    assert not ds.read_df(ref).equals(rows)  # really another order
    second = lab.train(project, spec, "ann")

    assert second["run_id"] != first["run_id"]
    assert _lab_model_sha(project, "risk", second["run_id"]) == _lab_model_sha(
        project, "risk", first["run_id"]
    )
    # The metadata says what was trained on (the same rows → the same fingerprint) and how.
    assert second["training_data"] == first["training_data"]
    fp = first["training_data"]
    assert fp["rows"] == 4000 and fp["dataset"] == "labelled" and len(fp["sha256"]) == 64
    assert fp["columns"] == ["day", "x", "cat", "is_fraud"]
    version = lab.deploy(project, "risk", second["run_id"], "ann")
    meta = models.SavedModel.load(project.saved_models_dir("risk") / version).meta
    assert meta["training_data"] == fp
    used = meta["settings"]["params"]
    assert used["deterministic"] is True and used["force_col_wise"] is True
    assert used["bagging_fraction"] == 0.7 and used["seed"] == 7

    # One label changed: another fingerprint.
    changed = rows.copy()
    changed.loc[0, "is_fraud"] = 1 - changed.loc[0, "is_fraud"]
    ds.write(ref, changed, replace_all=True)
    third = lab.train(project, spec, "ann")
    assert third["training_data"]["sha256"] != fp["sha256"]
