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

SQL a person wrote (a recipe, its preview, a metric's ``sql``) runs in a *confined* session
(``session(..., confine_to=[folders])``): DuckDB may read and write files only under those
folders (``allowed_directories`` with ``enable_external_access`` off, Python replacement scans
off, then ``lock_configuration`` so the SQL cannot undo it), and :func:`check_query` refuses
anything but one query before it runs (``ATTACH``, ``COPY``, ``INSTALL``/``LOAD``, ``SET``,
``PRAGMA``…).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
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
# The DuckDB variable a connection's requested partitions are bound to (see bind_partitions).
PARTITIONS_VARIABLE = "nodal_partitions"
# A partition value that is not a day: letters, digits, "-", "_", "." (not first), <= 64.
_PARTITION_VALUE = re.compile(r"[0-9A-Za-z_-][0-9A-Za-z_.-]{0,63}")
_NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"  # the folder DuckDB writes NULL keys to
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

log = logging.getLogger("nodal.datasets")


class DatasetError(NodalError):
    """A dataset is missing, empty or unreadable; the message says which and why."""


class InvalidPartition(DatasetError):
    """A partition value that is not one (a requested day that is not an ISO date, a
    value with characters outside the strict pattern); refused before any SQL runs."""


def partition_problem(value: object, date: bool) -> str | None:
    """Why ``value`` cannot be a partition value (None if it can).

    ``date``: the partition key holds days, so the value must be an ISO date ``YYYY-MM-DD``;
    else letters, digits, ``-``, ``_`` and ``.`` (not first), at most 64 characters.
    """
    text = value if isinstance(value, str) else None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        text = value.isoformat()
    if date:
        if text is not None and _ISO_DAY.fullmatch(text):
            try:
                dt.date.fromisoformat(text)
                return None
            except ValueError:
                pass
        return f"{value!r} is not an ISO date YYYY-MM-DD"
    if text is not None and _PARTITION_VALUE.fullmatch(text):
        return None
    return (
        f"{value!r} is not a valid partition value (letters, digits, '-', '_', '.'; "
        "at most 64 characters)"
    )


def check_partition_value(value: object, date: bool, what: str = "partition") -> str:
    """``value`` if it is a valid partition value, else :class:`InvalidPartition`."""
    problem = partition_problem(value, date)
    if problem:
        raise InvalidPartition(f"invalid {what}: {problem}")
    return str(value)


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _warn_invalid(ref: DatasetRef, names: list[str]) -> None:
    """Log once per folder that ``ref`` holds folders that are not valid partitions."""
    with _warned_lock:
        new = [n for n in names if (str(ref.path), n) not in _warned]
        _warned.update((str(ref.path), n) for n in new)
    if new:
        log.warning(
            "dataset %r: ignoring folder(s) that are not valid %s partitions: %s",
            ref.name,
            ref.partitioned_by,
            ", ".join(repr(n) for n in new),
        )


class ForbiddenSQL(DatasetError):
    """SQL a person wrote that would do more than query (attach a database, install or load
    an extension, copy to a file, change a setting…, or several statements); the message
    says which. (A file outside a confined session's folders is refused by DuckDB itself:
    ``duckdb.PermissionException``, explained by :func:`outside_message`.)"""


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
    """Where a dataset lives and how it is laid out.

    ``partition_type`` is the declared type of the partition key (from the project's
    schema): a dataset partitioned by ``day``, or by a key declared DATE, has ISO-date
    partitions (:attr:`date_partitions`); other keys take the strict pattern of
    :func:`partition_problem`. Folders whose name is not a valid partition are ignored
    (:meth:`invalid_partitions` lists them).
    """

    name: str
    path: Path
    partitioned_by: str | None = None
    partition_type: str | None = None

    @property
    def date_partitions(self) -> bool:
        """Whether partition values are days (ISO dates)."""
        return self.partitioned_by == "day" or (self.partition_type or "").upper() == "DATE"

    @property
    def glob(self) -> str:
        if self.partitioned_by:
            return str(self.path / "*" / "*.parquet")
        return str(self.path / DATA_FILE)

    def check_partition(self, value: object) -> str:
        """``value`` if it is a valid partition of this dataset, else :class:`InvalidPartition`."""
        problem = partition_problem(value, self.date_partitions)
        if problem:
            kind = "an ISO date" if self.date_partitions else "a plain value"
            raise InvalidPartition(
                f"invalid partition for dataset {self.name!r} (partitioned by "
                f"{self.partitioned_by}, {kind}): {problem}"
            )
        return value.isoformat() if isinstance(value, dt.date) else str(value)

    def partition_path(self, value: str) -> Path:
        """The folder of partition ``value`` (refused unless it is a valid partition)."""
        return self.path / f"{self.partitioned_by}={self.check_partition(value)}"

    def exists(self) -> bool:
        if self.partitioned_by:
            return bool(self.partitions())
        return (self.path / DATA_FILE).exists()

    def _scan_folders(self) -> tuple[list[str], list[str]]:
        """(valid partition values, names of the other folders holding Parquet files)."""
        if not self.partitioned_by or not self.path.exists():
            return [], []
        prefix = f"{self.partitioned_by}="
        valid, invalid = [], []
        for p in self.path.iterdir():
            if not p.is_dir() or p.name.startswith(".") or not any(p.glob("*.parquet")):
                continue
            value = p.name[len(prefix) :] if p.name.startswith(prefix) else None
            if value is not None and partition_problem(value, self.date_partitions) is None:
                valid.append(value)
            else:
                invalid.append(p.name)
        return sorted(valid), sorted(invalid)

    def partitions(self) -> list[str]:
        """Valid partition values present on disk, sorted (the last is the newest).

        Folders that are not valid partitions (``day=tmp``, a name carrying quotes) are
        ignored, and a warning names them once.
        """
        valid, invalid = self._scan_folders()
        if invalid:
            _warn_invalid(self, invalid)
        return valid

    def invalid_partitions(self) -> list[str]:
        """Names of the folders holding Parquet files that :meth:`partitions` ignores."""
        return self._scan_folders()[1]


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _file_list(ref: DatasetRef, partitions: Sequence[str]) -> str:
    """A DuckDB list of the Parquet globs of ``partitions`` (valid values: no glob or quote
    character can reach it)."""
    return (
        "["
        + ", ".join(_sql_str(str(ref.partition_path(p) / "*.parquet")) for p in partitions)
        + "]"
    )


def scan_sql(ref: DatasetRef, partitions: Sequence[str] | None = None) -> str:
    """A DuckDB table expression reading the dataset (optionally some partitions only).

    A partitioned dataset is read from the files of its valid partitions only (a stray
    folder is never read); requested partitions must be valid and present.
    """
    if not ref.partitioned_by:
        if not ref.exists():
            raise DatasetError(f"dataset {ref.name!r} has no data yet (looked in {ref.path})")
        return f"read_parquet({_sql_str(ref.glob)})"
    for p in partitions or []:
        ref.check_partition(p)
    present = ref.partitions()
    if not present:
        raise DatasetError(f"dataset {ref.name!r} has no data yet (looked in {ref.path})")
    if partitions is None:
        partitions = present
    missing = [p for p in partitions if p not in set(present)]
    if missing:
        raise DatasetError(
            f"dataset {ref.name!r} has no partition {', '.join(missing)} "
            f"(has {len(present)} partitions)"
        )
    if not partitions:
        raise DatasetError(f"no partition of dataset {ref.name!r} was asked for")
    return (
        f"read_parquet({_file_list(ref, partitions)}, hive_partitioning=true, union_by_name=true)"
    )


def bind_partitions(con: duckdb.DuckDBPyConnection, partitions: Sequence[str]) -> None:
    """Bind ``partitions`` (as a parameter) to the connection's :data:`PARTITIONS_VARIABLE`,
    which :func:`in_partitions_sql` reads: values never become SQL text."""
    con.execute(
        f"SET VARIABLE {PARTITIONS_VARIABLE} = ?::VARCHAR[]", [[str(p) for p in partitions]]
    )


def in_partitions_sql(key: str) -> str:
    """A SQL condition: column ``key`` is one of the partitions bound by :func:`bind_partitions`."""
    column = '"' + key.replace('"', '""') + '"'
    return f"CAST({column} AS VARCHAR) IN (SELECT unnest(getvariable('{PARTITIONS_VARIABLE}')))"


def check_query(sql: str, what: str = "the SQL") -> None:
    """Refuse ``sql`` unless it is exactly one query (``SELECT``, ``WITH``, ``FROM``…).

    :class:`ForbiddenSQL` names the statement kind refused (``ATTACH``, ``COPY``, ``SET``,
    ``INSTALL``/``LOAD``, ``PRAGMA``, ``CREATE``…) or the number of statements; SQL that does
    not parse raises DuckDB's parser error (its message has the line).
    """
    statements = duckdb.extract_statements(sql)
    if len(statements) != 1:
        raise ForbiddenSQL(f"{what} must be one query (SELECT …), not {len(statements)} statements")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ForbiddenSQL(
            f"{what} may only query data (SELECT …): a {kind.name} statement is refused "
            "(ATTACH, COPY, INSTALL/LOAD, SET, PRAGMA, CREATE… cannot run here)"
        )


def outside_message(exc: duckdb.Error, folders: Sequence[Path]) -> str | None:
    """What a confined session's refusal to touch a file means (None for other errors)."""
    if not isinstance(exc, duckdb.PermissionException):
        return None
    first = str(exc).strip().splitlines()[0]
    where = ", ".join(str(Path(f).absolute()) for f in folders)
    return (
        f"this SQL may read and write only the project's data and the landing zone "
        f"({where}): {first}"
    )


def _folder_forms(folders: Sequence[Path]) -> list[str]:
    """Each folder as DuckDB compares it (absolute, and with symlinks resolved), with a
    trailing ``/`` so that ``/data`` does not also allow ``/data2``."""
    out: list[str] = []
    for folder in folders:
        for form in (Path(folder).absolute(), Path(folder).resolve()):
            text = str(form).rstrip("/") + "/"
            if text not in out:
                out.append(text)
    return out


def _confine(con: duckdb.DuckDBPyConnection, folders: Sequence[Path]) -> Path:
    """Let ``con`` touch files under ``folders`` only, for good (the configuration is locked).

    DuckDB's spill folder is moved into the first folder's staging area (by default it is
    ``.tmp`` in the working directory, which DuckDB would otherwise allow too); returns it,
    for removal when the session ends.
    """
    if not folders:
        raise ValueError("a confined session needs at least one folder")
    spill = Path(folders[0]).absolute() / STAGING_DIR / f"duckdb-{uuid.uuid4().hex}"
    con.execute(f"SET temp_directory = {_sql_str(str(spill))}")
    con.execute("SET allowed_directories = ?", [_folder_forms(folders)])
    con.execute("SET enable_external_access = false")
    con.execute("SET python_enable_replacements = false")
    con.execute("SET lock_configuration = true")
    return spill


@contextlib.contextmanager
def session(
    views: Mapping[str, DatasetRef | tuple[DatasetRef, Sequence[str] | None]] | None = None,
    threads: int | None = None,
    *,
    confine_to: Sequence[Path] | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection with one view per dataset name.

    ``views`` maps a SQL name to a dataset, or to ``(dataset, partitions)`` to restrict the
    view to some partitions. ``confine_to``: the only folders the connection may read or
    write files in (for SQL a person wrote; its settings are then locked). The connection is
    closed on exit.
    """
    con = _connect()
    spill = None
    try:
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        if confine_to is not None:
            spill = _confine(con, confine_to)
        for name, spec in (views or {}).items():
            ref, parts = spec if isinstance(spec, tuple) else (spec, None)
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {scan_sql(ref, parts)}')
        yield con
    finally:
        _close(con)
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


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
            folder = ref.partition_path(partition)  # refuses an invalid value
            src = f"read_parquet({_sql_str(str(folder / '*.parquet'))})"
            if not list(folder.glob("*.parquet")):
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


def _write_one_partition(
    con: duckdb.DuckDBPyConnection,
    ref: DatasetRef,
    source: str,
    value: str,
    staging: Path,
    params: Mapping[str, object] | None = None,
) -> list[str] | None:
    """Write ``source`` as partition ``value`` in one staged file and install it.

    Returns the partitions written (``[]`` when ``source`` has no rows: nothing is
    installed, as the general path writes nothing then), or None when ``source`` holds a row
    of another partition: nothing was installed and the caller writes the general way. The
    same rows, columns and types as the general path. ``value`` must be a valid partition
    (:class:`InvalidPartition` otherwise) and is bound as a parameter, never SQL text.
    """
    ref.check_partition(value)
    key = ref.partitioned_by
    staged = staging / DATA_FILE
    # error() stops the COPY at the first row of another partition (or a NULL key); the
    # marker tells that refusal from a failure of the query itself. Passing every column
    # through the CASE also keeps them all OPTIONAL in the file, as PARTITION_BY writes them
    # (a plain COPY marks columns it can prove non-null REQUIRED).
    marker = f"nodal-outside-partition-{uuid.uuid4().hex}"
    try:
        (rows,) = con.execute(
            f"COPY (SELECT CASE WHEN CAST({key} AS VARCHAR) = $nodal_partition "
            f"THEN COLUMNS(* EXCLUDE ({key})) ELSE error($nodal_marker) END "
            f"FROM {source}) TO {_sql_str(str(staged))} (FORMAT parquet)",
            {**(params or {}), "nodal_partition": value, "nodal_marker": marker},
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
    params: Mapping[str, object] | None = None,
) -> list[str]:
    """Write ``data`` (a DataFrame, Arrow table or SQL query on ``con``) into the dataset.

    Unpartitioned datasets are replaced as a whole. Partitioned datasets get every partition
    present in ``data`` replaced; other partitions are kept unless ``replace_all``.
    ``partitions`` says which partitions ``data`` is meant to hold (a build restricted to
    them): when it names one, the rows are written straight to that partition's staged file
    (no ``PARTITION_BY`` split, the daily case), checked on the way to all belong to it;
    data holding rows of other partitions is written the general way instead.
    ``params``: named parameters (``$name``) the query ``data`` uses, bound, never text.
    Returns the partitions written (empty list for an unpartitioned dataset).
    """
    params = dict(params or {})
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
                f"COPY (SELECT * FROM {source}) TO {_sql_str(str(staged))} (FORMAT parquet)",
                params,
            )
            _install_file(staged, ref.path)
            return []
        key = ref.partitioned_by
        if partitions is not None and len(partitions) == 1:
            single = _write_one_partition(con, ref, source, str(partitions[0]), staging, params)
            if single is not None:
                if replace_all:
                    for old in ref.partitions():
                        if old not in single:
                            shutil.rmtree(ref.partition_path(old))
                return single
        con.execute(
            f"COPY (SELECT * EXCLUDE ({key}), CAST({key} AS VARCHAR) AS {key} FROM {source}) "
            f"TO {_sql_str(str(staging / 'out'))} (FORMAT parquet, PARTITION_BY ({key}), "
            f"FILENAME_PATTERN 'part_{{i}}', WRITE_PARTITION_COLUMNS false)",
            params,
        )
        written: list[str] = []
        out = staging / "out"
        part_dirs = sorted(out.iterdir()) if out.exists() else []
        values = [d.name.split("=", 1)[1] for d in part_dirs]
        bad = [
            "NULL" if v == _NULL_PARTITION else repr(v)
            for v in values
            if partition_problem(v, ref.date_partitions)
        ]
        if bad:  # nothing is installed: such folders would be ignored by every reader
            raise InvalidPartition(
                f"cannot write dataset {ref.name!r}: rows with {key} value(s) "
                f"{', '.join(bad[:5])} that are not valid partitions "
                f"({'ISO dates YYYY-MM-DD' if ref.date_partitions else 'letters, digits, -, _, .'})"
            )
        for part_dir in part_dirs:
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
