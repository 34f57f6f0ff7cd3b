"""Immutable zip artifacts (bundles, API packages) with a manifest of SHA-256 per member.

Creating writes a zip with ``manifest.json``; verifying reads every member, recomputes its
checksum and refuses the archive, naming the member, if anything differs, is missing or
was added. Extracting verifies and moves the result into place in one rename.

The manifest vouches for the members, not for itself: whoever can write the deployer's
folder could write a new, self-consistent zip. So readers that act on an artifact pass the
zip's SHA-256 recorded in the control store at publish (``sha256=``), and a file that
differs is refused before a member is read. A zip is a size bomb until proven otherwise:
its central directory is checked against the caps below before anything is decompressed,
and members are read in chunks, each refused as soon as it yields more than its header
declared. Member paths that would leave the folder they are written to (absolute, ``..``)
are refused by :func:`check_member_name`, the one check for every writer of such paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import lzma
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from engine.core.errors import NodalError
from engine.core.settings import Settings

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Caps:
    """What one artifact may unpack to (bundles carry data: a day partition per file).
    Settings NODAL_ARTIFACT_MAX_BYTES, NODAL_ARTIFACT_MAX_MEMBER_BYTES,
    NODAL_ARTIFACT_MAX_MEMBERS; processes that extract pass :meth:`from_settings`."""

    total_bytes: int = 2 * 1024**3  # all members together, uncompressed
    member_bytes: int = 1024**3  # one member, uncompressed
    members: int = 10_000  # members in the zip, the manifest included

    @classmethod
    def from_settings(cls, settings: Settings) -> Caps:
        return cls(
            settings.artifact_max_bytes,
            settings.artifact_max_member_bytes,
            settings.artifact_max_members,
        )


DEFAULT_CAPS = Caps()
MAX_TOTAL_BYTES = DEFAULT_CAPS.total_bytes
MAX_MEMBER_BYTES = DEFAULT_CAPS.member_bytes
MAX_MEMBERS = DEFAULT_CAPS.members
_CHUNK = 1 << 20
# What reading a damaged or unsupported member raises (compression method, encryption, …).
_UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    ValueError,
)


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


def check_member_name(name: str, where: str) -> str:
    """Refuse a member path that would be written outside the folder it is extracted to.

    The one check for every place that writes a path an artifact names (extraction, and
    ``bundle revert`` on the design node): absolute paths, drive letters, ``..`` and empty
    names are refused with :class:`ArtifactError`. Returns ``name``.
    """
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if (
        not name
        or "\x00" in name
        or posix.is_absolute()
        or windows.anchor
        or ".." in posix.parts
        or ".." in windows.parts
    ):
        raise ArtifactError(f"{where}: member {name!r} escapes the archive")
    return name


class _Budget:
    """Uncompressed bytes read so far, against the caps."""

    def __init__(self, caps: Caps) -> None:
        self.total, self.caps = 0, caps


def _copy_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    where: str,
    budget: _Budget,
    sink: Callable[[bytes], object] | None,
) -> str:
    """Stream one member to ``sink``; return its SHA-256. Refuses a member that yields more
    than its header declared (or than the caps), before holding more than one chunk of it."""
    limit = min(info.file_size, budget.caps.member_bytes)
    digest, size = hashlib.sha256(), 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                budget.total += len(chunk)
                if size > limit or budget.total > budget.caps.total_bytes:
                    raise ArtifactError(
                        f"{where}: member {info.filename} holds more than the "
                        f"{info.file_size} bytes its header declares (a zip bomb?): refused"
                    )
                digest.update(chunk)
                if sink is not None:
                    sink(chunk)
    except _UNREADABLE as exc:
        raise ArtifactError(f"{where}: member {info.filename} is corrupted ({exc})") from None
    return digest.hexdigest()


def _check_directory(infos: list[zipfile.ZipInfo], where: str, caps: Caps) -> None:
    """The caps and names, from the central directory alone (nothing is decompressed yet)."""
    if len(infos) > caps.members:
        raise ArtifactError(
            f"{where} has {len(infos)} members, more than the {caps.members} allowed: refused"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        check_member_name(info.filename, where)
        if info.filename in seen:
            raise ArtifactError(f"{where}: member {info.filename} appears twice: refused")
        seen.add(info.filename)
        if info.file_size > caps.member_bytes:
            raise ArtifactError(
                f"{where}: member {info.filename} declares {info.file_size} bytes "
                f"uncompressed, more than the {caps.member_bytes} allowed per member: refused"
            )
        total += info.file_size
    if total > caps.total_bytes:
        raise ArtifactError(
            f"{where} declares {total} bytes uncompressed, more than the {caps.total_bytes} "
            "allowed: refused"
        )


@contextlib.contextmanager
def _opened(
    path: Path, kind: str, sha256: str | None, caps: Caps
) -> Iterator[tuple[zipfile.ZipFile, dict[str, Any], dict[str, str], _Budget]]:
    """The open, checked archive: its digest (when ``sha256`` is given), central directory,
    manifest and member list. Members are read by the caller, each against its checksum."""
    path = Path(path)
    where = f"{kind} {path.name}"
    if not path.exists():
        raise ArtifactError(f"{kind} file {path} does not exist")
    with open(path, "rb") as fh:
        if sha256 is not None:
            # Hashed from the handle the members are then read from: no swap in between.
            h = hashlib.sha256()
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                h.update(chunk)
            if h.hexdigest() != sha256:
                raise ArtifactError(
                    f"{where}: the file's SHA-256 ({h.hexdigest()[:12]}…) is not the one "
                    f"recorded in the control store when it was published ({sha256[:12]}…): "
                    "the file was replaced or changed since, refused"
                )
            fh.seek(0)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise ArtifactError(f"{where} is not a readable zip archive: {exc}") from None
        with zf:
            infos = zf.infolist()
            _check_directory(infos, where, caps)
            by_name = {i.filename: i for i in infos}
            if MANIFEST not in by_name:
                raise ArtifactError(f"{where} has no {MANIFEST}")
            budget, parts = _Budget(caps), []
            _copy_member(zf, by_name[MANIFEST], where, budget, parts.append)
            try:
                manifest = json.loads(b"".join(parts))
            except ValueError as exc:
                raise ArtifactError(f"{where}: member {MANIFEST} is corrupted ({exc})") from None
            if not isinstance(manifest, dict):
                raise ArtifactError(f"{where}: member {MANIFEST} is not a JSON object")
            expected = manifest.get("members")
            if not isinstance(expected, dict) or not all(
                isinstance(d, str) for d in expected.values()
            ):
                raise ArtifactError(f"{where}: {MANIFEST} lists no members")
            extra = sorted(set(by_name) - set(expected) - {MANIFEST})
            if extra:
                raise ArtifactError(f"{where}: member {extra[0]} is not in the manifest")
            missing = [name for name in expected if name not in by_name]
            if missing:
                raise ArtifactError(f"{where}: member {missing[0]} is missing")
            yield zf, manifest, expected, budget


def _verify_member(
    zf: zipfile.ZipFile,
    name: str,
    digest: str,
    where: str,
    budget: _Budget,
    sink: Callable[[bytes], object] | None,
) -> None:
    if _copy_member(zf, zf.getinfo(name), where, budget, sink) != digest:
        raise ArtifactError(f"{where}: member {name} fails its SHA-256 check")


def verify(
    path: Path, kind: str, sha256: str | None = None, caps: Caps = DEFAULT_CAPS
) -> dict[str, Any]:
    """Verify the artifact member by member without keeping its members; return the manifest.

    ``sha256``: the zip's digest recorded at publish; a file that differs is refused.
    """
    with _opened(path, kind, sha256, caps) as (zf, manifest, expected, budget):
        where = f"{kind} {Path(path).name}"
        for name, digest in expected.items():
            _verify_member(zf, name, digest, where, budget, None)
    return manifest


def read_verified(
    path: Path, kind: str, sha256: str | None = None, caps: Caps = DEFAULT_CAPS
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Manifest and member bytes of a verified artifact, or :class:`ArtifactError`.

    ``sha256``: the zip's digest recorded at publish; a file that differs is refused.
    """
    members: dict[str, bytes] = {}
    with _opened(path, kind, sha256, caps) as (zf, manifest, expected, budget):
        where = f"{kind} {Path(path).name}"
        for name, digest in expected.items():
            parts: list[bytes] = []
            _verify_member(zf, name, digest, where, budget, parts.append)
            members[name] = b"".join(parts)
    return manifest, members


def extract_verified(
    path: Path, dest: Path, kind: str, sha256: str | None = None, caps: Caps = DEFAULT_CAPS
) -> dict[str, Any]:
    """Verify, then materialise the artifact at ``dest`` (atomically; existing dest is kept).

    Members are streamed to a staging folder next to ``dest`` and checked on the way; the
    folder is renamed into place only when every member passed. ``sha256``: the zip's
    digest recorded at publish; a file that differs is refused before anything is read.
    """
    if dest.exists():
        return verify(path, kind, sha256, caps)
    with _opened(path, kind, sha256, caps) as (zf, manifest, expected, budget):
        where = f"{kind} {Path(path).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            for name, digest in expected.items():
                out = staging / check_member_name(name, where)
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "wb") as fh:
                    _verify_member(zf, name, digest, where, budget, fh.write)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            os.rename(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest
