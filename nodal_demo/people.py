"""The demo's people: an administrator, an analyst, an ops engineer and a business viewer.

Rights go to groups, as a bank would set them up: analysts change every project, ops deploy,
run and configure on every stage and manage API keys and access, business users read.
Each home gets its own random passwords, written to ``demo-accounts.txt`` in the home
(readable by its owner only) and printed by ``make demo``: a laptop demonstration, not an
installation (create real accounts with ``nodal user create``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from engine.access import accounts, rights
from engine.storage.control import ControlStore

NAMES = ("admin", "analyst", "ops", "viewer")
ACCOUNTS_FILE = "demo-accounts.txt"
GROUPS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    # group: (member, [(scope, right)])
    "analysts": ("analyst", [("project:*", "write")]),
    "ops": (
        "ops",
        [
            ("project:*", "read"),
            ("stage:*", "deploy"),
            ("stage:*", "run"),
            ("stage:*", "configure"),
            ("service:*", "keys"),
            ("service:*", "access"),
        ],
    ),
    "business": ("viewer", [("project:*", "read")]),
}


def passwords(home: Path) -> dict[str, str]:
    """The demo accounts' passwords of this home (empty before :func:`create`)."""
    path = home / ACCOUNTS_FILE
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#"))


def _new_passwords(home: Path) -> dict[str, str]:
    chosen = {name: secrets.token_urlsafe(9) for name in NAMES}
    home.mkdir(parents=True, exist_ok=True)
    path = home / ACCOUNTS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# the demo accounts of this home: name password\n")
        out.writelines(f"{name} {password}\n" for name, password in chosen.items())
    return chosen


def create(store: ControlStore, operator: str, home: Path) -> bool:
    """Make ``operator`` (who runs the demo, NODAL_USER) the home's first administrator and
    add the demo's people with new random passwords (saved in the home's
    ``demo-accounts.txt``); True if they were added now (a home with them is left alone)."""
    accounts.bootstrap_admin(store, operator)
    if any(g["name"] in GROUPS for g in accounts.list_groups(store)):
        return False
    known = {u.name for u in accounts.list_users(store)}
    for name, password in _new_passwords(home).items():
        if name not in known:
            accounts.create_user(store, operator, name, password=password, admin=name == "admin")
        elif name == operator:
            accounts.set_password(store, operator, name, password)
    for group, (member, grants) in GROUPS.items():
        accounts.create_group(store, operator, group)
        accounts.set_membership(store, operator, group, member, True)
        for scope, right in grants:
            kind, _, name = scope.partition(":")
            rights.grant(store, operator, "group", group, kind, name, right)
    return True


ROLES = {
    "admin": "administrator: people, rights, everything",
    "analyst": "analysts: change every project (Studio)",
    "ops": "ops: deploy, run, configure every stage; API keys and access",
    "viewer": "business: read every project (Monitoring's map)",
}


def sign_in_lines(home: Path) -> str:
    chosen = passwords(home)
    return (
        "\n".join(
            f"  {name:<8} password {password:<14} {ROLES[name]}"
            for name, password in chosen.items()
        )
        + f"\n  (saved in {home / ACCOUNTS_FILE})"
    )
