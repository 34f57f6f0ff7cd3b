"""The nodal home folder layout (``NODAL_HOME``), in one place."""

from __future__ import annotations

from pathlib import Path


def design_projects(home: Path) -> Path:
    return home / "design" / "projects"


def design_project(home: Path, project: str) -> Path:
    return design_projects(home) / project


def bundles_dir(home: Path, project: str) -> Path:
    return home / "deployer" / "bundles" / project


def api_packages_dir(home: Path, service: str) -> Path:
    return home / "deployer" / "api_packages" / service


def automation_home(home: Path, infra_id: str) -> Path:
    return home / "automation" / infra_id


def apinode_home(home: Path, infra_id: str) -> Path:
    return home / "apinode" / infra_id


def current_project_file(home: Path) -> Path:
    """The project CLI commands act on when they are given none (``nodal project use``)."""
    return home / "current_project"
