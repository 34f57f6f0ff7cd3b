"""The deployer: infrastructures, deployments (desired state) and their audit history.

Ops change *desired* state here; automation and API nodes pull it, act, and report back
with :func:`report`. Every real change is a row in ``deployment_history`` (who, when, from,
to): what people do (deploy, update, promote, rollback, variables, triggers) and what a node
did with it (a version activated, or an activation that failed). A node's status (HEALTHY,
WARNING…) is kept on the deployment itself, with the time it last changed; its flips are not
history.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.access import audit, rights
from engine.core.errors import NodalError
from engine.deployer import bundles
from engine.storage.control import (
    ControlStore,
    api_packages,
    deployment_history,
    deployment_triggers,
    deployments,
    infrastructures,
    now_iso,
    stages,
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
    node_status_since: str | None = None  # when node_status last changed

    @property
    def status(self) -> str:
        """What ops see: the node's report, or OUT_OF_SYNC while it lags the desired version."""
        if self.node_status == "UNKNOWN" or self.node_version is None:
            return "UNKNOWN" if self.node_status != "ERROR" else "ERROR"
        if self.node_version != self.version:
            return "ERROR" if self.node_status == "ERROR" else "OUT_OF_SYNC"
        return self.node_status


# --- stages ------------------------------------------------------------------------------------


def list_stages(store: ControlStore) -> list[dict[str, Any]]:
    """Stages in lifecycle order (dev, test, prod unless ops defined others)."""
    with store.read() as conn:
        rows = conn.execute(sa.select(stages).order_by(stages.c.position)).mappings().all()
    if rows:
        return [dict(r) for r in rows]
    with store.write() as conn:  # first use: the default stages
        if conn.execute(sa.select(sa.func.count()).select_from(stages)).scalar() == 0:
            now = now_iso()
            conn.execute(
                sa.insert(stages),
                [
                    {"name": n, "position": (i + 1) * 10, "description": "", "created_at": now}
                    for i, n in enumerate(DEFAULT_STAGES)
                ],
            )
    return list_stages(store)


def create_stage(
    store: ControlStore,
    name: str,
    after: str | None = None,
    description: str = "",
    *,
    actor: str,
) -> dict[str, Any]:
    """Add a stage, placed right after ``after`` (default: last). Names are like bundle ids.
    Administrators only."""
    rights.require_admin(store, actor)
    bundles.check_id(name, "stage name")
    existing = list_stages(store)
    names = [s["name"] for s in existing]
    if name in names:
        raise DeployerError(f"stage {name!r} already exists (stages: {', '.join(names)})")
    if after is None:
        position = existing[-1]["position"] + 10 if existing else 10
    else:
        if after not in names:
            raise DeployerError(f"unknown stage {after!r} (stages: {', '.join(names)})")
        i = names.index(after)
        low = existing[i]["position"]
        high = existing[i + 1]["position"] if i + 1 < len(existing) else low + 20
        position = (low + high) // 2
        if position == low:  # no room left between the two: renumber everything first
            with store.write() as conn:
                for j, s in enumerate(existing):
                    conn.execute(
                        sa.update(stages)
                        .where(stages.c.name == s["name"])
                        .values(position=(j + 1) * 100)
                    )
            return create_stage(store, name, after, description, actor=actor)
    with store.write() as conn:
        conn.execute(
            sa.insert(stages).values(
                name=name, position=position, description=description, created_at=now_iso()
            )
        )
        audit.record(conn, actor, "stage.create", "stage", name, after={"after": after})
    return next(s for s in list_stages(store) if s["name"] == name)


def delete_stage(store: ControlStore, name: str, *, actor: str) -> None:
    """Remove an unused stage (refused while an infrastructure is on it); administrators."""
    rights.require_admin(store, actor)
    names = [s["name"] for s in list_stages(store)]
    if name not in names:
        raise DeployerError(f"unknown stage {name!r} (stages: {', '.join(names)})")
    used = [i["infra_id"] for i in list_infras(store) if i["stage"] == name]
    if used:
        raise DeployerError(f"stage {name!r} is used by {', '.join(used)}: move them first")
    with store.write() as conn:
        conn.execute(sa.delete(stages).where(stages.c.name == name))
        audit.record(conn, actor, "stage.delete", "stage", name)


