"""The Lab: train and compare models on any dataset and binary target, then deploy one.

An experiment (a *lab run*) is a folder ``lab/<model>/r<N>/`` of the project: ``spec.json``
(what was asked), ``result.json`` (metrics, curves, confusion data, importance,
calibration, the gap to the best possible AUC), ``validation.parquet`` (each validation
row's label and score, so a confusion matrix can be drawn at any threshold) and, for
LightGBM, ``model.txt`` + ``meta.json`` in the saved-model format. Lab runs are working
files of the design node: they are not bundled. :func:`deploy` copies a LightGBM run into
``saved_models/<model>/v<N>`` and makes it the active version; the logistic-regression
baseline is for comparison only (only LightGBM's native text format crosses nodes).

:func:`train` reads the dataset through a short-lived in-memory DuckDB connection and holds
no database file; its steps (labels, split, algorithms, measures) are in
:mod:`engine.design.lab_training`. Trainings in a background thread, reporting progress, are
:mod:`engine.design.lab_jobs`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import brier_score_loss, log_loss, precision_recall_curve, roc_curve

from engine.design import lab_training
from engine.models import maturity
from engine.models.saved import (
    META_FILE,
    MODEL_FILE,
    SavedModel,
    TrainingError,
    _metrics,
    canonical_order,
    data_fingerprint,
    set_active,
    write_model_file,
)
from engine.project import definitions, model_spec
from engine.project.project import LAB_DIR, Project, ProjectError, check_name
from engine.storage import datasets as ds

ALGORITHMS = ("lightgbm", "logistic_regression")
SPLITS = ("time", "random")
IMBALANCE = ("none", "balanced")

Progress = Callable[[float, str], None]


@dataclass
class LabSpec:
    """What to train: dataset, target, features, algorithm, split, imbalance, parameters."""

    dataset: str
    target: str
    features: list[str] = field(default_factory=list)
    model: str = "model"
    algorithm: str = "lightgbm"
    split: str = "time"
    time_column: str | None = "day"
    validation_share: float = 0.2
    # A time split holding out the last N days (a model's declared validation_days), as
    # `nodal model train` does; None: the last validation_share of the days.
    validation_days: int | None = None
    imbalance: str = "none"
    params: dict[str, float] = field(default_factory=dict)
    positive_class: str | None = None
    operating_fpr: float = 0.01
    seed: int = 7
    # The row id (kept with the validation rows to join the truth); None: the model's
    # declared id_column, if any.
    id_column: str | None = None
    # A time split leaves out the days whose labels are not mature by the model's
    # label_maturity rule; False keeps them (the result then warns).
    mature_only: bool = True


def _is_feature_type(dtype: str) -> bool:
    return not any(t in dtype.upper() for t in ("TIMESTAMP", "DATE", "TIME", "LIST", "STRUCT"))


def default_spec(project: Project, dataset: str) -> LabSpec:
    """A sensible start: the project model's settings if one trains on ``dataset``.

    Otherwise a guess from the schema: the target of another model of the project, else a
    column named like a label (``label``, ``target``, ``y``, ``class``), else a boolean
    column, else the last one.
    """
    for name, spec in project.models.items():
        if spec.get("train_on") == dataset:
            feats = spec.get("features") or {}
            return LabSpec(
                dataset=dataset,
                target=spec["target"],
                features=list(feats.get("numeric", [])) + list(feats.get("categorical", [])),
                model=name,
                time_column=spec.get("time_column", "day"),
                operating_fpr=float(spec.get("operating_fpr", 0.01)),
                id_column=spec.get("id_column"),
                # The model's own settings, so that the same rows train the same model file
                # as `nodal model train` (its parameters, seed and validation days).
                params=dict(spec.get("params") or {}),
                seed=int((spec.get("params") or {}).get("seed", 7)),
                validation_days=int(spec.get("validation_days", 7)),
            )
    schema = ds.schema(project.dataset(dataset))
    targets = [str(m.get("target")) for m in project.models.values() if m.get("target")]
    target = (
        next((c for c in schema if c in targets), None)
        or next((c for c in schema if c.lower() in ("label", "target", "y", "class")), None)
        or next((c for c, t in schema.items() if t.upper() == "BOOLEAN"), None)
    )
    time_col = next((c for c, t in schema.items() if t.upper() == "DATE"), None)
    return LabSpec(
        dataset=dataset,
        target=target or list(schema)[-1],
        features=candidate_features(schema, target or list(schema)[-1]),
        model=check_name(f"{dataset}_model"[:64], "model name"),
        split="time" if time_col else "random",
        time_column=time_col,
    )


def candidate_features(schema: dict[str, str], target: str) -> list[str]:
    """Columns usable as features: not the target, not identifiers, not dates."""
    return [
        c
        for c, t in schema.items()
        if c != target
        and _is_feature_type(t)
        and not (c.lower() == "id" or c.lower().endswith("_id"))
        and c != "day"
    ]


def _declaring_model(project: Project, spec: LabSpec) -> str | None:
    """The model whose YAML speaks for this run: its own, else one training on its dataset."""
    if spec.model in project.models:
        return spec.model
    return next((n for n, m in project.models.items() if m.get("train_on") == spec.dataset), None)


def truth(project: Project, spec: LabSpec) -> model_spec.Truth | None:
    """The declared true probabilities the run is compared with (None: not declared)."""
    model = _declaring_model(project, spec)
    return model_spec.truth(project, model) if model else None


def id_column(project: Project, spec: LabSpec) -> str | None:
    """The run's row id: the spec's, else the one the truth or the model declares."""
    if spec.id_column:
        return spec.id_column
    known = truth(project, spec)
    model = _declaring_model(project, spec)
    return known.id_column if known else (project.models.get(model or "") or {}).get("id_column")


def _read(project: Project, spec: LabSpec) -> pd.DataFrame:
    if spec.dataset not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {spec.dataset!r}")
    ref = project.dataset(spec.dataset)
    schema = ds.schema(ref)
    wanted = [spec.target, *spec.features]
    if spec.split == "time" and spec.time_column:
        wanted.append(spec.time_column)
    key = id_column(project, spec)
    if key and key in schema:
        wanted.append(key)
    missing = [c for c in dict.fromkeys(wanted) if c not in schema]
    if missing:
        raise TrainingError(f"dataset {spec.dataset} has no column {', '.join(missing)}")
    frame = ds.read_df(ref, columns=list(dict.fromkeys(wanted)))
    return frame[frame[spec.target].notna()].reset_index(drop=True)


def _mature_rows(
    project: Project, spec: LabSpec, frame: pd.DataFrame, y: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, maturity.Maturity | None, list[str]]:
    """The rows of mature days only (a time split, ``mature_only``), each day's maturity
    under the declaring model's rule, and what to warn about."""
    if spec.split != "time" or not spec.time_column or spec.time_column not in frame:
        return frame, y, None, []
    day_of_row = frame[spec.time_column].map(maturity.day_key)
    ripe = maturity.assess(
        project, _declaring_model(project, spec), day_of_row.tolist(), y, spec.time_column
    )
    if not (spec.mature_only and ripe.immature_days):
        return frame, y, ripe, []
    keep = ~day_of_row.isin(set(ripe.immature_days)).to_numpy()
    if len(set(day_of_row[keep])) < 2:
        raise TrainingError(
            f"only {len(set(day_of_row[keep]))} day(s) of {spec.dataset} have mature labels "
            f"({ripe.rule.describe() if ripe.rule else ''}; {len(ripe.immature_days)} days "
            f"from {ripe.immature_days[0]} do not): a time split needs at least 2"
        )
    note = (
        f"{len(ripe.immature_days)} days with immature labels left out "
        f"({ripe.immature_days[0]}..{ripe.immature_days[-1]}; {ripe.rule.describe() if ripe.rule else ''})"
    )
    return frame.loc[keep].reset_index(drop=True), y[keep], ripe, [note]


