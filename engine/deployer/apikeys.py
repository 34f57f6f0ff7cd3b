"""API keys of API services: created, listed and revoked by ops; checked by API nodes.

A key reads ``nk_<key id>_<secret>``. The control store keeps the key id (public, shown in
listings), a random salt and ``sha256(salt + secret)``: the secret itself is shown once, at creation,
and stored nowhere. The secret is 192 random bits, so a fast salted hash is enough (a slow
one such as scrypt protects guessable passwords, and would let wrong keys cost the node
tens of milliseconds each). API nodes load the active keys of their infrastructure at each
sync (no database read per request). A revoked key stops working at the next sync.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from engine.access import audit, rights
from engine.core.errors import NodalError
from engine.storage.control import ControlStore, api_keys, now_iso

PREFIX = "nk"


class ApiKeyError(NodalError):
    """An API key action was refused; the message says why."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    service: str
    infra_id: str | None
    label: str
    created_by: str
    created_at: str
    revoked_at: str | None


def _hash(secret: str, salt: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def create_key(
    store: ControlStore, service: str, actor: str, infra_id: str | None = None, label: str = ""
) -> tuple[ApiKey, str]:
    """A new key for ``service`` (on ``infra_id`` only, or on every infrastructure).

    Returns the key's record and the full key, which is never shown again.
    """
    if not service:
        raise ApiKeyError("an API key belongs to a service: give its id")
    rights.require(store, actor, "keys", service=service)
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(24), secrets.token_hex(16)
    now = now_iso()
    with store.write() as conn:
        conn.execute(
            sa.insert(api_keys).values(
                key_id=key_id,
                service=service,
                infra_id=infra_id,
                salt=salt,
                secret_hash=_hash(secret, salt),
                label=label,
                created_by=actor,
                created_at=now,
            )
        )
        audit.record(
            conn,
            actor,
            "key.create",
            "service",
            service,
            after={"key_id": key_id, "infra": infra_id, "label": label},
        )
    return ApiKey(key_id, service, infra_id, label, actor, now, None), f"{PREFIX}_{key_id}_{secret}"


def list_keys(store: ControlStore, service: str | None = None) -> list[ApiKey]:
    q = sa.select(api_keys).order_by(api_keys.c.created_at)
    if service:
        q = q.where(api_keys.c.service == service)
    with store.read() as conn:
        rows = conn.execute(q).mappings().all()
    return [
        ApiKey(
            r["key_id"],
            r["service"],
            r["infra_id"],
            r["label"],
            r["created_by"],
            r["created_at"],
            r["revoked_at"],
        )
        for r in rows
    ]


def revoke_key(store: ControlStore, key_id: str, actor: str) -> ApiKey:
    key_id = key_id.removeprefix(f"{PREFIX}_").split("_")[0]
    with store.write() as conn:
        row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        if row is None:
            raise ApiKeyError(f"no API key with id {key_id!r} (see `nodal api keys list`)")
        rights.require(store, actor, "keys", service=row.service)
        if row.revoked_at is None:
            audit.record(
                conn, actor, "key.revoke", "service", row.service, before={"key_id": key_id}
            )
            conn.execute(
                sa.update(api_keys)
                .where(api_keys.c.key_id == key_id)
                .values(revoked_at=now_iso(), revoked_by=actor)
            )
    return next(k for k in list_keys(store) if k.key_id == key_id)


@dataclass(frozen=True)
class _Hashed:
    service: str
    salt: str
    secret_hash: str


class KeyChecker:
    """The active keys of one infrastructure, as an API node holds them between syncs."""

    def __init__(self, hashed: dict[str, _Hashed] | None = None) -> None:
        self.hashed = hashed or {}
        self._verified: dict[str, str] = {}  # full key → service

    @classmethod
    def load(cls, store: ControlStore, infra_id: str) -> KeyChecker:
        q = sa.select(api_keys).where(
            api_keys.c.revoked_at.is_(None),
            sa.or_(api_keys.c.infra_id.is_(None), api_keys.c.infra_id == infra_id),
        )
        with store.read() as conn:
            rows = conn.execute(q).mappings().all()
        return cls({r["key_id"]: _Hashed(r["service"], r["salt"], r["secret_hash"]) for r in rows})

    def same_keys(self, other: KeyChecker) -> bool:
        return self.hashed == other.hashed

    def allows(self, key: str | None, service: str) -> bool:
        """Whether ``key`` is an active key of ``service``."""
        if not key:
            return False
        known = self._verified.get(key)
        if known is not None:
            return known == service
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return False
        entry = self.hashed.get(parts[1])
        if entry is None or len(parts[2]) > 200:
            return False
        if not hmac.compare_digest(_hash(parts[2], entry.salt), entry.secret_hash):
            return False
        if len(self._verified) < 10_000:
            self._verified[key] = entry.service
        return entry.service == service
