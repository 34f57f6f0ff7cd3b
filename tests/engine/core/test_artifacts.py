"""Artifacts refuse a zip that is not the published one, a size bomb before it is unpacked,
and member paths that would leave the folder they are written to."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
import zipfile

import pytest

from engine.core import artifacts
from engine.core.artifacts import (
    MANIFEST,
    ArtifactError,
    extract_verified,
    read_verified,
    sha256_file,
    write_zip,
)
from tests.engine.core.zips import patch_member, swap

MEMBERS = {"a.txt": b"alpha\n" * 100, "b/c.txt": b"gamma\n" * 100, "d.txt": b"delta\n" * 100}


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "art.zip"
    digest = write_zip(path, MEMBERS, {"kind": "test"})
    return path, digest


def test_the_published_digest_is_checked_before_anything_is_read(artifact, tmp_path):
    path, digest = artifact
    assert read_verified(path, "test", sha256=digest)[1] == MEMBERS
    swap(path, {"a.txt": b"changed\n"})
    read_verified(path, "test")  # the manifest agrees with itself…
    for call in (
        lambda: read_verified(path, "test", sha256=digest),
        lambda: artifacts.verify(path, "test", sha256=digest),
        lambda: extract_verified(path, tmp_path / "out", "test", sha256=digest),
    ):
        with pytest.raises(ArtifactError, match=r"test art\.zip: the file's SHA-256 .* recorded"):
            call()  # …but it is not the zip that was published
    assert not (tmp_path / "out").exists()
    assert extract_verified(path, tmp_path / "out", "test", sha256=sha256_file(path))


def _bomb(path, size: int) -> None:
    """An honest artifact whose one member is ``size`` zero bytes (deflated: ~0.5 % of it)."""
    chunk, digest = bytes(1 << 20), hashlib.sha256()
    for _ in range(size // len(chunk)):
        digest.update(chunk)
    manifest = {"kind": "test", "members": {"zeros.bin": digest.hexdigest()}}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        with zf.open("zeros.bin", "w", force_zip64=True) as out:
            for _ in range(size // len(chunk)):
                out.write(chunk)


def test_a_member_larger_than_the_cap_is_refused_before_memory_grows(tmp_path):
    path = tmp_path / "bomb.zip"
    _bomb(path, 1024**3 + (1 << 20))  # the cap is 1 GiB
    assert path.stat().st_size < 10 * 1024**2
    tracemalloc.start()
    try:
        for call in (
            lambda: read_verified(path, "bundle"),
            lambda: extract_verified(path, tmp_path / "out", "bundle"),
        ):
            with pytest.raises(
                ArtifactError, match=r"member zeros.bin declares \d+ bytes .* per member"
            ):
                call()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024**2, peak
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"a.txt": 1536 * 1024**2}, r"member a.txt declares 1610612736 bytes uncompressed"),
        (
            {n: 900 * 1024**2 for n in MEMBERS},
            r"declares \d+ bytes uncompressed, more than the 2147483648 allowed",
        ),
    ],
)
def test_sizes_declared_over_the_caps_are_refused_from_the_central_directory(
    artifact, tmp_path, monkeypatch, sizes, message
):
    path, _ = artifact
    for name, size in sizes.items():
        patch_member(path, name, file_size=size)
    opened = []
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda *a, **k: opened.append(a) or 1 / 0)
    with pytest.raises(ArtifactError, match=message):
        read_verified(path, "bundle")
    assert opened == []  # refused before any member was decompressed


def test_too_many_members_are_refused(tmp_path):
    path = tmp_path / "many.zip"
    write_zip(path, {f"m/{i}": b"" for i in range(10_000)}, {"kind": "test"})
    with pytest.raises(ArtifactError, match=r"has 10001 members, more than the 10000 allowed"):
        read_verified(path, "bundle")


def test_a_member_zipfile_cannot_read_is_refused_naming_it(artifact):
    path, _ = artifact
    patch_member(path, "b/c.txt", method=99)  # no such compression method
    with pytest.raises(ArtifactError, match=r"member b/c.txt is corrupted"):
        read_verified(path, "bundle")


@pytest.mark.parametrize(
    "name", ["../x", "a/../../x", "/etc/passwd", "C:\\x", "\\\\host\\share\\x", "..", ""]
)
def test_paths_that_leave_the_folder_are_refused(name):
    with pytest.raises(ArtifactError, match="escapes the archive"):
        artifacts.check_member_name(name, "bundle b1")


@pytest.mark.parametrize("name", ["a.txt", "data/shops/day=2026-01-01/data.parquet", "a..b"])
def test_paths_inside_the_folder_pass(name):
    assert artifacts.check_member_name(name, "bundle b1") == name
