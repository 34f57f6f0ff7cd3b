"""The flow: recipes form a DAG over datasets; build a dataset with everything upstream.

A recipe is SQL run by DuckDB (``recipes/<name>.sql``) or Python run in a process of its own
(``recipes/<name>.py``, see :mod:`engine.project.python_recipes`); both write their output the same
way (staged, then renamed into place, per partition when partitioned).

A build of some partitions (a scenario's day) of a partitioned output writes those partitions
only: the recipe runs on its inputs as their modes say (:mod:`engine.project.input_modes`:
``same``: those partitions; ``{days_before: N}``: the N days before each, that day excluded;
``all``: everything, but never a day after the last one built when input and output are
partitioned by day), and only its rows of the requested partitions are written; the output's
other partitions are left as they are. When that may leave them stale (the recipe reads an input
whole and later partitions of the output exist, which may depend on the rebuilt days), or when
the output is not partitioned (it is rebuilt whole), the run's ``note`` says so, and so does
the ``nodal.flow`` log.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import duckdb

from engine.core.errors import NodalError
from engine.project import input_modes, python_recipes
from engine.project import windows as windowed
from engine.project.project import Project, ProjectError, RecipeDef
from engine.storage import datasets as ds

log = logging.getLogger("nodal.flow")


class FlowError(NodalError):
    """A recipe failed; the message names the recipe and carries DuckDB's message.

    For a Python recipe, ``user_traceback`` holds the frames of the analyst's file.
    """

    def __init__(self, message: str, user_traceback: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


@dataclass(frozen=True)
class RecipeRun:
    recipe: str
    output: str
    partitions: list[str] | None
    rows: int
    seconds: float
    note: str = ""  # what a partial build did not do, and why (empty when nothing to say)


@dataclass
class BuildResult:
    target: str
    runs: list[RecipeRun] = field(default_factory=list)


def graph(project: Project) -> dict[str, set[str]]:
    """Dataset → the datasets its recipe reads (sources map to an empty set)."""
    deps: dict[str, set[str]] = {name: set() for name in project.datasets}
    for recipe in project.recipes.values():
        deps[recipe.output] = set(recipe.inputs)
    return deps


def build_order(project: Project, target: str) -> list[str]:
    """Managed datasets to build, upstream first, to produce ``target``."""
    if target not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {target!r}")
    deps = graph(project)
    needed: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        stack.extend(deps[name])
    try:
        order = list(TopologicalSorter({n: deps[n] for n in needed}).static_order())
    except CycleError as exc:
        raise ProjectError(f"the flow has a cycle: {' -> '.join(exc.args[1])}") from None
    return [n for n in order if project.recipe_for(n) is not None]


def partitioned_sources(project: Project, target: str) -> list[str]:
    """The partitioned sources whose partition a build of one partition of ``target`` reads.

    ``target`` itself if it is a partitioned source; else those reached through recipe
    inputs read ``same`` (restricted to the partitions being built). Inputs read ``all`` do
    not restrict which partitions can be built, so they are not followed.
    """
    if target not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {target!r}")
    seen: set[str] = set()
    stack = [target]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        recipe = project.recipe_for(name)
        if recipe is not None:
            stack.extend(ds for ds, mode in recipe.inputs.items() if mode == "same")
    return sorted(
        n
        for n in seen
        if project.datasets[n].kind == "source" and project.datasets[n].partitioned_by
    )


def available_partitions(project: Project, dataset: str) -> list[str]:
    """The partitions ``dataset`` has, or (built by the flow from partitioned sources) can have.

    A source's own partitions; for a dataset built from partitioned sources (read ``same``),
    the partitions every one of those sources has (what a build of one partition can read);
    otherwise the partitions already on disk.
    """
    d = project.datasets.get(dataset)
    if d is None:
        raise ProjectError(f"project {project.name!r} has no dataset {dataset!r}")
    sources = [] if d.kind == "source" else partitioned_sources(project, dataset)
    if not sources:
        return project.dataset(dataset).partitions()
    common = set(project.dataset(sources[0]).partitions())
    for name in sources[1:]:
        common &= set(project.dataset(name).partitions())
    return sorted(common)


def sql_error_line(sql: str, message: str) -> int | None:
    """The 1-based line of ``sql`` a DuckDB error points at, if it can be told.

    Parser errors carry ``LINE n:``; binder errors name the identifier they could not bind,
    which is looked up in the text.
    """
    m = re.search(r"LINE (\d+):", message)
    if m:
        return int(m.group(1))
    for name in re.findall(r'"([^"]+)"', message.split("\n", 1)[0]):
        word = re.compile(rf"\b{re.escape(name)}\b")
        for i, line in enumerate(sql.splitlines(), start=1):
            if word.search(line.split("--", 1)[0]):
                return i
    return None


def describe_sql_error(sql: str, exc: Exception) -> str:
    """DuckDB's message, prefixed by the line it failed at (number and text) when known."""
    message = str(exc).strip()
    line = sql_error_line(sql, message)
    if line is None:
        return message
    text = sql.splitlines()[line - 1].strip() if line <= len(sql.splitlines()) else ""
    return f"at line {line} ({text}): {message}"


