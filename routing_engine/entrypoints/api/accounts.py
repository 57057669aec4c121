"""Accounts: customers, their status and billing terms, the balance and top-ups.

The balance is the sum of the account's ledger (billing.balance_updates); a top-up appends a
``topup`` row. A top-up ``reference`` (e.g. the payment id) is unique: sending the same one
twice is refused with 409, so a retried request cannot credit twice. Changing an account or
its money is admin work; a customer-scoped caller can read its own account and balance.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from routing_engine.entrypoints.api import store, writes
from routing_engine.entrypoints.api.envelope import Envelope, error_responses, not_found, ok, paged
from routing_engine.entrypoints.api.fields import Amount, Ban, CreditLimit, Currency, Cursor, PageLimit, Text, unset
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import ADMIN, READ_OWN, Caller
from routing_engine.entrypoints.api.services import connection
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


class TopupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: Amount
    reference: Text | None = Field(default=None, max_length=100, description="e.g. the payment id; unique")


class Topup(BaseModel):
    id: UUID
    account_id: UUID
    amount: Decimal
    kind: str
    reference: str | None
    created_at: datetime
    balance: Balance


def _balance(conn: psycopg.Connection, account: dict[str, Any]) -> Balance:
    row = conn.execute("SELECT COALESCE(sum(amount), 0) FROM billing.balance_updates WHERE account_id = %s",
                       (account["id"],)).fetchone()
    total = Decimal(row[0]) if row else Decimal(0)
    limit = Decimal(account["credit_limit"])
    available = total if account["billing_type"] == "prepaid" else total + limit
    return Balance(account_id=account["id"], billing_type=account["billing_type"], balance=total,
                   credit_limit=limit, available=available)


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
def get_balance(account_id: UUID, who: Caller = Depends(READ_OWN),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    account = store.fetch(conn, ACCOUNTS, account_id, who.scope)
    if account is None:
        raise not_found("account")
    return ok(who.request_id, _balance(conn, account))


@router.post("/{account_id}/topups", status_code=201, response_model=Envelope[Topup],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_topup(account_id: UUID, body: TopupCreate, who: Caller = Depends(ADMIN),
                 conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        account = writes.locked(conn, who, ACCOUNTS, account_id, "account")
        row = writes.create(conn, who, BALANCE_UPDATES, "balance_update",
                            {"account_id": account_id, "amount": body.amount, "kind": "topup",
                             "reference": body.reference})
        balance = _balance(conn, account)
    return ok(who.request_id, {**row, "balance": balance})
