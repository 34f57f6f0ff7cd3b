"""Import a CSV or Parquet file into a project as a managed dataset (Parquet).

Two steps, as in the Studio: :func:`infer_schema` proposes a column → type mapping the
analyst can correct, then :func:`import_file` reads the whole file with exactly those types
and writes the dataset. The analyst can also drop columns and rename them, the one with an
empty name too (the index pandas writes as a first column with header ``,a,b``): a column
still without a name, names that would collide, or a drop or rename of a column the file does
not have refuse the import before anything is read. A row that does not fit (wrong number of
fields, a value that is not of its column's type) refuses the import with the line number,
and nothing is written: the data is fully read before the dataset folder is touched, and the
definition is saved only after the data is in place.

Only files in the landing zone (the project's ``data_dir``) or in the Studio's upload folder
can be imported or inspected (:func:`importable`): a path is taken with its symbolic links
followed, and one naming ``..`` is refused, so "import a file by path" cannot read the host's
other files (the control store, keys, ``/etc``…).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from engine.core import yamltext
from engine.core.errors import NodalError
from engine.project import definitions
from engine.project.project import Project, check_name
from engine.storage import datasets as ds

FORMATS = ("csv", "parquet")
TYPES = ("BOOLEAN", "BIGINT", "DOUBLE", "DATE", "TIMESTAMP", "VARCHAR")
PARTITION_KEY = "day"
_SAMPLE_ROWS = 20_000


class DatasetImportError(NodalError):
    """A file cannot be imported; the message names the file, line and problem."""


class OutsideLandingZone(DatasetImportError):
    """A file to import lies outside the landing zone (and is not an upload); the message
    names the landing zone."""


class UnnamedColumnError(DatasetImportError):
    """A column with an empty name would be imported: drop it or give it a name.

    ``position`` is its 1-based position in the file (front ends add how to do either).
    """

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class ImportResult:
    dataset: str
    rows: int
    schema: dict[str, str]
    partitions: list[str]


def _q(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_format(path: Path, fmt: str | None = None) -> str:
    fmt = (fmt or Path(path).suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise DatasetImportError(
            f"{Path(path).name}: unknown format {fmt!r} (import a .csv or .parquet file)"
        )
    return fmt


def _csv_header(path: Path) -> tuple[list[str], str]:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        head = fh.read(65536)
    if not head.strip():
        raise DatasetImportError(f"{path.name} is empty")
    try:
        delim = csv.Sniffer().sniff(head.splitlines()[0], delimiters=",;\t|").delimiter
    except csv.Error:
        delim = ","
    header = next(csv.reader([head.splitlines()[0]], delimiter=delim))
    names = [h.strip() for h in header]
    empty = [str(i + 1) for i, n in enumerate(names) if not n]
    if len(empty) > 1:
        raise DatasetImportError(
            f"{path.name}: line 1 leaves {len(empty)} columns without a name (columns "
            f"{', '.join(empty)}): name them in the file"
        )
    dupes = sorted({n for n in names if n and names.count(n) > 1})
    if dupes:
        raise DatasetImportError(f"{path.name}: line 1 repeats column {', '.join(dupes)}")
    return names, delim


def _internal(position: int) -> str:
    """The name a file's column is read under (names may be empty or differ only in case)."""
    return f"col{position}"


def _csv_scan(path: Path, types: list[str], delim: str) -> str:
    """``read_csv`` of every column of the file, by position, as ``col0``, ``col1``…"""
    cols = "{" + ", ".join(f"{_q(_internal(i))}: {_q(t)}" for i, t in enumerate(types)) + "}"
    return (
        f"read_csv({_q(str(path))}, auto_detect=false, header=true, delim={_q(delim)}, "
        f"quote='\"', escape='\"', columns={cols})"
    )


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def importable(project: Project, path: Path | str) -> Path:
    """``path`` as it will be read (absolute, symbolic links followed), if it is a file in
    the landing zone (the project's ``data_dir``; a relative path starts from the current
    folder) or a file this process staged from an upload (:func:`stage_upload`); else
    :class:`OutsideLandingZone`.

    A path naming ``..`` is refused outright, whatever it leads to.
    """
    given = Path(path)
    landing = project.variables.get("data_dir")
    where = f"the landing zone ({Path(landing).absolute()})" if landing else "the landing zone"
    if ".." in given.parts:
        raise OutsideLandingZone(f"{given}: a path with '..' is refused: give a file in {where}")
    resolved = given.resolve()
    # <home>/design/projects/<project> → <home>/design/uploads (see uploads_dir); only the
    # folders this process staged (``<pid>-<random>``) hold its uploads.
    uploads = Path(project.root).resolve().parent.parent / UPLOADS_DIR
    uploaded = resolved.parent.parent == uploads and resolved.parent.name.startswith(
        f"{os.getpid()}-"
    )
    if not uploaded and not (landing and _within(resolved, Path(landing).resolve())):
        also = f" (it leads to {resolved})" if resolved != given.absolute() else ""
        raise OutsideLandingZone(
            f"{given} is outside {where}{also}: only files there can be imported by path; "
            "copy the file into the landing zone, or upload it in the Studio"
        )
    return resolved


