"""Bundles: immutable snapshots of a project (definitions + active model versions)."""

from __future__ import annotations

import difflib
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from engine.access import audit, rights
from engine.core import home as layout
from engine.core.artifacts import DEFAULT_CAPS, MANIFEST, ArtifactError, Caps, verify, write_zip
from engine.core.errors import NodalError
from engine.project.project import ACTIVE_FILE, SAVED_MODELS_DIR, Project, definition_files
from engine.storage import objects as objstore
from engine.storage.control import ControlStore, bundles, now_iso

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KIND = "bundle"


class BundleError(NodalError):
    """A bundle cannot be created, found or trusted; the message says why."""


@dataclass(frozen=True)
class BundleInfo:
    project: str
    bundle_id: str
    path: Path
    sha256: str
    release_notes: str
    created_by: str
    created_at: str


def check_id(value: str, what: str = "bundle id") -> str:
    if not _ID.match(value or ""):
        raise BundleError(
            f"{what} {value!r} is invalid: use letters, digits, '.', '_' or '-' (max 64)"
        )
    return value


def _members(project: Project) -> tuple[dict[str, bytes], dict[str, str]]:
    members = {
        str(rel): (project.root / rel).read_bytes() for rel in definition_files(project.root)
    }
    versions: dict[str, str] = {}
    for model in project.models:
        version = project.active_model_version(model)
        if version is None:
            raise BundleError(f"model {model!r} has no active version: train it before bundling")
        versions[model] = version
        model_dir = project.saved_models_dir(model)
        for f in sorted((model_dir / version).iterdir()):
            members[f"{SAVED_MODELS_DIR}/{model}/{version}/{f.name}"] = f.read_bytes()
        members[f"{SAVED_MODELS_DIR}/{model}/{ACTIVE_FILE}"] = (version + "\n").encode()
    return members, versions


def create_bundle(
    home: Path,
    store: ControlStore,
    project: Project,
    bundle_id: str,
    release_notes: str,
    created_by: str,
    objects: objstore.ObjectStore | None = None,
) -> BundleInfo:
    """Snapshot ``project`` as bundle ``bundle_id`` and publish it to the deployer
    (``created_by`` needs the ``write`` right on the project) and to the object store
    (``objects``; default: the home itself)."""
    rights.require(store, created_by, "write", project=project.name)
    check_new_id(store, project.name, bundle_id)
    members, versions = _members(project)
    return publish(
        home,
        store,
        project.name,
        bundle_id,
        members,
        {"models": versions},
        release_notes,
        created_by,
        objects,
    )


def object_key(project: str, bundle_id: str) -> str:
    """The bundle's key in the object store: its path under the home, as always."""
    return (layout.bundles_dir(Path(), project) / f"{bundle_id}.zip").as_posix()


def put_artifact(objects: objstore.ObjectStore, key: str, path: Path, what: str) -> None:
    """Publish the zip at ``path`` as ``key``; on failure remove it, so the id stays free
    (the caller records nothing), and raise :class:`~engine.storage.objects.ObjectStoreError`."""
    try:
        objects.put_file(key, path)
    except objstore.ObjectStoreError as exc:
        path.unlink(missing_ok=True)
        raise objstore.ObjectStoreError(f"{what} was not published: {exc}") from None


def fetch(objects: objstore.ObjectStore, info: BundleInfo, cache: Path) -> Path:
    """A local file of the published bundle whose SHA-256 is the one recorded (from the
    node's cache ``cache``, else downloaded), or :class:`BundleError` naming the object."""
    what = f"bundle {info.bundle_id} of {info.project}"
    try:
        return objstore.fetch_verified(
            objects, object_key(info.project, info.bundle_id), info.sha256, cache, what
        )
    except objstore.ObjectStoreError as exc:
        raise BundleError(str(exc)) from None


def check_new_id(store: ControlStore, project: str, bundle_id: str) -> None:
    """Refuse an invalid id, or one already used (bundles are immutable)."""
    check_id(bundle_id)
    if get_bundle(store, project, bundle_id, missing_ok=True):
        raise BundleError(
            f"bundle {bundle_id!r} of project {project!r} already exists (the id is already "
            "used): bundles are immutable, choose a new id"
        )


def publish(
    home: Path,
    store: ControlStore,
    project: str,
    bundle_id: str,
    members: dict[str, bytes],
    contents: dict[str, Any],
    release_notes: str,
    created_by: str,
    objects: objstore.ObjectStore | None = None,
) -> BundleInfo:
    """Write the bundle zip (manifest = identity + ``contents`` + checksums), publish it to
    the object store ``objects`` (default: the home itself) and register it."""
    created_at = now_iso()
    manifest = {
        "kind": KIND,
        "format": 1,
        "project": project,
        "bundle_id": bundle_id,
        "release_notes": release_notes,
        "created_by": created_by,
        "created_at": created_at,
        **contents,
    }
    key = object_key(project, bundle_id)
    path = home / key
    try:
        digest = write_zip(path, members, manifest)
        put_artifact(objects or objstore.LocalObjectStore(home), key, path, f"bundle {bundle_id}")
    except (ArtifactError, objstore.ObjectStoreError) as exc:
        raise BundleError(str(exc)) from None
    try:
        with store.write() as conn:
            conn.execute(
                sa.insert(bundles).values(
                    project=project,
                    bundle_id=bundle_id,
                    path=str(path),
                    sha256=digest,
                    release_notes=release_notes,
                    created_by=created_by,
                    created_at=created_at,
                )
            )
            audit.record(
                conn,
                created_by,
                "bundle.create",
                "bundle",
                f"{project}/{bundle_id}",
                after={"sha256": digest, "release_notes": release_notes},
            )
    except sa.exc.IntegrityError:
        raise BundleError(f"bundle id {bundle_id!r} is already used") from None
    return BundleInfo(project, bundle_id, path, digest, release_notes, created_by, created_at)


