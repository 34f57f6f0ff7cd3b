"""Fresh enrichment on the API node: the newest published version of each looked-up table.

An endpoint's enrichment tables (and a lookup endpoint's table) come from its package when
the package is loaded. At every sync (every ``NODAL_POLL_SECONDS``, never per request) a
worker asks the control store once for the newest published version of every enrichment
(:func:`engine.deployer.enrichments.newest`, published by automation nodes of the API
node's stage) and, for each table whose newest version is newer than what it serves (and
than its package's copy), reads the snapshot, checks its SHA-256 against the one recorded at
publish and its columns against the package's copy, builds the whole new
:class:`~engine.apinode.realtime.KeyedTable` aside, then swaps it in with one assignment: a
request uses the old table or the new one, never part of either. A version that cannot be
read, is not the one published or does not fit is refused, logged and reported (the old
table keeps serving); a refused digest is not read again.

The same poll replays the newest published window state of each windows declaration into
the worker's online store, once per store (:mod:`engine.apinode.window_bootstrap`), before
the first services are swapped in.

What each worker serves is reported at every sync (``served_enrichments``: version, as-of
day, when it was published), which Monitoring judges (:mod:`engine.monitoring.enrichment_age`);
for an endpoint computing windowed features, also the window-state snapshot its online store
has replayed (source ``window_state``, dataset: the windows output; no version: none yet).
"""

from __future__ import annotations

import io
import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from engine.apinode.realtime import KeyedTable, LookupEndpoint, PredictionEndpoint
from engine.apinode.window_bootstrap import WindowBootstrapper
from engine.apinode.window_bootstrap import uses as window_uses
from engine.core import home as layout
from engine.deployer import apipackages, enrichments
from engine.storage.control import ControlStore, now_iso, served_enrichments
from engine.storage.objects import LocalObjectStore, ObjectStore

log = logging.getLogger("nodal.apinode.enrichment")


