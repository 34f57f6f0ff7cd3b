"""Lab training on 1 M rows, in the background, while another Studio session keeps working.

Prints the training time, how many progress updates the page got, and how long another
session's page (the Flow page, run with AppTest in this same process, as Streamlit runs
sessions) takes while the training runs, as a ratio to the same page measured just before.

    .venv/bin/python bench/bench_lab_training.py [rows]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.access import accounts  # noqa: E402
from engine.core.settings import load_settings  # noqa: E402
from engine.design import lab, lab_jobs  # noqa: E402
from engine.design import projects as design  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from engine.storage.control import open_store  # noqa: E402


def labelled(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)})
    frame["cat"] = rng.choice(["a", "b", "c", "d", "e"], size=n)
    frame["channel"] = rng.choice(["online", "in_store"], size=n)
    logit = frame["x0"] * 1.5 - frame["x1"] + (frame["cat"] == "a") * 1.2 - 4.0
    frame["is_fraud"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame["day"] = (pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(n) % 30, unit="D")).date
    return frame


def page_seconds(token: str, runs: int = 3) -> float:
    """Median seconds of the Studio's page for a signed-in person (``token``: a session)."""
    from streamlit.testing.v1 import AppTest

    times = []
    for _ in range(runs):
        started = time.perf_counter()
        at = AppTest.from_file(str(REPO / "apps/design_studio/app.py"), default_timeout=300)
        at.session_state["nodal_session_token"] = token
        at.run()
        assert not at.exception, at.exception
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(rows: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="nodal-bench-lab-"))
    settings = load_settings(environ={}, home=tmp / "var", data_dir=tmp / "data", basemap="none")
    store = open_store(settings.control_store_url)
    accounts.bootstrap_admin(store, settings.user)
    token = accounts.open_session(store, settings.user)
    design.create_project(settings, store, "bench", actor=settings.user)
    project = design.open_project(settings, "bench")
    ds.write(ds.DatasetRef("big", project.data_root / "big"), labelled(rows))
    with open(project.root / "datasets.yaml", "a") as fh:
        fh.write("big:\n  kind: managed\n")
    os.environ.update({"NODAL_HOME": str(settings.home), "NODAL_DATA_DIR": str(settings.data_dir)})
    baseline = page_seconds(token)
    spec = lab.LabSpec(
        "big",
        "is_fraud",
        [*(f"x{i}" for i in range(8)), "cat", "channel"],
        "big_model",
        params={"num_boost_round": 200, "early_stopping_rounds": 1000},
    )
    started = time.perf_counter()
    job = lab_jobs.start(design.open_project(settings, "bench"), spec, "bench")
    updates, during = set(), []
    while job.status == "RUNNING":
        updates.add(round(job.progress, 3))
        during.append(page_seconds(token, 1))
    trained = time.perf_counter() - started
    if job.status != "DONE":
        raise SystemExit(f"training failed: {job.error}")
    m = job.result["metrics"]
    print(
        f"rows: {rows:,} (train {job.result['train_rows']:,}, validation {m['validation_rows']:,})"
    )
    print(
        f"training in the background: {trained:.1f} s, ROC AUC {m['roc_auc']:.3f}, "
        f"{len(updates)} distinct progress values seen by the polling page"
    )
    if during:
        ratio = statistics.median(during) / baseline
        print(
            f"another session's Flow page: {baseline:.2f} s before, {statistics.median(during):.2f} s "
            f"during training (median of {len(during)}), ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
