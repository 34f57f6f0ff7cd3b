"""The model evaluation store: per day, is the model's input drifting and is it still good?

A scenario step (``type: evaluate``) runs :func:`evaluate_day` on the automation node after
the day is scored. It compares the day's scored partition (the step's ``input``) with a
**reference**: the rows of the model's validation days (the days its published metrics were
measured on), read from the dataset the model scores (``features_dataset``, by default the
``input`` of the project's score step writing ``input``), built on the node when missing and
cached per model version. Which columns are the row id, the label, the location… comes from
the model's declaration (:mod:`engine.project.model_spec`), never from fixed names. It
records, in the control store table ``evaluation_metrics``:

* ``input_drift``: per model feature, PSI and a test on a fixed-size subsample (see
  :mod:`engine.automation.drift` for why both);
* ``unseen_values``: share of rows whose value the reference never had (the declared
  ``unseen_ids`` columns, and categories the model's vocabulary lacks);
* ``location``: with a declared location, the grid cell whose share of the day's rows rose
  the most (a new fraud ring's city lights up here first);
* ``prediction_drift``: PSI and test of the score, and the flag rate;
* ``domain_classifier``: ROC AUC of a small classifier telling the day from the reference;
* ``performance``: with declared ``labels`` and ``id_column``, once the delayed labels of a
  scored day have arrived (``labels`` is partitioned by arrival day; only labels that
  arrived by the evaluated day count), ROC AUC, PR AUC, recall and precision at the model's
  threshold and (with a declared ``amount``) the amount caught and missed, recomputed for
  every recent day as more labels land;
* ``performance_decay``: those metrics pooled over the last matured days, against the
  model's validation metrics;
* ``missed_fraud``: with both a location and labels, the cell where labelled positives
  most exceed the model's expectation.

The last three are measured in :mod:`engine.automation.performance`; the plan of an
evaluation, its metric rows and its constants are in :mod:`engine.automation.evaluation_plan`.

A family the declaration does not allow is recorded once per day as ``not_applicable``
(status INFO, the message says what to declare), never as an error.

The champion is the active version of ``model``; a ``challenger`` (another model of the
project, or another version of the same one) is scored on the same rows and recorded beside
it, so the pages can chart both.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from engine.automation import drift
from engine.automation.day_stats import Role, window_stats
from engine.automation.evaluation_plan import (
    CHALLENGER,
    CHAMPION,
    FAMILIES,
    INFO,
    NOT_APPLICABLE,
    SCORE,
    EvaluationError,
    EvaluationResult,
    Metric,
    Plan,
    missing_columns,
    plan,
    scored_from,
)
from engine.automation.performance import metrics_from_stats
from engine.models.saved import SavedModel
from engine.project import flow
from engine.project.project import Project, ProjectError
from engine.storage import datasets as ds
from engine.storage.control import ControlStore, check_results, evaluation_metrics, now_iso

REFERENCE_ROWS = 100_000


# --- models, declaration and reference ----------------------------------------------------


def _load_model(project: Project, spec: str | dict[str, Any]) -> tuple[str, SavedModel]:
    """``spec``: a model name (its active version) or ``{model: name, version: vN}``."""
    if isinstance(spec, str):
        name, version = spec, None
    else:
        name, version = str(spec.get("model", "")), spec.get("version")
    if name not in project.models:
        raise ProjectError(f"project {project.name!r} has no model {name!r}")
    path = (
        project.saved_models_dir(name) / str(version) if version else project.active_model_dir(name)
    )
    return name, SavedModel.load(path)


def day_range(first: str, last: str) -> list[str]:
    start, end = date.fromisoformat(first), date.fromisoformat(last)
    return [str(start + timedelta(days=i)) for i in range((end - start).days + 1)]


def _reference_days(saved: SavedModel, options: dict[str, Any]) -> list[str]:
    days = options.get("reference_days")
    if days:
        return [str(d) for d in days]
    validation = saved.meta.get("validation_days")
    if not validation:
        raise EvaluationError(
            f"model version {saved.version} has no validation days in its meta; "
            "give the evaluate step reference_days"
        )
    return day_range(*validation)


def reference_sample(
    project: Project, saved: SavedModel, options: dict[str, Any]
) -> tuple[pd.DataFrame, list[str]]:
    """The reference rows (at most :data:`REFERENCE_ROWS`, seeded) with the model's score.

    ``options`` are an evaluate step's (``features_dataset``, or ``input`` to find it, and
    optionally ``reference_days``). Built once per model version and reference days from the
    dataset the model scores (its missing partitions that the flow can build from the
    partitioned sources are built on the node) and cached under the node's data folder.
    """
    days = _reference_days(saved, options)
    key = hashlib.sha256(f"{saved.version}|{','.join(days)}".encode()).hexdigest()[:12]
    cache = ds.DatasetRef(
        "evaluation_reference",
        project.data_root / "_evaluation" / saved.meta.get("model", "model") / key,
    )
    if cache.exists():
        return ds.read_df(cache), days
    name = options.get("features_dataset") or scored_from(project, str(options.get("input")))
    if not name:
        raise EvaluationError("no dataset to read the reference from: give features_dataset")
    source = project.dataset(name)
    available = set(source.partitions())
    missing = [d for d in days if d not in available]
    if missing and project.recipe_for(name) is not None:
        buildable = set(flow.available_partitions(project, name))
        todo = [d for d in missing if d in buildable]
        if todo:
            flow.build(project, name, todo)
        available = set(source.partitions())
    present = [d for d in days if d in available]
    if not present:
        raise EvaluationError(
            f"no reference data: none of the reference days {days[0]}..{days[-1]} of model "
            f"version {saved.version} can be read or built from {name!r}"
        )
    frame = ds.query_df(
        f"SELECT * FROM ref USING SAMPLE reservoir({REFERENCE_ROWS} ROWS) REPEATABLE (7)",
        {"ref": (source, present)},
    )
    frame[SCORE] = saved.predict_proba(saved.encode(frame))
    ds.write(cache, frame)
    return frame, present


def _not_applicable(
    version: str, day: str, family: str, message: str, status: str = INFO
) -> Metric:
    return Metric(CHAMPION, version, day, family, "", NOT_APPLICABLE, None, status, message)


# --- one day -------------------------------------------------------------------------------


def _input_metrics(
    role: str,
    saved: SavedModel,
    day: str,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    trends: set[str],
) -> list[Metric]:
    out: list[Metric] = []
    for name in saved.meta["numeric"]:
        r = drift.numeric_drift(name, ref[name].to_numpy(float), cur[name].to_numpy(float), day)
        out += _drift_rows(role, saved.version, day, "input_drift", r, name in trends)
    for name in saved.meta["categorical"]:
        r = drift.categorical_drift(name, ref[name], cur[name], day)
        out += _drift_rows(role, saved.version, day, "input_drift", r, name in trends)
        u = drift.unseen_values(name, set(saved.meta["vocab"][name]), cur[name])
        out.append(
            Metric(
                role,
                saved.version,
                day,
                "unseen_values",
                name,
                "unseen_share",
                u.share,
                u.status,
                u.message,
            )
        )
    return out


def _drift_rows(
    role: str, version: str, day: str, family: str, r: drift.FeatureDrift, expected: bool
) -> list[Metric]:
    status, message = r.status, r.message
    if expected and status != drift.OK:
        status, message = INFO, message + " — an expected trend (not alarmed)"
    return [
        Metric(role, version, day, family, r.feature, "psi", r.psi, status, message),
        Metric(role, version, day, family, r.feature, "p_value", r.p_value, status, message),
        Metric(role, version, day, family, r.feature, "statistic", r.statistic, status, message),
    ]


def _data_metrics(
    version: str,
    day: str,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    saved: SavedModel,
    plan: Plan,
) -> list[Metric]:
    """Metrics of the data itself (not of a model): recorded once, under the champion."""
    out: list[Metric] = []
    mon = plan.monitoring
    for name in mon.unseen_ids:
        if missing_columns([name], cur, ref):
            out.append(
                Metric(CHAMPION, version, day, "unseen_values", name, NOT_APPLICABLE, None,
                       drift.WARNING, f"declared unseen_ids column {name!r} is not a column of "
                       f"{plan.input!r} and {plan.features!r}: not measured")
            )  # fmt: skip
            continue
        u = drift.unseen_values(name, set(ref[name].dropna().astype(str)), cur[name])
        out.append(
            Metric(CHAMPION, version, day, "unseen_values", name, "unseen_share", u.share,
                   u.status, u.message)
        )  # fmt: skip
    if mon.location is None:
        out.append(_not_applicable(version, day, "location", mon.not_applicable()["location"]))
    elif missing_columns(list(mon.location), cur, ref):
        gone = ", ".join(missing_columns(list(mon.location), cur, ref))
        out.append(
            _not_applicable(version, day, "location", f"declared location column(s) {gone} "
                            f"missing from {plan.input!r} or {plan.features!r}: no hot spot "
                            "looked for", drift.WARNING)
        )  # fmt: skip
    else:
        lat, lon = mon.location
        h = drift.hot_spot(
            ref[lat].to_numpy(float),
            ref[lon].to_numpy(float),
            cur[lat].to_numpy(float),
            cur[lon].to_numpy(float),
        )
        for metric, value in (
            ("share_rise", h.current_share - h.reference_share),
            ("current_share", h.current_share),
            ("reference_share", h.reference_share),
            ("latitude", h.latitude),
            ("longitude", h.longitude),
        ):
            out.append(
                Metric(
                    CHAMPION, version, day, "location", h.city, metric, value, h.status, h.message
                )
            )
    trends = set(mon.expected_trends)
    columns = [c for c in saved.meta["numeric"] if c not in trends]
    cats = [c for c in saved.meta["categorical"] if c not in trends]
    auc = drift.domain_classifier_auc(
        _domain_matrix(ref, columns, cats, saved), _domain_matrix(cur, columns, cats, saved)
    )
    status = drift.domain_verdict(auc)
    out.append(
        Metric(
            CHAMPION, version, day, "domain_classifier", "", "roc_auc", auc, status,
            f"a classifier tells the day from the reference with ROC AUC {auc:.3f} (0.5: indistinguishable)",
        )
    )  # fmt: skip
    return out


def _domain_matrix(
    frame: pd.DataFrame, numeric: list[str], cats: list[str], saved: SavedModel
) -> np.ndarray:
    cols = [pd.to_numeric(frame[c], errors="coerce").to_numpy(float) for c in numeric]
    for c in cats:
        codes = pd.Categorical(frame[c], categories=saved.meta["vocab"][c]).codes
        cols.append(np.where(codes < 0, np.nan, codes).astype(float))
    return np.column_stack(cols) if cols else np.empty((len(frame), 0))


def _prediction_metrics(
    role: str, saved: SavedModel, day: str, ref_p: np.ndarray, cur_p: np.ndarray
) -> list[Metric]:
    r = drift.numeric_drift(SCORE, ref_p, cur_p, day + role)
    rows = _drift_rows(role, saved.version, day, "prediction_drift", r, False)
    ref_rate = float(np.mean(ref_p >= saved.threshold)) if len(ref_p) else 0.0
    rate = float(np.mean(cur_p >= saved.threshold)) if len(cur_p) else 0.0
    rows.append(
        Metric(role, saved.version, day, "prediction_drift", SCORE, "flag_rate", rate, r.status,
               f"{rate:.2%} flagged (reference {ref_rate:.2%}); {r.message}")
    )  # fmt: skip
    return rows


def _performance(
    project: Project,
    p: Plan,
    day: str,
    scored: ds.DatasetRef,
    role: str,
    saved: SavedModel,
    rescored: SavedModel | None,
) -> list[Metric]:
    """Performance of one role from the window's per-day statistics (kept, updated as labels
    land: :mod:`engine.automation.day_stats`). ``rescored``: a model scoring the rows itself
    (a challenger) rather than the scored column."""
    if not p.monitoring.measures_performance:
        return []
    if rescored is not None:
        columns = tuple(rescored.input_columns)

        def proba(frame: pd.DataFrame) -> np.ndarray:
            return rescored.predict_proba(rescored.encode(frame))
    else:
        columns = ()

        def proba(frame: pd.DataFrame) -> np.ndarray:
            return frame[SCORE].to_numpy(float)

    per_day = window_stats(
        project, p, day, scored.partitions(), Role(role, saved, columns, proba, role == CHAMPION)
    )
    if not per_day:
        return []
    amount = p.monitoring.amount
    with_amount = bool(amount) and amount in ds.schema(scored, max(per_day))
    return metrics_from_stats(role, saved, day, per_day, p, with_amount)


def evaluate_day(project: Project, day: str, options: dict[str, Any]) -> EvaluationResult:
    """Evaluate the champion (and challenger) on one scored day; nothing is stored here.

    ``options`` are the evaluate step's: ``model`` and ``input`` at least; the rest of the
    model's declaration (:mod:`engine.project.model_spec`) can be overridden there.
    """
    p = plan(project, options)
    options = p.options
    name, champion = _load_model(project, options["model"])
    challenger = (
        _load_model(project, options["challenger"])[1] if options.get("challenger") else None
    )
    scored = project.dataset(p.input)
    if day not in scored.partitions():
        raise EvaluationError(
            f"dataset {scored.name!r} has no scored partition for {day}: score it first"
        )
    ref, _ = reference_sample(project, champion, {**options, "features_dataset": p.features})
    cur = ds.read_df(scored, [day])
    result = EvaluationResult(
        day, name, champion.version, challenger.version if challenger else None
    )
    trends = set(p.monitoring.expected_trends)
    result.metrics += _input_metrics(CHAMPION, champion, day, ref, cur, trends)
    result.metrics += _data_metrics(champion.version, day, ref, cur, champion, p)
    result.metrics += _prediction_metrics(
        CHAMPION, champion, day, ref[SCORE].to_numpy(), cur[SCORE].to_numpy()
    )
    not_applicable = p.monitoring.not_applicable()
    for family in ("performance", "performance_decay", "missed_fraud"):
        if family in not_applicable:
            result.metrics.append(
                _not_applicable(champion.version, day, family, not_applicable[family])
            )
    result.metrics += _performance(project, p, day, scored, CHAMPION, champion, None)
    if challenger is not None:
        result.metrics += _input_metrics(CHALLENGER, challenger, day, ref, cur, trends)
        ref_p = challenger.predict_proba(challenger.encode(ref))
        result.metrics += _prediction_metrics(
            CHALLENGER, challenger, day, ref_p, challenger.predict_proba(challenger.encode(cur))
        )
        result.metrics += _performance(project, p, day, scored, CHALLENGER, challenger, challenger)
    return result


# --- the store -----------------------------------------------------------------------------


def record(
    store: ControlStore,
    node: str,
    project: str,
    result: EvaluationResult,
    run_id: int | None = None,
) -> None:
    """Replace the stored metrics of the days and families in ``result`` (one transaction)."""
    at = now_iso()
    keys = {(m.role, m.day, m.family) for m in result.metrics}
    t = evaluation_metrics
    with store.write() as conn:
        for role, day, family in keys:
            conn.execute(
                sa.delete(t).where(
                    t.c.node == node, t.c.project == project, t.c.model == result.model,
                    t.c.role == role, t.c.day == day, t.c.family == family,
                )
            )  # fmt: skip
        if result.metrics:
            conn.execute(
                sa.insert(t),
                [
                    dict(
                        node=node, project=project, model=result.model, role=m.role,
                        model_version=m.model_version, day=m.day, family=m.family,
                        feature=m.feature, metric=m.metric, value=m.value, status=m.status,
                        message=m.message, run_id=run_id, at=at,
                    )
                    for m in result.metrics
                ],
            )  # fmt: skip
        # One check per family of the evaluated day, so pipeline health shows them too.
        for family in FAMILIES:
            rows = [
                m
                for m in result.metrics
                if m.family == family and m.day == result.day and m.role == CHAMPION
            ]
            if not rows or all(m.metric == NOT_APPLICABLE and m.status == INFO for m in rows):
                continue  # not computed for this model: no check to show
            worst = drift.worst([m.status for m in rows])
            bad = [m for m in rows if m.status == worst and worst != drift.OK]
            outcome = {drift.OK: "OK", drift.WARNING: "WARNING", drift.ERROR: "ERROR"}[worst]
            conn.execute(
                sa.insert(check_results).values(
                    node=node, project=project, dataset=f"model:{result.model}", partition=result.day,
                    check_name=family, outcome=outcome,
                    value=", ".join(sorted({m.feature or m.metric for m in bad}))[:500] or None,
                    message=(bad[0].message if bad else f"{family}: no alarm")[:2000],
                    run_id=run_id, at=at,
                )
            )  # fmt: skip


def reference_path(project: Project) -> Path:
    return project.data_root / "_evaluation"
