"""Column checks of one day of 1 M transactions: pandera inside DuckDB vs the hand-written code.

Run: ``flock /tmp/nodal-bench.lock .venv/bin/python bench/bench_checks.py [--rows N]
[--repeat R]``. Writes a project with one day of ``--rows`` synthetic transactions (the
fraud example's columns) under a temporary folder, then, each in its own process (so that
the peak resident memory of each is its own), runs the same seven column checks:

* **before**: the check engine as it was before pandera (``engine/project/checks.py`` at
  commit ``BEFORE``, read with ``git show``), where nullability, uniqueness, a range, a
  pattern and a row rule must be written as ``metric_bounds`` over metrics;
* **pandera**: today's checks (``schema_equals``, ``value_in_set``, ``not_null``,
  ``unique``, ``in_range``, ``matches``, ``row_condition``) validated by ``pandera.ibis``.

Both on a clean day (every check passes) and on a day with a few bad rows (every check
fails, so failure counts and examples are computed too). Each process runs the checks once
cold (imports, first compiles: what a one-off ``nodal check run`` pays) and ``--repeat``
times warm (a runner's steady state). Prints median wall and CPU seconds, the peak RSS
(the partition is never loaded into pandas: the peak stays far below a 1 M-row DataFrame),
and the ratios pandera / before, in the same run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEFORE = "3bf73c0"  # the last commit with the hand-written column checks

SCHEMA = {
    "transaction_id": "VARCHAR",
    "ts": "TIMESTAMP",
    "card_id": "VARCHAR",
    "merchant_id": "VARCHAR",
    "merchant_category": "VARCHAR",
    "amount": "DOUBLE",
    "channel": "VARCHAR",
    "card_present": "BOOLEAN",
    "merchant_latitude": "DOUBLE",
    "merchant_longitude": "DOUBLE",
}
CHANNELS = ["online", "pos", "atm"]
ROW_RULE = "amount >= 0 OR channel = 'atm'"

OLD_CHECKS = [
    {"name": "columns", "type": "schema_equals"},
    {"name": "channels", "type": "value_in_set", "column": "channel", "values": CHANNELS},
    {
        "name": "card_present",
        "type": "metric_bounds",
        "metric": {"type": "missing_share", "column": "card_id"},
        "max": 0,
    },
    {
        "name": "unique_ids",
        "type": "metric_bounds",
        "metric": {
            "type": "sql",
            "sql": "SELECT count(*) - count(DISTINCT transaction_id) FROM dataset",
        },
        "max": 0,
    },
    {
        "name": "amount_positive",
        "type": "metric_bounds",
        "metric": {"type": "min", "column": "amount"},
        "min": 0,
    },
    {
        "name": "id_format",
        "type": "metric_bounds",
        "metric": {
            "type": "sql",
            "sql": "SELECT count(*) FROM dataset WHERE NOT regexp_matches(transaction_id, '^T[0-9]+$')",
        },
        "max": 0,
    },
    {
        "name": "row_rule",
        "type": "metric_bounds",
        "metric": {"type": "sql", "sql": f"SELECT count(*) FROM dataset WHERE NOT ({ROW_RULE})"},
        "max": 0,
    },
]
NEW_CHECKS = [
    {"name": "columns", "type": "schema_equals"},
    {"name": "channels", "type": "value_in_set", "column": "channel", "values": CHANNELS},
    {"name": "card_present", "type": "not_null", "column": "card_id"},
    {"name": "unique_ids", "type": "unique", "column": "transaction_id"},
    {"name": "amount_positive", "type": "in_range", "column": "amount", "min": 0},
    {"name": "id_format", "type": "matches", "column": "transaction_id", "pattern": "^T[0-9]+$"},
    {"name": "row_rule", "type": "row_condition", "expression": ROW_RULE},
]


def make_project(root: Path, rows: int) -> None:
    """A project whose ``transactions`` has a clean day and a day with a few bad rows."""
    import duckdb
    import yaml

    (root / "project").mkdir(parents=True)
    (root / "project" / "project.yaml").write_text("name: bench\n")
    (root / "project" / "flow.yaml").write_text("recipes: {}\n")
    datasets = {
        "transactions": {
            "kind": "source",
            "path": "{data_dir}/transactions",
            "partitioned_by": "day",
            "schema": SCHEMA,
        }
    }
    (root / "project" / "datasets.yaml").write_text(yaml.safe_dump(datasets))
    con = duckdb.connect()
    for day, bad in (("2026-01-01", False), ("2026-01-02", True)):
        folder = root / "data" / "transactions" / f"day={day}"
        folder.mkdir(parents=True)
        broken = "i % 200000 = 7" if bad else "false"
        dup = "i = 1" if bad else "false"
        con.execute(
            f"""COPY (SELECT
                CASE WHEN {broken} THEN 'X' || i WHEN {dup} THEN 'T0' ELSE 'T' || i END
                    AS transaction_id,
                TIMESTAMP '{day}' + INTERVAL (i % 86400) SECOND AS ts,
                CASE WHEN {broken} THEN NULL ELSE 'C' || (i % 30000) END AS card_id,
                'M' || (i % 5000) AS merchant_id,
                ['grocery', 'fuel', 'travel', 'online'][1 + i % 4] AS merchant_category,
                CASE WHEN {broken} THEN -1.0 ELSE (i % 9973) / 10.0 END AS amount,
                CASE WHEN {broken} THEN 'wire' ELSE ['online', 'pos', 'atm'][1 + i % 3] END
                    AS channel,
                i % 7 <> 0 AS card_present,
                40 + (i % 1000) / 100.0 AS merchant_latitude,
                -100 + (i % 2000) / 100.0 AS merchant_longitude
              FROM range({rows}) t(i)) TO '{folder / "data.parquet"}' (FORMAT parquet)"""
        )
    con.close()


def _old_module() -> types.ModuleType:
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:engine/project/checks.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("checks_before")
    module.__file__ = "checks_before.py"
    sys.modules["checks_before"] = module
    exec(compile(source, "checks_before.py", "exec"), module.__dict__)  # noqa: S102
    return module


def child(root: Path, variant: str, day: str, repeat: int) -> None:
    """Run the checks ``repeat`` times in this process; print JSON (times, verdicts, RSS)."""
    from engine.project.project import load_project
    from engine.storage.control import open_store

    if variant == "before":
        checks = _old_module()
        specs = OLD_CHECKS
    else:
        from engine.project import checks

        specs = NEW_CHECKS
    project = load_project(root / "project", root / "managed", {"data_dir": str(root / "data")})
    project.checks["transactions"] = specs
    store = open_store(f"sqlite:///{root / f'control-{variant}.db'}")
    times, cpu, outcomes = [], [], {}
    for _ in range(repeat + 1):  # the first run is cold: lazy imports, first compiles
        t, c = time.perf_counter(), time.process_time()
        results = checks.run_checks(project, "transactions", day, store, "bench")
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        outcomes = {r.name: r.outcome for r in results}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "cold": times[0],
                "times": times[1:],
                "cpu": cpu[1:],
                "outcomes": outcomes,
                "peak_mb": peak,
            }
        )
    )


def _run(root: Path, variant: str, day: str, repeat: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            variant,
            "--day",
            day,
            "--root",
            str(root),
            "--repeat",
            str(repeat),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--child", choices=("before", "pandera"))
    parser.add_argument("--day")
    args = parser.parse_args(argv)
    if args.child:
        child(args.root, args.child, args.day, args.repeat)
        return 0
    with tempfile.TemporaryDirectory(prefix="nodal-bench-checks-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_project(root, args.rows)
        print(f"one day of {args.rows:,} transactions written in {time.perf_counter() - t:.1f} s")
        for label, day in (("clean day", "2026-01-01"), ("day with bad rows", "2026-01-02")):
            got = {}
            for variant in ("before", "pandera", "before", "pandera"):  # interleaved
                r = _run(root, variant, day, args.repeat)
                prev = got.setdefault(variant, {"times": [], "cpu": [], "cold": [], "peak_mb": 0.0})
                prev["times"] += r["times"]
                prev["cpu"] += r["cpu"]
                prev["cold"].append(r["cold"])
                prev["peak_mb"] = max(prev["peak_mb"], r["peak_mb"])
                prev["outcomes"] = r["outcomes"]
            print(
                f"\n{label} (median of {2 * args.repeat} warm runs; cold: first run of a process):"
            )
            med = {
                v: {k: statistics.median(r[k]) for k in ("times", "cpu", "cold")}
                for v, r in got.items()
            }
            for variant, r in got.items():
                m = med[variant]
                print(
                    f"  {variant:8s} warm {m['times']:6.3f} s (CPU {m['cpu']:5.2f} s)   "
                    f"cold {m['cold']:6.3f} s   peak RSS {r['peak_mb']:5.0f} MB   "
                    + " ".join(f"{k}={v}" for k, v in r["outcomes"].items())
                )
            for what, key in (("warm", "times"), ("warm CPU", "cpu"), ("cold", "cold")):
                ratio = med["pandera"][key] / med["before"][key]
                print(f"  ratio pandera / before, {what}: {ratio:.2f}x (target <= 1.5x)")
            same = got["pandera"]["outcomes"] == got["before"]["outcomes"]
            print(f"  same verdicts: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
