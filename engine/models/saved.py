"""Saved models: LightGBM trained on a time-based split, stored as versioned folders.

A saved-model version is a folder ``saved_models/<model>/v<N>/`` holding ``model.txt``
(LightGBM's native text format: no pickle crosses nodes) and ``meta.json`` (features,
category vocabularies, decision threshold, metrics). ``saved_models/<model>/ACTIVE`` names
the version the project uses. The same :class:`SavedModel` scores batch and real time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from engine.core.errors import NodalError
from engine.models.compiled import CompiledForest, CompileError, load_or_compile
from engine.project.project import ACTIVE_FILE, Project, ProjectError
from engine.storage import datasets as ds

MODEL_FILE = "model.txt"
META_FILE = "meta.json"
_TRAIN_KEYS = {"num_boost_round", "early_stopping_rounds"}


class ModelError(NodalError, ValueError):
    """A saved model's files are missing or unusable."""


class ModelCompileError(ModelError):
    """A saved model cannot be compiled to native code (see :mod:`engine.models.compiled`)."""


class TrainingError(NodalError):
    """Training cannot run on this data; the message says why."""


@dataclass(frozen=True)
class SavedModel:
    """A loaded saved-model version: encodes raw feature columns and predicts.

    ``compiled`` (see :mod:`engine.models.compiled`), when attached, is what ``predict_proba``
    uses; the Booster stays for training-side work (evaluation, explanations).
    """

    path: Path
    meta: dict[str, Any]
    booster: lgb.Booster
    compiled: CompiledForest | None = None

    @classmethod
    def load(cls, path: Path, compiled: Path | None = None) -> SavedModel:
        """Load a version folder; with ``compiled`` (a cache folder), attach its compiled forest.

        Raises ModelError (ModelCompileError when compiling fails) naming the problem.
        """
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text())
            booster = lgb.Booster(model_file=str(path / MODEL_FILE))
        except (OSError, ValueError, lgb.basic.LightGBMError) as exc:
            raise ModelError(f"saved model at {path} cannot be loaded: {exc}") from None
        saved = cls(path, meta, booster)
        return saved.compile(compiled) if compiled is not None else saved

    def compile(self, cache_dir: Path) -> SavedModel:
        """This model with its forest compiled to native code (cached in ``cache_dir``)."""
        n_numeric = len(self.meta["numeric"])
        categorical = {
            n_numeric + k: len(self.meta["vocab"][name])
            for k, name in enumerate(self.meta["categorical"])
        }
        try:
            forest = load_or_compile(self.path / MODEL_FILE, cache_dir, self.booster, categorical)
        except CompileError as exc:
            raise ModelCompileError(
                f"saved model {self.meta.get('model', '?')} {self.version}: {exc}"
            ) from None
        return replace(self, compiled=forest)

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta["numeric"]) + list(self.meta["categorical"])

    @property
    def input_columns(self) -> list[str]:
        return self.feature_names

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Feature matrix (float64, one column per feature) from a frame of raw features."""
        cols = []
        for name in self.meta["numeric"]:
            cols.append(
                pd.to_numeric(frame[name], errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
            )
        for name in self.meta["categorical"]:
            # unseen values and nulls → -1 → NaN (pd.Categorical with unseen values is deprecated)
            codes = pd.Index(self.meta["vocab"][name]).get_indexer(frame[name])
            cols.append(np.where(codes < 0, np.nan, codes).astype("float64"))
        return np.column_stack(cols) if cols else np.empty((len(frame), 0))

    def encode_record(self, record: Mapping[str, Any]) -> np.ndarray:
        """One-row feature matrix from a dict: the real-time path (no pandas)."""
        row = [_as_float(record.get(name)) for name in self.meta["numeric"]]
        lookups = self.meta.get("_vocab_index")
        if lookups is None:
            lookups = {k: {v: i for i, v in enumerate(vs)} for k, vs in self.meta["vocab"].items()}
            self.meta["_vocab_index"] = lookups
        for name in self.meta["categorical"]:
            code = lookups[name].get(record.get(name))
            row.append(float("nan") if code is None else float(code))
        return np.array([row], dtype="float64")

    def predict_proba(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Fraud probabilities; the compiled forest when attached (same values, rtol 1e-12)."""
        if self.compiled is not None:
            return self.compiled.predict(matrix, num_threads=num_threads)
        return self.booster.predict(matrix, num_threads=num_threads)


