"""API packages: immutable versions of an API service (models + enrichment data)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import sqlalchemy as sa
import yaml

from engine.access import audit, rights
from engine.core import home as layout
from engine.core.artifacts import ArtifactError, read_verified, verify, write_zip
from engine.core.errors import NodalError
from engine.deployer.bundles import check_id, put_artifact
from engine.models import feature_parity
from engine.models.saved import SavedModel
from engine.project.api_services import endpoint_features, key_mapping
from engine.project.feature_sql import FeatureSqlError
from engine.project.project import Project, ProjectError
from engine.project.windows import WindowsError
from engine.storage import datasets as ds
from engine.storage import objects as objstore
from engine.storage.control import ControlStore, api_packages, now_iso

KIND = "api_package"
SERVICE_FILE = "service.yaml"
FEATURES_SQL, REQUEST_SCHEMA = "features.sql", "request.json"  # read by the API node
WINDOWS_DIR = "windows"  # <dataset>.json: the windows declarations the feature recipe joins
log = logging.getLogger("nodal.packages")


class PackageError(NodalError):
    """A package cannot be created, found or trusted; the message says why."""


@dataclass(frozen=True)
class PackageInfo:
    service: str
    version: str
    project: str
    path: Path
    sha256: str
    release_notes: str
    created_by: str
    created_at: str


def _enrichment_bytes(project: Project, spec: dict[str, Any]) -> bytes:
    """The lookup rows an endpoint needs, as Parquet bytes."""
    ref = project.dataset(spec["dataset"])
    where = ""
    if spec.get("rows", "all") == "latest_day":
        where = f"WHERE day = (SELECT max(day) FROM {ds.scan_sql(ref)})"
    select = "*"
    if spec.get("select"):
        select = ", ".join('"' + str(c).replace('"', '""') + '"' for c in spec["select"])
    with tempfile.TemporaryDirectory() as tmp:
        out = ds.DatasetRef("enrichment", Path(tmp) / "enrichment")
        with ds.session() as con:
            ds.write(out, f"SELECT {select} FROM {ds.scan_sql(ref)} {where}", con=con)
        return (out.path / ds.DATA_FILE).read_bytes()


def _feature_members(project: Project, ep: dict[str, Any], model: SavedModel) -> dict[str, bytes]:
    """The endpoint's feature recipe, request schema and parity sample, once real time is
    proven to reproduce batch on the project's own rows (PackageError naming the feature)."""
    where = f"endpoint {ep['id']}"
    try:
        found = endpoint_features(project, ep, model.feature_names)
        if found is None:
            return {}
        w = found.windowed  # windowed features: the sample carries the events to replay
        sample = feature_parity.sample(project, found.sql, found.plan, model, windowed=w)
        checked = feature_parity.verify(found.plan, model, sample, where, w)
    except (FeatureSqlError, WindowsError, feature_parity.ParityError) as exc:
        raise PackageError(str(exc)) from None
    log.info("%s: real time reproduces batch on %d sampled rows", where, checked)
    folder = f"endpoints/{ep['id']}"
    members = {
        f"{folder}/{FEATURES_SQL}": found.sql.encode(),
        f"{folder}/{REQUEST_SCHEMA}": json.dumps(found.request, indent=1).encode(),
    }
    members.update({f"{folder}/{n}": b for n, b in sample.to_parquet(found.plan).items()})
    for dataset, spec in found.windowed.items():
        members[f"{folder}/{WINDOWS_DIR}/{dataset}.json"] = spec.to_json().encode()
    return members


def _members(project: Project, service: dict[str, Any]) -> tuple[dict[str, bytes], dict[str, str]]:
    members: dict[str, bytes] = {SERVICE_FILE: yaml.safe_dump(service, sort_keys=False).encode()}
    versions: dict[str, str] = {}
    for ep in service.get("endpoints") or []:
        kind = ep.get("type", "prediction")
        if kind == "lookup":
            columns = ep.get("columns")
            keys = list(key_mapping(ep.get("key") or ep.get("keys")).values())
            select = None if columns is None else list(dict.fromkeys([*keys, *columns]))
            spec = {**ep, "select": select}
            members[f"endpoints/{ep['id']}/lookup.parquet"] = _enrichment_bytes(project, spec)
            continue
        if kind != "prediction":
            raise PackageError(
                f"endpoint {ep.get('id')!r}: type must be 'prediction' or 'lookup', not {kind!r}"
            )
        model_dir = project.active_model_dir(ep["model"])
        versions[ep["id"]] = model_dir.name
        for f in sorted(model_dir.iterdir()):
            members[f"endpoints/{ep['id']}/model/{f.name}"] = f.read_bytes()
        members.update(_feature_members(project, ep, SavedModel.load(model_dir)))
        for enr in ep.get("enrichments") or []:
            members[f"endpoints/{ep['id']}/enrichments/{enr['dataset']}.parquet"] = (
                _enrichment_bytes(project, enr)
            )
    return members, versions


