"""Choose what travels in a bundle, compare bundles, and revert a project to a bundle.

:func:`engine.deployer.bundles.create_bundle` snapshots the definitions and each model's active
version. :func:`create_bundle` here does the same with choices: which model version
travels (any saved version, not only the active one) and which managed datasets travel
with their data (under ``data/<dataset>/…`` in the zip; the manifest lists each dataset's
partitions, rows and checksum). Its output is an ordinary bundle: same manifest format,
same table, verified the same way.
"""

from __future__ import annotations

import difflib
import hashlib
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.artifacts import ArtifactError, check_member_name, read_verified
from engine.deployer import bundles
from engine.models.saved import set_active
from engine.project import definitions
from engine.project.project import (
    ACTIVE_FILE,
    MANAGED_DATA_DIR,
    SAVED_MODELS_DIR,
    Project,
    definition_files,
)
from engine.storage import datasets as ds
from engine.storage.control import ControlStore
from engine.storage.objects import ObjectStore

BundleError = bundles.BundleError


@dataclass
class BundleDiff:
    """What changed from bundle ``before`` (None: nothing before) to ``after``."""

    before: str | None
    after: str
    files: list[dict[str, str]] = field(default_factory=list)  # path, change, diff
    models: list[dict[str, str | None]] = field(default_factory=list)  # model, before, after
    data: list[dict[str, Any]] = field(default_factory=list)  # dataset, before, after

    @property
    def empty(self) -> bool:
        return not (self.files or self.models or self.data)


def _dataset_members(project: Project, name: str) -> tuple[dict[str, bytes], dict[str, Any]]:
    d = project.datasets.get(name)
    if d is None:
        raise BundleError(f"project {project.name!r} has no dataset {name!r}")
    if d.kind != "managed":
        raise BundleError(
            f"dataset {name!r} is a source: each node reads it from its own landing zone, "
            "only managed datasets travel in a bundle"
        )
    ref = project.dataset(name)
    if not ref.exists():
        raise BundleError(f"dataset {name!r} has no data to carry: build or import it first")
    members: dict[str, bytes] = {}
    for path in sorted(ref.path.rglob("*.parquet")):
        rel = path.relative_to(ref.path)
        if rel.parts[0].startswith("."):
            continue
        members[f"{MANAGED_DATA_DIR}/{name}/{rel.as_posix()}"] = path.read_bytes()
    digest = hashlib.sha256()
    for key in sorted(members):
        digest.update(key.encode() + hashlib.sha256(members[key]).digest())
    with ds.session() as con:
        rows = con.execute(f"SELECT count(*) FROM {ds.scan_sql(ref)}").fetchone()[0]
    summary = {
        "rows": int(rows),
        "files": len(members),
        "partitions": ref.partitions() if ref.partitioned_by else [],
        "sha256": digest.hexdigest(),
    }
    return members, summary


def bundle_members(
    project: Project,
    datasets: Sequence[str] = (),
    model_versions: Mapping[str, str] | None = None,
) -> tuple[dict[str, bytes], dict[str, str], dict[str, Any]]:
    """Members, model versions and dataset summaries of a bundle made of these choices."""
    members = {
        str(rel): (project.root / rel).read_bytes() for rel in definition_files(project.root)
    }
    versions: dict[str, str] = {}
    for model in project.models:
        version = (model_versions or {}).get(model) or project.active_model_version(model)
        if version is None:
            raise BundleError(f"model {model!r} has no active version: train it before bundling")
        model_dir = project.saved_models_dir(model) / version
        if not model_dir.is_dir():
            raise BundleError(f"model {model!r} has no version {version!r}")
        versions[model] = version
        for f in sorted(model_dir.iterdir()):
            members[f"{SAVED_MODELS_DIR}/{model}/{version}/{f.name}"] = f.read_bytes()
        members[f"{SAVED_MODELS_DIR}/{model}/{ACTIVE_FILE}"] = (version + "\n").encode()
    unknown = sorted(set(model_versions or {}) - set(project.models))
    if unknown:
        raise BundleError(f"project {project.name!r} has no model {', '.join(unknown)}")
    summaries: dict[str, Any] = {}
    for name in dict.fromkeys(datasets):
        data, summaries[name] = _dataset_members(project, name)
        members.update(data)
    return members, versions, summaries


