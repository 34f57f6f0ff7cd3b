"""The automation node: activates bundles into its own home and runs their scenarios.

Home layout (``<home>/automation/<infra>/``):

* ``bundles/<project>/<bundle_id>/``: verified, extracted bundles (earlier ones kept for rollback)
* ``active/<project>``: a one-line file naming the active bundle (replaced atomically)
* ``projects/<project>/data/``: the node's own managed datasets

Desired state comes from the control store (:mod:`engine.deployer`); the node reports back.

Bundles that carry data (``data/<dataset>/…`` members) seed the node's managed datasets at
activation (:func:`seed_carried_data`), file by file (a partition or an unpartitioned
dataset is one file): a file the node lacks is added; a file the node still holds exactly
as a bundle left it is replaced by the activated bundle's copy (a newer bundle, or an
earlier one after a rollback, brings its data along, as it brings its model); a file the
node wrote itself since (a build, a scoring run) is kept. Nothing is ever deleted. What
each bundle left is recorded in ``projects/<project>/data/.bundle-seeds.json``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.access import audit
from engine.automation import published_outputs, reporters, runs, scenarios
from engine.core import home as layout
from engine.core.artifacts import ArtifactError, Caps, extract_verified, sha256_file
from engine.core.errors import NodalError
from engine.core.settings import Settings
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.models.saved import SavedModel
from engine.project import dashboard_spec, scenario_spec, triggers
from engine.project.project import (
    MANAGED_DATA_DIR,
    Acting,
    Project,
    ProjectError,
    load_project,
)
from engine.storage import objects as objstore
from engine.storage.control import ControlStore, now_iso, runner_state

log = logging.getLogger("nodal.automation")


class ActivationError(NodalError):
    """A bundle failed its pre-activation checks; the previous bundle stays active."""


SEED_RECORD = ".bundle-seeds.json"


@dataclass
class SeedResult:
    """What activating a bundle did to the node's data (paths relative to the data root)."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # the node's own, newer than any bundle's

    def describe(self) -> str:
        return (
            f"data from the bundle: {len(self.added)} file(s) added, {len(self.replaced)} "
            f"replaced, {len(self.kept)} kept (written by the node itself)"
        )


