"""Batch scoring speed: nodal end to end vs raw ``Booster.predict`` vs a pandas CSV pipeline.

Run: ``.venv/bin/python bench/bench_batch.py [--rows 1000000 10000000] [--out DIR]``
(``--out`` keeps the work folder: a second run reuses its data, model and compiled model).

For each row count it makes one day of that many transactions with the example generator
(``nodal_demo/datagen/``; it makes at most 2 M per day, so bigger days are several generated
days re-dated into one partition), and as many on each day before it that the windowed card
features read (``recipes/card_windows.yaml``: a week), builds the card profiles, and then
measures, each in its own subprocess so that peak memory (max RSS) is the pipeline's own:

* ``nodal``: end to end as the daily scenario runs it on an automation node: the
  ``card_windows`` recipe (the day's windowed card features: that day and the week before
  are read; timed on its own too, against the ``features`` step, target <= 50 %), the
  ``features`` recipe (DuckDB reads the transactions and card-profile Parquet, computes
  features, writes Parquet), then ``scoring.score_partition`` (Arrow stream → matrix →
  compiled forest → Parquet, atomic). The model was compiled at activation, so the
  compiled-model cache is warm; loading from it is inside the timing. The ``features``
  build of one day writes its partition straight to the staged file (the scenario's
  ``build`` step does the same); that step also builds the day's ``card_profiles`` (its
  recipe reads all of the history, and writes that day only), which is not timed here (it
  does not grow with the day's rows);
* ``booster``: ``Booster.predict`` alone on the same feature matrix, already in memory (the
  issue's baseline), and ``compiled``: the compiled forest's predict alone on that matrix
  (both in one process: their peak memory is that process's);
* ``pandas``: the plain way: ``pd.read_csv`` the transactions and card profiles, merge,
  compute the same features in pandas, encode, predict (Booster), ``to_csv``. It reads the
  windowed card features from a CSV of nodal's ``card_windows`` output (made before the
  clock) rather than computing them, which favours it.

The model is the example fraud model trained on the default generator config (as
``make demo`` does). Compare ratios: every number is measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAX_PER_DAY = 2_000_000
WINDOW_COLUMNS = [
    "card_txn_1h",
    "card_amount_1h",
    "card_txn_24h",
    "card_amount_24h",
    "card_seconds_since_last",
    "card_new_merchant_7d",
]
BENCH_DAY = "2026-12-01"


def _settings(root: Path):  # noqa: ANN202
    from engine.core.settings import load_settings

    return load_settings(
        environ={}, home=root / "var", data_dir=root / "train_data", basemap="none"
    )


def prepare_model(root: Path) -> None:
    """The example project, trained on the default generator config (as make demo does)."""
    from engine.storage.control import open_store
    from nodal_demo import demo
    from nodal_demo.datagen import GeneratorConfig

    settings = _settings(root)
    demo.prepare(settings, open_store(settings.control_store_url), GeneratorConfig())


def _project(root: Path, rows: int):  # noqa: ANN202
    from engine.project.project import load_project

    land = root / f"land_{rows}"
    return load_project(
        root / "var" / "design" / "projects" / "fraud",
        root / f"managed_{rows}",
        {"data_dir": str(land)},
    ), land


def _history_days(project) -> int:  # noqa: ANN001
    """The days before the bench day a build of it reads for its windowed features (the
    longest window of the project's windows recipes, in whole days; at least 1, which the
    card profiles need)."""
    from engine.project import windows

    reach = [s.longest_us for s in windows.declared(project).values()]
    return max([1, *(-(-us // windows.DAY_US) for us in reach)])


def prepare_day(root: Path, rows: int) -> None:
    """A landing zone whose day BENCH_DAY holds ``rows`` transactions, as does each of the
    days before it that its windowed features read (a week for the example), and the card
    profiles of BENCH_DAY.

    The landing zone holds real files (moved or written there, never symlinks): recipe SQL
    runs confined to the project's data and the landing zone, and a link resolving outside
    them is refused."""
    import duckdb

    from engine.project import flow
    from nodal_demo.datagen import GeneratorConfig, generate

    project, land = _project(root, rows)
    if project.dataset("card_profiles").exists():
        return
    # The generator's day sizes vary around txns_per_day: ask for 20 % more, keep ``rows``.
    # Each bench day (BENCH_DAY and the days before it) is ``n_days`` generated days re-dated.
    n_days = -(-rows * 6 // (5 * MAX_PER_DAY))
    per_day = min(MAX_PER_DAY, -(-rows * 6 // (5 * n_days)))
    history = _history_days(project)
    bench_days = [date.fromisoformat(BENCH_DAY) - timedelta(days=d) for d in range(history, -1, -1)]
    cfg = GeneratorConfig(
        n_cards=max(3000, rows // 50),
        n_merchants=5000,
        n_days=len(bench_days) * n_days,
        txns_per_day=per_day,
        start_day=bench_days[0] - timedelta(days=len(bench_days) * n_days),
    )
    raw = root / f"raw_{rows}"
    generate(cfg, raw)
    days = sorted(p.name.split("=")[1] for p in (raw / "transactions").glob("day=*"))
    land.mkdir(parents=True, exist_ok=True)
    for name in ("cards", "merchants"):
        (raw / name).rename(land / name)
    tx = land / "transactions"
    tx.mkdir()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    for i, day in enumerate(bench_days):
        chunk = days[i * n_days : (i + 1) * n_days]
        files = ", ".join(f"'{raw}/transactions/day={d}/data.parquet'" for d in chunk)
        (tx / f"day={day}").mkdir()
        # Several generated days re-dated into one: same hours, the bench day's date.
        con.execute(
            f"COPY (SELECT * REPLACE (CAST(DATE '{day}' AS TIMESTAMP) + "
            f"(ts - CAST(CAST(ts AS DATE) AS TIMESTAMP)) AS ts) FROM read_parquet([{files}]) "
            f"LIMIT {rows}) TO '{tx}/day={day}/data.parquet' (FORMAT parquet)"
        )
    con.close()
    shutil.rmtree(raw / "transactions")
    flow.run_recipe(project, "card_profiles", [BENCH_DAY])


def stage_nodal(root: Path, rows: int) -> dict[str, float]:
    from engine.models import scoring
    from engine.project import flow

    project, _ = _project(root, rows)
    c0 = _cpu()
    t0 = time.perf_counter()
    # The day's windowed card features (recipes/card_windows.yaml: that day and the week
    # before are read), which the features recipe joins.
    flow.run_recipe(project, "card_windows", [BENCH_DAY])
    tw, cw = time.perf_counter(), _cpu()
    flow.run_recipe(project, "features", [BENCH_DAY])
    t1, c1 = time.perf_counter(), _cpu()
    result = scoring.score_partition(
        project, "fraud_model", "features", "scored", BENCH_DAY, compiled_cache=_cache(root)
    )
    t2 = time.perf_counter()
    if result.rows != rows:
        raise SystemExit(f"the bench day has {result.rows} rows, not {rows}")
    return {
        "seconds": t2 - t0,
        "windows_s": tw - t0,
        "features_s": t1 - tw,
        "windows_cpu_s": cw - c0,
        "features_cpu_s": c1 - cw,
        "score_s": t2 - t1,
        "rows": result.rows,
    }


def _cpu() -> float:
    """This process's CPU seconds so far (DuckDB's threads included): on a shared machine
    the steps' CPU times compare better than their wall times."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cache(root: Path) -> Path:
    return root / "compiled_cache"