def create_bundle(
    home: Path,
    store: ControlStore,
    project: Project,
    bundle_id: str,
    release_notes: str,
    created_by: str,
    datasets: Sequence[str] = (),
    model_versions: Mapping[str, str] | None = None,
    objects: ObjectStore | None = None,
) -> bundles.BundleInfo:
    """Snapshot ``project`` with the chosen model versions and datasets; publish it (to the
    object store ``objects``; default: the home)."""
    bundles.check_new_id(store, project.name, bundle_id)
    members, versions, summaries = bundle_members(project, datasets, model_versions)
    contents = {"models": versions, "datasets": summaries}
    return bundles.publish(
        home, store, project.name, bundle_id, members, contents, release_notes, created_by, objects
    )


# --- diff -------------------------------------------------------------------------------------


def _is_definition(name: str) -> bool:
    top = name.split("/", 1)[0]
    return top not in (SAVED_MODELS_DIR, MANAGED_DATA_DIR)


def _text(data: bytes | None) -> list[str]:
    if data is None:
        return []
    try:
        return data.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return [f"<{len(data)} bytes of binary data>\n"]


def diff_contents(
    before_id: str | None,
    before: tuple[dict[str, Any], dict[str, bytes]] | None,
    after_id: str,
    after: tuple[dict[str, Any], dict[str, bytes]],
) -> BundleDiff:
    """Compare two bundles' (manifest, members)."""
    out = BundleDiff(before_id, after_id)
    old_manifest, old = before or ({}, {})
    new_manifest, new = after
    names = sorted({n for n in (*old, *new) if _is_definition(n)})
    for name in names:
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        change = "added" if a is None else "removed" if b is None else "changed"
        text = "".join(
            difflib.unified_diff(
                _text(a), _text(b), fromfile=f"{before_id}/{name}", tofile=f"{after_id}/{name}"
            )
        )
        out.files.append({"path": name, "change": change, "diff": text})
    old_models, new_models = old_manifest.get("models") or {}, new_manifest.get("models") or {}
    for model in sorted({*old_models, *new_models}):
        if old_models.get(model) != new_models.get(model):
            out.models.append(
                {"model": model, "before": old_models.get(model), "after": new_models.get(model)}
            )
    old_data, new_data = old_manifest.get("datasets") or {}, new_manifest.get("datasets") or {}
    for name in sorted({*old_data, *new_data}):
        a, b = old_data.get(name), new_data.get(name)
        if (a or {}).get("sha256") != (b or {}).get("sha256"):
            out.data.append({"dataset": name, "before": a, "after": b})
    return out


def _read(store: ControlStore, project: str, bundle_id: str) -> tuple[dict, dict]:
    info = bundles.get_bundle(store, project, bundle_id)
    try:
        return read_verified(info.path, bundles.KIND, sha256=info.sha256)
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None


def previous_bundle(store: ControlStore, project: str, bundle_id: str | None) -> str | None:
    """The bundle created just before ``bundle_id`` (the newest one when ``None``)."""
    ids = [b.bundle_id for b in reversed(bundles.list_bundles(store, project))]  # oldest first
    if bundle_id is None:
        return ids[-1] if ids else None
    if bundle_id not in ids:
        raise BundleError(f"project {project!r} has no bundle {bundle_id!r}")
    i = ids.index(bundle_id)
    return ids[i - 1] if i > 0 else None


