"""Real zips, doctored the ways an attacker or a broken disk would: helpers for the tests."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

from engine.core.artifacts import MANIFEST, sha256_bytes

LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"


def patch_member(
    zip_path: Path, member: str, *, method: int | None = None, file_size: int | None = None
) -> None:
    """Rewrite the compression method or declared uncompressed size of ``member`` in both
    its local header and its central directory entry (the data itself is untouched)."""
    with zipfile.ZipFile(zip_path) as zf:
        info, start_dir = zf.getinfo(member), zf.start_dir
    data = bytearray(Path(zip_path).read_bytes())
    at = info.header_offset
    assert data[at : at + 4] == LOCAL
    if method is not None:
        struct.pack_into("<H", data, at + 8, method)
    if file_size is not None:
        struct.pack_into("<I", data, at + 22, file_size)
    at = start_dir
    while data[at : at + 4] == CENTRAL:
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46 : at + 46 + name_len].decode() == member:
            if method is not None:
                struct.pack_into("<H", data, at + 10, method)
            if file_size is not None:
                struct.pack_into("<I", data, at + 24, file_size)
            break
        at += 46 + name_len + extra_len + comment_len
    else:
        raise AssertionError(f"{member} not in the central directory")
    Path(zip_path).write_bytes(bytes(data))


def swap(zip_path: Path, changes: dict[str, bytes]) -> None:
    """Replace members of an artifact and write a manifest that agrees with the new bytes:
    the zip is self-consistent, only its SHA-256 differs from the one published."""
    with zipfile.ZipFile(zip_path) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        members = {n: zf.read(n) for n in zf.namelist() if n != MANIFEST}
    members.update(changes)
    manifest["members"] = {n: sha256_bytes(b) for n, b in sorted(members.items())}
    tmp = Path(zip_path).with_suffix(".swap")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
    os.replace(tmp, zip_path)
