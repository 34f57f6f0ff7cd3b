"""Project and dataset commands: ``nodal project|dataset …``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.common import add, add_project, open_project, pairs, print_rows, store
from engine.core.settings import Settings


def _hint_current(s: Settings, name: str) -> None:
    from engine.design import selection

    current = selection.current_project(s.home)
    if current != name:
        now = f"the current project is {current}" if current else "no current project is set"
        print(f"({now}: `nodal project use {name}` to work on this one without --project)")


def cmd_project_import(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = design.import_project(s, store(s), Path(a.path), replace=a.replace, actor=s.user)
    print(f"project {project.name} imported into {project.root}")
    _hint_current(s, project.name)
    return 0


def cmd_project_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design
    from engine.design import selection

    current = selection.current_project(s.home)
    rows = [
        {**r, "current": "*" if r["name"] == current else ""}
        for r in design.list_projects(store(s))
    ]
    print_rows(rows, ["name", "current", "path", "created_at"])
    return 0


def cmd_project_use(s: Settings, a: argparse.Namespace) -> int:
    import sys

    from engine.design import selection

    if a.clear:
        selection.forget_current_project(s.home)
        print("no current project: commands need --project NAME")
        return 0
    if a.name:
        selection.use_project(s.home, a.name)
        print(f"current project: {a.name} (commands without --project act on it)")
        return 0
    current = selection.current_project(s.home)
    if current is None:
        print("no current project: set one with nodal project use NAME", file=sys.stderr)
        return 1
    print(current)
    return 0


def cmd_project_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = design.create_project(s, store(s), a.name, a.description, actor=s.user)
    print(f"project {project.name} created in {project.root}")
    _hint_current(s, project.name)
    return 0


def cmd_dataset_import(s: Settings, a: argparse.Namespace) -> int:
    from engine.core.errors import NodalError
    from engine.design import dataset_import

    fix = "--drop '' to leave it out, or --rename ''=NAME to name it"
    if a.infer_only:
        schema = dataset_import.infer_schema(Path(a.path), a.format, project=open_project(s, a))
        rows = [{"column": k or "''", "type": v} for k, v in schema.items()]
        print_rows(rows, ["column", "type"])
        if "" in schema:
            print(f"column '' has no name: import it with {fix}")
        return 0
    rename: dict[str, str] = {}
    for item in a.rename or []:
        old, sep, new = item.partition("=")
        if not sep:
            raise NodalError(f"--rename {item!r}: write it as OLD=NEW (''=NEW for no name)")
        if old.strip() in rename:
            raise NodalError(f"--rename: column {old.strip()!r} is renamed twice")
        rename[old.strip()] = new.strip()
    try:
        result = dataset_import.import_file(
            open_project(s, a),
            a.name or Path(a.path).stem,
            Path(a.path),
            pairs(a.type, "--type"),
            a.format,
            a.partition_by,
            a.description,
            drop=a.drop or [],
            rename=rename,
        )
    except dataset_import.UnnamedColumnError as exc:
        raise NodalError(f"{exc} Use {fix}.") from None
    parts = f", {len(result.partitions)} day partitions" if result.partitions else ""
    print(f"dataset {result.dataset}: {result.rows} rows, {len(result.schema)} columns{parts}")
    return 0


def cmd_dataset_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.core.errors import NodalError
    from engine.design import projects as design

    schema: dict[str, str] = {}
    for item in (a.schema or "").split(","):
        if not item.strip():
            continue
        column, sep, typ = item.partition(":")
        if not sep or not column.strip() or not typ.strip():
            raise NodalError(f"--schema {item.strip()!r}: write each column as NAME:TYPE")
        schema[column.strip()] = typ.strip()
    project = open_project(s, a)
    spec = design.create_managed_dataset(project, a.name, schema, a.partition_by, a.description)
    parts = f", partitioned by {spec['partitioned_by']}" if "partitioned_by" in spec else ""
    cols = f"{len(schema)} columns" if schema else "no declared schema"
    print(
        f"dataset {a.name} declared in project {project.name} (managed, {cols}{parts}; no data yet)"
    )
    return 0


def cmd_dataset_list(s: Settings, a: argparse.Namespace) -> int:
    project = open_project(s, a)
    print(f"datasets of project {project.name}:")
    rows = []
    for name, d in project.datasets.items():
        ref = project.dataset(name)
        rows.append(
            {
                "dataset": name,
                "kind": d.kind,
                "partitioned_by": d.partitioned_by or "",
                "partitions": len(ref.partitions()) if d.partitioned_by else "",
                "has_data": "yes" if ref.exists() else "no",
            }
        )
    print_rows(rows, ["dataset", "kind", "partitioned_by", "partitions", "has_data"])
    return 0


def cmd_dataset_profile(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import profiling

    project = open_project(s, a)
    profiles = profiling.profile(project.dataset(a.dataset), a.partition or None)
    frame = profiling.summary_frame(profiles)
    print(f"dataset {a.dataset} of project {project.name}:")
    print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


def register(top: Any) -> None:
    project = top.add_parser("project", help="design-node projects").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        project,
        "import",
        cmd_project_import,
        "Copy a project folder (YAML + SQL) into the design node.",
    )
    p.add_argument("path")
    p.add_argument(
        "--replace", action="store_true", help="replace the definitions of an existing project"
    )
    add(project, "list", cmd_project_list, "List the design node's projects.")
    p = add(project, "create", cmd_project_create, "Create an empty project on the design node.")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p = add(
        project,
        "use",
        cmd_project_use,
        "Set the current project: commands given no --project act on it (it is kept in "
        "NODAL_HOME/current_project). Without NAME: print the current project.",
    )
    p.add_argument("name", nargs="?", help="a project of the design node")
    p.add_argument("--clear", action="store_true", help="unset the current project")

    dataset = top.add_parser("dataset", help="import, list and profile datasets").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        dataset,
        "import",
        cmd_dataset_import,
        "Import a CSV or Parquet file as a managed dataset (a broken row refuses the import, "
        "with its line number, and changes nothing).",
    )
    p.add_argument("path", help="a file in the landing zone (NODAL_DATA_DIR); others are refused")
    p.add_argument("--name", help="dataset name (letters, digits, _); default: the file name")
    add_project(p)
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    p.add_argument(
        "--type",
        action="append",
        metavar="COLUMN=TYPE",
        help="correct an inferred type (repeatable)",
    )
    p.add_argument(
        "--drop",
        action="append",
        metavar="COLUMN",
        help="leave this column out (repeatable); --drop '' for the column with no name",
    )
    p.add_argument(
        "--rename",
        action="append",
        metavar="OLD=NEW",
        help="name a column anew (repeatable); --rename ''=NAME names the column with no "
        "name (the index pandas writes first, header ',a,b'); --type and --partition-by "
        "may use the new name",
    )
    p.add_argument("--partition-by", metavar="COLUMN", help="partition by day of this date column")
    p.add_argument("--description", default="")
    p.add_argument("--infer-only", action="store_true", help="print the inferred schema and stop")
    p = add(
        dataset,
        "create",
        cmd_dataset_create,
        "Declare an empty managed dataset (an output a recipe or scenario step writes) in "
        "datasets.yaml; refused, with every problem listed, if the schema is invalid.",
    )
    p.add_argument("name")
    add_project(p)
    p.add_argument(
        "--schema",
        metavar="COL:TYPE,...",
        help="columns and DuckDB types, e.g. day:DATE,total:DOUBLE (default: none declared)",
    )
    p.add_argument("--partition-by", metavar="COLUMN", help="partition it by this column's values")
    p.add_argument("--description", default="")
    p = add(dataset, "list", cmd_dataset_list, "List the project's datasets.")
    add_project(p)
    p = add(
        dataset, "profile", cmd_dataset_profile, "Profile each column (missing, distinct, range)."
    )
    p.add_argument("dataset")
    add_project(p)
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
