"""Datasets are folders of Parquet files, read and written through DuckDB.

Layout of a dataset folder:

* unpartitioned: ``<folder>/data.parquet``
* partitioned by day: ``<folder>/day=YYYY-MM-DD/data.parquet``

Every write goes to a staging name on the same filesystem and is moved into place with
``os.replace``; a partition (or an unpartitioned dataset) is exactly one file, so a reader
sees the old file or the new one, never half of one, and a killed writer leaves only
staging debris that no reader globs. DuckDB connections are in-memory and short-lived:
no process holds a database file open, so processes never wait on each other's locks.

A caller that must be able to stop work running in another thread (a scenario run being
aborted) opens an :func:`interrupt_scope`: every connection :func:`session` or :func:`write`
opens while it is current joins it, and ``scope.interrupt()`` stops their running
statements (DuckDB ``interrupt()``) and refuses new connections with :class:`Interrupted`;
work that is not DuckDB's (a Python recipe's child process) registers how to stop it with
:func:`stop_on_interrupt`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from engine.core.errors import NodalError

DATA_FILE = "data.parquet"
STAGING_DIR = ".staging"


class DatasetError(NodalError):
    """A dataset is missing, empty or unreadable; the message says which and why."""


class Interrupted(DatasetError):
    """The work was interrupted on request (its interrupt scope was interrupted)."""


class InterruptScope:
    """The DuckDB connections opened in one context, so another thread can interrupt them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: set[duckdb.DuckDBPyConnection] = set()
        self._stoppers: list[Callable[[], None]] = []
        self.interrupted = False

    def join(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self.interrupted:
                raise Interrupted("interrupted: no new DuckDB statement is started")
            self._connections.add(con)

    def leave(self, con: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            self._connections.discard(con)

    def interrupt(self) -> None:
        """Stop the statements running on the joined connections; refuse new connections.

        DuckDB forgets an interrupt when the next statement starts, so a caller keeps calling
        this until the interrupted work has ended.
        """
        with self._lock:
            self.interrupted = True
            for con in self._connections:
                con.interrupt()
            stoppers = list(self._stoppers)
        for stop in stoppers:
            stop()

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], None]) -> Iterator[None]:
        """Call ``stop`` at each interrupt while the block runs (e.g. kill a child process);
        refuse to start the block once interrupted."""
        with self._lock:
            if self.interrupted:
                raise Interrupted("interrupted: the work was not started")
            self._stoppers.append(stop)
        try:
            yield
        finally:
            with self._lock:
                self._stoppers.remove(stop)


_current_scope: contextvars.ContextVar[InterruptScope | None] = contextvars.ContextVar(
    "nodal_interrupt_scope", default=None
)


@contextlib.contextmanager
def interrupt_scope() -> Iterator[InterruptScope]:
    """Make a new :class:`InterruptScope` current for the connections opened inside."""
    scope = InterruptScope()
    token = _current_scope.set(scope)
    try:
        yield scope
    finally:
        _current_scope.reset(token)


@contextlib.contextmanager
def stop_on_interrupt(stop: Callable[[], None]) -> Iterator[InterruptScope | None]:
    """Call ``stop`` if the current interrupt scope is interrupted while the block runs, for
    work DuckDB does not do (a child process); yields the scope (None outside any)."""
    scope = _current_scope.get()
    if scope is None:
        yield None
        return
    with scope.stopping(stop):
        yield scope


def _connect() -> duckdb.DuckDBPyConnection:
    """An in-memory connection, joined to the current interrupt scope if there is one."""
    con = duckdb.connect(":memory:")
    scope = _current_scope.get()
    if scope is not None:
        try:
            scope.join(con)
        except Interrupted:
            con.close()
            raise
    return con


def _close(con: duckdb.DuckDBPyConnection) -> None:
    scope = _current_scope.get()
    if scope is not None:
        scope.leave(con)
    con.close()


