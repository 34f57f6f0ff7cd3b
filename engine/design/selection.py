"""What a command acts on when the user does not name it: never a guess.

A command acts on the project it is given, else on the *current project* (one line in
``<home>/current_project``, written by :func:`use_project`), else it is refused. A model
or API service that is not given is the only one there is (the project's, or the
deployer's for commands that have no project), else it is refused, naming the candidates.
Refusals are :class:`SelectionError`; the caller adds how to name the thing (its option).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from engine.core import home as layout
from engine.core.errors import NodalError
from engine.project.project import PROJECT_FILE, Project, check_name


class SelectionError(NodalError):
    """Nothing was named and there is not exactly one candidate."""


# --- the current project ---------------------------------------------------------------------


def design_project_names(home: Path) -> list[str]:
    """The projects of the design node (folders with a ``project.yaml``)."""
    root = layout.design_projects(home)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if not p.name.startswith(".") and (p / PROJECT_FILE).is_file()
    )


def current_project(home: Path) -> str | None:
    """The current project's name, or ``None`` if none is set."""
    try:
        name = layout.current_project_file(home).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return name or None


def use_project(home: Path, name: str) -> None:
    """Make ``name`` the current project; refused if the design node has no such project."""
    check_name(name, "project name")
    if not (layout.design_project(home, name) / PROJECT_FILE).is_file():
        known = design_project_names(home)
        have = f"its projects: {', '.join(known)}" if known else "it has no project yet"
        raise SelectionError(
            f"no project {name!r} on the design node ({have}): create or import it first"
        )
    path = layout.current_project_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(name + "\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def forget_current_project(home: Path) -> None:
    """Unset the current project (commands then need their project named)."""
    layout.current_project_file(home).unlink(missing_ok=True)


def project_name(home: Path, given: str | None) -> str:
    """``given``, else the current project; :class:`SelectionError` if neither is set."""
    if given:
        return given
    current = current_project(home)
    if current is None:
        raise SelectionError("no project given")
    return current


# --- the only model or service ---------------------------------------------------------------


def _only(what: str, names: list[str] | set[str], where: str, plural: str | None = None) -> str:
    names = sorted(names)
    if len(names) == 1:
        return names[0]
    if not names:
        raise SelectionError(f"no {what} given and {where} has no {what}")
    raise SelectionError(
        f"no {what} given and {where} has {len(names)} {plural or what + 's'} ({', '.join(names)})"
    )


def model_name(project: Project, given: str | None) -> str:
    """``given``, else the project's only saved model."""
    return given or _only("model", set(project.models), f"project {project.name}")


def lab_model_name(project: Project, run_id: str, given: str | None) -> str:
    """``given``, else the one model of the project that has a lab run ``run_id``."""
    if given:
        return given
    from engine.design import lab

    models = {r["spec"]["model"] for r in lab.list_runs(project) if r["run_id"] == run_id}
    return _only(
        f"model with a lab run {run_id}",
        models,
        f"project {project.name}",
        f"models with a lab run {run_id}",
    )


def service_name(project: Project, given: str | None) -> str:
    """``given``, else the project's only API service."""
    return given or _only("API service", set(project.api_services), f"project {project.name}")


def deployer_service_name(
    store: Any,
    home: Path,
    given: str | None,
    infra: str | None = None,
    versions: list[str] | None = None,
) -> str:
    """``given``, else the only API service a deployer-side command can mean.

    The candidates are the services deployed on ``infra`` if given, else the services with
    a published package (of each of ``versions``, if given). When there are several and a
    current project is set, only the current project's packaged services are kept.
    """
    if given:
        return given
    from engine.deployer import api_deployer, apipackages

    packages = apipackages.list_packages(store)
    if infra:
        candidates = {d.deployment.target for d in api_deployer.list_api_deployments(store, infra)}
        where = f"infrastructure {infra}"
    else:
        wanted = set(versions or ())
        candidates = {
            service
            for service in {p.service for p in packages}
            if wanted <= {p.version for p in packages if p.service == service}
        }
        where = "the deployer"
        if wanted:
            where += f" (with package {', '.join(sorted(wanted))})"
    current = current_project(home)
    if len(candidates) > 1 and current:
        mine = candidates & {p.service for p in packages if p.project == current}
        if mine:
            candidates, where = mine, f"{where} for project {current}"
    return _only("API service", candidates, where)
