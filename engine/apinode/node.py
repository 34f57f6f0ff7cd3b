"""The API node's state: which package versions of each service it serves, swapped atomically.

Each worker process pulls its infrastructure's desired state from the control store (the
API deployments with their traffic split and access mode, and the active API keys),
verifies and extracts new package versions under ``<home>/apinode/<infra>/packages/``,
loads them, and replaces its ``services`` mapping in one assignment: a request in flight
keeps the version it started with, and the new one answers the next request.
"""

from __future__ import annotations

import logging
import random
import zlib
from dataclasses import dataclass
from typing import Any

from engine.apinode import online_state
from engine.apinode.enrichment_refresh import EnrichmentRefresher
from engine.apinode.realtime import Endpoint, PredictionEndpoint, load_service
from engine.core import home as layout
from engine.core.artifacts import ArtifactError, Caps, extract_verified
from engine.core.settings import Settings
from engine.deployer import api_deployer, apipackages
from engine.deployer import deployments as deployer
from engine.deployer.apikeys import KeyChecker
from engine.storage import objects as objstore
from engine.storage.control import ControlStore

log = logging.getLogger("nodal.apinode")


@dataclass(frozen=True)
class LoadedService:
    """One generation (package version) of a service, loaded."""

    service_id: str
    version: str
    definition: dict[str, Any]
    endpoints: dict[str, Endpoint]


class UnknownGeneration(LookupError):
    """``dispatch.forcedGeneration`` names a version this node does not serve."""


@dataclass(frozen=True)
class ServedService:
    """A service as this node serves it: its generations and how traffic is split."""

    service_id: str
    generations: dict[str, LoadedService]
    cumulative: tuple[tuple[float, str], ...]  # (upper bound, generation), last bound 1.0
    described: str  # the mapping as the deployer writes it: v2, or v1=90%,v2=10%
    access_mode: str
    primary: str

    def pick(self, dispatch: Any) -> LoadedService:
        """The generation that answers: forced, sticky by ``dispatchKey``, or drawn at random."""
        if isinstance(dispatch, dict):
            forced = dispatch.get("forcedGeneration")
            if forced is not None:
                gen = self.generations.get(str(forced))
                if gen is None:
                    raise UnknownGeneration(str(forced)[:100])
                return gen
            key = dispatch.get("dispatchKey")
            if key is not None:
                u = zlib.crc32(str(key).encode()) / 2**32  # same key → same generation
                return self._at(u)
        if len(self.cumulative) == 1:
            return self.generations[self.primary]
        return self._at(random.random())

    def _at(self, u: float) -> LoadedService:
        for bound, gen in self.cumulative:
            if u < bound:
                return self.generations[gen]
        return self.generations[self.cumulative[-1][1]]


def _cumulative(traffic: list[dict[str, Any]]) -> tuple[tuple[float, str], ...]:
    out, acc = [], 0.0
    for t in traffic:
        if t["proba"] <= 0:
            continue
        acc += t["proba"]
        out.append((acc, t["generation"]))
    if not out:  # every share is 0: serve the first (forcedGeneration reaches the others)
        return ((1.0, traffic[0]["generation"]),)
    return (*out[:-1], (1.0, out[-1][1]))


