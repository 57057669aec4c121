"""CDRs: search the call records (cdr.cdrs) by time range, account, trunk, number and Call-ID.

Newest first, paginated with an opaque cursor (``meta.page.next_cursor``). The range is at
most 31 days (the table is partitioned by day; a bounded range reads bounded partitions),
default the last 24 hours. Customer-scoped callers see their own account's calls, without
the carrier's side: vendor, gateway, vendor cost, margin, attempts and routing trace are null.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Query
from psycopg.rows import dict_row
from pydantic import AwareDatetime, BaseModel

from routing_engine.entrypoints.api.envelope import ApiError, Envelope, FieldError, error_responses, invalid, paged
from routing_engine.entrypoints.api.fields import PageLimit
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import READ_OWN, Caller
from routing_engine.entrypoints.api.services import connection

router = APIRouter(prefix="/cdrs", tags=["cdrs"], route_class=PolicyRoute)

MAX_RANGE = timedelta(days=31)
CARRIER_ONLY = ("node", "vendor_id", "gateway", "vendor_rate", "vendor_cost", "margin", "attempts", "trace")
_COLUMNS = ("cdr_id, call_id, node, direction, account_id, trunk_id, provider_id AS vendor_id, gateway, from_raw,"
            " to_raw, from_e164, to_e164, invite_at, answer_at, end_at, duration_s, billable_s, sip_code, sip_reason,"
            " lrn, jurisdiction, customer_rate, customer_price, vendor_rate, vendor_cost, margin, attempts, trace")


class Cdr(BaseModel):
    cdr_id: UUID
    call_id: str
    node: str | None
    direction: str
    account_id: UUID | None
    trunk_id: UUID | None
    vendor_id: UUID | None
    gateway: str | None
    from_raw: str | None
    to_raw: str | None
    from_e164: str | None
    to_e164: str | None
    invite_at: datetime
    answer_at: datetime | None
    end_at: datetime | None
    duration_s: int
    billable_s: int
    sip_code: int
    sip_reason: str | None
    lrn: str | None
    jurisdiction: str | None
    customer_rate: Decimal | None
    customer_price: Decimal | None
    vendor_rate: Decimal | None
    vendor_cost: Decimal | None
    margin: Decimal | None
    attempts: Any = None
    trace: Any = None


def _cursor(row: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(f"{row['invite_at'].isoformat()}|{row['cdr_id']}".encode()).decode()


def _after(cursor: str) -> tuple[datetime, UUID]:
    try:
        at, _, cdr_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), UUID(cdr_id)
    except ValueError:
        raise invalid("query.cursor", "not a cursor from a previous page") from None


@router.get("", response_model=Envelope[list[Cdr]], responses=error_responses(400, 401, 403, 422))
def search_cdrs(who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                since: Annotated[AwareDatetime | None, Query(description="default: 24 hours before `until`")] = None,
                until: Annotated[AwareDatetime | None, Query(description="default: now (exclusive)")] = None,
                account_id: UUID | None = None, trunk_id: UUID | None = None,
                number: Annotated[str | None, Query(pattern=r"^\+?[1-9][0-9]{6,14}$",
                                                    description="calling or called number, E.164")] = None,
                call_id: Annotated[str | None, Query(max_length=255, pattern=r"^[^\x00-\x1f]+$")] = None,
                limit: PageLimit = 100,
                cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_=-]+$")] = None) -> Any:
    end = until or datetime.now(UTC)
    try:
        start = since or end - timedelta(hours=24)
    except OverflowError:  # until within a day of year 1: no default start exists
        message = "too early for the default range: give since as well, or a later until"
        raise ApiError(400, f"query.until: {message}", [FieldError(field="query.until", message=message)]) from None
    if start >= end:
        raise invalid("query.since", "must be before until")
    if end - start > MAX_RANGE:
        raise invalid("query.since", "the range is at most 31 days")
    conds = ["invite_at >= %s", "invite_at < %s"]
    params: list[Any] = [start, end]
    for column, value in (("account_id", who.scope), ("account_id", account_id), ("trunk_id", trunk_id),
                          ("call_id", call_id)):
        if value is not None:
            conds.append(f"{column} = %s")
            params.append(value)
    if number is not None:
        e164 = "+" + number.lstrip("+")
        conds.append("(from_e164 = %s OR to_e164 = %s)")
        params += [e164, e164]
    if cursor is not None:
        conds.append("(invite_at, cdr_id) < (%s, %s)")
        params += list(_after(cursor))
    query = (f"SELECT {_COLUMNS} FROM cdr.cdrs WHERE {' AND '.join(conds)}"
             " ORDER BY invite_at DESC, cdr_id DESC LIMIT %s")
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query, [*params, limit + 1]).fetchall()
    if who.scope is not None:
        rows = [{**r, **dict.fromkeys(CARRIER_ONLY)} for r in rows]
    return paged(who.request_id, rows, limit, _cursor)