def data_folders(project: Project) -> list[Path]:
    """The folders a recipe's SQL may read and write: the project's managed data on this node,
    then the landing zone (the ``data_dir`` variable) when there is one."""
    folders = [Path(project.data_root)]
    landing = project.variables.get("data_dir")
    if landing:
        folders.append(Path(landing))
    return folders


def partitions_read(
    project: Project,
    recipe_inputs: dict[str, input_modes.InputMode],
    restrict: list[str] | None,
    output: str,
) -> dict[str, list[str] | None]:
    """The partitions of each input a build of ``restrict`` (None: a full build) reads; None
    means the whole input (or, for an unpartitioned input read ``same``, its rows of the
    partitions being built)."""
    out_by_day = project.dataset(output).date_partitions
    read: dict[str, list[str] | None] = {}
    for name, mode in recipe_inputs.items():
        ref = project.dataset(name)
        if mode == input_modes.SAME:
            read[name] = restrict if (restrict and ref.partitioned_by) else None
            continue
        by_day = bool(ref.partitioned_by) and ref.date_partitions and out_by_day
        present = ref.partitions() if (restrict and by_day) else []
        read[name] = input_modes.partitions_to_read(mode, present, restrict, by_day)
    return read


def scan(ref: ds.DatasetRef, parts: list[str] | None) -> str:
    """A table expression of ``ref``'s ``parts`` (None: all of it). No partition to read
    gives no rows, with the input's columns (read from one partition's file)."""
    if parts is None or parts:
        return ds.scan_sql(ref, parts)
    first = ref.partitions()[:1]  # none at all: scan_sql says the dataset has no data yet
    return f"(SELECT * FROM {ds.scan_sql(ref, first or None)} WHERE false)"


def input_tables(
    project: Project,
    recipe_inputs: dict[str, input_modes.InputMode],
    restrict: list[str] | None,
    output: str,
) -> dict[str, str]:
    """A DuckDB table expression per input, read as its mode says (:func:`partitions_read`).

    An unpartitioned input read ``same`` is filtered on the output's partition key by the
    partitions bound to the connection that reads it (:func:`ds.bind_partitions`), not by
    SQL text.
    """
    partition_key = project.dataset(output).partitioned_by
    out: dict[str, str] = {}
    for name, parts in partitions_read(project, recipe_inputs, restrict, output).items():
        ref = project.dataset(name)
        same = recipe_inputs[name] == input_modes.SAME
        if same and restrict and partition_key and not ref.partitioned_by:
            where = ds.in_partitions_sql(partition_key)
            out[name] = f"(SELECT * FROM {ds.scan_sql(ref)} WHERE {where})"
        else:
            out[name] = scan(ref, parts)
    return out


def _only_partitions(source: str, key: str) -> str:
    """``source``'s rows of the partitions bound to the connection only (what a partial build
    writes). The SQL keeps its line numbers (errors point at the analyst's lines) and may
    end with a comment."""
    return f"SELECT * FROM ({source}\n) WHERE {ds.in_partitions_sql(key)}"


def check_partitions(project: Project, datasets: list[str], partitions: list[str] | None) -> None:
    """Refuse requested partitions that are not valid partitions of the partitioned
    ``datasets`` (ISO dates for days), before any SQL runs: :class:`ds.InvalidPartition`."""
    if partitions is None:
        return
    refs = [project.dataset(n) for n in datasets if project.datasets[n].partitioned_by]
    for p in partitions:
        for ref in refs:
            ref.check_partition(p)
        if not refs:
            ds.check_partition_value(p, date=False)


