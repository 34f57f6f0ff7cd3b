"""A day's per-key profile build vs the length of the history before it.

Run: ``flock /tmp/nodal-bench.lock .venv/bin/python bench/bench_profile_window.py
[--cards 15000 --txns 20000 --days 121 --root DIR]``. One landing zone of the example's
generator; the example's ``card_profiles`` built for one day D (``flow.run_recipe(...,
[D])``, median of 3) at 30, 60 and 120 days of history, two ways:

* ``window30``: the example as it is: ``transactions: {days_before: 30}`` and 30-day
  windows (reads days D-30 … D-1 whatever the history);
* ``lifetime``: the recipe before issue 18 (lifetime counts) reading ``transactions: all``,
  which for a day's build now means every day up to D (before, every day there was).
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from engine.project import flow  # noqa: E402
from engine.project.project import load_project  # noqa: E402
from nodal_demo import datagen  # noqa: E402

# The recipe before issue 18, from the commit that last had it.
LIFETIME_COMMIT = "2d04e69"


def _project(root: Path, variant: str, data: Path):  # noqa: ANN202 - a Project
    proj = root / variant
    shutil.rmtree(proj, ignore_errors=True)
    shutil.copytree(REPO / "examples" / "fraud", proj)
    mode = "{days_before: 30}"
    if variant == "lifetime":
        sql = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{LIFETIME_COMMIT}:examples/fraud/recipes/card_profiles.sql"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (proj / "recipes" / "card_profiles.sql").write_text(sql)
        mode = "all"
    (proj / "flow.yaml").write_text(
        "recipes:\n  card_profiles:\n    sql: recipes/card_profiles.sql\n"
        f"    inputs: {{transactions: {mode}, cards: all}}\n    output: card_profiles\n"
    )
    return load_project(proj, proj / "data", {"data_dir": str(data)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=15_000)
    parser.add_argument("--txns", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=121)
    parser.add_argument("--root", type=Path, default=Path("/tmp/nodal-bench-profile-window"))
    a = parser.parse_args(argv)
    cfg = datagen.GeneratorConfig(
        n_cards=a.cards, n_merchants=2000, n_days=a.days, txns_per_day=a.txns
    )
    data = a.root / f"data-{a.cards}-{a.txns}-{a.days}"
    if not (data / datagen.META_FILE).exists():
        datagen.generate(cfg, data)
    for variant in ("lifetime", "window30"):
        project = _project(a.root, variant, data)
        for index in (30, 60, a.days - 1):
            day = str(cfg.start_day + datetime.timedelta(days=index))
            times, rows = [], 0
            for _ in range(3):
                t = time.perf_counter()
                rows = flow.run_recipe(project, "card_profiles", [day]).rows
                times.append(time.perf_counter() - t)
            print(
                f"{variant:9s} {index:4d} days of history: {statistics.median(times):5.2f} s "
                f"(runs {', '.join(f'{x:.2f}' for x in times)}; {rows:,} profiles)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
