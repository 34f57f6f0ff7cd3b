"""People: local accounts, groups, sign-in with back-off, and sessions.

Passwords are hashed with Argon2id (argon2-cffi, memory-hard); only the hash is stored.
A sign-in session is a random token given to the browser; the store keeps its SHA-256
and its expiry, so a leaked database holds no usable token. After three failed sign-ins
an account waits 2, 4, 8 … seconds (at most 15 minutes) before the next try is even
checked; every failure is in the audit trail. Accounts from OpenID Connect have no
password: their groups follow the provider's claim at each sign-in.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from engine.access import audit
from engine.access.rights import Principal, principal, require_admin
from engine.core.errors import NodalError
from engine.storage.control import ControlStore, group_members, groups, now_iso, sessions, users

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
MIN_PASSWORD = 8
FREE_FAILURES = 3
MAX_WAIT = timedelta(minutes=15)
_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(NodalError):
    """A user or group change that cannot be made (the message says why)."""


class SignInRefused(NodalError):
    """Wrong name or password, a disabled account, or too many recent failures."""


@dataclass(frozen=True)
class User:
    name: str
    display_name: str
    is_admin: bool
    enabled: bool
    source: str
    groups: tuple[str, ...]
    created_by: str
    created_at: str


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AccountError(
            f"a {kind} name is 1-100 letters, digits, '.', '_', '@' or '-', starting with a "
            "letter or digit"
        )
    return name


def _check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("a password has at most 1024 characters")
    return password


def _now() -> datetime:
    return datetime.now(UTC)


def has_users(store: ControlStore) -> bool:
    with store.read() as conn:
        return conn.execute(sa.select(users.c.name).limit(1)).first() is not None


def _insert_user(
    conn: sa.Connection,
    actor: str,
    name: str,
    password: str | None,
    display_name: str,
    admin: bool,
    source: str,
) -> None:
    if conn.execute(sa.select(users.c.name).where(users.c.name == name)).first() is not None:
        raise AccountError(f"user {name!r} already exists")
    conn.execute(
        sa.insert(users).values(
            name=name,
            display_name=display_name or name,
            password_hash=_hasher.hash(password) if password is not None else None,
            is_admin=admin,
            enabled=True,
            source=source,
            failed_attempts=0,
            created_by=actor,
            created_at=now_iso(),
        )
    )
    audit.record(
        conn,
        actor,
        "user.create",
        "user",
        name,
        after={"admin": admin, "source": source, "display_name": display_name or name},
    )


def bootstrap_admin(store: ControlStore, name: str, password: str | None = None) -> bool:
    """Make ``name`` the first administrator of a home that has no account yet; True if it
    did (a home with accounts is left alone: only an administrator adds people there)."""
    _check_name("user", name)
    if password is not None:
        _check_password(password)
    with store.write() as conn:
        if conn.execute(sa.select(users.c.name).limit(1)).first() is not None:
            return False
        _insert_user(conn, name, name, password, name, True, "local")
    return True


def create_user(
    store: ControlStore,
    actor: str,
    name: str,
    *,
    password: str | None = None,
    display_name: str = "",
    admin: bool = False,
) -> User:
    """A new local account (no rights until granted); administrators only."""
    require_admin(store, actor)
    _check_name("user", name)
    if password is not None:
        _check_password(password)
    with store.write() as conn:
        _insert_user(conn, actor, name, password, display_name, admin, "local")
    return get_user(store, name)


def set_password(store: ControlStore, actor: str, name: str, password: str) -> None:
    """Set ``name``'s password: the person themselves or an administrator."""
    if actor != name:
        require_admin(store, actor)
    elif principal(store, actor) is None:
        raise SignInRefused(f"{actor} has no enabled account")
    _check_password(password)
    with store.write() as conn:
        done = conn.execute(
            sa.update(users)
            .where(users.c.name == name)
            .values(password_hash=_hasher.hash(password), failed_attempts=0, locked_until=None)
        ).rowcount
        if not done:
            raise AccountError(f"no user called {name!r}")
        conn.execute(sa.delete(sessions).where(sessions.c.user_name == name))
        audit.record(conn, actor, "user.password", "user", name)


