"""The object store: immutable files by key, shared by hosts that share no folder.

Two implementations of one contract (:class:`ObjectStore`):

* :class:`LocalObjectStore`, the embedded default: the key is a path under a folder (the
  home), so an object is the very file ``<home>/<key>`` that nodal has always written there.
* :class:`S3ObjectStore`: ``NODAL_STORE_URL=s3://bucket/prefix`` and the ``NODAL_STORE_*``
  settings; an object is ``s3://bucket/prefix/<key>``, through pyarrow's S3 filesystem.

Objects are immutable: putting an existing key is refused. A reader never sees half an
object: S3 makes an object visible only when its upload completes, the local store writes a
hidden temporary file and links it into place. Keys are relative POSIX paths whose parts
are not empty, ``.``/``..`` or hidden (``.name``: temporary files).

Errors are :class:`ObjectStoreError` (a missing object :class:`ObjectNotFound`, an object
whose SHA-256 is not the one expected :class:`ObjectTampered`), with the object's URL and
the store's answer; the access and secret keys are never in a message or a ``repr``.

:func:`fetch_verified` is how a node gets an artifact: the object downloaded into the node's
own cache (kept while its SHA-256 is the one recorded in the control store, else fetched
again), or, from the local store, the file itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from engine.core.errors import NodalError
from engine.core.settings import Settings

_CHUNK = 1 << 20


class ObjectStoreError(NodalError):
    """The object store refused a request or could not be reached; the message says which
    object and what the store answered (never a credential)."""


class ObjectNotFound(ObjectStoreError):
    """No object has this key."""


class ObjectTampered(ObjectStoreError):
    """An object's content is not the one recorded when it was published."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


def check_key(key: str) -> str:
    """Refuse a key that is not a relative POSIX path of plain names; return it."""
    parts = key.split("/") if isinstance(key, str) else []
    if (
        not parts
        or "\\" in key
        or "\x00" in key
        or any(not p or p in (".", "..") or p.startswith(".") for p in parts)
    ):
        raise ObjectStoreError(
            f"object key {key!r} is invalid: use a relative path of names separated by '/' "
            "(no empty, '.', '..' or hidden part)"
        )
    return key


class ObjectStore(Protocol):
    url: str  # where the store is, for messages (no credential)

    def describe(self, key: str) -> str:
        """The object's URL, for messages."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Publish the file at ``path`` as ``key``; an existing key is refused."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def download(self, key: str, dest: Path) -> str:
        """Write the object to ``dest`` (atomically: a hidden temporary file renamed into
        place); return its SHA-256."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """The objects whose key starts with the folder ``prefix`` (all if empty), by key."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object's own file when the store is a local folder, else None."""
        ...


@contextlib.contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A hidden temporary file beside ``dest``, removed unless the caller moved it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _copy_stream(read, write) -> str:  # noqa: ANN001 - file-like read/write callables
    digest = hashlib.sha256()
    while chunk := read(_CHUNK):
        digest.update(chunk)
        write(chunk)
    return digest.hexdigest()


