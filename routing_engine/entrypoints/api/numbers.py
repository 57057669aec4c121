"""Numbers: the DID inventory and which trunk each number is assigned to.

A number is assigned to at most one trunk at a time (numbers.number_assignments keeps the
history: an assignment is released, never deleted). Assigning sets the inventory status to
``assigned``; releasing sets it back to ``available``. Customers see the numbers assigned to
them and may move one between their own trunks; adding, retiring and releasing numbers is the
carrier's work.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import BaseModel, ConfigDict, Field

from routing_engine.entrypoints.api import audit, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, invalid, not_found, ok, paged
from routing_engine.entrypoints.api.fields import E164, Cursor, PageLimit, unset
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, OPERATE_OWN, READ_OWN, Caller
from routing_engine.entrypoints.api.services import connection
from routing_engine.entrypoints.api.tables import NUMBERS, TRUNKS

router = APIRouter(prefix="/numbers", tags=["numbers"], route_class=PolicyRoute)

NumberType = Literal["local", "tollfree", "mobile"]
Settable = Literal["available", "reserved", "porting_out"]
Region = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9 _-]*$", description="e.g. a US state")


class NumberCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    e164: E164
    number_type: NumberType = "local"
    region: str | None = Region
    status: Settable = "available"


class NumberChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number_type: NumberType = unset()
    region: str | None = Region
    status: Settable = unset(description="`assigned` is set by assigning the number")


class Assignment(BaseModel):
    trunk_id: UUID
    account_id: UUID
    assigned_at: datetime


class AssignmentSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trunk_id: UUID


class Number(BaseModel):
    id: UUID
    e164: str
    number_type: str
    region: str | None
    status: str
    assignment: Assignment | None
    created_at: datetime
    updated_at: datetime


def _with_assignments(conn: psycopg.Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = [r["id"] for r in rows]
    with conn.cursor(row_factory=dict_row) as cur:
        found = {a["number_id"]: a for a in cur.execute(
            "SELECT number_id, trunk_id, account_id, assigned_at FROM numbers.number_assignments"
            " WHERE number_id = ANY(%s) AND released_at IS NULL", (ids,))}
    return [{**r, "assignment": found.get(r["id"])} for r in rows]


def _number(conn: psycopg.Connection, who: Caller, number_id: UUID, lock: bool = False) -> dict[str, Any]:
    row = store.fetch(conn, NUMBERS, number_id, who.scope, lock=lock)
    if row is None:
        raise not_found("number")
    return _with_assignments(conn, [row])[0]


@router.get("", response_model=Envelope[list[Number]], responses=error_responses(401, 403, 422))
def list_numbers(who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                 status: Literal["available", "assigned", "reserved", "porting_out", "retired"] | None = None,
                 starts_with: str | None = Query(None, pattern=r"^\+[0-9]{1,15}$", description="e.g. +1212"),
                 trunk_id: UUID | None = None, account_id: UUID | None = None,
                 limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    extra: list[tuple[str, list[Any]]] = []
    if starts_with:
        extra.append(("e164 LIKE %s", [starts_with + "%"]))
    for column, value in (("trunk_id", trunk_id), ("account_id", account_id)):
        if value is not None:
            extra.append((f"id IN (SELECT number_id FROM numbers.number_assignments WHERE released_at IS NULL"
                          f" AND {column} = %s)", [value]))
    rows = store.listing(conn, NUMBERS, {"status": status}, who.scope, cursor, limit + 1, extra)
    return paged(who.request_id, _with_assignments(conn, rows), limit)


@router.post("", status_code=201, response_model=Envelope[Number],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_number(body: NumberCreate, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        row = writes.create(conn, who, NUMBERS, "number", body.model_dump())
    return ok(who.request_id, {**row, "assignment": None})


@router.get("/{number_id}", response_model=Envelope[Number], responses=error_responses(401, 403, 404, 422))
def get_number(number_id: UUID, who: Caller = Depends(READ_OWN),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _number(conn, who, number_id))


@router.patch("/{number_id}", response_model=Envelope[Number],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_number(number_id: UUID, body: NumberChange, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        before = _number(conn, who, number_id, lock=True)
        if "status" in values and before["assignment"] is not None:
            raise ApiError(409, "the number is assigned; release it before changing its status")
        assignment = before.pop("assignment")
        row = writes.change(conn, who, NUMBERS, "number", before, values)
    return ok(who.request_id, {**row, "assignment": assignment})


@router.delete("/{number_id}", response_model=Envelope[Number], responses=error_responses(401, 403, 404, 409, 422))
def retire_number(number_id: UUID, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    """Retires the number (kept in the inventory's history, no longer listed)."""
    with conn.transaction():
        before = _number(conn, who, number_id, lock=True)
        if before.pop("assignment") is not None:
            raise ApiError(409, "the number is assigned; release it first")
        conn.execute("UPDATE numbers.number_inventory SET status = 'retired' WHERE id = %s", (number_id,))
        writes.delete(conn, who, NUMBERS, "number", before)
    return ok(who.request_id, {**before, "status": "retired", "assignment": None})


@router.put("/{number_id}/assignment", response_model=Envelope[Number],
            responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def assign_number(number_id: UUID, body: AssignmentSet, who: Caller = Depends(OPERATE_OWN),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    """Assigns the number to a trunk (moving it if it is assigned elsewhere)."""
    with conn.transaction():
        before = _number(conn, who, number_id, lock=True)
        trunk = store.fetch(conn, TRUNKS, body.trunk_id, who.scope)
        if trunk is None:
            raise invalid("body.trunk_id", f"no such trunk {body.trunk_id}")
        current = before["assignment"]
        if current is not None and current["trunk_id"] == body.trunk_id:
            return ok(who.request_id, before)
        if before["status"] not in ("available", "assigned", "reserved"):
            raise ApiError(409, f"a number in status {before['status']!r} cannot be assigned")
        conn.execute("UPDATE numbers.number_assignments SET released_at = now()"
                     " WHERE number_id = %s AND released_at IS NULL", (number_id,))
        conn.execute("INSERT INTO numbers.number_assignments (number_id, account_id, trunk_id) VALUES (%s, %s, %s)",
                     (number_id, trunk["account_id"], body.trunk_id))
        conn.execute("UPDATE numbers.number_inventory SET status = 'assigned' WHERE id = %s", (number_id,))
        after = _number(conn, who, number_id)
        audit.record(conn, who.actor, "assign", "number", number_id, current, after["assignment"],
                     trunk["account_id"], who.request_id)
    return ok(who.request_id, after)


@router.delete("/{number_id}/assignment", response_model=Envelope[Number],
               responses=error_responses(401, 403, 404, 422))
def release_number(number_id: UUID, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _number(conn, who, number_id, lock=True)
        current = before["assignment"]
        if current is None:
            raise not_found("assignment")
        conn.execute("UPDATE numbers.number_assignments SET released_at = now()"
                     " WHERE number_id = %s AND released_at IS NULL", (number_id,))
        conn.execute("UPDATE numbers.number_inventory SET status = 'available' WHERE id = %s", (number_id,))
        after = _number(conn, who, number_id)
        audit.record(conn, who.actor, "release", "number", number_id, current, None, current["account_id"],
                     who.request_id)
    return ok(who.request_id, after)
