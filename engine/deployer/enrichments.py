"""Published enrichments: fresh lookup rows for API endpoints without a new package.

An API package freezes the rows its endpoints look up (e.g. per-key profiles) when it is
built. An automation node's scenario step ``publish_enrichment`` publishes the newest rows
of such a dataset, selected as the endpoint declares them (``rows: latest_day | all``), as
a new **immutable version**: a Parquet snapshot named by its SHA-256, the object
``enrichments/<project>/<dataset>/<sha256>.parquet`` of the object store (the home's folder
by default, S3 for API nodes on other hosts: :mod:`engine.storage.objects`) and a row of
``published_enrichments`` (version, as-of day, digest, rows, run, node,
stage). API nodes of the same stage serve the newest version
(:mod:`engine.apinode.enrichment_refresh`), after checking its digest.

Every read and write of a snapshot's bytes goes through :func:`write_snapshot` and
:func:`read_snapshot`.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import duckdb
import pyarrow.parquet as pq
import sqlalchemy as sa

from engine.access import audit, rights
from engine.core.errors import NodalError
from engine.deployer.apipackages import _enrichment_bytes  # the rows a package freezes
from engine.project import windows
from engine.project.project import Project
from engine.storage import datasets as ds
from engine.storage.control import (
    ControlStore,
    infrastructures,
    now_iso,
    published_enrichments,
)
from engine.storage.objects import ObjectStore, ObjectStoreError

ROWS_SELECTIONS = ("latest_day", "all")
SNAPSHOTS = "enrichments"  # under NODAL_HOME
DAY_COLUMN = "day"  # what ``rows: latest_day`` selects on, as packages do


class EnrichmentError(NodalError):
    """An enrichment cannot be published, or a published version cannot be read."""


class EnrichmentRefused(EnrichmentError):
    """A published version that can never be served: its bytes are not the ones published
    (digest), not Parquet, or do not fit the package's table."""


@dataclass(frozen=True)
class Published:
    """One published version of an enrichment."""

    project: str
    dataset: str
    version: int
    stage: str
    rows_selection: str
    as_of: str | None
    path: str  # relative to NODAL_HOME
    sha256: str
    n_rows: int
    run_id: int | None
    node: str
    published_by: str
    published_at: str


def _published(row: Any) -> Published:
    return Published(**{f: row[f] for f in Published.__dataclass_fields__})


# --- the snapshot's bytes: the one place that touches the file ---------------------------------


def write_snapshot(objects: ObjectStore, key: str, data: bytes) -> None:
    """Put ``data`` as the object ``key`` (a reader never sees half of it).

    Snapshots are named by their digest, so one that exists already holds these bytes.
    """
    if objects.exists(key):
        return
    try:
        objects.put_bytes(key, data)
    except ObjectStoreError:
        if not objects.exists(key):  # not another publisher of the same bytes: a failure
            raise


def read_snapshot(objects: ObjectStore, key: str) -> bytes:
    """The bytes of a published snapshot (ObjectStoreError when it cannot be read)."""
    return objects.get_bytes(key)


