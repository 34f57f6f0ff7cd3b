"""The deployer: infrastructures, deployments (desired state) and their audit history.

Ops change *desired* state here; automation and API nodes pull it, act, and report back
with :func:`report`. Every change is a row in ``deployment_history`` (who, when, from, to).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine import bundles
from engine.errors import NodalError
from engine.storage.control import (
    ControlStore,
    deployment_history,
    deployments,
    infrastructures,
    now_iso,
)

KINDS = ("automation", "apinode")
STATUSES = ("HEALTHY", "WARNING", "UNHEALTHY", "ERROR", "OUT_OF_SYNC", "UNKNOWN")
DEFAULT_STAGES = ("dev", "test", "prod")


class DeployerError(NodalError):
    """A deployer action was refused; nothing was changed. The message says why."""


@dataclass(frozen=True)
class Deployment:
    deployment_id: str
    kind: str  # project | api
    target: str
    infra_id: str
    version: str
    node_version: str | None
    node_status: str
    node_message: str
    node_reported_at: str | None
    updated_at: str
    variables: dict[str, Any]

    @property
    def status(self) -> str:
        """What ops see: the node's report, or OUT_OF_SYNC while it lags the desired version."""
        if self.node_status == "UNKNOWN" or self.node_version is None:
            return "UNKNOWN" if self.node_status != "ERROR" else "ERROR"
        if self.node_version != self.version:
            return "ERROR" if self.node_status == "ERROR" else "OUT_OF_SYNC"
        return self.node_status


