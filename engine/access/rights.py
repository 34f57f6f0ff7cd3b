"""Rights: what each person may do, checked by the engine where state changes.

A right is granted to a user or a group on one scope: a project (``read`` < ``write`` <
``admin``), an infrastructure or a whole stage (``view``; ``run`` scenarios and abort them;
``configure`` variables and triggers; ``deploy``, promote and roll back), or an API service
(``keys``: create and revoke its keys; ``access``: switch it between public and keys). A
scope of ``*`` means every one of its kind. Administrators may do everything, including
managing people and rights; a project's ``admin`` grants and revokes rights on that
project. Least privilege: a person with no grant may do nothing, and a
name nodal has no account for is refused like anyone without the right.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from engine.access import audit
from engine.core.errors import NodalError
from engine.storage.control import (
    ControlStore,
    grants,
    group_members,
    groups,
    infrastructures,
    now_iso,
    users,
)

RIGHTS: dict[str, tuple[str, ...]] = {
    "project": ("read", "write", "admin"),
    "infra": ("view", "run", "configure", "deploy"),
    "stage": ("view", "run", "configure", "deploy"),
    "service": ("keys", "access"),
}
# A right granted also gives these.
_IMPLIES: dict[str, frozenset[str]] = {
    "admin": frozenset({"write", "read"}),
    "write": frozenset({"read"}),
    "run": frozenset({"view"}),
    "configure": frozenset({"view"}),
    "deploy": frozenset({"view"}),
}
_WHAT = {
    "read": "read",
    "write": "change",
    "admin": "administer",
    "view": "see",
    "run": "run or abort scenarios on",
    "configure": "change variables and triggers of",
    "deploy": "deploy to",
    "keys": "manage the API keys of",
    "access": "change the access mode of",
}


class PermissionDenied(NodalError):
    """The acting person lacks the right the change needs (the message names it)."""


@dataclass(frozen=True)
class Principal:
    """A person as the engine sees them when they act."""

    name: str
    display_name: str
    is_admin: bool
    groups: tuple[str, ...]


def principal(store: ControlStore, name: str) -> Principal | None:
    """The enabled account called ``name`` with its groups, or None."""
    with store.read() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
        if row is None or not row["enabled"]:
            return None
        member_of = conn.execute(
            sa.select(group_members.c.group_name)
            .where(group_members.c.user_name == name)
            .order_by(group_members.c.group_name)
        ).scalars()
        return Principal(name, row["display_name"] or name, bool(row["is_admin"]), tuple(member_of))


def _known(store: ControlStore, actor: str) -> Principal:
    who = principal(store, actor) if actor else None
    if who is None:
        raise PermissionDenied(
            f"{actor or 'an anonymous caller'} has no enabled account on this home: "
            "an administrator creates it (nodal user create)"
        )
    return who


def _grants_of(who: Principal) -> sa.ColumnElement[bool]:
    """The grant rows that apply to ``who``: to them by name, or to one of their groups."""
    return sa.or_(
        sa.and_(grants.c.principal_kind == "user", grants.c.principal == who.name),
        sa.and_(grants.c.principal_kind == "group", grants.c.principal.in_(who.groups)),
    )


def _granted(store: ControlStore, who: Principal, kinds: Iterable[tuple[str, str]]) -> set[str]:
    """Every right ``who`` holds on any of the (scope kind, scope) pairs, implied ones too."""
    pairs = list(kinds)
    held: set[str] = set()
    on_scope = sa.or_(
        *(
            sa.and_(grants.c.scope_kind == kind, grants.c.scope.in_([scope, "*"]))
            for kind, scope in pairs
        )
    )
    with store.read() as conn:
        for name in conn.execute(
            sa.select(grants.c.right_name).where(_grants_of(who), on_scope)
        ).scalars():
            held |= {name, *_IMPLIES.get(name, ())}
    return held


def _scopes(store: ControlStore, kind: str, scope: str) -> list[tuple[str, str]]:
    if kind != "infra":
        return [(kind, scope)]
    with store.read() as conn:
        stage = conn.execute(
            sa.select(infrastructures.c.stage).where(infrastructures.c.infra_id == scope)
        ).scalar()
    return [("infra", scope)] + ([("stage", stage)] if stage else [])


def _scope_of(
    project: str | None, infra: str | None, stage: str | None, service: str | None
) -> tuple[str, str]:
    given = [
        (k, v)
        for k, v in (("project", project), ("infra", infra), ("stage", stage), ("service", service))
        if v is not None
    ]
    if len(given) != 1:
        raise ValueError("a right is checked on exactly one scope")
    return given[0]


def allowed(
    store: ControlStore,
    actor: str,
    right: str,
    *,
    project: str | None = None,
    infra: str | None = None,
    stage: str | None = None,
    service: str | None = None,
) -> bool:
    """Whether ``actor`` holds ``right`` on the one scope given."""
    try:
        require(store, actor, right, project=project, infra=infra, stage=stage, service=service)
    except PermissionDenied:
        return False
    return True


def require(
    store: ControlStore,
    actor: str,
    right: str,
    *,
    project: str | None = None,
    infra: str | None = None,
    stage: str | None = None,
    service: str | None = None,
) -> Principal:
    """``actor``'s principal if they hold ``right`` on the scope; PermissionDenied if not."""
    kind, scope = _scope_of(project, infra, stage, service)
    if right not in RIGHTS[kind]:
        raise ValueError(f"{right!r} is not a right on a {kind}")
    who = _known(store, actor)
    if who.is_admin or right in _granted(store, who, _scopes(store, kind, scope)):
        return who
    raise PermissionDenied(
        f"{who.name} may not {_WHAT[right]} {kind} {scope!r}: "
        f"needs the {right!r} right on it (an administrator grants it)"
    )


