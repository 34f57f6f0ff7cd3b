"""How old the enrichment rows each API deployment serves are, and whether that is stale.

The API workers report what they serve at every sync (``served_enrichments``: the package's
copy or a published version, its as-of day and when it was published); automation nodes
record what they publish (``published_enrichments``). For each API deployment, endpoint and
enriched dataset, the **oldest** table any live worker serves is judged (a worker is live
while it reported within ``grace`` of the node's newest report):

* **behind**: a newer version was published for the API node's stage more than ``grace``
  ago and a worker still serves an older one (it could not load it: the reason is shown).
  The promise "API nodes never serve a profile older than the last successful batch run"
  is this: within one poll interval of a successful publish, every worker serves it.
* **too old**: the table was published (or, for the package's copy, packaged) more than
  the enrichment's declared ``max_age_hours`` ago: the batch has stalled.

Either is UNHEALTHY, on Monitoring's Status (through the status alerts) and API health.

An endpoint computing windowed features also reports which window-state snapshot its online
store has replayed (source ``window_state``, dataset: the windows output; as-of: the day it
runs through): **behind** as above when the newest published window state has not been
replayed within ``grace`` (a version the worker refused says why); never ``too old`` (the
live events keep the windows current between snapshots).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from engine.core.settings import load_settings
from engine.deployer import enrichments
from engine.storage.control import ControlStore, served_enrichments

STALE = "UNHEALTHY"
WINDOW_STATE = "window_state"  # a source: the window-state snapshot an online store replayed


@dataclass(frozen=True)
class EnrichmentAge:
    infra_id: str
    service: str
    endpoint: str
    dataset: str
    generation: str
    source: str  # package | published | window_state (the online store's replayed snapshot)
    version: int | None
    as_of: str | None
    published_at: str | None
    age_hours: float | None
    newest_version: int | None  # newest published for the node's stage
    newest_published_at: str | None
    max_age_hours: float | None
    workers: int
    problem: str | None
    status: str
    message: str

    @property
    def served(self) -> str:
        if self.source == WINDOW_STATE:
            return "window state: none" if self.version is None else f"window state v{self.version}"
        return "the package's copy" if self.version is None else f"v{self.version}"


def default_grace() -> timedelta:
    """Three poll intervals (NODAL_POLL_SECONDS) and at least 15 s: a publish is served by
    every worker within one, the rest is room for a slow load."""
    return timedelta(seconds=max(15.0, 3 * load_settings().poll_seconds))


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def ages(
    store: ControlStore,
    infra_id: str | None = None,
    service: str | None = None,
    *,
    now: datetime | None = None,
    grace: timedelta | None = None,
) -> list[EnrichmentAge]:
    """The age and status of every enrichment table API nodes report serving."""
    now = now or datetime.now(UTC)
    grace = grace or default_grace()
    t = served_enrichments
    q = sa.select(t)
    if infra_id:
        q = q.where(t.c.infra_id == infra_id)
    if service:
        q = q.where(t.c.service == service)
    with store.read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings().all()]
    newest_report: dict[str, datetime] = {}
    for r in rows:
        at = _time(r["reported_at"]) or now
        newest_report[r["infra_id"]] = max(newest_report.get(r["infra_id"], at), at)
    groups: dict[tuple[str, str, str, str, str], list[dict]] = {}
    for r in rows:  # live workers only: a dead worker's last report is not what is served
        if (_time(r["reported_at"]) or now) >= newest_report[r["infra_id"]] - grace:
            key = (r["infra_id"], r["service"], r["generation"], r["endpoint"], r["dataset"])
            groups.setdefault(key, []).append(r)
    published: dict[str, dict] = {}
    out = []
    for (infra, svc, gen, endpoint, dataset), reports in sorted(groups.items()):
        stage = enrichments.stage_of(store, infra)
        if stage not in published:
            published[stage] = _newest_by_kind(enrichments.newest(store, stage).values())
        oldest = min(reports, key=lambda r: (r["published_at"] or "", r["version"] or 0))
        problem = next((r["problem"] for r in reports if r["problem"]), None)
        kind = WINDOW_STATE if oldest["source"] == WINDOW_STATE else "rows"
        newest = published[stage].get((oldest["project"], dataset, kind))
        out.append(
            _judge(infra, svc, gen, endpoint, dataset, oldest, newest, reports, problem, now, grace)
        )
    return out


def _newest_by_kind(
    versions: Iterable[enrichments.Published],
) -> dict[tuple[str, str, str], enrichments.Published]:
    """(project, dataset, rows | window_state) → the newest version: a windows output's
    window state is judged against window states only, a table against rows only."""
    out: dict[tuple[str, str, str], enrichments.Published] = {}
    for p in versions:
        kind = WINDOW_STATE if p.rows_selection == enrichments.WINDOW_EVENTS else "rows"
        held = out.get((p.project, p.dataset, kind))
        if held is None or p.version > held.version:
            out[(p.project, p.dataset, kind)] = p
    return out


def _judge(
    infra: str,
    service: str,
    generation: str,
    endpoint: str,
    dataset: str,
    row: dict,
    newest: enrichments.Published | None,
    reports: list[dict],
    problem: str | None,
    now: datetime,
    grace: timedelta,
) -> EnrichmentAge:
    at = _time(row["published_at"])
    age = (now - at).total_seconds() / 3600 if at else None
    max_age = row["max_age_hours"]
    window = row["source"] == WINDOW_STATE
    if window:
        what = (
            f"{dataset} window state v{row['version']} (replayed)"
            if row["version"]
            else f"{dataset} window state (none replayed: live events only)"
        )
    else:
        what = f"{dataset} {'v' + str(row['version']) if row['version'] else '(package copy)'}"
    as_of = (
        f"through {row['as_of']}, "
        if window and row["as_of"]
        else f"as of {row['as_of']}, "
        if row["as_of"]
        else ""
    )
    reasons, status = [], "HEALTHY"
    newer = newest is not None and (row["published_at"] or "") < newest.published_at
    if newer and newest is not None and now - (_time(newest.published_at) or now) > grace:
        status = STALE
        reasons.append(
            f"{what} is stale: v{newest.version} (as of {newest.as_of or '-'}) was published "
            f"at {newest.published_at[:19]} and is not "
            + ("replayed into the online store" if window else "served")
            + (f" ({problem})" if problem else "")
        )
    if max_age is not None and age is not None and age > max_age:
        status = STALE
        reasons.append(
            f"{what} is stale: {as_of}published {age:.1f} h ago, more than max_age_hours "
            f"{max_age:g} (no publish since: has the batch stalled?)"
        )
    if not reasons:
        reasons.append(
            f"{what} {as_of}published {age:.1f} h ago" if age is not None else f"{what} served"
        )
        if problem:
            reasons.append(f"refused a newer version: {problem}")
    return EnrichmentAge(
        infra,
        service,
        endpoint,
        dataset,
        generation,
        row["source"],
        row["version"],
        row["as_of"],
        row["published_at"],
        age,
        newest.version if newest else None,
        newest.published_at if newest else None,
        max_age,
        len(reports),
        problem,
        status,
        "; ".join(reasons),
    )


def frame(rows: list[EnrichmentAge]) -> pd.DataFrame:
    """The ages as a table for a page: one row per deployment, endpoint, generation and
    enriched dataset."""
    columns = [
        "service",
        "endpoint",
        "generation",
        "dataset",
        "served",
        "as of",
        "published at",
        "age (h)",
        "newest published",
        "max age (h)",
        "workers",
        "status",
        "why",
    ]
    return pd.DataFrame(
        [
            [
                a.service,
                a.endpoint,
                a.generation,
                a.dataset,
                a.served,
                a.as_of,
                (a.published_at or "")[:19],
                None if a.age_hours is None else round(a.age_hours, 1),
                None if a.newest_version is None else f"v{a.newest_version}",
                a.max_age_hours,
                a.workers,
                a.status,
                a.message,
            ]
            for a in rows
        ],
        columns=columns,
    )
