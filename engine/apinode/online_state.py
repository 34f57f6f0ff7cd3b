"""The online state of windowed features: each key's recent events, shared by the API node's
workers (embedded SQLite, one host) or replicas (Redis, several hosts).

A store implements :class:`engine.project.windows.StateStore`: ``record`` adds an event once
per (key, event id) (a retried request, or a repeated event id, changes nothing), drops the
key's events older than the longest window before it, and returns the key's events, in one
step: one SQLite transaction, or one ``EVALSHA`` of a Lua script in Redis. The features are
computed from what it returns (:func:`engine.project.windows.compute`), counting only events
strictly before the request's own time, so the answer of a retry is the answer of the first
try. ``record_batch`` does the same for the records of a ``predict-multi`` in one step (one
SQLite transaction, one Redis pipeline). State nobody touched for the longest window expires
(Redis: the key's TTL; SQLite: a sweep at most every :data:`SWEEP_SECONDS` per process, in a
thread of its own, never in a request).

*Decision:* one key's events are kept whole (time and the aggregated values), not running
aggregates: "strictly before t" and windows ending at any t then come out exactly as batch
computes them, whatever order same-time or late events arrive in, and a key holds only its
events of the longest window (typically a few to a few hundred).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import NodalError
from engine.core.settings import Settings
from engine.project.windows import oldest_keep

FILE = "online_state.sqlite"
# The SQLite sweep of expired events: once when a process first uses the store, then every
# SWEEP_SECONDS, in a daemon thread with a connection of its own; each DELETE transaction
# covers at most SWEEP_KEYS keys (the write lock stays short for the serving workers).
SWEEP_SECONDS = 60.0
SWEEP_KEYS = 500
# Events per SQLite transaction / Redis pipeline of a bulk record (a bootstrap): ~5 ms of
# SQLite's write lock each, or of Redis's time (bench/bench_window_bootstrap.py: 2,500 and
# 5,000 replay as fast; the smaller keeps a request of the same worker under ~10 ms).
BULK_CHUNK = 2500
# Between two SQLite transactions of a bulk record, at least: a serving worker waiting for
# the write lock (SQLite's busy handler sleeps and retries) gets it instead of the next chunk.
BULK_PAUSE_SECONDS = 0.005


class StateStoreUnavailable(NodalError):
    """The online state store cannot be reached: the request is answered 503 (retry it)."""

    status, error_type = 503, "StateStoreUnavailable"

    def __init__(self, what: str) -> None:
        self.message = f"the online state store is unavailable ({what})"
        super().__init__(self.message)


class OnlineStoreError(NodalError):
    """NODAL_ONLINE_STORE_URL is not a store nodal can use; the message says why."""


def _dumps(event: list[Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


@dataclass(frozen=True)
class EventColumns:
    """Many events for a bulk record, as columns of equal length: each key's text (as
    :func:`engine.project.windows.key_text` writes it), each event id, time (µs) and JSON
    text ``[t_us, *values]``. Python lists, or pyarrow arrays (a bootstrap decodes its
    snapshot into those without a Python object per value; :meth:`rows` turns one chunk at a
    time into Python values)."""

    keys: Sequence[Any]
    ids: Sequence[Any]
    times: Sequence[Any]
    texts: Sequence[Any]

    def __len__(self) -> int:
        return len(self.keys)

    def rows(self, start: int, stop: int) -> tuple[list[str], list[str], list[int], list[str]]:
        """The events ``start:stop`` as four Python lists."""
        out = []
        for col in (self.keys, self.ids, self.times, self.texts):
            part = col[start:stop]
            out.append(part.to_pylist() if hasattr(part, "to_pylist") else list(part))
        return out[0], out[1], out[2], out[3]

    @classmethod
    def of(cls, events: Sequence[tuple[str, str, list[Any]]]) -> EventColumns:
        """From ``(key text, event id, [t_us, *values])`` tuples."""
        return cls(
            [e[0] for e in events],
            [e[1] for e in events],
            [e[2][0] for e in events],
            [_dumps(e[2]) for e in events],
        )


def _loads(events: list[str]) -> list[list[Any]]:
    """Many events' JSON in one parse."""
    return json.loads("[" + ",".join(events) + "]")


def _decoded(held: dict[str, list[tuple[str, str]]]) -> dict[str, list[tuple[str, list[Any]]]]:
    """(id, JSON text) per key → (id, event), all the JSON in one parse."""
    events = iter(_loads([text for rows in held.values() for _, text in rows]))
    return {key: [(i, next(events)) for i, _ in rows] for key, rows in held.items()}


