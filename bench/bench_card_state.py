"""What windowed per-key features cost a ``predict``: the state read and update per request.

Three servers, one run, one worker each pinned to CPU 0 (the client runs on CPU 1):

- **no windows**: the fraud example without its card windows (features.sql without the
  ``card_windows`` join, the model without those six features), retrained;
- **embedded**: the example as it is, the online state in the API node's SQLite file (WAL);
- **redis**: the same package, the state in a redis-server on loopback (one EVALSHA a request).

Each is sent the same stream of distinct transactions (the demo's last days, in time order,
so every request records a new event and reads its card's window), one connection, in
interleaved rounds. Prints the server-side p50/p99 of ``predict`` from each node's audit log
(``duration_us``: parsing, features, state, model, audit line) and the client's p50.

    flock /tmp/nodal-bench.lock python bench/bench_card_state.py [--days 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_serving import free_port, load_average, start, stop  # noqa: E402
from engine.apinode import querylog  # noqa: E402
from engine.storage import datasets as ds  # noqa: E402
from engine.storage.control import open_store  # noqa: E402
from nodal_demo import demo  # noqa: E402

WINDOWED = (
    "card_txn_1h",
    "card_amount_1h",
    "card_txn_24h",
    "card_amount_24h",
    "card_minutes_since_last",
    "card_new_merchant_7d",
)


def example_without_windows(dest: Path) -> Path:
    """A copy of the fraud example whose features and model do not use the card windows."""
    shutil.copytree(demo.EXAMPLE, dest)
    sql = (dest / "recipes" / "features.sql").read_text()
    sql = (
        sql[: sql.index(",\n    -- the card's activity strictly before")]
        + sql[sql.index("\nFROM transactions t") :]
    )
    sql = sql.replace("\nLEFT JOIN card_windows w ON w.transaction_id = t.transaction_id", "")
    (dest / "recipes" / "features.sql").write_text(sql)
    model = dest / "models" / "fraud_model.yaml"
    model.write_text(
        "\n".join(
            line
            for line in model.read_text().splitlines()
            if line.strip().removeprefix("- ") not in WINDOWED
        )
        + "\n"
    )
    return dest


def prepare(root: Path, example: Path | None = None):  # noqa: ANN201 - (settings, env)
    from tests.conftest import SMALL, make_settings

    settings = make_settings(root)
    store = open_store(settings.control_store_url)
    saved = demo.EXAMPLE
    if example is not None:
        demo.EXAMPLE = example
    try:
        demo.prepare(settings, store, SMALL)
    finally:
        demo.EXAMPLE = saved
    env = {
        "NODAL_HOME": str(settings.home),
        "NODAL_DATA_DIR": str(settings.data_dir),
        "NODAL_POLL_SECONDS": "2",
        "PYTHONPATH": str(REPO),
    }
    return settings, env


def transactions(data_dir: Path, days: int) -> list[dict]:
    ref = ds.DatasetRef("transactions", data_dir / "transactions", "day")
    frame = ds.query_df(
        "SELECT * EXCLUDE (day) FROM t ORDER BY ts, transaction_id",
        {"t": (ref, ref.partitions()[-days:])},
    )
    out = []
    for rec in frame.to_dict("records"):
        rec = {k: v.item() if hasattr(v, "item") else v for k, v in rec.items()}
        rec["ts"] = rec["ts"].isoformat()
        out.append(rec)
    return out


def server_p(home: Path, q: float) -> tuple[float, int]:
    table = querylog.scan_sql(home, demo.API_INFRA)
    row = ds.query_df(
        f"SELECT quantile_cont(duration_us, {q}) AS p, count(*) AS n FROM {table} "
        "WHERE method = 'predict' AND status = 200"
    ).iloc[0]
    return float(row["p"]) / 1000.0, int(row["n"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=3, help="days of transactions replayed")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args()
    from tests.homes import copy_home
    from tests.redis_server import redis_server

    tmp = Path(tempfile.mkdtemp(prefix="nodal-bench-state-"))
    print(f"preparing the fraud example (with and without card windows) in {tmp} …", flush=True)
    settings, env_w = prepare(tmp / "windows")
    _, env_plain = prepare(tmp / "plain", example_without_windows(tmp / "example_plain"))
    redis_settings, _ = copy_home(settings, tmp / "redis")
    records = transactions(settings.data_dir, args.days)
    chunks = [records[i :: args.rounds] for i in range(args.rounds)]
    chunks = [sorted(c, key=lambda r: (r["ts"], r["transaction_id"])) for c in chunks]
    print(f"{len(records)} transactions; load average {load_average()}", flush=True)
    procs = []
    with redis_server(tmp / "redis_server") as redis_url:
        env_r = {
            **env_w,
            "NODAL_HOME": str(redis_settings.home),
            "NODAL_ONLINE_STORE_URL": redis_url,
        }
        servers = {}
        try:
            for name, env in (("no windows", env_plain), ("embedded", env_w), ("redis", env_r)):
                port = free_port()
                cmd = [sys.executable, "-m", "engine.serving", "--infra", demo.API_INFRA]
                procs.append(
                    start(
                        [*cmd, "--port", str(port)],
                        env,
                        tmp / f"{name.replace(' ', '_')}.log",
                        f"http://127.0.0.1:{port}/isAlive/",
                    )
                )
                servers[name] = (f"http://127.0.0.1:{port}", Path(env["NODAL_HOME"]))
            url = f"/public/api/v1/{demo.SERVICE}/{demo.ENDPOINT}/predict"
            os.sched_setaffinity(0, {1})
            client_ms: dict[str, list[float]] = {n: [] for n in servers}
            for r, chunk in enumerate(chunks):
                for name, (base, _) in servers.items():
                    with httpx.Client(base_url=base, timeout=10) as client:
                        for rec in chunk:
                            t0 = time.perf_counter()
                            answer = client.post(url, json={"features": rec})
                            client_ms[name].append((time.perf_counter() - t0) * 1000)
                            if answer.status_code != 200:
                                raise SystemExit(f"{name}: {answer.status_code} {answer.text}")
                print(f"round {r + 1}/{args.rounds} done", flush=True)
            time.sleep(1.0)  # the audit lines are written before each answer; let files settle
        finally:
            for proc in procs:
                stop(proc)
    print(f"\nload average now {load_average()}")
    print(
        f"{'server':<11} {'n':>6} {'server p50 ms':>14} {'server p99 ms':>14} {'client p50 ms':>14}"
    )
    for name, (_, home) in servers.items():
        p50, n = server_p(home, 0.5)
        p99, _ = server_p(home, 0.99)
        print(
            f"{name:<11} {n:>6} {p50:>14.3f} {p99:>14.3f} {statistics.median(client_ms[name]):>14.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