def seed_carried_data(project: Project, bundle_root: Path, carried: list[str]) -> SeedResult:
    """Seed ``project``'s managed datasets from the data a bundle carries (rule above)."""
    for name in carried:
        d = project.datasets.get(name)
        if d is None or d.kind != "managed":
            raise ActivationError(f"the bundle carries data for {name!r}, not a managed dataset")
    record_path = project.data_root / SEED_RECORD
    record: dict[str, dict[str, str]] = (
        json.loads(record_path.read_text()) if record_path.exists() else {}
    )
    result = SeedResult()
    for name in carried:
        source = bundle_root / MANAGED_DATA_DIR / name
        target_root = project.dataset(name).path
        seeded = record.setdefault(name, {})
        for src in sorted(source.rglob("*.parquet")):
            rel = src.relative_to(source).as_posix()
            label = f"{name}/{rel}"
            target, wanted = target_root / rel, sha256_file(src)
            if target.exists():
                current = sha256_file(target)
                if current == wanted:
                    seeded[rel] = wanted
                    continue
                if seeded.get(rel) != current:
                    result.kept.append(label)
                    continue
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".seed-", suffix=".tmp")
            os.close(fd)
            try:
                shutil.copyfile(src, tmp)
                (result.replaced if target.exists() else result.added).append(label)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            seeded[rel] = wanted
    if carried:
        fd, tmp = tempfile.mkstemp(dir=project.data_root, prefix=".seeds-")
        with os.fdopen(fd, "w") as fh:
            json.dump(record, fh, indent=1, sort_keys=True)
        os.replace(tmp, record_path)
    return result


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
        self.objects = objstore.open_store(settings)  # where bundles are published

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
        loaded = load_project(
            self.bundle_dir(project, bundle_id),
            self.home / "projects" / project / MANAGED_DATA_DIR,
            self._variables(project),
        )
        loaded.acting = self._acting(project)
        return loaded

    def _acting(self, project: str) -> Acting:
        """The node acts on its copy of a bundle for the deployer that put it there (no
        right of its own to check); what it changes there (a retrain activating a model) is
        in the audit trail under ``node:<infra>``."""
        actor = f"node:{self.infra_id}"

        def record(action: str, object_id: str, before: object, after: object) -> None:
            audit.record_now(
                self.store,
                actor,
                action,
                "project",
                f"{project}/{object_id}",
                before=before,
                after=after,
            )

        return Acting(actor, lambda right: None, record)

    def project(self, project: str) -> Project:
        bundle_id = self.active_bundle(project)
        if bundle_id is None:
            raise ProjectError(f"project {project!r} is not active on {self.infra_id}")
        return self.load(project, bundle_id)

    def preactivation_checks(self, project: Project) -> None:
        for model in project.models:  # loads, and compiles into the cache scoring will use
            SavedModel.load(project.active_model_dir(model), compiled=self.settings.compiled_cache)
        for name, d in project.datasets.items():
            if d.kind == "source" and not project.dataset(name).path.exists():
                raise ActivationError(
                    f"source dataset {name!r} not found at {project.dataset(name).path}"
                )
        problems = [p for s in project.scenarios for p in scenario_spec.validate(project, s)]
        problems += [p for d in project.dashboards for p in dashboard_spec.problems(project, d)]
        if problems:
            raise ActivationError("; ".join(problems))

    def activate(self, project: str, bundle_id: str) -> SeedResult:
        """Verify, extract, check, seed carried data, then switch the active pointer.

        Raises on any failure, before the pointer moves. Returns what the seeding did.
        """
        info = bundles.get_bundle(self.store, project, bundle_id)
        # The zip must be the one published: the digest the control store recorded then, not
        # only a manifest that agrees with itself (anyone who can write the folder can do that).
        # From the object store, through this node's own cache (<node home>/cache/).
        path = bundles.fetch(self.objects, info, self.home / "cache")
        caps = Caps.from_settings(self.settings)  # NODAL_ARTIFACT_MAX_*
        bundles.verify_bundle(
            path, project=project, bundle_id=bundle_id, sha256=info.sha256, caps=caps
        )
        try:
            manifest = extract_verified(
                path,
                self.bundle_dir(project, bundle_id),
                bundles.KIND,
                sha256=info.sha256,
                caps=caps,
            )
        except ArtifactError as exc:
            raise ActivationError(str(exc)) from None
        try:
            self.preactivation_checks(self.load(project, bundle_id))
        except (ProjectError, OSError, ValueError) as exc:
            raise ActivationError(f"pre-activation check failed: {exc}") from None
        try:
            seeded = seed_carried_data(
                self.load(project, bundle_id),
                self.bundle_dir(project, bundle_id),
                list(manifest.get("datasets") or {}),
            )
        except (OSError, ValueError) as exc:
            raise ActivationError(f"seeding the bundle's data failed: {exc}") from None
        if seeded.added or seeded.replaced or seeded.kept:
            log.info("%s %s: %s", project, bundle_id, seeded.describe())
        active_dir = self.home / "active"
        active_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=active_dir, prefix=f".{project}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(bundle_id + "\n")
        os.replace(tmp, active_dir / project)
        return seeded

    def sync(self, standby: bool = False) -> list[SyncResult]:
        """Pull desired state; activate what changed; report every deployment's state.

        Each deployment is synced on its own: whatever one raises (a bad bundle, a bug) is
        logged with its traceback and reported to the deployer as ERROR, and the others go on.
        ``standby``: a standby runner (no lease) only prepares, quietly, the bundle the holder
        reports active (:meth:`_prepare`); the holder alone reports.
        """
        results = []
        for dep in deployer.list_deployments(self.store, infra_id=self.infra_id, kind="project"):
            if standby:
                results += self._prepare(dep)
                continue
            try:
                result = self._sync_one(dep)
            except Exception as exc:  # noqa: BLE001 - one deployment must not stop the others
                log.exception("%s: syncing deployment %s failed", dep.target, dep.deployment_id)
                result = self._report_failure(dep, exc)
            results.append(result)
        return results

    def _prepare(self, dep: deployer.Deployment) -> list[SyncResult]:
        """A standby's sync of one deployment: activate what the holder has activated (after
        it did, so two runners sharing a home never extract the same bundle at once)."""
        active = self.active_bundle(dep.target)
        if dep.node_version is None or dep.node_version == active:
            return []
        try:
            self.activate(dep.target, dep.node_version)
        except Exception as exc:  # noqa: BLE001 - a standby logs; the holder reports
            log.warning("%s: standby could not prepare %s: %s", dep.target, dep.node_version, exc)
            return [SyncResult(dep.target, dep.version, active, "ERROR", str(exc))]
        message = f"bundle {dep.node_version} prepared (standby)"
        return [SyncResult(dep.target, dep.version, dep.node_version, "HEALTHY", message)]

    def _report_failure(self, dep: deployer.Deployment, exc: Exception) -> SyncResult:
        active = None
        with contextlib.suppress(Exception):
            active = self.active_bundle(dep.target)
        what = (
            f"bundle {dep.version} active, but checking it failed"
            if active == dep.version
            else f"activation of {dep.version} failed, {active or 'nothing'} stays active"
        )
        message = f"{what}: unexpected {type(exc).__name__}: {exc} (the node's log has the details)"
        try:
            deployer.report(self.store, dep.deployment_id, active, "ERROR", message)
        except Exception:  # noqa: BLE001 - the control store itself may be what fails
            log.exception("%s: reporting the failure of %s failed", dep.target, dep.version)
        return SyncResult(dep.target, dep.version, active, "ERROR", message)

    def _sync_one(self, dep: deployer.Deployment) -> SyncResult:
        active = self.active_bundle(dep.target)
        status, message = "HEALTHY", f"bundle {dep.version} active"
        if active != dep.version:
            try:
                seeded = self.activate(dep.target, dep.version)
                active = dep.version
                if seeded.added or seeded.replaced or seeded.kept:
                    message += f"; {seeded.describe()}"
            except (ActivationError, bundles.BundleError, ProjectError) as exc:
                status = "ERROR"
                message = (
                    f"activation of {dep.version} failed, {active or 'nothing'} stays active: {exc}"
                )
        if status == "HEALTHY":
            last = [
                r
                for r in runs.list_runs(self.store, self.infra_id, limit=20)
                if r["project"] == dep.target and r["status"] not in ("QUEUED", "RUNNING")
            ][:1]
            if last and last[0]["status"] == runs.ABORTED:
                status, message = (
                    "WARNING",
                    f"last run of {last[0]['scenario']} was aborted: {last[0]['message']}",
                )
            elif last and last[0]["status"] == runs.FAILED:
                status, message = (
                    "UNHEALTHY",
                    f"last run of {last[0]['scenario']} failed: {last[0]['message']}",
                )
            elif last and last[0]["status"] == runs.WARNING:
                status, message = (
                    "WARNING",
                    f"last run of {last[0]['scenario']} ended with warnings",
                )
        deployer.report(self.store, dep.deployment_id, active, status, message)
        return SyncResult(dep.target, dep.version, active, status, message)

    # --- scenario runs -----------------------------------------------------------------------

    def run(self, run_id: int, fence: runs.Fence | None = None) -> str | None:
        """Claim and execute a queued run. Returns its outcome, or None if not claimable.

        ``fence``: the runner lease's check, made in the claim's transaction."""
        run = runs.get_run(self.store, run_id)
        bundle_id = self.active_bundle(run["project"])
        if bundle_id is None:
            if runs.claim_run(self.store, run_id, None, fence):
                runs.finish_run(
                    self.store,
                    run_id,
                    runs.FAILED,
                    f"project {run['project']!r} is not active on {self.infra_id}",
                )
                return runs.FAILED
            return None
        if not runs.claim_run(self.store, run_id, bundle_id, fence):
            return None
        try:
            project = self.load(run["project"], bundle_id)
        except (ProjectError, OSError) as exc:
            runs.finish_run(self.store, run_id, runs.FAILED, f"cannot load bundle: {exc}")
            return runs.FAILED
        outcome = scenarios.execute(
            project,
            self.store,
            self.infra_id,
            run_id,
            bundle_id,
            mail=reporters.Mail(
                self.settings.smtp_host, self.settings.smtp_port, self.settings.smtp_sender
            ),
            chunk_rows=self.settings.score_chunk_rows,
            actor=f"node:{self.infra_id}",
            compiled_cache=self.settings.compiled_cache,  # batch scores equal the API node's
            objects=self.objects,  # where publish_enrichment puts its snapshots
        )
        self._upload_outputs(project, run_id)
        return outcome

    def _upload_outputs(self, project: Project, run_id: int) -> None:
        """Put the extracts this run published into an S3 store, for Monitoring elsewhere."""
        try:
            keys = published_outputs.upload_run_outputs(
                self.objects, self.store, project, self.infra_id, run_id
            )
        except (objstore.ObjectStoreError, ProjectError, OSError) as exc:
            log.error("run %s: its published extracts were not uploaded: %s", run_id, exc)
            return
        if keys:
            log.info(
                "run %s: %d published extract(s) uploaded to %s",
                run_id,
                len(keys),
                self.objects.url,
            )

    def queued_runs(self) -> list[int]:
        return [
            r["run_id"]
            for r in reversed(runs.list_runs(self.store, self.infra_id, limit=200))
            if r["status"] == "QUEUED"
        ]

    # --- triggers ------------------------------------------------------------------------------

    def active_projects(self) -> list[str]:
        active = self.home / "active"
        if not active.exists():
            return []
        return sorted(p.name for p in active.iterdir() if not p.name.startswith("."))

    def enabled_triggers(self, project: str) -> list[tuple[str, int, dict[str, Any]]]:
        """(scenario, index, trigger) of the active bundle's triggers switched on here.

        A trigger is on unless its YAML says ``enabled: false``; ops override either way per
        deployment (:func:`engine.deployer.set_trigger`).
        """
        flags = deployer.trigger_flags(
            self.store, deployer.deployment_id_for(project, self.infra_id)
        )
        out = []
        for name, spec in sorted(self.project(project).scenarios.items()):
            for i, trig in enumerate(spec.get("triggers") or []):
                if not isinstance(trig, dict):
                    continue
                if flags.get((name, i), bool(trig.get("enabled", True))):
                    out.append((name, i, trig))
        return out

    def get_state(self, key: str) -> str | None:
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(runner_state.c.value).where(
                    runner_state.c.infra_id == self.infra_id, runner_state.c.key == key
                )
            ).first()
        return row[0] if row else None

    def set_state(self, key: str, value: str, fence: runs.Fence | None = None) -> None:
        with self.store.write() as conn:
            if fence:
                fence(conn)
            self._put_state(conn, key, value)

    def _put_state(self, conn: sa.Connection, key: str, value: str) -> None:
        where = (runner_state.c.infra_id == self.infra_id, runner_state.c.key == key)
        conn.execute(sa.delete(runner_state).where(*where))
        conn.execute(
            sa.insert(runner_state).values(
                infra_id=self.infra_id, key=key, value=value, updated_at=now_iso()
            )
        )

    def queue_followers(self, run_id: int, fence: runs.Fence | None = None) -> list[int]:
        """Queue the scenarios whose ``after_scenario`` trigger this finished run fires."""
        run = runs.get_run(self.store, run_id)
        if run["status"] in ("QUEUED", "RUNNING") or run["project"] not in self.active_projects():
            return []
        wanted = {(n, i) for n, i, _ in self.enabled_triggers(run["project"])}
        fired = triggers.followers(
            self.project(run["project"]).scenarios, run["scenario"], run["status"]
        )
        queued = []
        for name, index in fired:
            if (name, index) in wanted:
                queued.append(
                    runs.request_run(
                        self.store,
                        self.infra_id,
                        run["project"],
                        name,
                        f"after {run['scenario']} (run {run_id} {run['status']})",
                        json.loads(run["params_json"] or "{}"),
                        fence,
                    )
                )
        return queued

    def watch_datasets(self, fence: runs.Fence | None = None) -> list[int]:
        """Queue a run per new partition of a watched dataset (``dataset_changed`` triggers).

        What was seen is kept in the control store, so partitions that arrived while the
        runner was down trigger their runs when it starts again. The first look at a dataset
        only records what is there.
        """
        queued = []
        for project_name in self.active_projects():
            try:
                queued += self._watch(project_name, fence)
            except Exception:  # noqa: BLE001 - one project must not stop the others' watch
                log.exception("%s: watching its datasets failed", project_name)
        return queued

    def _watch(self, project_name: str, fence: runs.Fence | None = None) -> list[int]:
        """The runs :meth:`watch_datasets` queues for one active project."""
        queued = []
        project = self.project(project_name)
        for scenario, index, trig in self.enabled_triggers(project_name):
            if trig.get("type") != "dataset_changed":
                continue
            ref = project.dataset(str(trig["dataset"]))
            key = f"dataset:{project_name}:{scenario}:{index}:{ref.name}"
            if ref.partitioned_by:
                now: list[str] = ref.partitions()
            else:
                f = ref.path / "data.parquet"
                now = [str(f.stat().st_mtime_ns)] if f.exists() else []
            # What was seen and the runs it fires: one transaction (fenced by the lease).
            with self.store.write() as conn:
                epoch = fence(conn) if fence else None
                row = conn.execute(
                    sa.select(runner_state.c.value).where(
                        runner_state.c.infra_id == self.infra_id, runner_state.c.key == key
                    )
                ).first()
                self._put_state(conn, key, json.dumps(now))
                if row is None:
                    continue
                for part in sorted(set(now) - set(json.loads(row[0]))):
                    params = {"day": part} if ref.partitioned_by else {}
                    what = f"dataset {ref.name} changed" + (f" ({part})" if params else "")
                    queued.append(
                        runs.add_run(
                            conn, self.infra_id, project_name, scenario, what, params, epoch
                        )
                    )
                    log.info(
                        "%s/%s: new data in %s (%s): run queued",
                        project_name,
                        scenario,
                        ref.name,
                        part,
                    )
        return queued
