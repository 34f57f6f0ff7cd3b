"""Server time of the fraud-map page's data for a day of ~1 M transactions (target ≤ 1.5 s).

Run: ``.venv/bin/python bench/bench_maps.py [--root DIR] [--repeat N]``. Times
``engine.monitoring.maps.load_map_day`` (KPIs, the day before, the points drawn, filter choices,
hot spots) plus the top-reasons contributions for the 25 rows of the table: everything the
page computes on the server. Baseline, measured in the same run: one DuckDB ``count(*)``
over the same Parquet partition (the cost of touching the day at all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.monitoring_home import DEFAULT_ROOT, prepare  # noqa: E402
from engine.automation.node import AutomationNode  # noqa: E402
from engine.monitoring import map_overlays, maps  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from nodal_demo import demo  # noqa: E402


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    settings, store, _, day = prepare(args.root)
    ref = (
        AutomationNode(settings, store, demo.AUTOMATION_INFRA)
        .project(demo.PROJECT)
        .dataset("fraud_map")
    )

    def baseline() -> None:
        ds.query_df("SELECT count(*) FROM m", {"m": (ref, [day])})

    def page(threshold: float | None = None) -> maps.MapDay:
        data = maps.load_map_day(
            settings, store, demo.PROJECT, demo.AUTOMATION_INFRA, day=day, threshold=threshold
        )
        ids = data.points.head(25)["id"].tolist()
        map_overlays.top_reasons(
            settings, store, demo.PROJECT, demo.AUTOMATION_INFRA, data.dashboard, ids, day
        )
        return data

    data = page()
    base = _median(baseline, args.repeat)
    own = _median(page, args.repeat)
    low = _median(lambda: page(0.05), args.repeat)
    print(f"day {day}: {data.kpis.rows:,} transactions, {data.kpis.flagged:,} flagged")
    print(f"baseline count(*):                  {base * 1000:8.1f} ms")
    print(f"map page, model flags:              {own * 1000:8.1f} ms  ({own / base:.1f}× baseline)")
    print(f"map page, threshold 0.05 (more pts):{low * 1000:8.1f} ms  ({low / base:.1f}× baseline)")
    print(f"target ≤ 1500 ms: {'met' if max(own, low) <= 1.5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