def verified_bytes(objects: ObjectStore, pub: Published) -> bytes:
    """The snapshot of ``pub`` once its SHA-256 matches the one recorded at publish."""
    try:
        data = read_snapshot(objects, pub.path)
    except ObjectStoreError as exc:
        raise EnrichmentError(
            f"{pub.dataset} v{pub.version}: cannot read {pub.path} ({exc})"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != pub.sha256:
        raise EnrichmentRefused(
            f"{pub.dataset} v{pub.version}: {pub.path} has SHA-256 {digest[:12]}…, not the "
            f"{pub.sha256[:12]}… recorded at publish (changed or corrupted): refused"
        )
    return data


# --- publishing -----------------------------------------------------------------------------------


def stage_of(store: ControlStore, node: str) -> str:
    """The stage of a registered infrastructure; empty for the design node."""
    with store.read() as conn:
        stage = conn.execute(
            sa.select(infrastructures.c.stage).where(infrastructures.c.infra_id == node)
        ).scalar()
    return str(stage or "")


def selections_for(project: Project, dataset: str, service: str | None) -> list[str]:
    """The ``rows:`` selections under which ``service``'s endpoints look ``dataset`` up
    (EnrichmentError when the service does not look it up)."""
    if service is None:
        return ["latest_day"]
    spec = project.api_services.get(service)
    if spec is None:
        raise EnrichmentError(f"project {project.name!r} has no API service {service!r}")
    found: list[str] = []
    for ep in spec.get("endpoints") or []:
        specs = (
            ep.get("enrichments") or [] if ep.get("type", "prediction") == "prediction" else [ep]
        )
        for enr in specs:
            if isinstance(enr, dict) and enr.get("dataset") == dataset:
                rows = str(enr.get("rows", "all"))
                if rows not in found:
                    found.append(rows)
    if not found:
        raise EnrichmentError(f"API service {service!r} looks nothing up in dataset {dataset!r}")
    return found


def rows_bytes(project: Project, dataset: str, rows_selection: str) -> bytes:
    """The rows an endpoint looks up, as Parquet: the very selection a package freezes."""
    try:
        return _enrichment_bytes(project, {"dataset": dataset, "rows": rows_selection})
    except (ds.DatasetError, duckdb.Error, OSError) as exc:
        raise EnrichmentError(
            f"cannot read the rows of {dataset} to publish: {exc} (build it first)"
        ) from None


def as_of(data: bytes) -> str | None:
    """The newest value of the rows' day column (None without one, or without rows)."""
    table = pq.read_table(io.BytesIO(data))
    if DAY_COLUMN not in table.column_names or table.num_rows == 0:
        return None
    newest = max((v for v in table.column(DAY_COLUMN).to_pylist() if v is not None), default=None)
    return None if newest is None else str(getattr(newest, "isoformat", lambda: newest)())


def publish(
    objects: ObjectStore,
    store: ControlStore,
    project: Project,
    dataset: str,
    rows_selection: str,
    *,
    node: str,
    actor: str,
    run_id: int | None = None,
) -> Published:
    """Publish the rows of ``dataset`` (``rows_selection``) as its next immutable version.

    The automation node's action (its scenario step runs as ``node:<infra>``, the run having
    been allowed when it was queued); :func:`publish_by_hand` checks a person's rights.
    Recorded in the audit trail as ``enrichment.publish``.
    """
    if rows_selection not in ROWS_SELECTIONS:
        raise EnrichmentError(f"rows must be one of {', '.join(ROWS_SELECTIONS)}")
    if dataset not in project.datasets:
        raise EnrichmentError(f"project {project.name!r} has no dataset {dataset!r}")
    data = rows_bytes(project, dataset, rows_selection)
    n_rows = pq.read_metadata(io.BytesIO(data)).num_rows
    return _publish_bytes(
        objects, store, project, dataset, data, rows_selection, as_of(data), n_rows,
        node=node, actor=actor, run_id=run_id, what="the snapshot",
    )  # fmt: skip


# --- the windowed state: the events an API node's online store replays ----------------------

WINDOW_EVENTS = "window_events"  # the rows_selection of a windowed-state snapshot
META_SPACE, META_SPEC, META_THROUGH = b"nodal.window_space", b"nodal.window_spec", b"nodal.through"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def window_state_bytes(project: Project, output: str, day: str) -> tuple[bytes, int]:
    """The events of windows output ``output``'s declaration over its longest window before
    the end of ``day`` (only the columns the online store records: key, time, id and the
    ``of`` columns, ordered by key and time), as Parquet whose metadata names the
    declaration's state space; and how many events."""
    spec = windows.declared(project).get(output)
    if spec is None:
        raise EnrichmentError(f"project {project.name!r} has no windows recipe writing {output!r}")
    try:
        end = datetime.combine(date.fromisoformat(day), time()) + timedelta(days=1)
    except ValueError:
        raise EnrichmentError(f"{output}: {day!r} is not a day (YYYY-MM-DD)") from None
    start = end - timedelta(microseconds=spec.longest_us)
    events = project.dataset(spec.events)
    columns = ", ".join(
        _ident(c) for c in dict.fromkeys((spec.key, spec.time, spec.id, *spec.values))
    )
    t = _ident(spec.time)
    try:
        with ds.session(
            {"__events": (events, windows.needed_partitions(spec, events, [day]))}
        ) as con:
            table = con.sql(
                f"SELECT {columns} FROM __events WHERE {t} >= ? AND {t} < ? "
                f"ORDER BY {_ident(spec.key)}, {t}, {_ident(spec.id)}",
                params=[start, end],
            ).to_arrow_table()
    except (ds.DatasetError, duckdb.Error, OSError) as exc:
        raise EnrichmentError(f"cannot read the events of {output} to publish: {exc}") from None
    meta = {META_SPACE: spec.space.encode(), META_SPEC: spec.to_json().encode()}
    meta[META_THROUGH] = end.isoformat().encode()
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), buf)
    return buf.getvalue(), table.num_rows