def diff_bundles(
    store: ControlStore, project: str, bundle_id: str, against: str | None = None
) -> BundleDiff:
    """What ``bundle_id`` changes compared with ``against`` (default: the bundle before it)."""
    after = _read(store, project, bundle_id)
    before_id = against or previous_bundle(store, project, bundle_id)
    before = _read(store, project, before_id) if before_id else None
    return diff_contents(before_id, before, bundle_id, after)


def diff_project(
    store: ControlStore,
    project: Project,
    datasets: Sequence[str] = (),
    model_versions: Mapping[str, str] | None = None,
) -> BundleDiff:
    """What a bundle made now (with these choices) would change against the newest bundle."""
    members, versions, summaries = bundle_members(project, datasets, model_versions)
    before_id = previous_bundle(store, project.name, None)
    before = _read(store, project.name, before_id) if before_id else None
    manifest = {"models": versions, "datasets": summaries}
    return diff_contents(before_id, before, "(project now)", (manifest, members))


# --- revert -----------------------------------------------------------------------------------


def revert(store: ControlStore, project: Project, bundle_id: str) -> BundleDiff:
    """Make the project what bundle ``bundle_id`` holds: definitions, model versions, data.

    Definitions are replaced together (refused if the bundle's project would not load);
    model versions missing locally are restored from the bundle and made active; datasets
    the bundle carries get their data back. Returns what changed.
    """
    manifest, members = _read(store, project.name, bundle_id)
    _check_paths(bundle_id, manifest, members)
    current_members = {
        str(rel): (project.root / rel).read_bytes() for rel in definition_files(project.root)
    }
    versions = {m: project.active_model_version(m) for m in project.models}
    changed = diff_contents(
        "(project now)", ({"models": versions}, current_members), bundle_id, (manifest, members)
    )
    changes: dict[str, str | None] = {
        name: data.decode() for name, data in members.items() if _is_definition(name)
    }
    for rel in definition_files(project.root):
        changes.setdefault(str(rel), None)
    definitions.save_project(project, changes)
    for model, version in (manifest.get("models") or {}).items():
        target = project.saved_models_dir(model) / version
        if not target.exists():
            prefix = f"{SAVED_MODELS_DIR}/{model}/{version}/"
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".restore-"))
            for name, data in members.items():
                if name.startswith(prefix):
                    (staging / name[len(prefix) :]).write_bytes(data)
            staging.rename(target)
        set_active(project, model, version)
    for name in manifest.get("datasets") or {}:
        _restore_dataset(project, name, members)
    return changed


def _check_paths(bundle_id: str, manifest: dict[str, Any], members: dict[str, bytes]) -> None:
    """Refuse, before anything is written, a path that would leave the project: a member's,
    or one the manifest names (a model, its version, a dataset). The check extraction uses."""
    where = f"bundle {bundle_id}"
    paths = list(members)
    paths += [
        f"{SAVED_MODELS_DIR}/{model}/{version}"
        for model, version in (manifest.get("models") or {}).items()
    ]
    paths += [f"{MANAGED_DATA_DIR}/{name}" for name in manifest.get("datasets") or {}]
    try:
        for path in paths:
            check_member_name(str(path), where)
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    names = [*(manifest.get("models") or {}).values(), *(manifest.get("models") or {})]
    names += list(manifest.get("datasets") or {})
    for name in names:  # one folder level each: not empty, not "." (the folder above)
        if not isinstance(name, str) or name in ("", ".") or "/" in name or "\\" in name:
            raise BundleError(f"{where}: {name!r} is not a valid model, version or dataset name")


def _restore_dataset(project: Project, name: str, members: dict[str, bytes]) -> None:
    target = project.data_root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.restore-"))
    prefix = f"{MANAGED_DATA_DIR}/{name}/"
    try:
        for member, data in members.items():
            if member.startswith(prefix):
                out = staging / member[len(prefix) :]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(data)
        old = target.parent / f".{name}.old-{staging.name[-8:]}"
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
