"""Rate plans: customer price lists (billing.rate_plans) and their rates.

A plan with an ``account_id`` belongs to that account; one without is shared. An account or a
trunk uses a plan through its ``rate_plan_id``. Customers can read the plans that are theirs or
that their account or trunks use; changing prices is carrier work. A plan still used by an
account or trunk cannot be deleted (409).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict

from routing_engine.entrypoints.api import decks, rates, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, not_found, ok, paged
from routing_engine.entrypoints.api.fields import Currency, Cursor, Moment, Name, PageLimit, Prefix, unset
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, READ_OWN, Caller
from routing_engine.entrypoints.api.services import connection
from routing_engine.entrypoints.api.tables import ACCOUNTS, PLAN_RATES, RATE_PLANS, must_exist

router = APIRouter(prefix="/rate-plans", tags=["rate plans"], route_class=PolicyRoute)


class RatePlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = unset()
    account_id: UUID | None = None
    currency: Currency = unset()


class RatePlanCreate(RatePlanChange):
    name: Name


class RatePlan(BaseModel):
    id: UUID
    account_id: UUID | None
    name: str
    currency: str
    created_at: datetime
    updated_at: datetime


def _plan(conn: psycopg.Connection, who: Caller, plan_id: UUID, lock: bool = False) -> dict[str, Any]:
    row = store.fetch(conn, RATE_PLANS, plan_id, who.scope, lock=lock)
    if row is None:
        raise not_found("rate plan")
    return row


@router.get("", response_model=Envelope[list[RatePlan]], responses=error_responses(401, 403, 422))
def list_rate_plans(who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                    name: Name | None = None, account_id: UUID | None = None, limit: PageLimit = 100,
                    cursor: Cursor = None) -> Any:
    rows = store.listing(conn, RATE_PLANS, {"name": name, "account_id": account_id}, who.scope, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("", status_code=201, response_model=Envelope[RatePlan],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_rate_plan(body: RatePlanCreate, who: Caller = Depends(OPERATE),
                     conn: psycopg.Connection = Depends(connection)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        must_exist(conn, ACCOUNTS, values.get("account_id"), "body.account_id")
        row = writes.create(conn, who, RATE_PLANS, "rate_plan", values)
    return ok(who.request_id, row)


@router.get("/{plan_id}", response_model=Envelope[RatePlan], responses=error_responses(401, 403, 404, 422))
def get_rate_plan(plan_id: UUID, who: Caller = Depends(READ_OWN),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _plan(conn, who, plan_id))


@router.patch("/{plan_id}", response_model=Envelope[RatePlan],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_rate_plan(plan_id: UUID, body: RatePlanChange, who: Caller = Depends(OPERATE),
                     conn: psycopg.Connection = Depends(connection)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        before = _plan(conn, who, plan_id, lock=True)
        must_exist(conn, ACCOUNTS, values.get("account_id"), "body.account_id")
        row = writes.change(conn, who, RATE_PLANS, "rate_plan", before, values)
    return ok(who.request_id, row)


@router.delete("/{plan_id}", response_model=Envelope[RatePlan], responses=error_responses(401, 403, 404, 409, 422))
def delete_rate_plan(plan_id: UUID, who: Caller = Depends(OPERATE),
                     conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _plan(conn, who, plan_id, lock=True)
        used = conn.execute(
            "SELECT (SELECT count(*) FROM trunks.trunks WHERE rate_plan_id = %s AND deleted_at IS NULL),"
            " (SELECT count(*) FROM accounts.accounts WHERE rate_plan_id = %s AND deleted_at IS NULL)",
            (plan_id, plan_id)).fetchone()
        if used and (used[0] or used[1]):
            raise ApiError(409, f"the rate plan is used by {used[0]} trunks and {used[1]} accounts")
        writes.delete(conn, who, RATE_PLANS, "rate_plan", before)
    return ok(who.request_id, before)


@router.get("/{plan_id}/rates", response_model=Envelope[list[rates.PlanRate]],
            responses=error_responses(401, 403, 404, 422))
def list_plan_rates(plan_id: UUID, who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                    prefix: Prefix | None = None,
                    starts_with: Prefix | None = Query(None, description="prefixes beginning with these digits"),
                    matching: Prefix | None = Query(None, description="rows whose prefix covers this number"),
                    limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    _plan(conn, who, plan_id)
    rows = store.listing(conn, PLAN_RATES, {"rate_plan_id": plan_id}, None, cursor, limit + 1,
                         rates.prefix_filters(prefix, starts_with, matching))
    return paged(who.request_id, rows, limit)


@router.post("/{plan_id}/rates", status_code=201, response_model=Envelope[rates.PlanRate],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_plan_rate(plan_id: UUID, body: rates.PlanRateCreate, who: Caller = Depends(OPERATE),
                     conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        _plan(conn, who, plan_id, lock=True)
        row = writes.create(conn, who, PLAN_RATES, "rate_plan_rate", {"rate_plan_id": plan_id, **body.row()})
    return ok(who.request_id, row)


@router.delete("/{plan_id}/rates/{rate_id}", response_model=Envelope[rates.PlanRate],
               responses=error_responses(401, 403, 404, 422))
def delete_plan_rate(plan_id: UUID, rate_id: UUID, who: Caller = Depends(OPERATE),
                     conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = writes.locked(conn, who, PLAN_RATES, rate_id, "rate", where={"rate_plan_id": plan_id})
        writes.delete(conn, who, PLAN_RATES, "rate_plan_rate", before)
    return ok(who.request_id, before)


@router.post("/{plan_id}/rates/import", response_model=Envelope[rates.ImportResult],
             responses=error_responses(400, 401, 403, 404, 413, 422))
def import_plan_rates(plan_id: UUID, file: Annotated[UploadFile, File(description="the price list, CSV with a header")],
                      mapping: Annotated[str | None, Form(description=rates.MAPPING_HELP)] = None,
                      mode: Annotated[Literal["replace", "merge"], Form(description=rates.MODE_HELP)] = "replace",
                      effective_at: Annotated[Moment | None, Form(description="for rows without a date")] = None,
                      who: Caller = Depends(OPERATE), conn: psycopg.Connection = Depends(connection)) -> Any:
    """Imports a customer price list from CSV in one transaction (columns as for vendor decks,
    plus initial_increment, subsequent_increment, min_duration, connection_fee)."""
    _plan(conn, who, plan_id)
    return ok(who.request_id, rates.upload(conn, who, decks.PLAN_DECK, plan_id, file, mapping, mode, effective_at))
