"""Months of monitoring: 60 clean days after training, and the same with drift; what alarms?

Run: ``.venv/bin/python bench/bench_months.py [--root DIR] [--txns-per-day 200000] …``
(``--help`` for the sizes; ``--small`` for a quick run). The example's generator
(``nodal_demo.datagen``) writes two landing zones of the same world: a clean one, and a
drifted one with a fraud ring in ``--ring-city`` from soak day ``--ring-day`` (default
Columbus, whose merchants straddle the -83° grid line) and ``--unseen-share`` of the rows at
merchants never seen before from day ``--unseen-day``. The days before the drift are
identical in both (the generator draws each day from its own seeded streams).

1. The landing zone starts ``--warmup-days`` days before the model's days, so that the
   card features over 30-day windows are warm; features are built for the
   ``--train-days`` training days, the 7 validation days and the 7 days whose labels are
   still immature (left out by the label-maturity rule), and the model is trained, bundled
   and deployed (``demo.prepare`` does the rest).
2. Each soak day, that day's transactions and the labels arriving that day move into the
   node's landing zone (nothing from the future is there); the automation node runs the
   example's ``daily_scoring`` for it, as its runner would, then the ``evaluate`` step of
   ``daily_evaluation`` with that step's options (the engine calls the step makes; the
   scenario's own build and score steps would redo what ``daily_scoring`` just did). On a
   day whose ``daily_scoring`` failed (a data check failed: nothing scored), the node runs
   the whole ``daily_evaluation``, which builds and scores the day itself.
3. The clean run goes on to day ``--days``; the drifted run starts from a copy of the clean
   home taken before ``--ring-day`` and goes on with the drifted days (the two homes run at
   once, in two processes, as do the two landing zones' generation).

It prints, per day, each monitoring family's and each data check's outcome (``.`` OK,
``w`` warning, ``E`` alarm, blank not computed), then per run the alarms and warnings per
family and, for the drifted run, each family's time to detection and whether it alarmed on
every affected day. Nobody accepts anything during the run, so a drifted day should keep
alarming to the end. Not a timing benchmark (no flock needed); it prints the seconds of
each day's two runs and of the ``evaluate`` step, for information.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import multiprocessing
import shutil
import sqlite3
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.automation import evaluation, runs  # noqa: E402
from engine.automation.node import AutomationNode  # noqa: E402
from engine.core.settings import Settings, load_settings  # noqa: E402
from engine.design import projects as design  # noqa: E402
from engine.models import saved as models  # noqa: E402
from engine.project import flow  # noqa: E402
from engine.project.project import Project  # noqa: E402
from engine.storage.control import ControlStore, check_results, open_store, step_runs  # noqa: E402
from nodal_demo import datagen, demo, people  # noqa: E402

DEFAULT_ROOT = Path("/tmp/nodal-months")
MODEL_CHECKS = f"model:{demo.MODEL}"
MARK = {"OK": ".", "WARNING": "w", "ERROR": "E"}
LABEL_DELAY_DAYS = 7  # the example's legitimate labels arrive 7 days after the transaction
VALIDATION_DAYS = 7  # the example model's validation_days (and its label delay)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="work folder (emptied first)")
    p.add_argument("--txns-per-day", type=int, default=200_000)
    p.add_argument("--cards", type=int, default=60_000)
    p.add_argument("--merchants", type=int, default=6_000)
    p.add_argument("--warmup-days", type=int, default=30,
                   help="days before the model's first training day (30-day card windows warm up)")  # fmt: skip
    p.add_argument("--train-days", type=int, default=7,
                   help="training days (then 7 validation days and 7 immature days)")  # fmt: skip
    p.add_argument("--days", type=int, default=60, help="soak days after training")
    p.add_argument("--ring-day", type=int, default=32, help="soak day the ring starts (1-based)")
    p.add_argument("--ring-city", default="Columbus")
    p.add_argument("--unseen-day", type=int, default=35, help="soak day unseen merchants start")
    p.add_argument("--unseen-share", type=float, default=0.3)
    p.add_argument("--variants", default="clean,drifted")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--small", action="store_true",
                   help="quick run: 20,000 a day, 6,000 cards, 12 soak days, ring day 5, unseen day 7")  # fmt: skip
    a = p.parse_args(argv)
    if a.small:
        a.txns_per_day, a.cards, a.merchants = 20_000, 6_000, 1_200
        a.days, a.ring_day, a.unseen_day = 12, 5, 7
    a.history_days = a.warmup_days + a.train_days + 2 * VALIDATION_DAYS
    return a


def _config(a: argparse.Namespace, drifted: bool) -> datagen.GeneratorConfig:
    cfg = datagen.GeneratorConfig(
        seed=a.seed,
        n_cards=a.cards,
        n_merchants=a.merchants,
        n_days=a.history_days + a.days,
        txns_per_day=a.txns_per_day,
    )
    if not drifted:
        return cfg
    return dataclasses.replace(
        cfg,
        ring_city=a.ring_city,
        ring_start_day=a.history_days + a.ring_day - 1,  # 0-based day index
        unseen_merchants_from_day=a.history_days + a.unseen_day - 1,
        unseen_merchant_share=a.unseen_share,
    )


def _partition(folder: Path, day: str) -> Path:
    return folder / f"day={day}"


def _land(pool: Path, live: Path, days: list[str]) -> None:
    """Move ``days`` of each partitioned dataset from the generated pool into the live zone."""
    for name in (datagen.TRANSACTIONS, datagen.LABELS, datagen.TRUTH):
        for day in days:
            src = _partition(pool / name, day)
            if src.exists():
                (live / name).mkdir(parents=True, exist_ok=True)
                shutil.move(str(src), str(_partition(live / name, day)))


def _copy_store(src: Path, dst: Path) -> None:
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    try:
        a.backup(b)
    finally:
        a.close()
        b.close()


@dataclasses.dataclass
class DayResult:
    day: str
    outcomes: dict[str, str]  # family or check -> OK | WARNING | ERROR
    seconds: dict[str, float]


def _run(
    store: ControlStore, node: AutomationNode, scenario: str, day: str, actor: str
) -> tuple[str, int]:
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, scenario, actor, {"day": day}
    )
    return node.run(run_id), run_id


def _step_seconds(store: ControlStore, run_id: int) -> dict[str, float]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(step_runs.c.name, step_runs.c.started_at, step_runs.c.ended_at).where(
                step_runs.c.run_id == run_id
            )
        ).all()
    out = {}
    for name, start, end in rows:
        if start and end:
            s = datetime.datetime.fromisoformat(str(start))
            e = datetime.datetime.fromisoformat(str(end))
            out[name] = (e - s).total_seconds()
    return out


def _outcomes(store: ControlStore, run_ids: list[int]) -> dict[str, str]:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(check_results.c.dataset, check_results.c.check_name, check_results.c.outcome)
            .where(check_results.c.run_id.in_(run_ids))
            .order_by(check_results.c.id)
        ).all()
    out: dict[str, str] = {}
    for dataset, name, outcome in rows:
        key = name if dataset == MODEL_CHECKS else f"check {dataset}.{name}"
        out[key] = outcome
    return out


def _evaluate_options(project: Project) -> dict[str, Any]:
    """The ``evaluate`` step of ``daily_evaluation``, as the step passes it to the engine."""
    for step in project.scenarios["daily_evaluation"]["steps"]:
        if step.get("type") == "evaluate":
            return {
                k: v for k, v in step.items() if k not in ("name", "type", "run_if", "partition")
            }
    raise SystemExit("daily_evaluation has no evaluate step")


def soak(
    settings: Settings,
    store: ControlStore,
    pool: Path,
    days: list[str],
    label: str,
    first: int,
) -> list[DayResult]:
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    project = node.project(demo.PROJECT)
    options = _evaluate_options(project)
    results = []
    for i, day in enumerate(days):
        _land(pool, settings.data_dir, [day])
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        outcome, run_id = _run(store, node, "daily_scoring", day, settings.user)
        seconds["daily_scoring"] = time.perf_counter() - t
        run_ids = [run_id]
        if outcome == runs.FAILED:
            # A data check failed: nothing was scored; daily_evaluation builds and scores.
            t = time.perf_counter()
            _outcome, run_id = _run(store, node, "daily_evaluation", day, settings.user)
            seconds["evaluate"] = _step_seconds(store, run_id).get("evaluate", float("nan"))
            seconds["daily_evaluation"] = time.perf_counter() - t
            run_ids.append(run_id)
        else:
            t = time.perf_counter()
            result = evaluation.evaluate_day(project, day, options)
            evaluation.record(store, demo.AUTOMATION_INFRA, project.name, result, run_id)
            seconds["evaluate"] = seconds["daily_evaluation"] = time.perf_counter() - t
        results.append(DayResult(day, _outcomes(store, run_ids), seconds))
        bad = {k: v for k, v in results[-1].outcomes.items() if v != "OK"}
        print(
            f"[{label}] day {first + i:2d} {day}: daily_scoring {seconds['daily_scoring']:5.1f} s "
            f"({outcome}), evaluation {seconds['daily_evaluation']:5.1f} s (evaluate "
            f"{seconds['evaluate']:4.1f} s) {json.dumps(bad) if bad else 'all OK'}",
            flush=True,
        )
    return results


def _generate(job: tuple[argparse.Namespace, bool, Path]) -> str:
    a, drifted, out = job
    t = time.perf_counter()
    summary = datagen.generate(_config(a, drifted), out)
    return (
        f"[generate] {'drifted' if drifted else 'clean'}: {summary.n_transactions:,} transactions "
        f"over {len(summary.days)} days, {summary.fraud_rate:.2%} fraud, {time.perf_counter() - t:.0f} s"
    )


def _soak_job(
    home: Path, data: Path, pool: Path, days: list[str], label: str, first: int
) -> list[DayResult]:
    settings = load_settings(environ={}, home=home, data_dir=data, basemap="none")
    return soak(settings, open_store(settings.control_store_url), pool, days, label, first)


def train(settings: Settings, store: ControlStore, days: list[str]) -> None:
    """The example's model, trained on features built for ``days`` only (the landing zone
    also holds the warm-up days before them, which the card windows read)."""
    people.create(store, settings.user, settings.home)
    project = design.import_project(settings, store, demo.EXAMPLE, actor=settings.user)
    flow.build(project, "features", days)
    flow.run_recipe(project, "training_set")
    meta = models.train(project, demo.MODEL, settings.user)
    print(
        f"[train] {demo.MODEL} {meta['version']}: {meta['train_rows']:,} training rows, "
        f"validation {meta['validation_days'][0]}..{meta['validation_days'][1]}, ROC AUC "
        f"{meta['metrics']['roc_auc']:.3f}",
        flush=True,
    )


def _table(results: list[DayResult], first: int) -> list[str]:
    keys = sorted({k for r in results for k in r.outcomes})
    lines = ["day | " + " | ".join(keys)]
    for i, r in enumerate(results):
        marks = [MARK.get(r.outcomes.get(k, ""), " ") for k in keys]
        lines.append(
            f"{first + i:3d} {r.day} | "
            + " | ".join(m.center(len(k)) for m, k in zip(marks, keys, strict=True))
        )
    return lines


def _summary(results: list[DayResult]) -> list[str]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"ERROR": 0, "WARNING": 0})
    keys = sorted({k for r in results for k in r.outcomes})
    for r in results:
        for k, v in r.outcomes.items():
            if v in ("ERROR", "WARNING"):
                counts[k][v] += 1
    lines = [
        f"  {k:58s} alarms {counts[k]['ERROR']:3d}  warnings {counts[k]['WARNING']:3d}"
        for k in keys
    ]
    total = sum(c["ERROR"] for c in counts.values()), sum(c["WARNING"] for c in counts.values())
    lines.append(f"  total: {total[0]} alarms, {total[1]} warnings")
    return lines


# Which families must catch which drift (the targets).
RING_FAMILIES = ("location", "missed_fraud")
UNSEEN_FAMILIES = (
    "unseen_values",
    f"check {datagen.TRANSACTIONS}.distinct_merchants_in_typical_range",
)


def _detection(results: list[DayResult], families: tuple[str, ...], onset: int) -> list[str]:
    """Per family: first alarm after ``onset`` (days after), and days after it not alarmed."""
    lines = []
    for family in families:
        after = [(i + 1, r.outcomes.get(family)) for i, r in enumerate(results) if i + 1 >= onset]
        alarmed = [d for d, v in after if v == "ERROR"]
        if not alarmed:
            seen = sorted({v for _d, v in after if v})
            lines.append(
                f"  {family:58s} NO alarm in {len(after)} affected days (outcomes: {seen})"
            )
            continue
        gaps = [f"{d}:{v or 'none'}" for d, v in after if d >= alarmed[0] and v != "ERROR"]
        lines.append(
            f"  {family:58s} first alarm day {alarmed[0]} (+{alarmed[0] - onset} d); "
            + ("alarm every day after" if not gaps else f"NOT alarmed on {', '.join(gaps)}")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    root = a.root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    pools = {v: root / f"pool-{v}" for v in {"clean", *variants}}
    # Both landing zones at once (each in its own process): 2 cores, half the wait.
    with ProcessPoolExecutor(len(pools), mp_context=multiprocessing.get_context("spawn")) as ex:
        for line in ex.map(_generate, [(a, v == "drifted", pools[v]) for v in pools]):
            print(line, flush=True)
    start = _config(a, False).start_day
    days = [str(start + datetime.timedelta(days=i)) for i in range(a.history_days + a.days)]
    history, soak_days = days[: a.history_days], days[a.history_days :]

    # The clean home: unpartitioned tables and the history, then train and deploy.
    live = root / "live-clean"
    live.mkdir()
    for f in pools["clean"].iterdir():
        if f.is_file() or f.name in (datagen.CARDS, datagen.MERCHANTS):
            (shutil.copy2 if f.is_file() else shutil.copytree)(f, live / f.name)
    _land(pools["clean"], live, history)
    settings = load_settings(environ={}, home=root / "var-clean", data_dir=live, basemap="none")
    store = open_store(settings.control_store_url)
    t = time.perf_counter()
    train(settings, store, history[a.warmup_days :])
    demo.prepare(settings, store)  # the model exists: bundle, deploy (node and API)
    print(
        f"[train] built, trained, bundled and deployed in {time.perf_counter() - t:.0f} s",
        flush=True,
    )
    before_ring = soak_days[: a.ring_day - 1]
    results: dict[str, list[DayResult]] = {}
    results["clean"] = soak(settings, store, pools["clean"], before_ring, "clean", 1)
    jobs = []
    if "drifted" in variants:
        # The drifted home: a copy of the clean one as it stands before the ring's day.
        dlive, dvar = root / "live-drifted", root / "var-drifted"
        shutil.copytree(live, dlive)
        shutil.copytree(settings.home, dvar, ignore=shutil.ignore_patterns("control.db*"))
        _copy_store(settings.home / "control.db", dvar / "control.db")
        # Labels of clean days that arrive later are the same in both zones; the drifted
        # pool supplies every later partition.
        jobs.append(("drifted", dvar, dlive, pools["drifted"]))
    if "clean" in variants:
        jobs.append(("clean", settings.home, live, pools["clean"]))
    # The two homes go on at once, each in its own process.
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn")) as ex:
        futures = {
            v: ex.submit(_soak_job, home, data, pool, soak_days[a.ring_day - 1 :], v, a.ring_day)
            for v, home, data, pool in jobs
        }
        for v, future in futures.items():
            results[v] = results["clean"][: a.ring_day - 1] + future.result()

    print()
    print(
        f"# {a.txns_per_day:,} transactions a day, {a.cards:,} cards, {a.merchants:,} merchants; "
        f"model days: {a.warmup_days} warm-up, {a.train_days} training, {VALIDATION_DAYS} "
        f"validation, {VALIDATION_DAYS} immature; {a.days} soak days; {time.perf_counter() - t0:.0f} s in all"
    )
    (root / "results.json").write_text(
        json.dumps({v: [dataclasses.asdict(r) for r in results[v]] for v in variants}, indent=1)
    )
    for v in variants:
        print(f"\n## {v}: outcome per day (. OK, w warning, E alarm)")
        print("\n".join(_table(results[v], 1)))
        print(f"\n## {v}: alarms and warnings per family over {len(results[v])} days")
        print("\n".join(_summary(results[v])))
        if v == "drifted":
            print("\n## drifted: time to detection (nobody accepts anything)")
            print(f"  fraud ring in {a.ring_city} from day {a.ring_day}:")
            print("\n".join(_detection(results[v], RING_FAMILIES, a.ring_day)))
            print(
                f"    (missed_fraud target: within the label delay + 1 = {LABEL_DELAY_DAYS + 1} "
                "days; the others: the day it starts)"
            )
            print(f"  {a.unseen_share:.0%} unseen merchants from day {a.unseen_day}:")
            print("\n".join(_detection(results[v], UNSEEN_FAMILIES, a.unseen_day)))
        ev = [r.seconds["evaluate"] for r in results[v]]
        if ev:
            print(
                f"  evaluate step: day 2 {ev[min(1, len(ev) - 1)]:.1f} s, day 15 "
                f"{ev[min(14, len(ev) - 1)]:.1f} s, last {ev[-1]:.1f} s, max {max(ev):.1f} s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
