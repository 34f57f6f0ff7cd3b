"""The fraud model's gap to the best possible score, on the validation days (issue 15).

Run: ``flock /tmp/nodal-bench.lock nice -n 5 .venv/bin/python bench/bench_model_gap.py
[--root DIR] [--per-day 4000] [--days 40] [--train-days N] [--cards N] [--merchants N]``.

The target: on the validation days, the example model's ROC AUC within 0.01 of the ROC AUC
of the generator's true fraud probability (``nodal_demo/datagen/truth.py``: the Bayes-optimal
score) on the same rows; PR AUC reported too. The defaults are the demo's (``make demo``:
``GeneratorConfig()``, 4,000 transactions a day, 3,000 cards, 40 days, every mature day
trained on), so a run without options reproduces the demo's figure.

1. The example's generator writes ``--days`` days of ``--per-day`` transactions into
   ``ROOT/data-<sizes>`` (kept: a second run with the same sizes reuses it). The number of
   cards keeps the demo's density unless given: ``--per-day`` × 3,000 / 4,000 cards (4/3
   transactions per card and day). Merchants stay the demo's 600 unless given: a card then
   chooses among the same merchants of its home city as in the demo, so its "new merchant
   in 7 days" feature means the same thing (the true probability does not use merchants).
2. The example project (``examples/fraud``, copied to ``ROOT/project-<sizes>``) reads that
   landing zone. Which days the model sees follows its YAML (``models/fraud_model.yaml``):
   the newest ``label_maturity.delay_days`` days have immature labels and are left out, the
   ``validation_days`` before them are held out for validation, and training gets
   ``--train-days`` days before those (default: every earlier day, as ``make demo`` does;
   then the flow is built whole, as ``make demo`` builds it). With ``--train-days`` only
   those days' ``card_profiles``, ``card_windows`` and ``features`` are built (the days
   before them stay in the landing zone as the windows' history, as in
   ``bench/bench_months.py``), then the ``training_set`` recipe. Engine functions only:
   ``flow.build``, ``flow.run_recipe``.
3. The model is trained by ``engine.models.saved.train``, the function ``nodal model train``
   calls (the Lab writes the same model file for the same rows and settings). A second run
   reuses the active version when it was trained on the same days (``--retrain``: train
   again).
4. On the validation rows (the ``training_set`` rows of the validation days): the saved
   model's scores (re-scored here; they must equal the training's own metrics) and the true
   probabilities joined by transaction id, each with its ROC AUC and PR AUC (average
   precision, as the model's metrics compute it), the gap, the rows and the fraud rate. The
   Lab's own "best possible AUC" (``engine.design.lab_training.best_possible``) is printed
   as a cross-check of the truth's ROC AUC.

Not a timing benchmark, but heavy at 1 M a day: run it under the flock. It prints each
phase's seconds and the process's peak memory (max RSS) after each phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.design import lab_training  # noqa: E402
from engine.models import saved as models  # noqa: E402
from engine.project import flow, model_spec  # noqa: E402
from engine.project.project import Project, load_project  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from nodal_demo import datagen  # noqa: E402

MODEL = "fraud_model"
DEMO = datagen.GeneratorConfig()  # what `make demo` generates
BUILT_FILE = "bench_built.json"  # which days the project's training_set was built for


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, default=Path("/tmp/nodal-bench-model-gap"),
                   help="work folder, kept: a second run with the same sizes reuses it")  # fmt: skip
    p.add_argument("--per-day", type=int, default=DEMO.txns_per_day)
    p.add_argument("--days", type=int, default=DEMO.n_days, help="days generated")
    p.add_argument("--cards", type=int, default=None,
                   help="default: the demo's density, per-day x 3,000 / 4,000")  # fmt: skip
    p.add_argument("--merchants", type=int, default=DEMO.n_merchants)
    p.add_argument("--seed", type=int, default=DEMO.seed)
    p.add_argument("--train-days", type=int, default=None,
                   help="training days before the validation days (default: every earlier day)")  # fmt: skip
    p.add_argument("--retrain", action="store_true", help="train a new version even if one fits")
    a = p.parse_args(argv)
    if a.cards is None:
        a.cards = max(1, round(a.per_day * DEMO.n_cards / DEMO.txns_per_day))
    return a


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def _say(msg: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f} s, peak {_peak_gb():5.2f} GB] {msg}", flush=True)


def _model_days(project: Project, days: list[str], train_days: int | None) -> tuple[list, list]:
    """(training days, validation days) as the model's YAML defines them."""
    spec = project.models[MODEL]
    n_valid = int(spec.get("validation_days", 7))
    rule = model_spec.label_maturity(project, MODEL)
    delay = int(rule.delay_days or 0) if rule is not None else 0
    mature = days[: len(days) - delay]
    if len(mature) <= n_valid:
        raise SystemExit(
            f"{len(days)} days leave {len(mature)} with mature labels (delay {delay} days): "
            f"need more than the {n_valid} validation days"
        )
    valid = mature[-n_valid:]
    before = mature[:-n_valid]
    return (before if train_days is None else before[-train_days:]), valid


