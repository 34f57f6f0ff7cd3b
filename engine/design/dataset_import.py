"""Import a CSV or Parquet file into a project as a managed dataset (Parquet).

Two steps, as in the Studio: :func:`infer_schema` proposes a column → type mapping the
analyst can correct, then :func:`import_file` reads the whole file with exactly those types
and writes the dataset. A row that does not fit (wrong number of fields, a value that is
not of its column's type) refuses the import with the line number, and nothing is written:
the data is fully read before the dataset folder is touched, and the definition is saved
only after the data is in place.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import tempfile
import time
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
    if not all(names):
        raise DatasetImportError(f"{path.name}: line 1 has an empty column name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DatasetImportError(f"{path.name}: line 1 repeats column {', '.join(dupes)}")
    return names, delim


def _csv_scan(path: Path, columns: dict[str, str], delim: str) -> str:
    cols = "{" + ", ".join(f"{_q(k)}: {_q(v)}" for k, v in columns.items()) + "}"
    return (
        f"read_csv({_q(str(path))}, auto_detect=false, header=true, delim={_q(delim)}, "
        f"quote='\"', escape='\"', columns={cols})"
    )


def infer_schema(path: Path, fmt: str | None = None) -> dict[str, str]:
    """Column → proposed type (one of :data:`TYPES` for CSV; as stored for Parquet)."""
    path = Path(path)
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
    scan = _csv_scan(path, dict.fromkeys(names, "VARCHAR"), delim).replace(
        "columns=", "ignore_errors=true, columns="
    )
    out: dict[str, str] = {}
    with ds.session() as con:
        con.execute(f"CREATE TEMP TABLE sample AS SELECT * FROM {scan} LIMIT {_SAMPLE_ROWS}")
        for name in names:
            col = _ident(name)
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


def _explain_csv_error(path: Path, exc: duckdb.Error) -> str:
    message = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", message)
    where = f"line {line.group(1)}" if line else "a row"
    original = re.search(r"Original Line: (.*)", message)
    if "Expected Number of Columns" in message:
        m = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", message)
        why = f"expected {m.group(1)} fields, found {m.group(2)}" if m else "wrong number of fields"
    elif "Could not convert" in message:
        m = re.search(r'converting column "([^"]+)"\. (Could not convert [^\n]*)', message)
        why = f"column {m.group(1)}: {m.group(2)}" if m else "a value has the wrong type"
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
) -> ImportResult:
    """Import ``path`` as managed dataset ``name`` of ``project``.

    ``schema`` (column → type) overrides the inferred types; columns it leaves out keep
    theirs. ``partition_column`` (a date or timestamp column) partitions the dataset by day
    into a ``day`` column.
    """
    path = Path(path)
    check_name(name, "dataset name")
    if name in project.datasets:
        raise DatasetImportError(f"project {project.name!r} already has a dataset {name!r}")
    fmt = file_format(path, fmt)
    inferred = infer_schema(path, fmt)
    wanted = {**inferred, **{k: v.upper() for k, v in (schema or {}).items()}}
    unknown = sorted(set(wanted) - set(inferred))
    if unknown:
        raise DatasetImportError(f"{path.name} has no column {', '.join(unknown)}")
    if partition_column and partition_column not in wanted:
        raise DatasetImportError(f"{path.name} has no column {partition_column!r} to partition by")
    ref = ds.DatasetRef(name, project.data_root / name, PARTITION_KEY if partition_column else None)
    if ref.path.exists():
        raise DatasetImportError(f"{ref.path} already exists: choose another dataset name")
    if fmt == "csv":
        _, delim = _csv_header(path)
        source = f"SELECT * FROM {_csv_scan(path, wanted, delim)}"
    else:
        casts = ", ".join(
            f"CAST({_ident(c)} AS {t}) AS {_ident(c)}" if t != inferred[c] else _ident(c)
            for c, t in wanted.items()
        )
        source = f"SELECT {casts} FROM read_parquet({_q(str(path))})"
    if partition_column:
        if partition_column == PARTITION_KEY:
            source = f"SELECT * REPLACE (CAST({PARTITION_KEY} AS DATE) AS {PARTITION_KEY}) FROM ({source})"
        else:
            source = f"SELECT *, CAST({_ident(partition_column)} AS DATE) AS {PARTITION_KEY} FROM ({source})"
    try:
        with ds.session() as con:
            # Read everything first: a bad row anywhere fails here, before any write.
            table = con.sql(source).to_arrow_table()
            if partition_column and table.column(PARTITION_KEY).null_count:
                raise DatasetImportError(
                    f"{path.name}: column {partition_column} is empty on some rows: "
                    "cannot partition them by day. Nothing was imported."
                )
            partitions = ds.write(ref, table, con=con)
            stored = ds.schema(ref)
    except duckdb.Error as exc:
        shutil.rmtree(ref.path, ignore_errors=True)
        if fmt == "csv":
            raise DatasetImportError(_explain_csv_error(path, exc)) from None
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
