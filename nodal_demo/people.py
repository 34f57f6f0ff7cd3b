"""The demo's people: an administrator, an analyst, an ops engineer and a business viewer.

Rights go to groups, as a bank would set them up: analysts change every project, ops deploy,
run and configure on every stage and manage API keys and access, business users read.
The passwords are printed by ``make demo``: a laptop demonstration bound to 127.0.0.1, not
an installation (create real accounts with ``nodal user create``).
"""

from __future__ import annotations

from engine.access import accounts, rights
from engine.storage.control import ControlStore

PASSWORDS = {
    "admin": "admin-nodal",
    "analyst": "analyst-nodal",
    "ops": "ops-nodal",
    "viewer": "viewer-nodal",
}
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


def create(store: ControlStore, operator: str) -> bool:
    """Make ``operator`` (who runs the demo, NODAL_USER) the home's first administrator and
    add the demo's people; True if they were added now (a home with them is left alone)."""
    accounts.bootstrap_admin(store, operator)
    if any(g["name"] in GROUPS for g in accounts.list_groups(store)):
        return False
    known = {u.name for u in accounts.list_users(store)}
    for name, password in PASSWORDS.items():
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


def sign_in_lines() -> str:
    return "\n".join(
        f"  {name:<8} password {PASSWORDS[name]:<14} {ROLES[name]}" for name in PASSWORDS
    )
