"""Immutable zip artifacts (bundles, API packages) with a manifest of SHA-256 per member.

Creating writes a zip with ``manifest.json``; verifying reads every member, recomputes its
checksum and refuses the archive, naming the member, if anything differs, is missing or
was added. Extracting verifies first and moves the result into place in one rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.core.errors import NodalError

MANIFEST = "manifest.json"


class ArtifactError(NodalError):
    """An artifact is missing, corrupted, tampered with or of the wrong kind."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_zip(target: Path, members: Mapping[str, bytes], manifest: dict[str, Any]) -> str:
    """Write ``members`` plus a manifest with their checksums; return the zip's SHA-256."""
    manifest = {
        **manifest,
        "members": {name: sha256_bytes(data) for name, data in sorted(members.items())},
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))
            for name, data in sorted(members.items()):
                zf.writestr(name, data)
        if target.exists():
            raise ArtifactError(f"{target.name} already exists: artifacts are immutable")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return sha256_file(target)


def read_verified(path: Path, kind: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Manifest and member bytes of a verified artifact, or :class:`ArtifactError`."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{kind} file {path} does not exist")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactError(f"{kind} {path.name} is not a readable zip archive: {exc}") from None
    with zf:
        names = set(zf.namelist())
        if MANIFEST not in names:
            raise ArtifactError(f"{kind} {path.name} has no {MANIFEST}")
        try:
            manifest = json.loads(zf.read(MANIFEST))
        except (zipfile.BadZipFile, zlib.error, ValueError) as exc:
            raise ArtifactError(
                f"{kind} {path.name}: member {MANIFEST} is corrupted ({exc})"
            ) from None
        expected = manifest.get("members")
        if not isinstance(expected, dict):
            raise ArtifactError(f"{kind} {path.name}: {MANIFEST} lists no members")
        extra = sorted(names - set(expected) - {MANIFEST})
        if extra:
            raise ArtifactError(f"{kind} {path.name}: member {extra[0]} is not in the manifest")
        members: dict[str, bytes] = {}
        for name, digest in expected.items():
            if name not in names:
                raise ArtifactError(f"{kind} {path.name}: member {name} is missing")
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                raise ArtifactError(
                    f"{kind} {path.name}: member {name} is corrupted ({exc})"
                ) from None
            if sha256_bytes(data) != digest:
                raise ArtifactError(f"{kind} {path.name}: member {name} fails its SHA-256 check")
            members[name] = data
    return manifest, members


def extract_verified(path: Path, dest: Path, kind: str) -> dict[str, Any]:
    """Verify, then materialise the artifact at ``dest`` (atomically; existing dest is kept)."""
    manifest, members = read_verified(path, kind)
    if dest.exists():
        return manifest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for name, data in members.items():
            out = staging / name
            if ".." in Path(name).parts or Path(name).is_absolute():
                raise ArtifactError(f"{kind} {path.name}: member {name} escapes the archive")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(data)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.rename(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest
