"""Scenario runs as the control store records them: request, claim, finish, list, abort.

A run is a row in ``scenario_runs`` (QUEUED → RUNNING → SUCCESS / WARNING / FAILED /
ABORTED); any process may request a run or its abort, the node that executes it claims
it (:mod:`engine.automation.scenarios`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from engine.access import audit, rights
from engine.project.project import ProjectError
from engine.storage.control import (
    ControlStore,
    now_iso,
    run_abort_requests,
    scenario_runs,
    step_runs,
)

SUCCESS, WARNING, FAILED, ABORTED, SKIPPED = "SUCCESS", "WARNING", "FAILED", "ABORTED", "SKIPPED"
RUNNING, QUEUED = "RUNNING", "QUEUED"
# The runner lease's check (engine/automation/lease.py): run first in a transaction that fires
# or starts a run; returns the lease epoch to record, raises if this runner lost the lease.
Fence = Callable[[Connection], int]


def request_run(
    store: ControlStore,
    node: str,
    project: str,
    scenario: str,
    trigger: str,
    params: dict[str, str] | None = None,
    fence: Fence | None = None,
) -> int:
    with store.write() as conn:
        epoch = fence(conn) if fence else None
        return add_run(conn, node, project, scenario, trigger, params, epoch)


def add_run(
    conn: Connection,
    node: str,
    project: str,
    scenario: str,
    trigger: str,
    params: dict[str, str] | None = None,
    lease_epoch: int | None = None,
) -> int:
    """:func:`request_run` inside the caller's transaction."""
    result = conn.execute(
        sa.insert(scenario_runs).values(
            infra_id=node,
            project=project,
            scenario=scenario,
            trigger=trigger,
            params_json=json.dumps(params or {}),
            status="QUEUED",
            message="",
            requested_at=now_iso(),
            lease_epoch=lease_epoch,
        )
    )
    return int(result.inserted_primary_key[0])


def require_run_right(store: ControlStore, actor: str, infra_id: str, project: str) -> None:
    """Running or aborting a scenario needs ``run`` on the infrastructure, or ``write`` on
    the project for a run on the design node (which is no infrastructure)."""
    rights.require_on_node(store, actor, infra_id, project, "run")


def request_manual_run(
    store: ControlStore,
    actor: str,
    infra_id: str,
    project: str,
    scenario: str,
    params: dict[str, str] | None = None,
) -> int:
    """A person's request to run ``scenario`` now (the trigger says who); their right is
    checked and the request is in the audit trail. Schedules and chained scenarios use
    :func:`request_run` from inside the node."""
    require_run_right(store, actor, infra_id, project)
    run_id = request_run(store, infra_id, project, scenario, f"manual ({actor})", params)
    audit.record_now(
        store,
        actor,
        "run.request",
        "run",
        str(run_id),
        after={"infra": infra_id, "project": project, "scenario": scenario, "params": params or {}},
    )
    return run_id


def get_run(store: ControlStore, run_id: int) -> dict[str, Any]:
    with store.read() as conn:
        row = (
            conn.execute(sa.select(scenario_runs).where(scenario_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if row is None:
            raise ProjectError(f"no scenario run {run_id}")
        steps = (
            conn.execute(
                sa.select(step_runs)
                .where(step_runs.c.run_id == run_id)
                .order_by(step_runs.c.step_index)
            )
            .mappings()
            .all()
        )
    return {**dict(row), "steps": [dict(s) for s in steps]}


def list_runs(
    store: ControlStore, node: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    q = sa.select(scenario_runs).order_by(scenario_runs.c.run_id.desc()).limit(limit)
    if node:
        q = q.where(scenario_runs.c.infra_id == node)
    with store.read() as conn:
        return [dict(r) for r in conn.execute(q).mappings().all()]


def claim_run(
    store: ControlStore, run_id: int, bundle_id: str | None, fence: Fence | None = None
) -> bool:
    """QUEUED → RUNNING, unless the same scenario already runs on that node (``fence``: the
    runner lease's check, in the same transaction)."""
    with store.write() as conn:
        epoch = fence(conn) if fence else None
        run = (
            conn.execute(sa.select(scenario_runs).where(scenario_runs.c.run_id == run_id))
            .mappings()
            .first()
        )
        if run is None or run["status"] != "QUEUED":
            return False
        busy = conn.execute(
            sa.select(scenario_runs.c.run_id).where(
                scenario_runs.c.infra_id == run["infra_id"],
                scenario_runs.c.project == run["project"],
                scenario_runs.c.scenario == run["scenario"],
                scenario_runs.c.status == "RUNNING",
            )
        ).first()
        if busy is not None:
            return False
        done = conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id == run_id, scenario_runs.c.status == "QUEUED")
            .values(
                status="RUNNING",
                started_at=now_iso(),
                runner_pid=os.getpid(),
                bundle_id=bundle_id,
                lease_epoch=epoch,
            )
        )
    return done.rowcount == 1  # a concurrent claim (PostgreSQL) took it first


def finish_run(store: ControlStore, run_id: int, status: str, message: str) -> None:
    with store.write() as conn:
        conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id == run_id)
            .values(status=status, message=message, ended_at=now_iso())
        )