def _validation_warnings(
    spec: LabSpec, frame: pd.DataFrame, is_valid: np.ndarray, ripe: maturity.Maturity | None
) -> list[str]:
    """Validation days whose labels are immature, or look it (only positives, no rule)."""
    if ripe is None:
        return []
    valid_days = set(frame.loc[is_valid, spec.time_column].map(maturity.day_key))
    immature = sorted(valid_days & set(ripe.immature_days))
    if immature:
        return [
            f"validation days {', '.join(immature)} have immature labels: the threshold and "
            "the metrics are biased (train with mature days only)"
        ]
    suspicious = sorted(valid_days & set(ripe.only_positive_days()))
    if suspicious and ripe.rule is None:
        return [
            f"validation days {', '.join(suspicious)} have only positive labels, as when the "
            "negatives are not known yet: declare label_maturity in the model's YAML"
        ]
    return []


def check_spec(spec: LabSpec) -> None:
    """Refuse (:class:`TrainingError`) a spec that cannot be trained, before reading data."""
    check_name(spec.model, "model name")
    if spec.algorithm not in ALGORITHMS:
        raise TrainingError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    if spec.split not in SPLITS:
        raise TrainingError(f"split must be one of {', '.join(SPLITS)}")
    if spec.imbalance not in IMBALANCE:
        raise TrainingError(f"class imbalance handling must be one of {', '.join(IMBALANCE)}")
    if not spec.features:
        raise TrainingError("choose at least one feature")
    if spec.target in spec.features:
        raise TrainingError(f"the target {spec.target!r} cannot also be a feature")


