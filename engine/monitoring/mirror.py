"""Monitoring on a host that shares no folder: a read-only mirror of what a node published.

With ``NODAL_STORE_URL`` set, Monitoring does not read an automation node's home (it is on
another host). It mirrors, into its own home (``<home>/monitoring/<infra>/``, laid out as
an automation node's home so every page reads it unchanged):

* the bundle the node reports active (the deployment's ``node_version``), downloaded from
  the store, checked against the SHA-256 the control store recorded, and extracted;
* each published dashboard extract named by ``published_days`` (the run that published it
  names the object, :func:`engine.automation.published_outputs.extract_key`), downloaded
  when the mirror does not hold that run's file yet;
* the API nodes' compacted query logs (``apinode/<infra>/querylog/parquet/*.parquet``, put
  there by :func:`engine.apinode.querylog.publish_compacted`), downloaded when new
  (:func:`querylog_home`). Queries still in a live segment (at most a minute) are not there
  yet.

Without an S3 store, Monitoring reads the node's home as before and nothing is mirrored.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import sqlalchemy as sa

from engine.automation import published_outputs
from engine.automation.node import AutomationNode
from engine.core.artifacts import ArtifactError, Caps, extract_verified
from engine.core.settings import Settings
from engine.deployer import bundles
from engine.deployer import deployments as deployer
from engine.project.project import Project, ProjectError
from engine.storage import objects as objstore
from engine.storage.control import ControlStore, published_days

RECORD = ".mirrored.json"  # in the mirrored data root: "<dashboard>/<day>" -> object key


def mirror_settings(settings: Settings) -> Settings:
    """The settings whose home is Monitoring's mirror (an automation home per infra)."""
    return settings.with_home(settings.home / "monitoring")


def mirrored(settings: Settings) -> bool:
    return bool(settings.store_url)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def mirror_project(settings: Settings, store: ControlStore, infra_id: str, project: str) -> Project:
    """The project as ``infra_id`` runs it, mirrored from the object store into this home.

    Raises :class:`ProjectError` when the node reports no active bundle of it (or the store
    cannot give it: the message names the object and the reason).
    """
    node = AutomationNode(mirror_settings(settings), store, infra_id)
    try:
        dep = deployer.get_deployment(store, deployer.deployment_id_for(project, infra_id))
    except deployer.DeployerError as exc:
        raise ProjectError(str(exc)) from None
    bundle_id = dep.node_version
    if not bundle_id:
        raise ProjectError(f"project {project!r} is not active on {infra_id}")
    try:
        info = bundles.get_bundle(store, project, bundle_id)
        path = bundles.fetch(node.objects, info, node.home / "cache")
        extract_verified(
            path,
            node.bundle_dir(project, bundle_id),
            bundles.KIND,
            sha256=info.sha256,
            caps=Caps.from_settings(settings),
        )
    except (bundles.BundleError, ArtifactError) as exc:
        raise ProjectError(f"bundle {bundle_id} of {project} cannot be mirrored: {exc}") from None
    if node.active_bundle(project) != bundle_id:
        _write_atomic(node.home / "active" / project, bundle_id + "\n")
    loaded = node.load(project, bundle_id)
    _mirror_extracts(node, store, loaded)
    return loaded


def _mirror_extracts(node: AutomationNode, store: ControlStore, project: Project) -> None:
    with store.read() as conn:
        rows = conn.execute(
            sa.select(published_days.c.dashboard, published_days.c.day, published_days.c.run_id)
            .where(published_days.c.infra_id == node.infra_id)
            .where(published_days.c.project == project.name)
        ).all()
    record_path = project.data_root / RECORD
    record: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(record_path.read_text())
    changed = False
    for dashboard, day, run_id in rows:
        if run_id is None or dashboard not in project.dashboards:
            continue
        key = published_outputs.extract_key(node.infra_id, project.name, dashboard, day, run_id)
        target = published_outputs.extract_file(project, dashboard, day)
        if record.get(f"{dashboard}/{day}") == key and target.exists():
            continue
        try:
            node.objects.download(key, target)
        except objstore.ObjectStoreError:
            continue  # not uploaded (yet), or the store is down: the page says it cannot read it
        record[f"{dashboard}/{day}"] = key
        changed = True
    if changed:
        _write_atomic(record_path, json.dumps(record, indent=1, sort_keys=True))


def querylog_home(settings: Settings, store: ControlStore) -> Path:
    """The home to read API query logs from: this one, or, with an S3 store, the mirror,
    after downloading the compacted logs of every API node not mirrored yet. A store that
    cannot be read leaves the mirror as it was (the pages show what it holds)."""
    if not mirrored(settings):
        return settings.home
    home = mirror_settings(settings).home
    objects = objstore.open_store(settings)
    for infra in deployer.list_infras(store):
        if infra["kind"] != "apinode":
            continue
        prefix = f"apinode/{infra['infra_id']}/querylog/parquet"
        try:
            listed = objects.list(prefix)
        except objstore.ObjectStoreError:
            continue
        for obj in listed:
            target = home / obj.key
            if not target.exists():
                with contextlib.suppress(objstore.ObjectStoreError):
                    objects.download(obj.key, target)
    return home
