"""Writes: create, change and delete a row together with its audit record.

Callers hold ``with conn.transaction()`` around these, with whatever checks the change needs,
so the checks, the change and the audit row commit together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from uuid import UUID

import psycopg

from routing_engine.entrypoints.api import audit, store
from routing_engine.entrypoints.api.envelope import not_found
from routing_engine.entrypoints.api.principals import Caller
from routing_engine.entrypoints.api.store import Row, Table


def _account(row: Mapping[str, Any], table: Table) -> UUID | None:
    if table.schema == "accounts" and table.name == "accounts":
        return row.get("id")
    return row.get("account_id")


def locked(conn: psycopg.Connection, who: Caller, table: Table, id: UUID, what: str,
           where: Mapping[str, Any] | None = None) -> Row:
    """The row, locked for the change, if it exists and the caller may see it; else 404."""
    row = store.fetch(conn, table, id, who.scope, lock=True, where=where)
    if row is None:
        raise not_found(what)
    return row


def create(conn: psycopg.Connection, who: Caller, table: Table, entity: str, values: Mapping[str, Any]) -> Row:
    row = store.insert(conn, table, values)
    audit.record(conn, who.actor, "create", entity, row["id"], None, row, _account(row, table), who.request_id)
    return row


def change(conn: psycopg.Connection, who: Caller, table: Table, entity: str, before: Row,
           values: Mapping[str, Any]) -> Row:
    if not values:
        return before
    after = store.update(conn, table, before["id"], values)
    audit.record(conn, who.actor, "update", entity, before["id"], before, after, _account(after, table),
                 who.request_id)
    return after


def delete(conn: psycopg.Connection, who: Caller, table: Table, entity: str, before: Row) -> None:
    store.remove(conn, table, before["id"])
    audit.record(conn, who.actor, "delete", entity, before["id"], before, None, _account(before, table),
                 who.request_id)
