"""Drafts: named edits to the routing and price tables, validated but not published.

A draft is an ordered list of row edits kept in ``drafts.edits``; the live tables never hold a
draft's rows while it is a draft. Its candidate snapshot is built by applying the edits to the
live tables inside a transaction that is then rolled back: the same loader as the publisher's
reads them, no other session ever sees them (they are never committed), and no notification
reaches the publisher (Postgres delivers NOTIFY only on commit). Publishing applies the same
edits in one transaction that commits, with its audit row, so what was previewed and replayed
is exactly what goes live.

An edit names its row by key (names or ids, prefix, effective moment) and the columns to set;
the columns are the table's own, read from the catalog, so a column a migration adds (billing
increments, say) can be edited without a change here.

- ``vendor_rate`` (routing.rates): key ``vendor``, ``prefix``, optional ``effective_at``. With
  ``effective_at`` the row of that moment is inserted or updated; without it, the row in force
  at the moment of applying is updated (a new prefix is inserted, effective from the table's
  default). Removing without ``effective_at`` removes every row of the prefix.
- ``customer_rate`` (billing.rate_plan_rates): key ``rate_plan``, ``prefix``, optional
  ``effective_at``; as above.
- ``plan_vendor`` (routing.routing_plan_providers): key ``plan``, ``vendor``; inserted or updated;
  removable.
- ``plan`` (routing.routing_plans), ``vendor`` (routing.providers): key ``plan`` / ``vendor``;
  update only.

Preview and publish hold row locks on the rows they edit while their transaction lasts (the
time to load one snapshot): a concurrent edit of the same row waits that long.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql

from routing_engine.adapters import postgres
from routing_engine.domain.snapshot import RoutingSnapshot


class DraftError(Exception):
    """A draft or edit that cannot be made or applied; the message names what and why."""


class DraftNotFound(DraftError):
    pass


@dataclass(frozen=True, slots=True)
class Ref:
    """A key field naming a row of another table, by id or name."""

    field: str        # in the edit's key, e.g. "vendor"
    column: str       # in the edited table, e.g. "provider_id"
    table: str        # where the name is looked up, e.g. "routing.providers"


@dataclass(frozen=True, slots=True)
class Target:
    table: str
    refs: tuple[Ref, ...]
    rated: bool = False      # a rate table: prefix and effective_at in the key
    upsert: bool = False     # inserted when missing (its key columns are unique together)
    removable: bool = False


_PROVIDERS = "routing.providers"
TARGETS: Mapping[str, Target] = {
    "vendor_rate": Target("routing.rates", (Ref("vendor", "provider_id", _PROVIDERS),), rated=True,
                          removable=True),
    "customer_rate": Target("billing.rate_plan_rates", (Ref("rate_plan", "rate_plan_id", "billing.rate_plans"),),
                            rated=True, removable=True),
    "plan_vendor": Target("routing.routing_plan_providers",
                          (Ref("plan", "routing_plan_id", "routing.routing_plans"),
                           Ref("vendor", "provider_id", _PROVIDERS)), upsert=True, removable=True),
    "plan": Target("routing.routing_plans", (Ref("plan", "id", "routing.routing_plans"),)),
    "vendor": Target("routing.providers", (Ref("vendor", "id", _PROVIDERS),)),
}
_NEVER_SET = frozenset({"id", "created_at", "updated_at", "deleted_at"})
_PREFIX = re.compile(r"^[0-9]{1,15}$")


@dataclass(frozen=True, slots=True)
class Edit:
    target: str
    key: Mapping[str, Any]
    values: Mapping[str, Any] | None  # None: remove the row
    seq: int = 0

    @property
    def remove(self) -> bool:
        return self.values is None

    def describe(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items())
        if self.values is None:
            return f"#{self.seq} remove {self.target} [{key}]"
        change = ", ".join(f"{k}={v}" for k, v in self.values.items())
        return f"#{self.seq} {self.target} [{key}]: {change}"

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "target": self.target, "key": dict(self.key),
                "values": None if self.values is None else dict(self.values), "remove": self.remove}


@dataclass(frozen=True, slots=True)
class Draft:
    id: UUID
    name: str
    description: str | None
    created_by: str
    created_at: datetime
    published_at: datetime | None
    published_by: str | None
    published_version: str | None
    edits: tuple[Edit, ...]

    def to_json(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "description": self.description,
                "created_by": self.created_by, "created_at": self.created_at.isoformat(),
                "published_at": self.published_at.isoformat() if self.published_at else None,
                "published_by": self.published_by, "published_version": self.published_version,
                "edits": [e.to_json() for e in self.edits]}


# ------------------------------------------------------------------ storage

_DRAFT_COLUMNS = "id, name, description, created_by, created_at, published_at, published_by, published_version"


def _draft(conn: psycopg.Connection, row: tuple[Any, ...]) -> Draft:
    edits = tuple(
        Edit(r[1], r[2], r[3], r[0])
        for r in conn.execute('SELECT seq, target, key, "values" FROM drafts.edits WHERE draft_id = %s'
                              " ORDER BY seq", (row[0],)).fetchall())
    return Draft(id=row[0], name=row[1], description=row[2], created_by=row[3], created_at=row[4],
                 published_at=row[5], published_by=row[6], published_version=row[7], edits=edits)


def create(conn: psycopg.Connection, name: str, actor: str, description: str | None = None) -> Draft:
    try:
        with conn.transaction():
            row = conn.execute(f"INSERT INTO drafts.drafts (name, description, created_by) VALUES (%s, %s, %s)"
                               f" RETURNING {_DRAFT_COLUMNS}", (name, description, actor)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DraftError(f"a draft named {name!r} is open already") from None
    except psycopg.errors.CheckViolation:
        raise DraftError(f"draft name {name!r}: letters, digits, '.', '_' and '-', at most 64") from None
    assert row is not None
    return _draft(conn, row)


def get(conn: psycopg.Connection, name: str, lock: bool = False) -> Draft:
    """The open draft of that name (``lock``: held until the caller's transaction ends)."""
    row = conn.execute(f"SELECT {_DRAFT_COLUMNS} FROM drafts.drafts WHERE name = %s AND published_at IS NULL"
                       + (" FOR UPDATE" if lock else ""), (name,)).fetchone()
    if row is None:
        raise DraftNotFound(f"no open draft named {name!r}")
    return _draft(conn, row)


def listing(conn: psycopg.Connection, published: bool = False) -> list[Draft]:
    rows = conn.execute(f"SELECT {_DRAFT_COLUMNS} FROM drafts.drafts"
                        + ("" if published else " WHERE published_at IS NULL") + " ORDER BY created_at, name"
                        ).fetchall()
    return [_draft(conn, r) for r in rows]


def check_edit(edit: Edit) -> None:
    """What can be checked without the database: the target, the key's fields, the prefix."""
    target = TARGETS.get(edit.target)
    if target is None:
        raise DraftError(f"unknown target {edit.target!r}; one of {', '.join(TARGETS)}")
    wanted = {r.field for r in target.refs} | ({"prefix"} if target.rated else set())
    allowed = wanted | ({"effective_at"} if target.rated else set())
    missing = sorted(wanted - set(edit.key))
    if missing:
        raise DraftError(f"{edit.target}: key needs {', '.join(missing)}")
    extra = sorted(set(edit.key) - allowed)
    if extra:
        raise DraftError(f"{edit.target}: key takes {', '.join(sorted(allowed))}, not {', '.join(extra)}")
    if target.rated and not _PREFIX.match(str(edit.key["prefix"])):
        raise DraftError(f"{edit.target}: prefix {edit.key['prefix']!r} is not 1 to 15 digits")
    if edit.remove and not target.removable:
        raise DraftError(f"{edit.target}: rows of this kind are edited, never removed")
    if edit.values is not None and not edit.values:
        raise DraftError(f"{edit.target}: nothing to set")


def add_edit(conn: psycopg.Connection, name: str, edit: Edit, now: datetime, realm: str) -> Edit:
    """Append an edit, once the draft with it applies (every edit in order, on the live tables of
    now, rolled back); an edit that does not apply is refused with the reason."""
    check_edit(edit)
    draft = get(conn, name)
    candidate(conn, draft.edits + (edit,), now, realm)  # raises DraftError naming the problem
    with conn.transaction():
        draft = get(conn, name, lock=True)
        seq = max((e.seq for e in draft.edits), default=0) + 1
        conn.execute('INSERT INTO drafts.edits (draft_id, seq, target, key, "values", remove)'
                     " VALUES (%s, %s, %s, %s, %s, %s)",
                     (draft.id, seq, edit.target, json.dumps(dict(edit.key)),
                      None if edit.values is None else json.dumps(dict(edit.values)), edit.remove))
        conn.execute("UPDATE drafts.drafts SET updated_at = now() WHERE id = %s", (draft.id,))
    return Edit(edit.target, edit.key, edit.values, seq)


def remove_edit(conn: psycopg.Connection, name: str, seq: int) -> None:
    with conn.transaction():
        draft = get(conn, name, lock=True)
        if conn.execute("DELETE FROM drafts.edits WHERE draft_id = %s AND seq = %s",
                        (draft.id, seq)).rowcount == 0:
            raise DraftError(f"draft {name!r} has no edit #{seq}")


def drop(conn: psycopg.Connection, name: str) -> Draft:
    with conn.transaction():
        draft = get(conn, name, lock=True)
        conn.execute("DELETE FROM drafts.drafts WHERE id = %s", (draft.id,))
    return draft


# ------------------------------------------------------------------ applying

def _columns(conn: psycopg.Connection, table: str) -> dict[str, str]:
    """The table's columns and their SQL types, from the catalog."""
    rows = conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
                        " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,)).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}


def _param(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return [_param(v) for v in value]
    return str(value)


def _typed(column_type: str) -> sql.Composable:
    # the type name comes from the catalog, never from the edit
    return sql.SQL("%s::{}").format(sql.SQL(column_type))


def _resolve(conn: psycopg.Connection, ref: Ref, value: Any) -> UUID:
    text = str(value)
    rows = conn.execute(sql.SQL("SELECT id FROM {} WHERE (id::text = %s OR name = %s) AND deleted_at IS NULL").format(
        sql.Identifier(*ref.table.split("."))), (text, text)).fetchall()
    if len(rows) != 1:
        raise DraftError(f"no {ref.field} {text!r}" if not rows else f"{ref.field} {text!r} is ambiguous")
    return UUID(str(rows[0][0]))


def _apply(conn: psycopg.Connection, edit: Edit, now: datetime, seen: dict[object, Any]) -> int:
    """One edit; ``seen`` keeps the catalog's columns and resolved names for the rest of the draft."""
    check_edit(edit)
    target = TARGETS[edit.target]
    table = sql.Identifier(*target.table.split("."))
    if target.table not in seen:
        seen[target.table] = _columns(conn, target.table)
    types: dict[str, str] = seen[target.table]
    keys: dict[str, Any] = {}
    for ref in target.refs:
        name = (ref.table, str(edit.key[ref.field]))
        if name not in seen:
            seen[name] = _resolve(conn, ref, edit.key[ref.field])
        keys[ref.column] = seen[name]
    if target.rated:
        keys["prefix"] = str(edit.key["prefix"])
    moment = edit.key.get("effective_at")
    key_columns = set(keys) | ({"effective_at"} if target.rated else set())
    values = dict(edit.values or {})
    settable = set(types) - _NEVER_SET - key_columns
    unknown = sorted(set(values) - settable)
    if unknown:
        raise DraftError(f"{edit.target}: no column {', '.join(unknown)} to set"
                         f" (settable: {', '.join(sorted(settable))})")

    def where(columns: Mapping[str, Any]) -> tuple[sql.Composable, list[Any]]:
        parts = [sql.SQL("{} = {}").format(sql.Identifier(c), _typed(types[c])) for c in columns]
        return sql.SQL(" AND ").join(parts), [_param(v) for v in columns.values()]

    def assignments() -> tuple[sql.Composable, list[Any]]:
        parts = [sql.SQL("{} = {}").format(sql.Identifier(c), _typed(types[c])) for c in values]
        return sql.SQL(", ").join(parts), [_param(v) for v in values.values()]

    def insert(columns: Mapping[str, Any], conflict: Sequence[str] | None) -> int:
        row = {**columns, **values}
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table, sql.SQL(", ").join(map(sql.Identifier, row)), sql.SQL(", ").join(_typed(types[c]) for c in row))
        if conflict is not None:
            statement += sql.SQL(" ON CONFLICT ({}) DO UPDATE SET {}").format(
                sql.SQL(", ").join(map(sql.Identifier, conflict)),
                sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in values))
        return conn.execute(statement, [_param(v) for v in row.values()]).rowcount

    if target.rated and moment is not None:
        keys["effective_at"] = moment
    condition, params = where(keys)
    if edit.remove:
        removed = conn.execute(sql.SQL("DELETE FROM {} WHERE {}").format(table, condition), params).rowcount
        if removed == 0:
            raise DraftError(f"{edit.target}: {'no rate' if target.rated else 'nothing'} to remove for {edit.key}")
        return removed
    if target.rated:
        if moment is not None:
            return insert(keys, list(keys))
        setting, set_params = assignments()
        in_force = conn.execute(
            sql.SQL("SELECT id FROM {} WHERE {} AND effective_at <= %s AND (ends_at IS NULL OR ends_at > %s)"
                    " ORDER BY effective_at DESC LIMIT 1").format(table, condition), [*params, now, now]).fetchone()
        if in_force is None:
            return insert(keys, None)
        return conn.execute(sql.SQL("UPDATE {} SET {} WHERE id = %s").format(table, setting),
                            [*set_params, in_force[0]]).rowcount
    if target.upsert:
        return insert(keys, list(keys))
    setting, set_params = assignments()
    changed = conn.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(table, setting, condition),
                           [*set_params, *params]).rowcount
    if changed == 0:
        raise DraftError(f"{edit.target}: no row for {edit.key}")
    return changed


