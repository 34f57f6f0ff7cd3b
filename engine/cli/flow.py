"""Recipe and flow commands: ``nodal recipe|flow …``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.cli.common import add, add_project, open_project
from engine.core.settings import Settings


@contextlib.contextmanager
def _show_user_traceback() -> Iterator[None]:
    """A failed Python recipe: print the frames of the analyst's code before the error."""
    try:
        yield
    except Exception as exc:
        tb = getattr(exc, "user_traceback", "")
        if tb:
            print("Traceback (your code only):\n" + tb.rstrip(), file=sys.stderr)
        raise


def _recipe_body(a: argparse.Namespace) -> tuple[str, str] | None:
    """(text, language) from --sql/--sql-file/--python-file, if one was given."""
    if getattr(a, "python_file", None):
        return Path(a.python_file).read_text(), "python"
    if a.sql_file:
        return Path(a.sql_file).read_text(), "sql"
    if a.sql:
        return a.sql, "sql"
    return None


def _inputs(items: list[str] | None) -> dict[str, Any]:
    """``--input DATASET[:MODE]`` values: MODE is all (default), same or days_before=N."""
    from engine.project import input_modes

    inputs: dict[str, Any] = {}
    for item in items or []:
        name, _, mode = item.partition(":")
        try:
            inputs[name] = input_modes.parse_text(mode or "all")
        except input_modes.InputModeError as exc:
            raise input_modes.InputModeError(f"--input {item}: {exc}") from None
    return inputs


def cmd_recipe_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design
    from engine.project import definitions, recipes

    project = open_project(s, a)
    text, language = _recipe_body(a) or ("", "sql")
    inputs = _inputs(a.input)
    base = None if a.force else definitions.ABSENT
    if a.name in project.recipes and not a.force:
        base = recipes.read_recipe(project, a.name)[1]
    recipes.save_recipe(project, a.name, text, inputs, a.output, base, a.partitioned_by, language)
    file = design.open_project(s, project.name).recipes[a.name].sql_file
    print(
        f"recipe {a.name} of project {project.name} saved ({file}): "
        f"{', '.join(inputs)} -> {a.output}"
    )
    return 0


def cmd_recipe_preview(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import recipes

    project = open_project(s, a)
    body = _recipe_body(a)
    if body:
        (text, language), inputs, name = body, _inputs(a.input), a.name
    else:
        recipe = project.recipes.get(a.name or "")
        if recipe is None:
            raise recipes.RecipeError(f"project {project.name!r} has no recipe {a.name!r}")
        text, inputs, name = recipe.sql, recipe.inputs, recipe.name
        language = recipes.language_of(recipe.sql_file)
    output = project.recipes[name].output if name in project.recipes else None
    with _show_user_traceback():
        preview = recipes.preview(project, text, inputs, a.rows, language, output, name)
    print(f"preview of {name or 'the recipe'} in project {project.name}")
    print("schema: " + ", ".join(f"{k} {v}" for k, v in preview.schema.items()))
    print(preview.rows.to_string(index=False))
    return 0


def cmd_flow_build(s: Settings, a: argparse.Namespace) -> int:
    from engine.project import flow

    project = open_project(s, a)
    build = flow.build_downstream if a.downstream else flow.build
    with _show_user_traceback():
        result = build(project, a.dataset, a.partition or None)
    for r in result.runs:
        print(f"{r.recipe:<16} -> {r.output:<16} {r.rows:>10} rows  {r.seconds:6.2f}s")
    n = len(result.runs)
    print(f"project {project.name}: {n} recipe{'' if n == 1 else 's'} run")
    return 0


def register(top: Any) -> None:
    recipe = top.add_parser("recipe", help="SQL and Python recipes").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        recipe,
        "create",
        cmd_recipe_create,
        "Create or update a recipe: SQL (refused if it fails on the current data) or Python "
        "(recipes/NAME.py defining run(inputs, variables) -> DataFrame; refused on a syntax "
        "error or without run()).",
    )
    p.add_argument("name")
    add_project(p)
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="DATASET[:all|same|days_before=N]",
        help="repeatable; all (default): the whole input (for a day's build, up to that day); "
        "same: the partitions being built; days_before=N: the N days before each day built",
    )
    p.add_argument("--output", required=True)
    p.add_argument("--sql", help="the SQL text")
    p.add_argument("--sql-file", help="read the SQL from this file")
    p.add_argument(
        "--python-file", help="a Python recipe: read its code from this file (new recipes)"
    )
    p.add_argument("--partitioned-by", help="partition a new output dataset by this column")
    p.add_argument("--force", action="store_true", help="overwrite even if changed meanwhile")
    p = add(
        recipe,
        "preview",
        cmd_recipe_preview,
        "Show a recipe's first rows and output schema (a Python recipe runs in full, in its "
        "own process).",
    )
    p.add_argument("name", nargs="?")
    add_project(p)
    p.add_argument("--sql")
    p.add_argument("--sql-file")
    p.add_argument("--python-file", help="preview this Python recipe code instead")
    p.add_argument("--input", action="append", metavar="DATASET[:all|same|days_before=N]")
    p.add_argument("--rows", type=int, default=10)

    flow = top.add_parser("flow", help="build datasets").add_subparsers(dest="cmd", required=True)
    p = add(
        flow, "build", cmd_flow_build, "Build a dataset and everything upstream of it, in order."
    )
    p.add_argument("dataset")
    add_project(p)
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
    p.add_argument(
        "--downstream", action="store_true", help="rebuild everything built from DATASET instead"
    )
