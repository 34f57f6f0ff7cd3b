"""The Lab: train and compare models on any dataset and binary target, then deploy one.

An experiment (a *lab run*) is a folder ``lab/<model>/r<N>/`` of the project: ``spec.json``
(what was asked), ``result.json`` (metrics, curves, confusion data, importance,
calibration, the gap to the best possible AUC), ``validation.parquet`` (each validation
row's label and score, so a confusion matrix can be drawn at any threshold) and, for
LightGBM, ``model.txt`` + ``meta.json`` in the saved-model format. Lab runs are working
files of the design node: they are not bundled. :func:`deploy` copies a LightGBM run into
``saved_models/<model>/v<N>`` and makes it the active version; the logistic-regression
baseline is for comparison only (only LightGBM's native text format crosses nodes).

Training runs in a background thread (:func:`start`) that reports progress; it reads the
dataset through a short-lived in-memory DuckDB connection and holds no database file. A
training in progress is also a small record, ``lab/.jobs/<job>.json``, locked (``flock``) by
the process training it for as long as it trains: if that process stops (a Studio restart)
the lock goes with it, and :func:`interrupted_jobs` reports the training as interrupted,
with its settings, so it can be started again (:func:`train_again`), never left "running".
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import (
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from engine import definitions
from engine.models import META_FILE, MODEL_FILE, SavedModel, TrainingError, _metrics, set_active
from engine.project import LAB_DIR, Project, ProjectError, check_name
from engine.storage import datasets as ds

ALGORITHMS = ("lightgbm", "logistic_regression")
SPLITS = ("time", "random")
IMBALANCE = ("none", "balanced")
LGB_PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "num_boost_round": 300,
    "early_stopping_rounds": 30,
}
LOGREG_PARAMS = {"C": 1.0, "max_iter": 200}
TRUTH_DATASET = "truth"  # the example generator's true fraud probabilities, in the landing zone
_CURVE_POINTS = 200

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
    imbalance: str = "none"
    params: dict[str, float] = field(default_factory=dict)
    positive_class: str | None = None
    operating_fpr: float = 0.01
    seed: int = 7


def _is_feature_type(dtype: str) -> bool:
    return not any(t in dtype.upper() for t in ("TIMESTAMP", "DATE", "TIME", "LIST", "STRUCT"))


def default_spec(project: Project, dataset: str) -> LabSpec:
    """A sensible start: the project model's settings if one trains on ``dataset``."""
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
            )
    schema = ds.schema(project.dataset(dataset))
    target = next((c for c in schema if c.lower() in ("is_fraud", "label", "target")), None)
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


def _split_types(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for c in features:
        kind = frame[c].dtype.kind
        (numeric if kind in "biuf" else categorical).append(c)
    return numeric, categorical


def _labels(frame: pd.DataFrame, spec: LabSpec) -> np.ndarray:
    raw = frame[spec.target]
    values = list(pd.unique(raw.dropna()))
    if len(values) < 2:
        shown = f" ({values[0]!r})" if values else ""
        raise TrainingError(
            f"target column {spec.target!r} has only one class{shown} in the {len(frame):,} rows: "
            "a classifier needs examples of both classes"
        )
    if len(values) > 2:
        raise TrainingError(
            f"target column {spec.target!r} has {len(values)} distinct values: the Lab trains "
            "binary classifiers, choose a column with two values"
        )
    if spec.positive_class is not None:
        match = [v for v in values if str(v) == str(spec.positive_class)]
        if not match:
            raise TrainingError(
                f"target {spec.target!r} has no value {spec.positive_class!r} "
                f"(it has {', '.join(map(str, values))})"
            )
        positive = match[0]
    elif {str(v) for v in values} <= {"0", "1", "True", "False", "0.0", "1.0"}:
        positive = next(v for v in values if str(v) in ("1", "True", "1.0"))
    else:
        counts = raw.value_counts()
        positive = counts.index[-1]  # the rarer class, as for fraud
    return (raw == positive).to_numpy().astype(int)


def _split(frame: pd.DataFrame, spec: LabSpec) -> tuple[np.ndarray, list[str]]:
    """Boolean validation mask and a description of the validation set."""
    if not 0.05 <= spec.validation_share <= 0.5:
        raise TrainingError("the validation share must be between 5 % and 50 %")
    if spec.split == "random":
        rng = np.random.default_rng(spec.seed)
        return rng.random(len(frame)) < spec.validation_share, [
            "random split",
            f"{spec.validation_share:.0%} of rows",
        ]
    if not spec.time_column or spec.time_column not in frame.columns:
        raise TrainingError(
            f"a time split needs a time column: {spec.time_column!r} is not a column of "
            f"{spec.dataset} (choose one, or a random split)"
        )
    periods = frame[spec.time_column].astype(str)
    days = sorted(periods.unique())
    if len(days) < 2:
        raise TrainingError(f"a time split needs at least 2 values of {spec.time_column}")
    n_valid = min(len(days) - 1, max(1, round(len(days) * spec.validation_share)))
    valid = days[-n_valid:]
    return periods.isin(set(valid)).to_numpy(), [valid[0], valid[-1]]


def _downsample(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, _CURVE_POINTS)).astype(int))
    return [[round(float(a[i]), 6) for i in idx] for a in arrays]


