"""Store: Postgres connections for the API and the few statements every resource shares.

Connections are autocommit (``adapters.postgres.connect``); a write opens ``with
conn.transaction()`` around the change and its audit row, so both land or neither. Column and
table names come from the resource modules' own constants, never from a request; values are
always parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from routing_engine.adapters import postgres

Row = dict[str, Any]


class Pool:
    """A few idle connections kept for reuse; a connection that is not idle is not reused."""

    def __init__(self, url: str, timeout_s: int = 5, keep: int = 8) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.keep = keep
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = postgres.connect(self.url, self.timeout_s)
        try:
            yield conn
        finally:
            if not self._give_back(conn):
                conn.close()

    def _give_back(self, conn: psycopg.Connection) -> bool:
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            return False
        with self._lock:
            if len(self._idle) >= self.keep:
                return False
            self._idle.append(conn)
        return True

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass(frozen=True)
class Table:
    """A resource's table: its qualified name and the columns the API reads back."""

    schema: str
    name: str
    columns: tuple[str, ...]
    soft_delete: bool = False
    # which rows a customer-scoped caller may see: SQL with one %s per use of the account id;
    # None: none at all
    scope_sql: str | None = None

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def select_list(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)

    def live(self) -> sql.Composable:
        return sql.SQL("deleted_at IS NULL") if self.soft_delete else sql.SQL("true")

    def scoped(self, scope: UUID) -> tuple[sql.Composable, list[Any]]:
        """The condition (and its parameters) that limits rows to one account."""
        if self.scope_sql is None:
            return sql.SQL("false"), []
        return sql.SQL(self.scope_sql), [scope] * self.scope_sql.count("%s")


TENANT = "account_id = %s"  # scope_sql of tables that carry the owning account


def fetch(conn: psycopg.Connection, table: Table, id: UUID, scope: UUID | None = None,
          lock: bool = False, where: Mapping[str, Any] | None = None) -> Row | None:
    """One live row by id; with ``scope`` only if it belongs to that account."""
    conds: list[sql.Composable] = [sql.SQL("id = %s"), table.live()]
    params: list[Any] = [id]
    if scope is not None:
        condition, values = table.scoped(scope)
        conds.append(condition)
        params.extend(values)
    for column, value in (where or {}).items():
        conds.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
        params.append(value)
    query = sql.SQL("SELECT {} FROM {} WHERE {}{}").format(
        table.select_list, table.ident, sql.SQL(" AND ").join(conds), sql.SQL(" FOR UPDATE" if lock else ""))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchone()


def insert(conn: psycopg.Connection, table: Table, values: Mapping[str, Any]) -> Row:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING {}").format(
        table.ident, sql.SQL(", ").join(sql.Identifier(c) for c in values),
        sql.SQL(", ").join(sql.Placeholder() for _ in values), table.select_list)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, list(values.values())).fetchone()
    assert row is not None
    return row


def update(conn: psycopg.Connection, table: Table, id: UUID, values: Mapping[str, Any]) -> Row:
    if not values:
        row = fetch(conn, table, id)
        assert row is not None
        return row
    query = sql.SQL("UPDATE {} SET {} WHERE id = %s RETURNING {}").format(
        table.ident, sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values),
        table.select_list)
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, [*values.values(), id]).fetchone()
    assert row is not None
    return row


def remove(conn: psycopg.Connection, table: Table, id: UUID) -> None:
    """Soft-delete where the table keeps deleted rows, else delete."""
    if table.soft_delete:
        conn.execute(sql.SQL("UPDATE {} SET deleted_at = now() WHERE id = %s").format(table.ident), (id,))
    else:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(table.ident), (id,))


def listing(conn: psycopg.Connection, table: Table, filters: Mapping[str, Any], scope: UUID | None,
            after: UUID | None, limit: int, extra: Sequence[tuple[str, Sequence[Any]]] = ()) -> list[Row]:
    """Live rows matching ``filters`` (column = value, None values ignored), in id order, after the
    cursor id; ``extra`` adds raw conditions written by the resource module."""
    conds: list[sql.Composable] = [table.live()]
    params: list[Any] = []
    if scope is not None:
        condition, values = table.scoped(scope)
        conds.append(condition)
        params.extend(values)
    for column, value in filters.items():
        if value is not None:
            conds.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    for text, args in extra:  # conditions written in the resource modules, never from a request
        conds.append(sql.SQL(text))
        params.extend(args)
    if after is not None:
        conds.append(sql.SQL("id > %s"))
        params.append(after)
    query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY id LIMIT %s").format(
        table.select_list, table.ident, sql.SQL(" AND ").join(conds))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, [*params, limit]).fetchall()