def infer_schema(path: Path, fmt: str | None = None, *, project: Project) -> dict[str, str]:
    """Column → proposed type (one of :data:`TYPES` for CSV; as stored for Parquet) of a
    file :func:`importable` into ``project``."""
    path = importable(project, path)
    if not path.is_file():
        raise DatasetImportError(f"no file at {path}")
    if file_format(path, fmt) == "parquet":
        try:
            with ds.session() as con:
                rows = con.execute(
                    f"DESCRIBE SELECT * FROM read_parquet({_q(str(path))})"
                ).fetchall()
        except duckdb.Error as exc:
            raise DatasetImportError(f"{path.name} is not a readable Parquet file: {exc}") from None
        return {r[0]: r[1] for r in rows}
    names, delim = _csv_header(path)
    scan = _csv_scan(path, ["VARCHAR"] * len(names), delim).replace(
        "columns=", "ignore_errors=true, columns="
    )
    out: dict[str, str] = {}
    with ds.session() as con:
        con.execute(f"CREATE TEMP TABLE sample AS SELECT * FROM {scan} LIMIT {_SAMPLE_ROWS}")
        for i, name in enumerate(names):
            col = _internal(i)
            out[name] = "VARCHAR"
            for typ in TYPES[:-1]:
                fits = _FITS[typ].format(c=f"trim({col})")
                bad, seen = con.execute(
                    f"SELECT count(*) FILTER (WHERE NOT ({fits})), count(*) FROM sample "
                    f"WHERE {col} IS NOT NULL AND trim({col}) <> ''"
                ).fetchone()
                if seen and not bad:
                    out[name] = typ
                    break
    return out


# When a text value "is" a type: stricter than TRY_CAST, which rounds '3.5' to a BIGINT and
# cuts a timestamp down to a DATE.
_FITS = {
    "BOOLEAN": "lower({c}) IN ('true', 'false')",
    "BIGINT": "regexp_full_match({c}, '[+-]?[0-9]{{1,18}}')",
    "DOUBLE": "TRY_CAST({c} AS DOUBLE) IS NOT NULL",
    "DATE": "regexp_full_match({c}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
    "AND TRY_CAST({c} AS DATE) IS NOT NULL",
    "TIMESTAMP": "TRY_CAST({c} AS TIMESTAMP) IS NOT NULL",
}


def _shown(name: str) -> str:
    return repr(name) if name else "'' (the column with no name)"