def create_infra(
    store: ControlStore, infra_id: str, kind: str, stage: str, exist_ok: bool = False
) -> None:
    if kind not in KINDS:
        raise DeployerError(f"infrastructure kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not infra_id or not stage:
        raise DeployerError("an infrastructure needs an id and a stage")
    with store.write() as conn:
        row = conn.execute(
            sa.select(infrastructures).where(infrastructures.c.infra_id == infra_id)
        ).first()
        if row is not None:
            if exist_ok and row.kind == kind and row.stage == stage:
                return
            raise DeployerError(
                f"infrastructure {infra_id!r} already exists ({row.kind}, stage {row.stage})"
            )
        conn.execute(
            sa.insert(infrastructures).values(
                infra_id=infra_id, kind=kind, stage=stage, variables_json="{}", created_at=now_iso()
            )
        )


def list_infras(store: ControlStore) -> list[dict[str, Any]]:
    with store.read() as conn:
        rows = (
            conn.execute(sa.select(infrastructures).order_by(infrastructures.c.infra_id))
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def get_infra(store: ControlStore, infra_id: str) -> dict[str, Any]:
    with store.read() as conn:
        row = (
            conn.execute(sa.select(infrastructures).where(infrastructures.c.infra_id == infra_id))
            .mappings()
            .first()
        )
    if row is None:
        known = ", ".join(i["infra_id"] for i in list_infras(store)) or "none yet"
        raise DeployerError(f"unknown infrastructure {infra_id!r} (known: {known})")
    return dict(row)


def deployment_id_for(target: str, infra_id: str) -> str:
    return f"{target}-on-{infra_id}"


def _to_deployment(row: Any) -> Deployment:
    return Deployment(
        row["deployment_id"],
        row["kind"],
        row["target"],
        row["infra_id"],
        row["version"],
        row["node_version"],
        row["node_status"],
        row["node_message"],
        row["node_reported_at"],
        row["updated_at"],
        json.loads(row["variables_json"] or "{}"),
    )


def list_deployments(
    store: ControlStore, infra_id: str | None = None, kind: str | None = None
) -> list[Deployment]:
    q = sa.select(deployments).order_by(deployments.c.deployment_id)
    if infra_id:
        q = q.where(deployments.c.infra_id == infra_id)
    if kind:
        q = q.where(deployments.c.kind == kind)
    with store.read() as conn:
        return [_to_deployment(r) for r in conn.execute(q).mappings().all()]


def get_deployment(store: ControlStore, deployment_id: str) -> Deployment:
    with store.read() as conn:
        row = (
            conn.execute(sa.select(deployments).where(deployments.c.deployment_id == deployment_id))
            .mappings()
            .first()
        )
    if row is None:
        raise DeployerError(f"unknown deployment {deployment_id!r}")
    return _to_deployment(row)


def set_version(
    store: ControlStore,
    kind: str,
    target: str,
    infra_id: str,
    version: str,
    actor: str,
    action: str = "deploy",
    expected_infra_kind: str = "automation",
) -> Deployment:
    """Create or update a deployment's desired version and record it in the history."""
    infra = get_infra(store, infra_id)
    if infra["kind"] != expected_infra_kind:
        raise DeployerError(
            f"infrastructure {infra_id!r} is an {infra['kind']} node; this needs an {expected_infra_kind} node"
        )
    dep_id = deployment_id_for(target, infra_id)
    now = now_iso()
    with store.write() as conn:
        row = (
            conn.execute(sa.select(deployments).where(deployments.c.deployment_id == dep_id))
            .mappings()
            .first()
        )
        previous = row["version"] if row else None
        if previous == version:
            return _to_deployment(row)  # already the desired version: nothing to record
        if row is None:
            conn.execute(
                sa.insert(deployments).values(
                    deployment_id=dep_id,
                    kind=kind,
                    target=target,
                    infra_id=infra_id,
                    version=version,
                    variables_json="{}",
                    node_status="UNKNOWN",
                    node_message="",
                    created_at=now,
                    updated_at=now,
                )
            )
        else:
            conn.execute(
                sa.update(deployments)
                .where(deployments.c.deployment_id == dep_id)
                .values(version=version, updated_at=now)
            )
        conn.execute(
            sa.insert(deployment_history).values(
                deployment_id=dep_id,
                action=action,
                from_version=previous,
                to_version=version,
                outcome="REQUESTED",
                message="",
                actor=actor,
                at=now,
            )
        )
    return get_deployment(store, dep_id)


def previous_version(store: ControlStore, deployment_id: str) -> str:
    """The version deployed before the current one (for a one-action rollback)."""
    current = get_deployment(store, deployment_id).version
    for h in history(store, deployment_id):
        if h["outcome"] == "REQUESTED" and h["to_version"] != current and h["to_version"]:
            return h["to_version"]
    raise DeployerError(f"deployment {deployment_id!r} has no earlier version to roll back to")


def report(
    store: ControlStore, deployment_id: str, node_version: str | None, status: str, message: str
) -> None:
    """Called by a node: what it runs now and how it is. Changes are kept in the history."""
    if status not in STATUSES:
        raise ValueError(f"bad status {status!r}")
    now = now_iso()
    with store.write() as conn:
        row = (
            conn.execute(sa.select(deployments).where(deployments.c.deployment_id == deployment_id))
            .mappings()
            .first()
        )
        if row is None:
            return
        changed = (row["node_version"], row["node_status"]) != (node_version, status)
        conn.execute(
            sa.update(deployments)
            .where(deployments.c.deployment_id == deployment_id)
            .values(
                node_version=node_version,
                node_status=status,
                node_message=message,
                node_reported_at=now,
            )
        )
        if changed:
            conn.execute(
                sa.insert(deployment_history).values(
                    deployment_id=deployment_id,
                    action="activate",
                    from_version=row["node_version"],
                    to_version=node_version,
                    outcome=status,
                    message=message,
                    actor=f"node:{row['infra_id']}",
                    at=now,
                )
            )


def history(store: ControlStore, deployment_id: str) -> list[dict[str, Any]]:
    """Newest first."""
    with store.read() as conn:
        rows = (
            conn.execute(
                sa.select(deployment_history)
                .where(deployment_history.c.deployment_id == deployment_id)
                .order_by(deployment_history.c.id.desc())
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def worst_status(statuses: list[str]) -> str:
    order = ["ERROR", "UNHEALTHY", "OUT_OF_SYNC", "WARNING", "UNKNOWN", "HEALTHY"]
    return min(statuses, key=order.index) if statuses else "UNKNOWN"


def deploy_bundle(
    store: ControlStore,
    project: str,
    bundle_id: str,
    infra_id: str,
    actor: str,
    action: str = "deploy",
) -> Deployment:
    """Point ``project`` on ``infra_id`` at a verified bundle (refused if tampered or foreign)."""
    info = bundles.get_bundle(store, project, bundle_id)
    bundles.verify_bundle(info.path, project=project, bundle_id=bundle_id)
    return set_version(store, "project", project, infra_id, bundle_id, actor, action, "automation")


def rollback(
    store: ControlStore, deployment_id: str, actor: str, to_version: str | None = None
) -> Deployment:
    """Go back to ``to_version`` (default: the previous one) in one action; no retraining."""
    dep = get_deployment(store, deployment_id)
    version = to_version or previous_version(store, deployment_id)
    if dep.kind == "project":
        return deploy_bundle(store, dep.target, version, dep.infra_id, actor, action="rollback")
    from engine import apipackages

    return apipackages.deploy_package(
        store, dep.target, version, dep.infra_id, actor, action="rollback"
    )