def update_user(
    store: ControlStore,
    actor: str,
    name: str,
    *,
    enabled: bool | None = None,
    admin: bool | None = None,
    display_name: str | None = None,
) -> User:
    """Enable/disable an account, make or unmake an administrator; administrators only.
    Disabling ends the person's sessions. Nobody removes the last enabled administrator."""
    require_admin(store, actor)
    before = get_user(store, name)
    values: dict[str, object] = {}
    if enabled is not None:
        values["enabled"] = enabled
    if admin is not None:
        values["is_admin"] = admin
    if display_name is not None:
        values["display_name"] = display_name or name
    if not values:
        return before
    with store.write() as conn:
        conn.execute(sa.update(users).where(users.c.name == name).values(**values))
        admins = conn.execute(
            sa.select(sa.func.count())
            .select_from(users)
            .where(users.c.is_admin.is_(True), users.c.enabled.is_(True))
        ).scalar_one()
        if admins == 0:
            raise AccountError("this would leave no enabled administrator")
        if enabled is False:
            conn.execute(sa.delete(sessions).where(sessions.c.user_name == name))
        audit.record(
            conn,
            actor,
            "user.update",
            "user",
            name,
            before={
                "enabled": before.enabled,
                "admin": before.is_admin,
                "display_name": before.display_name,
            },
            after={k.replace("is_", ""): v for k, v in values.items()},
        )
    return get_user(store, name)


def get_user(store: ControlStore, name: str) -> User:
    for user in list_users(store, names=[name]):
        return user
    raise AccountError(f"no user called {name!r}")


def list_users(store: ControlStore, names: Iterable[str] | None = None) -> list[User]:
    query = sa.select(users).order_by(users.c.name)
    if names is not None:
        query = query.where(users.c.name.in_(list(names)))
    with store.read() as conn:
        rows = conn.execute(query).mappings().all()
        member_rows = conn.execute(sa.select(group_members)).all()
    member_of: dict[str, list[str]] = {}
    for group_name, user_name in member_rows:
        member_of.setdefault(user_name, []).append(group_name)
    return [
        User(
            r["name"],
            r["display_name"],
            bool(r["is_admin"]),
            bool(r["enabled"]),
            r["source"],
            tuple(sorted(member_of.get(r["name"], []))),
            r["created_by"],
            r["created_at"],
        )
        for r in rows
    ]


# --- groups ------------------------------------------------------------------------------------


def create_group(store: ControlStore, actor: str, name: str, description: str = "") -> None:
    require_admin(store, actor)
    _check_name("group", name)
    with store.write() as conn:
        if conn.execute(sa.select(groups.c.name).where(groups.c.name == name)).first():
            raise AccountError(f"group {name!r} already exists")
        conn.execute(
            sa.insert(groups).values(
                name=name, description=description, created_by=actor, created_at=now_iso()
            )
        )
        audit.record(conn, actor, "group.create", "group", name, after={"description": description})


def set_membership(store: ControlStore, actor: str, group: str, user: str, member: bool) -> None:
    """Add ``user`` to ``group`` (or remove them); administrators only."""
    require_admin(store, actor)
    with store.write() as conn:
        if not conn.execute(sa.select(groups.c.name).where(groups.c.name == group)).first():
            raise AccountError(f"no group called {group!r}")
        if not conn.execute(sa.select(users.c.name).where(users.c.name == user)).first():
            raise AccountError(f"no user called {user!r}")
        where = (group_members.c.group_name == group, group_members.c.user_name == user)
        present = conn.execute(sa.select(group_members).where(*where)).first() is not None
        if member and not present:
            conn.execute(sa.insert(group_members).values(group_name=group, user_name=user))
        elif not member and present:
            conn.execute(sa.delete(group_members).where(*where))
        else:
            return
        audit.record(
            conn,
            actor,
            "group.add" if member else "group.remove",
            "group",
            group,
            after={"user": user},
        )


def list_groups(store: ControlStore) -> list[dict[str, object]]:
    with store.read() as conn:
        rows = conn.execute(sa.select(groups).order_by(groups.c.name)).mappings().all()
        members = conn.execute(sa.select(group_members)).all()
    return [
        {
            "name": r["name"],
            "description": r["description"],
            "members": sorted(u for g, u in members if g == r["name"]),
        }
        for r in rows
    ]


# --- sign-in and sessions ----------------------------------------------------------------------


def _wait(failures: int) -> timedelta:
    if failures < FREE_FAILURES:
        return timedelta(0)
    return min(timedelta(seconds=2 ** (failures - FREE_FAILURES + 1)), MAX_WAIT)