def _calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    frame = pd.DataFrame({"y": y, "p": p})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), bins, labels=False)
    grouped = frame.groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size")
    )
    return [
        {"predicted": float(r.predicted), "observed": float(r.observed), "rows": int(r.rows)}
        for r in grouped.itertuples()
    ]


def _best_possible(project: Project, ids: pd.Series | None, y: np.ndarray) -> dict[str, Any] | None:
    """AUC of the generator's true probabilities on the same validation rows, if known."""
    data_dir = project.variables.get("data_dir")
    if ids is None or not data_dir:
        return None
    truth = ds.DatasetRef(TRUTH_DATASET, Path(data_dir) / TRUTH_DATASET, "day")
    if not truth.exists():
        return None
    with ds.session({"truth": truth}) as con:
        con.register(
            "v",
            pd.DataFrame({"transaction_id": ids.astype(str).to_numpy(), "i": np.arange(len(ids))}),
        )
        got = con.execute(
            "SELECT v.i, t.true_fraud_proba FROM v JOIN truth t USING (transaction_id)"
        ).df()
    if len(got) < 0.99 * len(ids) or len(set(y[got["i"].to_numpy()])) < 2:
        return None
    return {
        "auc": float(roc_auc_score(y[got["i"].to_numpy()], got["true_fraud_proba"].to_numpy())),
        "rows": len(got),
    }


def _read(project: Project, spec: LabSpec) -> pd.DataFrame:
    if spec.dataset not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {spec.dataset!r}")
    ref = project.dataset(spec.dataset)
    schema = ds.schema(ref)
    wanted = [spec.target, *spec.features]
    if spec.split == "time" and spec.time_column:
        wanted.append(spec.time_column)
    if "transaction_id" in schema:
        wanted.append("transaction_id")
    missing = [c for c in dict.fromkeys(wanted) if c not in schema]
    if missing:
        raise TrainingError(f"dataset {spec.dataset} has no column {', '.join(missing)}")
    frame = ds.read_df(ref, columns=list(dict.fromkeys(wanted)))
    return frame[frame[spec.target].notna()].reset_index(drop=True)


def _check_spec(spec: LabSpec) -> None:
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
    report = progress or (lambda _f, _m: None)
    _check_spec(spec)
    report(0.0, f"reading {spec.dataset}")
    frame = _read(project, spec)
    y = _labels(frame, spec)
    is_valid, valid_desc = _split(frame, spec)
    for part, mask in (("training", ~is_valid), ("validation", is_valid)):
        if len(set(y[mask])) < 2:
            raise TrainingError(
                f"the {part} rows hold only one class after the {spec.split} split: "
                "change the split or the validation share"
            )
    numeric, categorical = _split_types(frame, spec.features)
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
        booster, p_valid, importance, params = _train_lightgbm(
            X, y, is_valid, numeric, categorical, spec, n_neg / max(n_pos, 1), report
        )
    else:
        booster, importance, params = None, {}, {**LOGREG_PARAMS, **spec.params}
        p_valid, importance = _train_logreg(X, y, is_valid, numeric, categorical, spec, params)
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
    ids = frame.loc[is_valid, "transaction_id"] if "transaction_id" in frame else None
    best = _best_possible(project, ids, y_valid)
    result = {
        "spec": asdict(spec),
        "params": params,
        "numeric": numeric,
        "categorical": categorical,
        "metrics": metrics,
        "train_rows": int((~is_valid).sum()),
        "validation": valid_desc,
        "positives_train": n_pos,
        "roc": dict(zip(("fpr", "tpr"), _downsample(fpr, tpr), strict=True)),
        "pr": dict(
            zip(("recall", "precision"), _downsample(recall[::-1], precision[::-1]), strict=True)
        ),
        "calibration": _calibration(y_valid, p_valid),
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
        }
    run_id = _save_run(project, spec.model, result, y_valid, p_valid, booster, meta)
    result["run_id"] = run_id
    report(1.0, f"done: {spec.model} {run_id}")
    return result


