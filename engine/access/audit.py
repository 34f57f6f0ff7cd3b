"""The audit trail: who changed what, when, from what to what.

Every change a person makes through the engine (deployments, runs, variables, triggers,
bundles, packages, models, API access, keys, users, groups, rights) and every failed
sign-in adds one row, in the same transaction as the change when there is one. Rows are
only ever added: nothing in nodal updates or deletes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.storage.control import ControlStore, audit_log, now_iso


@dataclass(frozen=True)
class AuditEvent:
    id: int
    at: str
    actor: str
    action: str
    object_kind: str
    object_id: str
    before: Any
    after: Any


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def record(
    conn: Connection,
    actor: str,
    action: str,
    object_kind: str,
    object_id: str = "",
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    """Add one event on ``conn`` (the change's own transaction)."""
    conn.execute(
        sa.insert(audit_log).values(
            at=now_iso(),
            actor=actor,
            action=action,
            object_kind=object_kind,
            object_id=object_id,
            before=_json(before),
            after=_json(after),
        )
    )


def record_now(
    store: ControlStore,
    actor: str,
    action: str,
    object_kind: str,
    object_id: str = "",
    **values: Any,
) -> None:
    """Add one event in a transaction of its own (changes made outside the store)."""
    with store.write() as conn:
        record(conn, actor, action, object_kind, object_id, **values)


def events(
    store: ControlStore,
    *,
    actor: str | None = None,
    action: str | None = None,
    object_kind: str | None = None,
    object_id: str | None = None,
    since: str | None = None,
    limit: int = 500,
) -> list[AuditEvent]:
    """The newest events first, filtered by any of the given fields (exact match; ``since``
    is an ISO time or date)."""
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(max(1, min(limit, 10_000)))
    filters: Mapping[str, str | None] = {
        "actor": actor,
        "action": action,
        "object_kind": object_kind,
        "object_id": object_id,
    }
    for column, value in filters.items():
        if value:
            query = query.where(audit_log.c[column] == value)
    if since:
        query = query.where(audit_log.c.at >= since)
    with store.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        AuditEvent(
            id=r["id"],
            at=r["at"],
            actor=r["actor"],
            action=r["action"],
            object_kind=r["object_kind"],
            object_id=r["object_id"],
            before=json.loads(r["before"]) if r["before"] else None,
            after=json.loads(r["after"]) if r["after"] else None,
        )
        for r in rows
    ]
