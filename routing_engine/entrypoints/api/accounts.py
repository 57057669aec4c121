"""Accounts: customers, their status and billing terms, the balance, top-ups and adjustments.

The balance is the sum of the account's ledger (billing.balance_updates). A top-up, an
adjustment or a refund takes the one money path (adapters/ledger.post): in one transaction the
ledger row and its audit record are written, then the live balance that call admission reads
(Redis) is moved together with its ledger stream entry (one script), then the transaction
commits. So the next call sees the money at once, and `warp ledger check` stays at zero (the
companion's copy of the stream entry into the ledger is a no-op: same row).

A ``reference`` (e.g. the payment id) is unique per kind: sending the same one twice is refused
with 409, so a retried request cannot credit twice. Without one, the request gets a reference
of its own (``api-<row id>``) and a retry is a second top-up.

Redis down (or not answering in time): 503, and nothing was done — the ledger row and audit
record are rolled back. Retry with the same reference: if the first attempt did reach Redis
after all (its answer was lost), the retry is refused with 409 and the money is there once.

Changing an account or its money is admin work; a customer-scoped caller can read its own
account and balance.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID, uuid4

import psycopg
import redis
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from routing_engine.adapters import ledger
from routing_engine.adapters.money import Duplicate, Wallet
from routing_engine.domain.rating import from_micros, to_micros
from routing_engine.entrypoints.api import store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, invalid, not_found, ok, paged
from routing_engine.entrypoints.api.fields import (
    Amount,
    Ban,
    CreditLimit,
    Currency,
    Cursor,
    Moment,
    PageLimit,
    Text,
    unset,
)
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import ADMIN, READ_OWN, Caller
from routing_engine.entrypoints.api.services import connection, services
from routing_engine.entrypoints.api.tables import ACCOUNTS, BALANCE_UPDATES, PLANS, RATE_PLANS, must_exist

router = APIRouter(prefix="/accounts", tags=["accounts"], route_class=PolicyRoute)

Status = Literal["active", "suspended", "testing", "closed"]
BillingType = Literal["prepaid", "postpaid"]


class AccountCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ban: Ban
    name: Text = Field(min_length=1)
    status: Status = "active"
    status_reason: Text | None = None
    billing_type: BillingType = "postpaid"
    credit_limit: CreditLimit = Decimal(0)
    currency: Currency = "USD"
    routing_plan_id: UUID | None = None
    rate_plan_id: UUID | None = None
    cps_limit: int | None = Field(default=None, ge=1, le=100000)
    max_concurrent: int | None = Field(default=None, ge=1, le=1000000)


class AccountChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Text = unset()
    status: Status = unset()
    status_reason: Text | None = None
    billing_type: BillingType = unset()
    credit_limit: CreditLimit = unset()
    routing_plan_id: UUID | None = None
    rate_plan_id: UUID | None = None
    cps_limit: int | None = Field(default=None, ge=1, le=100000)
    max_concurrent: int | None = Field(default=None, ge=1, le=1000000)


class Account(BaseModel):
    id: UUID
    ban: str
    name: str
    status: str
    status_reason: str | None
    billing_type: str
    credit_limit: Decimal
    currency: str
    routing_plan_id: UUID | None
    rate_plan_id: UUID | None
    cps_limit: int | None
    max_concurrent: int | None
    created_at: datetime
    updated_at: datetime


class Balance(BaseModel):
    account_id: UUID
    billing_type: str
    balance: Decimal = Field(description="sum of the ledger")
    credit_limit: Decimal
    available: Decimal = Field(description="prepaid: the balance; postpaid: balance + credit limit")
    live: Decimal | None = Field(default=None, description="the live balance call admission reads (Redis): the"
                                 " ledger plus changes on their way to it; null when not loaded or unavailable")


class TopupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    reference: Text | None = Field(default=None, max_length=100, description="e.g. the payment id; unique")


class AdjustmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Decimal = Field(max_digits=14, decimal_places=6, allow_inf_nan=False,
                            description="signed: a credit is positive, a debit negative; a refund is a credit")
    kind: Literal["adjustment", "refund"] = "adjustment"
    reference: Text = Field(min_length=1, max_length=100, description="e.g. the ticket id; unique per kind")


class RerateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: Moment = Field(alias="from", description="calls that started at or after this moment")
    end: Moment = Field(alias="to", description="... and before this one")
    dry_run: bool = Field(default=False, description="report what would be posted, post nothing")


class Rerated(BaseModel):
    calls: int = Field(description="charged calls of the account in the period")
    adjusted: int = Field(description="adjustments posted (or, in a dry run, that would be)")
    unchanged: int = Field(description="calls already charged at the corrected price")
    skipped: list[str] = Field(description="calls that cannot be priced now, each with why")
    total: Decimal = Field(description="sum of the adjustments: positive, credited to the account")


class Topup(BaseModel):
    id: UUID
    account_id: UUID
    amount: Decimal
    kind: str
    reference: str | None
    created_at: datetime
    balance: Balance


def _balance(conn: psycopg.Connection, account: dict[str, Any], live_micros: int | None = None) -> Balance:
    row = conn.execute("SELECT COALESCE(sum(amount), 0) FROM billing.balance_updates WHERE account_id = %s",
                       (account["id"],)).fetchone()
    total = Decimal(row[0]) if row else Decimal(0)
    limit = Decimal(account["credit_limit"])
    available = total if account["billing_type"] == "prepaid" else total + limit
    return Balance(account_id=account["id"], billing_type=account["billing_type"], balance=total,
                   credit_limit=limit, available=available,
                   live=from_micros(live_micros) if live_micros is not None else None)


def _live(request: Request, account_id: UUID) -> int | None:
    try:
        return Wallet(services(request).redis()).balance(account_id)
    except redis.RedisError:
        return None


def _post(request: Request, conn: psycopg.Connection, who: Caller, account_id: UUID, amount: Decimal,
          kind: str, reference: str | None) -> Any:
    """A balance change through the one money path (see the module's text)."""
    with conn.transaction():
        account = writes.locked(conn, who, ACCOUNTS, account_id, "account")
        row_id = uuid4()
        row = writes.create(conn, who, BALANCE_UPDATES, "balance_update",
                            {"id": row_id, "account_id": account_id, "amount": amount, "kind": kind,
                             "reference": reference or f"api-{row_id}"})
        try:
            posted = ledger.post(conn, Wallet(services(request).redis()), account_id, to_micros(amount), kind,
                                 row["reference"], row["created_at"], entry_id=row_id)
        except Duplicate as exc:
            raise ApiError(409, f"already posted: {exc}") from exc
        except redis.RedisError as exc:
            raise ApiError(503, "the live balance (Redis) is unavailable: nothing was done; retry with the same"
                                " reference") from exc
        balance = _balance(conn, account, posted.balance_micros)
    return {**row, "balance": balance}


def _check_refs(conn: psycopg.Connection, values: dict[str, Any]) -> None:
    must_exist(conn, PLANS, values.get("routing_plan_id"), "body.routing_plan_id")
    must_exist(conn, RATE_PLANS, values.get("rate_plan_id"), "body.rate_plan_id")


@router.get("", response_model=Envelope[list[Account]], responses=error_responses(401, 403, 422))
def list_accounts(who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                  status: Status | None = None, ban: Ban | None = None, limit: PageLimit = 100,
                  cursor: Cursor = None) -> Any:
    rows = store.listing(conn, ACCOUNTS, {"status": status, "ban": ban}, who.scope, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("", status_code=201, response_model=Envelope[Account],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_account(body: AccountCreate, who: Caller = Depends(ADMIN),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    values = body.model_dump()
    with conn.transaction():
        _check_refs(conn, values)
        row = writes.create(conn, who, ACCOUNTS, "account", values)
    return ok(who.request_id, row)


@router.get("/{account_id}", response_model=Envelope[Account], responses=error_responses(401, 403, 404, 422))
def get_account(account_id: UUID, who: Caller = Depends(READ_OWN),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    row = store.fetch(conn, ACCOUNTS, account_id, who.scope)
    if row is None:
        raise not_found("account")
    return ok(who.request_id, row)


@router.patch("/{account_id}", response_model=Envelope[Account],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_account(account_id: UUID, body: AccountChange, who: Caller = Depends(ADMIN),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        before = writes.locked(conn, who, ACCOUNTS, account_id, "account")
        _check_refs(conn, values)
        row = writes.change(conn, who, ACCOUNTS, "account", before, values)
    return ok(who.request_id, row)


@router.get("/{account_id}/balance", response_model=Envelope[Balance], responses=error_responses(401, 403, 404, 422))
def get_balance(account_id: UUID, request: Request, who: Caller = Depends(READ_OWN),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    account = store.fetch(conn, ACCOUNTS, account_id, who.scope)
    if account is None:
        raise not_found("account")
    return ok(who.request_id, _balance(conn, account, _live(request, account_id)))


@router.post("/{account_id}/topups", status_code=201, response_model=Envelope[Topup],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503))
def create_topup(account_id: UUID, body: TopupCreate, request: Request, who: Caller = Depends(ADMIN),
                 conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _post(request, conn, who, account_id, body.amount, "topup", body.reference))


@router.post("/{account_id}/adjustments", status_code=201, response_model=Envelope[Topup],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422, 503))
def create_adjustment(account_id: UUID, body: AdjustmentCreate, request: Request, who: Caller = Depends(ADMIN),
                      conn: psycopg.Connection = Depends(connection)) -> Any:
    """An adjustment (signed) or a refund (a credit), through the same money path as a top-up."""
    if body.amount == 0 or (body.kind == "refund" and body.amount < 0):
        raise invalid("body.amount", "a refund is a positive credit" if body.kind == "refund" else "must not be 0")
    return ok(who.request_id, _post(request, conn, who, account_id, body.amount, body.kind, body.reference))


@router.post("/{account_id}/rerating", response_model=Envelope[Rerated],
             responses=error_responses(400, 401, 403, 404, 413, 422, 503))
def rerate_account(account_id: UUID, body: RerateCreate, request: Request, who: Caller = Depends(ADMIN),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    """Reprice the account's charged calls of a period with the prices in force now, and post
    each call's difference as an adjustment through the one money path (`warp rerate`). Running
    it again posts nothing new."""
    if store.fetch(conn, ACCOUNTS, account_id, who.scope) is None:
        raise not_found("account")
    if body.end <= body.start:
        raise invalid("body.to", "must be after body.from")
    settings = services(request).settings
    try:
        report = ledger.rerate(settings.database_url, services(request).redis(), body.start, body.end, account_id,
                               realm=settings.auth.realm, dry_run=body.dry_run)
    except redis.RedisError as exc:
        raise ApiError(503, "the live balance (Redis) is unavailable: rerating stopped; what was posted stays"
                            " posted, and running it again posts the rest") from exc
    return ok(who.request_id, {"calls": report.calls, "adjusted": report.adjusted, "unchanged": report.unchanged,
                               "skipped": report.skipped, "total": report.total})