def publish_window_state(
    objects: ObjectStore,
    store: ControlStore,
    project: Project,
    output: str,
    day: str,
    *,
    node: str,
    actor: str,
    run_id: int | None = None,
) -> Published:
    """Publish the windowed state of ``output`` through the end of ``day`` as its next
    immutable version (``rows_selection`` :data:`WINDOW_EVENTS`, as of ``day``): API nodes
    of this stage replay it into their online store (:mod:`engine.apinode.window_bootstrap`)
    so they answer like batch from their first request. The node's action, as
    :func:`publish`."""
    data, n = window_state_bytes(project, output, day)
    return _publish_bytes(
        objects, store, project, output, data, WINDOW_EVENTS, day, n,
        node=node, actor=actor, run_id=run_id, what="the window state",
    )  # fmt: skip


def _publish_bytes(
    objects: ObjectStore,
    store: ControlStore,
    project: Project,
    dataset: str,
    data: bytes,
    rows_selection: str,
    as_of_day: str | None,
    n_rows: int,
    *,
    node: str,
    actor: str,
    run_id: int | None,
    what: str,
) -> Published:
    """Write ``data`` to the object store under its digest and record it as the next
    version of ``dataset`` (``what`` names it in the error when the store refuses)."""
    digest = hashlib.sha256(data).hexdigest()
    relpath = f"{SNAPSHOTS}/{project.name}/{dataset}/{digest}.parquet"
    try:
        write_snapshot(objects, relpath, data)
    except ObjectStoreError as exc:
        raise EnrichmentError(f"{dataset}: {what} was not published: {exc}") from None
    values = {
        "project": project.name,
        "dataset": dataset,
        "stage": stage_of(store, node),
        "rows_selection": rows_selection,
        "as_of": as_of_day,
        "path": relpath,
        "sha256": digest,
        "n_rows": n_rows,
        "run_id": run_id,
        "node": node,
        "published_by": actor,
    }
    return _insert_version(store, values, actor)


def _insert_version(store: ControlStore, values: dict[str, Any], actor: str) -> Published:
    """Record ``values`` as the next version of its (project, dataset), audited."""
    t = published_enrichments
    for attempt in range(5):  # two nodes publishing at once: the loser takes the next number
        try:
            with store.write() as conn:
                newest = conn.execute(
                    sa.select(sa.func.max(t.c.version)).where(
                        t.c.project == values["project"], t.c.dataset == values["dataset"]
                    )
                ).scalar()
                row = {**values, "version": int(newest or 0) + 1, "published_at": now_iso()}
                conn.execute(sa.insert(t).values(**row))
                audit.record(
                    conn,
                    actor,
                    "enrichment.publish",
                    "enrichment",
                    f"{values['project']}/{values['dataset']}",
                    after={k: row[k] for k in ("version", "as_of", "sha256", "n_rows", "stage")},
                )
            return Published(**row)
        except sa.exc.IntegrityError:
            if attempt == 4:
                raise
    raise AssertionError("unreachable")


def publish_by_hand(
    objects: ObjectStore,
    store: ControlStore,
    project: Project,
    dataset: str,
    rows_selection: str,
    *,
    node: str,
    actor: str,
) -> Published:
    """:func:`publish` by a person (the CLI): ``run`` on ``node`` when it is an
    infrastructure, else ``write`` on the project (the design node). A windows output
    publishes its window state instead (:func:`publish_window_state_by_hand`, its newest
    built day): what the daily step publishes for it, never its rows."""
    if dataset in windows.declared(project):
        return publish_window_state_by_hand(
            objects, store, project, dataset, None, node=node, actor=actor
        )
    rights.require_on_node(store, actor, node, project.name, "run")
    return publish(objects, store, project, dataset, rows_selection, node=node, actor=actor)