@dataclass(frozen=True)
class DatasetRef:
    """Where a dataset lives and how it is laid out."""

    name: str
    path: Path
    partitioned_by: str | None = None

    @property
    def glob(self) -> str:
        if self.partitioned_by:
            return str(self.path / "*" / "*.parquet")
        return str(self.path / DATA_FILE)

    def partition_path(self, value: str) -> Path:
        return self.path / f"{self.partitioned_by}={value}"

    def exists(self) -> bool:
        if self.partitioned_by:
            return any(self.path.glob(f"{self.partitioned_by}=*/*.parquet"))
        return (self.path / DATA_FILE).exists()

    def partitions(self) -> list[str]:
        """Partition values present on disk, sorted."""
        if not self.partitioned_by or not self.path.exists():
            return []
        prefix = f"{self.partitioned_by}="
        return sorted(
            p.name[len(prefix) :]
            for p in self.path.iterdir()
            if p.is_dir() and p.name.startswith(prefix) and any(p.glob("*.parquet"))
        )


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def scan_sql(ref: DatasetRef, partitions: Sequence[str] | None = None) -> str:
    """A DuckDB table expression reading the dataset (optionally some partitions only)."""
    if not ref.exists():
        raise DatasetError(f"dataset {ref.name!r} has no data yet (looked in {ref.path})")
    if not ref.partitioned_by:
        return f"read_parquet({_sql_str(ref.glob)})"
    if partitions is None:
        files = ref.glob
        src = f"read_parquet({_sql_str(files)}, hive_partitioning=true, union_by_name=true)"
        return src
    present = set(ref.partitions())
    missing = [p for p in partitions if p not in present]
    if missing:
        raise DatasetError(
            f"dataset {ref.name!r} has no partition {', '.join(missing)} "
            f"(has {len(present)} partitions)"
        )
    if not partitions:
        raise DatasetError(f"no partition of dataset {ref.name!r} was asked for")
    files = (
        "["
        + ", ".join(_sql_str(str(ref.partition_path(p) / "*.parquet")) for p in partitions)
        + "]"
    )
    return f"read_parquet({files}, hive_partitioning=true, union_by_name=true)"


