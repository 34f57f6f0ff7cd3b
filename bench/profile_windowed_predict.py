"""Where a windowed ``predict`` spends its time, in one process (no HTTP): the fraud
example's endpoint as ``nodal serve`` loads it (compiled model, windows in the embedded
SQLite store of the node's home), called in a loop.

Times, per call (median of ``--repeat`` batches of ``--n`` calls):

- the whole ``PredictionEndpoint.predict``: the same transaction (re-read), a new one each
  call (insert, trim, read), and with the windows in this process's memory instead
  (``MemoryState``: what the state store costs) and without the windows join at all;
- its pieces: request typing, ``SqliteState.record`` alone (new events), the JSON decoding
  of the events it returns, ``windows.compute`` on a card's history, the feature recipe,
  the model;
- sketches of cheaper stores (not nodal's code: proposals, same semantics for one key's
  events): the same SQL with the key's events in one row, and a process-local cache of the
  key's events checked by SQLite's ``PRAGMA data_version``.

Then a cProfile of the fresh-transaction loop (top functions by own time).

``--ab``: only the figures an A/B of a change compares, at steady state (first 12,000 new
transactions: every card's 7-day window full), in ``--rounds`` interleaved rounds: a new
transaction per ``predict`` (mean µs per call over ``--n`` calls), ``predict_multi`` of 1,000
new records and of the same record ×1,000 (median ms of 5 calls), after ``gc.freeze()`` as
``nodal serve`` does. Run it on both sides of a change (e.g. the code of ``git archive HEAD``
with this file copied in) and compare, with the load averages it prints.

    flock /tmp/nodal-bench.lock python bench/profile_windowed_predict.py [--n 5000] [--ab]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_serving import TRANSACTION, fresh_plan, load_average, prepare, state_of  # noqa: E402
from engine.apinode import online_state  # noqa: E402
from engine.project import feature_sql, windows  # noqa: E402
from nodal_demo import demo  # noqa: E402


def per_call_us(fn, n: int, repeat: int) -> float:  # noqa: ANN001
    """Median over ``repeat`` batches of the µs per call of ``fn(i)``, i counting on."""
    i = 0
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(i)
            i += 1
        out.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(out)


class RowPerKey:
    """Sketch: a key's events as one JSON array in one row (read, change, write back in one
    transaction), instead of one row per event."""

    def __init__(self, path: Path) -> None:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute(
            "CREATE TABLE IF NOT EXISTS keys (space TEXT, key TEXT, events TEXT, expires REAL, "
            "PRIMARY KEY (space, key)) WITHOUT ROWID"
        )
        self.con = con

    def record(self, space, key, event_id, event, keep_from_us, ttl_us):  # noqa: ANN001, ANN201
        con = self.con
        con.execute("BEGIN IMMEDIATE")
        row = con.execute(
            "SELECT events FROM keys WHERE space = ? AND key = ?", (space, key)
        ).fetchone()
        held = json.loads(row[0]) if row else {}
        if event_id not in held or any(e[0] < keep_from_us for e in held.values()):
            held.setdefault(event_id, event)
            held = {i: e for i, e in held.items() if e[0] >= keep_from_us}
            con.execute(
                "INSERT OR REPLACE INTO keys VALUES (?, ?, ?, ?)",
                (space, key, json.dumps(held, separators=(",", ":")), time.time() + ttl_us / 1e6),
            )
        con.execute("COMMIT")
        return list(held.values())


class CachedSqlite(online_state.SqliteState):
    """Sketch: SqliteState keeping each key's rows in this process too. ``PRAGMA data_version``
    (one call, no I/O when nobody else wrote) tells whether another connection (another
    worker) committed since this one's last transaction; only then is the cache dropped.
    Inside ``BEGIN IMMEDIATE`` (the write lock) the check is exact. The read of the key's
    rows is skipped when cached; the insert and the commit remain."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._cache: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
        self._version = None

    def record(self, space, key, event_id, event, keep_from_us, ttl_us):  # noqa: ANN001, ANN201
        now = time.time()
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        version = con.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._cache.clear()
            self._version = version
        rows = self._cache.get((space, key))
        if rows is None:
            rows = {
                i: (t, e)
                for i, t, e in con.execute(
                    "SELECT id, t, event FROM window_events WHERE space = ? AND key = ?",
                    (space, key),
                )
            }
            self._cache[(space, key)] = rows
        if event_id not in rows:
            text = online_state._dumps(event)
            con.execute(
                "INSERT OR IGNORE INTO window_events VALUES (?, ?, ?, ?, ?, ?)",
                (space, key, event_id, event[0], text, now + ttl_us / 1e6),
            )
            rows[event_id] = (event[0], text)
        if any(t < keep_from_us for t, _ in rows.values()):
            con.execute(
                "DELETE FROM window_events WHERE space = ? AND key = ? AND t < ?",
                (space, key, keep_from_us),
            )
            for i in [i for i, (t, _) in rows.items() if t < keep_from_us]:
                del rows[i]
        con.execute("COMMIT")
        return online_state._loads([e for _, e in rows.values()])


