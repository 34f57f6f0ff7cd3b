"""The training of a lab run, step by step: the label and the validation split of the rows,
the two algorithms (LightGBM, and a logistic-regression baseline), and the measures of a
validation (curves, calibration, the best possible AUC from a declared truth).

:func:`engine.design.lab.train` runs these steps. The functions taking ``spec`` take its
:class:`engine.design.lab.LabSpec` (typed ``Any``: :mod:`engine.design.lab` imports this module).
"""

from __future__ import annotations

import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from engine.models.saved import TrainingError, reproducible_params
from engine.project.model_spec import Truth
from engine.project.project import Project
from engine.storage import datasets as ds

LGB_PARAMS = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 50,
    "num_boost_round": 300,
    "early_stopping_rounds": 30,
}
LOGREG_PARAMS = {"C": 1.0, "max_iter": 200}
_CURVE_POINTS = 200
_INTEGER_PARAMS = ("num_leaves", "min_data_in_leaf", "max_depth", "bagging_freq", "seed")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_types(frame: pd.DataFrame, features: list[str]) -> tuple[list[str], list[str]]:
    """The numeric and the categorical features, by their column types."""
    numeric, categorical = [], []
    for c in features:
        kind = frame[c].dtype.kind
        (numeric if kind in "biuf" else categorical).append(c)
    return numeric, categorical


def labels(frame: pd.DataFrame, spec: Any) -> np.ndarray:
    """The target as 0/1, 1 for the positive class (the given one, else 1/True, else the rarer)."""
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


def split(frame: pd.DataFrame, spec: Any) -> tuple[np.ndarray, list[str]]:
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
    if spec.validation_days:
        # A model's declared validation days: the last N days, as `nodal model train` holds out.
        n_valid = int(spec.validation_days)
        if len(days) <= n_valid:
            raise TrainingError(
                f"need more than {n_valid} days of {spec.time_column} to hold out the last "
                f"{n_valid} for validation, have {len(days)}"
            )
    else:
        n_valid = min(len(days) - 1, max(1, round(len(days) * spec.validation_share)))
    valid = days[-n_valid:]
    return periods.isin(set(valid)).to_numpy(), [valid[0], valid[-1]]


def downsample(*arrays: np.ndarray) -> list[list[float]]:
    n = len(arrays[0])
    idx = np.unique(np.linspace(0, n - 1, min(n, _CURVE_POINTS)).astype(int))
    return [[round(float(a[i]), 6) for i in idx] for a in arrays]


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    frame = pd.DataFrame({"y": y, "p": p})
    frame["bin"] = pd.qcut(frame["p"].rank(method="first"), bins, labels=False)
    grouped = frame.groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size")
    )
    return [
        {"predicted": float(r.predicted), "observed": float(r.observed), "rows": int(r.rows)}
        for r in grouped.itertuples()
    ]


def best_possible(
    project: Project, truth: Truth | None, ids: pd.Series | None, y: np.ndarray
) -> dict[str, Any] | None:
    """AUC of the declared true probabilities on the same validation rows, if known.

    ``truth`` is the model's declaration (:func:`engine.project.model_spec.truth`): a dataset
    of the project holding the id column and each row's true probability (simulated data
    only). None without one, or when it does not cover 99 % of the validation rows.
    """
    if ids is None or truth is None or truth.dataset not in project.datasets:
        return None
    ref = project.dataset(truth.dataset)
    if not ref.exists():
        return None
    key, proba = f'"{truth.id_column}"', f'"{truth.probability}"'
    with ds.session({"known": ref}) as con:
        con.register(
            "v", pd.DataFrame({"id": ids.astype(str).to_numpy(), "i": np.arange(len(ids))})
        )
        got = con.execute(
            f"SELECT v.i, t.{proba} AS p FROM v JOIN known t ON CAST(t.{key} AS VARCHAR) = v.id"
        ).df()
    if len(got) < 0.99 * len(ids) or len(set(y[got["i"].to_numpy()])) < 2:
        return None
    return {
        "auc": float(roc_auc_score(y[got["i"].to_numpy()], got["p"].to_numpy())),
        "rows": len(got),
    }


def train_lightgbm(X, y, is_valid, numeric, categorical, spec, ratio, report):  # noqa: ANN001, ANN202
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
            k: (int(v) if k in _INTEGER_PARAMS else float(v) if _is_number(v) else v)
            for k, v in params.items()
        },
    }
    if spec.imbalance == "balanced":
        lgb_params["scale_pos_weight"] = float(ratio)
    # The same rows (lab.train puts them in canonical order) and settings: the same model file.
    lgb_params = reproducible_params(lgb_params)
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
        lgb_params,
    )


def train_logreg(X, y, is_valid, numeric, categorical, spec, params):  # noqa: ANN001, ANN202
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