def _build(project: Project, train: list[str], valid: list[str], whole: bool) -> None:
    if whole:
        flow.build(project, "training_set")  # as `make demo` builds it
    else:
        flow.build(project, "features", train + valid)
        flow.run_recipe(project, "training_set")


def _metrics(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    started = time.perf_counter()
    cfg = dataclasses.replace(
        DEMO,
        seed=a.seed,
        n_cards=a.cards,
        n_merchants=a.merchants,
        n_days=a.days,
        txns_per_day=a.per_day,
    )
    tag = f"{a.per_day}x{a.days}-c{a.cards}-m{a.merchants}-s{a.seed}"
    data = a.root / f"data-{tag}"
    print(
        f"# {a.per_day:,} transactions a day, {a.days} days, {a.cards:,} cards "
        f"({a.per_day / a.cards:.3f} per card-day), {a.merchants:,} merchants, seed {a.seed}; "
        f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    if not (data / datagen.META_FILE).exists():
        summary = datagen.generate(cfg, data)
        _say(
            f"generated {summary.n_transactions:,} transactions, {summary.fraud_rate:.3%} fraud, "
            f"in {summary.seconds:.0f} s into {data}",
            started,
        )
    else:
        _say(f"reusing the generated data in {data}", started)
    days = [str(cfg.start_day + datetime.timedelta(days=i)) for i in range(a.days)]

    proj = a.root / f"project-{tag}"
    if not (proj / "project.yaml").exists():
        shutil.copytree(REPO / "examples" / "fraud", proj)
    project = load_project(proj, proj / "data", {"data_dir": str(data)})
    train_days, valid_days = _model_days(project, days, a.train_days)
    whole = a.train_days is None
    want = {"train": train_days, "valid": valid_days, "whole": whole}
    built_file = proj / BUILT_FILE
    built = json.loads(built_file.read_text()) if built_file.exists() else None
    if built != want or not project.dataset("training_set").exists():
        t = time.perf_counter()
        _build(project, train_days, valid_days, whole)
        built_file.write_text(json.dumps(want))
        _say(
            f"built the flow for {len(train_days)} training days {train_days[0]}..{train_days[-1]}"
            f" and {len(valid_days)} validation days {valid_days[0]}..{valid_days[-1]}"
            f"{' (the whole flow, every day, as make demo)' if whole else ''} in "
            f"{time.perf_counter() - t:.0f} s",
            started,
        )
    else:
        _say("reusing the built training_set", started)

    active = project.active_model_version(MODEL)
    meta = None
    if active and not a.retrain and built == want:
        meta = json.loads((project.saved_models_dir(MODEL) / active / models.META_FILE).read_text())
        if meta["validation_days"] != [valid_days[0], valid_days[-1]]:
            meta = None
    if meta is None:
        t = time.perf_counter()
        meta = models.train(project, MODEL, "bench")
        _say(
            f"trained {MODEL} {meta['version']} (engine.models.saved.train, as `nodal model "
            f"train`) in {time.perf_counter() - t:.0f} s: {meta['train_rows']:,} training rows, "
            f"{meta['best_iteration']} rounds",
            started,
        )
    else:
        _say(f"reusing {MODEL} {meta['version']} (trained on the same days)", started)

    # The validation rows, the model's inputs and the true probability, in one frame.
    t = time.perf_counter()
    spec = project.models[MODEL]
    target, time_col, id_col = spec["target"], spec.get("time_column", "day"), spec["id_column"]
    truth = model_spec.truth(project, MODEL)
    assert truth is not None, "the example model declares best_possible"
    saved = models.SavedModel.load(project.saved_models_dir(MODEL) / meta["version"])
    cols = list(dict.fromkeys([id_col, target, *saved.input_columns]))
    select = ", ".join(f's."{c}"' for c in cols)
    frame = ds.query_df(
        f'SELECT {select}, t."{truth.probability}" AS true_p FROM s '
        f'LEFT JOIN t ON t."{truth.id_column}" = s."{id_col}" '
        f'WHERE CAST(s."{time_col}" AS VARCHAR) IN (SELECT unnest($1::VARCHAR[]))',
        {
            "s": project.dataset(spec["train_on"]),
            "t": (project.dataset(truth.dataset), valid_days),
        },
        [valid_days],
    )
    y = frame[target].astype(int).to_numpy()
    p_model = saved.predict_proba(saved.encode(frame))
    missing = int(frame["true_p"].isna().sum())
    if missing:
        raise SystemExit(f"{missing} validation rows have no true probability")
    p_true = frame["true_p"].to_numpy()
    m_roc, m_pr = _metrics(y, p_model)
    t_roc, t_pr = _metrics(y, p_true)
    lab = lab_training.best_possible(project, truth, frame[id_col], y)
    lab_text = "none" if lab is None else f"{lab['auc']:.4f} on {lab['rows']:,} rows"
    _say(f"scored and joined the validation rows in {time.perf_counter() - t:.0f} s", started)
    trained = meta["metrics"]
    if abs(trained["roc_auc"] - m_roc) > 1e-6 or trained["validation_rows"] != len(y):
        print(
            f"WARNING: re-scored ROC AUC {m_roc:.6f} on {len(y):,} rows differs from the "
            f"training's {trained['roc_auc']:.6f} on {trained['validation_rows']:,} rows"
        )
    gap = t_roc - m_roc
    print(
        f"\n## validation days {valid_days[0]}..{valid_days[-1]} ({len(valid_days)} days), "
        f"trained on {len(train_days)} days {train_days[0]}..{train_days[-1]} "
        f"({meta['train_rows']:,} rows)\n"
        f"rows {len(y):,}, frauds {int(y.sum()):,}, fraud rate {y.mean():.3%}\n"
        f"model ({MODEL} {meta['version']}): ROC AUC {m_roc:.4f}, PR AUC {m_pr:.4f}"
        f" (training's own metrics: {trained['roc_auc']:.4f} / {trained['pr_auc']:.4f})\n"
        f"true probability:           ROC AUC {t_roc:.4f}, PR AUC {t_pr:.4f}"
        f" (the Lab's best possible AUC: {lab_text})\n"
        f"gap (truth - model):        ROC AUC {gap:.4f} ({'within' if gap <= 0.01 else 'NOT within'}"
        f" 0.01), PR AUC {t_pr - m_pr:.4f}\n"
        f"in all {time.perf_counter() - started:.0f} s, peak {_peak_gb():.2f} GB, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