def _start_sweeper(state: SqliteState) -> None:
    """A daemon thread sweeping ``state`` now and every :data:`SWEEP_SECONDS` (read at each
    turn) while the state exists (it holds only a weak reference) in this process."""
    ref = weakref.ref(state)
    pid = os.getpid()

    def run() -> None:
        while True:
            target = ref()
            if target is None or target._pid != pid:
                return
            with contextlib.suppress(sqlite3.Error):  # busy or gone: the next turn tries again
                target.swept += target.sweep()
            del target
            time.sleep(SWEEP_SECONDS)

    threading.Thread(target=run, name="nodal-state-sweep", daemon=True).start()


class SqliteState:
    """Embedded store: one SQLite file in WAL mode under the API node's home, shared by every
    worker process of that home (a connection per process, opened on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._con: sqlite3.Connection | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self.swept = 0  # events the sweeper of this process deleted (for checks and tests)

    def _connect(self) -> sqlite3.Connection:
        if self._con is None or self._pid != os.getpid():  # never a connection across fork
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA busy_timeout = 5000")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")  # a killed process loses nothing
            con.execute(
                "CREATE TABLE IF NOT EXISTS window_events (space TEXT NOT NULL, key TEXT NOT "
                "NULL, id TEXT NOT NULL, t INTEGER NOT NULL, event TEXT NOT NULL, expires REAL "
                "NOT NULL, PRIMARY KEY (space, key, id)) WITHOUT ROWID"
            )
            # No index on ``expires``: it cost a page per request's commit; the sweep (off the
            # request path) scans instead. A file of an older nodal loses it.
            con.execute("DROP INDEX IF EXISTS window_events_expiry")
            con.execute(
                "CREATE TABLE IF NOT EXISTS window_bootstraps (space TEXT NOT NULL, tag TEXT NOT "
                "NULL, state TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (space, tag))"
            )
            self._con, self._pid = con, os.getpid()
            _start_sweeper(self)
        return self._con

    def sweep(self, now: float | None = None) -> int:
        """Delete the events whose TTL passed (``now``: time.time()); how many. The expired
        keys are found by a read (no lock: WAL), then deleted :data:`SWEEP_KEYS` keys per
        short write transaction, on a connection of its own (not under ``_lock``)."""
        now = time.time() if now is None else now
        deleted = 0
        con = sqlite3.connect(  # mode=rw: never creates a file that is gone
            f"{self.path.resolve().as_uri()}?mode=rw",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            con.execute("PRAGMA busy_timeout = 5000")
            keys = con.execute(
                "SELECT DISTINCT space, key FROM window_events WHERE expires < ?", (now,)
            ).fetchall()
            for start in range(0, len(keys), SWEEP_KEYS):
                con.execute("BEGIN IMMEDIATE")
                try:
                    for space, key in keys[start : start + SWEEP_KEYS]:
                        deleted += con.execute(
                            "DELETE FROM window_events WHERE space = ? AND key = ? AND expires < ?",
                            (space, key, now),
                        ).rowcount
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        finally:
            con.close()
        return deleted

    def record(
        self, space: str, key: str, event_id: str, event: list[Any], keep_from_us: int, ttl_us: int
    ) -> list[list[Any]]:
        now = time.time()
        try:
            with self._lock:
                con = self._connect()
                con.execute("BEGIN IMMEDIATE")
                try:
                    con.execute(
                        "INSERT OR IGNORE INTO window_events VALUES (?, ?, ?, ?, ?, ?)",
                        (space, key, event_id, event[0], _dumps(event), now + ttl_us / 1e6),
                    )
                    rows = con.execute(
                        "SELECT t, event FROM window_events WHERE space = ? AND key = ?",
                        (space, key),
                    ).fetchall()
                    if any(r[0] < keep_from_us for r in rows):  # only then a delete
                        con.execute(
                            "DELETE FROM window_events WHERE space = ? AND key = ? AND t < ?",
                            (space, key, keep_from_us),
                        )
                        rows = [r for r in rows if r[0] >= keep_from_us]
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None
        return _loads([r[1] for r in rows])

    def record_batch(
        self, space: str, batch: Sequence[tuple[str, str, list[Any], int]], ttl_us: int
    ) -> dict[str, list[tuple[str, list[Any]]]]:
        """Many records in one transaction (see ``StateStore``): per key its events before
        the batch from the batch's oldest keep-from on, as (id, event)."""
        keep = oldest_keep(batch)
        now = time.time()
        expires = now + ttl_us / 1e6
        held: dict[str, list[tuple[str, str]]] = {}
        try:
            with self._lock:
                con = self._connect()
                con.execute("BEGIN IMMEDIATE")
                try:
                    for key, keep_from in keep.items():
                        rows = con.execute(
                            "SELECT id, t, event FROM window_events WHERE space = ? AND key = ?",
                            (space, key),
                        ).fetchall()
                        if any(r[1] < keep_from for r in rows):
                            con.execute(
                                "DELETE FROM window_events WHERE space = ? AND key = ? AND t < ?",
                                (space, key, keep_from),
                            )
                            rows = [r for r in rows if r[1] >= keep_from]
                        held[key] = [(r[0], r[2]) for r in rows]
                    con.executemany(
                        "INSERT OR IGNORE INTO window_events VALUES (?, ?, ?, ?, ?, ?)",
                        [(space, k, i, e[0], _dumps(e), expires) for k, i, e, _ in batch],
                    )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None
        return _decoded(held)

    def _bulk_connection(self) -> sqlite3.Connection:
        """A connection of its own for a bulk record: its temporary table is filled outside
        the write lock (and outside ``_lock``), without touching the serving connection's
        transactions."""
        self._connect()  # the file and its tables exist
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA busy_timeout = 5000")
        con.execute("PRAGMA synchronous = NORMAL")
        con.execute("PRAGMA temp_store = MEMORY")
        # Its commits never copy the WAL into the file under the write lock: it checkpoints
        # (PASSIVE: nobody waits) between two chunks, so serving commits rarely find a WAL
        # to checkpoint either.
        con.execute("PRAGMA wal_autocheckpoint = 0")
        con.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bulk (key TEXT NOT NULL, id TEXT NOT NULL, t INTEGER "
            "NOT NULL, event TEXT NOT NULL)"
        )
        return con

    def record_many(self, space: str, events: EventColumns, window_us: int, ttl_us: int) -> int:
        """Add many events at once, each once per (key, id) like :meth:`record`, except one
        the key's newest event has moved out of its window (``window_us``, the longest: a
        request trimmed it, it never counts again). Returns how many were new.

        Per :data:`BULK_CHUNK` events: the rows go into a temporary table of a connection of
        its own (no lock held), then one ``INSERT … SELECT`` (C only, the GIL released) in a
        short write transaction under this process's lock; then the replay pauses as long as
        it held the write lock (at least :data:`BULK_PAUSE_SECONDS`), so the serving workers
        of every process of this home, whose writes wait meanwhile, get the store at least
        half of the time."""
        added = 0
        con = None
        try:
            con = self._bulk_connection()
            for start in range(0, len(events), BULK_CHUNK):
                keys, ids, times, texts = events.rows(start, start + BULK_CHUNK)
                con.execute("BEGIN")  # touches the temporary table only: no lock on the file
                con.execute("DELETE FROM temp.bulk")
                con.executemany(
                    "INSERT INTO temp.bulk VALUES (?, ?, ?, ?)",
                    zip(keys, ids, times, texts, strict=True),
                )
                con.execute("COMMIT")
                expires = time.time() + ttl_us / 1e6
                with self._lock:
                    began = time.perf_counter()
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        added += con.execute(
                            "INSERT OR IGNORE INTO main.window_events SELECT ?, b.key, b.id, b.t, "
                            "b.event, ? FROM temp.bulk b WHERE NOT EXISTS (SELECT 1 FROM "
                            "main.window_events w WHERE w.space = ? AND w.key = b.key AND w.t > "
                            "b.t + ?)",
                            (space, expires, space, window_us),
                        ).rowcount
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    held = time.perf_counter() - began
                con.execute("PRAGMA wal_checkpoint(PASSIVE)")
                time.sleep(max(BULK_PAUSE_SECONDS, held))  # waiting writers take the lock now
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None
        finally:
            if con is not None:
                con.close()
        return added

    def claim_bootstrap(self, space: str, tag: str, lease_s: float) -> bool:
        """Whether this caller should replay snapshot ``tag`` into ``space``: not done yet,
        and nobody else's claim younger than ``lease_s`` (then it is claimed for the caller)."""
        now = time.time()
        try:
            with self._lock:
                con = self._connect()
                con.execute("BEGIN IMMEDIATE")
                try:
                    row = con.execute(
                        "SELECT state, at FROM window_bootstraps WHERE space = ? AND tag = ?",
                        (space, tag),
                    ).fetchone()
                    mine = row is None or (row[0] == "claimed" and row[1] < now - lease_s)
                    if mine:
                        con.execute(
                            "INSERT OR REPLACE INTO window_bootstraps VALUES (?, ?, 'claimed', ?)",
                            (space, tag, now),
                        )
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None
        return mine

    def finish_bootstrap(self, space: str, tag: str, keep_s: float) -> None:
        """Mark snapshot ``tag`` replayed into ``space`` (an emptied store forgets it too)."""
        try:
            with self._lock:
                self._connect().execute(
                    "INSERT OR REPLACE INTO window_bootstraps VALUES (?, ?, 'done', ?)",
                    (space, tag, time.time()),
                )
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None

    def bootstrap_done(self, space: str, tag: str) -> bool:
        """Whether snapshot ``tag`` has been replayed into ``space`` (by any worker)."""
        try:
            with self._lock:
                row = (
                    self._connect()
                    .execute(
                        "SELECT state FROM window_bootstraps WHERE space = ? AND tag = ?",
                        (space, tag),
                    )
                    .fetchone()
                )
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None
        return row is not None and row[0] == "done"

    def release_bootstrap(self, space: str, tag: str) -> None:
        """Drop an unfinished claim (the replay failed before adding anything)."""
        try:
            with self._lock:
                self._connect().execute(
                    "DELETE FROM window_bootstraps WHERE space = ? AND tag = ? AND state = "
                    "'claimed'",
                    (space, tag),
                )
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"{self.path.name}: {exc}") from None

    def key_events(self, space: str) -> dict[str, int]:
        """How many events each key of ``space`` holds (for checks and tests)."""
        with self._lock:
            rows = self._connect().execute(
                "SELECT key, count(*) FROM window_events WHERE space = ? GROUP BY key", (space,)
            )
            return {k: int(n) for k, n in rows.fetchall()}


