"""A home with one published day of ~1 M transactions, shared by the Monitoring benchmarks.

The model is trained on a small history of the same world (same seed and cards); then the
landing zone is regenerated with 2 days of ~1 M transactions each and the automation node
scores and publishes the second one with the real ``daily_scoring`` scenario. The home is
kept in ``--root`` (default ``/tmp/monitoring-1m-home``) and reused by later runs.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import time
from pathlib import Path

from engine.automation import runs
from engine.automation.node import AutomationNode
from engine.core.settings import Settings, load_settings
from engine.storage.control import ControlStore, open_store
from nodal_demo import datagen, demo

HISTORY = datagen.GeneratorConfig(n_cards=20_000, n_merchants=1_000, n_days=30, txns_per_day=3_000)
BIG = dataclasses.replace(HISTORY, n_days=2, txns_per_day=1_000_000)
DEFAULT_ROOT = Path("/tmp/monitoring-1m-home")


def prepare(root: Path = DEFAULT_ROOT) -> tuple[Settings, ControlStore, str, str]:
    """(settings, store, reference day, big published day), building what is missing."""
    history = load_settings(
        environ={}, home=root / "var", data_dir=root / "history", basemap="none"
    )
    store = open_store(history.control_store_url)
    big_dir = root / "big"
    settings = dataclasses.replace(history, data_dir=big_dir)
    days = [
        str(HISTORY.start_day),
        str(HISTORY.start_day + datetime.timedelta(days=1)),
    ]
    marker = root / "published"
    if marker.exists():
        return settings, store, days[0], days[1]
    t = time.perf_counter()
    demo.prepare(history, store, HISTORY)
    print(f"[prepare] history home trained in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    summary = datagen.generate(BIG, big_dir)
    print(
        f"[prepare] {summary.n_transactions:,} transactions generated in {time.perf_counter() - t:.1f} s"
    )
    if not (big_dir / datagen.LABELS).exists():
        # Two days are too few for any label to arrive; the node wants the source to exist.
        shutil.copytree(root / "history" / datagen.LABELS, big_dir / datagen.LABELS)
    node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
    node.sync()
    t = time.perf_counter()
    run_id = runs.request_run(
        store, demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring", "bench", {"day": days[1]}
    )
    outcome = node.run(run_id)
    if outcome not in (runs.SUCCESS, runs.WARNING):
        raise SystemExit(f"daily_scoring failed: {runs.get_run(store, run_id)['message']}")
    print(
        f"[prepare] day {days[1]} checked, scored and published in {time.perf_counter() - t:.1f} s"
    )
    marker.write_text(days[1])
    return settings, store, days[0], days[1]
