"""Routing plans: the strategy that orders vendors, failover rules, margin rules, and members.

``failover_codes`` are the final responses that move a call to the next vendor; codes that say
the callee was reached or the caller gave up (404, 486, 487, 600, 603, 604, 606) never do, so
listing one is refused rather than silently ignored. A plan still used by a trunk or an
account cannot be deleted (409). Carrier staff only.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends
from psycopg.rows import dict_row
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from routing_engine.domain.snapshot import NEVER_FAILOVER
from routing_engine.entrypoints.api import audit, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, not_found, ok, paged
from routing_engine.entrypoints.api.fields import (
    Cursor,
    Margin,
    Name,
    PageLimit,
    Priority,
    Strategy,
    Text,
    Weight,
    unset,
)
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, READ, Caller
from routing_engine.entrypoints.api.services import connection
from routing_engine.entrypoints.api.tables import PLAN_VENDORS, PLANS, VENDORS


def _codes(codes: list[int]) -> list[int]:
    never = sorted(set(codes) & NEVER_FAILOVER)
    if never:
        raise ValueError(f"{never} never fail over (the callee was reached or the caller gave up)")
    return sorted(set(codes))


FailoverCodes = Annotated[list[Annotated[int, Field(ge=400, le=699)]], Field(max_length=40),
                          AfterValidator(_codes)]


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = unset()
    strategy: Strategy = unset()
    description: Text | None = None
    failover_codes: FailoverCodes = unset(description="default 408, 500, 502, 503, 504")
    max_attempts: int = unset(ge=1, le=10)
    attempt_timeout_ms: int | None = Field(default=None, ge=200, le=60000,
                                           description="null: the proxy's sip.fr_timeout_ms")
    min_margin: Margin = unset(description="per minute: a vendor may cost at most the customer's price minus this")
    allow_negative_margin: bool = unset()


class PlanCreate(PlanChange):
    name: Name


class Plan(BaseModel):
    id: UUID
    name: str
    strategy: str
    description: str | None
    failover_codes: list[int]
    max_attempts: int
    attempt_timeout_ms: int | None
    min_margin: Decimal
    allow_negative_margin: bool
    created_at: datetime
    updated_at: datetime


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    priority: Priority = Field(default=0, description="lower first (priority strategy, and ties)")
    weight: Weight = Field(default=1, description="share of calls (weighted strategy)")
    enabled: bool = True


class Member(BaseModel):
    id: UUID
    routing_plan_id: UUID
    provider_id: UUID
    vendor_name: str
    priority: int
    weight: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


router = APIRouter(prefix="/routing-plans", tags=["routing plans"], route_class=PolicyRoute)


def _plan(conn: psycopg.Connection, plan_id: UUID, lock: bool = False) -> dict[str, Any]:
    row = store.fetch(conn, PLANS, plan_id, lock=lock)
    if row is None:
        raise not_found("routing plan")
    return row


@router.get("", response_model=Envelope[list[Plan]], responses=error_responses(401, 403, 422))
def list_routing_plans(who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
               name: Name | None = None, limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    rows = store.listing(conn, PLANS, {"name": name}, None, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("", status_code=201, response_model=Envelope[Plan],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_routing_plan(body: PlanCreate, who: Caller = Depends(OPERATE),
                        conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        row = writes.create(conn, who, PLANS, "routing_plan", body.model_dump(exclude_unset=True))
    return ok(who.request_id, row)


@router.get("/{plan_id}", response_model=Envelope[Plan], responses=error_responses(401, 403, 404, 422))
def get_routing_plan(plan_id: UUID, who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _plan(conn, plan_id))


@router.patch("/{plan_id}", response_model=Envelope[Plan], responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_routing_plan(plan_id: UUID, body: PlanChange, who: Caller = Depends(OPERATE),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _plan(conn, plan_id, lock=True)
        row = writes.change(conn, who, PLANS, "routing_plan", before, body.model_dump(exclude_unset=True))
    return ok(who.request_id, row)


@router.delete("/{plan_id}", response_model=Envelope[Plan], responses=error_responses(401, 403, 404, 409, 422))
def delete_routing_plan(plan_id: UUID, who: Caller = Depends(OPERATE),
                        conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _plan(conn, plan_id, lock=True)
        used = conn.execute(
            "SELECT (SELECT count(*) FROM trunks.trunks WHERE routing_plan_id = %s AND deleted_at IS NULL),"
            " (SELECT count(*) FROM accounts.accounts WHERE routing_plan_id = %s AND deleted_at IS NULL)",
            (plan_id, plan_id)).fetchone()
        if used and (used[0] or used[1]):
            raise ApiError(409, f"the plan is used by {used[0]} trunks and {used[1]} accounts")
        writes.delete(conn, who, PLANS, "routing_plan", before)
    return ok(who.request_id, before)


# ------------------------------------------------------------------ members

_MEMBERS = ("SELECT m.id, m.routing_plan_id, m.provider_id, v.name AS vendor_name, m.priority, m.weight,"
            " m.enabled, m.created_at, m.updated_at FROM routing.routing_plan_providers m"
            " JOIN routing.providers v ON v.id = m.provider_id")


def _member(conn: psycopg.Connection, plan_id: UUID, vendor_id: UUID) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_MEMBERS + " WHERE m.routing_plan_id = %s AND m.provider_id = %s",
                           (plan_id, vendor_id)).fetchone()


@router.get("/{plan_id}/vendors", response_model=Envelope[list[Member]], responses=error_responses(401, 403, 404, 422))
def list_plan_vendors(plan_id: UUID, who: Caller = Depends(READ),
                      conn: psycopg.Connection = Depends(connection)) -> Any:
    _plan(conn, plan_id)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_MEMBERS + " WHERE m.routing_plan_id = %s AND v.deleted_at IS NULL"
                           " ORDER BY m.priority, v.name", (plan_id,)).fetchall()
    return ok(who.request_id, rows)


@router.put("/{plan_id}/vendors/{vendor_id}", response_model=Envelope[Member],
            responses=error_responses(400, 401, 403, 404, 413, 422))
def set_plan_vendor(plan_id: UUID, vendor_id: UUID, body: MemberSet, who: Caller = Depends(OPERATE),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    """Puts the vendor in the plan, or changes its priority, weight or enabled flag."""
    with conn.transaction():
        _plan(conn, plan_id, lock=True)
        if store.fetch(conn, VENDORS, vendor_id) is None:
            raise not_found("vendor")
        before = _member(conn, plan_id, vendor_id)
        conn.execute(
            "INSERT INTO routing.routing_plan_providers (routing_plan_id, provider_id, priority, weight, enabled)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (routing_plan_id, provider_id) DO UPDATE SET"
            " priority = EXCLUDED.priority, weight = EXCLUDED.weight, enabled = EXCLUDED.enabled",
            (plan_id, vendor_id, body.priority, body.weight, body.enabled))
        after = _member(conn, plan_id, vendor_id)
        assert after is not None
        audit.record(conn, who.actor, "update" if before else "create", "routing_plan_vendor", after["id"],
                     before, after, request_id=who.request_id)
    return ok(who.request_id, after)


@router.delete("/{plan_id}/vendors/{vendor_id}", response_model=Envelope[Member],
               responses=error_responses(401, 403, 404, 422))
def delete_plan_vendor(plan_id: UUID, vendor_id: UUID, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        _plan(conn, plan_id, lock=True)
        before = _member(conn, plan_id, vendor_id)
        if before is None:
            raise not_found("plan member")
        writes.delete(conn, who, PLAN_VENDORS, "routing_plan_vendor", before)
    return ok(who.request_id, before)