@contextlib.contextmanager
def session(
    views: Mapping[str, DatasetRef | tuple[DatasetRef, Sequence[str] | None]] | None = None,
    threads: int | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with one view per dataset name.

    ``views`` maps a SQL name to a dataset, or to ``(dataset, partitions)`` to restrict the
    view to some partitions. The connection is closed on exit.
    """
    con = _connect()
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        for name, spec in (views or {}).items():
            ref, parts = spec if isinstance(spec, tuple) else (spec, None)
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {scan_sql(ref, parts)}')
        yield con
    finally:
        _close(con)


def query_df(
    sql: str,
    views: Mapping[str, DatasetRef | tuple[DatasetRef, Sequence[str] | None]] | None = None,
    params: Sequence | None = None,
) -> pd.DataFrame:
    """Run one query over dataset views and return a pandas DataFrame."""
    with session(views) as con:
        return con.execute(sql, params or []).df()


def read_df(
    ref: DatasetRef, partitions: Sequence[str] | None = None, columns: Sequence[str] | None = None
) -> pd.DataFrame:
    cols = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    with session() as con:
        return con.sql(f"SELECT {cols} FROM {scan_sql(ref, partitions)}").df()


def schema(ref: DatasetRef, partition: str | None = None) -> dict[str, str]:
    """Column name → DuckDB type, as stored (of one partition if given)."""
    with session() as con:
        if partition is not None:
            src = f"read_parquet({_sql_str(str(ref.partition_path(partition) / '*.parquet'))})"
            if not list(ref.partition_path(partition).glob("*.parquet")):
                raise DatasetError(f"dataset {ref.name!r} has no partition {partition}")
        else:
            src = scan_sql(ref)
        rows = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    return {r[0]: r[1] for r in rows}


def _staging_dir(ref: DatasetRef) -> Path:
    staging = ref.path.parent / STAGING_DIR / f"{ref.name}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    return staging


def _install_file(staged: Path, target_dir: Path) -> None:
    """Move one staged Parquet file into ``target_dir/data.parquet`` atomically."""
    target_dir.mkdir(parents=True, exist_ok=True)
    os.replace(staged, target_dir / DATA_FILE)
    for other in target_dir.glob("*.parquet"):
        if other.name != DATA_FILE:
            other.unlink()


# Partition values written straight to ``<key>=<value>/``: those DuckDB's PARTITION_BY
# would name the same way (no character it escapes).
_PLAIN_PARTITION = re.compile(r"[0-9A-Za-z_][0-9A-Za-z_.-]*")


def _write_one_partition(
    con: duckdb.DuckDBPyConnection, ref: DatasetRef, source: str, value: str, staging: Path
) -> list[str] | None:
    """Write ``source`` as partition ``value`` in one staged file and install it.

    Returns the partitions written (``[]`` when ``source`` has no rows: nothing is
    installed, as the general path writes nothing then), or None when ``source`` holds a row
    of another partition (or ``value`` needs escaping): nothing was installed and the caller
    writes the general way. The same rows, columns and types as the general path.
    """
    if not _PLAIN_PARTITION.fullmatch(value):
        return None
    key = ref.partitioned_by
    staged = staging / DATA_FILE
    # error() stops the COPY at the first row of another partition (or a NULL key); the
    # marker tells that refusal from a failure of the query itself. Passing every column
    # through the CASE also keeps them all OPTIONAL in the file, as PARTITION_BY writes them
    # (a plain COPY marks columns it can prove non-null REQUIRED).
    marker = f"nodal-outside-partition-{uuid.uuid4().hex}"
    try:
        (rows,) = con.execute(
            f"COPY (SELECT CASE WHEN CAST({key} AS VARCHAR) = {_sql_str(value)} "
            f"THEN COLUMNS(* EXCLUDE ({key})) ELSE error({_sql_str(marker)}) END "
            f"FROM {source}) TO {_sql_str(str(staged))} (FORMAT parquet)"
        ).fetchone()
    except duckdb.Error as exc:
        if marker not in str(exc):
            raise
        staged.unlink(missing_ok=True)
        return None
    if not rows:
        return []
    _install_file(staged, ref.partition_path(value))
    return [value]


def write(
    ref: DatasetRef,
    data: pd.DataFrame | pa.Table | str,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    replace_all: bool = False,
    partitions: Sequence[str] | None = None,
) -> list[str]:
    """Write ``data`` (a DataFrame, Arrow table or SQL query on ``con``) into the dataset.

    Unpartitioned datasets are replaced as a whole. Partitioned datasets get every partition
    present in ``data`` replaced; other partitions are kept unless ``replace_all``.
    ``partitions`` says which partitions ``data`` is meant to hold (a build restricted to
    them): when it names one, the rows are written straight to that partition's staged file
    (no ``PARTITION_BY`` split, the daily case), checked on the way to all belong to it;
    data holding rows of other partitions is written the general way instead.
    Returns the partitions written (empty list for an unpartitioned dataset).
    """
    own = con is None
    con = con or _connect()
    staging = _staging_dir(ref)
    try:
        if isinstance(data, str):
            source = f"({data}\n)"  # the query may end with a -- comment
        else:
            con.register("__nodal_write_src", data)
            source = "__nodal_write_src"
        if not ref.partitioned_by:
            staged = staging / DATA_FILE
            con.execute(
                f"COPY (SELECT * FROM {source}) TO {_sql_str(str(staged))} (FORMAT parquet)"
            )
            _install_file(staged, ref.path)
            return []
        key = ref.partitioned_by
        if partitions is not None and len(partitions) == 1:
            single = _write_one_partition(con, ref, source, str(partitions[0]), staging)
            if single is not None:
                if replace_all:
                    for old in ref.partitions():
                        if old not in single:
                            shutil.rmtree(ref.partition_path(old))
                return single
        con.execute(
            f"COPY (SELECT * EXCLUDE ({key}), CAST({key} AS VARCHAR) AS {key} FROM {source}) "
            f"TO {_sql_str(str(staging / 'out'))} (FORMAT parquet, PARTITION_BY ({key}), "
            f"FILENAME_PATTERN 'part_{{i}}', WRITE_PARTITION_COLUMNS false)"
        )
        written: list[str] = []
        out = staging / "out"
        for part_dir in sorted(out.iterdir()) if out.exists() else []:
            files = sorted(part_dir.glob("*.parquet"))
            if len(files) > 1:
                merged = part_dir / "merged.parquet.tmp"
                globs = _sql_str(str(part_dir / "*.parquet"))
                con.execute(
                    f"COPY (SELECT * FROM read_parquet({globs})) TO {_sql_str(str(merged))} (FORMAT parquet)"
                )
                files = [merged]
            _install_file(files[0], ref.path / part_dir.name)
            written.append(part_dir.name.split("=", 1)[1])
        if replace_all:
            for old in ref.partitions():
                if old not in written:
                    shutil.rmtree(ref.partition_path(old))
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not isinstance(data, str):
            with contextlib.suppress(Exception):
                con.unregister("__nodal_write_src")
        if own:
            _close(con)


def delete(ref: DatasetRef) -> None:
    """Remove a dataset's files (used by tests and rebuilds)."""
    shutil.rmtree(ref.path, ignore_errors=True)