def _as_float(value: Any) -> float:
    if value is None:
        return float("nan")
    return float(value)


def _metrics(y: np.ndarray, p: np.ndarray, operating_fpr: float) -> dict[str, float]:
    negatives = np.sort(p[y == 0])
    # Smallest threshold that flags at most operating_fpr of legitimate transactions.
    k = int(np.floor(operating_fpr * len(negatives)))
    threshold = float(negatives[-k - 1]) if k < len(negatives) else float(negatives[0])
    threshold = float(np.nextafter(threshold, np.inf))
    flagged = p >= threshold
    tp = int(np.sum(flagged & (y == 1)))
    return {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "threshold": threshold,
        "recall_at_fpr": tp / max(int(np.sum(y == 1)), 1),
        "precision_at_threshold": tp / max(int(np.sum(flagged)), 1),
        "fpr_at_threshold": float(np.mean(p[y == 0] >= threshold)),
        "operating_fpr": operating_fpr,
        "validation_rows": len(y),
        "validation_frauds": int(np.sum(y == 1)),
    }


def _next_version(model_dir: Path) -> str:
    numbers = [int(p.name[1:]) for p in model_dir.glob("v*") if p.name[1:].isdigit()]
    return f"v{max(numbers, default=0) + 1}"


def set_active(project: Project, model: str, version: str) -> None:
    """Point the project's model at ``version`` (atomic replace of the ACTIVE marker)."""
    model_dir = project.saved_models_dir(model)
    if not (model_dir / version / MODEL_FILE).exists():
        raise ProjectError(f"model {model!r} has no version {version!r}")
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".active-")
    with os.fdopen(fd, "w") as fh:
        fh.write(version + "\n")
    os.replace(tmp, model_dir / ACTIVE_FILE)


def list_versions(project: Project, model: str) -> list[dict[str, Any]]:
    """Every saved version's meta (newest first), with an ``active`` flag."""
    model_dir = project.saved_models_dir(model)
    active = project.active_model_version(model)
    out = []
    for meta_path in model_dir.glob(f"v*/{META_FILE}"):
        meta = json.loads(meta_path.read_text())
        meta["active"] = meta["version"] == active
        out.append(meta)
    return sorted(out, key=lambda m: int(m["version"][1:]), reverse=True)


def _canonical_order(
    frame: pd.DataFrame, columns: list[str], categorical: list[str]
) -> pd.DataFrame:
    """``frame``'s rows sorted on every column training reads.

    A recipe's JOIN or a parallel scan returns the same rows in another order from one
    build to the next, and bagging draws rows by position: without one order, the same data
    would train a different model each time. Rows equal on every sorted column are
    interchangeable for training, so their relative order does not matter.
    """
    keys = frame[list(dict.fromkeys(columns))].copy()
    for column in {columns[0], *categorical}:
        keys[column] = keys[column].astype("string")
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return frame.loc[order].reset_index(drop=True)


