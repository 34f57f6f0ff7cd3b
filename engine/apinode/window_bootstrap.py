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

*Cost* (the poll's thread shares the GIL with the requests of its worker): the snapshot is
decoded a column at a time by pyarrow kernels (:func:`columns_of`: no Python object per
value, the GIL released; :func:`events_of`, one object per value, is the reference it is
held equal to), sorted by key, and handed to the store in chunks
(:data:`engine.apinode.online_state.BULK_CHUNK`): SQLite inserts a chunk with one
``INSERT … SELECT`` from a temporary table in a short write transaction and then pauses as
long, Redis runs one script per key of a chunk in one pipeline. Figures:
``bench/bench_window_bootstrap.py`` and docs/operations.md.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.apinode import online_state
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
    exactly as :class:`engine.project.windows.Windowed` records a request's event. One Python
    object per value: the reference :func:`columns_of` is held equal to (tests)."""
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


# --- the same, a column at a time (pyarrow kernels: C, the GIL released) ---------------------

PY_CHUNK = 50_000  # values per Python pass of a column no kernel can write (GIL held per pass)
# A string that is its own JSON text between quotes, in ASCII (what json.dumps writes too).
_PLAIN_ASCII = r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$"
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'


def _by_python(col: pa.Array, text: Callable[[Any], str]) -> pa.Array:
    """``text`` of each value, in bounded passes (a request thread gets the GIL between)."""
    out: list[str] = []
    for start in range(0, len(col), PY_CHUNK):
        out.extend(text(v) for v in col.slice(start, PY_CHUNK).to_pylist())
    return pa.array(out, pa.string())


def _unique_by_python(col: pa.Array, text: Callable[[Any], str]) -> pa.Array:
    """``text`` of each distinct value once (keys: few distinct), taken for every row."""
    distinct = pc.unique(col)
    texts = _by_python(distinct, text)
    return pc.take(texts, pc.index_in(col, value_set=distinct, skip_nulls=False))


def _numbers(col: pa.Array) -> pa.Array | None:
    """JSON numbers that parse back to the float Python has for each value (decimal: its
    exact digits; float: the shortest that round-trips), always with a dot or an exponent
    (so a float stays a float); None when not finite somewhere (Python writes NaN)."""
    if pa.types.is_decimal(col.type):
        text = pc.cast(col, pa.string())
    else:
        floats = pc.cast(col, pa.float64())  # float32 as the double Python sees
        if pc.all(pc.is_finite(floats)).as_py() not in (True, None):
            return None
        text = pc.cast(floats, pa.string())
    whole = pc.invert(pc.match_substring_regex(text, r"[.eE]"))
    return pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)


def _value_texts(col: pa.Array) -> pa.Array:
    """Each value's JSON text as ``json.dumps`` of the value Python reads from the column
    would parse back (``null`` for a null)."""
    typ, text = col.type, None
    if pa.types.is_integer(typ):
        text = pc.cast(col, pa.string())
    elif pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        text = _numbers(col)
    elif pa.types.is_boolean(typ):
        text = pc.if_else(col, "true", "false")
    elif (pa.types.is_string(typ) or pa.types.is_large_string(typ)) and not pc.any(
        pc.match_substring_regex(col, _NEEDS_ESCAPE)
    ).as_py():
        text = pc.binary_join_element_wise('"', pc.cast(col, pa.string()), '"', "")
    if text is None:  # anything else (escapes, NaN, dates…): Python, a bounded pass at a time
        return _by_python(col, lambda v: json.dumps(_json_value(v), separators=(",", ":")))
    return pc.fill_null(text, "null")


def _key_texts(col: pa.Array) -> pa.Array:
    """Each key's :func:`engine.project.windows.key_text`, byte for byte (the store's name
    for the key: live requests must find the same)."""
    typ = col.type
    if col.null_count == 0:
        if pa.types.is_integer(typ):
            return pc.cast(col, pa.string())
        if (pa.types.is_string(typ) or pa.types.is_large_string(typ)) and pc.all(
            pc.match_substring_regex(col, _PLAIN_ASCII)
        ).as_py() in (True, None):
            return pc.binary_join_element_wise('"', pc.cast(col, pa.string()), '"', "")
    return _unique_by_python(col, windows.key_text)


def _id_texts(col: pa.Array) -> pa.Array:
    """Each event id as ``str`` writes it."""
    if col.null_count == 0 and (pa.types.is_string(col.type) or pa.types.is_integer(col.type)):
        return pc.cast(col, pa.string())
    return _by_python(col, str)


def columns_of(data: bytes, spec: windows.WindowSpec) -> online_state.EventColumns:
    """A snapshot's events as :func:`events_of` makes them, as columns, written by pyarrow
    kernels (no Python object per value, the GIL released) wherever they write exactly what
    Python would: integer, float, decimal, boolean and plain-string values, integer and
    ASCII keys; anything else goes through Python, a bounded pass at a time."""
    table = pq.read_table(io.BytesIO(data), columns=list(spec.fields)).combine_chunks()

    def column(name: str) -> pa.Array:
        col = table.column(name)
        return col.chunk(0) if col.num_chunks == 1 else pa.concat_arrays(col.chunks)

    times = column(spec.time).cast(pa.timestamp("us")).cast(pa.int64())
    if times.null_count:
        raise enrichments.EnrichmentRefused(f"{spec.output}: an event without a time: refused")
    try:
        keys = _key_texts(column(spec.key))
    except TypeError as exc:  # a key real time could not name either
        raise enrichments.EnrichmentRefused(f"{spec.output}: a key is not JSON ({exc})") from None
    parts: list[Any] = ["[", pc.cast(times, pa.string())]
    for name in spec.values:
        parts += [",", _value_texts(column(name))]
    texts = pc.binary_join_element_wise(*parts, "]", "")
    # In key order (then time): a key's events go together (Redis: one script per key and
    # chunk; SQLite: neighbouring rows of its primary key), whatever order the file has.
    order = pc.sort_indices(
        pa.table({"k": keys, "t": times}), sort_keys=[("k", "ascending"), ("t", "ascending")]
    )
    ids = _id_texts(column(spec.id))
    return online_state.EventColumns(*(pc.take(col, order) for col in (keys, ids, times, texts)))


def replay(
    state: Any,
    spec: windows.WindowSpec,
    events: online_state.EventColumns | list[tuple[str, str, list[Any]]],
) -> int:
    """Add ``events`` to ``state`` once per (key, id): in bulk where the store can, else
    one ``record`` each (in time order); how many were new (bulk only; else the count)."""
    if hasattr(state, "record_many"):
        if not isinstance(events, online_state.EventColumns):
            events = online_state.EventColumns.of(events)
        return int(state.record_many(spec.space, events, spec.longest_us, spec.longest_us))
    if isinstance(events, online_state.EventColumns):
        keys, ids, _, texts = events.rows(0, len(events))
        events = [(k, i, json.loads(t)) for k, i, t in zip(keys, ids, texts, strict=True)]
    for key, event_id, event in sorted(events, key=lambda e: e[2][0]):
        state.record(spec.space, key, event_id, event, event[0] - spec.longest_us, spec.longest_us)
    return len(events)


def uses(services: dict[str, Any]) -> list[tuple[str, str, str, windows.Windowed]]:
    """(service, generation, endpoint, windowed features) of every loaded endpoint that
    computes windowed features live."""
    out = []
    for svc in services.values():
        for generation, loaded in svc.generations.items():
            for endpoint_id, ep in loaded.endpoints.items():
                if isinstance(ep, PredictionEndpoint):
                    for table in ep.enrichments:
                        if isinstance(table, windows.Windowed):
                            out.append((svc.service_id, generation, endpoint_id, table))
    return out


class WindowBootstrapper:
    """Replays the newest published window state of each served declaration into the
    worker's online store, once per store (one claim per snapshot in the store)."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.refused: dict[str, str] = {}  # sha256 → why (immutable: never read again)
        # space → the newest published snapshot its store is known to have replayed (by this
        # worker or another one sharing the store), and why the newest one is not (if so):
        # what the worker reports (Monitoring's enrichment age).
        self.replayed: dict[str, enrichments.Published] = {}
        self.problems: dict[str, str] = {}

    def run(
        self,
        services: dict[str, Any],
        newest: dict[tuple[str, str, str], enrichments.Published],
    ) -> list[Bootstrap]:
        done = []
        for live in live_windows(services):
            spec = live.spec
            pub = newest.get((spec.project, spec.output, enrichments.WINDOW_EVENTS))
            if pub is None:
                continue
            if pub.sha256 in self.refused:
                self.problems[spec.space] = self.refused[pub.sha256]
                continue
            try:
                result = self.bootstrap(live.state, spec, pub)
                if result is not None or self._done(live.state, spec, pub):
                    self.replayed[spec.space] = pub
                    self.problems.pop(spec.space, None)
            except (enrichments.EnrichmentError, StateStoreUnavailable) as exc:
                if isinstance(exc, enrichments.EnrichmentRefused):
                    self.refused[pub.sha256] = str(exc)
                self.problems[spec.space] = str(exc)
                log.error("window state %s v%d not replayed: %s", pub.dataset, pub.version, exc)
                continue
            if result is not None:
                done.append(result)
        return done

    @staticmethod
    def _done(state: Any, spec: windows.WindowSpec, pub: enrichments.Published) -> bool:
        """Whether the store says ``pub`` is replayed (another worker may be at it still)."""
        done = getattr(state, "bootstrap_done", None)
        return bool(done is not None and done(spec.space, pub.sha256))

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
            events = columns_of(data, spec)
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
