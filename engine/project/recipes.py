"""Create and edit recipes, and preview what a recipe would produce before saving it.

A recipe is three pieces of text: its body, ``recipes/<name>.sql`` (SQL run by DuckDB),
``recipes/<name>.py`` (a Python ``run(inputs, variables)``, see
:mod:`engine.project.python_recipes`) or ``recipes/<name>.yaml`` (a windows declaration, see
:mod:`engine.project.windows`), its entry in ``flow.yaml`` (inputs and their modes, output;
the body's path is under ``sql:``, ``python:`` or ``windows:``) and, when its output is new, the
output's entry in ``datasets.yaml``. :func:`save_recipe` writes them together through
:mod:`engine.project.definitions` (refused on a concurrent edit, or when the flow would break).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from engine.core import yamltext
from engine.core.errors import NodalError
from engine.project import definitions, flow, input_modes, python_recipes, windows
from engine.project.project import Project, ProjectError, RecipeDef, by_day, check_name
from engine.storage import datasets as ds

PREVIEW_ROWS = 20
LANGUAGES = ("sql", "python", "windows")
_SUFFIX = {"sql": "sql", "python": "py", "windows": "yaml"}
# What the editor calls each language's body.
BODY = {"sql": "SQL", "python": "Python", "windows": "windows declaration (YAML)"}


class RecipeError(NodalError):
    """A recipe's SQL or Python fails or its definition is invalid; the message says where.

    For Python, ``user_traceback`` holds the frames of the analyst's code.
    """

    def __init__(self, message: str, user_traceback: str = "") -> None:
        super().__init__(message)
        self.user_traceback = user_traceback


@dataclass(frozen=True)
class Preview:
    rows: pd.DataFrame
    schema: dict[str, str]


def sql_path(name: str, language: str = "sql") -> str:
    return f"recipes/{name}.{_SUFFIX.get(language, 'sql')}"


def language_of(recipe_file: str) -> str:
    """sql, python or windows (a ``.yaml`` windows declaration, :mod:`engine.project.windows`)."""
    if python_recipes.is_python(recipe_file):
        return "python"
    return "windows" if windows.is_windows(recipe_file) else "sql"


def preview(
    project: Project,
    sql: str,
    inputs: Mapping[str, input_modes.InputMode] | list[str],
    limit: int = PREVIEW_ROWS,
    language: str = "sql",
    output: str | None = None,
    name: str | None = None,
) -> Preview:
    """The first ``limit`` rows and the output schema of a recipe body over ``inputs``.

    Inputs are read as a daily build of the newest day would read them
    (:func:`preview_reads`): "same" inputs that day, windows the days before it, others
    whole. SQL must be one query, and it may read files only in the project's data and
    the landing zone (:class:`RecipeError`
    otherwise, before anything runs or is written). A Python body runs in full, in its
    own process, on those inputs (``output`` and ``name``, if given, name the dataset it
    would build and the recipe, for its checks and messages).
    """
    project.require("write")  # runs or changes the project's code
    modes = dict.fromkeys(inputs, "all") if isinstance(inputs, list) else dict(inputs)
    if language == "windows":
        return _preview_windows(project, sql, modes, limit, output, name)
    if language == "python":
        display = sql_path(name, "python") if name else "the recipe"
        return _preview_python(project, sql, modes, limit, output, display)
    sql = sql.strip().rstrip(";")
    if not sql:
        raise RecipeError("the recipe has no SQL yet")
    views: dict[str, Any] = {}
    for name, parts in preview_reads(project, modes).items():
        ref = project.dataset(name)
        views[name] = (ref, parts)
    folders = flow.data_folders(project)
    try:
        ds.check_query(sql, "a recipe")
        with ds.session(confine_to=folders) as con:
            for name, (ref, parts) in views.items():
                con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM {flow.scan(ref, parts)}')
            schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE {sql}").fetchall()}
            rows = con.sql(f"SELECT * FROM ({sql}) LIMIT {int(limit)}").df()
    except duckdb.Error as exc:
        outside = ds.outside_message(exc, folders)
        raise RecipeError(outside or flow.describe_sql_error(sql, exc)) from None
    except ds.DatasetError as exc:
        raise RecipeError(str(exc)) from None
    return Preview(rows, schema)


def preview_reads(
    project: Project, modes: Mapping[str, input_modes.InputMode]
) -> dict[str, list[str] | None]:
    """The partitions of each input a preview reads (None: all of it), as a daily build of the
    newest day would: the newest partition of the partitioned inputs read "same", or, when
    none is, the day after the newest partition of the windowed ones. Refuses an input
    without data (:class:`RecipeError`)."""
    for name, mode in modes.items():
        if not project.dataset(name).exists():
            raise RecipeError(f"input {name!r} has no data yet: build or import it first")
        d = project.datasets[name]
        # The output may not be known yet: only the input's side of a window is checked here.
        problem = input_modes.applies_problem(mode, by_day(d), bool(d.partitioned_by), True)
        if problem:
            raise RecipeError(f"input {name}: {problem}")
    same = [
        project.dataset(n).partitions()[-1]
        for n, m in modes.items()
        if m == input_modes.SAME and by_day(project.datasets[n])
    ]
    windowed = [n for n, m in modes.items() if isinstance(m, input_modes.DaysBefore)]
    day = max(same) if same else None
    if day is None and windowed:
        newest = max(project.dataset(n).partitions()[-1] for n in windowed)
        day = str(dt.date.fromisoformat(newest) + dt.timedelta(days=1))
    out: dict[str, list[str] | None] = {}
    for name, mode in modes.items():
        ref = project.dataset(name)
        if mode == input_modes.SAME:
            out[name] = ref.partitions()[-1:] if ref.partitioned_by else None
        elif isinstance(mode, input_modes.DaysBefore) and day is not None:
            out[name] = input_modes.partitions_to_read(mode, ref.partitions(), [day], True)
        else:
            out[name] = None
    return out


def _preview_python(
    project: Project,
    code: str,
    modes: dict[str, input_modes.InputMode],
    limit: int,
    output: str | None,
    display: str,
) -> Preview:
    if not code.strip():
        raise RecipeError("the recipe has no Python yet")
    tables = {
        name: flow.scan(project.dataset(name), parts)
        for name, parts in preview_reads(project, modes).items()
    }
    key = None
    if output and output in project.datasets:
        key = project.datasets[output].partitioned_by
    try:
        with python_recipes.private_workdir() as tmp:
            outcome = python_recipes.run_to_parquet(
                code, display, tables, project.variables, Path(tmp), project.root, key
            )
            with ds.session() as con:
                scan = f"read_parquet('{outcome.parquet}')"
                schema = {
                    r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()
                }
                rows = con.sql(f"SELECT * FROM {scan} LIMIT {int(limit)}").df()
    except python_recipes.PythonRecipeError as exc:
        raise RecipeError(str(exc), exc.user_traceback) from None
    except ds.DatasetError as exc:
        raise RecipeError(str(exc)) from None
    return Preview(rows, schema)


def _preview_windows(
    project: Project,
    text: str,
    modes: dict[str, input_modes.InputMode],
    limit: int,
    output: str | None,
    name: str | None,
) -> Preview:
    """What a build of the events' newest day would write (checked as on save)."""
    if not text.strip():
        raise RecipeError("the recipe has no windows declaration yet")
    recipe = RecipeDef(
        name or "recipe", sql_path(name or "recipe", "windows"), text, modes, output or ""
    )
    try:
        rows, schema = windows.preview(project, recipe, limit)
    except ProjectError as exc:
        raise RecipeError(str(exc)) from None
    return Preview(rows, schema)


