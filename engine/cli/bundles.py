"""Bundle commands: ``nodal bundle …``."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.cli.common import add, add_project, open_project, pairs, print_rows, project_name, store
from engine.core.settings import Settings


def cmd_bundle_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import bundles
    from engine.design import bundle_contents
    from engine.storage.objects import open_store

    project = open_project(s, a)
    objects = open_store(s)  # NODAL_STORE_URL, else the home
    if a.dataset or a.model_version:
        info = bundle_contents.create_bundle(
            s.home,
            store(s),
            project,
            a.bundle_id,
            a.notes,
            s.user,
            a.dataset or (),
            pairs(a.model_version, "--model-version"),
            objects=objects,
        )
    else:
        info = bundles.create_bundle(
            s.home, store(s), project, a.bundle_id, a.notes, s.user, objects=objects
        )
    print(
        f"bundle {info.bundle_id} of {info.project} created: {info.path} (sha256 {info.sha256[:12]}…)"
    )
    return 0


def cmd_bundle_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import bundles
    from engine.design import selection

    project = a.project or selection.current_project(s.home)
    print(f"bundles of project {project}:" if project else "bundles of every project:")
    rows = [asdict(b) for b in bundles.list_bundles(store(s), project)]
    print_rows(rows, ["project", "bundle_id", "created_by", "created_at", "release_notes"])
    return 0


def cmd_bundle_verify(s: Settings, a: argparse.Namespace) -> int:
    from engine.deployer import bundles

    if a.file and not a.project:  # a zip names its own project
        manifest = bundles.verify_bundle(Path(a.file))
    else:
        project = project_name(s, a)
        path = Path(a.file) if a.file else bundles.get_bundle(store(s), project, a.bundle_id).path
        manifest = bundles.verify_bundle(path, project=project)
    print(
        f"bundle {manifest['bundle_id']} of project {manifest.get('project', '?')} OK: "
        f"{len(manifest['members'])} members verified"
    )
    return 0


def _print_diff(diff: Any, full: bool) -> None:
    print(f"{diff.before or '(no earlier bundle)'} -> {diff.after}")
    if diff.empty:
        print("  no change")
    for f in diff.files:
        print(f"  {f['change']:<8} {f['path']}")
        if full and f["diff"]:
            print("    " + f["diff"].replace("\n", "\n    ").rstrip())
    for m in diff.models:
        print(f"  model    {m['model']}: {m['before'] or '-'} -> {m['after'] or '-'}")
    for d in diff.data:
        before = f"{d['before']['rows']} rows" if d["before"] else "-"
        after = f"{d['after']['rows']} rows" if d["after"] else "-"
        print(f"  data     {d['dataset']}: {before} -> {after}")


def cmd_bundle_diff(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import bundle_contents

    if a.bundle_id:
        project = project_name(s, a)
        diff = bundle_contents.diff_bundles(store(s), project, a.bundle_id, a.against)
    else:
        current = open_project(s, a)
        project, diff = current.name, bundle_contents.diff_project(store(s), current)
    print(f"project {project}:")
    _print_diff(diff, a.full)
    return 0


def cmd_bundle_revert(s: Settings, a: argparse.Namespace) -> int:
    from engine.design import bundle_contents

    project = open_project(s, a)
    diff = bundle_contents.revert(store(s), project, a.bundle_id)
    print(f"project {project.name} reverted to bundle {a.bundle_id}")
    _print_diff(diff, False)
    return 0


def register(top: Any) -> None:
    bundle = top.add_parser("bundle", help="project bundles").add_subparsers(
        dest="cmd", required=True
    )
    p = add(bundle, "create", cmd_bundle_create, "Snapshot the project as an immutable bundle.")
    p.add_argument("bundle_id")
    add_project(p)
    p.add_argument("--notes", default="", help="release notes")
    p.add_argument(
        "--dataset", action="append", help="carry this managed dataset's data (repeatable)"
    )
    p.add_argument(
        "--model-version", action="append", metavar="MODEL=VERSION", help="default: the active one"
    )
    p = add(
        bundle,
        "diff",
        cmd_bundle_diff,
        "Compare a bundle with the one before it (or the project with the newest bundle).",
    )
    p.add_argument("bundle_id", nargs="?")
    p.add_argument("--against", help="compare with this bundle instead")
    p.add_argument("--full", action="store_true", help="show the text differences")
    add_project(p)
    p = add(
        bundle,
        "revert",
        cmd_bundle_revert,
        "Make the project's definitions, model versions and carried data those of a bundle.",
    )
    p.add_argument("bundle_id")
    add_project(p)
    p = add(bundle, "list", cmd_bundle_list, "List bundles.")
    add_project(p, "only this project's (default: the current project's, else every project's)")
    p = add(bundle, "verify", cmd_bundle_verify, "Check every member's SHA-256.")
    p.add_argument("bundle_id", nargs="?")
    add_project(p)
    p.add_argument("--file", help="verify this zip instead of a published bundle")
