"""Project and dataset commands: ``nodal project|dataset …``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from engine.cli.common import add, pairs, print_rows, store
from engine.core.settings import Settings


def cmd_project_import(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = design.import_project(s, store(s), Path(a.path), replace=a.replace)
    print(f"project {project.name} imported into {project.root}")
    return 0


def cmd_project_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    print_rows(design.list_projects(store(s)), ["name", "path", "created_at"])
    return 0


def cmd_project_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = design.create_project(s, store(s), a.name, a.description)
    print(f"project {project.name} created in {project.root}")
    return 0


def cmd_dataset_import(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import dataset_import
    from engine.design import projects as design

    if a.infer_only:
        schema = dataset_import.infer_schema(Path(a.path), a.format)
        print_rows([{"column": k, "type": v} for k, v in schema.items()], ["column", "type"])
        return 0
    result = dataset_import.import_file(
        design.open_project(s, a.project),
        a.name or Path(a.path).stem,
        Path(a.path),
        pairs(a.type, "--type"),
        a.format,
        a.partition_by,
        a.description,
    )
    parts = f", {len(result.partitions)} day partitions" if result.partitions else ""
    print(f"dataset {result.dataset}: {result.rows} rows, {len(result.schema)} columns{parts}")
    return 0


def cmd_dataset_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import projects as design

    project = design.open_project(s, a.project)
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
    from engine.design import projects as design

    project = design.open_project(s, a.project)
    profiles = profiling.profile(project.dataset(a.dataset), a.partition or None)
    frame = profiling.summary_frame(profiles)
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
    p.add_argument("path")
    p.add_argument("--name", help="dataset name (letters, digits, _); default: the file name")
    p.add_argument("--project", default="fraud")
    p.add_argument("--format", choices=("csv", "parquet"), help="default: from the file name")
    p.add_argument(
        "--type",
        action="append",
        metavar="COLUMN=TYPE",
        help="correct an inferred type (repeatable)",
    )
    p.add_argument("--partition-by", metavar="COLUMN", help="partition by day of this date column")
    p.add_argument("--description", default="")
    p.add_argument("--infer-only", action="store_true", help="print the inferred schema and stop")
    p = add(dataset, "list", cmd_dataset_list, "List the project's datasets.")
    p.add_argument("--project", default="fraud")
    p = add(
        dataset, "profile", cmd_dataset_profile, "Profile each column (missing, distinct, range)."
    )
    p.add_argument("dataset")
    p.add_argument("--project", default="fraud")
    p.add_argument("--partition", action="append", help="only this partition (repeatable)")