def train(
    project: Project, spec: LabSpec, user: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Train one lab run; return its result (also saved under ``lab/<model>/r<N>``)."""
    project.require("write")
    report = progress or (lambda _f, _m: None)
    check_spec(spec)
    report(0.0, f"reading {spec.dataset}")
    frame = _read(project, spec)
    # One row order whatever order the dataset returns: a random split draws by position,
    # LightGBM's bagging too. The fingerprint identifies what was trained on.
    read = [*spec.features, spec.target]
    if spec.split == "time" and spec.time_column:
        read.insert(0, spec.time_column)
    frame = canonical_order(frame, read)
    y = lab_training.labels(frame, spec)
    frame, y, ripe, warnings = _mature_rows(project, spec, frame, y)
    fingerprint = {"dataset": spec.dataset, **data_fingerprint(frame, read)}
    is_valid, valid_desc = lab_training.split(frame, spec)
    if spec.split == "time" and spec.time_column:
        warnings += _validation_warnings(spec, frame, is_valid, ripe)
    for part, mask in (("training", ~is_valid), ("validation", is_valid)):
        if len(set(y[mask])) < 2:
            raise TrainingError(
                f"the {part} rows hold only one class after the {spec.split} split: "
                "change the split or the validation share"
            )
    numeric, categorical = lab_training.split_types(frame, spec.features)
    vocab = {
        c: sorted(frame.loc[~is_valid, c].dropna().astype(str).unique().tolist())
        for c in categorical
    }
    encoded = frame.copy()
    for c in categorical:
        encoded[c] = encoded[c].astype("string")
    skeleton = SavedModel(
        Path("."), {"numeric": numeric, "categorical": categorical, "vocab": vocab}, None
    )  # type: ignore[arg-type]
    X = skeleton.encode(encoded)
    report(0.05, "training")
    n_pos, n_neg = int(y[~is_valid].sum()), int((~is_valid).sum() - y[~is_valid].sum())
    if spec.algorithm == "lightgbm":
        booster, p_valid, importance, params, used = lab_training.train_lightgbm(
            X, y, is_valid, numeric, categorical, spec, n_neg / max(n_pos, 1), report
        )
    else:
        booster, importance, params = None, {}, {**lab_training.LOGREG_PARAMS, **spec.params}
        used = params
        p_valid, importance = lab_training.train_logreg(
            X, y, is_valid, numeric, categorical, spec, params
        )
    report(0.95, "evaluating")
    y_valid = y[is_valid]
    metrics = _metrics(y_valid, p_valid, spec.operating_fpr)
    metrics.update(
        {
            "log_loss": float(log_loss(y_valid, np.clip(p_valid, 1e-12, 1 - 1e-12))),
            "brier": float(brier_score_loss(y_valid, p_valid)),
        }
    )
    fpr, tpr, _ = roc_curve(y_valid, p_valid)
    precision, recall, _ = precision_recall_curve(y_valid, p_valid)
    key = id_column(project, spec)
    ids = frame.loc[is_valid, key] if key and key in frame else None
    best = lab_training.best_possible(project, truth(project, spec), ids, y_valid)
    result = {
        "spec": asdict(spec),
        "params": params,
        "numeric": numeric,
        "categorical": categorical,
        "metrics": metrics,
        "train_rows": int((~is_valid).sum()),
        "validation": valid_desc,
        "positives_train": n_pos,
        "training_data": fingerprint,
        "maturity": ripe.as_dicts() if ripe is not None else [],
        "maturity_rule": ripe.rule.describe() if ripe is not None and ripe.rule else None,
        "warnings": warnings,
        "roc": dict(zip(("fpr", "tpr"), lab_training.downsample(fpr, tpr), strict=True)),
        "pr": dict(
            zip(
                ("recall", "precision"),
                lab_training.downsample(recall[::-1], precision[::-1]),
                strict=True,
            )
        ),
        "calibration": lab_training.calibration(y_valid, p_valid),
        "importance": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        "best_possible": None
        if best is None
        else {**best, "gap": best["auc"] - metrics["roc_auc"]},
        "trained_by": user,
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    meta = None
    if booster is not None:
        meta = {
            "project": project.name,
            "model": spec.model,
            "algorithm": "lightgbm",
            "target": spec.target,
            "numeric": numeric,
            "categorical": categorical,
            "vocab": vocab,
            "threshold": metrics["threshold"],
            "metrics": metrics,
            "train_rows": result["train_rows"],
            "validation_days": valid_desc,
            "best_iteration": booster.best_iteration,
            "training_data": fingerprint,
            "label_maturity": ripe.summary() if ripe is not None else None,
            "settings": {
                "params": used,
                "num_boost_round": params["num_boost_round"],
                "early_stopping_rounds": params["early_stopping_rounds"],
                "split": spec.split,
                "validation_share": spec.validation_share,
                "validation_days": spec.validation_days,
                "operating_fpr": spec.operating_fpr,
                "lightgbm": lgb.__version__,
            },
        }
    run_id = _save_run(project, spec.model, result, y_valid, p_valid, booster, meta)
    result["run_id"] = run_id
    report(1.0, f"done: {spec.model} {run_id}")
    return result


def _lab_dir(project: Project, model: str) -> Path:
    return project.root / LAB_DIR / model


def _save_run(project, model, result, y_valid, p_valid, booster, meta) -> str:  # noqa: ANN001
    base = _lab_dir(project, model)
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".run-"))
    try:
        pd.DataFrame({"y": y_valid.astype("int8"), "p": p_valid}).to_parquet(
            staging / "validation.parquet"
        )
        if booster is not None:
            write_model_file(booster, staging / MODEL_FILE)
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        while True:  # claim the next run number atomically (two analysts may train at once)
            numbers = [int(p.name[1:]) for p in base.glob("r*") if p.name[1:].isdigit()]
            run_id = f"r{max(numbers, default=0) + 1}"
            result["run_id"] = run_id
            (staging / "result.json").write_text(json.dumps(result, indent=1, default=float))
            try:
                os.rename(staging, base / run_id)
                return run_id
            except OSError:
                continue
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def list_runs(project: Project, model: str | None = None) -> list[dict[str, Any]]:
    """Every lab run's result (newest first), for one model or all."""
    root = project.root / LAB_DIR
    pattern = f"{model}/r*/result.json" if model else "*/r*/result.json"
    out = [json.loads(p.read_text()) for p in root.glob(pattern)]
    return sorted(out, key=lambda r: r["trained_at"], reverse=True)


def get_run(project: Project, model: str, run_id: str) -> dict[str, Any]:
    path = _lab_dir(project, model) / run_id / "result.json"
    if not path.is_file():
        raise ProjectError(f"model {model!r} has no lab run {run_id!r}")
    return json.loads(path.read_text())


def confusion(
    project: Project,
    model: str,
    run_id: str,
    threshold: float,
    cost_false_positive: float = 1.0,
    cost_false_negative: float = 10.0,
) -> dict[str, float]:
    """Confusion matrix of a run's validation rows at ``threshold``, and the cost of errors."""
    path = _lab_dir(project, model) / run_id / "validation.parquet"
    if not path.is_file():
        raise ProjectError(f"model {model!r} has no lab run {run_id!r}")
    v = pd.read_parquet(path)
    flagged = v["p"].to_numpy() >= threshold
    y = v["y"].to_numpy() == 1
    tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
    fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
    return {
        "threshold": threshold,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "cost": fp * cost_false_positive + fn * cost_false_negative,
    }


def deploy(project: Project, model: str, run_id: str, user: str) -> str:
    """Make a LightGBM lab run the project's active saved-model version; return the version.

    Earlier versions are kept. A model the project does not define yet gets
    ``models/<model>.yaml`` (what it trains on, target, features, parameters).
    """
    project.require("write")
    run_dir = _lab_dir(project, model) / run_id
    result = get_run(project, model, run_id)
    if not (run_dir / MODEL_FILE).is_file():
        raise TrainingError(
            f"lab run {run_id} is a {result['spec']['algorithm']} baseline: only LightGBM "
            "runs can be deployed (their native text format is what scoring nodes load)"
        )
    spec = result["spec"]
    if model not in project.models:
        doc = {
            "name": model,
            "train_on": spec["dataset"],
            "target": spec["target"],
            "time_column": spec.get("time_column") or "day",
            **({"id_column": spec["id_column"]} if spec.get("id_column") else {}),
            "operating_fpr": spec["operating_fpr"],
            "features": {"numeric": result["numeric"], "categorical": result["categorical"]},
            "params": {"objective": "binary", **result["params"], "seed": spec["seed"]},
        }
        rel = f"models/{model}.yaml"
        text = "# Deployed from the Lab.\n" + yaml.safe_dump(doc, sort_keys=False)
        definitions.save_project(project, {rel: text}, base={rel: definitions.ABSENT})
    model_dir = project.saved_models_dir(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads((run_dir / META_FILE).read_text())
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".deploy-"))
    try:
        shutil.copyfile(run_dir / MODEL_FILE, staging / MODEL_FILE)
        while True:
            numbers = [int(p.name[1:]) for p in model_dir.glob("v*") if p.name[1:].isdigit()]
            version = f"v{max(numbers, default=0) + 1}"
            meta.update(
                {
                    "version": version,
                    "trained_by": result["trained_by"],
                    "trained_at": result["trained_at"],
                    "lab_run": run_id,
                    "deployed_by": user,
                }
            )
            (staging / META_FILE).write_text(json.dumps(meta, indent=2))
            try:
                os.rename(staging, model_dir / version)
                break
            except OSError:
                continue
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    set_active(project, model, version)
    return version