def require_on_node(
    store: ControlStore, actor: str, node: str, project: str, infra_right: str
) -> Principal:
    """``infra_right`` on ``node`` when it is a registered infrastructure (an automation or
    API node); otherwise (the design node) ``write`` on the project."""
    with store.read() as conn:
        known = conn.execute(
            sa.select(infrastructures.c.infra_id).where(infrastructures.c.infra_id == node)
        ).first()
    if known:
        return require(store, actor, infra_right, infra=node)
    return require(store, actor, "write", project=project)


def require_admin(store: ControlStore, actor: str) -> Principal:
    who = _known(store, actor)
    if not who.is_admin:
        raise PermissionDenied(f"{who.name} is not an administrator: only they may do this")
    return who


def scopes_with(store: ControlStore, actor: str, kind: str, right: str) -> set[str] | None:
    """The scopes of ``kind`` on which ``actor`` holds ``right`` (None: every one, for
    administrators and grants on ``*``); empty for unknown people. For filtering reads."""
    who = principal(store, actor) if actor else None
    if who is None:
        return set()
    if who.is_admin:
        return None
    with store.read() as conn:
        rows = conn.execute(
            sa.select(grants.c.scope, grants.c.right_name).where(
                _grants_of(who), grants.c.scope_kind == kind
            )
        ).all()
    held = {scope for scope, name in rows if right == name or right in _IMPLIES.get(name, ())}
    return None if "*" in held else held


@dataclass(frozen=True)
class Grant:
    principal_kind: str
    principal: str
    scope_kind: str
    scope: str
    right: str
    granted_by: str
    granted_at: str


def _check_grant(
    store: ControlStore, principal_kind: str, name: str, scope_kind: str, right: str
) -> None:
    if scope_kind not in RIGHTS:
        raise NodalError(f"no such scope kind {scope_kind!r}: one of {', '.join(RIGHTS)}")
    if right not in RIGHTS[scope_kind]:
        raise NodalError(
            f"{right!r} is not a right on a {scope_kind}: one of {', '.join(RIGHTS[scope_kind])}"
        )
    table = {"user": users, "group": groups}.get(principal_kind)
    if table is None:
        raise NodalError("rights are granted to a user or a group")
    with store.read() as conn:
        if conn.execute(sa.select(table.c.name).where(table.c.name == name)).first() is None:
            raise NodalError(f"no {principal_kind} called {name!r}")


def _require_grantor(store: ControlStore, actor: str, scope_kind: str, scope: str) -> None:
    """Administrators grant anything; a project's ``admin`` grants rights on that project."""
    who = _known(store, actor)
    if who.is_admin:
        return
    if scope_kind == "project" and scope != "*":
        require(store, actor, "admin", project=scope)
        return
    require_admin(store, actor)


def grant(
    store: ControlStore,
    actor: str,
    principal_kind: str,
    name: str,
    scope_kind: str,
    scope: str,
    right: str,
) -> Grant:
    """Give ``name`` (a user or a group) ``right`` on a scope: administrators, or for one
    project the holders of its ``admin`` right."""
    _require_grantor(store, actor, scope_kind, scope)
    _check_grant(store, principal_kind, name, scope_kind, right)
    if not scope:
        raise NodalError("name the scope (or * for every one)")
    row = {
        "principal_kind": principal_kind,
        "principal": name,
        "scope_kind": scope_kind,
        "scope": scope,
        "right_name": right,
        "granted_by": actor,
        "granted_at": now_iso(),
    }
    key = {k: row[k] for k in ("principal_kind", "principal", "scope_kind", "scope", "right_name")}
    with store.write() as conn:
        exists = conn.execute(
            sa.select(grants.c.principal).where(*(grants.c[k] == v for k, v in key.items()))
        ).first()
        if exists is None:
            conn.execute(sa.insert(grants).values(**row))
            audit.record(conn, actor, "grant", principal_kind, name, after=key)
    return Grant(principal_kind, name, scope_kind, scope, right, actor, row["granted_at"])


def revoke(
    store: ControlStore,
    actor: str,
    principal_kind: str,
    name: str,
    scope_kind: str,
    scope: str,
    right: str,
) -> bool:
    """Take a right back; True if it was granted. Who may grant it may take it back."""
    _require_grantor(store, actor, scope_kind, scope)
    key = {
        "principal_kind": principal_kind,
        "principal": name,
        "scope_kind": scope_kind,
        "scope": scope,
        "right_name": right,
    }
    with store.write() as conn:
        gone = conn.execute(
            sa.delete(grants).where(*(grants.c[k] == v for k, v in key.items()))
        ).rowcount
        if gone:
            audit.record(conn, actor, "revoke", principal_kind, name, before=key)
    return bool(gone)


def list_grants(store: ControlStore, name: str | None = None) -> list[Grant]:
    query = sa.select(grants).order_by(
        grants.c.principal_kind, grants.c.principal, grants.c.scope_kind, grants.c.scope
    )
    if name:
        query = query.where(grants.c.principal == name)
    with store.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [
        Grant(
            r["principal_kind"],
            r["principal"],
            r["scope_kind"],
            r["scope"],
            r["right_name"],
            r["granted_by"],
            r["granted_at"],
        )
        for r in rows
    ]