def train(
    project: Project,
    model: str,
    created_by: str,
    activate: bool = True,
    *,
    should_stop: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train a new version of ``model`` on its training dataset; return its meta.

    ``should_stop`` is called before training and after every boosting iteration; whatever
    it raises stops the training and propagates (no version is written).
    """
    spec = project.models.get(model)
    if spec is None:
        raise ProjectError(f"project {project.name!r} has no model {model!r}")
    numeric = list(spec["features"].get("numeric", []))
    categorical = list(spec["features"].get("categorical", []))
    target, time_col = spec["target"], spec.get("time_column", "day")
    frame = ds.read_df(project.dataset(spec["train_on"]))
    missing = [c for c in [*numeric, *categorical, target, time_col] if c not in frame.columns]
    if missing:
        raise TrainingError(f"training data lacks columns: {', '.join(missing)}")
    frame = _canonical_order(frame, [time_col, *numeric, *categorical, target], categorical)
    days = sorted(frame[time_col].astype(str).unique())
    n_valid = int(spec.get("validation_days", 7))
    if len(days) <= n_valid:
        raise TrainingError(f"need more than {n_valid} labelled days to hold out, have {len(days)}")
    valid_days = set(days[-n_valid:])
    is_valid = frame[time_col].astype(str).isin(valid_days).to_numpy()
    y = frame[target].astype(int).to_numpy()
    if y[~is_valid].sum() == 0 or y[is_valid].sum() == 0:
        raise TrainingError(
            "both the training and the validation days need at least one positive label"
        )

    vocab = {
        c: sorted(frame.loc[~is_valid, c].dropna().astype(str).unique().tolist())
        for c in categorical
    }
    params = dict(spec.get("params") or {})
    rounds = int(params.pop("num_boost_round", 300))
    early = int(params.pop("early_stopping_rounds", 30))
    params.update({"verbose": -1, "num_threads": 0})
    # Same rows, same parameters, same core count: the same model, bit for bit (LightGBM
    # asks for a forced histogram layout with `deterministic`).
    params.setdefault("deterministic", True)
    if not {"force_col_wise", "force_row_wise"} & params.keys():
        params["force_col_wise"] = True
    skeleton = SavedModel(
        Path("."), {"numeric": numeric, "categorical": categorical, "vocab": vocab}, None
    )  # type: ignore[arg-type]
    X = skeleton.encode(frame)
    cat_idx = list(range(len(numeric), len(numeric) + len(categorical)))
    names = numeric + categorical
    for part, rows in (("validation", is_valid), ("training", ~is_valid)):
        if len(np.unique(y[rows])) < 2:
            raise TrainingError(
                f"model {model}: the {part} rows hold one class only ({int(rows.sum())} rows); "
                "labels that arrive late (only positives known for recent days) leave no "
                "negatives: train on days whose outcomes have all arrived"
            )
    train_set = lgb.Dataset(
        X[~is_valid], y[~is_valid], feature_name=names, categorical_feature=cat_idx
    )
    valid_set = lgb.Dataset(X[is_valid], y[is_valid], reference=train_set)
    callbacks: list[Callable[..., None]] = [lgb.early_stopping(early, verbose=False)]
    if should_stop is not None:
        should_stop()
        callbacks.append(lambda _env: should_stop())
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=rounds,
        valid_sets=[valid_set],
        callbacks=callbacks,
    )
    p_valid = booster.predict(X[is_valid], num_iteration=booster.best_iteration)
    metrics = _metrics(y[is_valid], p_valid, float(spec.get("operating_fpr", 0.01)))

    model_dir = project.saved_models_dir(model)
    model_dir.mkdir(parents=True, exist_ok=True)
    version = _next_version(model_dir)
    meta = {
        "project": project.name,
        "model": model,
        "version": version,
        "algorithm": "lightgbm",
        "target": target,
        "numeric": numeric,
        "categorical": categorical,
        "vocab": vocab,
        "threshold": metrics["threshold"],
        "metrics": metrics,
        "train_rows": int((~is_valid).sum()),
        "train_days": [days[0], days[-n_valid - 1]],
        "validation_days": [days[-n_valid], days[-1]],
        "best_iteration": booster.best_iteration,
        "trained_by": created_by,
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}-"))
    try:
        booster.save_model(str(staging / MODEL_FILE), num_iteration=booster.best_iteration)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.rename(staging, model_dir / version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if activate:
        set_active(project, model, version)
    return meta