def get_bundle(
    store: ControlStore, project: str, bundle_id: str, missing_ok: bool = False
) -> BundleInfo | None:
    with store.read() as conn:
        row = (
            conn.execute(
                sa.select(bundles).where(
                    bundles.c.project == project, bundles.c.bundle_id == bundle_id
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        if missing_ok:
            return None
        raise BundleError(f"project {project!r} has no bundle {bundle_id!r}")
    return BundleInfo(
        row["project"],
        row["bundle_id"],
        Path(row["path"]),
        row["sha256"],
        row["release_notes"],
        row["created_by"],
        row["created_at"],
    )


def list_bundles(store: ControlStore, project: str | None = None) -> list[BundleInfo]:
    q = sa.select(bundles).order_by(bundles.c.created_at.desc())
    if project:
        q = q.where(bundles.c.project == project)
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        BundleInfo(
            r["project"],
            r["bundle_id"],
            Path(r["path"]),
            r["sha256"],
            r["release_notes"],
            r["created_by"],
            r["created_at"],
        )
        for r in rows
    ]


def verify_bundle(
    path: Path,
    project: str | None = None,
    bundle_id: str | None = None,
    sha256: str | None = None,
    caps: Caps = DEFAULT_CAPS,
) -> dict[str, Any]:
    """Check every member's SHA-256 and that the bundle is the one expected; return its manifest.

    ``sha256``: the zip's digest recorded at publish (:attr:`BundleInfo.sha256`); a zip that
    differs, however self-consistent its manifest, is refused. ``caps``: the size caps
    (settings NODAL_ARTIFACT_MAX_*).
    """
    try:
        manifest = verify(path, KIND, sha256, caps)
    except ArtifactError as exc:
        raise BundleError(str(exc)) from None
    if manifest.get("kind") != KIND:
        raise BundleError(
            f"{Path(path).name} is not a project bundle (kind {manifest.get('kind')!r})"
        )
    if project is not None and manifest.get("project") != project:
        raise BundleError(
            f"bundle {manifest.get('bundle_id')!r} belongs to project "
            f"{manifest.get('project')!r}, not {project!r}"
        )
    if bundle_id is not None and manifest.get("bundle_id") != bundle_id:
        raise BundleError(
            f"{Path(path).name} holds bundle {manifest.get('bundle_id')!r}, not {bundle_id!r}"
        )
    return manifest


# --- diff between two bundles (Deployer Console, `nodal bundle diff`) ---------------------------


@dataclass(frozen=True)
class MemberChange:
    member: str
    change: str  # added | removed | changed


def _manifest_and_reader(store: ControlStore, project: str, bundle_id: str) -> dict[str, Any]:
    info = get_bundle(store, project, bundle_id)
    assert info is not None
    try:
        with zipfile.ZipFile(info.path) as zf:
            return json.loads(zf.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"bundle {bundle_id!r} cannot be read: {exc}") from None


def diff_bundles(
    store: ControlStore, project: str, old: str, new: str
) -> tuple[list[MemberChange], dict[str, tuple[str | None, str | None]]]:
    """What changed from bundle ``old`` to ``new``: members (by checksum) and model versions."""
    a = _manifest_and_reader(store, project, old)
    b = _manifest_and_reader(store, project, new)
    ma, mb = a.get("members", {}), b.get("members", {})
    changes = [
        MemberChange(m, "added" if m not in ma else "removed" if m not in mb else "changed")
        for m in sorted(set(ma) | set(mb))
        if ma.get(m) != mb.get(m)
    ]
    models_a, models_b = a.get("models", {}), b.get("models", {})
    models = {
        m: (models_a.get(m), models_b.get(m))
        for m in sorted(set(models_a) | set(models_b))
        if models_a.get(m) != models_b.get(m)
    }
    return changes, models


def member_diff(store: ControlStore, project: str, old: str, new: str, member: str) -> str:
    """A unified diff of one text member between two bundles ('' if binary or unchanged)."""
    texts = []
    for bundle_id in (old, new):
        info = get_bundle(store, project, bundle_id)
        assert info is not None
        try:
            with zipfile.ZipFile(info.path) as zf:
                data = zf.read(member) if member in zf.namelist() else b""
        except (OSError, zipfile.BadZipFile) as exc:
            raise BundleError(f"bundle {bundle_id!r} cannot be read: {exc}") from None
        try:
            texts.append(data.decode("utf-8").splitlines(keepends=True))
        except UnicodeDecodeError:
            return ""
    return "".join(difflib.unified_diff(texts[0], texts[1], f"{old}/{member}", f"{new}/{member}"))
