"""Which partitions a check learned from history may learn from, and "accept as the new
baseline".

A learned check (``distinct_count_in_range``) learns its typical range only from
*accepted* partitions: those whose latest result of that check on that node passed (or
that it never ran on: history older than the check), and those an analyst accepted. A
partition whose check failed is left out, so a drifted day does not widen the range and the
next drifted day fails too, until someone accepts the new normal: :func:`accept` records
who and when (``check_baselines``), and from then on the check learns from that partition
on (the accepted one included), not from the days before it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

from engine.access import audit, rights
from engine.core.errors import NodalError
from engine.storage.control import ControlStore, check_baselines, check_results, now_iso

LEARNED_KINDS = ("distinct_count_in_range",)


class BaselineError(NodalError):
    """A baseline cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Baseline:
    node: str
    project: str
    dataset: str
    check_name: str
    partition: str | None
    value: str | None
    actor: str
    at: str


def _failed(outcome: str, details: str | None) -> bool:
    if details:
        try:
            return bool(json.loads(details).get("failed"))
        except ValueError:
            pass
    return outcome == "ERROR"  # rows written before details existed


def latest(
    store: ControlStore, node: str, project: str, dataset: str, check_name: str
) -> Baseline | None:
    """The newest accepted baseline of a check on a node, if any."""
    t = check_baselines
    with store.read() as conn:
        row = (
            conn.execute(
                sa.select(t)
                .where(
                    t.c.node == node,
                    t.c.project == project,
                    t.c.dataset == dataset,
                    t.c.check_name == check_name,
                )
                .order_by(t.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    if row is None:
        return None
    return Baseline(
        row["node"],
        row["project"],
        row["dataset"],
        row["check_name"],
        row["partition"],
        row["value"],
        row["actor"],
        row["at"],
    )


def rejected_partitions(
    store: ControlStore, node: str, project: str, dataset: str, check_name: str
) -> set[str]:
    """Partitions whose latest result of the check failed and that nobody accepted."""
    t = check_results
    with store.read() as conn:
        rows = conn.execute(
            sa.select(t.c.partition, t.c.outcome, t.c.details)
            .where(
                t.c.node == node,
                t.c.project == project,
                t.c.dataset == dataset,
                t.c.check_name == check_name,
                t.c.partition.is_not(None),
            )
            .order_by(t.c.id)
        ).all()
        accepted = {
            r[0]
            for r in conn.execute(
                sa.select(check_baselines.c.partition).where(
                    check_baselines.c.node == node,
                    check_baselines.c.project == project,
                    check_baselines.c.dataset == dataset,
                    check_baselines.c.check_name == check_name,
                )
            )
        }
    last = {p: _failed(outcome, details) for p, outcome, details in rows}  # the latest wins
    return {p for p, failed in last.items() if failed and p not in accepted}


def learnable(
    store: ControlStore,
    node: str,
    project: str,
    dataset: str,
    check_name: str,
    earlier: list[str],
) -> list[str]:
    """Of ``earlier`` partitions (oldest first), those the check may learn from."""
    base = latest(store, node, project, dataset, check_name)
    if (
        base is not None
        and base.partition is not None
        and earlier
        and base.partition <= earlier[-1]
    ):
        earlier = [p for p in earlier if p >= base.partition]
    rejected = rejected_partitions(store, node, project, dataset, check_name)
    return [p for p in earlier if p not in rejected]


def accept(
    store: ControlStore,
    node: str,
    project: str,
    dataset: str,
    check_name: str,
    partition: str | None,
    actor: str,
    note: str = "",
) -> Baseline:
    """Accept the check's latest result on ``partition`` (None: an unpartitioned dataset's
    latest run) as the new baseline, as ``actor``. Refused unless the check ran there."""
    if not isinstance(actor, str) or not actor.strip():
        raise BaselineError("say who accepts the baseline (actor)")
    # A new normal on a production node is ops' call (configure), on the design node the
    # project's analysts' (write).
    rights.require_on_node(store, actor, node, project, "configure")
    t = check_results
    where = [
        t.c.node == node,
        t.c.project == project,
        t.c.dataset == dataset,
        t.c.check_name == check_name,
        t.c.partition.is_(None) if partition is None else t.c.partition == partition,
    ]
    at = now_iso()
    with store.write() as conn:
        row = conn.execute(
            sa.select(t.c.value, t.c.outcome).where(*where).order_by(t.c.id.desc()).limit(1)
        ).first()
        if row is None:
            where_text = f"partition {partition}" if partition else "this dataset"
            raise BaselineError(
                f"check {check_name!r} has not run on {where_text} of {dataset} "
                f"on {node}: run it first, then accept its result"
            )
        conn.execute(
            sa.insert(check_baselines).values(
                node=node,
                project=project,
                dataset=dataset,
                check_name=check_name,
                partition=partition,
                value=row[0],
                actor=actor.strip(),
                note=note,
                at=at,
            )
        )
        audit.record(
            conn,
            actor,
            "baseline.accept",
            "check",
            f"{project}/{dataset}/{check_name}",
            after={"node": node, "partition": partition, "value": row[0], "note": note},
        )
    return Baseline(node, project, dataset, check_name, partition, row[0], actor.strip(), at)


def history(store: ControlStore, project: str, dataset: str | None = None) -> list[Baseline]:
    """Accepted baselines of a project, newest first."""
    t = check_baselines
    q = sa.select(t).where(t.c.project == project).order_by(t.c.id.desc())
    if dataset:
        q = q.where(t.c.dataset == dataset)
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        Baseline(
            r["node"],
            r["project"],
            r["dataset"],
            r["check_name"],
            r["partition"],
            r["value"],
            r["actor"],
            r["at"],
        )
        for r in rows
    ]


def awaiting(
    store: ControlStore, project: str, dataset: str, check_names: list[str], limit: int = 50
) -> list[dict[str, str | None]]:
    """The latest failed results of learned checks nobody accepted yet, newest first: what
    an analyst may "accept as the new baseline" (node, partition, check, value, message)."""
    if not check_names:
        return []
    t = check_results
    with store.read() as conn:
        rows = (
            conn.execute(
                sa.select(
                    t.c.node,
                    t.c.partition,
                    t.c.check_name,
                    t.c.outcome,
                    t.c.value,
                    t.c.message,
                    t.c.details,
                    t.c.at,
                )
                .where(
                    t.c.project == project, t.c.dataset == dataset, t.c.check_name.in_(check_names)
                )
                .order_by(t.c.id)
            )
            .mappings()
            .all()
        )
        accepted = {
            (r[0], r[1], r[2])
            for r in conn.execute(
                sa.select(
                    check_baselines.c.node,
                    check_baselines.c.check_name,
                    check_baselines.c.partition,
                ).where(check_baselines.c.project == project, check_baselines.c.dataset == dataset)
            )
        }
    latest_rows = {(r["node"], r["check_name"], r["partition"]): r for r in rows}
    out = [
        {k: r[k] for k in ("node", "partition", "check_name", "value", "message", "at")}
        for key, r in latest_rows.items()
        if _failed(r["outcome"], r["details"]) and key not in accepted
    ]
    return sorted(out, key=lambda r: r["at"] or "", reverse=True)[:limit]