def apply_edits(conn: psycopg.Connection, edits: Sequence[Edit], now: datetime) -> None:
    """Apply the edits in order inside the caller's transaction. A refusal (the database's, or
    ours) is a DraftError naming the edit; the caller's transaction is then to be rolled back."""
    seen: dict[object, Any] = {}
    for edit in edits:
        try:
            with conn.transaction():  # a savepoint: a refused statement leaves the transaction usable
                _apply(conn, edit, now, seen)
        except DraftError as exc:
            raise DraftError(f"edit {edit.describe()}: {exc}") from None
        except psycopg.errors.DataError as exc:
            raise DraftError(f"edit {edit.describe()}: {_first_line(exc)}") from None
        except psycopg.errors.IntegrityError as exc:
            raise DraftError(f"edit {edit.describe()}: {_first_line(exc)}") from None


def _first_line(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc)).splitlines()[0]


def candidate(conn: psycopg.Connection, edits: Sequence[Edit], now: datetime, realm: str) -> RoutingSnapshot:
    """The snapshot the live configuration would be with these edits: applied, loaded by the
    publisher's loader and rolled back, all in one repeatable-read transaction."""
    snapshot: RoutingSnapshot | None = None
    with conn.transaction() as tx:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        apply_edits(conn, edits, now)
        snapshot = postgres.load_snapshot(conn, now, realm)
        raise psycopg.Rollback(tx)
    assert snapshot is not None
    return snapshot