def _partial_note(
    project: Project,
    recipe: RecipeDef,
    requested: list[str] | None,
    written: list[str],
    before: list[str],
) -> str:
    """What a build of ``requested`` partitions left undone, and why ("" if nothing)."""
    out_ref = project.dataset(recipe.output)
    if not requested:
        return ""
    days = ", ".join(requested)
    if not out_ref.partitioned_by:
        note = (
            f"{recipe.output} is not partitioned: rebuilt whole for {days} (partitioned, a "
            "build of some days would write those days only)"
        )
        log.info("recipe %s: %s", recipe.name, note)
        return note
    notes = []
    empty = [p for p in requested if p not in written]
    if empty:
        kept = [p for p in empty if p in before]
        notes.append(
            f"no rows for {', '.join(empty)}: nothing written"
            + (f" ({', '.join(kept)} keeps its earlier rows)" if kept else "")
        )
    # Later partitions of the output may read the rows of the days just built: an input
    # read whole (up to the day each build builds), or within a window of days.
    # (An unpartitioned input has no days: it is the same for every partition.)
    reach = {
        name: mode
        for name, mode in recipe.inputs.items()
        if mode != input_modes.SAME and project.datasets[name].partitioned_by
    }
    windows = [m.days for m in reach.values() if isinstance(m, input_modes.DaysBefore)]
    whole = any(mode == input_modes.ALL for mode in reach.values())
    later = [p for p in before if p > max(requested)]
    if later and not whole and out_ref.date_partitions:
        horizon = dt.date.fromisoformat(max(requested)) + dt.timedelta(days=max(windows or [0]))
        later = [p for p in later if dt.date.fromisoformat(p) <= horizon]
    if reach and later:
        span = later[0] if len(later) == 1 else f"{later[0]} … {later[-1]}"
        notes.append(
            f"wrote {days} only; {len(later)} later partition(s) of {recipe.output} ({span}) "
            f"were left as they were, although the recipe reads "
            f"{', '.join(f'{n} {input_modes.describe(m)}' for n, m in reach.items())}: "
            f"if they depend on the rows of {days}, build {recipe.output} without a partition"
        )
    note = "; ".join(notes)
    if note:
        log.warning("recipe %s: %s", recipe.name, note)
    return note


def _run_python(
    project: Project, recipe: RecipeDef, restrict: list[str] | None
) -> tuple[int, list[str]]:
    """Run a Python recipe in its own process and install its output; the rows and
    partitions written."""
    out_ref = project.dataset(recipe.output)
    variables = dict(project.variables)
    if restrict:
        variables["partitions"] = ",".join(restrict)
    try:
        tables = input_tables(project, recipe.inputs, restrict, recipe.output)
        with python_recipes.private_workdir() as tmp:
            outcome = python_recipes.run_to_parquet(
                recipe.sql,
                recipe.sql_file,
                tables,
                variables,
                Path(tmp),
                project.root,
                out_ref.partitioned_by,
                partitions=restrict,
            )
            with ds.session() as con:
                source = f"SELECT * FROM read_parquet('{outcome.parquet}')"
                if restrict:
                    ds.bind_partitions(con, restrict)
                    source = _only_partitions(source, out_ref.partitioned_by)
                written = ds.write(
                    out_ref, source, con=con, replace_all=restrict is None, partitions=restrict
                )
                if not written and out_ref.partitioned_by:
                    return 0, written
                scan = ds.scan_sql(out_ref, written or None)
                return int(con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]), written
    except python_recipes.PythonRecipeError as exc:
        raise FlowError(f"recipe {recipe.name!r} {exc}", exc.user_traceback) from None
    except (ds.DatasetError, duckdb.Error) as exc:
        raise FlowError(f"recipe {recipe.name!r} cannot run: {exc}") from None


