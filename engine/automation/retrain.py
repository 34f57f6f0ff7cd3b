"""Retraining with a champion/challenger gate.

The ``train`` scenario step rebuilds the model's training set from the latest labelled
data, trains a new version (the *challenger*) without activating it, then scores the same
recent window — the challenger's held-out validation days — with the active version (the
*champion*) and with the challenger. The challenger becomes active only if its gate metric
is at least the champion's (plus ``min_gain``); both results go into the step's outputs,
so the run history shows why a model was or was not promoted.

On an automation node the new version is written next to the bundle's own versions in the
node's extracted copy of the bundle (the bundle zip is never changed): rolling back to an
earlier bundle brings that bundle's model back, as it should.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from engine.models import saved as models
from engine.models.saved import SavedModel, TrainingError
from engine.project import flow
from engine.project.project import Project, ProjectError
from engine.project.scenario_spec import GATE_METRICS
from engine.storage import datasets as ds


@dataclass(frozen=True)
class RetrainResult:
    model: str
    champion: str | None
    challenger: str
    metric: str | None
    champion_score: float | None
    challenger_score: float
    window: list[str]
    window_rows: int
    promoted: bool
    message: str

    def as_outputs(self) -> dict[str, Any]:
        return asdict(self)


def _score(metric: str, y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p) if metric == "roc_auc" else average_precision_score(y, p))


def retrain(
    project: Project,
    model: str,
    actor: str,
    gate: dict[str, Any] | None = None,
    build: bool = True,
    should_stop: Callable[[], None] | None = None,
) -> RetrainResult:
    """Train a challenger; activate it if it passes the gate (always, without a gate)."""
    spec = project.models.get(model)
    if spec is None:
        raise ProjectError(f"project {project.name!r} has no model {model!r}")
    if build:
        flow.build(project, spec["train_on"])
    if should_stop:
        should_stop()
    champion_version = project.active_model_version(model)
    meta = models.train(project, model, actor, activate=False, should_stop=should_stop)
    challenger_version = meta["version"]
    if should_stop:
        should_stop()
    metric = (gate or {}).get("metric", "roc_auc") if gate is not None else None
    if metric is not None and metric not in GATE_METRICS:
        raise TrainingError(f"gate metric must be one of {', '.join(GATE_METRICS)}")
    first, last = meta["validation_days"]
    if gate is None or champion_version is None:
        models.set_active(project, model, challenger_version)
        why = "no gate" if gate is None else "no active model to compare with"
        return RetrainResult(
            model,
            champion_version,
            challenger_version,
            metric,
            None,
            float(meta["metrics"]["roc_auc"]),
            [first, last],
            int(meta["metrics"]["validation_rows"]),
            True,
            f"{model} {challenger_version} trained and activated ({why})",
        )
    # The same recent window for both: the challenger's held-out validation days.
    time_col = spec.get("time_column", "day")
    frame = ds.read_df(project.dataset(spec["train_on"]))
    days = frame[time_col].astype(str)
    window = frame[(days >= first) & (days <= last)]
    y = window[spec["target"]].astype(int).to_numpy()
    champion = SavedModel.load(project.saved_models_dir(model) / champion_version)
    challenger = SavedModel.load(project.saved_models_dir(model) / challenger_version)
    champ = _score(metric, y, champion.predict_proba(champion.encode(window)))
    chall = _score(metric, y, challenger.predict_proba(challenger.encode(window)))
    min_gain = float(gate.get("min_gain", 0.0))
    promoted = chall >= champ + min_gain
    if promoted:
        models.set_active(project, model, challenger_version)
        message = (
            f"challenger {challenger_version} promoted: {metric} {chall:.4f} >= champion "
            f"{champion_version} {champ:.4f} on {first}..{last}"
        )
    else:
        message = (
            f"challenger {challenger_version} not promoted: {metric} {chall:.4f} < champion "
            f"{champion_version} {champ:.4f}{f' + {min_gain:g}' if min_gain else ''} on "
            f"{first}..{last}; {champion_version} stays active"
        )
    return RetrainResult(
        model,
        champion_version,
        challenger_version,
        metric,
        champ,
        chall,
        [first, last],
        len(window),
        promoted,
        message,
    )
