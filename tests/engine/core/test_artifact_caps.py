"""The artifact caps are settings (NODAL_ARTIFACT_MAX_*): raised, an artifact over the
default caps is read; lowered, one under them is refused; the nodes extract with them."""

from __future__ import annotations

import pytest

from engine.apinode.node import ApiNode
from engine.core.artifacts import DEFAULT_CAPS, ArtifactError, Caps, read_verified, write_zip
from engine.core.settings import load_settings
from engine.storage.control import open_store


def caps_from(tmp_path, **env: str) -> Caps:
    return Caps.from_settings(load_settings({"NODAL_HOME": str(tmp_path), **env}))


def test_raising_the_member_count_cap_lets_a_larger_artifact_through(tmp_path):
    path = tmp_path / "many.zip"
    members = {f"m/{i}": b"" for i in range(DEFAULT_CAPS.members)}  # + the manifest: one over
    write_zip(path, members, {"kind": "test"})
    with pytest.raises(ArtifactError, match=r"has 10001 members, more than the 10000 allowed"):
        read_verified(path, "bundle")
    caps = caps_from(tmp_path, NODAL_ARTIFACT_MAX_MEMBERS="20000")
    assert caps == Caps(DEFAULT_CAPS.total_bytes, DEFAULT_CAPS.member_bytes, 20_000)
    assert read_verified(path, "bundle", caps=caps)[1] == members


def test_lowered_size_caps_refuse_what_the_defaults_accept(tmp_path):
    path = tmp_path / "art.zip"
    write_zip(path, {"a.bin": b"a" * 5000, "b.bin": b"b" * 5000}, {"kind": "test"})
    assert read_verified(path, "bundle")[1]["a.bin"] == b"a" * 5000
    member = caps_from(tmp_path, NODAL_ARTIFACT_MAX_MEMBER_BYTES="4096")
    with pytest.raises(ArtifactError, match=r"declares 5000 bytes .* the 4096 allowed per member"):
        read_verified(path, "bundle", caps=member)
    total = caps_from(tmp_path, NODAL_ARTIFACT_MAX_BYTES="8000")
    with pytest.raises(ArtifactError, match=r"more than the 8000 allowed"):
        read_verified(path, "bundle", caps=total)


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_cap_that_is_not_positive_is_a_clear_error(tmp_path, value):
    with pytest.raises(ValueError, match="NODAL_ARTIFACT_MAX_BYTES must be a positive number"):
        caps_from(tmp_path, NODAL_ARTIFACT_MAX_BYTES=value)


def test_the_api_node_extracts_with_the_settings_caps(tmp_path):
    settings = load_settings(
        {"NODAL_HOME": str(tmp_path), "NODAL_ARTIFACT_MAX_MEMBER_BYTES": "123456"}
    )
    node = ApiNode(settings, open_store(settings.control_store_url), "caps")
    assert node.artifact_caps.member_bytes == 123456
