"""A deployment's project as its automation node holds it: what Monitoring's hints name.

The pages' empty states tell the user what to run for *that* project: its own scenarios with
the step that would fill the page (``publish_dashboard`` of a map, ``evaluate``), read from
the bundle active on the node, never a fixed scenario name.
"""

from __future__ import annotations

from typing import Any

from engine.automation.node import AutomationNode
from engine.core.settings import Settings
from engine.monitoring import mirror
from engine.project.project import Project, ProjectError
from engine.storage.control import ControlStore


def node_project(settings: Settings, store: ControlStore, infra_id: str, project: str) -> Project:
    """The project active on ``infra_id`` (a ProjectError while no bundle of it is active);
    with an S3 store (``NODAL_STORE_URL``), as mirrored from it (:mod:`.mirror`)."""
    if mirror.mirrored(settings):
        return mirror.mirror_project(settings, store, infra_id, project)
    return AutomationNode(settings, store, infra_id).project(project)


def try_node_project(
    settings: Settings, store: ControlStore, infra_id: str, project: str
) -> Project | None:
    try:
        return node_project(settings, store, infra_id, project)
    except ProjectError:
        return None


def scenarios_with_step(project: Project | None, step_type: str, **match: Any) -> list[str]:
    """Scenarios of ``project`` with a step of ``step_type`` whose keys equal ``match``."""
    if project is None:
        return []
    return sorted(
        name
        for name, spec in project.scenarios.items()
        if any(
            isinstance(step, dict)
            and step.get("type") == step_type
            and all(step.get(k) == v for k, v in match.items())
            for step in spec.get("steps") or []
        )
    )


def run_hint(scenarios: list[str], project: str, infra_id: str) -> str:
    """How to run one of ``scenarios`` now, as a command (empty when there is none)."""
    return " or ".join(
        f"`nodal scenario run {name} --project {project} --infra {infra_id}`" for name in scenarios
    )


def stray_partitions(project: Project | None) -> dict[str, list[str]]:
    """Folders of ``project``'s partitioned datasets that are not valid partitions (ignored by
    every reader, e.g. ``day=tmp``), by dataset; only datasets that have some."""
    if project is None:
        return {}
    out: dict[str, list[str]] = {}
    for name, d in sorted(project.datasets.items()):
        if d.partitioned_by:
            try:
                stray = project.dataset(name).invalid_partitions()
            except (ProjectError, OSError):
                continue
            if stray:
                out[name] = stray
    return out