def newest_built_day(project: Project, output: str) -> str:
    """The newest day windows output ``output`` was built for (its newest day partition;
    without day partitions, its events' newest): what a hand publish defaults to."""
    spec = windows.declared(project).get(output)
    if spec is None:
        raise EnrichmentError(f"project {project.name!r} has no windows recipe writing {output!r}")
    for ref in (project.dataset(output), project.dataset(spec.events)):
        if ref.partitioned_by and ref.date_partitions:
            days = ref.partitions()
            if days:
                return days[-1]
    raise EnrichmentError(
        f"{output} has no built day to publish the window state of (build it first, or give "
        "the day)"
    )


def publish_window_state_by_hand(
    objects: ObjectStore,
    store: ControlStore,
    project: Project,
    output: str,
    day: str | None,
    *,
    node: str,
    actor: str,
) -> Published:
    """:func:`publish_window_state` by a person (the CLI), through the end of ``day``
    (default: the newest built day, :func:`newest_built_day`), as the daily step publishes
    it; the rights of :func:`publish_by_hand`. A day the output was not built for, or whose
    window holds no event, is refused and nothing is published."""
    rights.require_on_node(store, actor, node, project.name, "run")
    if output not in windows.declared(project):
        raise EnrichmentError(f"project {project.name!r} has no windows recipe writing {output!r}")
    if day is None:
        day = newest_built_day(project, output)
    else:
        try:
            day = date.fromisoformat(day).isoformat()
        except ValueError:
            raise EnrichmentError(f"{output}: {day!r} is not a day (YYYY-MM-DD)") from None
        ref = project.dataset(output)
        if ref.partitioned_by and ref.date_partitions:
            built = ref.partitions()
            if day not in built:
                newest = f"the newest built day is {built[-1]}" if built else "none is built"
                raise EnrichmentError(
                    f"{output} has no data for {day} ({newest}): nothing published"
                )
    data, n = window_state_bytes(project, output, day)
    if n == 0:
        spec = windows.declared(project)[output]
        raise EnrichmentError(
            f"{output}: no event of {spec.events} in the window before the end of {day}: "
            "nothing published"
        )
    return _publish_bytes(
        objects, store, project, output, data, WINDOW_EVENTS, day, n,
        node=node, actor=actor, run_id=None, what="the window state",
    )  # fmt: skip


# --- reading ----------------------------------------------------------------------------------------


def newest(store: ControlStore, stage: str) -> dict[tuple[str, str, str], Published]:
    """(project, dataset, rows selection) → the newest version published on ``stage``:
    one query, what an API worker asks at each sync."""
    t = published_enrichments
    top = (
        sa.select(t.c.project, t.c.dataset, t.c.rows_selection, sa.func.max(t.c.version).label("v"))
        .where(t.c.stage == stage)
        .group_by(t.c.project, t.c.dataset, t.c.rows_selection)
        .subquery()
    )
    q = sa.select(t).join(
        top,
        (t.c.project == top.c.project) & (t.c.dataset == top.c.dataset) & (t.c.version == top.c.v),
    )
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return {(r["project"], r["dataset"], r["rows_selection"]): _published(r) for r in rows}


def candidates(
    store: ControlStore,
    project: str,
    dataset: str,
    stage: str,
    rows_selection: str,
    *,
    above: int,
    below: int,
    after: str,
) -> list[Published]:
    """Versions between ``above`` and ``below`` (exclusive) published on ``stage`` after
    ``after``, newest first: what an API worker falls back on when the newest is refused."""
    t = published_enrichments
    q = (
        sa.select(t)
        .where(
            t.c.project == project,
            t.c.dataset == dataset,
            t.c.stage == stage,
            t.c.rows_selection == rows_selection,
            t.c.version > above,
            t.c.version < below,
            t.c.published_at > after,
        )
        .order_by(t.c.version.desc())
        .limit(20)
    )
    with store.read() as conn:
        return [_published(r) for r in conn.execute(q).mappings().all()]


def versions(
    store: ControlStore, project: str | None = None, dataset: str | None = None, limit: int = 200
) -> list[Published]:
    """Published versions, newest first."""
    t = published_enrichments
    q = sa.select(t).order_by(t.c.published_at.desc(), t.c.version.desc()).limit(limit)
    if project:
        q = q.where(t.c.project == project)
    if dataset:
        q = q.where(t.c.dataset == dataset)
    with store.read() as conn:
        return [_published(r) for r in conn.execute(q).mappings().all()]
