"""The API node's query audit log, and its Prometheus metrics.

Every query a worker answers is one JSON line appended to the worker's current *segment*
file with a single ``os.write`` before the answer is sent: the line is in the kernel's page
cache when the client reads the answer, so a worker killed with SIGKILL loses none of the
queries it answered (a machine crash can lose the last seconds; ``fsync`` per request would
cost more than the whole prediction). There is no database write on the request path.

Layout under ``<home>/apinode/<infra>/querylog/``::

    segments/<host>-<pid>-<t>.jsonl   one writer each; the live one is flock'ed by its worker
    parquet/<segment>.parquet         compacted segments (column ``segment`` names the source)

A worker rotates its segment every ``ROTATE_SECONDS`` or ``ROTATE_RECORDS`` queries and
compacts every segment nobody holds (its own closed ones and those of dead workers) to
Parquet: write to a temporary name, rename, then delete the segment. :func:`scan_sql`
reads both and skips a segment whose Parquet already exists, so a reader never counts a
query twice, even if a compaction was killed between its rename and its delete.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from engine.core import home as layout
from engine.storage import datasets as ds

log = logging.getLogger("nodal.querylog")

ROTATE_SECONDS = 60.0
ROTATE_RECORDS = 100_000
MAX_FIELD_BYTES = 256 * 1024  # features/result larger than this are logged as a size marker

# Column name → DuckDB type, as Monitoring reads them (see docs/architecture.md).
JSON_COLUMNS = {
    "ts_us": "BIGINT",
    "service": "VARCHAR",
    "endpoint": "VARCHAR",
    "generation": "VARCHAR",
    "method": "VARCHAR",
    "status": "INTEGER",
    "error_type": "VARCHAR",
    "duration_us": "BIGINT",
    "n_records": "INTEGER",
    "features": "JSON",
    "context": "JSON",
    "result": "JSON",
    "worker": "VARCHAR",
}
_SELECT = (
    "make_timestamp(ts_us) AS ts, service, endpoint, generation, method, status, error_type, "
    "duration_us, n_records, CAST(features AS VARCHAR) AS features, "
    "CAST(context AS VARCHAR) AS context, CAST(result AS VARCHAR) AS result, worker"
)
_OUT_COLUMNS = (
    "ts, service, endpoint, generation, method, status, error_type, duration_us, n_records, "
    "features, context, result, worker"
)
_enc = msgspec.json.Encoder()


def querylog_dir(home: Path, infra_id: str) -> Path:
    return layout.apinode_home(home, infra_id) / "querylog"


def _sql_str(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _json_scan(glob: str) -> str:
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in JSON_COLUMNS.items()) + "}"
    return (
        f"read_json({_sql_str(glob)}, format='newline_delimited', columns={columns}, "
        "filename=true, ignore_errors=true)"
    )


def scan_sql(home: Path, infra_id: str) -> str | None:
    """A DuckDB table expression over every recorded query of ``infra_id``, or None.

    Columns: ts (TIMESTAMP, UTC), service, endpoint, generation, method, status (HTTP),
    error_type (NULL when OK), duration_us (server side), n_records, features, context,
    result (JSON text; arrays of ``n_records`` items for the ``*-multi`` and ``invocations``
    methods), worker.
    """
    root = querylog_dir(home, infra_id)
    has_parquet = any((root / "parquet").glob("*.parquet"))
    has_segments = any((root / "segments").glob("*.jsonl"))
    parts = []
    parquet = f"read_parquet({_sql_str(root / 'parquet' / '*.parquet')})"
    if has_parquet:
        parts.append(f"SELECT {_OUT_COLUMNS} FROM {parquet}")
    if has_segments:
        seg = "parse_filename(filename, true)"
        skip = (
            f" WHERE {seg} NOT IN (SELECT DISTINCT segment FROM {parquet})" if has_parquet else ""
        )
        parts.append(
            f"SELECT {_SELECT} FROM {_json_scan(str(root / 'segments' / '*.jsonl'))}{skip}"
        )
    if not parts:
        return None
    return "(" + " UNION ALL ".join(parts) + ")"


def _field(value: Any) -> Any:
    """``value`` as logged: as is, or a size marker when it is too large to keep."""
    if value is None:
        return None
    try:
        raw = _enc.encode(value)
    except (RecursionError, TypeError, OverflowError):
        return {"_unloggable": True}
    if len(raw) > MAX_FIELD_BYTES:
        return {"_truncated": True, "bytes": len(raw)}
    return msgspec.Raw(raw)


class QueryLog:
    """The audit log writer of one worker process (call from one thread: the event loop)."""

    def __init__(self, home: Path, infra_id: str) -> None:
        self.root = querylog_dir(home, infra_id)
        (self.root / "segments").mkdir(parents=True, exist_ok=True)
        (self.root / "parquet").mkdir(parents=True, exist_ok=True)
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        self.fd = -1
        self.segment: Path | None = None
        self._open_new()

    def _open_new(self) -> None:
        """Open a fresh segment, locked before it becomes visible, and make it current."""
        name = f"{self.worker}-{time.time_ns()}.jsonl"
        tmp = self.root / "segments" / f".tmp-{name}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by the kernel when this process dies
        os.rename(tmp, self.root / "segments" / name)
        old = self.fd
        self.fd, self.segment = fd, self.root / "segments" / name
        self.opened, self.count = time.monotonic(), 0
        if old >= 0:
            os.close(old)

    def record(
        self,
        *,
        service: str,
        endpoint: str,
        generation: str | None,
        method: str,
        status: int,
        error_type: str | None,
        duration_us: int,
        n_records: int,
        features: Any = None,
        context: Any = None,
        result: Any = None,
    ) -> None:
        """Append one query; returns once the line is in the OS (survives SIGKILL)."""
        entry = {
            "ts_us": time.time_ns() // 1000,
            "service": service,
            "endpoint": endpoint,
            "generation": generation,
            "method": method,
            "status": status,
            "error_type": error_type,
            "duration_us": duration_us,
            "n_records": n_records,
            "features": features,
            "context": context,
            "result": result,
            "worker": self.worker,
        }
        try:  # the common case in one encode: every field loggable, the line not too long
            line = _enc.encode(entry)
        except (RecursionError, TypeError, OverflowError):
            line = b""
        if not line or len(line) > MAX_FIELD_BYTES:
            for name in ("features", "context", "result"):
                entry[name] = _field(entry[name])
            line = _enc.encode(entry)
        os.write(self.fd, line + b"\n")
        self.count += 1
        if self.count >= ROTATE_RECORDS:
            self._open_new()

    def rotate_if_due(self, max_age: float = ROTATE_SECONDS) -> bool:
        if self.count and time.monotonic() - self.opened >= max_age:
            self._open_new()
            return True
        return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def compact(home: Path, infra_id: str) -> int:
    """Compact every segment no living worker holds to Parquet; return how many."""
    root = querylog_dir(home, infra_id)
    done = 0
    for seg in sorted((root / "segments").glob("*.jsonl")):
        try:
            fd = os.open(seg, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another worker compacted it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a living worker writes it
            if not seg.exists():
                continue
            target = root / "parquet" / f"{seg.stem}.parquet"
            if os.fstat(fd).st_size and not target.exists():
                _to_parquet(seg, target)
            seg.unlink(missing_ok=True)
            done += 1
        finally:
            os.close(fd)
    return done


PUBLISHED_RECORD = ".published"  # in parquet/: one name a line, the files already in the store


def publish_compacted(home: Path, infra_id: str, objects: Any) -> int:
    """Put compacted Parquet files into an S3 object store (``objects``, an
    :class:`engine.storage.objects.ObjectStore`) under their path relative to the home, for
    Monitoring on another host; return how many. Nothing is copied to the embedded store (the
    home). A file whose upload fails is tried again at the next call; the failure is logged
    once per call, without a traceback."""
    from engine.storage.objects import ObjectStoreError

    folder = querylog_dir(home, infra_id) / "parquet"
    if objects.local_path("apinode") is not None or not folder.is_dir():
        return 0
    record = folder / PUBLISHED_RECORD
    done = set(record.read_text().split()) if record.exists() else set()
    sent = 0
    for f in sorted(folder.glob("*.parquet")):
        if f.name in done:
            continue
        key = f.relative_to(home).as_posix()
        try:
            if not objects.exists(key):
                objects.put_file(key, f)
        except ObjectStoreError as exc:
            log.warning("query log not published to the object store (retried later): %s", exc)
            break
        done.add(f.name)
        sent += 1
    if sent:
        tmp = record.with_name(f".tmp-{record.name}-{os.getpid()}")
        tmp.write_text("".join(f"{name}\n" for name in sorted(done)))
        os.replace(tmp, record)
    return sent


def _to_parquet(seg: Path, target: Path) -> None:
    tmp = target.with_name(f".tmp-{target.name}")
    sql = (
        f"COPY (SELECT {_SELECT}, {_sql_str(seg.stem)} AS segment "
        f"FROM {_json_scan(str(seg))}) TO {_sql_str(tmp)} (FORMAT parquet, COMPRESSION zstd)"
    )
    try:
        with ds.session() as con:
            con.execute(sql)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --- Prometheus metrics --------------------------------------------------------------------

BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Request counters and a latency histogram per (service, endpoint, generation, ...).

    Each worker counts in memory and writes a snapshot under ``querylog/metrics/`` on every
    sync tick; ``/metrics`` adds the snapshots of the other workers of this home, so any
    worker answers for the whole node (counters of dead workers stay, as Prometheus expects
    counters to).
    """

    def __init__(self, home: Path, infra_id: str, worker: str) -> None:
        self.dir = querylog_dir(home, infra_id) / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.worker = worker
        # (service, endpoint, generation, method, status) → [count, sum_s, bucket counts...]
        self.series: dict[tuple[str, ...], list[float]] = {}

    def observe(
        self, service: str, endpoint: str, generation: str, method: str, status: int, seconds: float
    ) -> None:
        key = (service, endpoint, generation or "", method, str(status))
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = [0.0, 0.0] + [0.0] * len(BUCKETS_S)
        s[0] += 1
        s[1] += seconds
        i = bisect.bisect_left(BUCKETS_S, seconds)
        if i < len(BUCKETS_S):
            s[2 + i] += 1

    def snapshot(self) -> None:
        tmp = self.dir / f".tmp-{self.worker}.json"
        tmp.write_text(json.dumps([[list(k), v] for k, v in self.series.items()]))
        os.replace(tmp, self.dir / f"{self.worker}.json")

    def _merged(self) -> dict[tuple[str, ...], list[float]]:
        total: dict[tuple[str, ...], list[float]] = {k: list(v) for k, v in self.series.items()}
        for path in self.dir.glob("*.json"):
            if path.stem == self.worker or path.name.startswith(".tmp-"):
                continue
            try:
                rows = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for key, values in rows:
                acc = total.setdefault(tuple(key), [0.0] * len(values))
                for i, v in enumerate(values):
                    acc[i] += v
        return total

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        out = [
            "# HELP nodal_api_requests_total API queries answered, by status.",
            "# TYPE nodal_api_requests_total counter",
        ]
        merged = self._merged()
        hist: dict[tuple[str, ...], list[float]] = {}
        errors: dict[tuple[str, ...], float] = {}
        for (svc, ep, gen, method, status), v in sorted(merged.items()):
            labels = _labels(service=svc, endpoint=ep, generation=gen, method=method)
            out.append(f'nodal_api_requests_total{{{labels},status="{status}"}} {v[0]:g}')
            key = (svc, ep, gen, method)
            acc = hist.setdefault(key, [0.0] * len(v))
            for i, x in enumerate(v):
                acc[i] += x
            if int(status) >= 400:
                errors[key] = errors.get(key, 0.0) + v[0]
        out += [
            "# HELP nodal_api_errors_total API queries answered with a status >= 400.",
            "# TYPE nodal_api_errors_total counter",
        ]
        for key, n in sorted(errors.items()):
            out.append(f"nodal_api_errors_total{{{_labels(*key)}}} {n:g}")
        out += [
            "# HELP nodal_api_request_duration_seconds Server-side duration of API queries.",
            "# TYPE nodal_api_request_duration_seconds histogram",
        ]
        for key, v in sorted(hist.items()):
            labels = _labels(*key)
            cumulative = 0.0
            for bound, n in zip(BUCKETS_S, v[2:], strict=True):
                cumulative += n
                out.append(
                    f'nodal_api_request_duration_seconds_bucket{{{labels},le="{bound}"}} {cumulative:g}'
                )
            out.append(f'nodal_api_request_duration_seconds_bucket{{{labels},le="+Inf"}} {v[0]:g}')
            out.append(f"nodal_api_request_duration_seconds_sum{{{labels}}} {v[1]:.6f}")
            out.append(f"nodal_api_request_duration_seconds_count{{{labels}}} {v[0]:g}")
        return "\n".join(out) + "\n"


def _labels(service: str = "", endpoint: str = "", generation: str = "", method: str = "") -> str:
    pairs = {"service": service, "endpoint": endpoint, "generation": generation, "method": method}
    return ",".join(f'{k}="{_escape(v)}"' for k, v in pairs.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def read_queries(home: Path, infra_id: str, where: str = "") -> Iterable[dict[str, Any]]:
    """Every recorded query (optionally filtered by a SQL ``where``), oldest first."""
    table = scan_sql(home, infra_id)
    if table is None:
        return []
    frame = ds.query_df(f"SELECT * FROM {table} q {where} ORDER BY ts")
    return frame.astype(object).where(frame.notna(), None).to_dict("records")
