"""Which maps a deployment has, and how each is declared on its node.

A map is a ``type: map`` dashboard (:mod:`engine.project.dashboard_spec`) of the bundle
active on the automation node; :func:`map_choices` lists a project's maps with the newest
day each has published, :func:`map_spec` reads one's declaration (its roles name the
columns), :func:`scoring_models` finds the models that score its source and
:func:`model_threshold` the active one's decision threshold. The day itself is loaded by
:mod:`engine.monitoring.maps`.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from engine.core.settings import Settings
from engine.deployer.deployments import Deployment
from engine.models import saved as models
from engine.models.scoring import OUTPUT_COLUMNS
from engine.monitoring import deployed
from engine.project import dashboard_spec
from engine.project.dashboard_spec import MapSpec
from engine.project.project import Project, ProjectError
from engine.storage.control import ControlStore, published_days

SCORER = (OUTPUT_COLUMNS[0], OUTPUT_COLUMNS[1])  # the batch scorer's score and flag columns


@dataclass(frozen=True)
class MapChoice:
    """One map dashboard of a deployed project, and the newest day it has published."""

    dashboard: str
    title: str
    newest_day: str | None


def _newest_published(store: ControlStore) -> dict[tuple[str, str, str], str]:
    """(infra, project, dashboard) → the newest day published there."""
    t = published_days
    q = sa.select(t.c.infra_id, t.c.project, t.c.dashboard, sa.func.max(t.c.day)).group_by(
        t.c.infra_id, t.c.project, t.c.dashboard
    )
    with store.read() as conn:
        return {(i, p, d): str(day) for i, p, d, day in conn.execute(q).all()}


def map_choices(
    settings: Settings, store: ControlStore, project: str, infra_id: str
) -> list[MapChoice]:
    """The project's map dashboards on ``infra_id``, newest published day first."""
    node = deployed.try_node_project(settings, store, infra_id, project)
    if node is None:
        return []
    newest = _newest_published(store)
    choices = [
        MapChoice(
            name,
            str(node.dashboards[name].get("title") or name),
            newest.get((infra_id, project, name)),
        )
        for name in dashboard_spec.map_dashboards(node)
    ]
    return sorted(choices, key=lambda c: (c.newest_day or "", c.dashboard), reverse=True)


def newest_map_days(
    settings: Settings, store: ControlStore, deployments: list[Deployment]
) -> dict[tuple[str, str], str]:
    """(infra, project) → the newest day any of its map dashboards published."""
    out: dict[tuple[str, str], str] = {}
    for dep in deployments:
        days = [c.newest_day for c in map_choices(settings, store, dep.target, dep.infra_id)]
        if any(days):
            out[(dep.infra_id, dep.target)] = max(d for d in days if d)
    return out


def map_spec(node: Project, dashboard: str) -> MapSpec:
    """Map dashboard ``dashboard`` as ``node`` declares it (a ProjectError says what is wrong)."""
    problems = dashboard_spec.problems(node, dashboard)
    if problems:
        raise ProjectError("; ".join(problems))
    return dashboard_spec.map_spec(dashboard, node.dashboards[dashboard], SCORER)


def map_spec_on(
    settings: Settings, store: ControlStore, project: str, infra_id: str, dashboard: str
) -> MapSpec | None:
    """Map dashboard ``dashboard`` as the node's active bundle declares it (None: unreadable;
    :func:`engine.monitoring.maps.load_map_day` says why)."""
    node = deployed.try_node_project(settings, store, infra_id, project)
    if node is None or dashboard not in dashboard_spec.map_dashboards(node):
        return None
    try:
        return map_spec(node, dashboard)
    except ProjectError:
        return None


def scoring_models(project: Project, source: str) -> list[str]:
    """The models whose score step writes ``source`` (else every model of the project)."""
    return sorted(
        {
            step["model"]
            for spec in project.scenarios.values()
            for step in spec.get("steps") or []
            if isinstance(step, dict)
            and step.get("type") == "score"
            and step.get("output") == source
            and "model" in step
        }
    ) or sorted(project.models)


def model_threshold(project: Project, source: str) -> float | None:
    """Decision threshold of the active version of the model that scores ``source``."""
    for name in scoring_models(project, source):
        for meta in models.list_versions(project, name):
            if meta["active"]:
                return float(meta["threshold"])
    return None