def sign_in(store: ControlStore, name: str, password: str) -> Principal:
    """The person if ``password`` is theirs; SignInRefused (one message for a wrong name or
    password) otherwise, or while the account waits after repeated failures."""
    name = str(name or "")[:100]
    with store.read() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
    if row is not None and row["locked_until"] and row["locked_until"] > now_iso():
        left = datetime.fromisoformat(row["locked_until"]) - _now()
        raise SignInRefused(
            f"too many failed sign-ins for {name}: try again in {max(1, int(left.total_seconds()))} s"
        )
    stored = row["password_hash"] if row is not None else None
    try:
        ok = (
            _hasher.verify(stored or _DUMMY_HASH, str(password or "")[:1024]) and stored is not None
        )
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok or not row["enabled"]:
        with store.write() as conn:
            if row is not None:
                failures = int(row["failed_attempts"] or 0) + 1
                wait = _wait(failures)
                conn.execute(
                    sa.update(users)
                    .where(users.c.name == name)
                    .values(
                        failed_attempts=failures,
                        locked_until=(_now() + wait).isoformat(timespec="microseconds")
                        if wait
                        else None,
                    )
                )
            audit.record(conn, name or "-", "sign_in.failed", "user", name)
        raise SignInRefused("wrong user name or password, or the account is disabled")
    with store.write() as conn:
        conn.execute(
            sa.update(users)
            .where(users.c.name == name)
            .values(failed_attempts=0, locked_until=None)
        )
    who = principal(store, name)
    assert who is not None
    return who


def sign_in_external(
    store: ControlStore,
    name: str,
    display_name: str,
    claimed_groups: Iterable[str],
    group_map: Mapping[str, str],
) -> Principal:
    """The person an OpenID Connect provider vouched for: their account is created on first
    sign-in (no password, no rights) and their membership of every mapped nodal group follows
    the provider's groups claim. ``group_map``: provider group -> nodal group."""
    _check_name("user", name)
    wanted = {group_map[g] for g in claimed_groups if g in group_map}
    with store.write() as conn:
        row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
        if row is None:
            _insert_user(conn, "oidc", name, None, display_name, False, "oidc")
        elif not row["enabled"]:
            raise SignInRefused(f"the account {name} is disabled")
        mapped = set(group_map.values())
        existing = set(conn.execute(sa.select(groups.c.name)).scalars())
        current = set(
            conn.execute(
                sa.select(group_members.c.group_name).where(group_members.c.user_name == name)
            ).scalars()
        )
        for group in (wanted & existing) - current:
            conn.execute(sa.insert(group_members).values(group_name=group, user_name=name))
            audit.record(conn, "oidc", "group.add", "group", group, after={"user": name})
        for group in (current & mapped) - wanted:
            conn.execute(
                sa.delete(group_members).where(
                    group_members.c.group_name == group, group_members.c.user_name == name
                )
            )
            audit.record(conn, "oidc", "group.remove", "group", group, after={"user": name})
    who = principal(store, name)
    assert who is not None
    return who


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(store: ControlStore, name: str, hours: float = 12.0) -> str:
    """A new session token for ``name`` (give it to the browser; it is never stored)."""
    token = secrets.token_urlsafe(32)
    expires = (_now() + timedelta(hours=hours)).isoformat(timespec="microseconds")
    with store.write() as conn:
        conn.execute(sa.delete(sessions).where(sessions.c.expires_at < now_iso()))
        conn.execute(
            sa.insert(sessions).values(
                token_sha256=_digest(token),
                user_name=name,
                created_at=now_iso(),
                expires_at=expires,
            )
        )
    return token


def session_principal(store: ControlStore, token: str | None) -> Principal | None:
    """Who holds ``token``, if it is a live session of an enabled account."""
    if not token or len(token) > 200:
        return None
    with store.read() as conn:
        row = (
            conn.execute(
                sa.select(sessions).where(
                    sessions.c.token_sha256 == _digest(token), sessions.c.expires_at > now_iso()
                )
            )
            .mappings()
            .first()
        )
    return principal(store, row["user_name"]) if row else None


def close_session(store: ControlStore, token: str | None) -> None:
    if token:
        with store.write() as conn:
            conn.execute(sa.delete(sessions).where(sessions.c.token_sha256 == _digest(token)))