def abort_orphans(store: ControlStore, node: str, epoch_below: int | None = None) -> int:
    """Mark RUNNING runs of ``node`` (and their RUNNING steps) ABORTED: at runner start.

    ``epoch_below``: only those started under an earlier runner lease (a new holder's
    takeover); their abort is also requested, so a stale holder that wakes up stops them.
    """
    t = scenario_runs
    where = [t.c.infra_id == node, t.c.status == RUNNING]
    if epoch_below is not None:
        where.append(t.c.lease_epoch.is_(None) | (t.c.lease_epoch < epoch_below))
    with store.write() as conn:
        ids = [r[0] for r in conn.execute(sa.select(t.c.run_id).where(*where))]
        if not ids:
            return 0
        now = now_iso()
        if epoch_below is not None:
            asked = {
                r[0]
                for r in conn.execute(
                    sa.select(run_abort_requests.c.run_id).where(
                        run_abort_requests.c.run_id.in_(ids)
                    )
                )
            }
            for run_id in sorted(set(ids) - asked):
                conn.execute(
                    sa.insert(run_abort_requests).values(
                        run_id=run_id,
                        requested_by=f"runner lease epoch {epoch_below}",
                        requested_at=now,
                    )
                )
        conn.execute(
            sa.update(step_runs)
            .where(step_runs.c.run_id.in_(ids), step_runs.c.status == RUNNING)
            .values(status=ABORTED, message="runner stopped during the step", ended_at=now)
        )
        conn.execute(
            sa.update(scenario_runs)
            .where(scenario_runs.c.run_id.in_(ids))
            .values(status=ABORTED, message="runner stopped during the run", ended_at=now)
        )
        return len(ids)


def request_abort(store: ControlStore, run_id: int, actor: str) -> str:
    """Ask a run to stop. A queued run is ABORTED at once; a running one within a poll.

    Returns the run's status after the request (QUEUED runs become ABORTED, RUNNING stay
    RUNNING until the runner's abort watcher interrupts the step, within about
    ``ABORT_POLL_SECONDS``). Refused for a run that already ended.
    """
    with store.read() as conn:
        run = conn.execute(
            sa.select(scenario_runs.c.infra_id, scenario_runs.c.project).where(
                scenario_runs.c.run_id == run_id
            )
        ).first()
    if run is None:
        raise ProjectError(f"no scenario run {run_id}")
    require_run_right(store, actor, run.infra_id, run.project)
    with store.write() as conn:
        run = conn.execute(
            sa.select(scenario_runs.c.status).where(scenario_runs.c.run_id == run_id)
        ).first()
        if run is None:
            raise ProjectError(f"no scenario run {run_id}")
        audit.record(conn, actor, "run.abort", "run", str(run_id), before={"status": run.status})
        if run.status not in (QUEUED, RUNNING):
            raise ProjectError(f"run {run_id} already ended ({run.status}): nothing to abort")
        if (
            conn.execute(
                sa.select(run_abort_requests.c.run_id).where(run_abort_requests.c.run_id == run_id)
            ).first()
            is None
        ):
            conn.execute(
                sa.insert(run_abort_requests).values(
                    run_id=run_id, requested_by=actor, requested_at=now_iso()
                )
            )
        if run.status == QUEUED:
            conn.execute(
                sa.update(scenario_runs)
                .where(scenario_runs.c.run_id == run_id, scenario_runs.c.status == QUEUED)
                .values(
                    status=ABORTED,
                    message=f"aborted by {actor} before it started",
                    ended_at=now_iso(),
                )
            )
            return ABORTED
    return RUNNING


def abort_requested(store: ControlStore, run_id: int) -> str | None:
    """Who asked to abort ``run_id``, or None."""
    with store.read() as conn:
        row = conn.execute(
            sa.select(run_abort_requests.c.requested_by).where(
                run_abort_requests.c.run_id == run_id
            )
        ).first()
    return row[0] if row else None
