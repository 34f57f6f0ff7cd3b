"""Roll any deployment back in one action, whatever it deploys (a bundle or an API split)."""

from __future__ import annotations

from engine.deployer import api_deployer
from engine.deployer.deployments import (
    DeployerError,
    Deployment,
    deploy_bundle,
    get_deployment,
    previous_version,
)
from engine.storage.control import ControlStore


def rollback(
    store: ControlStore, deployment_id: str, actor: str, to_version: str | None = None
) -> Deployment:
    """Go back to ``to_version`` (default: the previous one) in one action; no retraining."""
    dep = get_deployment(store, deployment_id)
    version = to_version or previous_version(store, deployment_id)
    if version == dep.version:
        raise DeployerError(f"{deployment_id!r} already runs {version!r}: nothing to roll back")
    if dep.kind == "project":
        return deploy_bundle(store, dep.target, version, dep.infra_id, actor, action="rollback")
    return api_deployer.deploy_package(
        store, dep.target, version, dep.infra_id, actor, action="rollback"
    )
