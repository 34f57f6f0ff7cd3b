"""How long bootstrapping the windowed state takes, and how long a request waits meanwhile.

Replays N synthetic events (a snapshot as ``publish_enrichment`` of a windows output writes
it: key, time, id and two ``of`` values; ~20 events per key over 7 days) into the embedded
store (SQLite) and into a real redis-server on loopback, through the bulk form of
``record`` (:func:`engine.apinode.window_bootstrap.replay`), and for comparison one
``record`` per event on a smaller N. Meanwhile another process keeps calling ``record`` as
a serving worker does and reports its slowest call (how long a bootstrap blocks a request),
and so does a thread of the replaying process itself, on the same store object (the
worker's event loop while its poll thread replays: GIL and lock; ``inproc_*``).
Run it on an older checkout too (copy it there): it uses what that checkout has.

    flock /tmp/nodal-bench.lock .venv/bin/python bench/bench_window_bootstrap.py --n 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.apinode import online_state, window_bootstrap  # noqa: E402
from engine.project import windows  # noqa: E402
from tests.redis_server import redis_server  # noqa: E402

DAY_US = 86_400_000_000
SPEC = windows.WindowSpec(
    "w",
    "w",
    "events",
    "key",
    "t",
    "id",
    "day",
    (
        windows.WindowFeature("n_1h", "count", None, "1h", 3_600_000_000),
        windows.WindowFeature("sum_24h", "sum", "amount", "24h", DAY_US),
        windows.WindowFeature("new_7d", "first_seen", "merchant", "7d", 7 * DAY_US),
    ),
    "bench",
)
T0 = 1_790_000_000_000_000  # µs


def snapshot(n: int) -> bytes:
    keys = max(1, n // 20)
    table = pa.table(
        {
            "key": [f"K{i % keys:07d}" for i in range(n)],
            "t": pa.array([T0 + (i * 7 * DAY_US) // n for i in range(n)], pa.timestamp("us")),
            "id": [f"E{i:09d}" for i in range(n)],
            "amount": [float(i % 997) / 7 for i in range(n)],
            "merchant": [f"M{i % 5000:05d}" for i in range(n)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _serve(kind: str, where: str, ready, stop, out) -> None:
    """A serving worker: record() in a loop; the slowest call and the p50, in ms."""
    state = (
        online_state.SqliteState(Path(where))
        if kind == "sqlite"
        else online_state.RedisState(where)
    )
    times, i = [], 0
    while not stop.is_set():
        t = T0 + 7 * DAY_US + i
        start = time.perf_counter()
        state.record(
            SPEC.space, f'"S{i % 500}"', f"S{i}", [t, 1.0, "M1"], t - 7 * DAY_US, 7 * DAY_US
        )
        times.append((time.perf_counter() - start) * 1000)
        ready.set()
        i += 1
        time.sleep(0.001)
    out.put((max(times) if times else 0.0, statistics.median(times) if times else 0.0, len(times)))


class InProcess(threading.Thread):
    """A request path in the replaying process (the event loop of the worker whose sync
    thread replays): record() on the same store object every millisecond; its latencies."""

    def __init__(self, state) -> None:
        super().__init__(daemon=True)
        self.state, self.stop, self.times = state, threading.Event(), []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            t = T0 + 7 * DAY_US + i
            start = time.perf_counter()
            self.state.record(
                SPEC.space, f'"P{i % 500}"', f"P{i}", [t, 1.0, "M1"], t - 7 * DAY_US, 7 * DAY_US
            )
            self.times.append((time.perf_counter() - start) * 1000)
            i += 1
            time.sleep(0.001)

    def summary(self) -> dict:
        t = sorted(self.times) or [0.0]
        return {
            "inproc_p50_ms": round(statistics.median(t), 3),
            "inproc_p99_ms": round(t[int(len(t) * 0.99)], 2),
            "inproc_max_ms": round(t[-1], 1),
            "inproc_requests": len(self.times),
        }


def run(kind: str, where: str, data: bytes, n: int) -> dict:
    state = (
        online_state.SqliteState(Path(where))
        if kind == "sqlite"
        else online_state.RedisState(where)
    )
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
    worker = ctx.Process(target=_serve, args=(kind, where, ready, stop, out))
    worker.start()
    ready.wait(60)
    time.sleep(0.5)  # the worker is recording
    probe = InProcess(state)
    probe.start()
    start = time.perf_counter()
    # columns_of: the columnar decoding (events_of where it is not there: an older checkout)
    events = getattr(window_bootstrap, "columns_of", window_bootstrap.events_of)(data, SPEC)
    parsed = time.perf_counter() - start
    added = window_bootstrap.replay(state, SPEC, events)
    total = time.perf_counter() - start
    probe.stop.set()
    probe.join()
    again = time.perf_counter()
    assert window_bootstrap.replay(state, SPEC, events) == 0  # idempotent
    second = time.perf_counter() - again
    time.sleep(0.3)
    stop.set()
    slowest, p50, calls = out.get(timeout=30)
    worker.join()
    assert added == n, (added, n)
    return {
        "store": kind,
        "events": n,
        "parse_s": round(parsed, 3),
        "replay_s": round(total, 3),
        "events_per_s": int(n / total),
        "second_replay_s": round(second, 3),
        "request_p50_ms": round(p50, 3),
        "request_max_ms": round(slowest, 1),
        "requests": calls,
        **probe.summary(),
    }


def one_by_one(kind: str, where: str, data: bytes) -> float:
    """Seconds per event through record() (what a bootstrap without the bulk form costs)."""
    state = (
        online_state.SqliteState(Path(where))
        if kind == "sqlite"
        else online_state.RedisState(where)
    )
    events = window_bootstrap.events_of(data, SPEC)
    start = time.perf_counter()
    window_bootstrap.replay(windows_only(state), SPEC, events)
    return (time.perf_counter() - start) / len(events)


class windows_only:  # noqa: N801 - a store without record_many
    def __init__(self, state) -> None:
        self.state = state

    def record(self, *args):
        return self.state.record(*args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--one-by-one", type=int, default=20_000)
    ap.add_argument("--stores", nargs="+", default=["sqlite", "redis"])
    ap.add_argument("--chunk", type=int, help="events per bulk chunk (default: BULK_CHUNK)")
    args = ap.parse_args()
    if args.chunk:
        online_state.BULK_CHUNK = args.chunk
    print({"bulk_chunk": online_state.BULK_CHUNK}, flush=True)
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp) / "redis") as url:
        for n in args.n:
            data = snapshot(n)
            if "sqlite" in args.stores:
                print(run("sqlite", f"{tmp}/s{n}.sqlite", data, n), flush=True)
            if "redis" in args.stores:
                import redis

                redis.Redis.from_url(url).flushdb()
                print(run("redis", url, data, n), flush=True)
        if not args.one_by_one:
            return
        data = snapshot(args.one_by_one)
        per = one_by_one("sqlite", f"{tmp}/one.sqlite", data)
        print({"store": "sqlite", "record() one by one, µs/event": round(per * 1e6, 1)})
        import redis

        redis.Redis.from_url(url).flushdb()
        per = one_by_one("redis", url, data)
        print({"store": "redis", "record() one by one, µs/event": round(per * 1e6, 1)})


if __name__ == "__main__":
    main()
