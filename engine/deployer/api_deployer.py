"""The API Deployer: which package versions ("generations") of a service an API node serves.

An API deployment is a row of ``deployments`` (kind ``api``, the service on an apinode
infrastructure; its ``version`` is the mapping as text, ``v2`` or ``v1=90%,v2=10%``, so
status, history and rollback read the same everywhere) plus a traffic mapping in ``api_traffic``: ``[{"generation", "proba"}, ...]`` summing
to 1, and the service's access mode (``public`` or ``keys``). Every change is one transaction
that writes the deployment, the mapping, a ``deployment_history`` row (who, when, from, to,
as every deployment) and an ``api_deployment_changes`` row with the whole mappings and the
results of the package's test queries. API nodes pull the mapping (see engine/apinode/node.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from engine.access import audit, rights
from engine.deployer import apipackages
from engine.deployer import deployments as deployer
from engine.deployer.deployments import DeployerError
from engine.storage.control import (
    ControlStore,
    api_deployment_changes,
    api_traffic,
    deployment_history,
    deployments,
    now_iso,
)

ACCESS_MODES = ("public", "keys")
# What a deployment's access mode reads as when the control store holds none (no
# ``api_traffic`` row, or a value that is not a mode): API nodes refuse every request then.
ACCESS_UNSET = "unset"


@dataclass(frozen=True)
class ApiDeployment:
    deployment: deployer.Deployment
    traffic: list[dict[str, Any]]  # [{"generation": "v1", "proba": 1.0}]
    access_mode: str

    @property
    def service(self) -> str:
        return self.deployment.target

    @property
    def primary(self) -> str:
        """The generation with the largest share (what answers the bare MLflow route)."""
        return max(self.traffic, key=lambda t: t["proba"])["generation"]

    @property
    def generations(self) -> list[str]:
        return [t["generation"] for t in self.traffic]


def describe(traffic: list[dict[str, Any]] | None) -> str | None:
    """``v1`` or ``v1=90%,v2=10%``: how a mapping reads in the history."""
    if not traffic:
        return None
    if len(traffic) == 1:
        return traffic[0]["generation"]
    return ",".join(f"{t['generation']}={t['proba'] * 100:g}%" for t in traffic)


def normalise(split: list[tuple[str, float]] | dict[str, float]) -> list[dict[str, Any]]:
    """Check a traffic split (generations once each, probabilities in [0, 1] summing to 1)."""
    items = list(split.items()) if isinstance(split, dict) else list(split)
    if not items:
        raise DeployerError("a deployment needs at least one package version")
    seen: set[str] = set()
    out = []
    for generation, proba in items:
        if generation in seen:
            raise DeployerError(f"version {generation!r} appears twice in the traffic split")
        seen.add(generation)
        try:
            p = float(proba)
        except (TypeError, ValueError):
            raise DeployerError(f"share of {generation!r} is not a number") from None
        if not 0 <= p <= 1 or math.isnan(p):
            raise DeployerError(f"share of {generation!r} must be between 0 and 1, not {p:g}")
        out.append({"generation": generation, "proba": p})
    total = sum(t["proba"] for t in out)
    if abs(total - 1) > 1e-6:
        raise DeployerError(f"traffic shares must sum to 1, they sum to {total:g}")
    return out


def parse_split(text: list[str]) -> list[tuple[str, float]]:
    """``["v1"]`` or ``["v1=0.9", "v2=0.1"]`` (CLI form) → pairs."""
    if len(text) == 1 and "=" not in text[0]:
        return [(text[0], 1.0)]
    pairs = []
    for item in text:
        name, sep, share = item.partition("=")
        if not sep:
            raise DeployerError(f"write each version as VERSION=SHARE (e.g. v2=0.1), not {item!r}")
        pairs.append((name, share))
    return pairs  # type: ignore[return-value] - normalise() converts and checks the shares


def parse_described(text: str) -> list[dict[str, Any]]:
    """The inverse of :func:`describe`: ``v1`` or ``v1=90%,v2=10%`` → a mapping."""
    if "=" not in text:
        return [{"generation": text, "proba": 1.0}]
    pairs = []
    for part in text.split(","):
        name, _, share = part.partition("=")
        try:
            pairs.append((name, float(share.rstrip("%")) / 100))
        except ValueError:
            raise DeployerError(f"cannot read the traffic split {text!r}") from None
    return normalise(pairs)


def _as_api(dep: deployer.Deployment, row: dict[str, Any] | None) -> ApiDeployment:
    traffic = json.loads(row["traffic_json"]) if row else None
    # The deployment's version is the mapping as text; if something else changed it
    # (deployer.set_version alone), it wins: it is the desired state every tool shows.
    if not traffic or describe(traffic) != dep.version:
        traffic = parse_described(dep.version)
    # No recorded access mode is no access, never public (a node refuses every request).
    mode = row["access_mode"] if row else None
    return ApiDeployment(dep, traffic, mode if mode in ACCESS_MODES else ACCESS_UNSET)


def list_api_deployments(store: ControlStore, infra_id: str | None = None) -> list[ApiDeployment]:
    deps = deployer.list_deployments(store, infra_id=infra_id, kind="api")
    with store.read() as conn:
        rows = {
            r["deployment_id"]: dict(r)
            for r in conn.execute(sa.select(api_traffic)).mappings().all()
        }
    return [_as_api(d, rows.get(d.deployment_id)) for d in deps]


def get_api_deployment(store: ControlStore, deployment_id: str) -> ApiDeployment:
    dep = deployer.get_deployment(store, deployment_id)
    if dep.kind != "api":
        raise DeployerError(f"{deployment_id!r} deploys a project, not an API service")
    with store.read() as conn:
        row = (
            conn.execute(sa.select(api_traffic).where(api_traffic.c.deployment_id == deployment_id))
            .mappings()
            .first()
        )
    return _as_api(dep, dict(row) if row else None)


def deploy(
    store: ControlStore,
    service: str,
    infra_id: str,
    split: list[tuple[str, float]] | dict[str, float],
    actor: str,
    action: str = "deploy",
    access_mode: str | None = None,
    tests: dict[str, Any] | None = None,
) -> ApiDeployment:
    """Serve ``service`` on ``infra_id`` with this traffic split (one version: ``[(v, 1)]``).

    Every version must be a verified package of the service; nothing changes otherwise.
    ``access_mode`` None keeps the deployment's access mode (``public`` for a new one, ``keys``
    for one that has none recorded): only a caller that names a mode changes it.
    ``actor`` needs the ``deploy`` right on the infrastructure, and ``access`` on the
    service to set an access mode.
    """
    rights.require(store, actor, "deploy", infra=infra_id)
    if access_mode is not None:
        rights.require(store, actor, "access", service=service)
    traffic = normalise(split)
    for t in traffic:
        info = apipackages.get_package(store, service, t["generation"])
        apipackages.verify_package(info.path, service, t["generation"])  # names a member
        apipackages.verify_package(info.path, service, t["generation"], sha256=info.sha256)
    if access_mode is not None and access_mode not in ACCESS_MODES:
        raise DeployerError(f"access mode must be one of {', '.join(ACCESS_MODES)}")
    infra = deployer.get_infra(store, infra_id)
    if infra["kind"] != "apinode":
        raise DeployerError(
            f"infrastructure {infra_id!r} is an {infra['kind']} node; API services need an apinode"
        )
    desired = describe(traffic)
    if len(desired) > 100:
        raise DeployerError("too many versions in one traffic split")
    dep_id = deployer.deployment_id_for(service, infra_id)
    now = now_iso()
    with store.write() as conn:
        row = (
            conn.execute(sa.select(deployments).where(deployments.c.deployment_id == dep_id))
            .mappings()
            .first()
        )
        old = (
            conn.execute(sa.select(api_traffic).where(api_traffic.c.deployment_id == dep_id))
            .mappings()
            .first()
        )
        before = None
        if row is not None:
            before = _as_api(deployer._to_deployment(row), dict(old) if old else None)
        # The access mode changes only when the caller asks: a redeploy keeps it; a new
        # deployment is public unless asked; one whose mode was never recorded needs keys.
        mode = access_mode or (before.access_mode if before else "public")
        if mode not in ACCESS_MODES:
            mode = "keys"
        if before and before.traffic == traffic and before.access_mode == mode:
            return before  # already the desired state: nothing to record
        deployer.upsert_desired(
            conn, row is not None, dep_id, "api", service, infra_id, desired, now
        )
        values = {"traffic_json": json.dumps(traffic), "access_mode": mode, "updated_at": now}
        if old is None:
            conn.execute(sa.insert(api_traffic).values(deployment_id=dep_id, **values))
        else:
            conn.execute(
                sa.update(api_traffic).where(api_traffic.c.deployment_id == dep_id).values(**values)
            )
        from_traffic = before.traffic if before else None
        audit.record(
            conn,
            actor,
            f"api.{action}",
            "deployment",
            dep_id,
            before={"traffic": from_traffic, "access": before.access_mode} if before else None,
            after={"traffic": traffic, "access": mode},
        )
        conn.execute(
            sa.insert(deployment_history).values(
                deployment_id=dep_id,
                action=action,
                from_version=describe(from_traffic),
                to_version=describe(traffic),
                outcome="REQUESTED",
                message="" if not before or before.access_mode == mode else f"access: {mode}",
                actor=actor,
                at=now,
            )
        )
        conn.execute(
            sa.insert(api_deployment_changes).values(
                deployment_id=dep_id,
                action=action,
                from_json=json.dumps(from_traffic) if from_traffic else None,
                to_json=json.dumps(traffic),
                tests_json=json.dumps(tests or {}),
                actor=actor,
                at=now,
            )
        )
    return get_api_deployment(store, dep_id)


def set_access(store: ControlStore, deployment_id: str, mode: str, actor: str) -> ApiDeployment:
    """Make a deployed service public or require API keys."""
    dep = get_api_deployment(store, deployment_id)
    return deploy(
        store,
        dep.service,
        dep.deployment.infra_id,
        [(t["generation"], t["proba"]) for t in dep.traffic],
        actor,
        action="access",
        access_mode=mode,
    )


def changes(store: ControlStore, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's changes, newest first, with whole mappings and test results."""
    with store.read() as conn:
        rows = (
            conn.execute(
                sa.select(api_deployment_changes)
                .where(api_deployment_changes.c.deployment_id == deployment_id)
                .order_by(api_deployment_changes.c.id.desc())
            )
            .mappings()
            .all()
        )
    out = []
    for r in rows:
        d = dict(r)
        d["from"] = describe(json.loads(r["from_json"]) if r["from_json"] else None)
        d["to"] = describe(json.loads(r["to_json"]))
        d["tests"] = json.loads(r["tests_json"] or "{}")
        out.append(d)
    return out


