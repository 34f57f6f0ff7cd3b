"""An API service saved as one whole YAML file (``api_services/<service>.yaml``), as written
by hand or in an editor, checked by the API Designer before anything is written.

:func:`save_service` replays the file through the API Designer's own saves
(:func:`engine.design.apidesigner.save_prediction_endpoint`, ``save_lookup_endpoint``,
``add_test_queries``) on a staged copy of the project, so a file is refused exactly when the
Designer would refuse the same service, every problem listed at once. Only then is the text
written, as given (comments kept), through :mod:`engine.project.definitions` (project lock,
staged load, atomic replace; refused on a concurrent edit when a base version is passed).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from engine.core.errors import NodalError
from engine.design import apidesigner
from engine.design.projects import DefinitionInvalid, yaml_problem
from engine.project import definitions
from engine.project.project import (
    Project,
    ProjectError,
    check_name,
    definition_files,
    load_project,
)

ENDPOINT_TYPES = ("prediction", "lookup")


def read_service(project: Project, service_id: str) -> tuple[str, str]:
    """The service file's text and version; a :class:`ProjectError` if there is none."""
    loaded = apidesigner.read_service(project, service_id)
    if loaded.text is None:
        known = sorted(project.api_services)
        have = f"its API services: {', '.join(known)}" if known else "it has no API service"
        raise ProjectError(f"project {project.name!r} has no API service {service_id!r} ({have})")
    return loaded.text, loaded.version


def _parse(service_id: str, text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The endpoints the Designer can check, and what is wrong with the file's shape."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return [], [yaml_problem(exc)]
    if not isinstance(doc, dict) or doc.get("service_id", service_id) != service_id:
        return [], [f"the YAML must be a mapping with service_id: {service_id}"]
    endpoints = doc.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return [], ["endpoints: give a list of at least one endpoint"]
    problems: list[str] = []
    checkable: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, ep in enumerate(endpoints, 1):
        if not isinstance(ep, dict) or not ep.get("id"):
            problems.append(f"endpoint {i}: give it an id")
            continue
        label = f"endpoint {ep['id']}"
        if str(ep["id"]) in seen:
            problems.append(f"{label}: defined twice")
            continue
        seen.add(str(ep["id"]))
        if ep.get("type", "prediction") not in ENDPOINT_TYPES:
            problems.append(
                f"{label}: type must be one of {', '.join(ENDPOINT_TYPES)}, not {ep.get('type')!r}"
            )
            continue
        queries = ep.get("test_queries") or []
        if not isinstance(queries, list) or not all(isinstance(q, dict) for q in queries):
            problems.append(f"{label}: test_queries must be a list of mappings")
            continue
        checkable.append(ep)
    return checkable, problems


def _replay(
    project: Project, service_id: str, description: str, endpoints: list[dict[str, Any]]
) -> list[str]:
    """Save the service through the API Designer into a staged copy of the project."""
    problems = []
    with tempfile.TemporaryDirectory(prefix="nodal-service-") as tmp:
        staged_root = Path(tmp) / "project"
        for rel in definition_files(project.root):
            if str(rel) == apidesigner.service_rel(service_id):
                continue  # rebuilt from the new text alone
            (staged_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project.root / rel, staged_root / rel)
        staged = load_project(staged_root, project.data_root, project.variables)
        for ep in endpoints:
            try:
                if ep.get("type", "prediction") == "prediction":
                    apidesigner.save_prediction_endpoint(
                        staged,
                        service_id,
                        str(ep["id"]),
                        str(ep.get("model") or ""),
                        ep.get("enrichments") or None,
                        description,
                    )
                else:
                    apidesigner.save_lookup_endpoint(
                        staged,
                        service_id,
                        str(ep["id"]),
                        str(ep.get("dataset") or ""),
                        ep.get("key") or ep.get("keys"),
                        ep.get("columns"),
                        ep.get("on_missing", "ignore"),
                        ep.get("on_multiple", "first"),
                        ep.get("rows", "all"),
                        description,
                    )
            except (NodalError, KeyError, TypeError, AttributeError) as exc:
                problems.append(f"endpoint {ep['id']}: {_message(exc)}")
                continue
            for q in ep.get("test_queries") or []:
                try:
                    apidesigner.add_test_queries(staged, service_id, str(ep["id"]), [q])
                except (NodalError, KeyError, TypeError, AttributeError) as exc:
                    label = q.get("name") or "(no name)"
                    problems.append(f"endpoint {ep['id']}: test query {label}: {_message(exc)}")
    return problems


def _message(exc: Exception) -> str:
    if isinstance(exc, NodalError):
        return str(exc)
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}"
    return f"malformed ({exc})"


def save_service(
    project: Project, service_id: str, text: str, base_version: str | None = None
) -> str:
    """Save ``api_services/<service_id>.yaml`` as ``text``; return its new version.

    Refused with :class:`DefinitionInvalid` listing every problem the API Designer finds
    (nothing written), or with ``DefinitionConflict`` if ``base_version`` no longer holds.
    """
    what = f"API service {service_id}"
    try:
        check_name(service_id, "service id")
    except ProjectError as exc:
        raise DefinitionInvalid(what, [str(exc)]) from None
    endpoints, problems = _parse(service_id, text)
    if endpoints:
        description = str((yaml.safe_load(text) or {}).get("description") or "")
        problems += _replay(project, service_id, description, endpoints)
    if problems:
        raise DefinitionInvalid(what, problems)
    rel = apidesigner.service_rel(service_id)
    versions = definitions.save_project(
        project,
        {rel: text if text.endswith("\n") else text + "\n"},
        base={rel: base_version} if base_version is not None else None,
    )
    return versions[rel]