@dataclass(frozen=True, slots=True)
class Published:
    draft: Draft
    version: str


def publish(conn: psycopg.Connection, name: str, actor: str, now: datetime, realm: str,
            problems: Callable[[RoutingSnapshot], list[str]],
            audit: Callable[[psycopg.Connection, Draft, str], None]) -> Published:
    """Apply the draft to the live tables in one transaction: its edits, its validation (any
    problem refuses the whole draft and nothing changes), its audit row (``audit``, in the same
    transaction), the draft marked published. The publisher companion is notified on commit."""
    with conn.transaction():
        draft = get(conn, name, lock=True)
        if not draft.edits:
            raise DraftError(f"draft {name!r} has no edits")
        apply_edits(conn, draft.edits, now)
        snapshot = postgres.load_snapshot(conn, now, realm)
        found = problems(snapshot)
        if found:
            raise InvalidDraft(name, found)
        audit(conn, draft, snapshot.version)
        conn.execute("UPDATE drafts.drafts SET published_at = %s, published_by = %s, published_version = %s,"
                     " updated_at = now() WHERE id = %s", (now, actor, snapshot.version, draft.id))
    return Published(draft, snapshot.version)


class InvalidDraft(DraftError):
    def __init__(self, name: str, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"draft {name!r} would make the configuration invalid: {shown}")
