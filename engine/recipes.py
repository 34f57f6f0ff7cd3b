"""Create and edit SQL recipes, and preview what a recipe would produce before saving it.

A recipe is three pieces of text: ``recipes/<name>.sql``, its entry in ``flow.yaml``
(inputs and their modes, output) and, when its output is new, the output's entry in
``datasets.yaml``. :func:`save_recipe` writes them together through
:mod:`engine.definitions` (refused on a concurrent edit, or when the flow would break).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd

from engine import definitions, flow, yamltext
from engine.errors import NodalError
from engine.project import INPUT_MODES, Project, ProjectError, check_name
from engine.storage import datasets as ds

PREVIEW_ROWS = 20


class RecipeError(NodalError):
    """A recipe's SQL fails or its definition is invalid; the message says where."""


@dataclass(frozen=True)
class Preview:
    rows: pd.DataFrame
    schema: dict[str, str]


def sql_path(name: str) -> str:
    return f"recipes/{name}.sql"


def preview(
    project: Project, sql: str, inputs: Mapping[str, str] | list[str], limit: int = PREVIEW_ROWS
) -> Preview:
    """The first ``limit`` rows and the output schema of ``sql`` over ``inputs``.

    Partitioned inputs read in "same" mode are restricted to their newest partition, as a
    daily build would read them; others are read whole.
    """
    sql = sql.strip().rstrip(";")
    if not sql:
        raise RecipeError("the recipe has no SQL yet")
    modes = dict.fromkeys(inputs, "all") if isinstance(inputs, list) else dict(inputs)
    views: dict[str, Any] = {}
    for name, mode in modes.items():
        ref = project.dataset(name)
        if not ref.exists():
            raise RecipeError(f"input {name!r} has no data yet: build or import it first")
        latest = ref.partitions()[-1:] if (mode == "same" and ref.partitioned_by) else None
        views[name] = (ref, latest)
    try:
        with ds.session(views) as con:
            schema = {r[0]: r[1] for r in con.execute(f"DESCRIBE {sql}").fetchall()}
            rows = con.sql(f"SELECT * FROM ({sql}) LIMIT {int(limit)}").df()
    except duckdb.Error as exc:
        raise RecipeError(flow.describe_sql_error(sql, exc)) from None
    except ds.DatasetError as exc:
        raise RecipeError(str(exc)) from None
    return Preview(rows, schema)


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
    inputs: Mapping[str, str],
    output: str,
    base_version: str | None = None,
    partitioned_by: str | None = None,
) -> str:
    """Create or update recipe ``name``; return the new version of its SQL file.

    ``base_version`` is the SQL file's version the editor started from
    (``definitions.ABSENT`` for a new recipe): a concurrent save is refused with
    :class:`engine.definitions.DefinitionConflict`. A new ``output`` dataset is declared as
    managed (partitioned by ``partitioned_by`` if given).
    """
    check_name(name, "recipe name")
    check_name(output, "output dataset")
    if not sql.strip():
        raise RecipeError(f"recipe {name}: the SQL is empty")
    for ds_name, mode in inputs.items():
        if mode not in INPUT_MODES:
            raise RecipeError(f"recipe {name}: input {ds_name} mode must be one of {INPUT_MODES}")
    if not inputs:
        raise RecipeError(f"recipe {name}: choose at least one input dataset")
    if output in inputs:
        raise RecipeError(f"recipe {name}: {output!r} cannot be both an input and the output")
    unknown = [d for d in inputs if d not in project.datasets]
    if unknown:
        raise RecipeError(f"recipe {name}: {', '.join(unknown)} is not a dataset of the project")
    if all(project.dataset(d).exists() for d in inputs):
        preview(project, sql, inputs, limit=0)  # a recipe that cannot run is not saved
    existing = project.recipes.get(name)
    rel = existing.sql_file if existing else sql_path(name)
    text = sql.rstrip() + "\n"

    def change(current: dict[str, str | None]) -> dict[str, str | None]:
        out: dict[str, str | None] = {rel: text}
        flow_doc = yamltext.load(current["flow.yaml"])
        entry = {"sql": rel, "inputs": dict(inputs), "output": output}
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
        flow.build_order(staged, output)

    base = {rel: base_version} if base_version is not None else None
    versions = definitions.update(
        project.root,
        change,
        base=base,
        validate=no_cycle,
        paths=["flow.yaml", "datasets.yaml"],
        variables=project.variables,
    )
    return versions[rel]