class LocalObjectStore:
    """Objects as files under ``root`` (the embedded default: ``root`` is the home)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root.resolve())

    def __repr__(self) -> str:
        return f"LocalObjectStore({self.url!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def describe(self, key: str) -> str:
        return str(self._path(key).resolve())

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def _install(self, key: str, fill) -> None:  # noqa: ANN001 - writes a staged file
        target = self._path(key)
        try:
            with _staged(target) as tmp:
                fill(tmp)
                os.link(tmp, target)  # fails on an existing key: nothing is overwritten
        except FileExistsError:
            raise ObjectStoreError(
                f"object {self.describe(key)} already exists: objects are immutable"
            ) from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot write object {self.describe(key)}: {exc}") from None

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        with contextlib.suppress(OSError):
            if Path(path).resolve() == target.resolve():
                return  # written in place: the home is the store, already published

        def fill(tmp: Path) -> None:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                _copy_stream(src.read, out.write)

        self._install(key, fill)

    def put_bytes(self, key: str, data: bytes) -> None:
        self._install(key, lambda tmp: Path(tmp).write_bytes(data))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {self.describe(key)} does not exist") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object {self.describe(key)}: {exc}") from None

    def download(self, key: str, dest: Path) -> str:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ObjectNotFound(f"object {self.describe(key)} does not exist") from None
        except OSError as exc:
            raise ObjectStoreError(f"cannot read object {self.describe(key)}: {exc}") from None
        with fh, _staged(Path(dest)) as tmp:
            with open(tmp, "wb") as out:
                digest = _copy_stream(fh.read, out.write)
            os.replace(tmp, dest)
        return digest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for p in base.rglob("*"):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
                out.append(ObjectInfo(rel, p.stat().st_size))
        return sorted(out, key=lambda o: o.key)


class S3ObjectStore:
    """Objects under ``s3://bucket/prefix/`` of an S3-compatible store (pyarrow's client)."""

    def __init__(
        self,
        url: str,
        endpoint: str = "",
        region: str = "us-east-1",
        access_key: str = "",
        secret_key: str = "",
    ) -> None:
        from pyarrow import fs

        parts = urlsplit(url)
        bucket, prefix = parts.netloc, parts.path.strip("/")
        if parts.scheme != "s3" or not bucket or parts.query or parts.fragment:
            raise ObjectStoreError(f"object store URL {url!r} is not s3://bucket/prefix")
        if prefix:
            check_key(prefix)
        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.endpoint = endpoint
        self._secrets = tuple(s for s in (access_key, secret_key) if s)
        kwargs: dict[str, object] = {
            "region": region or "us-east-1",
            "connect_timeout": 5,
            "request_timeout": 30,
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if endpoint:
            ep = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            if ep.scheme not in ("http", "https") or not ep.netloc or ep.path.strip("/"):
                raise ObjectStoreError(
                    f"object store endpoint {endpoint!r} is not http(s)://host[:port]"
                )
            kwargs.update(endpoint_override=ep.netloc, scheme=ep.scheme)
        if access_key or secret_key:
            kwargs.update(access_key=access_key, secret_key=secret_key)
        self._fs = fs.S3FileSystem(**kwargs)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.url!r}, endpoint={self.endpoint!r})"

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ObjectStore:
        return cls(
            settings.store_url,
            settings.store_endpoint,
            settings.store_region,
            settings.store_access_key,
            settings.store_secret_key,
        )

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self.bucket}/{self.prefix}/{key}" if self.prefix else f"{self.bucket}/{key}"

    def describe(self, key: str) -> str:
        return f"{self.url}/{key}"

    def local_path(self, key: str) -> Path | None:
        return None

    def _error(self, exc: BaseException, doing: str, key: str | None) -> ObjectStoreError:
        message = str(exc)
        for secret in self._secrets:
            message = message.replace(secret, "***")
        where = self.url + (f" (endpoint {self.endpoint})" if self.endpoint else "")
        if isinstance(exc, FileNotFoundError) and key is not None:
            return ObjectNotFound(f"object {self.describe(key)} does not exist")
        what = f"object {self.describe(key)}" if key is not None else "objects"
        return ObjectStoreError(
            f"object store {where} failed {doing} {what}: {message} (is the store reachable, "
            "and are NODAL_STORE_* right?)"
        )

    @contextlib.contextmanager
    def _calling(self, doing: str, key: str | None) -> Iterator[None]:
        try:
            yield
        except ObjectStoreError:
            raise
        except OSError as exc:  # pyarrow's S3 errors are OSError; a missing key too
            raise self._error(exc, doing, key) from None

    def exists(self, key: str) -> bool:
        from pyarrow import fs

        with self._calling("checking", key):
            return self._fs.get_file_info(self._path(key)).type == fs.FileType.File

    def _put(self, key: str, write) -> None:  # noqa: ANN001 - writes into the stream
        if self.exists(key):
            raise ObjectStoreError(
                f"object {self.describe(key)} already exists: objects are immutable"
            )
        with self._calling("writing", key), self._fs.open_output_stream(self._path(key)) as out:
            write(out)  # visible to readers only once the upload completes, at close

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._put(key, lambda out: _copy_stream(src.read, out.write))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._put(key, lambda out: out.write(data))

    def get_bytes(self, key: str) -> bytes:
        with self._calling("reading", key), self._fs.open_input_stream(self._path(key)) as fh:
            return fh.read()

    def download(self, key: str, dest: Path) -> str:
        dest = Path(dest)
        with _staged(dest) as tmp:
            with (
                self._calling("reading", key),
                self._fs.open_input_stream(self._path(key)) as fh,
                open(tmp, "wb") as out,
            ):
                digest = _copy_stream(fh.read, out.write)
            os.replace(tmp, dest)
        return digest

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        from pyarrow import fs

        base = self._path(prefix) if prefix else f"{self.bucket}/{self.prefix}".rstrip("/")
        selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
        with self._calling("listing", prefix or None):
            infos = self._fs.get_file_info(selector)
        root = f"{self.bucket}/{self.prefix}/" if self.prefix else f"{self.bucket}/"
        out = [
            ObjectInfo(i.path[len(root) :], i.size or 0)
            for i in infos
            if i.type == fs.FileType.File and i.path.startswith(root)
        ]
        return sorted(out, key=lambda o: o.key)


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name: S3 when ``NODAL_STORE_URL`` is set, else the home."""
    if settings.store_url:
        return S3ObjectStore.from_settings(settings)
    return LocalObjectStore(settings.home)


def fetch_verified(store: ObjectStore, key: str, sha256: str, cache: Path, what: str) -> Path:
    """A local file holding object ``key`` whose SHA-256 is ``sha256`` (the control store's).

    From the local store: the object's own file (its readers check the digest as they read).
    From S3: ``cache/<key>`` in the node's own home, kept while its digest is ``sha256`` and
    downloaded again otherwise; a download whose digest differs is refused, naming the
    object, and leaves no file. ``what`` names the artifact in messages.
    """
    local = store.local_path(key)
    if local is not None:
        return local
    target = Path(cache) / check_key(key)
    if target.is_file():
        with open(target, "rb") as fh:
            if _copy_stream(fh.read, lambda _: None) == sha256:
                return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _staged(target) as tmp:
        digest = store.download(key, tmp)
        if digest != sha256:
            raise ObjectTampered(
                f"{what}: object {store.describe(key)} has SHA-256 {digest[:12]}…, not the "
                f"{sha256[:12]}… recorded in the control store when it was published: it was "
                "replaced or changed since, refused"
            )
        os.replace(tmp, target)
    return target
