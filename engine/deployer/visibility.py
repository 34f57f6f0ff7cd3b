"""What a person may see on the deployer's side: bundles, API packages, infrastructures.

Changes are refused in the engine (:mod:`engine.access.rights`); these filters are for the
read paths, so the Console lists only what a person has a right on: a bundle or a package
of a project they read, an infrastructure on which they hold any right (``view`` and up,
on it, its stage or ``*``). Administrators see everything.
"""

from __future__ import annotations

from engine.access import rights
from engine.deployer.apipackages import PackageInfo
from engine.deployer.bundles import BundleInfo
from engine.storage.control import ControlStore


def _reads(store: ControlStore, actor: str):  # noqa: ANN202
    projects = rights.scopes_with(store, actor, "project", "read")
    return lambda project: projects is None or project in projects


def bundles_for(store: ControlStore, actor: str, items: list[BundleInfo]) -> list[BundleInfo]:
    """The bundles of projects ``actor`` may read."""
    reads = _reads(store, actor)
    return [b for b in items if reads(b.project)]


def packages_for(store: ControlStore, actor: str, items: list[PackageInfo]) -> list[PackageInfo]:
    """The API packages of projects ``actor`` may read."""
    reads = _reads(store, actor)
    return [p for p in items if reads(p.project)]


def infras_for(
    store: ControlStore, actor: str, infras: list[dict], right: str = "view"
) -> list[dict]:
    """The infrastructures (rows of ``list_infras``) on which ``actor`` holds ``right``."""
    return [i for i in infras if rights.allowed(store, actor, right, infra=i["infra_id"])]