def create_package(
    home: Path,
    store: ControlStore,
    project: Project,
    service_id: str,
    version: str,
    release_notes: str,
    created_by: str,
    objects: objstore.ObjectStore | None = None,
) -> PackageInfo:
    """Freeze the service's endpoints (active models, enrichment rows) as package ``version``
    and publish it to the object store ``objects`` (default: the home itself)."""
    rights.require(store, created_by, "write", project=project.name)
    check_id(version, "package version")
    service = project.api_services.get(service_id)
    if service is None:
        raise ProjectError(f"project {project.name!r} has no API service {service_id!r}")
    if get_package(store, service_id, version, missing_ok=True):
        raise PackageError(f"package {version!r} of service {service_id!r} already exists")
    try:
        members, versions = _members(project, service)
    except ds.DatasetError as exc:
        raise PackageError(f"cannot package {service_id}: {exc} (build the flow first)") from None
    except (KeyError, ValueError, duckdb.Error) as exc:
        raise PackageError(f"cannot package {service_id}: {exc}") from None
    created_at = now_iso()
    manifest = {
        "kind": KIND,
        "format": 1,
        "service": service_id,
        "version": version,
        "project": project.name,
        "release_notes": release_notes,
        "created_by": created_by,
        "created_at": created_at,
        "model_versions": versions,
    }
    key = object_key(service_id, version)
    path = home / key
    try:
        digest = write_zip(path, members, manifest)
        put_artifact(objects or objstore.LocalObjectStore(home), key, path, f"package {version}")
    except (ArtifactError, objstore.ObjectStoreError) as exc:
        raise PackageError(str(exc)) from None
    with store.write() as conn:
        conn.execute(
            sa.insert(api_packages).values(
                service=service_id,
                version=version,
                project=project.name,
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
            "package.create",
            "service",
            service_id,
            after={"version": version, "sha256": digest},
        )
    return PackageInfo(
        service_id, version, project.name, path, digest, release_notes, created_by, created_at
    )


def object_key(service: str, version: str) -> str:
    """The package's key in the object store: its path under the home, as always."""
    return (layout.api_packages_dir(Path(), service) / f"{version}.zip").as_posix()


def fetch(objects: objstore.ObjectStore, info: PackageInfo, cache: Path) -> Path:
    """A local file of the published package whose SHA-256 is the one recorded (from the
    node's cache ``cache``, else downloaded), or :class:`PackageError` naming the object."""
    what = f"package {info.version} of {info.service}"
    try:
        return objstore.fetch_verified(
            objects, object_key(info.service, info.version), info.sha256, cache, what
        )
    except objstore.ObjectStoreError as exc:
        raise PackageError(str(exc)) from None


def _info(row: Any) -> PackageInfo:
    return PackageInfo(
        row["service"],
        row["version"],
        row["project"],
        Path(row["path"]),
        row["sha256"],
        row["release_notes"],
        row["created_by"],
        row["created_at"],
    )


def get_package(
    store: ControlStore, service: str, version: str, missing_ok: bool = False
) -> PackageInfo | None:
    with store.read() as conn:
        row = (
            conn.execute(
                sa.select(api_packages).where(
                    api_packages.c.service == service, api_packages.c.version == version
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        if missing_ok:
            return None
        raise PackageError(f"service {service!r} has no package version {version!r}")
    return _info(row)


def list_packages(store: ControlStore, service: str | None = None) -> list[PackageInfo]:
    q = sa.select(api_packages).order_by(api_packages.c.created_at.desc())
    if service:
        q = q.where(api_packages.c.service == service)
    with store.read() as conn:
        return [_info(r) for r in conn.execute(q).mappings().all()]


def verify_package(
    path: Path,
    service: str | None = None,
    version: str | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Check every member and the package's identity; ``sha256``: the zip's digest recorded
    at publish (:attr:`PackageInfo.sha256`), a zip that differs is refused."""
    try:
        manifest = verify(path, "API package", sha256)
    except ArtifactError as exc:
        raise PackageError(str(exc)) from None
    if manifest.get("kind") != KIND:
        raise PackageError(f"{Path(path).name} is not an API package")
    if service is not None and manifest.get("service") != service:
        raise PackageError(
            f"package belongs to service {manifest.get('service')!r}, not {service!r}"
        )
    if version is not None and manifest.get("version") != version:
        raise PackageError(
            f"{Path(path).name} holds version {manifest.get('version')!r}, not {version!r}"
        )
    return manifest


def test_queries(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The test queries a package carries, by endpoint (from its service definition)."""
    try:
        _, members = read_verified(path, "API package")
    except ArtifactError as exc:
        raise PackageError(str(exc)) from None
    service = yaml.safe_load(members[SERVICE_FILE])
    return {ep["id"]: list(ep.get("test_queries") or []) for ep in service.get("endpoints") or []}