def compile_model(root: Path) -> float:
    """Compile the example model into the bench's cache (as activation does); seconds."""
    from engine.models.saved import SavedModel

    project, _ = _project(root, 0)
    t0 = time.perf_counter()
    SavedModel.load(project.active_model_dir("fraud_model"), compiled=_cache(root))
    return time.perf_counter() - t0


def stage_predict(root: Path, rows: int) -> dict[str, float]:
    import numpy as np

    from engine.models import scoring
    from engine.models.saved import SavedModel
    from engine.storage import datasets as ds

    project, _ = _project(root, rows)
    saved = SavedModel.load(project.active_model_dir("fraud_model"), compiled=_cache(root))
    with ds.session() as con:
        table = con.sql(
            f"SELECT * FROM {ds.scan_sql(project.dataset('features'), [BENCH_DAY])}"
        ).to_arrow_table()
    matrix = scoring.encode_arrow(saved, table)
    del table
    t0 = time.perf_counter()
    proba = saved.booster.predict(matrix, num_threads=0)
    t1 = time.perf_counter()
    fast = saved.compiled.predict(matrix, num_threads=0)
    t2 = time.perf_counter()
    if not np.allclose(fast, proba, rtol=1e-12, atol=0):
        raise SystemExit("compiled and Booster predictions differ beyond rtol 1e-12")
    return {"seconds": t1 - t0, "compiled_s": t2 - t1, "rows": len(proba)}