def rollback(store: ControlStore, deployment_id: str, actor: str) -> ApiDeployment:
    """Go back, in one action, to the traffic mapping before the last change."""
    dep = get_api_deployment(store, deployment_id)
    for change in changes(store, deployment_id):
        if change["from_json"] and json.loads(change["from_json"]) != dep.traffic:
            previous = json.loads(change["from_json"])
            return deploy(
                store,
                dep.service,
                dep.deployment.infra_id,
                [(t["generation"], t["proba"]) for t in previous],
                actor,
                action="rollback",
            )
    raise DeployerError(f"deployment {deployment_id!r} has no earlier version to roll back to")


def newest_version(store: ControlStore, service: str) -> str:
    packages = apipackages.list_packages(store, service)
    if not packages:
        raise DeployerError(f"service {service!r} has no package yet (`nodal api package`)")
    return packages[0].version


def switch_to_newest(
    store: ControlStore,
    service: str,
    infra_id: str,
    actor: str,
    tests: dict[str, Any] | None = None,
) -> ApiDeployment:
    """Send all traffic to the service's newest package."""
    return deploy(
        store,
        service,
        infra_id,
        [(newest_version(store, service), 1.0)],
        actor,
        "switch",
        tests=tests,
    )


def record_tests(store: ControlStore, deployment_id: str, tests: dict[str, Any]) -> None:
    """Attach test-query results (e.g. those run after a switch) to the latest change."""
    with store.write() as conn:
        last = conn.execute(
            sa.select(api_deployment_changes.c.id, api_deployment_changes.c.tests_json)
            .where(api_deployment_changes.c.deployment_id == deployment_id)
            .order_by(api_deployment_changes.c.id.desc())
            .limit(1)
        ).first()
        if last is None:
            return
        merged = {**json.loads(last.tests_json or "{}"), **tests}
        conn.execute(
            sa.update(api_deployment_changes)
            .where(api_deployment_changes.c.id == last.id)
            .values(tests_json=json.dumps(merged))
        )


def deploy_package(
    store: ControlStore,
    service: str,
    version: str,
    infra_id: str,
    actor: str,
    action: str = "deploy",
) -> deployer.Deployment:
    """Point ``service`` on an API infrastructure at a verified package version.

    ``version`` may also be a traffic split as the history writes it (``v1=90%,v2=10%``),
    so that :func:`engine.deployer.rollback.rollback` restores a split too.
    """
    split = [(t["generation"], t["proba"]) for t in parse_described(version)]
    return deploy(store, service, infra_id, split, actor, action).deployment
