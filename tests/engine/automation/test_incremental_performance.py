"""The evaluate step's performance comes from per-day statistics kept and updated as labels
land (engine/automation/day_stats.py), and says what the old full recomputation said.

On the claims project (tests/engine/small_project.py: claims, outcomes by ``known_on``,
``claim_ref``, ``payout``, a location in France), every day is scored and its labels arrive
late and in pieces: frauds the next day, the rest three days later, and a few claims first
labelled legitimate are corrected to fraud five days later. Evaluated day by day as the
runner does, each day's performance, ``performance_decay`` and ``missed_fraud`` metrics (of
the champion and of a challenger) must equal the old computation over all the window's rows
(copied below as it was): same metrics, same statuses, the same numbers, except ROC and PR
AUC, which come from binned scores and must be within the error bound the statistics state.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from engine.automation import day_stats, drift, evaluation, evaluation_plan, performance
from engine.automation.evaluation_plan import CHAMPION, INFO, SCORE, Metric, missing_columns
from engine.automation.node import AutomationNode
from engine.core.settings import load_settings
from engine.models.scoring import score_partition
from engine.storage import datasets as ds
from tests.engine.small_project import CLAIMS_INFRA, CLAIMS_PROJECT
from tests.homes import copy_home

FAMILIES = ("performance", "performance_decay", "missed_fraud")
AUC_METRICS = ("roc_auc", "pr_auc", "roc_auc_drop")
# What the module's docstring states for the binned AUCs.
ROC_BOUND, PR_BOUND = 1e-3, 5e-3


# --- the old full computation (engine/automation/performance.py before the statistics) ---------


def _old_performance(y, p, amount, threshold):
    flagged = p >= threshold
    positive = y == 1
    out = {
        "labelled_rows": float(len(y)),
        "frauds": float(positive.sum()),
        "recall": float((flagged & positive).sum() / max(positive.sum(), 1)),
        "precision": float((flagged & positive).sum() / max(flagged.sum(), 1)),
    }
    if amount is not None:
        out["fraud_caught_amount"] = float(amount[flagged & positive].sum())
        out["fraud_missed_amount"] = float(amount[~flagged & positive].sum())
    if 0 < positive.sum() < len(y):
        out["roc_auc"] = float(roc_auc_score(y, p))
        out["pr_auc"] = float(average_precision_score(y, p))
    return out


def _old_metrics(role, saved, day, rows, proba, plan):
    out = []
    if rows.empty:
        return out
    options, mon = plan.options, plan.monitoring
    amount = rows[mon.amount].to_numpy(float) if mon.amount and mon.amount in rows.columns else None
    labelled = rows[performance.LABEL].notna().to_numpy()
    y = rows[performance.LABEL].fillna(0).to_numpy(int)
    matured = []
    for d, idx in rows.groupby(plan.day_column).indices.items():
        coverage = float(labelled[idx].mean())
        keep = idx[labelled[idx]]
        if coverage < float(options["min_label_coverage"]) or len(set(y[keep])) < 2:
            continue
        matured.append(str(d))
        perf = _old_performance(
            y[keep], proba[keep], None if amount is None else amount[keep], saved.threshold
        )
        perf["label_coverage"] = coverage
        out += [
            Metric(role, saved.version, str(d), "performance", "", k, v, INFO)
            for k, v in perf.items()
        ]
    recent = sorted(matured)[-int(options["decay_window_days"]) :]
    if not recent:
        return out
    mask = rows[plan.day_column].isin(recent).to_numpy() & labelled
    pooled = _old_performance(
        y[mask], proba[mask], None if amount is None else amount[mask], saved.threshold
    )
    valid = saved.meta.get("metrics", {})
    auc_drop = float(valid.get("roc_auc", np.nan)) - pooled.get("roc_auc", np.nan)
    recall_drop = float(valid.get("recall_at_fpr", np.nan)) - pooled["recall"]
    enough = pooled["frauds"] >= int(options["min_frauds"])
    status = drift.OK
    if not enough:
        status = INFO
    elif auc_drop >= float(options["max_roc_auc_drop"]) or recall_drop >= float(
        options["max_recall_drop"]
    ):
        status = drift.ERROR
    elif (
        auc_drop >= float(options["max_roc_auc_drop"]) / 2
        or recall_drop >= float(options["max_recall_drop"]) / 2
    ):
        status = drift.WARNING
    pooled["expected_frauds"] = float(proba[mask].sum())
    for k, v in (("roc_auc_drop", auc_drop), ("recall_drop", recall_drop), *pooled.items()):
        out.append(
            Metric(role, saved.version, day, "performance_decay", "", k,
                   None if np.isnan(v) else float(v), status)
        )  # fmt: skip
    if role == CHAMPION and mon.location and not missing_columns(list(mon.location), rows):
        lat, lon = mon.location
        h = drift.missed_fraud_hot_spot(
            rows[lat].to_numpy(float)[mask], rows[lon].to_numpy(float)[mask], y[mask], proba[mask]
        )
        for k, v in (("observed_frauds", h.observed), ("expected_frauds", h.expected),
                     ("p_value", h.p_value), ("latitude", h.latitude), ("longitude", h.longitude)):  # fmt: skip
            out.append(
                Metric(role, saved.version, day, "missed_fraud", h.city, k, float(v), h.status)
            )
    return out


# --- the home ------------------------------------------------------------------------------------


@pytest.fixture
def claims_node(claims_env, tmp_path):
    """A private copy of the claims node, every day scored, labels arriving in pieces."""
    home, store = copy_home(claims_env.settings, tmp_path)
    shutil.copytree(claims_env.settings.data_dir, tmp_path / "data")
    settings = load_settings(environ={}, home=home.home, data_dir=tmp_path / "data", basemap="none")
    project = AutomationNode(settings, store, CLAIMS_INFRA).project(CLAIMS_PROJECT)
    for d in claims_env.days:
        if d not in project.dataset("scores").partitions():
            score_partition(project, "claim_risk", "claims", "scores", d)
    outcomes = project.dataset("outcomes")
    truth = ds.read_df(outcomes)
    rng = np.random.default_rng(3)
    booked = pd.to_datetime(
        ds.read_df(project.dataset("claims"), columns=["claim_ref", "booked_on"])
        .set_index("claim_ref")
        .loc[truth["claim_ref"], "booked_on"]
        .astype(str)
    ).to_numpy()
    fraud = truth["confirmed_fraud"].to_numpy() == 1
    delay = np.where(fraud, 1, 3)
    # Some frauds are first labelled legitimate (after 3 days) and corrected after 5.
    corrected = fraud & (rng.random(len(truth)) < 0.2)
    first = truth.assign(
        confirmed_fraud=np.where(corrected, 0, truth["confirmed_fraud"]),
        known_on=pd.Series(booked + pd.to_timedelta(np.where(corrected, 3, delay), unit="D"))
        .dt.strftime("%Y-%m-%d")
        .to_numpy(),
    )
    later = truth[corrected].assign(
        known_on=pd.Series(booked[corrected] + pd.to_timedelta(5, unit="D"))
        .dt.strftime("%Y-%m-%d")
        .to_numpy()
    )
    labels = pd.concat([first, later], ignore_index=True)
    labels = labels[labels["known_on"] <= claims_env.days[-1]]
    shutil.rmtree(outcomes.path)
    ds.write(outcomes, labels)
    return project, claims_env.days


OPTIONS = {
    "model": "claim_risk",
    "input": "scores",
    "min_frauds": 5,
    "decay_window_days": 4,
    "challenger": "claim_risk",
}


def _oracle(project, day):
    p = evaluation_plan.plan(project, OPTIONS)
    saved = evaluation._load_model(project, "claim_risk")[1]
    scored = project.dataset("scores").partitions()
    rows = performance.labelled_days(project, p, day, scored, None)
    out, hists = [], []
    if rows.empty:
        return out, hists
    out += _old_metrics(CHAMPION, saved, day, rows, rows[SCORE].to_numpy(float), p)
    proba = saved.predict_proba(saved.encode(rows))
    out += _old_metrics("challenger", saved, day, rows, proba, p)
    return out, rows


def _compare(result, expected, rows, plan):
    got = {
        (m.role, m.family, m.day, m.feature, m.metric): m
        for m in result.metrics
        if m.family in FAMILIES and m.metric != "not_applicable"
    }
    want = {(m.role, m.family, m.day, m.feature, m.metric): m for m in expected}
    if set(got) != set(want):
        for k in sorted(set(got) ^ set(want)):
            print("DIFF", k in got, k, (got.get(k) or want.get(k)).value)
    assert set(got) == set(want)
    for key, m in want.items():
        g = got[key]
        assert g.status == m.status, key
        if m.value is None:
            assert g.value is None, key
        elif key[-1] in AUC_METRICS:
            assert g.value == pytest.approx(m.value, abs=max(ROC_BOUND, PR_BOUND)), key
        else:
            assert g.value == pytest.approx(m.value, rel=1e-9, abs=1e-9), key
    # The binned AUCs are within the bound their counts state, and the bound within the
    # documented one: per judged day and pooled over the decay window.
    labelled = rows[rows[performance.LABEL].notna()]
    judged = sorted({k[2] for k in want if k[1] == "performance"})
    pooled = judged[-int(plan.options["decay_window_days"]) :]
    for days in [[d] for d in judged] + ([pooled] if pooled else []):
        part = labelled[labelled[plan.day_column].astype(str).isin(days)]
        y = part[performance.LABEL].to_numpy(int)
        p = part[SCORE].to_numpy(float)
        bins = pd.DataFrame({"bin": day_stats.score_bins(p), "y": y, "p": p})
        hist = bins.groupby("bin", as_index=False).agg(
            pos=("y", lambda v: (v == 1).sum()),
            neg=("y", lambda v: (v != 1).sum()),
            lo=("p", "min"),
            hi=("p", "max"),
        )
        exact_roc, exact_pr = roc_auc_score(y, p), average_precision_score(y, p)
        assert (
            abs(day_stats.roc_auc(hist) - exact_roc) <= day_stats.roc_auc_error_bound(hist) + 1e-12
        )
        assert abs(day_stats.pr_auc(hist) - exact_pr) <= day_stats.pr_auc_error_bound(hist) + 1e-12
        assert day_stats.roc_auc_error_bound(hist) <= ROC_BOUND
        assert day_stats.pr_auc_error_bound(hist) <= PR_BOUND
        # and equal to scikit-learn's on the binned scores (ties by bin)
        b = day_stats.score_bins(p)
        assert day_stats.roc_auc(hist) == pytest.approx(roc_auc_score(y, b), abs=1e-12)
        assert day_stats.pr_auc(hist) == pytest.approx(average_precision_score(y, b), abs=1e-12)


def test_day_by_day_the_kept_statistics_say_what_the_full_recomputation_said(claims_node):
    project, days = claims_node
    plan = evaluation_plan.plan(project, OPTIONS)
    judged_any = decay_any = missed_any = False
    for day in days[3:]:
        result = evaluation.evaluate_day(project, day, OPTIONS)
        expected, rows = _oracle(project, day)
        _compare(result, expected, rows, plan)
        families = {m.family for m in expected}
        judged_any |= "performance" in families
        decay_any |= "performance_decay" in families
        missed_any |= "missed_fraud" in families
    assert judged_any and decay_any and missed_any
    # Each scored day of the window has its statistics on disk, once per role.
    folder = evaluation.reference_path(project) / "performance" / "scores" / "claim_risk"
    for role in (CHAMPION, "challenger"):
        files = [p.name for p in folder.glob(f"*/{role}/*.parquet")]
        assert files and len(files) == len(set(files)), role


def test_labels_that_land_late_or_change_update_the_pooled_metrics(claims_node):
    project, days = claims_node
    plan = evaluation_plan.plan(project, OPTIONS)
    outcomes = project.dataset("outcomes")
    day = days[-1]
    before = evaluation.evaluate_day(project, day, OPTIONS)
    decay = {m.metric: m.value for m in before.metrics
             if m.family == "performance_decay" and m.role == CHAMPION}  # fmt: skip
    assert decay, "the last day has a judged window"

    # 1. Labels of an earlier, already judged day arrive late: more frauds in a new
    # partition dated the evaluated day (a partition the kept statistics have not seen).
    judged = sorted({m.day for m in before.metrics if m.family == "performance"})
    target = judged[-1]
    claims = ds.read_df(project.dataset("claims"), [target])
    known = ds.read_df(outcomes)
    best = known.groupby("claim_ref")["confirmed_fraud"].max()
    legit = best[best == 0].index
    flip = claims[claims["claim_ref"].isin(legit)]["claim_ref"].head(40)
    late = pd.DataFrame({"claim_ref": flip, "confirmed_fraud": 1, "known_on": day})
    extra = outcomes.partition_path(day) / "late.parquet"
    late.drop(columns="known_on").to_parquet(extra)
    after = evaluation.evaluate_day(project, day, OPTIONS)
    expected, rows = _oracle(project, day)
    _compare(after, expected, rows, plan)
    new = {m.metric: m.value for m in after.metrics
           if m.family == "performance_decay" and m.role == CHAMPION}  # fmt: skip
    assert new["frauds"] == decay["frauds"] + len(flip)

    # 2. A label partition already taken in is rewritten (a correction): the days that took
    # it in are rebuilt.
    extra.unlink()
    after = evaluation.evaluate_day(project, day, OPTIONS)
    expected, rows = _oracle(project, day)
    _compare(after, expected, rows, plan)
    assert {m.metric: m.value for m in after.metrics
            if m.family == "performance_decay" and m.role == CHAMPION}["frauds"] == decay["frauds"]  # fmt: skip

    # 3. An earlier day evaluated again (its days' files hold later labels): as of that day.
    earlier = days[-4]
    again = evaluation.evaluate_day(project, earlier, OPTIONS)
    expected, rows = _oracle(project, earlier)
    _compare(again, expected, rows, plan)
    # ... and forward again.
    expected, rows = _oracle(project, day)
    _compare(evaluation.evaluate_day(project, day, OPTIONS), expected, rows, plan)
