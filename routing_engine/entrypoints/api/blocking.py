"""Blocking: destinations no call may reach (per routing plan or per vendor), and the source
addresses the brute-force defence has blocked (Redis, shared by every node).

A blocked destination names exactly one of ``routing_plan_id`` (calls of that plan are refused
with 403) or ``vendor_id`` (that vendor is skipped for it). IP blocks end by themselves; ops can
list them and lift one early. Carrier staff only.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Self
from uuid import UUID

import psycopg
import redis
from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from routing_engine.adapters.registrations import Defence
from routing_engine.entrypoints.api import audit, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, invalid, not_found, ok, paged
from routing_engine.entrypoints.api.fields import Cursor, PageLimit, Prefix, Text
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, READ, Caller
from routing_engine.entrypoints.api.services import Services, connection, services
from routing_engine.entrypoints.api.tables import BLOCKED, PLANS, VENDORS, must_exist

router = APIRouter(tags=["blocking"], route_class=PolicyRoute)


class BlockedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: Prefix = Field(description="E.164 digits without '+', e.g. 1900")
    reason: Text | None = None
    routing_plan_id: UUID | None = None
    vendor_id: UUID | None = None

    @model_validator(mode="after")
    def _exactly_one_owner(self) -> Self:
        if (self.routing_plan_id is None) == (self.vendor_id is None):
            raise ValueError("give exactly one of routing_plan_id and vendor_id")
        return self


class Blocked(BaseModel):
    id: UUID
    prefix: str
    reason: str | None
    routing_plan_id: UUID | None
    vendor_id: UUID | None
    created_at: datetime
    updated_at: datetime


class IpBlock(BaseModel):
    ip: str
    expires_in_s: int


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in row.items() if k != "provider_id"}, "vendor_id": row["provider_id"]}


@router.get("/blocked-destinations", response_model=Envelope[list[Blocked]], responses=error_responses(401, 403, 422))
def list_blocked(who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
                 routing_plan_id: UUID | None = None, vendor_id: UUID | None = None, prefix: Prefix | None = None,
                 limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    rows = store.listing(conn, BLOCKED, {"routing_plan_id": routing_plan_id, "provider_id": vendor_id,
                                         "prefix": prefix}, None, cursor, limit + 1)
    return paged(who.request_id, [_out(r) for r in rows], limit)


@router.post("/blocked-destinations", status_code=201, response_model=Envelope[Blocked],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_blocked(body: BlockedCreate, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        must_exist(conn, PLANS, body.routing_plan_id, "body.routing_plan_id")
        must_exist(conn, VENDORS, body.vendor_id, "body.vendor_id")
        row = writes.create(conn, who, BLOCKED, "blocked_destination",
                            {"prefix": body.prefix, "reason": body.reason, "routing_plan_id": body.routing_plan_id,
                             "provider_id": body.vendor_id})
    return ok(who.request_id, _out(row))


@router.delete("/blocked-destinations/{blocked_id}", response_model=Envelope[Blocked],
               responses=error_responses(401, 403, 404, 422))
def delete_blocked(blocked_id: UUID, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = writes.locked(conn, who, BLOCKED, blocked_id, "blocked destination")
        writes.delete(conn, who, BLOCKED, "blocked_destination", before)
    return ok(who.request_id, _out(before))


# ------------------------------------------------------------------ IP blocks

def _defence(svc: Services) -> Defence:
    a = svc.settings.auth
    return Defence(svc.redis(), a.failures_before_block, a.failure_window_s, a.block_s)


@router.get("/ip-blocks", response_model=Envelope[list[IpBlock]], responses=error_responses(401, 403, 503))
def list_ip_blocks(who: Caller = Depends(READ), svc: Services = Depends(services)) -> Any:
    try:
        blocks = _defence(svc).blocks()
    except redis.RedisError:
        raise ApiError(503, "Redis is unavailable") from None
    return ok(who.request_id, [{"ip": ip, "expires_in_s": ttl} for ip, ttl in blocks])


@router.delete("/ip-blocks/{ip}", response_model=Envelope[IpBlock], responses=error_responses(401, 403, 404, 422, 503))
def clear_ip_block(ip: Annotated[str, Path(max_length=45, description="the blocked IPv4 or IPv6 address")],
                   who: Caller = Depends(OPERATE), svc: Services = Depends(services),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    """Lifts the block at once (and forgets the address's recent failures)."""
    try:
        normalised = str(ipaddress.ip_address(ip))
    except ValueError:
        raise invalid("path.ip", "not an IP address") from None
    defence = _defence(svc)
    try:
        # the key holds the address as the SIP side wrote it; try it as given and normalised
        found = [(a, int(defence.client.ttl(defence.BLOCK.format(a)))) for a in dict.fromkeys((ip, normalised))]
        blocked = [(a, ttl) for a, ttl in found if ttl > 0]
        if not blocked or not defence.clear(blocked[0][0]):
            raise not_found("block")
    except redis.RedisError:
        raise ApiError(503, "Redis is unavailable") from None
    address, ttl = blocked[0]
    audit.record(conn, who.actor, "delete", "ip_block", address, {"ip": address, "expires_in_s": ttl}, None,
                 request_id=who.request_id)
    return ok(who.request_id, {"ip": address, "expires_in_s": ttl})