def ab(ep, fresh, n: int, rounds: int) -> None:  # noqa: ANN001
    """The A/B figures: predict (new transaction), predict_multi of 1,000 new records and of
    the same record ×1,000."""
    for i in range(12_000):  # steady state
        ep.predict(fresh(i))

    def loop() -> float:
        t0 = time.perf_counter()
        for i in range(n):
            ep.predict(fresh(i))
        return (time.perf_counter() - t0) / n * 1e6

    def multi(same: bool) -> float:
        out = []
        for _ in range(5):
            items = [{"features": TRANSACTION if same else fresh(0)} for _ in range(1000)]
            t0 = time.perf_counter()
            ep.predict_multi(items)
            out.append((time.perf_counter() - t0) * 1000)
        return statistics.median(out)

    res: dict[str, list[float]] = {
        "predict, new transaction (µs, mean)": [],
        "predict_multi, 1,000 new records (ms, median of 5)": [],
        "predict_multi, same record x1,000 (ms, median of 5)": [],
    }
    for r in range(rounds):
        for name, fn in zip(res, (loop, lambda: multi(False), lambda: multi(True)), strict=True):
            res[name].append(fn())
        print(f"round {r + 1} done; load average {load_average()}", flush=True)
    for name, vals in res.items():
        rounds_text = ", ".join(f"{v:.1f}" for v in vals)
        print(f"{name:<54} median {statistics.median(vals):8.1f}  (rounds {rounds_text})")
    print(f"load average {load_average()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="calls per batch")
    parser.add_argument("--repeat", type=int, default=5, help="batches (median kept)")
    parser.add_argument("--ab", action="store_true", help="only the A/B figures (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="--ab: interleaved rounds")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    tmp = Path(tempfile.mkdtemp(prefix="nodal-profile-"))
    print(f"preparing the fraud example in {tmp} …", flush=True)
    _, env, loaded = prepare(tmp)
    ep = loaded.endpoints[demo.ENDPOINT]
    live, state = state_of(loaded)
    spec = live.spec
    cards, base_s, step_s = fresh_plan(Path(env["NODAL_DATA_DIR"]))
    base = datetime(1970, 1, 1) + timedelta(seconds=base_s)
    counter = {"n": 0}

    def fresh(i: int) -> dict:
        n = counter["n"]
        counter["n"] += 1
        return {
            **TRANSACTION,
            "transaction_id": f"T-fresh-{n}",
            "card_id": cards[n % len(cards)],
            "ts": (base + timedelta(seconds=int(n * step_s))).isoformat(),
        }

    n, rep = args.n, args.repeat
    print(f"load average {load_average()}", flush=True)
    if args.ab:
        gc.freeze()  # as `nodal serve` does after start-up (engine/apinode/http/app.py)
        ab(ep, fresh, n, args.rounds)
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    ep.predict(TRANSACTION)
    results: dict[str, float] = {}
    results["predict, same transaction (re-read)"] = per_call_us(
        lambda i: ep.predict(TRANSACTION), n, rep
    )
    results["predict, a new transaction each call"] = per_call_us(
        lambda i: ep.predict(fresh(i)), n, rep
    )
    # Pieces of a new transaction's predict.
    typed = [
        feature_sql.typed_record(ep.plan.request_fields, fresh(i)) for i in range(3 * n * rep + 1)
    ]
    results["  typing the request (typed_record)"] = per_call_us(
        lambda i: feature_sql.typed_record(ep.plan.request_fields, TRANSACTION), n, rep
    )
    results["  card_profiles lookup (KeyedTable.find)"] = per_call_us(
        lambda i: [t.find(typed[i]) for t in ep.enrichments if t is not live], n, rep
    )
    histories = []

    def record(i: int) -> None:
        rec = typed[i]
        t_us = windows.epoch_us(rec[spec.time])
        histories.append(
            (
                t_us,
                [rec.get(c) for c in spec.values],
                state.record(
                    spec.space,
                    windows.key_text(rec[spec.key]),
                    str(rec[spec.id]),
                    [t_us, *[rec.get(c) for c in spec.values]],
                    t_us - spec.longest_us,
                    spec.longest_us,
                ),
            )
        )

    results["  SqliteState.record (insert, trim, read, commit; new events)"] = per_call_us(
        record, n, rep
    )
    sizes = [len(h) for _, _, h in histories]
    # The tail: each record call timed alone, with SQLite's automatic WAL checkpoint (every
    # 1,000 pages, in the committing call, with fsync) and without it.
    tails = {}
    for auto in (1000, 0):
        state._connect().execute(f"PRAGMA wal_autocheckpoint = {auto}")
        spent = []
        for _ in range(n * rep):
            t0 = time.perf_counter()
            record(len(histories))
            spent.append((time.perf_counter() - t0) * 1e6)
        spent.sort()
        tails[auto] = (
            spent[len(spent) // 2],
            spent[int(len(spent) * 0.99)],
            spent[-1],
            sum(x > 1000 for x in spent),
        )
    state._connect().execute("PRAGMA wal_autocheckpoint = 1000")
    texts = [[online_state._dumps(e) for e in h] for _, _, h in histories]
    results["    of which the events' JSON decoding (_loads)"] = per_call_us(
        lambda i: online_state._loads(texts[i]), n, rep
    )
    results["  windows.compute (the card's history)"] = per_call_us(
        lambda i: windows.compute(spec, *histories[i]), n, rep
    )
    rows = tuple(t.find(typed[0]) or {} for t in ep.enrichments)
    results["  feature recipe (plan.compute)"] = per_call_us(
        lambda i: ep.plan.compute(typed[0], rows), n, rep
    )
    row = ep._row(TRANSACTION)
    results["  model (predict_proba, one row)"] = per_call_us(
        lambda i: ep.model.predict_proba(row, num_threads=1), n, rep
    )
    # The store alone, other ways.
    live.state = windows.MemoryState()
    results["predict, new transactions, windows in MemoryState"] = per_call_us(
        lambda i: ep.predict(fresh(i)), n, rep
    )
    sketch = RowPerKey(tmp / "row_per_key.sqlite")
    live.state = sketch
    results["predict, new transactions, sketch: one row per key"] = per_call_us(
        lambda i: ep.predict(fresh(i)), n, rep
    )
    live.state = CachedSqlite(state.path)
    results["predict, new transactions, sketch: cached rows + data_version"] = per_call_us(
        lambda i: ep.predict(fresh(i)), n, rep
    )
    saved = ep.enrichments
    ep.enrichments = [t for t in saved if t is not live]  # the windows' row: empty
    ep.enrichments.append(type("NoWindows", (), {"find": staticmethod(lambda r: None)})())
    results["predict, no windows (their features NULL)"] = per_call_us(
        lambda i: ep.predict(TRANSACTION), n, rep
    )
    ep.enrichments = saved
    live.state = state

    print(f"\n{'µs per call (median of ' + str(rep) + ' × ' + str(n) + ')':<66} {'µs':>7}")
    for name, us in results.items():
        print(f"{name:<66} {us:>7.1f}")
    for auto, (p50, p99, top, slow) in tails.items():
        print(
            f"SqliteState.record alone, wal_autocheckpoint = {auto}: p50 {p50:.0f} µs, "
            f"p99 {p99:.0f} µs, max {top:.0f} µs, {slow} of {n * rep} calls over 1 ms"
        )
    print(
        f"events per card returned by record: median {statistics.median(sizes)}, "
        f"max {max(sizes)}; load average {load_average()}"
    )

    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        ep.predict(fresh(i))
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