def run_recipe(
    project: Project, recipe_name: str, partitions: list[str] | None = None
) -> RecipeRun:
    """Run one recipe. ``partitions`` restricts "same" inputs and the partitions written:
    of a partitioned output, only the recipe's rows of those partitions are written, and
    its other partitions are left as they are (see the module's docstring)."""
    recipe = project.recipes[recipe_name]
    out_ref = project.dataset(recipe.output)
    started = time.perf_counter()
    check_partitions(project, [recipe.output], partitions)
    restrict = partitions if out_ref.partitioned_by else None
    before = out_ref.partitions() if restrict else []
    if python_recipes.is_python(recipe.sql_file) or windowed.is_windows(recipe.sql_file):
        # windows: windowed per-key features, compiled to SQL (engine.project.windows)
        run = _run_python if python_recipes.is_python(recipe.sql_file) else windowed.run
        rows, written = run(project, recipe, restrict)
        note = _partial_note(project, recipe, partitions, written, before)
        seconds = time.perf_counter() - started
        return RecipeRun(recipe_name, recipe.output, restrict, rows, seconds, note)
    folders = data_folders(project)
    try:
        ds.check_query(recipe.sql.strip().rstrip(";"), f"recipe {recipe_name!r}")
        tables = input_tables(project, recipe.inputs, restrict, recipe.output)
        with ds.session(confine_to=folders) as con:
            if restrict:
                ds.bind_partitions(con, restrict)  # a parameter: never SQL text
            for name, table in tables.items():
                con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {table}')
            sql = recipe.sql.strip().rstrip(";")
            if restrict:
                sql = _only_partitions(sql, out_ref.partitioned_by)
            written = ds.write(
                out_ref, sql, con=con, replace_all=restrict is None, partitions=restrict
            )
            rows = 0
            if written or not out_ref.partitioned_by:
                scan = ds.scan_sql(out_ref, written or None)
                rows = con.execute(f"SELECT count(*) FROM {scan}").fetchone()[0]
    except duckdb.Error as exc:
        outside = ds.outside_message(exc, folders)
        if outside:
            raise FlowError(
                f"recipe {recipe_name!r} ({recipe.sql_file}) refused: {outside}"
            ) from None
        detail = describe_sql_error(recipe.sql.strip().rstrip(";"), exc)
        raise FlowError(f"recipe {recipe_name!r} ({recipe.sql_file}) failed {detail}") from None
    except ds.DatasetError as exc:
        raise FlowError(f"recipe {recipe_name!r} cannot run: {exc}") from None
    note = _partial_note(project, recipe, partitions, written, before)
    seconds = time.perf_counter() - started
    return RecipeRun(recipe_name, recipe.output, restrict, int(rows), seconds, note)


Progress = Callable[[int, int, str], None]
"""``progress(done, total, recipe)``: called before each recipe runs and once at the end."""


def _run_all(
    project: Project,
    target: str,
    order: list[str],
    partitions: list[str] | None,
    progress: Progress | None,
) -> BuildResult:
    project.require("write")  # builds write data and may run the project's Python
    check_partitions(project, [target, *order], partitions)
    result = BuildResult(target)
    for i, dataset in enumerate(order):
        recipe = project.recipe_for(dataset)
        assert recipe is not None
        if progress:
            progress(i, len(order), recipe.name)
        result.runs.append(run_recipe(project, recipe.name, partitions))
    if progress:
        progress(len(order), len(order), "")
    return result


def build(
    project: Project,
    target: str,
    partitions: list[str] | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Build ``target`` and every managed dataset upstream of it, in dependency order."""
    return _run_all(project, target, build_order(project, target), partitions, progress)


def downstream_order(project: Project, changed: str) -> list[str]:
    """Managed datasets built (directly or not) from ``changed``, upstream first.

    ``changed`` itself is included when a recipe builds it.
    """
    if changed not in project.datasets:
        raise ProjectError(f"project {project.name!r} has no dataset {changed!r}")
    deps = graph(project)
    affected = {changed}
    grew = True
    while grew:
        grew = False
        for name, inputs in deps.items():
            if name not in affected and inputs & affected:
                affected.add(name)
                grew = True
    try:
        order = list(TopologicalSorter({n: deps[n] & affected for n in affected}).static_order())
    except CycleError as exc:
        raise ProjectError(f"the flow has a cycle: {' -> '.join(exc.args[1])}") from None
    return [n for n in order if project.recipe_for(n) is not None]


def build_downstream(
    project: Project,
    changed: str,
    partitions: list[str] | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Rebuild everything downstream of ``changed`` (e.g. after editing its recipe)."""
    return _run_all(project, changed, downstream_order(project, changed), partitions, progress)