class ApiNode:
    def __init__(self, settings: Settings, store: ControlStore, infra_id: str) -> None:
        self.store = store
        self.infra_id = infra_id
        self.home = layout.apinode_home(settings.home, infra_id)
        self.objects = objstore.open_store(settings)  # where packages are published
        self.compiled_cache = settings.compiled_cache
        self.artifact_caps = Caps.from_settings(settings)
        self.services: dict[str, ServedService] = {}
        self.keys = KeyChecker()
        # Windowed features' recent events per key, shared by workers (and replicas).
        self.online_state = online_state.open_state(settings, self.home)
        # Enrichment tables at the newest version published for this stage (issue 15).
        self.enrichments = EnrichmentRefresher(settings.home, store, infra_id, self.objects)

    def load_version(self, service: str, version: str) -> LoadedService:
        info = apipackages.get_package(self.store, service, version)
        dest = self.home / "packages" / service / version
        # Read from the object store at load time only (through <node home>/cache/), never
        # per request; the zip must be the one published: its digest recorded in the control store.
        path = apipackages.fetch(self.objects, info, self.home / "cache")
        try:
            extract_verified(
                path, dest, apipackages.KIND, sha256=info.sha256, caps=self.artifact_caps
            )
        except ArtifactError as exc:
            raise apipackages.PackageError(str(exc)) from None
        except OSError:
            if not dest.exists():  # else another worker of this home extracted it first
                raise
        definition, endpoints = load_service(dest)
        for ep in endpoints.values():  # compiled before swapping in: batch and real time agree
            if isinstance(ep, PredictionEndpoint):
                ep.model = ep.model.compile(self.compiled_cache)
                ep.use_state(self.online_state)
        return LoadedService(service, version, definition, endpoints)

    def sync(self) -> None:
        """Load what the deployer wants; keep serving the old version if a new one fails."""
        keys = KeyChecker.load(self.store, self.infra_id)
        if not keys.same_keys(self.keys):
            self.keys = keys  # keep the verified-key cache while nothing changed
        services: dict[str, ServedService] = {}
        for dep in api_deployer.list_api_deployments(self.store, infra_id=self.infra_id):
            try:
                self._sync_one(dep, services)
            except Exception as exc:  # noqa: BLE001 - one deployment must not stop the others
                log.exception(
                    "%s: syncing deployment %s failed", dep.service, dep.deployment.deployment_id
                )
                current = self.services.get(dep.service)
                if current:
                    services[dep.service] = current  # keep serving what it served
                message = (
                    f"unexpected {type(exc).__name__}: {exc} (the node's log has the details); "
                    f"still serving {current.described if current else 'nothing'}"
                )
                try:
                    deployer.report(
                        self.store,
                        dep.deployment.deployment_id,
                        current.described if current else None,
                        "ERROR",
                        message,
                    )
                except Exception:  # noqa: BLE001 - the control store itself may be what fails
                    log.exception("%s: reporting the failure failed", dep.service)
        try:  # newer published enrichment rows, swapped table by table before serving
            self.enrichments.refresh(services)
        except Exception:  # noqa: BLE001 - stale tables must not stop the deployments' sync
            log.exception("refreshing the enrichment tables failed; keeping the current ones")
        self.services = services  # one assignment: requests see the old or the new mapping

    def _sync_one(
        self, dep: api_deployer.ApiDeployment, services: dict[str, ServedService]
    ) -> None:
        """Load one deployment's generations into ``services`` and report how it went."""
        current = self.services.get(dep.service)
        loaded = dict(current.generations) if current else {}
        errors = []
        for gen in dep.generations:
            if gen in loaded:
                continue
            try:
                loaded[gen] = self.load_version(dep.service, gen)
                log.info("%s: loaded %s", dep.service, gen)
            except (apipackages.PackageError, OSError, ValueError, KeyError) as exc:
                errors.append(f"cannot load {gen} ({exc})")
            except Exception as exc:  # noqa: BLE001 - one package must not stop the others
                log.exception("%s: loading package %s failed", dep.service, gen)
                errors.append(
                    f"cannot load {gen} (unexpected {type(exc).__name__}: {exc}; the "
                    "node's log has the details)"
                )
        if errors:
            served = current.described if current else None
            message = "; ".join(errors) + f"; still serving {served or 'nothing'}"
            log.error("%s: %s", dep.service, message)
            if current:
                services[dep.service] = current
            deployer.report(self.store, dep.deployment.deployment_id, served, "ERROR", message)
            return
        traffic = dep.traffic
        services[dep.service] = ServedService(
            dep.service,
            {g: loaded[g] for g in dep.generations},
            _cumulative(traffic),
            dep.deployment.version,
            dep.access_mode,
            dep.primary,
        )
        unset = dep.access_mode not in api_deployer.ACCESS_MODES
        deployer.report(
            self.store,
            dep.deployment.deployment_id,
            dep.deployment.version,
            "WARNING" if unset else "HEALTHY",
            f"serving {api_deployer.describe(traffic)} "
            + (
                "but refusing every request: no access mode is recorded (set public or keys)"
                if unset
                else f"({dep.access_mode})"
            ),
        )