# KEYS[1]: the key's hash (field: event id, value: the event as JSON [t_us, ...values]).
# ARGV: event id, event, keep from (µs), TTL (ms). Add once, drop the old, refresh the TTL,
# return the key's events: one round trip, atomic.
_LUA = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local keep = tonumber(ARGV[3])
local out = {}
for i = 1, #all, 2 do
  local t = tonumber(string.match(all[i + 1], '^%[(%-?%d+)'))
  if t < keep then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i + 1]
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return out
"""


# A batch's records of one key (predict-multi): KEYS[1] the key's hash; ARGV[1] the batch's
# oldest keep-from (µs), ARGV[2] TTL (ms), then event id, event pairs in the batch's order.
# Drop the old, return what the key held (id, event, ...), then add each once, refresh the
# TTL: atomic for the key.
_LUA_BATCH = """
local all = redis.call('HGETALL', KEYS[1])
local keep = tonumber(ARGV[1])
local out = {}
for i = 1, #all, 2 do
  local t = tonumber(string.match(all[i + 1], '^%[(%-?%d+)'))
  if t < keep then
    redis.call('HDEL', KEYS[1], all[i])
  else
    out[#out + 1] = all[i]
    out[#out + 1] = all[i + 1]
  end
end
for i = 3, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return out
"""


# Bulk (a bootstrap): KEYS[1] the key's hash; ARGV[1] TTL (ms), ARGV[2] the longest window
# (µs), then event id, event pairs. An event the key's newest one moved out of its window (a
# request trimmed it) is not added back.
_LUA_MANY = """
local newest = nil
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local t = tonumber(string.match(v, '^%[(%-?%d+)'))
  if newest == nil or t > newest then newest = t end
end
local window = tonumber(ARGV[2])
local added = 0
for i = 3, #ARGV, 2 do
  local t = tonumber(string.match(ARGV[i + 1], '^%[(%-?%d+)'))
  if newest == nil or t + window >= newest then
    added = added + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return added
"""


class RedisState:
    """Redis: one hash per (declaration, key); one ``EVALSHA`` per scored event. Every key
    a request touches is one Redis key, so a Redis Cluster works too."""

    def __init__(self, url: str) -> None:
        import redis

        self._errors = (redis.RedisError, OSError)
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        except ValueError as exc:
            raise OnlineStoreError(f"NODAL_ONLINE_STORE_URL: {exc}") from None
        self.script = self.client.register_script(_LUA)
        self.script_many = self.client.register_script(_LUA_MANY)
        self.script_batch = self.client.register_script(_LUA_BATCH)

    def record(
        self, space: str, key: str, event_id: str, event: list[Any], keep_from_us: int, ttl_us: int
    ) -> list[list[Any]]:
        try:
            raw = self.script(
                keys=[f"nodal:win:{space}:{key}"],
                args=[event_id, _dumps(event), keep_from_us, max(1, ttl_us // 1000)],
            )
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None
        return _loads([r.decode() for r in raw])

    def record_batch(
        self, space: str, batch: Sequence[tuple[str, str, list[Any], int]], ttl_us: int
    ) -> dict[str, list[tuple[str, list[Any]]]]:
        """Many records in one pipeline (one round trip) of one ``EVALSHA`` per key (see
        ``StateStore``): per key its events before the batch, as (id, event). Each key is
        atomic; two keys of the batch are not atomic together (features are per key)."""
        keep = oldest_keep(batch)
        args: dict[str, list[Any]] = {k: [v, max(1, ttl_us // 1000)] for k, v in keep.items()}
        for key, event_id, event, _ in batch:
            args[key] += (event_id, _dumps(event))
        try:
            pipe = self.client.pipeline(transaction=False)
            for key, a in args.items():
                self.script_batch(keys=[self._hash(space, key)], args=a, client=pipe)
            answers = pipe.execute()
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None
        held = {
            key: [(raw[i].decode(), raw[i + 1].decode()) for i in range(0, len(raw), 2)]
            for key, raw in zip(args, answers, strict=True)
        }
        return _decoded(held)

    def _hash(self, space: str, key: str) -> str:
        return f"nodal:win:{space}:{key}"

    def record_many(self, space: str, events: EventColumns, window_us: int, ttl_us: int) -> int:
        """Add many events at once, each once per (key, id) like :meth:`record` (not one the
        key's newest event has moved out of its ``window_us``): one ``EVALSHA`` per key and
        :data:`BULK_CHUNK` events (HSETNX each event, then PEXPIRE), each chunk one pipeline
        (one round trip, not atomic together: a request in between sees some of them, as it
        would in serving; Redis serves other clients between two scripts)."""
        ttl_ms = max(1, ttl_us // 1000)
        sha = self.script_many.sha
        added = 0
        try:
            self.client.script_load(_LUA_MANY)  # once per bulk: EVALSHA in pipelines needs it
            for start in range(0, len(events), BULK_CHUNK):
                keys, ids, _, texts = events.rows(start, start + BULK_CHUNK)
                by_key: dict[str, list[str]] = {}
                for key, event_id, text in zip(keys, ids, texts, strict=True):
                    args = by_key.get(key)
                    if args is None:
                        args = by_key[key] = []
                    args.append(event_id)
                    args.append(text)
                pipe = self.client.pipeline(transaction=False)
                for key, args in by_key.items():
                    pipe.evalsha(sha, 1, self._hash(space, key), ttl_ms, window_us, *args)
                added += sum(pipe.execute())
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None
        return int(added)

    def claim_bootstrap(self, space: str, tag: str, lease_s: float) -> bool:
        """As :meth:`SqliteState.claim_bootstrap`: one ``SET NX EX`` (a claim expires)."""
        try:
            return bool(
                self.client.set(
                    f"nodal:winboot:{space}:{tag}", "claimed", nx=True, ex=max(1, int(lease_s))
                )
            )
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None

    def finish_bootstrap(self, space: str, tag: str, keep_s: float) -> None:
        try:
            self.client.set(f"nodal:winboot:{space}:{tag}", "done", ex=max(1, int(keep_s)))
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None

    def bootstrap_done(self, space: str, tag: str) -> bool:
        """Whether snapshot ``tag`` has been replayed into ``space`` (by any replica)."""
        try:
            return self.client.get(f"nodal:winboot:{space}:{tag}") == b"done"
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None

    def release_bootstrap(self, space: str, tag: str) -> None:
        """Drop an unfinished claim (the replay failed before adding anything)."""
        try:
            key = f"nodal:winboot:{space}:{tag}"
            if self.client.get(key) == b"claimed":
                self.client.delete(key)
        except self._errors as exc:
            raise StateStoreUnavailable(type(exc).__name__) from None

    def key_events(self, space: str) -> dict[str, int]:
        """How many events each key of ``space`` holds (for checks and tests)."""
        prefix = f"nodal:win:{space}:"
        return {
            k.decode()[len(prefix) :]: int(self.client.hlen(k))
            for k in self.client.scan_iter(match=prefix + "*", count=1000)
        }


def open_state(settings: Settings, node_home: Path) -> SqliteState | RedisState:
    """The store ``NODAL_ONLINE_STORE_URL`` names (redis://, rediss://, unix://), else the
    embedded one in ``node_home``."""
    url = settings.online_store_url.strip()
    if not url:
        return SqliteState(Path(node_home) / FILE)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisState(url)
    raise OnlineStoreError(
        "NODAL_ONLINE_STORE_URL must be redis://host:port/db (or rediss://, unix://) or empty "
        "(the embedded store)"
    )
