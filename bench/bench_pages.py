"""How long a page of Monitoring and of the Deployer Console takes to run, before and after
sign-in was added: the same pages on the same home, run by AppTest (the page's whole script,
as Streamlit runs it for a browser), in this checkout and in a git worktree of ``--before``.

Run: ``.venv/bin/python bench/bench_pages.py [--before REV] [--runs N]`` (REV defaults to the
commit before sign-in). Prints the median seconds of each page and the ratio after/before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEFORE = "3bf73c0"  # the last commit without sign-in
PAGES = [
    ("apps/monitoring/app.py", None),
    ("apps/monitoring/app.py", "views/fraud_map.py"),
    ("apps/deployer_console/app.py", None),
]

# Runs inside the checkout being measured (its own engine and apps on sys.path).
MEASURE = r"""
import json, os, statistics, sys, time
from pathlib import Path
from streamlit.testing.v1 import AppTest
pages, runs = json.loads(sys.argv[1]), int(sys.argv[2])
token = None
if Path("apps/common/auth.py").exists():  # signing in exists in this checkout
    from engine.access import accounts
    from engine.core.settings import load_settings
    from engine.storage.control import open_store
    store = open_store(load_settings().control_store_url)
    token = accounts.open_session(store, os.environ["NODAL_USER"])
out = {}
for app, page in pages:
    times = []
    for _ in range(runs + 1):  # the first run warms imports and caches: not counted
        started = time.perf_counter()
        at = AppTest.from_file(app, default_timeout=120)
        if token:
            at.session_state["nodal_session_token"] = token
        at.run()
        if page:
            at.switch_page(page).run()
        assert not at.exception, at.exception
        times.append(time.perf_counter() - started)
    out[f"{app}:{page or 'default'}"] = statistics.median(times[1:])
print(json.dumps(out))
"""


def measure(checkout: Path, env: dict[str, str], runs: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(PAGES), str(runs)],
        cwd=checkout,
        env={**os.environ, **env, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"measuring {checkout} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from engine.automation import runs
    from engine.automation.node import AutomationNode
    from engine.core.settings import load_settings
    from engine.storage.control import open_store
    from nodal_demo import datagen, demo

    with tempfile.TemporaryDirectory(prefix="nodal-bench-pages-") as tmp:
        root = Path(tmp)
        settings = load_settings(
            environ={}, home=root / "var", data_dir=root / "data", basemap="none", user="bench"
        )
        config = datagen.GeneratorConfig(
            n_cards=2000, n_merchants=300, n_days=20, txns_per_day=4000
        )
        store = open_store(settings.control_store_url)
        demo.prepare(settings, store, config)
        node = AutomationNode(settings, store, demo.AUTOMATION_INFRA)
        node.sync()  # publish one day, so the map page has one to draw
        node.run(
            runs.request_manual_run(
                store, "bench", demo.AUTOMATION_INFRA, demo.PROJECT, "daily_scoring"
            )
        )
        env = {
            "NODAL_HOME": str(settings.home),
            "NODAL_DATA_DIR": str(settings.data_dir),
            "NODAL_BASEMAP": "none",
            "NODAL_USER": "bench",
        }
        before_tree = root / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before_tree), args.before],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            before = measure(before_tree, env, args.runs)
            after = measure(REPO, env, args.runs)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before_tree)],
                cwd=REPO,
                check=False,
                capture_output=True,
            )
    print(f"{'page':<48} {'before s':>9} {'after s':>9} {'ratio':>6}")
    for key in before:
        print(f"{key:<48} {before[key]:>9.3f} {after[key]:>9.3f} {after[key] / before[key]:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
