"""Audit: one audit.audit_log row per change, written in the change's own transaction.

Rows say who (actor), what (action, entity, entity_id), the account it concerns, the request
that made it, and the row before and after. Anything that looks like a secret is replaced by
"[redacted]" before it is stored, whatever the caller passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from ipaddress import IPv4Network, IPv6Network
from typing import Any
from uuid import UUID

import psycopg

REDACTED = "[redacted]"
_SECRET_WORDS = ("password", "secret", "ha1", "token", "api_key", "key_sha256", "authorization")


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact(value: Any) -> Any:
    """A JSON-ready copy with secret-looking keys blanked, at any depth."""
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _is_secret(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, Decimal | UUID | IPv4Network | IPv6Network):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def record(conn: psycopg.Connection, actor: str, action: str, entity: str, entity_id: object,
           before: Mapping[str, Any] | None = None, after: Mapping[str, Any] | None = None,
           account_id: UUID | None = None, request_id: str | None = None) -> None:
    conn.execute(
        "INSERT INTO audit.audit_log (account_id, actor, action, entity, entity_id, before, after, request_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (account_id, actor, action, entity, None if entity_id is None else str(entity_id),
         None if before is None else json.dumps(redact(before)),
         None if after is None else json.dumps(redact(after)), request_id or None))