def _csv_inputs(root: Path, rows: int) -> tuple[Path, Path, Path]:
    import duckdb

    from engine.storage import datasets as ds

    project, land = _project(root, rows)
    tx_csv, prof_csv = root / f"tx_{rows}.csv", root / f"profiles_{rows}.csv"
    windows_csv = root / f"windows_{rows}.csv"
    if not windows_csv.exists():
        con = duckdb.connect()
        con.execute(
            f"COPY (SELECT * FROM read_parquet('{land}/transactions/day={BENCH_DAY}/*.parquet')) "
            f"TO '{tx_csv}' (HEADER)"
        )
        profiles = ds.scan_sql(project.dataset("card_profiles"), [BENCH_DAY])
        con.execute(f"COPY (SELECT * FROM {profiles}) TO '{prof_csv}' (HEADER)")
        card_windows = ds.scan_sql(project.dataset("card_windows"), [BENCH_DAY])
        con.execute(f"COPY (SELECT * FROM {card_windows}) TO '{windows_csv}' (HEADER)")
        con.close()
    return tx_csv, prof_csv, windows_csv


def stage_pandas(root: Path, rows: int) -> dict[str, float]:
    import numpy as np
    import pandas as pd

    from engine.models.saved import SavedModel

    project, _ = _project(root, rows)
    tx_csv, prof_csv, windows_csv = _csv_inputs(root, rows)
    saved = SavedModel.load(project.active_model_dir("fraud_model"))
    out = root / f"pandas_scored_{rows}.csv"
    t0 = time.perf_counter()
    tx = pd.read_csv(tx_csv, parse_dates=["ts"])
    prof = pd.read_csv(prof_csv, parse_dates=["day", "account_open_date"])
    tx["day"] = tx["ts"].dt.normalize()
    df = tx.merge(prof, on=["card_id", "day"], how="left")
    # The windowed card features are nodal's (card_windows, exported before the clock):
    # this pipeline only reads and joins them, it does not compute them.
    win = pd.read_csv(windows_csv, usecols=["transaction_id", *WINDOW_COLUMNS])
    df = df.merge(win, on="transaction_id", how="left")
    df["card_minutes_since_last"] = df["card_seconds_since_last"] / 60.0
    df["card_new_merchant_7d"] = df["card_new_merchant_7d"].astype("float")
    df["hour_of_day"] = df["ts"].dt.hour
    lat1, lat2 = np.radians(df["home_latitude"]), np.radians(df["merchant_latitude"])
    dlat = lat2 - lat1
    dlon = np.radians(df["merchant_longitude"] - df["home_longitude"])
    a = np.sin(dlat / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin(dlon / 2) ** 2
    df["distance_km"] = 2 * 6371.0088 * np.arcsin(np.sqrt(a))
    df["amount_ratio"] = df["amount"] / df["card_avg_amount"]
    df["account_age_days"] = (df["day"] - df["account_open_date"]).dt.days
    df["proba"] = saved.predict_proba(saved.encode(df))
    df["is_flagged"] = df["proba"] >= saved.threshold
    df.to_csv(out, index=False)
    return {"seconds": time.perf_counter() - t0, "rows": len(df)}


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


STAGES = {"nodal": stage_nodal, "booster": stage_predict, "pandas": stage_pandas}


def run_stage(root: Path, rows: int, stage: str) -> dict[str, float]:
    if stage == "pandas":
        _csv_inputs(root, rows)  # CSV inputs are made before the clock starts
    proc = subprocess.run(
        [sys.executable, __file__, "--root", str(root), "--stage", stage, "--rows", str(rows)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--out", type=Path, help="work folder, kept (default: a temporary one)")
    parser.add_argument(
        "--pandas-max-rows",
        type=int,
        default=0,
        help="skip the (slow) pandas pipeline for days bigger than this (default: never skip)",
    )
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=list(STAGES), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:  # child process: one pipeline, print its numbers as JSON
        result = STAGES[args.stage](args.root, args.rows[0])
        result["peak_mb"] = _peak_mb()
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="nodal-bench-batch-") as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "var").exists():
            print("training the example model (default generator config) …", flush=True)
            prepare_model(root)
        print(f"compiling the model (cached after the first run): {compile_model(root):.1f} s")
        for rows in args.rows:
            print(f"\n== {rows:,} rows: preparing the day …", flush=True)
            prepare_day(root, rows)
            stages = ["nodal", "booster"]
            if not args.pandas_max_rows or rows <= args.pandas_max_rows:
                stages.append("pandas")
            res = {stage: run_stage(root, rows, stage) for stage in stages}
            b = res["booster"]
            res["compiled"] = {
                "seconds": b["compiled_s"],
                "rows": b["rows"],
                "peak_mb": b["peak_mb"],
            }
            rate = {k: v["rows"] / v["seconds"] for k, v in res.items()}
            print(f"{'pipeline':<10} {'seconds':>8} {'rows/s':>12} {'peak MB':>9}")
            for k in ("nodal", "booster", "compiled", "pandas"):
                if k not in res:
                    print(f"{k:<10} skipped (--pandas-max-rows {args.pandas_max_rows:,})")
                    continue
                v = res[k]
                print(f"{k:<10} {v['seconds']:>8.2f} {rate[k]:>12,.0f} {v['peak_mb']:>9,.0f}")
            n = res["nodal"]
            print(
                f"nodal split: card windows {n['windows_s']:.2f} s, features "
                f"{n['features_s']:.2f} s, score {n['score_s']:.2f} s (windows / features: "
                f"{n['windows_s'] / n['features_s']:.0%}, target <= 50%; CPU: windows "
                f"{n['windows_cpu_s']:.2f} s, features {n['features_cpu_s']:.2f} s, "
                f"{n['windows_cpu_s'] / n['features_cpu_s']:.0%})\n"
                f"nodal end to end / raw Booster.predict: {rate['nodal'] / rate['booster']:.0%} "
                f"(target >= 80%); without the windows step (features + score, the path that "
                f"target was set on before windowed features existed): "
                f"{n['rows'] / (n['features_s'] + n['score_s']) / rate['booster']:.0%}\n"
                f"nodal end to end / raw compiled predict: {rate['nodal'] / rate['compiled']:.0%}\n"
                + (
                    f"nodal / pandas CSV pipeline: {rate['nodal'] / rate['pandas']:.1f}x "
                    "(target >= 5x)\n"
                    if "pandas" in rate
                    else ""
                )
                + f"nodal peak memory: {n['peak_mb']:,.0f} MB (target < 4,096 MB at 10 M rows)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