def _hours(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


PACKAGE, PUBLISHED = "package", "published"
WINDOW_STATE = "window_state"  # a windows output's state the online store replayed
FORGET_AFTER = timedelta(days=1)  # a worker's report older than this: the worker is gone


@dataclass(frozen=True)
class Origin:
    """Where the rows a table holds come from."""

    source: str  # package | published | window_state
    version: int | None
    as_of: str | None
    published_at: str | None
    sha256: str | None


@dataclass(frozen=True)
class Served:
    """What this worker serves for one enrichment of one endpoint of one generation."""

    service: str
    generation: str
    endpoint: str
    dataset: str
    project: str
    origin: Origin
    max_age_hours: float | None
    problem: str | None


class _Slot:
    """One table of a loaded endpoint, and how to replace it."""

    def __init__(self, endpoint: Any, spec: dict[str, Any], dataset: str, member: str) -> None:
        self.endpoint, self.spec, self.dataset, self.member = endpoint, spec, dataset, member

    def get(self) -> KeyedTable | None:
        if isinstance(self.endpoint, LookupEndpoint):
            return self.endpoint.table
        tables = self.endpoint.enrichments  # KeyedTable, or live windowed state (not ours)
        return next(
            (t for t in tables if isinstance(t, KeyedTable) and t.name == self.dataset), None
        )

    def swap(self, table: KeyedTable) -> None:
        """One attribute assignment: a request holds the old list (or table) or the new."""
        if isinstance(self.endpoint, LookupEndpoint):
            self.endpoint.table = table
        else:
            self.endpoint.enrichments = [
                table if isinstance(t, KeyedTable) and t.name == self.dataset else t
                for t in self.endpoint.enrichments
            ]


def _slots(definition: dict[str, Any], endpoints: dict[str, Any]) -> list[_Slot]:
    out = []
    for spec in definition.get("endpoints") or []:
        ep = endpoints.get(spec.get("id"))
        if isinstance(ep, LookupEndpoint):
            out.append(_Slot(ep, spec, str(spec["dataset"]), f"endpoints/{spec['id']}/lookup"))
        elif isinstance(ep, PredictionEndpoint):
            for enr in spec.get("enrichments") or []:
                member = f"endpoints/{spec['id']}/enrichments/{enr['dataset']}"
                out.append(_Slot(ep, enr, str(enr["dataset"]), member))
    return [slot for slot in out if slot.get() is not None]


class EnrichmentRefresher:
    """Keeps one worker's enrichment tables at the newest published version."""

    def __init__(
        self, home: Path, store: ControlStore, infra_id: str, objects: ObjectStore | None = None
    ) -> None:
        self.home = Path(home)  # NODAL_HOME
        # Where published snapshots are: the home's folder, or S3 for nodes on other hosts.
        self.objects = objects if objects is not None else LocalObjectStore(self.home)
        self.node_home = layout.apinode_home(self.home, infra_id)
        self.store, self.infra_id = store, infra_id
        self.worker = f"{socket.gethostname()}-{os.getpid()}"
        # What each table holds, with the table it was true of (a generation loaded again
        # starts from its package's copy).
        self.origins: dict[tuple[str, str, str, str], tuple[Origin, Any]] = {}
        # "<sha256>:<package copy>" → why it was refused (a published version is immutable)
        self.refused: dict[str, str] = {}
        self._packages: dict[tuple[str, str], tuple[str, str]] = {}
        self._stage: str | None = None
        self._copies: dict[Path, Origin] = {}
        # Windowed features' state: bootstrapped from the batch's published events.
        self.windows = WindowBootstrapper(self.objects)

    def stage(self) -> str:
        if self._stage is None:
            self._stage = enrichments.stage_of(self.store, self.infra_id)
        return self._stage

    def _package(self, service: str, version: str) -> tuple[str, str]:
        """(project, created_at) of a package version, asked once."""
        key = (service, version)
        if key not in self._packages:
            info = apipackages.get_package(self.store, service, version)
            assert info is not None
            self._packages[key] = (info.project, info.created_at)
        return self._packages[key]

    def _package_copy(self, service: str, generation: str, slot: _Slot) -> tuple[Path, Origin]:
        """The package's own copy of a table and its age (read once per generation)."""
        path = self.node_home / "packages" / service / generation / f"{slot.member}.parquet"
        if path not in self._copies:
            _, created_at = self._package(service, generation)
            day = None
            if enrichments.DAY_COLUMN in pq.read_schema(path).names:
                day = enrichments.as_of(path.read_bytes())
            self._copies[path] = Origin(PACKAGE, None, day, created_at, None)
        return path, self._copies[path]

    def refresh(self, services: dict[str, Any]) -> list[Served]:
        """Swap in newer published versions in ``services`` (the node's served services);
        report and return what every table serves now."""
        if not services:
            return []
        newest = enrichments.newest(self.store, self.stage())  # one query per sync
        built: dict[tuple[Any, ...], KeyedTable] = {}
        served: list[Served] = []
        for svc in services.values():
            for generation, loaded in svc.generations.items():
                project, _ = self._package(svc.service_id, generation)
                for slot in _slots(loaded.definition, loaded.endpoints):
                    served.append(
                        self._refresh_slot(svc.service_id, generation, project, slot, newest, built)
                    )
        try:  # the windowed state: the newest published events, replayed once per store
            self.windows.run(services, newest)
        except Exception:  # noqa: BLE001 - empty windows must not stop the tables' refresh
            log.exception("replaying the published window state failed; retried next sync")
        served += self._window_states(services)
        self._report(served)
        return served

    def _window_states(self, services: dict[str, Any]) -> list[Served]:
        """What the online store holds for each endpoint computing windowed features: the
        window-state snapshot it replayed (none yet: the events recorded live only)."""
        out = []
        for service, generation, endpoint, live in window_uses(services):
            spec = live.spec
            project, _ = self._package(service, generation)
            pub = self.windows.replayed.get(spec.space)
            origin = (
                Origin(WINDOW_STATE, None, None, None, None)
                if pub is None
                else Origin(WINDOW_STATE, pub.version, pub.as_of, pub.published_at, pub.sha256)
            )
            problem = self.windows.problems.get(spec.space)
            out.append(
                Served(service, generation, endpoint, spec.output, project, origin, None, problem)
            )
        return out

    def _refresh_slot(
        self,
        service: str,
        generation: str,
        project: str,
        slot: _Slot,
        newest: dict[tuple[str, str, str], enrichments.Published],
        built: dict[tuple[Any, ...], KeyedTable],
    ) -> Served:
        endpoint = slot.endpoint.endpoint_id
        key = (service, generation, endpoint, slot.dataset)
        copy_path, copy = self._package_copy(service, generation, slot)
        held = self.origins.get(key)
        if held is None or held[1] is not slot.get():  # loaded (again) from its package
            held = self.origins[key] = (copy, slot.get())
        origin = held[0]
        rows = str(slot.spec.get("rows", "all"))
        pub = newest.get((project, slot.dataset, rows))
        problem = None
        if (
            pub is not None
            and pub.version != origin.version
            and pub.published_at > str(copy.published_at)
        ):
            problem = self._try(service, generation, key, slot, copy_path, pub, built)
            if problem is not None:  # the newest is refused: the newest good one, if newer
                for older in enrichments.candidates(
                    self.store,
                    project,
                    slot.dataset,
                    self.stage(),
                    rows,
                    above=origin.version or 0,
                    below=pub.version,
                    after=str(copy.published_at),
                ):
                    if self._try(service, generation, key, slot, copy_path, older, built) is None:
                        break
        return Served(
            service,
            generation,
            endpoint,
            slot.dataset,
            project,
            self.origins[key][0],
            _hours(slot.spec.get("max_age_hours")),
            problem,
        )

    def _try(
        self,
        service: str,
        generation: str,
        key: tuple[str, str, str, str],
        slot: _Slot,
        copy_path: Path,
        pub: enrichments.Published,
        built: dict[tuple[Any, ...], KeyedTable],
    ) -> str | None:
        """Swap in ``pub`` (None) or say why it is refused (the table is left as it is)."""
        refused_key = f"{pub.sha256}:{copy_path}"
        if refused_key in self.refused:
            return self.refused[refused_key]
        try:
            cache_key = (pub.sha256, str(copy_path), repr(sorted(slot.spec.items())))
            table = built.get(cache_key)
            if table is None:
                table = built[cache_key] = self._load(pub, slot, copy_path)
        except enrichments.EnrichmentError as exc:
            if isinstance(exc, enrichments.EnrichmentRefused):
                self.refused[refused_key] = str(exc)  # immutable: never read it again
            log.error(
                "%s/%s %s: %s; still serving the previous table", service, key[2], generation, exc
            )
            return str(exc)
        slot.swap(table)
        origin = Origin(PUBLISHED, pub.version, pub.as_of, pub.published_at, pub.sha256)
        self.origins[key] = (origin, table)
        log.info(
            "%s/%s %s: serving %s v%d (as of %s)",
            service,
            key[2],
            generation,
            slot.dataset,
            pub.version,
            pub.as_of,
        )
        return None

    def _load(self, pub: enrichments.Published, slot: _Slot, copy_path: Path) -> KeyedTable:
        """The whole new table, built aside (EnrichmentError when it cannot be trusted)."""
        data = enrichments.verified_bytes(self.objects, pub)
        try:
            schema = pq.read_schema(io.BytesIO(data))
        except (pa.ArrowException, OSError) as exc:
            raise enrichments.EnrichmentRefused(
                f"{pub.dataset} v{pub.version}: not a Parquet file ({exc}): refused"
            ) from None
        expected = pq.read_schema(copy_path)
        misfits = [
            f.name
            for f in expected
            if f.name not in schema.names or not schema.field(f.name).type.equals(f.type)
        ]
        if misfits:
            raise enrichments.EnrichmentRefused(
                f"{pub.dataset} v{pub.version} does not fit the package's table: column(s) "
                f"{', '.join(misfits)} missing or of another type: refused"
            )
        try:
            return KeyedTable.load(slot.dataset, io.BytesIO(data), slot.spec)  # type: ignore[arg-type]
        except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
            raise enrichments.EnrichmentRefused(
                f"{pub.dataset} v{pub.version}: its rows cannot be read ({exc}): refused"
            ) from None

    def _report(self, served: list[Served]) -> None:
        """One row per table and worker in ``served_enrichments`` (like the node's status)."""
        t = served_enrichments
        at = now_iso()
        gone = (datetime.now(UTC) - FORGET_AFTER).isoformat(timespec="microseconds")
        with self.store.write() as conn:
            # Workers that stopped reporting a day ago are gone (restarts leave their rows).
            conn.execute(sa.delete(t).where(t.c.infra_id == self.infra_id, t.c.reported_at < gone))
            for s in served:
                ident = {
                    "infra_id": self.infra_id,
                    "service": s.service,
                    "generation": s.generation,
                    "endpoint": s.endpoint,
                    "dataset": s.dataset,
                    "worker": self.worker,
                }
                values = {
                    "project": s.project,
                    "source": s.origin.source,
                    "version": s.origin.version,
                    "as_of": s.origin.as_of,
                    "published_at": s.origin.published_at,
                    "sha256": s.origin.sha256,
                    "max_age_hours": s.max_age_hours,
                    "problem": s.problem,
                    "reported_at": at,
                }
                mine = sa.and_(*(t.c[k] == v for k, v in ident.items()))
                if not conn.execute(sa.update(t).where(mine).values(**values)).rowcount:
                    conn.execute(sa.insert(t).values(**ident, **values))
