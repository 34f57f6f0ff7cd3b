"""``nodal user / group / grant / revoke / rights / audit`` through the real command."""

from __future__ import annotations

import json

from tests.e2e import procs


def _nodal(tmp_path, who: str, *args: str, password: str | None = None):
    env = {
        "NODAL_HOME": str(tmp_path / "var"),
        "NODAL_DATA_DIR": str(tmp_path / "data"),
        "NODAL_USER": who,
    }
    if password:
        env["NODAL_NEW_PASSWORD"] = password
    return procs.nodal(list(args), env, timeout=120)


def test_a_fresh_home_makes_the_first_user_its_administrator_and_nobody_else(tmp_path):
    first = _nodal(tmp_path, "root-admin", "user", "list")
    assert first.returncode == 0, first.stderr
    assert "root-admin (NODAL_USER) is now its administrator" in first.stderr
    assert "root-admin" in first.stdout
    second = _nodal(tmp_path, "mallory", "user", "create", "mallory2", "--no-password")
    assert second.returncode == 2
    assert "mallory has no enabled account" in second.stderr
    assert "is now its administrator" not in second.stderr


def test_people_groups_and_rights_end_to_end(tmp_path):
    assert _nodal(tmp_path, "boss", "user", "list").returncode == 0
    made = _nodal(tmp_path, "boss", "user", "create", "ana", password="ana-secret-1")
    assert made.returncode == 0 and "no rights until granted" in made.stdout
    short = _nodal(tmp_path, "boss", "user", "create", "bob", password="short")
    assert short.returncode == 2 and "at least 8 characters" in short.stderr
    for args in (
        ("group", "create", "analysts"),
        ("group", "add", "analysts", "ana"),
        ("grant", "write", "--group", "analysts", "--on", "project:fraud"),
    ):
        done = _nodal(tmp_path, "boss", *args)
        assert done.returncode == 0, done.stderr
    listed = _nodal(tmp_path, "boss", "rights", "analysts")
    assert "project" in listed.stdout and "fraud" in listed.stdout and "write" in listed.stdout
    bad = _nodal(tmp_path, "boss", "grant", "deploy", "--user", "ana", "--on", "project:fraud")
    assert bad.returncode == 2 and "not a right on a project" in bad.stderr
    # ana is no administrator: she may not grant herself anything
    selfish = _nodal(tmp_path, "ana", "grant", "admin", "--user", "ana", "--on", "project:*")
    assert selfish.returncode == 2 and "not an administrator" in selfish.stderr
    trail = _nodal(tmp_path, "boss", "audit", "--json")
    events = json.loads(trail.stdout)
    assert [(e["actor"], e["action"]) for e in events][:3] == [
        ("boss", "grant"),
        ("boss", "group.add"),
        ("boss", "group.create"),
    ]
    assert "ana-secret-1" not in trail.stdout