# --- infrastructures ---------------------------------------------------------------------------


def create_infra(
    store: ControlStore,
    infra_id: str,
    kind: str,
    stage: str,
    exist_ok: bool = False,
    *,
    actor: str,
) -> None:
    """Register an automation or API node on a stage; administrators only."""
    rights.require_admin(store, actor)
    if kind not in KINDS:
        raise DeployerError(f"infrastructure kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not infra_id or not stage:
        raise DeployerError("an infrastructure needs an id and a stage")
    bundles.check_id(infra_id, "infrastructure id")
    names = [s["name"] for s in list_stages(store)]
    if stage not in names:
        raise DeployerError(
            f"unknown stage {stage!r} (stages: {', '.join(names)}); "
            f"add it first with `nodal stage create {stage}`"
        )
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
        audit.record(
            conn, actor, "infra.create", "infra", infra_id, after={"kind": kind, "stage": stage}
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
        row["node_status_since"],
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


def upsert_desired(
    conn: Any,
    exists: bool,
    dep_id: str,
    kind: str,
    target: str,
    infra_id: str,
    version: str,
    now: str,
) -> None:
    """Create the deployment row or change its desired version (inside the caller's transaction)."""
    if not exists:
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
        upsert_desired(conn, row is not None, dep_id, kind, target, infra_id, version, now)
        audit.record(
            conn,
            actor,
            f"deployment.{action}",
            "deployment",
            dep_id,
            before={"version": previous},
            after={"version": version},
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
    """Called by a node at each sync: what it runs now and how it is.

    The deployment keeps the latest report, and ``node_status_since`` moves when the status
    changes. The history gets a row only for a real change: the node runs another version
    (``activate`` from → to), or it failed to activate the desired version (``activate``
    from what it runs → the version it could not activate, outcome ERROR; once, not at every
    sync). A status flip of the same version (HEALTHY ↔ WARNING) is not history.
    """
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
        values: dict[str, Any] = {
            "node_version": node_version,
            "node_status": status,
            "node_message": message,
            "node_reported_at": now,
        }
        if row["node_status"] != status or row["node_status_since"] is None:
            values["node_status_since"] = now
        conn.execute(
            sa.update(deployments)
            .where(deployments.c.deployment_id == deployment_id)
            .values(**values)
        )
        event = None
        if row["node_version"] != node_version:
            event = (row["node_version"], node_version)
        elif status == "ERROR" and node_version != row["version"]:
            last = conn.execute(
                sa.select(deployment_history.c.to_version, deployment_history.c.outcome)
                .where(
                    deployment_history.c.deployment_id == deployment_id,
                    deployment_history.c.action == "activate",
                )
                .order_by(deployment_history.c.id.desc())
                .limit(1)
            ).first()
            if last is None or tuple(last) != (row["version"], "ERROR"):
                event = (node_version, row["version"])  # this failure is not recorded yet
        if event is not None:
            conn.execute(
                sa.insert(deployment_history).values(
                    deployment_id=deployment_id,
                    action="activate",
                    from_version=event[0],
                    to_version=event[1],
                    outcome=status,
                    message=message,
                    actor=f"node:{row['infra_id']}",
                    at=now,
                )
            )


def history(store: ControlStore, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's real events, newest first.

    Rows an earlier version wrote for a node's status flips (``activate`` from a version to
    the same one) stay stored but are not returned.
    """
    h = deployment_history.c
    flip = sa.and_(h.action == "activate", h.from_version.is_not_distinct_from(h.to_version))
    with store.read() as conn:
        rows = (
            conn.execute(
                sa.select(deployment_history)
                .where(h.deployment_id == deployment_id, sa.not_(flip))
                .order_by(h.id.desc())
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def visible_to(store: ControlStore, actor: str, deps: list[Deployment]) -> list[Deployment]:
    """The deployments ``actor`` may see: of a project they may read (an API service's
    project is its packages'), or on an infrastructure where they hold any right (``view``
    and up)."""
    projects = rights.scopes_with(store, actor, "project", "read")
    with store.read() as conn:
        rows = conn.execute(sa.select(api_packages.c.service, api_packages.c.project)).all()
    project_of = {service: project for service, project in rows}
    infras: dict[str, bool] = {}
    out = []
    for d in deps:
        if d.infra_id not in infras:
            infras[d.infra_id] = rights.allowed(store, actor, "view", infra=d.infra_id)
        project = d.target if d.kind == "project" else project_of.get(d.target)
        if (project is not None and (projects is None or project in projects)) or infras[
            d.infra_id
        ]:
            out.append(d)
    return out


def deployments_by_stage(store: ControlStore) -> list[tuple[dict[str, Any], list[Deployment]]]:
    """Each stage (in order) with its infrastructures' deployments, for the console."""
    infra_stage = {i["infra_id"]: i["stage"] for i in list_infras(store)}
    deps = list_deployments(store)
    return [
        (stage, [d for d in deps if infra_stage.get(d.infra_id) == stage["name"]])
        for stage in list_stages(store)
    ]


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
    """Point ``project`` on ``infra_id`` at a verified bundle.

    Refused, before anything changes, if ``actor`` may not deploy to ``infra_id``, the bundle
    is tampered with, belongs to another project, or holds scenarios the node would refuse
    (:func:`check_scenarios`).
    """
    get_infra(store, infra_id)  # an unknown one is named as such, not as a missing right
    rights.require(store, actor, "deploy", infra=infra_id)
    info = bundles.get_bundle(store, project, bundle_id)
    # First the members (a changed member is named), then the file against the digest recorded
    # at publish (a swapped zip whose manifest agrees with itself); deploys are rare.
    bundles.verify_bundle(info.path, project=project, bundle_id=bundle_id)
    bundles.verify_bundle(info.path, project=project, bundle_id=bundle_id, sha256=info.sha256)
    check_scenarios(info.path, bundle_id)
    if action == "deploy":
        with store.read() as conn:
            exists = conn.execute(
                sa.select(deployments.c.version).where(
                    deployments.c.deployment_id == deployment_id_for(project, infra_id)
                )
            ).first()
        action = "update" if exists else "deploy"
    return set_version(store, "project", project, infra_id, bundle_id, actor, action, "automation")


def check_scenarios(bundle_path: Path, bundle_id: str) -> None:
    """Refuse a bundle whose scenarios are invalid (a cycle of ``after_scenario`` triggers,
    an invalid cron, an unknown step type…): the node would not activate it anyway.

    Reads only the definitions of an already verified bundle; data and models stay zipped.
    """
    from engine.project import scenario_spec
    from engine.project.project import (
        MANAGED_DATA_DIR,
        SAVED_MODELS_DIR,
        ProjectError,
        load_project,
    )

    with tempfile.TemporaryDirectory(prefix="nodal-deploy-check-") as tmp:
        root = Path(tmp) / "bundle"
        with zipfile.ZipFile(bundle_path) as zf:
            for name in zf.namelist():
                parts = Path(name).parts
                if parts[0] in (SAVED_MODELS_DIR, MANAGED_DATA_DIR) or ".." in parts:
                    continue
                out = root / name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(name))
        try:
            project = load_project(root, Path(tmp) / "data")
        except ProjectError as exc:
            raise DeployerError(f"bundle {bundle_id!r} cannot be deployed: {exc}") from None
        problems = [p for name in project.scenarios for p in scenario_spec.validate(project, name)]
    if problems:
        raise DeployerError(f"bundle {bundle_id!r} cannot be deployed: {'; '.join(problems)}")


def promote(store: ControlStore, from_deployment_id: str, to_infra: str, actor: str) -> Deployment:
    """Deploy the bundle that ``from_deployment_id`` runs to ``to_infra`` (e.g. test → prod)."""
    source = get_deployment(store, from_deployment_id)
    if source.kind != "project":
        raise DeployerError(f"{from_deployment_id!r} is not a project deployment")
    if source.infra_id == to_infra:
        raise DeployerError(f"{from_deployment_id!r} is already on {to_infra!r}")
    get_infra(store, to_infra)
    return deploy_bundle(store, source.target, source.version, to_infra, actor, action="promote")


def set_variables(
    store: ControlStore, deployment_id: str, variables: dict[str, Any], actor: str
) -> Deployment:
    """Replace a deployment's variables (they override the project's on its node)."""
    dep = get_deployment(store, deployment_id)
    rights.require(store, actor, "configure", infra=dep.infra_id)
    if not isinstance(variables, dict):
        raise DeployerError("variables must be a mapping of name to value")
    for key, value in variables.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise DeployerError(f"variable name {key!r} is invalid: use letters, digits and _")
        if isinstance(value, (dict, list)):
            raise DeployerError(
                f"variable {key!r} must be a plain value, not {type(value).__name__}"
            )
    new = {k: str(v) for k, v in variables.items()}
    if new == {k: str(v) for k, v in dep.variables.items()}:
        return dep
    now = now_iso()
    with store.write() as conn:
        conn.execute(
            sa.update(deployments)
            .where(deployments.c.deployment_id == deployment_id)
            .values(variables_json=json.dumps(new, sort_keys=True), updated_at=now)
        )
        audit.record(
            conn,
            actor,
            "deployment.variables",
            "deployment",
            deployment_id,
            before={k: str(v) for k, v in dep.variables.items()},
            after=new,
        )
        conn.execute(
            sa.insert(deployment_history).values(
                deployment_id=deployment_id,
                action="variables",
                from_version=dep.version,
                to_version=dep.version,
                outcome="REQUESTED",
                message=json.dumps(new, sort_keys=True),
                actor=actor,
                at=now,
            )
        )
    return get_deployment(store, deployment_id)


def trigger_flags(store: ControlStore, deployment_id: str) -> dict[tuple[str, int], bool]:
    """(scenario, trigger index) → enabled, for the triggers ops switched; others are enabled."""
    with store.read() as conn:
        rows = conn.execute(
            sa.select(deployment_triggers).where(
                deployment_triggers.c.deployment_id == deployment_id
            )
        ).mappings()
        return {(r["scenario"], int(r["trigger_index"])): bool(r["enabled"]) for r in rows}


def set_trigger(
    store: ControlStore,
    deployment_id: str,
    scenario: str,
    trigger_index: int,
    enabled: bool,
    actor: str,
) -> None:
    """Switch one scenario trigger on or off for this deployment (recorded in the history)."""
    dep = get_deployment(store, deployment_id)
    rights.require(store, actor, "configure", infra=dep.infra_id)
    now = now_iso()
    key = (
        deployment_triggers.c.deployment_id == deployment_id,
        deployment_triggers.c.scenario == scenario,
        deployment_triggers.c.trigger_index == int(trigger_index),
    )
    with store.write() as conn:
        conn.execute(sa.delete(deployment_triggers).where(*key))
        audit.record(
            conn,
            actor,
            "deployment.trigger",
            "deployment",
            deployment_id,
            after={
                "scenario": scenario,
                "trigger": int(trigger_index) + 1,
                "enabled": bool(enabled),
            },
        )
        conn.execute(
            sa.insert(deployment_triggers).values(
                deployment_id=deployment_id,
                scenario=scenario,
                trigger_index=int(trigger_index),
                enabled=bool(enabled),
                updated_by=actor,
                updated_at=now,
            )
        )
        conn.execute(
            sa.insert(deployment_history).values(
                deployment_id=deployment_id,
                action="trigger",
                from_version=dep.version,
                to_version=dep.version,
                outcome="REQUESTED",
                message=f"{scenario} trigger {trigger_index + 1} "
                + ("enabled" if enabled else "disabled"),
                actor=actor,
                at=now,
            )
        )
