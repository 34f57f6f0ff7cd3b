"""Bootstrapping the online state of windowed features from the batch's events.

The automation node's daily scenario publishes, for each windows declaration, the events of
its longest window before the end of the run's day (``publish_enrichment`` of a windows
output: :func:`engine.deployer.enrichments.publish_window_state`, an immutable snapshot in
the object store). At every sync (never per request) an API worker looks at the newest such
version of its stage for each declaration it serves; when the online store it shares has not
replayed that snapshot yet (a new version, a fresh deployment, a new replica on an emptied
store, a flushed Redis: the store itself remembers what it replayed), the worker claims it in
the store, checks the snapshot's SHA-256 and declaration, and adds its events through the
store's bulk form of ``record`` (once per key and event id).

*No double count:* an event the API already recorded (it was scored live, before or after the
batch day ended) has the same key and id in the snapshot and is ignored; the snapshot holds
nothing after the end of its day, so the events since then are those the API recorded. A
replay of the same snapshot adds nothing. Events of the snapshot that a key's later requests
have moved out of its window are never counted (features count only the window before each
event) and go at that key's next request or TTL.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.apinode.online_state import StateStoreUnavailable
from engine.apinode.realtime import PredictionEndpoint
from engine.deployer import enrichments
from engine.project import windows
from engine.storage.objects import ObjectStore

log = logging.getLogger("nodal.apinode.windows")

LEASE_SECONDS = 600.0  # a claim older than this (its worker died mid-replay) is taken over


@dataclass(frozen=True)
class Bootstrap:
    """One replay of a published window state into a store."""

    dataset: str
    version: int
    space: str
    events: int
    added: int
    seconds: float


def live_windows(services: dict[str, Any]) -> list[windows.Windowed]:
    """The windowed features the loaded generations compute live, one per (state, space)."""
    seen: dict[tuple[int, str], windows.Windowed] = {}
    for svc in services.values():
        for loaded in svc.generations.values():
            for ep in loaded.endpoints.values():
                if isinstance(ep, PredictionEndpoint):
                    for table in ep.enrichments:
                        if isinstance(table, windows.Windowed):
                            seen.setdefault((id(table.state), table.spec.space), table)
    return list(seen.values())


def events_of(data: bytes, spec: windows.WindowSpec) -> list[tuple[str, str, list[Any]]]:
    """A snapshot's rows as the store records them: (key text, event id, [t_us, *values]),
    exactly as :class:`engine.project.windows.Windowed` records a request's event."""
    table = pq.read_table(io.BytesIO(data))
    times = table.column(spec.time).cast(pa.timestamp("us")).cast(pa.int64()).to_pylist()
    keys = table.column(spec.key).to_pylist()
    ids = table.column(spec.id).to_pylist()
    values = [table.column(c).to_pylist() for c in spec.values]
    out = []
    for i, t_us in enumerate(times):
        vals = [_json_value(col[i]) for col in values]
        out.append((windows.key_text(keys[i]), str(ids[i]), [t_us, *vals]))
    return out


def _json_value(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


def replay(state: Any, spec: windows.WindowSpec, events: list[tuple[str, str, list[Any]]]) -> int:
    """Add ``events`` to ``state`` once per (key, id): in bulk where the store can, else
    one ``record`` each (in time order); how many were new (bulk only; else the count)."""
    if hasattr(state, "record_many"):
        return int(state.record_many(spec.space, events, spec.longest_us, spec.longest_us))
    for key, event_id, event in sorted(events, key=lambda e: e[2][0]):
        state.record(spec.space, key, event_id, event, event[0] - spec.longest_us, spec.longest_us)
    return len(events)


class WindowBootstrapper:
    """Replays the newest published window state of each served declaration into the
    worker's online store, once per store (one claim per snapshot in the store)."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.refused: dict[str, str] = {}  # sha256 → why (immutable: never read again)

    def run(
        self,
        services: dict[str, Any],
        newest: dict[tuple[str, str, str], enrichments.Published],
    ) -> list[Bootstrap]:
        done = []
        for live in live_windows(services):
            spec = live.spec
            pub = newest.get((spec.project, spec.output, enrichments.WINDOW_EVENTS))
            if pub is None or pub.sha256 in self.refused:
                continue
            try:
                result = self.bootstrap(live.state, spec, pub)
            except (enrichments.EnrichmentError, StateStoreUnavailable) as exc:
                if isinstance(exc, enrichments.EnrichmentRefused):
                    self.refused[pub.sha256] = str(exc)
                log.error("window state %s v%d not replayed: %s", pub.dataset, pub.version, exc)
                continue
            if result is not None:
                done.append(result)
        return done

    def bootstrap(
        self, state: Any, spec: windows.WindowSpec, pub: enrichments.Published
    ) -> Bootstrap | None:
        """Replay ``pub`` into ``state`` unless the store replayed it already (None)."""
        claim = getattr(state, "claim_bootstrap", None)
        if claim is not None and not claim(spec.space, pub.sha256, LEASE_SECONDS):
            return None  # done already, or another worker is at it
        start = time.perf_counter()
        try:
            data = enrichments.verified_bytes(self.objects, pub)
            meta = pq.read_schema(io.BytesIO(data)).metadata or {}
            if meta.get(enrichments.META_SPACE, b"").decode() != spec.space:
                raise enrichments.EnrichmentRefused(
                    f"{pub.dataset} v{pub.version} was published for another declaration of "
                    f"{spec.recipe} than the one this package serves: refused"
                )
            events = events_of(data, spec)
        except (enrichments.EnrichmentError, pa.ArrowException, OSError) as exc:
            if claim is not None:  # another worker (or this one, next sync) may try again
                state.release_bootstrap(spec.space, pub.sha256)
            if isinstance(exc, enrichments.EnrichmentError):
                raise
            raise enrichments.EnrichmentRefused(
                f"{pub.dataset} v{pub.version}: not a window state snapshot ({exc}): refused"
            ) from None
        added = replay(state, spec, events)
        if hasattr(state, "finish_bootstrap"):
            keep = max(spec.longest_us / 1e6, LEASE_SECONDS)
            state.finish_bootstrap(spec.space, pub.sha256, keep)
        result = Bootstrap(
            pub.dataset, pub.version, spec.space, len(events), added, time.perf_counter() - start
        )
        log.info(
            "window state %s v%d (through %s) replayed: %d events, %d new, in %.3f s",
            pub.dataset,
            pub.version,
            pub.as_of,
            result.events,
            result.added,
            result.seconds,
        )
        return result
