"""The ``evaluate`` step's work for a day of ~1 M scored transactions.

Run: ``.venv/bin/python bench/bench_evaluation.py [--root DIR]``. Times
``engine.automation.evaluation.evaluate_day`` (drift of every feature, unseen merchants, hot spots,
prediction drift, the domain classifier) against a reference day of the same size, once with
the reference sample cached (the daily case) and once building it. Baseline, measured in
the same run: reading the scored partition into pandas (what any evaluation must do).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.monitoring_home import DEFAULT_ROOT, prepare  # noqa: E402
from engine.automation import evaluation  # noqa: E402
from engine.automation.node import AutomationNode  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from nodal_demo import demo  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    settings, store, ref_day, day = prepare(args.root)
    project = AutomationNode(settings, store, demo.AUTOMATION_INFRA).project(demo.PROJECT)
    # What to watch comes from models/fraud_model.yaml (monitoring:), as in the scenario.
    options = {"model": "fraud_model", "input": "scored", "reference_days": [ref_day]}
    shutil.rmtree(evaluation.reference_path(project), ignore_errors=True)
    t = time.perf_counter()
    evaluation.evaluate_day(project, day, options)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    result = evaluation.evaluate_day(project, day, options)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    frame = ds.read_df(project.dataset("scored"), [day])
    base = time.perf_counter() - t
    print(
        f"day {day}: {len(frame):,} scored rows; {len(result.metrics)} metrics, {len(result.alarms)} alarms"
    )
    print(f"baseline read into pandas:          {base:6.2f} s")
    print(f"evaluate (reference cached):        {warm:6.2f} s  ({warm / base:.1f}× baseline)")
    print(f"evaluate (building the reference):  {cold:6.2f} s  ({cold / base:.1f}× baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
