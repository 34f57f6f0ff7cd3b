"""Prediction drift on clean days: does the score's distribution creep after training?

Run: ``flock /tmp/nodal-bench.lock .venv/bin/python bench/bench_prediction_psi.py --variant
lifetime|windows|current [--cards 15000 --txns 50000 --train-days 30 --after-days 22]``.
Trains ``fraud_model`` on ``--train-days`` days of the example's generator, then scores the
``--after-days`` clean days after them (the same world: a day's rows do not depend on the
number of days generated) and prints each day's PSI of the score against the model's
validation days, as the ``evaluate`` step computes it (``drift.numeric_drift``).

Variants (issue 18, item 4): ``lifetime``: the example's features before the change (the
card's lifetime transaction count ``card_txn_history``, profiles read from every day);
``windows``: the same features with the 30-day rate and average instead (profiles from
``transactions: {days_before: 30}``); ``current``: the example as it is now.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.automation import drift, evaluation  # noqa: E402
from engine.models.saved import SavedModel, train  # noqa: E402
from engine.project import flow  # noqa: E402
from engine.project.project import load_project  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from nodal_demo import datagen  # noqa: E402

BEFORE = "2d04e69"  # the last commit with the lifetime count
FILES = (
    "flow.yaml",
    "recipes/card_profiles.sql",
    "recipes/features.sql",
    "models/fraud_model.yaml",
)


def _before(rel: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:examples/fraud/{rel}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def _example(proj: Path, variant: str) -> None:
    shutil.rmtree(proj, ignore_errors=True)
    shutil.copytree(REPO / "examples" / "fraud", proj)
    for rel in FILES if variant != "current" else ():
        text = _before(rel)
        if variant == "windows":
            if rel == "flow.yaml":
                text = text.replace(
                    "inputs: {transactions: all, cards: all}",
                    "inputs: {transactions: {days_before: 30}, cards: all}",
                )
            elif rel == "recipes/card_profiles.sql":
                text = (REPO / "examples" / "fraud" / rel).read_text()
            else:
                text = text.replace("card_txn_history", "card_txn_rate_30d")
        (proj / rel).write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", choices=["lifetime", "windows", "current"], required=True)
    ap.add_argument("--cards", type=int, default=15_000)
    ap.add_argument("--txns", type=int, default=50_000)
    ap.add_argument("--train-days", type=int, default=30)
    ap.add_argument("--after-days", type=int, default=22)
    ap.add_argument("--root", type=Path, default=Path("/tmp/nodal-bench-prediction-psi"))
    a = ap.parse_args(argv)
    cfg = datagen.GeneratorConfig(
        n_cards=a.cards, n_merchants=3000, n_days=a.train_days, txns_per_day=a.txns
    )
    tag = f"{a.cards}-{a.txns}-{a.train_days}-{a.after_days}"
    train_dir, full_dir = a.root / f"train-{tag}", a.root / f"full-{tag}"
    for folder, n in ((train_dir, a.train_days), (full_dir, a.train_days + a.after_days)):
        if not (folder / datagen.META_FILE).exists():
            s = datagen.generate(dataclasses.replace(cfg, n_days=n), folder)
            print(f"generated {folder}: {s.n_transactions:,} rows, {s.fraud_rate:.2%} fraud")
    proj = a.root / f"project-{a.variant}-{tag}"
    _example(proj, a.variant)
    project = load_project(proj, proj / "data", {"data_dir": str(train_dir)})
    t = time.perf_counter()
    flow.build(project, "training_set")
    meta = train(project, "fraud_model", "bench")
    print(
        f"[{a.variant}] trained {meta['version']} in {time.perf_counter() - t:.0f} s: ROC AUC "
        f"{meta['metrics']['roc_auc']:.4f}, validation days {meta['validation_days']}",
        flush=True,
    )
    project = load_project(proj, proj / "data", {"data_dir": str(full_dir)})
    flow.build(project, "features")
    saved = SavedModel.load(project.saved_models_dir("fraud_model") / meta["version"])
    gain = saved.booster.feature_importance("gain")
    names = saved.booster.feature_name()
    share = {n: round(float(g / gain.sum()), 3) for n, g in zip(names, gain, strict=True)}
    print(f"[{a.variant}] share of the model's gain: {share}", flush=True)
    ref, _ = evaluation.reference_sample(project, saved, {"features_dataset": "features"})
    ref_p = ref[evaluation.SCORE].to_numpy()
    psis = []
    for day in project.dataset("features").partitions()[a.train_days :]:
        frame = ds.read_df(project.dataset("features"), [day])
        result = drift.numeric_drift("score", ref_p, saved.predict_proba(saved.encode(frame)), day)
        psis.append(result.psi)
        print(f"[{a.variant}] {day}: PSI {result.psi:.4f} {result.status}", flush=True)
    v = np.array(psis)
    print(
        f"[{a.variant}] {len(v)} clean days after training: PSI first {v[0]:.4f}, last "
        f"{v[-1]:.4f}, max {v.max():.4f}, mean {v.mean():.4f}; days >= 0.1: {(v >= 0.1).sum()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