def _train_lightgbm(X, y, is_valid, numeric, categorical, spec, ratio, report):  # noqa: ANN001, ANN202
    params = {**LGB_PARAMS, **spec.params}
    rounds = int(params.pop("num_boost_round"))
    early = int(params.pop("early_stopping_rounds"))
    lgb_params = {
        "objective": "binary",
        "verbose": -1,
        "seed": spec.seed,
        # Leave a core to the other sessions of the Studio.
        "num_threads": max(1, (os.cpu_count() or 2) - 1),
        **{
            k: (int(v) if k in ("num_leaves", "min_data_in_leaf", "max_depth") else float(v))
            for k, v in params.items()
        },
    }
    if spec.imbalance == "balanced":
        lgb_params["scale_pos_weight"] = float(ratio)
    names = numeric + categorical
    cat_idx = list(range(len(numeric), len(names)))
    train_set = lgb.Dataset(
        X[~is_valid], y[~is_valid], feature_name=names, categorical_feature=cat_idx
    )
    valid_set = lgb.Dataset(X[is_valid], y[is_valid], reference=train_set)

    def on_iteration(env: lgb.callback.CallbackEnv) -> None:
        done = (env.iteration + 1) / max(env.end_iteration, 1)
        report(
            0.05 + 0.85 * done, f"boosting round {env.iteration + 1} of up to {env.end_iteration}"
        )

    booster = lgb.train(
        lgb_params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(early, verbose=False), on_iteration],
    )
    p_valid = booster.predict(X[is_valid], num_iteration=booster.best_iteration)
    gain = booster.feature_importance("gain", iteration=booster.best_iteration)
    total = float(gain.sum()) or 1.0
    importance = {n: float(g) / total for n, g in zip(names, gain, strict=True)}
    return (
        booster,
        p_valid,
        importance,
        {**params, "num_boost_round": rounds, "early_stopping_rounds": early},
    )


def _train_logreg(X, y, is_valid, numeric, categorical, spec, params):  # noqa: ANN001, ANN202
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    n_num = len(numeric)
    num_idx, cat_idx = list(range(n_num)), list(range(n_num, n_num + len(categorical)))
    transformers = []
    if num_idx:
        transformers.append(
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), num_idx)
        )
    if cat_idx:
        transformers.append(
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                cat_idx,
            )
        )
    model = make_pipeline(
        ColumnTransformer(transformers),
        LogisticRegression(
            C=float(params["C"]),
            max_iter=int(params["max_iter"]),
            class_weight="balanced" if spec.imbalance == "balanced" else None,
        ),
    )
    model.fit(X[~is_valid], y[~is_valid])
    p_valid = model.predict_proba(X[is_valid])[:, 1]
    coefs = np.abs(model[-1].coef_[0])
    importance: dict[str, float] = {}
    pos = 0
    for name in numeric:
        importance[name] = float(coefs[pos])
        pos += 1
    if cat_idx:
        enc = model[0].named_transformers_["cat"][-1]
        for name, cats in zip(categorical, enc.categories_, strict=True):
            importance[name] = float(coefs[pos : pos + len(cats)].sum())
            pos += len(cats)
    total = sum(importance.values()) or 1.0
    return p_valid, {k: v / total for k, v in importance.items()}


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
            booster.save_model(str(staging / MODEL_FILE), num_iteration=booster.best_iteration)
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
            "operating_fpr": spec["operating_fpr"],
            "features": {"numeric": result["numeric"], "categorical": result["categorical"]},
            "params": {"objective": "binary", **result["params"], "seed": spec["seed"]},
        }
        rel = f"models/{model}.yaml"
        text = "# Deployed from the Lab.\n" + yaml.safe_dump(doc, sort_keys=False)
        definitions.save(
            project.root, {rel: text}, base={rel: definitions.ABSENT}, variables=project.variables
        )
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


# --- background training ----------------------------------------------------------------------


