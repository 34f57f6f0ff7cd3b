"""People and rights: ``nodal user …``, ``nodal group …``, ``nodal grant``, ``nodal revoke``,
``nodal rights``, ``nodal audit``. Every command acts as ``NODAL_USER`` and is checked like
any change (only administrators manage people and rights)."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import asdict
from typing import Any

from engine.cli.common import add, print_rows, store
from engine.core.errors import NodalError
from engine.core.settings import Settings

PASSWORD_ENV = "NODAL_NEW_PASSWORD"


def _password(a: argparse.Namespace) -> str | None:
    """The new password: from NODAL_NEW_PASSWORD, else asked twice on the terminal."""
    if a.no_password:
        return None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise NodalError(f"give the password in {PASSWORD_ENV} (no terminal to ask on)")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise NodalError("the two passwords differ")
    return first


def cmd_user_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    user = accounts.create_user(
        store(s),
        s.user,
        a.name,
        password=_password(a),
        display_name=a.display_name,
        admin=a.admin,
    )
    print(
        f"user {user.name} created{' (administrator)' if user.is_admin else ''}: no rights "
        "until granted (nodal grant)"
    )
    return 0


def cmd_user_password(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    a.no_password = False
    accounts.set_password(store(s), s.user, a.name, _password(a) or "")
    print(f"password of {a.name} changed; their sessions ended")
    return 0


def cmd_user_update(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    user = accounts.update_user(
        store(s), s.user, a.name, enabled=a.enabled, admin=a.admin, display_name=a.display_name
    )
    print(f"user {user.name}: enabled={user.enabled} admin={user.is_admin}")
    return 0


def cmd_user_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    rows = [{**asdict(u), "groups": ",".join(u.groups)} for u in accounts.list_users(store(s))]
    print_rows(rows, ["name", "display_name", "is_admin", "enabled", "source", "groups"])
    return 0


def cmd_group_create(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    accounts.create_group(store(s), s.user, a.name, a.description)
    print(f"group {a.name} created")
    return 0


def _membership(member: bool):  # noqa: ANN202
    def run(s: Settings, a: argparse.Namespace) -> int:
        from engine.access import accounts

        accounts.set_membership(store(s), s.user, a.group, a.user, member)
        print(f"{a.user} {'added to' if member else 'removed from'} {a.group}")
        return 0

    return run


def cmd_group_list(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import accounts

    rows = [{**g, "members": ",".join(g["members"])} for g in accounts.list_groups(store(s))]
    print_rows(rows, ["name", "description", "members"])
    return 0


def _principal(a: argparse.Namespace) -> tuple[str, str]:
    if bool(a.user) == bool(a.group):
        raise NodalError("give either --user NAME or --group NAME")
    return ("user", a.user) if a.user else ("group", a.group)


def _scope(a: argparse.Namespace) -> tuple[str, str]:
    kind, sep, scope = a.on.partition(":")
    if not sep:
        raise NodalError(
            "--on is KIND:NAME, e.g. project:fraud, stage:prod, infra:node-1, "
            "service:scoring, project:*"
        )
    return kind, scope


def cmd_grant(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import rights

    kind, name = _principal(a)
    scope_kind, scope = _scope(a)
    rights.grant(store(s), s.user, kind, name, scope_kind, scope, a.right)
    print(f"{kind} {name} may now {a.right} on {scope_kind} {scope}")
    return 0


def cmd_revoke(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import rights

    kind, name = _principal(a)
    scope_kind, scope = _scope(a)
    gone = rights.revoke(store(s), s.user, kind, name, scope_kind, scope, a.right)
    print(
        f"revoked {a.right} on {scope_kind} {scope} from {kind} {name}"
        if gone
        else "that right was not granted: nothing changed"
    )
    return 0


def cmd_rights(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import rights

    print_rows(
        [asdict(g) for g in rights.list_grants(store(s), a.name)],
        ["principal_kind", "principal", "scope_kind", "scope", "right", "granted_by"],
    )
    return 0


def cmd_audit(s: Settings, a: argparse.Namespace) -> int:
    from engine.access import audit

    events = audit.events(
        store(s),
        actor=a.actor,
        action=a.action,
        object_kind=a.kind,
        object_id=a.object,
        since=a.since,
        limit=a.limit,
    )
    if a.json:
        print(json.dumps([asdict(e) for e in events], indent=1))
        return 0
    rows: list[dict[str, Any]] = [
        {**asdict(e), "change": _change(e.before, e.after)} for e in events
    ]
    print_rows(rows, ["at", "actor", "action", "object_kind", "object_id", "change"])
    return 0


def _change(before: Any, after: Any) -> str:
    text = lambda v: json.dumps(v, sort_keys=True) if v is not None else ""  # noqa: E731
    if before is None:
        return text(after)[:120]
    return f"{text(before)} -> {text(after)}"[:120]


def register(top: Any) -> None:
    user = top.add_parser("user", help="people who sign in (administrators only)").add_subparsers(
        dest="cmd", required=True
    )
    p = add(
        user,
        "create",
        cmd_user_create,
        f"Create a local account (no rights until granted); password from {PASSWORD_ENV} "
        "or asked on the terminal.",
    )
    p.add_argument("name")
    p.add_argument("--display-name", default="")
    p.add_argument("--admin", action="store_true", help="an administrator (may do everything)")
    p.add_argument(
        "--no-password",
        action="store_true",
        help="no password: signs in through OpenID Connect, or acts only by NODAL_USER",
    )
    p = add(
        user,
        "password",
        cmd_user_password,
        f"Set a password (your own, or anyone's as an administrator); from {PASSWORD_ENV} or asked.",
    )
    p.add_argument("name")
    p = add(user, "update", cmd_user_update, "Enable, disable, make or unmake an administrator.")
    p.add_argument("name")
    p.add_argument("--enable", dest="enabled", action="store_true", default=None)
    p.add_argument("--disable", dest="enabled", action="store_false")
    p.add_argument("--admin", dest="admin", action="store_true", default=None)
    p.add_argument("--no-admin", dest="admin", action="store_false")
    p.add_argument("--display-name", default=None)
    add(user, "list", cmd_user_list, "List accounts with their groups.")

    group = top.add_parser("group", help="groups of people").add_subparsers(
        dest="cmd", required=True
    )
    p = add(group, "create", cmd_group_create, "Create a group.")
    p.add_argument("name")
    p.add_argument("--description", default="")
    for name, member in (("add", True), ("remove", False)):
        p = add(group, name, _membership(member), f"{name.title()} a member.")
        p.add_argument("group")
        p.add_argument("user")
    add(group, "list", cmd_group_list, "List groups and their members.")

    for name, fn, help in (
        ("grant", cmd_grant, "Give a user or group a right on a scope."),
        ("revoke", cmd_revoke, "Take a right back."),
    ):
        p = add(top, name, fn, help)
        p.add_argument(
            "right",
            help="project: read|write|admin; infra or stage: "
            "view|run|configure|deploy; service: keys|access",
        )
        p.add_argument(
            "--on",
            required=True,
            metavar="KIND:NAME",
            help="project:NAME, infra:ID, stage:NAME or service:ID (NAME * = all)",
        )
        p.add_argument("--user")
        p.add_argument("--group")
    p = add(top, "rights", cmd_rights, "List the rights granted (to one user or group).")
    p.add_argument("name", nargs="?")

    p = add(top, "audit", cmd_audit, "Who changed what, newest first (read-only).")
    p.add_argument("--actor")
    p.add_argument("--action", help="e.g. deployment.deploy, run.abort, key.create, grant")
    p.add_argument("--kind", help="object kind: deployment, run, bundle, service, user, group…")
    p.add_argument("--object", help="object id, e.g. a deployment id")
    p.add_argument("--since", help="ISO date or time")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
