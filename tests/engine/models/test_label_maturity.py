"""Label maturity: training, validation, the threshold and the baselines use mature days only.

A day's negatives arrive after a delay (a transaction is called legitimate once no
chargeback came): the newest days of a labelled dataset then hold positives only. Those
days must change nothing: the model trained with them present is the model trained
without them, byte for byte.
"""

from __future__ import annotations

import hashlib

import pytest

from engine.design import lab
from engine.models import saved as models
from engine.project.model_spec import MaturityError
from engine.storage import datasets as ds
from tests.engine.small_project import make_small, synthetic_labels

DAYS, DELAY = 20, 4
MODEL_YAML = """\
name: risk
train_on: labelled
target: is_fraud
time_column: day
validation_days: 4
operating_fpr: 0.05
{maturity}
features: {{numeric: [x], categorical: [cat]}}
params: {{objective: binary, num_leaves: 7, num_boost_round: 40, early_stopping_rounds: 10,
         bagging_fraction: 0.8, bagging_freq: 1, seed: 1}}
"""


def _project(tmp_path, maturity: str, late_negatives: bool = True):
    """``labelled``: 20 days of rows; on the last 4, only the positives are known yet."""
    small = make_small(tmp_path, with_shops=False)
    frame, _ = synthetic_labels(n=8000, days=DAYS)
    days = sorted(frame["day"].unique())
    recent = frame["day"].isin(days[-DELAY:])
    if late_negatives:
        frame = frame[~recent | (frame["is_fraud"] == 1)].reset_index(drop=True)
    project = small.project()
    ds.write(ds.DatasetRef("labelled", project.data_root / "labelled"), frame)
    (project.root / "datasets.yaml").write_text(
        (project.root / "datasets.yaml").read_text() + "labelled:\n  kind: managed\n"
    )
    (project.root / "models").mkdir(exist_ok=True)
    (project.root / "models" / "risk.yaml").write_text(MODEL_YAML.format(maturity=maturity))
    return small, frame, days


def _sha(project, meta) -> str:
    path = project.saved_models_dir("risk") / meta["version"] / models.MODEL_FILE
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_days_with_immature_labels_change_nothing_in_the_trained_model(tmp_path):
    small, frame, days = _project(tmp_path, f"label_maturity: {{delay_days: {DELAY}}}")
    project = small.project()
    meta = models.train(project, "risk", "ana", activate=False)
    # Validation is the last 4 *mature* days; the 4 positives-only days are left out.
    assert meta["validation_days"] == [str(days[-8]), str(days[-5])]
    assert meta["label_maturity"]["immature_days_left_out"] == [str(d) for d in days[-4:]]
    assert meta["label_maturity"]["as_of"] == str(days[-1])
    valid = frame[frame["day"].isin(days[-8:-4])]
    assert meta["metrics"]["validation_frauds"] == int(valid["is_fraud"].sum())
    assert meta["metrics"]["validation_rows"] == len(valid)

    # The same data without those days at all (and no rule, which would count 4 days back
    # from the new newest day): the same model file, threshold and metrics.
    ref = project.dataset("labelled")
    ds.write(ref, frame[~frame["day"].isin(days[-4:])], replace_all=True)
    (project.root / "models" / "risk.yaml").write_text(MODEL_YAML.format(maturity=""))
    project = small.project()
    without = models.train(project, "risk", "ana", activate=False)
    assert _sha(project, without) == _sha(project, meta)
    assert without["threshold"] == meta["threshold"] and without["metrics"] == meta["metrics"]
    assert without["training_data"] == meta["training_data"]


def test_the_lab_leaves_immature_days_out_and_shows_each_days_maturity(tmp_path):
    small, frame, days = _project(tmp_path, f"label_maturity: {{delay_days: {DELAY}}}")
    spec = lab.LabSpec(
        dataset="labelled",
        target="is_fraud",
        features=["x", "cat"],
        model="risk",
        validation_share=0.25,
        params={"num_boost_round": 30},
    )
    result = lab.train(small.project(), spec, "ann")
    shown = {d["day"]: d for d in result["maturity"]}
    assert len(shown) == DAYS
    assert [d for d, m in shown.items() if m["mature"] is False] == [str(d) for d in days[-4:]]
    assert all(shown[str(d)]["positives"] == shown[str(d)]["labelled"] for d in days[-4:])
    assert result["validation"][1] == str(days[-5])  # the newest mature day
    assert "4 days with immature labels left out" in result["warnings"][0]

    # Kept on purpose: trained, but the result warns that validation is biased.
    kept = lab.train(small.project(), lab.LabSpec(**{**spec.__dict__, "mature_only": False}), "ann")
    assert kept["validation"][1] == str(days[-1])
    assert any("have immature labels" in w for w in kept["warnings"])


def test_without_a_rule_the_lab_warns_about_positive_only_validation_days(tmp_path):
    small, _frame, days = _project(tmp_path, "")
    spec = lab.LabSpec(
        dataset="labelled",
        target="is_fraud",
        features=["x", "cat"],
        model="risk",
        validation_share=0.25,
        params={"num_boost_round": 30},
    )
    result = lab.train(small.project(), spec, "ann")
    assert any("only positive labels" in w and "label_maturity" in w for w in result["warnings"])
    assert all(d["mature"] is None for d in result["maturity"])


@pytest.mark.parametrize(
    ("maturity", "message"),
    [
        ("label_maturity: {delay_days: -1}", "delay_days must be a whole number"),
        ("label_maturity: {min_labelled_share: 0.95}", "needs rows:"),
        ("label_maturity: {min_labelled_share: 2, rows: labelled}", "must be in \\(0, 1\\]"),
        ("label_maturity: {wait: 3}", "unknown key"),
        ("label_maturity: 7", "must be a mapping"),
    ],
)
def test_a_bad_maturity_rule_is_refused_naming_it_and_trains_nothing(tmp_path, maturity, message):
    small, _frame, _days = _project(tmp_path, maturity)
    project = small.project()
    with pytest.raises(MaturityError, match=message):
        models.train(project, "risk", "ana")
    assert not list(project.saved_models_dir("risk").glob("v*"))


def test_a_share_rule_counts_the_days_rows_in_the_declared_dataset(tmp_path):
    # Every row (labelled or not) is in `scored`; a day is mature with 95 % of them labelled.
    small, frame, days = _project(
        tmp_path, "label_maturity: {min_labelled_share: 0.95, rows: scored}"
    )
    project = small.project()
    every, _ = synthetic_labels(n=8000, days=DAYS)
    ds.write(ds.DatasetRef("scored", project.data_root / "scored"), every.drop(columns="is_fraud"))
    (project.root / "datasets.yaml").write_text(
        (project.root / "datasets.yaml").read_text() + "scored:\n  kind: managed\n"
    )
    meta = models.train(small.project(), "risk", "ana", activate=False)
    assert meta["label_maturity"]["immature_days_left_out"] == [str(d) for d in days[-4:]]
    assert meta["validation_days"][1] == str(days[-5])