@dataclass
class TrainingJob:
    """A training running in a thread of this process; pages poll it."""

    job_id: str
    spec: LabSpec
    status: str = "RUNNING"  # RUNNING | DONE | FAILED
    progress: float = 0.0
    message: str = "starting"
    result: dict[str, Any] | None = None
    error: str | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def update(self, fraction: float, message: str) -> None:
        self.progress, self.message = min(max(fraction, 0.0), 1.0), message


_JOBS: dict[str, TrainingJob] = {}
_JOBS_LOCK = threading.Lock()


JOBS_DIR = ".jobs"  # under lab/: records of trainings in progress
INTERRUPTED = "INTERRUPTED"


def _jobs_dir(project: Project) -> Path:
    return project.root / LAB_DIR / JOBS_DIR


def _hold_record(project: Project, job: TrainingJob, user: str) -> int:
    """Write the job's record and lock it for as long as this process trains; the fd."""
    folder = _jobs_dir(project)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "job_id": job.job_id,
        "status": "RUNNING",
        "spec": asdict(job.spec),
        "user": user,
        "started_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "pid": os.getpid(),
    }
    # Locked before it is visible under its name: no one can see it unlocked while we train.
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".new-")
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, json.dumps(record, indent=1).encode())
    os.rename(tmp, folder / f"{job.job_id}.json")
    return fd


def _release_record(project: Project, job_id: str, fd: int) -> None:
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)
    os.close(fd)  # releases the lock


def start(project: Project, spec: LabSpec, user: str) -> TrainingJob:
    """Start training in a background thread; the caller polls :func:`get_job`."""
    _check_spec(spec)
    job = TrainingJob(uuid.uuid4().hex[:12], spec)
    fd = _hold_record(project, job, user)

    def work() -> None:
        from engine.errors import NodalError

        try:
            job.result = train(project, spec, user, job.update)
            job.status = "DONE"
        except NodalError as exc:
            job.error, job.status = str(exc), "FAILED"
        except Exception as exc:  # noqa: BLE001 - a bug; shown, and the thread does not die silently
            job.error, job.status = f"internal error: {exc!r}", "FAILED"
        finally:
            _release_record(project, job.job_id, fd)

    job.thread = threading.Thread(target=work, name=f"lab-{job.job_id}", daemon=True)
    with _JOBS_LOCK:
        _JOBS[job.job_id] = job
    try:
        job.thread.start()
    except BaseException:
        _release_record(project, job.job_id, fd)
        raise
    return job


def interrupted_jobs(project: Project) -> list[dict[str, Any]]:
    """Trainings whose process stopped before they ended (oldest first).

    A record still locked belongs to a training in progress (in this process or another)
    and is not listed. An unlocked record is marked ``INTERRUPTED`` with a message saying
    what happened; it stays until :func:`train_again` or :func:`dismiss_job`.
    """
    out = []
    for path in sorted(_jobs_dir(project).glob("*.json")):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # ended meanwhile
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # still training
            if not path.exists():  # released and removed while we waited
                continue
            record = json.loads(path.read_text())
            if record.get("status") != INTERRUPTED:
                record["status"] = INTERRUPTED
                record["message"] = (
                    f"The training of {record['spec']['model']} started at "
                    f"{record['started_at']} by {record['user']} was interrupted: the process "
                    f"training it (PID {record['pid']}) stopped before it ended, most likely a "
                    "restart of the Studio. Nothing was saved; train again with the same settings."
                )
                definitions._write_atomic(path, json.dumps(record, indent=1))
            out.append(record)
        finally:
            os.close(fd)
    return sorted(out, key=lambda r: r["started_at"])


def dismiss_job(project: Project, job_id: str) -> None:
    """Forget an interrupted training (a running one cannot be dismissed)."""
    if not any(r["job_id"] == job_id for r in interrupted_jobs(project)):
        raise ProjectError(f"there is no interrupted training {job_id!r}")
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)


def train_again(project: Project, job_id: str, user: str) -> TrainingJob:
    """Start an interrupted training again, with the same settings; the old record goes."""
    record = next((r for r in interrupted_jobs(project) if r["job_id"] == job_id), None)
    if record is None:
        raise ProjectError(f"there is no interrupted training {job_id!r}")
    job = start(project, LabSpec(**record["spec"]), user)
    (_jobs_dir(project) / f"{job_id}.json").unlink(missing_ok=True)
    return job


def get_job(job_id: str) -> TrainingJob | None:
    with _JOBS_LOCK:
        return _JOBS.get(job_id)
