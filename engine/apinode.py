"""The API node's state: which package version of each service it serves, swapped atomically.

Each worker process pulls its infrastructure's desired state from the control store, verifies
and extracts new package versions under ``<home>/apinode/<infra>/packages/``, loads them, and
replaces its ``services`` mapping in one assignment: a request in flight keeps the version it
started with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from engine import apipackages, deployer
from engine import home as layout
from engine.artifacts import ArtifactError, extract_verified
from engine.realtime import PredictionEndpoint, load_service
from engine.settings import Settings
from engine.storage.control import ControlStore

log = logging.getLogger("nodal.apinode")


@dataclass(frozen=True)
class LoadedService:
    service_id: str
    version: str
    definition: dict[str, Any]
    endpoints: dict[str, PredictionEndpoint]


class ApiNode:
    def __init__(self, settings: Settings, store: ControlStore, infra_id: str) -> None:
        self.store = store
        self.infra_id = infra_id
        self.home = layout.apinode_home(settings.home, infra_id)
        self.services: dict[str, LoadedService] = {}

    def load_version(self, service: str, version: str) -> LoadedService:
        info = apipackages.get_package(self.store, service, version)
        dest = self.home / "packages" / service / version
        try:
            extract_verified(info.path, dest, apipackages.KIND)
        except ArtifactError as exc:
            raise apipackages.PackageError(str(exc)) from None
        definition, endpoints = load_service(dest)
        return LoadedService(service, version, definition, endpoints)

    def sync(self) -> None:
        """Load what the deployer wants; keep serving the old version if the new one fails."""
        services = dict(self.services)
        for dep in deployer.list_deployments(self.store, infra_id=self.infra_id, kind="api"):
            current = services.get(dep.target)
            status, message = "HEALTHY", f"serving {dep.version}"
            if current is None or current.version != dep.version:
                try:
                    services[dep.target] = self.load_version(dep.target, dep.version)
                    log.info("%s: now serving %s", dep.target, dep.version)
                except (apipackages.PackageError, OSError, ValueError, KeyError) as exc:
                    status = "ERROR"
                    served = current.version if current else "nothing"
                    message = f"cannot load {dep.version} ({exc}); still serving {served}"
                    log.error("%s: %s", dep.target, message)
            active = services.get(dep.target)
            deployer.report(
                self.store, dep.deployment_id, active.version if active else None, status, message
            )
        self.services = services  # one assignment: requests see the old or the new mapping
