"""The design node: projects as folders of text under ``<home>/design/projects``."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from engine import home as layout
from engine.project import MANAGED_DATA_DIR, Project, ProjectError, load_project
from engine.settings import Settings
from engine.storage.control import ControlStore, now_iso, projects


def node_variables(settings: Settings) -> dict[str, str]:
    """Variables every project sees on the design node."""
    return {"data_dir": str(settings.data_dir.resolve())}


def open_project(settings: Settings, name: str) -> Project:
    root = layout.design_project(settings.home, name)
    if not root.exists():
        raise ProjectError(f"no project {name!r} on the design node (looked in {root})")
    return load_project(root, root / MANAGED_DATA_DIR, node_variables(settings))


def list_projects(store: ControlStore) -> list[dict[str, str]]:
    with store.read() as conn:
        rows = conn.execute(sa.select(projects).order_by(projects.c.name)).mappings().all()
    return [dict(r) for r in rows]


def import_project(
    settings: Settings, store: ControlStore, source: Path, replace: bool = False
) -> Project:
    """Copy a project folder (e.g. ``examples/fraud``) into the design node and register it."""
    source = Path(source)
    probe = load_project(source, source / MANAGED_DATA_DIR, node_variables(settings))
    target = layout.design_project(settings.home, probe.name)
    if target.exists() and not replace:
        raise ProjectError(f"project {probe.name!r} already exists on the design node")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{probe.name}.importing"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(MANAGED_DATA_DIR, "__pycache__"))
    if target.exists():
        # Keep managed data and saved models; replace only the definitions.
        for keep in (MANAGED_DATA_DIR, "saved_models"):
            if (target / keep).exists():
                shutil.move(str(target / keep), str(staging / keep))
        shutil.rmtree(target)
    staging.rename(target)
    with store.write() as conn:
        conn.execute(sa.delete(projects).where(projects.c.name == probe.name))
        conn.execute(
            sa.insert(projects).values(name=probe.name, path=str(target), created_at=now_iso())
        )
    return open_project(settings, probe.name)