def _check_modes(
    project: Project,
    name: str,
    inputs: Mapping[str, object],
    output: str,
    partitioned_by: str | None,
) -> None:
    """Refuse an input mode that is not one, or that does not fit its input or the output."""
    out_def = project.datasets.get(output)
    out_by_day = by_day(out_def) if out_def else partitioned_by == "day"
    for ds_name, mode in inputs.items():
        try:
            parsed = input_modes.parse(input_modes.to_yaml(mode))  # type: ignore[arg-type]
        except input_modes.InputModeError as exc:
            raise RecipeError(f"recipe {name}: input {ds_name}: {exc}") from None
        d = project.datasets[ds_name]
        problem = input_modes.applies_problem(parsed, by_day(d), bool(d.partitioned_by), out_by_day)
        if problem:
            raise RecipeError(f"recipe {name}: input {ds_name}: {problem}")


def read_recipe(project: Project, name: str) -> tuple[str, str]:
    """A recipe's SQL and the version of its file (for a later :func:`save_recipe`)."""
    recipe = project.recipes.get(name)
    if recipe is None:
        raise ProjectError(f"project {project.name!r} has no recipe {name!r}")
    text, version = definitions.read(project.root, recipe.sql_file)
    return text or "", version


def save_recipe(
    project: Project,
    name: str,
    sql: str,
    inputs: Mapping[str, input_modes.InputMode],
    output: str,
    base_version: str | None = None,
    partitioned_by: str | None = None,
    language: str | None = None,
) -> str:
    """Create or update recipe ``name``; return the new version of its body's file.

    ``base_version`` is the file's version the editor started from
    (``definitions.ABSENT`` for a new recipe): a concurrent save is refused with
    :class:`engine.project.definitions.DefinitionConflict`. A new ``output`` dataset is declared as
    managed (partitioned by ``partitioned_by`` if given). ``language`` (sql, python or
    windows; default: the existing recipe's, or sql) cannot change for an existing recipe.
    SQL that fails on the current data is refused; Python is checked (syntax, a
    ``run(inputs, variables)``), not run; a windows declaration is checked by
    :func:`engine.project.windows.parse` against the project as it would be saved (its
    error names the field; nothing is written).
    """
    project.require("write")  # runs or changes the project's code
    check_name(name, "recipe name")
    check_name(output, "output dataset")
    existing = project.recipes.get(name)
    if existing:
        own = language_of(existing.sql_file)
        if language not in (None, own):
            raise RecipeError(
                f"recipe {name} is a {own} recipe ({existing.sql_file}): "
                f"create a new recipe to write it in {language}"
            )
        language = own
    language = language or "sql"
    if language not in LANGUAGES:
        raise RecipeError(f"recipe {name}: language must be one of {', '.join(LANGUAGES)}")
    if not sql.strip():
        raise RecipeError(f"recipe {name}: the {BODY[language]} is empty")
    if not inputs:
        raise RecipeError(f"recipe {name}: choose at least one input dataset")
    if output in inputs:
        raise RecipeError(f"recipe {name}: {output!r} cannot be both an input and the output")
    unknown = [d for d in inputs if d not in project.datasets]
    if unknown:
        raise RecipeError(f"recipe {name}: {', '.join(unknown)} is not a dataset of the project")
    _check_modes(project, name, inputs, output, partitioned_by)
    rel = existing.sql_file if existing else sql_path(name, language)
    if language == "python":
        try:
            python_recipes.check_code(sql, rel)
        except python_recipes.PythonRecipeError as exc:
            raise RecipeError(str(exc)) from None
    elif language == "sql" and all(project.dataset(d).exists() for d in inputs):
        preview(project, sql, inputs, limit=0)  # a recipe that cannot run is not saved
    text = sql.rstrip() + "\n"

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        out: dict[str, str | None] = {rel: text}
        flow_doc = yamltext.load(current["flow.yaml"])
        modes = {d: input_modes.to_yaml(m) for d, m in inputs.items()}
        entry = {language: rel, "inputs": modes, "output": output}
        if (flow_doc.get("recipes") or {}).get(name) != entry:
            out["flow.yaml"] = yamltext.set_entry(current["flow.yaml"], name, entry, "recipes")
        if output not in yamltext.load(current["datasets.yaml"]):
            spec: dict[str, Any] = {"kind": "managed"}
            if partitioned_by:
                spec["partitioned_by"] = partitioned_by
            spec["description"] = f"Output of recipe {name}."
            out["datasets.yaml"] = yamltext.set_entry(current["datasets.yaml"], output, spec)
        return out

    def no_cycle(staged: Project) -> None:
        if language == "windows":  # the declaration, checked against the staged project
            try:
                windows.parse(staged, staged.recipes[name])
            except ProjectError as exc:
                raise RecipeError(str(exc)) from None
        flow.build_order(staged, output)

    base = {rel: base_version} if base_version is not None else None
    versions = definitions.update_project(
        project,
        change,
        base=base,
        validate=no_cycle,
        paths=["flow.yaml", "datasets.yaml"],
    )
    return versions[rel]
