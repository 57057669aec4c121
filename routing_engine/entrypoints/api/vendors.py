"""Vendors: the carriers we buy from (routing.providers), their gateways and their rate decks.

A vendor's number translation (format, digits stripped, prefixes, caller translation, LRN
parameters) is set here; see the README for what each does to the Request-URI. A vendor still
in a routing plan cannot be deleted (409): take it out of the plans first. Carrier staff only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, ConfigDict

from routing_engine.entrypoints.api import addresses, decks, rates, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, not_found, ok, paged
from routing_engine.entrypoints.api.fields import (
    Cursor,
    Digits,
    Host,
    Moment,
    Name,
    PageLimit,
    Port,
    Prefix,
    Priority,
    Transport,
    VendorPrefix,
    VendorTechPrefix,
    unset,
)
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE, READ, Caller
from routing_engine.entrypoints.api.services import Services, connection, services
from routing_engine.entrypoints.api.tables import GATEWAYS, VENDOR_RATES, VENDORS

router = APIRouter(prefix="/vendors", tags=["vendors"], route_class=PolicyRoute)

NumberFormat = Literal["e164", "e164_plus", "national"]


class VendorChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = unset()
    enabled: bool = unset()
    number_format: NumberFormat = unset(description="e164 12125551234, e164_plus +12125551234, national 2125551234")
    strip_digits: Digits = unset()
    add_prefix: VendorPrefix = unset()
    tech_prefix: VendorTechPrefix = unset()
    translate_caller: bool = unset()
    send_lrn: bool = unset(description="add ;rn=<LRN>;npdi to the Request-URI (RFC 4694)")


class VendorCreate(VendorChange):
    name: Name


class Vendor(BaseModel):
    id: UUID
    name: str
    enabled: bool
    number_format: str
    strip_digits: int
    add_prefix: str
    tech_prefix: str
    translate_caller: bool
    send_lrn: bool
    created_at: datetime
    updated_at: datetime


class GatewayChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = unset()
    host: Host = unset(description="IP address or DNS name")
    port: Port = unset()
    transport: Transport = unset()
    priority: Priority = unset(description="lower is tried first")
    enabled: bool = unset()
    probe: bool = unset(description="probe with SIP OPTIONS; a gateway that stops answering leaves the routes")


class GatewayCreate(GatewayChange):
    name: Name
    host: Host


class Gateway(BaseModel):
    id: UUID
    provider_id: UUID
    name: str
    host: str
    port: int
    transport: str
    priority: int
    enabled: bool
    probe: bool
    created_at: datetime
    updated_at: datetime


def _vendor(conn: psycopg.Connection, vendor_id: UUID, lock: bool = False) -> dict[str, Any]:
    row = store.fetch(conn, VENDORS, vendor_id, lock=lock)
    if row is None:
        raise not_found("vendor")
    return row


@router.get("", response_model=Envelope[list[Vendor]], responses=error_responses(401, 403, 422))
def list_vendors(who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
                 name: Name | None = None, enabled: bool | None = None, limit: PageLimit = 100,
                 cursor: Cursor = None) -> Any:
    rows = store.listing(conn, VENDORS, {"name": name, "enabled": enabled}, None, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("", status_code=201, response_model=Envelope[Vendor],
             responses=error_responses(400, 401, 403, 409, 413, 422))
def create_vendor(body: VendorCreate, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        row = writes.create(conn, who, VENDORS, "vendor", body.model_dump(exclude_unset=True))
    return ok(who.request_id, row)


@router.get("/{vendor_id}", response_model=Envelope[Vendor], responses=error_responses(401, 403, 404, 422))
def get_vendor(vendor_id: UUID, who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _vendor(conn, vendor_id))


@router.patch("/{vendor_id}", response_model=Envelope[Vendor],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_vendor(vendor_id: UUID, body: VendorChange, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _vendor(conn, vendor_id, lock=True)
        row = writes.change(conn, who, VENDORS, "vendor", before, body.model_dump(exclude_unset=True))
    return ok(who.request_id, row)


@router.delete("/{vendor_id}", response_model=Envelope[Vendor], responses=error_responses(401, 403, 404, 409, 422))
def delete_vendor(vendor_id: UUID, who: Caller = Depends(OPERATE),
                  conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = _vendor(conn, vendor_id, lock=True)
        plans = [r[0] for r in conn.execute(
            "SELECT p.name FROM routing.routing_plan_providers m JOIN routing.routing_plans p"
            " ON p.id = m.routing_plan_id WHERE m.provider_id = %s AND p.deleted_at IS NULL ORDER BY 1", (vendor_id,))]
        if plans:
            raise ApiError(409, f"the vendor is in routing plans {', '.join(plans)}; remove it from them first")
        writes.delete(conn, who, VENDORS, "vendor", before)
    return ok(who.request_id, before)


# ------------------------------------------------------------------ gateways

@router.get("/{vendor_id}/gateways", response_model=Envelope[list[Gateway]],
            responses=error_responses(401, 403, 404, 422))
def list_gateways(vendor_id: UUID, who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
                  limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    _vendor(conn, vendor_id)
    rows = store.listing(conn, GATEWAYS, {"provider_id": vendor_id}, None, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("/{vendor_id}/gateways", status_code=201, response_model=Envelope[Gateway],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_gateway(vendor_id: UUID, body: GatewayCreate, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection), svc: Services = Depends(services)) -> Any:
    """Adds a gateway. Refused when its address is one of the node's own services or no SIP
    peer's (422), or lies in a trunk's ACL (409)."""
    values = body.model_dump(exclude_unset=True)
    addresses.check_gateway(svc.guard, body.host, values.get("port", 5060))
    with conn.transaction():
        _vendor(conn, vendor_id, lock=True)
        addresses.lock(conn)
        addresses.check_gateway_address(conn, body.host)
        row = writes.create(conn, who, GATEWAYS, "gateway",
                            {"provider_id": vendor_id, **body.model_dump(exclude_unset=True)})
    return ok(who.request_id, row)


@router.patch("/{vendor_id}/gateways/{gateway_id}", response_model=Envelope[Gateway],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_gateway(vendor_id: UUID, gateway_id: UUID, body: GatewayChange, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection), svc: Services = Depends(services)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        before = writes.locked(conn, who, GATEWAYS, gateway_id, "gateway", where={"provider_id": vendor_id})
        if "host" in values or "port" in values:
            host, port = str(values.get("host", before["host"])), int(values.get("port") or before["port"])
            addresses.check_gateway(svc.guard, host, port)
            addresses.lock(conn)
            if "host" in values:
                addresses.check_gateway_address(conn, host)
        row = writes.change(conn, who, GATEWAYS, "gateway", before, values)
    return ok(who.request_id, row)


@router.delete("/{vendor_id}/gateways/{gateway_id}", response_model=Envelope[Gateway],
               responses=error_responses(401, 403, 404, 422))
def delete_gateway(vendor_id: UUID, gateway_id: UUID, who: Caller = Depends(OPERATE),
                   conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = writes.locked(conn, who, GATEWAYS, gateway_id, "gateway", where={"provider_id": vendor_id})
        writes.delete(conn, who, GATEWAYS, "gateway", before)
    return ok(who.request_id, before)


# ------------------------------------------------------------------ rate deck

@router.get("/{vendor_id}/rates", response_model=Envelope[list[rates.VendorRate]],
            responses=error_responses(401, 403, 404, 422))
def list_vendor_rates(vendor_id: UUID, who: Caller = Depends(READ), conn: psycopg.Connection = Depends(connection),
               prefix: Prefix | None = None,
               starts_with: Prefix | None = Query(None, description="prefixes beginning with these digits"),
               matching: Prefix | None = Query(None, description="rows whose prefix covers this number"),
               limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    _vendor(conn, vendor_id)
    rows = store.listing(conn, VENDOR_RATES, {"provider_id": vendor_id}, None, cursor, limit + 1,
                         rates.prefix_filters(prefix, starts_with, matching))
    return paged(who.request_id, rows, limit)


@router.post("/{vendor_id}/rates", status_code=201, response_model=Envelope[rates.VendorRate],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_vendor_rate(vendor_id: UUID, body: rates.RateCreate, who: Caller = Depends(OPERATE),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        _vendor(conn, vendor_id, lock=True)
        row = writes.create(conn, who, VENDOR_RATES, "vendor_rate", {"provider_id": vendor_id, **body.row()})
    return ok(who.request_id, row)


@router.delete("/{vendor_id}/rates/{rate_id}", response_model=Envelope[rates.VendorRate],
               responses=error_responses(401, 403, 404, 422))
def delete_vendor_rate(vendor_id: UUID, rate_id: UUID, who: Caller = Depends(OPERATE),
                conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = writes.locked(conn, who, VENDOR_RATES, rate_id, "rate", where={"provider_id": vendor_id})
        writes.delete(conn, who, VENDOR_RATES, "vendor_rate", before)
    return ok(who.request_id, before)


@router.post("/{vendor_id}/rates/import", response_model=Envelope[rates.ImportResult],
             responses=error_responses(400, 401, 403, 404, 413, 422))
def import_vendor_rates(vendor_id: UUID, file: Annotated[UploadFile, File(description="the deck, CSV with a header")],
                 mapping: Annotated[str | None, Form(description=rates.MAPPING_HELP)] = None,
                 mode: Annotated[Literal["replace", "merge"], Form(description=rates.MODE_HELP)] = "replace",
                 effective_at: Annotated[Moment | None, Form(description="for rows without a date")] = None,
                 who: Caller = Depends(OPERATE), conn: psycopg.Connection = Depends(connection)) -> Any:
    """Imports a vendor rate deck from CSV in one transaction (see docs/API.md for the columns).
    Any bad row: 422 listing each line and problem, and nothing changes."""
    _vendor(conn, vendor_id)
    return ok(who.request_id, rates.upload(conn, who, decks.VENDOR_DECK, vendor_id, file, mapping, mode,
                                           effective_at))
