"""API keys: made here, shown once, kept only as their SHA-256 (auth.api_keys).

A key is ``warp_`` and 43 URL-safe characters (256 random bits), so a hash lookup is as good as
a password check and needs no slow KDF. Revoking is immediate: every request looks the key up.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import psycopg

from routing_engine.entrypoints.api import audit
from routing_engine.entrypoints.api.principals import API_KEY_PREFIX, Role, key_digest

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class KeyProblem(ValueError):
    """A key that cannot be made or found; the message says why."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: UUID
    name: str
    key_prefix: str
    role: str
    account_id: UUID | None
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def create(conn: psycopg.Connection, name: str, role: Role, account_id: UUID | None = None,
           created_by: str = "cli", expires_in: timedelta | None = None) -> tuple[UUID, str]:
    """Store a new key; returns its id and the key itself (the only time it exists in clear)."""
    if not _NAME.fullmatch(name):
        raise KeyProblem("a key name is 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit")
    if account_id is not None and role is Role.ADMIN:
        raise KeyProblem("a customer-scoped key cannot be admin (use operator or read-only)")
    key = new_key()
    with conn.transaction():
        found = account_id is None or conn.execute(
            "SELECT 1 FROM accounts.accounts WHERE id = %s AND deleted_at IS NULL", (account_id,)).fetchone()
        if not found:
            raise KeyProblem(f"no such account {account_id}")
        row = conn.execute(
            "INSERT INTO auth.api_keys (name, key_prefix, key_sha256, role, account_id, created_by, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, now() + %s) RETURNING id",
            (name, key[:12], key_digest(key), role.value, account_id, created_by, expires_in)).fetchone()
        assert row is not None
        audit.record(conn, created_by, "create", "api_key", row[0], None,
                     {"name": name, "role": role.value, "account_id": account_id, "key_prefix": key[:12]},
                     account_id)
    return row[0], key


def listing(conn: psycopg.Connection) -> list[KeyInfo]:
    rows = conn.execute("SELECT id, name, key_prefix, role, account_id, created_by, created_at, expires_at,"
                        " last_used_at, revoked_at FROM auth.api_keys ORDER BY created_at, id").fetchall()
    return [KeyInfo(*r) for r in rows]


def revoke(conn: psycopg.Connection, which: str, revoked_by: str = "cli") -> KeyInfo:
    """Revoke by id, or by name when exactly one live key has it."""
    with conn.transaction():
        try:
            rows = conn.execute("SELECT id FROM auth.api_keys WHERE id = %s AND revoked_at IS NULL",
                                (UUID(which),)).fetchall()
        except ValueError:
            rows = conn.execute("SELECT id FROM auth.api_keys WHERE name = %s AND revoked_at IS NULL",
                                (which,)).fetchall()
        if len(rows) != 1:
            raise KeyProblem(f"{which!r} matches {len(rows)} live keys; give the key's id")
        conn.execute("UPDATE auth.api_keys SET revoked_at = now() WHERE id = %s", (rows[0][0],))
        info = next(k for k in listing(conn) if k.id == rows[0][0])
        audit.record(conn, revoked_by, "revoke", "api_key", info.id, {"name": info.name, "role": info.role},
                     None, info.account_id)
    return info
