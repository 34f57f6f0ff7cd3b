"""The object store's contract, on both implementations: the home folder (embedded default)
and S3 (a real SeaweedFS on loopback). Plus what nodes rely on: a verified fetch through a
local cache, refusal of a changed object, clear errors without credentials."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from engine.core.artifacts import sha256_bytes
from engine.core.settings import load_settings
from engine.storage import objects
from engine.storage.objects import (
    LocalObjectStore,
    ObjectNotFound,
    ObjectStoreError,
    ObjectTampered,
    S3ObjectStore,
    fetch_verified,
    open_store,
)
from tests.e2e.procs import free_port
from tests.s3server import S3Server, seaweedfs


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> S3Server:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


_prefixes = iter(range(10_000))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> objects.ObjectStore:
    if request.param == "local":
        return open_store(load_settings(environ={}, home=tmp_path / "home"))
    s3 = request.getfixturevalue("s3")
    settings = load_settings(
        environ={}, home=tmp_path / "home", **s3.settings(f"t{next(_prefixes)}")
    )
    made = open_store(settings)
    assert isinstance(made, S3ObjectStore)
    return made


def test_put_get_exists_list(store, tmp_path):
    assert store.list() == [] and not store.exists("a/b.zip")
    store.put_bytes("a/b.zip", b"bee")
    src = tmp_path / "c.bin"
    src.write_bytes(b"x" * (3 << 20))  # more than one chunk
    store.put_file("a/c/d.bin", src)
    store.put_bytes("z.txt", b"")
    assert store.exists("a/b.zip") and store.exists("a/c/d.bin") and not store.exists("a")
    assert store.get_bytes("a/b.zip") == b"bee"
    assert store.get_bytes("a/c/d.bin") == src.read_bytes()
    assert [(o.key, o.size) for o in store.list()] == [
        ("a/b.zip", 3),
        ("a/c/d.bin", 3 << 20),
        ("z.txt", 0),
    ]
    assert [o.key for o in store.list("a/c")] == ["a/c/d.bin"]
    assert store.list("nothing/here") == []
    dest = tmp_path / "out" / "d.bin"
    assert store.download("a/c/d.bin", dest) == sha256_bytes(src.read_bytes())
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["d.bin"]  # no temporary file left
    assert store.describe("a/b.zip").endswith("a/b.zip")


def test_objects_are_immutable(store, tmp_path):
    store.put_bytes("k/v1.zip", b"one")
    with pytest.raises(ObjectStoreError, match="already exists: objects are immutable"):
        store.put_bytes("k/v1.zip", b"two")
    other = tmp_path / "other.zip"
    other.write_bytes(b"three")
    with pytest.raises(ObjectStoreError, match="immutable"):
        store.put_file("k/v1.zip", other)
    assert store.get_bytes("k/v1.zip") == b"one"


def test_missing_objects_and_bad_keys(store, tmp_path):
    with pytest.raises(ObjectNotFound, match="nope/x.zip does not exist"):
        store.get_bytes("nope/x.zip")
    with pytest.raises(ObjectNotFound, match="nope/x.zip"):
        store.download("nope/x.zip", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    for bad in ("", "/abs", "a/../b", "a//b", "./a", "a/.hidden", "a\\b", "a/"):
        with pytest.raises(ObjectStoreError, match="invalid"):
            store.put_bytes(bad, b"x")
    assert store.list() == []


def test_a_reader_never_sees_half_an_object(store, tmp_path):
    """While a large object is written, readers see it absent or whole, never in part."""
    data = bytes(range(256)) * (24 << 12)  # 24 MiB: several multipart parts on S3
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            if store.exists("big/obj.bin"):
                seen.append(len(store.get_bytes("big/obj.bin")))
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        store.put_file("big/obj.bin", src)
    finally:
        done.set()
        reader.join(timeout=60)
    assert all(n == len(data) for n in seen)
    assert store.get_bytes("big/obj.bin") == data
    assert [o.key for o in store.list()] == ["big/obj.bin"]  # no temporary object listed


def test_fetch_verified_keeps_a_cache_and_refuses_a_changed_object(store, tmp_path):
    store.put_bytes("deployer/x/v1.zip", b"payload")
    digest = sha256_bytes(b"payload")
    cache = tmp_path / "node" / "cache"
    got = fetch_verified(store, "deployer/x/v1.zip", digest, cache, "package v1")
    assert got.read_bytes() == b"payload"
    if isinstance(store, LocalObjectStore):
        assert got == store.local_path("deployer/x/v1.zip")  # the home is the store: no copy
        return
    assert got == cache / "deployer/x/v1.zip"
    calls = []
    real = store.download
    store.download = lambda key, dest: calls.append(key) or real(key, dest)  # type: ignore[method-assign]
    assert fetch_verified(store, "deployer/x/v1.zip", digest, cache, "package v1") == got
    assert calls == []  # served from the cache
    got.write_bytes(b"payloaD")  # the cache was damaged: downloaded again
    assert fetch_verified(store, "deployer/x/v1.zip", digest, cache, "package v1") == got
    assert got.read_bytes() == b"payload" and calls == ["deployer/x/v1.zip"]
    got.unlink()  # a deleted cache costs a download, nothing else
    assert fetch_verified(store, "deployer/x/v1.zip", digest, cache, "package v1") == got
    with pytest.raises(ObjectTampered) as err:
        fetch_verified(store, "deployer/x/v1.zip", sha256_bytes(b"other"), tmp_path / "c2", "pkg")
    assert store.describe("deployer/x/v1.zip") in str(err.value)
    assert "not the" in str(err.value) and "refused" in str(err.value)
    assert list((tmp_path / "c2").rglob("*.zip")) == []  # nothing kept of a refused object


def test_settings_choose_the_store_and_hide_the_secret(tmp_path):
    local = open_store(load_settings(environ={}, home=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path
    env = {
        "NODAL_STORE_URL": "s3://bucket/some/prefix",
        "NODAL_STORE_ENDPOINT": "http://127.0.0.1:9",
        "NODAL_STORE_ACCESS_KEY": "AKIDSECRETLOOKING",
        "NODAL_STORE_SECRET_KEY": "very-secret-key-value",
    }
    settings = load_settings(environ=env, home=tmp_path)
    assert settings.store_secret_key == "very-secret-key-value"
    made = open_store(settings)
    assert isinstance(made, S3ObjectStore) and made.url == "s3://bucket/some/prefix"
    for text in (repr(settings), repr(made), made.describe("a/b")):
        assert "very-secret-key-value" not in text and "AKIDSECRETLOOKING" not in text
    with pytest.raises(ValueError, match="NODAL_STORE_URL must be empty or s3://"):
        load_settings(environ={"NODAL_STORE_URL": "/some/folder"})
    with pytest.raises(ObjectStoreError, match="not http"):
        S3ObjectStore("s3://b/p", endpoint="ftp://host:21")
    with pytest.raises(ObjectStoreError, match="not s3://bucket/prefix"):
        S3ObjectStore("s3:///p")


def test_an_unreachable_store_is_a_clear_error_without_credentials(tmp_path, caplog):
    env = {
        "NODAL_STORE_URL": "s3://nodal/p",
        "NODAL_STORE_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nobody listens
        "NODAL_STORE_ACCESS_KEY": "AKIDSECRETLOOKING",
        "NODAL_STORE_SECRET_KEY": "very-secret-key-value",
    }
    store = open_store(load_settings(environ=env, home=tmp_path))
    caplog.set_level(logging.DEBUG)
    for call in (
        lambda: store.get_bytes("a/b.zip"),
        lambda: store.put_bytes("a/b.zip", b"x"),
        lambda: store.list(),
        lambda: fetch_verified(store, "a/b.zip", "0" * 64, tmp_path / "cache", "bundle b"),
    ):
        with pytest.raises(ObjectStoreError) as err:
            call()
        message = str(err.value)
        assert "object store s3://nodal/p (endpoint http://127.0.0.1:" in message, message
        assert "connect" in message.lower(), message
        assert "very-secret" not in message and "AKIDSECRETLOOKING" not in message
    assert "very-secret" not in caplog.text


def test_wrong_credentials_name_the_object_not_the_secret(s3, tmp_path):
    overrides = {**s3.settings("creds"), "store_secret_key": "wrong-secret-value"}
    store = open_store(load_settings(environ={}, home=tmp_path, **overrides))
    with pytest.raises(ObjectStoreError) as err:
        store.put_bytes("a/b.zip", b"x")
    assert "s3://nodal/creds" in str(err.value) and "wrong-secret-value" not in str(err.value)
    assert s3.secret_key not in str(err.value)


def test_a_read_only_node_key_reads_but_cannot_publish(s3, tmp_path):
    admin = open_store(load_settings(environ={}, home=tmp_path, **s3.settings("ro")))
    admin.put_bytes("x/v1.zip", b"one")
    node = open_store(load_settings(environ={}, home=tmp_path, **s3.settings("ro", node=True)))
    assert node.get_bytes("x/v1.zip") == b"one"
    with pytest.raises(ObjectStoreError, match="x/v2.zip"):
        node.put_bytes("x/v2.zip", b"two")
    assert [o.key for o in admin.list()] == ["x/v1.zip"]


def test_local_store_is_the_home_unchanged(tmp_path):
    """The embedded default keeps today's paths: the object *is* ``<home>/<key>``, and a
    file already written there is published as it is."""
    store = LocalObjectStore(tmp_path)
    target = tmp_path / "deployer" / "bundles" / "p" / "b1.zip"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"zip")
    store.put_file("deployer/bundles/p/b1.zip", target)
    assert store.get_bytes("deployer/bundles/p/b1.zip") == b"zip"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b1.zip"]
    assert isinstance(Path(store.describe("deployer/bundles/p/b1.zip")), Path)
