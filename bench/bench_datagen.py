"""Time the example data generator on 1 M transactions (target: under 30 s on 2 cores).

Run: ``.venv/bin/python bench/bench_datagen.py [--out DIR]`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from nodal_demo.datagen import GeneratorConfig, generate

BENCH_CONFIG = GeneratorConfig(n_cards=100_000, n_merchants=5_000, n_days=10, txns_per_day=100_000)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, help="output folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nodal-bench-") as tmp:
        out = args.out or Path(tmp)
        started = time.perf_counter()
        summary = generate(BENCH_CONFIG, out)
        seconds = time.perf_counter() - started
    rate = summary.n_transactions / seconds
    print(f"transactions: {summary.n_transactions:,} over {len(summary.days)} days")
    print(f"fraud rate:   {summary.fraud_rate:.4%}")
    print(f"seconds:      {seconds:.2f}")
    print(f"rows/s:       {rate:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
