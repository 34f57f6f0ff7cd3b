"""The automation node: activates bundles into its own home and runs their scenarios.

Home layout (``<home>/automation/<infra>/``):

* ``bundles/<project>/<bundle_id>/``: verified, extracted bundles (earlier ones kept for rollback)
* ``active/<project>``: a one-line file naming the active bundle (replaced atomically)
* ``projects/<project>/data/``: the node's own managed datasets

Desired state comes from the control store (:mod:`engine.deployer`); the node reports back.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine import bundles, deployer, scenarios
from engine import home as layout
from engine.artifacts import ArtifactError, extract_verified
from engine.errors import NodalError
from engine.models import SavedModel
from engine.project import MANAGED_DATA_DIR, Project, ProjectError, load_project
from engine.settings import Settings
from engine.storage.control import ControlStore


class ActivationError(NodalError):
    """A bundle failed its pre-activation checks; the previous bundle stays active."""


@dataclass(frozen=True)
class SyncResult:
    project: str
    desired: str
    active: str | None
    status: str
    message: str


class AutomationNode:
    def __init__(self, settings: Settings, store: ControlStore, infra_id: str) -> None:
        self.settings = settings
        self.store = store
        self.infra_id = infra_id
        self.home = layout.automation_home(settings.home, infra_id)

    # --- bundles and activation ------------------------------------------------------------

    def bundle_dir(self, project: str, bundle_id: str) -> Path:
        return self.home / "bundles" / project / bundle_id

    def active_bundle(self, project: str) -> str | None:
        marker = self.home / "active" / project
        return marker.read_text().strip() if marker.exists() else None

    def _variables(self, project: str) -> dict[str, str]:
        variables = {"data_dir": str(self.settings.data_dir.resolve())}
        dep_id = deployer.deployment_id_for(project, self.infra_id)
        with contextlib.suppress(deployer.DeployerError):
            variables.update(
                {
                    k: str(v)
                    for k, v in deployer.get_deployment(self.store, dep_id).variables.items()
                }
            )
        return variables

    def load(self, project: str, bundle_id: str) -> Project:
        return load_project(
            self.bundle_dir(project, bundle_id),
            self.home / "projects" / project / MANAGED_DATA_DIR,
            self._variables(project),
        )

    def project(self, project: str) -> Project:
        bundle_id = self.active_bundle(project)
        if bundle_id is None:
            raise ProjectError(f"project {project!r} is not active on {self.infra_id}")
        return self.load(project, bundle_id)

    def preactivation_checks(self, project: Project) -> None:
        for model in project.models:
            SavedModel.load(project.active_model_dir(model))
        for name, d in project.datasets.items():
            if d.kind == "source" and not project.dataset(name).path.exists():
                raise ActivationError(
                    f"source dataset {name!r} not found at {project.dataset(name).path}"
                )
        problems = [p for s in project.scenarios for p in scenarios.validate(project, s)]
        if problems:
            raise ActivationError("; ".join(problems))

    def activate(self, project: str, bundle_id: str) -> None:
        """Verify, extract, check, then switch the active pointer. Raises on any failure."""
        info = bundles.get_bundle(self.store, project, bundle_id)
        bundles.verify_bundle(info.path, project=project, bundle_id=bundle_id)
        try:
            extract_verified(info.path, self.bundle_dir(project, bundle_id), bundles.KIND)
        except ArtifactError as exc:
            raise ActivationError(str(exc)) from None
        try:
            self.preactivation_checks(self.load(project, bundle_id))
        except (ProjectError, OSError, ValueError) as exc:
            raise ActivationError(f"pre-activation check failed: {exc}") from None
        active_dir = self.home / "active"
        active_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=active_dir, prefix=f".{project}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(bundle_id + "\n")
        os.replace(tmp, active_dir / project)

    def sync(self) -> list[SyncResult]:
        """Pull desired state; activate what changed; report every deployment's state."""
        results = []
        for dep in deployer.list_deployments(self.store, infra_id=self.infra_id, kind="project"):
            active = self.active_bundle(dep.target)
            status, message = "HEALTHY", f"bundle {dep.version} active"
            if active != dep.version:
                try:
                    self.activate(dep.target, dep.version)
                    active = dep.version
                except (ActivationError, bundles.BundleError, ProjectError) as exc:
                    status = "ERROR"
                    message = f"activation of {dep.version} failed, {active or 'nothing'} stays active: {exc}"
            if status == "HEALTHY":
                last = scenarios.list_runs(self.store, self.infra_id, limit=1)
                if last and last[0]["status"] == scenarios.FAILED:
                    status, message = (
                        "UNHEALTHY",
                        f"last run of {last[0]['scenario']} failed: {last[0]['message']}",
                    )
                elif last and last[0]["status"] == scenarios.WARNING:
                    status, message = (
                        "WARNING",
                        f"last run of {last[0]['scenario']} ended with warnings",
                    )
            deployer.report(self.store, dep.deployment_id, active, status, message)
            results.append(SyncResult(dep.target, dep.version, active, status, message))
        return results

    # --- scenario runs -----------------------------------------------------------------------

    def run(self, run_id: int) -> str | None:
        """Claim and execute a queued run. Returns its outcome, or None if not claimable."""
        run = scenarios.get_run(self.store, run_id)
        bundle_id = self.active_bundle(run["project"])
        if bundle_id is None:
            if scenarios.claim_run(self.store, run_id, None):
                scenarios.finish_run(
                    self.store,
                    run_id,
                    scenarios.FAILED,
                    f"project {run['project']!r} is not active on {self.infra_id}",
                )
                return scenarios.FAILED
            return None
        if not scenarios.claim_run(self.store, run_id, bundle_id):
            return None
        return scenarios.execute(
            self.load(run["project"], bundle_id), self.store, self.infra_id, run_id, bundle_id
        )

    def queued_runs(self) -> list[int]:
        return [
            r["run_id"]
            for r in reversed(scenarios.list_runs(self.store, self.infra_id, limit=200))
            if r["status"] == "QUEUED"
        ]
