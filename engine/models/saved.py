"""Saved models: LightGBM trained on a time-based split, stored as versioned folders.

A saved-model version is a folder ``saved_models/<model>/v<N>/`` holding ``model.txt``
(LightGBM's native text format: no pickle crosses nodes) and ``meta.json`` (features,
category vocabularies, decision threshold, metrics). ``saved_models/<model>/ACTIVE`` names
the version the project uses. The same :class:`SavedModel` scores batch and real time.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
from engine.models import maturity
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
    project.require("write")
    before = project.active_model_version(model)
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".active-")
    with os.fdopen(fd, "w") as fh:
        fh.write(version + "\n")
    os.replace(tmp, model_dir / ACTIVE_FILE)
    project.record("model.activate", model, {"version": before}, {"version": version})


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


def canonical_order(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame``'s rows sorted on every column training reads (``columns``).

    A recipe's JOIN or a parallel scan returns the same rows in another order from one
    build to the next, and bagging draws rows by position: without one order, the same data
    would train a different model each time. Rows equal on every sorted column are
    interchangeable for training, so their relative order does not matter. Columns that are
    not numbers (dates, categories) are compared as text.
    """
    keys = frame[list(dict.fromkeys(columns))].copy()
    for column in keys.columns:
        if keys[column].dtype.kind not in "biuf":
            keys[column] = keys[column].astype("string")
    order = keys.sort_values(list(keys.columns), kind="stable", na_position="last").index
    return frame.loc[order].reset_index(drop=True)


def data_fingerprint(frame: pd.DataFrame, columns: list[str]) -> dict[str, Any]:
    """What training read, as a checksum: SHA-256 over the columns' names and types and each
    row's hash (pandas' ``hash_pandas_object``) in the frame's order, and the row count.

    Call it on rows in :func:`canonical_order`: the same rows in any order give the same
    fingerprint; one changed value, row or column gives another.
    """
    columns = list(dict.fromkeys(columns))
    digest = hashlib.sha256()
    digest.update(json.dumps([[c, str(frame[c].dtype)] for c in columns]).encode())
    if len(frame):
        rows = pd.util.hash_pandas_object(frame[columns], index=False)
        digest.update(rows.to_numpy(dtype="uint64").tobytes())
    return {"sha256": digest.hexdigest(), "rows": len(frame), "columns": columns}


def reproducible_params(params: dict[str, Any]) -> dict[str, Any]:
    """LightGBM parameters that give the same model, bit for bit, from the same rows.

    Same rows in the same order, same parameters, same thread count: the same model file.
    ``deterministic`` asks for a forced histogram layout, ``force_col_wise`` unless the
    parameters choose one; a parameter set explicitly is kept.
    """
    out = dict(params)
    out.setdefault("deterministic", True)
    if not {"force_col_wise", "force_row_wise"} & out.keys():
        out["force_col_wise"] = True
    return out


def write_model_file(booster: lgb.Booster, path: Path) -> None:
    """Write ``booster``'s best iteration as LightGBM's text model file.

    The file's parameters section records the thread count training ran with; it does not
    change the trees (deterministic mode: the same trees on 1 or N threads), so it is
    written as 0 (LightGBM's "all cores"): the Lab, which leaves a core to the Studio, and
    `nodal model train` then write the same file for the same rows and settings.
    """
    text = booster.model_to_string(num_iteration=booster.best_iteration)
    text = re.sub(r"^\[num_threads: [^\]]*\]$", "[num_threads: 0]", text, count=1, flags=re.M)
    Path(path).write_text(text)


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
    project.require("write")
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
    read = [time_col, *numeric, *categorical, target]
    frame = canonical_order(frame, read)
    # Only days whose labels are mature (label_maturity): recent days hold the quick labels
    # only (often positives only) and would skew the threshold and every baseline.
    day_of_row = frame[time_col].map(maturity.day_key)
    ripe = maturity.assess(
        project, model, day_of_row.tolist(), frame[target].astype(int).to_numpy(), time_col
    )
    if ripe.immature_days:
        keep = ~day_of_row.isin(set(ripe.immature_days)).to_numpy()
        frame = frame.loc[keep].reset_index(drop=True)
    fingerprint = {"dataset": spec["train_on"], **data_fingerprint(frame, read)}
    days = sorted(frame[time_col].astype(str).unique())
    n_valid = int(spec.get("validation_days", 7))
    if len(days) <= n_valid:
        left_out = (
            f" ({len(ripe.immature_days)} more days have immature labels: "
            f"{ripe.rule.describe() if ripe.rule else ''})"
            if ripe.immature_days
            else ""
        )
        raise TrainingError(
            f"need more than {n_valid} labelled days to hold out, have {len(days)}{left_out}"
        )
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
    params = reproducible_params(params)
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
        "training_data": fingerprint,
        "label_maturity": ripe.summary(),
        "settings": {
            "params": params,
            "num_boost_round": rounds,
            "early_stopping_rounds": early,
            "validation_days": n_valid,
            "operating_fpr": float(spec.get("operating_fpr", 0.01)),
            "lightgbm": lgb.__version__,
        },
        "trained_by": created_by,
        "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".{version}-"))
    try:
        write_model_file(booster, staging / MODEL_FILE)
        (staging / META_FILE).write_text(json.dumps(meta, indent=2))
        os.rename(staging, model_dir / version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if activate:
        set_active(project, model, version)
    return meta