def column_plan(
    filename: str,
    columns: Sequence[str],
    drop: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The file's columns kept, in order, each mapped to its name in the dataset.

    ``drop`` and ``rename`` name columns as the file does (``''`` is the column with an
    empty name). Refused, naming the problem: a column the file does not have, one both
    dropped and renamed, an empty new name, two columns that would have the same name
    (DuckDB names ignore case), a column left without a name (:class:`UnnamedColumnError`),
    or nothing left to import.
    """
    rename = {str(k).strip(): str(v).strip() for k, v in (rename or {}).items()}
    drop = [str(d).strip() for d in drop]
    known = ", ".join(c or "''" for c in columns)
    for what, names in (("drop", drop), ("rename", list(rename))):
        unknown = [n for n in names if n not in columns]
        if unknown:
            raise DatasetImportError(
                f"{filename} has no column {', '.join(map(_shown, unknown))} to {what} "
                f"(its columns: {known})"
            )
    both = [n for n in rename if n in drop]
    if both:
        raise DatasetImportError(
            f"{filename}: column {', '.join(map(_shown, both))} is both dropped and renamed"
        )
    empty = [n for n, new in rename.items() if not new]
    if empty:
        raise DatasetImportError(
            f"{filename}: the new name of column {', '.join(map(_shown, empty))} is empty"
        )
    plan = {c: rename.get(c, c) for c in columns if c not in drop}
    if not plan:
        raise DatasetImportError(f"{filename}: every column is dropped: nothing to import")
    by_key: dict[str, list[str]] = {}
    for old, new in plan.items():
        by_key.setdefault(new.lower(), []).append(old)
    for old_names in by_key.values():
        if len(old_names) > 1:
            new_names = sorted({plan[o] for o in old_names})
            what = (
                f"would be named {new_names[0]!r}"
                if len(new_names) == 1
                else f"would be named {' and '.join(map(repr, new_names))}, which DuckDB "
                "takes for the same name (case is ignored)"
            )
            raise DatasetImportError(
                f"{filename}: columns {' and '.join(map(_shown, old_names))} {what}: rename "
                "or drop one of them. Nothing was imported."
            )
    if "" in plan.values():
        position = list(columns).index(next(c for c, new in plan.items() if not new)) + 1
        raise UnnamedColumnError(
            f"{filename}: column {position} has no name (often the index a DataFrame was "
            "saved with): drop it or give it a name. Nothing was imported.",
            position,
        )
    return plan


def _explain_csv_error(path: Path, exc: duckdb.Error, names: Sequence[str] = ()) -> str:
    message = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", message)
    where = f"line {line.group(1)}" if line else "a row"
    original = re.search(r"Original Line: (.*)", message)
    if "Expected Number of Columns" in message:
        m = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
        why = f"expected {m.group(1)} fields, found {m.group(2)}" if m else "wrong number of fields"
    elif "Could not convert" in message:
        m = re.search(r'converting column "([^"]+)"\. (Could not convert [^\n]*)', message)
        column = m.group(1) if m else ""
        internal = {_internal(i): n for i, n in enumerate(names)}
        column = internal.get(column, column)
        why = f"column {column}: {m.group(2)}" if m else "a value has the wrong type"
    else:
        why = message.splitlines()[0]
    shown = f" ({original.group(1).strip()[:120]})" if original else ""
    return f"{path.name}: {where}{shown}: {why}. Nothing was imported."


def import_file(
    project: Project,
    name: str,
    path: Path,
    schema: dict[str, str] | None = None,
    fmt: str | None = None,
    partition_column: str | None = None,
    description: str = "",
    variables: dict[str, str] | None = None,
    *,
    drop: Sequence[str] = (),
    rename: Mapping[str, str] | None = None,
) -> ImportResult:
    """Import ``path`` as managed dataset ``name`` of ``project``.

    ``path`` must be :func:`importable` (in the landing zone, or an upload).
    ``schema`` (column → type) overrides the inferred types; columns it leaves out keep
    theirs. ``drop`` leaves columns out and ``rename`` (file's name → dataset's name) names
    them anew, the column with an empty name (``''``) too; see :func:`column_plan` for what
    is refused. ``partition_column`` (a date or timestamp column) partitions the dataset by
    day into a ``day`` column. ``schema`` and ``partition_column`` name a column as the
    file does, or by its new name.
    """
    project.require("write")  # before anything is read or written
    path = importable(project, path)
    check_name(name, "dataset name")
    if name in project.datasets:
        raise DatasetImportError(f"project {project.name!r} already has a dataset {name!r}")
    fmt = file_format(path, fmt)
    inferred = infer_schema(path, fmt, project=project)
    columns = list(inferred)
    plan = column_plan(path.name, columns, drop, rename)
    renamed_to = {new: old for old, new in plan.items() if new != old}

    def file_column(column: str) -> str | None:
        """The file's column a name means: its own name first, else a new name."""
        if column in inferred:
            return column
        return renamed_to.get(column)

    wanted = dict(inferred)
    unknown = []
    for column, typ in (schema or {}).items():
        own = file_column(column)
        if own is None:
            unknown.append(column)
        elif own in plan:  # the type of a dropped column does not matter
            wanted[own] = typ.upper()
    if unknown:
        raise DatasetImportError(f"{path.name} has no column {', '.join(map(_shown, unknown))}")
    partition_as = None
    if partition_column:
        own = file_column(partition_column)
        if own is None:
            raise DatasetImportError(
                f"{path.name} has no column {partition_column!r} to partition by"
            )
        if own not in plan:
            raise DatasetImportError(
                f"{path.name}: column {partition_column!r} is dropped: it cannot partition"
            )
        partition_as = plan[own]
        clash = []
        if partition_as != PARTITION_KEY:  # a day column is added: no other may be one
            clash = [n for n in plan.values() if n.lower() == PARTITION_KEY]
        if clash:
            raise DatasetImportError(
                f"{path.name}: partitioning by {partition_as!r} adds a column {PARTITION_KEY}, "
                f"and column {clash[0]!r} would have that name: rename or drop it. "
                "Nothing was imported."
            )
    ref = ds.DatasetRef(name, project.data_root / name, PARTITION_KEY if partition_column else None)
    if ref.path.exists():
        raise DatasetImportError(f"{ref.path} already exists: choose another dataset name")
    kept = [(i, c) for i, c in enumerate(columns) if c in plan]
    if fmt == "csv":
        _, delim = _csv_header(path)
        # Every column is read (a CSV is read by position); dropped ones as text, never wrong.
        types = [wanted[c] if c in plan else "VARCHAR" for c in columns]
        select = ", ".join(f"{_internal(i)} AS {_ident(plan[c])}" for i, c in kept)
        source = f"SELECT {select} FROM {_csv_scan(path, types, delim)}"
    else:
        casts = ", ".join(
            f"CAST({_internal(i)} AS {wanted[c]}) AS {_ident(plan[c])}"
            if wanted[c] != inferred[c]
            else f"{_internal(i)} AS {_ident(plan[c])}"
            for i, c in kept
        )
        aliases = ", ".join(_internal(i) for i in range(len(columns)))
        source = f"SELECT {casts} FROM read_parquet({_q(str(path))}) AS f({aliases})"
    if partition_as:
        key, col = _ident(PARTITION_KEY), _ident(partition_as)
        if partition_as == PARTITION_KEY:
            source = f"SELECT * REPLACE (CAST({key} AS DATE) AS {key}) FROM ({source})"
        else:
            source = f"SELECT *, CAST({col} AS DATE) AS {key} FROM ({source})"
    try:
        with ds.session() as con:
            # Read everything first: a bad row anywhere fails here, before any write.
            table = con.sql(source).to_arrow_table()
            if partition_as and table.column(PARTITION_KEY).null_count:
                raise DatasetImportError(
                    f"{path.name}: column {partition_as} is empty on some rows: "
                    "cannot partition them by day. Nothing was imported."
                )
            partitions = ds.write(ref, table, con=con)
            stored = ds.schema(ref)
    except duckdb.Error as exc:
        shutil.rmtree(ref.path, ignore_errors=True)
        if fmt == "csv":
            shown = [plan.get(c, c) for c in columns]
            raise DatasetImportError(_explain_csv_error(path, exc, shown)) from None
        raise DatasetImportError(
            f"{path.name}: {str(exc).splitlines()[0]}. Nothing was imported."
        ) from None
    stored.pop(PARTITION_KEY if partition_column else "", None)
    spec: dict[str, object] = {"kind": "managed"}
    if partition_column:
        spec["partitioned_by"] = PARTITION_KEY
    spec["description"] = description or f"Imported from {path.name}."
    spec["schema"] = stored

    def add_definition(current: dict[str, str | None]) -> dict[str, str | None]:
        if name in yamltext.load(current["datasets.yaml"]):
            raise DatasetImportError(f"project {project.name!r} already has a dataset {name!r}")
        return {"datasets.yaml": yamltext.set_entry(current["datasets.yaml"], name, spec)}

    try:
        project.require("write")
        definitions.update(
            project.root,
            add_definition,
            paths=["datasets.yaml"],
            variables=variables or project.variables,
        )
    except NodalError:
        shutil.rmtree(ref.path, ignore_errors=True)
        raise
    return ImportResult(name, table.num_rows, stored, partitions)


# --- uploads: files received by the Studio, kept only while the analyst imports them ---------

UPLOADS_DIR = "uploads"
STALE_UPLOAD_SECONDS = 24 * 3600.0


def uploads_dir(home: Path) -> Path:
    """Where the Studio keeps uploaded files while they are imported (under the home)."""
    return Path(home) / "design" / UPLOADS_DIR


def stage_upload(home: Path, filename: str, data: bytes) -> Path:
    """Write an uploaded file to ``uploads/<pid>-<random>/<its own name>`` and return its path.

    The file keeps the name the analyst knows (errors name it); the folder names the
    process that owns it, so :func:`sweep_uploads` can tell leftovers of a stopped Studio.
    Remove it with :func:`discard_upload` once imported or refused.
    """
    base = uploads_dir(home)
    base.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=base, prefix=f"{os.getpid()}-"))
    path = folder / (Path(filename).name or "upload")
    try:
        path.write_bytes(data)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


def discard_upload(home: Path, path: Path | None) -> None:
    """Remove a file made by :func:`stage_upload` (and its folder); other paths are left alone."""
    if path is None:
        return
    folder = Path(path).parent
    if folder.parent.resolve() == uploads_dir(home).resolve():
        shutil.rmtree(folder, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_uploads(home: Path, max_age: float = STALE_UPLOAD_SECONDS) -> int:
    """Remove uploads left behind: their Studio process is gone, or they are older than
    ``max_age`` seconds (a session abandoned mid-import). Returns how many were removed."""
    base = uploads_dir(home)
    if not base.is_dir():
        return 0
    removed = 0
    now = time.time()
    for folder in base.iterdir():
        owner = folder.name.split("-", 1)[0]
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        dead = owner.isdigit() and not _pid_alive(int(owner))
        if dead or age > max_age or not owner.isdigit():
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
            removed += 1
    return removed
