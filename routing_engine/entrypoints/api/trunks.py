"""Trunks: customer SIP trunks, their IP ACL entries and their digest credentials.

Customers (customer-scoped callers) manage their own trunks, with two limits: the routing plan,
rate plan and call limits are the carrier's to set, and an ACL entry may not overlap another
account's addresses (ACL matching prefers the most specific entry, so an overlapping /32 would
capture another customer's calls). Carrier staff may share an address between accounts only
when every trunk on it has a tech prefix that tells its calls apart (``validation``); nobody may
put a vendor gateway's address in an ACL, and an inbound URI may not be one of the node's own
services (``addresses``).

Passwords are write-only: ``PUT .../credentials/{username}`` stores MD5 and SHA-256 HA1 (the only
form the SIP side needs) and nothing readable comes back.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, ConfigDict, Field

from routing_engine.domain.credentials import ha1_md5, ha1_sha256
from routing_engine.domain.validation import AclClaim
from routing_engine.entrypoints.api import addresses, audit, store, writes
from routing_engine.entrypoints.api.envelope import ApiError, Envelope, error_responses, invalid, not_found, ok, paged
from routing_engine.entrypoints.api.fields import (
    Cidr,
    Codec,
    Cursor,
    DialPrefix,
    DigestUser,
    Digits,
    Name,
    PageLimit,
    Password,
    Port,
    SipUri,
    TechPrefix,
    Text,
    Transport,
    unset,
)
from routing_engine.entrypoints.api.openapi import PolicyRoute
from routing_engine.entrypoints.api.principals import OPERATE_OWN, READ_OWN, Caller
from routing_engine.entrypoints.api.services import Services, connection, services
from routing_engine.entrypoints.api.tables import ACCOUNTS, ACL, CREDENTIALS, PLANS, RATE_PLANS, TRUNKS, must_exist

router = APIRouter(prefix="/trunks", tags=["trunks"], route_class=PolicyRoute)

Direction = Literal["inbound", "outbound", "both"]
AuthMode = Literal["acl", "digest", "both"]
# the carrier's to set: routing, prices, limits, and what the trunk's calls cost in media relay
# and topology hiding
STAFF_ONLY = ("routing_plan_id", "rate_plan_id", "cps_limit", "max_concurrent", "media_anchor", "media_codecs",
              "media_failure", "topology_hiding")
MediaAnchor = Literal["always", "never", "nat"]
MediaFailure = Literal["carry", "refuse"]
TrunkId = Path(description="trunk id")


class TrunkChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Name = unset()
    direction: Direction = unset()
    routing_plan_id: UUID | None = None
    rate_plan_id: UUID | None = None
    tech_prefix: TechPrefix | None = Field(default=None, description="e.g. 1234#; unique across trunks")
    enabled: bool = unset()
    strip_digits: Digits = unset()
    add_prefix: DialPrefix = unset()
    auth_mode: AuthMode = unset()
    inbound_uri: SipUri | None = Field(default=None, description="e.g. sip:203.0.113.5:5060")
    max_contacts: int = unset(ge=1, le=100)
    cps_limit: int | None = Field(default=None, ge=1, le=100000)
    max_concurrent: int | None = Field(default=None, ge=1, le=1000000)
    media_anchor: MediaAnchor = unset(description="media through rtpengine: always, never, or when behind NAT")
    media_codecs: list[Codec] = unset(max_length=32, description="allowed codecs (rtpengine encoding names); "
                                      "others are stripped; empty: all")
    media_failure: MediaFailure = unset(description="rtpengine unavailable: carry the call unanchored, or refuse "
                                        "it with 503")
    topology_hiding: bool = unset(description="hide each side's Via, Record-Route and Contact from the other")


class TrunkCreate(TrunkChange):
    account_id: UUID | None = Field(default=None, description="required unless the caller is customer-scoped")
    name: Name
    direction: Direction = "both"
    enabled: bool = True
    strip_digits: Digits = 0
    add_prefix: DialPrefix = ""
    auth_mode: AuthMode = "acl"
    max_contacts: int = Field(default=5, ge=1, le=100)
    media_anchor: MediaAnchor = "never"
    media_codecs: list[Codec] = Field(default_factory=list, max_length=32)
    media_failure: MediaFailure = "carry"
    topology_hiding: bool = True


class Trunk(BaseModel):
    id: UUID
    account_id: UUID
    name: str
    direction: str
    routing_plan_id: UUID | None
    rate_plan_id: UUID | None
    tech_prefix: str | None
    enabled: bool
    strip_digits: int
    add_prefix: str
    auth_mode: str
    inbound_uri: str | None
    max_contacts: int
    cps_limit: int | None
    max_concurrent: int | None
    media_anchor: str
    media_codecs: list[str]
    media_failure: str
    topology_hiding: bool
    created_at: datetime
    updated_at: datetime


class AclCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cidr: Cidr = Field(description="IPv4 or IPv6 network, e.g. 203.0.113.0/28 (a single address: /32)")
    port: Port | None = Field(default=None, description="null: any source port")
    transport: Transport | None = Field(default=None, description="null: any transport")
    description: Text | None = None


class AclEntry(BaseModel):
    id: UUID
    account_id: UUID
    trunk_id: UUID
    cidr: str
    port: int | None
    transport: str | None
    description: str | None
    created_at: datetime
    updated_at: datetime


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: Password = Field(description="write-only; stored as HA1 (MD5 and SHA-256) only")


class Credential(BaseModel):
    id: UUID
    account_id: UUID
    trunk_id: UUID
    username: str
    realm: str
    created_at: datetime
    updated_at: datetime


def _trunk(conn: psycopg.Connection, who: Caller, trunk_id: UUID, lock: bool = False) -> dict[str, Any]:
    row = store.fetch(conn, TRUNKS, trunk_id, who.scope, lock=lock)
    if row is None:
        raise not_found("trunk")
    return row


def _check(conn: psycopg.Connection, who: Caller, values: dict[str, Any], svc: Services) -> None:
    if who.scope is not None:
        staff = [f for f in STAFF_ONLY if f in values]
        if staff:
            raise ApiError(403, f"only carrier staff may set {', '.join(staff)}")
    must_exist(conn, PLANS, values.get("routing_plan_id"), "body.routing_plan_id")
    must_exist(conn, RATE_PLANS, values.get("rate_plan_id"), "body.rate_plan_id")
    addresses.check_inbound_uri(svc.guard, values.get("inbound_uri"))


@router.get("", response_model=Envelope[list[Trunk]], responses=error_responses(401, 403, 422))
def list_trunks(who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
                account_id: UUID | None = None, name: Name | None = None, limit: PageLimit = 100,
                cursor: Cursor = None) -> Any:
    rows = store.listing(conn, TRUNKS, {"account_id": account_id, "name": name}, who.scope, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.post("", status_code=201, response_model=Envelope[Trunk],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_trunk(body: TrunkCreate, who: Caller = Depends(OPERATE_OWN),
                 conn: psycopg.Connection = Depends(connection), svc: Services = Depends(services)) -> Any:
    values = body.model_dump(exclude_unset=True)
    account = values.pop("account_id", None) or who.scope
    if account is None:
        raise invalid("body.account_id", "required")
    with conn.transaction():
        if store.fetch(conn, ACCOUNTS, account, who.scope) is None:
            raise invalid("body.account_id", f"no such account {account}")
        _check(conn, who, values, svc)
        row = writes.create(conn, who, TRUNKS, "trunk", {"account_id": account, **values})
    return ok(who.request_id, row)


@router.get("/{trunk_id}", response_model=Envelope[Trunk], responses=error_responses(401, 403, 404, 422))
def get_trunk(trunk_id: UUID = TrunkId, who: Caller = Depends(READ_OWN),
              conn: psycopg.Connection = Depends(connection)) -> Any:
    return ok(who.request_id, _trunk(conn, who, trunk_id))


@router.patch("/{trunk_id}", response_model=Envelope[Trunk],
              responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def change_trunk(body: TrunkChange, trunk_id: UUID = TrunkId, who: Caller = Depends(OPERATE_OWN),
                 conn: psycopg.Connection = Depends(connection), svc: Services = Depends(services)) -> Any:
    values = body.model_dump(exclude_unset=True)
    with conn.transaction():
        before = _trunk(conn, who, trunk_id, lock=True)
        _check(conn, who, values, svc)
        if "tech_prefix" in values and values["tech_prefix"] != before["tech_prefix"]:
            addresses.lock(conn)
            addresses.check_trunk_prefix(conn, who, before, values["tech_prefix"])
        row = writes.change(conn, who, TRUNKS, "trunk", before, values)
    return ok(who.request_id, row)


@router.delete("/{trunk_id}", response_model=Envelope[Trunk], responses=error_responses(401, 403, 404, 422))
def delete_trunk(trunk_id: UUID = TrunkId, who: Caller = Depends(OPERATE_OWN),
                 conn: psycopg.Connection = Depends(connection)) -> Any:
    """Deletes the trunk, its ACL entries and credentials, and releases its numbers."""
    with conn.transaction():
        before = _trunk(conn, who, trunk_id, lock=True)
        acl = [str(r[0]) for r in conn.execute(
            "DELETE FROM trunks.trunk_access_lists WHERE trunk_id = %s RETURNING cidr", (trunk_id,))]
        users = [r[0] for r in conn.execute(
            "UPDATE trunks.trunk_auth SET deleted_at = now() WHERE trunk_id = %s AND deleted_at IS NULL"
            " RETURNING username", (trunk_id,))]
        released = [r[0] for r in conn.execute(
            "UPDATE numbers.number_assignments SET released_at = now() WHERE trunk_id = %s"
            " AND released_at IS NULL RETURNING number_id", (trunk_id,))]
        conn.execute("UPDATE numbers.number_inventory SET status = 'available' WHERE id = ANY(%s)"
                     " AND status = 'assigned'", (released,))
        store.remove(conn, TRUNKS, trunk_id)
        audit.record(conn, who.actor, "delete", "trunk", trunk_id,
                     {**before, "acl": acl, "credentials": users, "numbers_released": [str(n) for n in released]},
                     None, before["account_id"], who.request_id)
    return ok(who.request_id, before)


# ------------------------------------------------------------------ ACL

def _acl_row(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "cidr": str(row["cidr"])}


@router.get("/{trunk_id}/acl", response_model=Envelope[list[AclEntry]], responses=error_responses(401, 403, 404, 422))
def list_acl(trunk_id: UUID = TrunkId, who: Caller = Depends(READ_OWN), conn: psycopg.Connection = Depends(connection),
             limit: PageLimit = 100, cursor: Cursor = None) -> Any:
    _trunk(conn, who, trunk_id)
    rows = store.listing(conn, ACL, {"trunk_id": trunk_id}, who.scope, cursor, limit + 1)
    return paged(who.request_id, [_acl_row(r) for r in rows], limit)


@router.post("/{trunk_id}/acl", status_code=201, response_model=Envelope[AclEntry],
             responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def create_acl(body: AclCreate, trunk_id: UUID = TrunkId, who: Caller = Depends(OPERATE_OWN),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    """Adds an ACL entry. Refused (409) when it covers a vendor gateway's address, or overlaps
    another account's entries: a customer-scoped caller never may, carrier staff only when both
    trunks have tech prefixes and neither starts with the other."""
    with conn.transaction():
        trunk = _trunk(conn, who, trunk_id, lock=True)
        addresses.lock(conn)
        addresses.check_acl_claim(conn, who, AclClaim(
            ipaddress.ip_network(body.cidr, strict=False), body.port, body.transport, trunk_id, trunk["name"],
            trunk["account_id"], trunk["tech_prefix"]))
        row = writes.create(conn, who, ACL, "trunk_acl",
                            {"account_id": trunk["account_id"], "trunk_id": trunk_id, **body.model_dump()})
    return ok(who.request_id, _acl_row(row))


@router.delete("/{trunk_id}/acl/{entry_id}", response_model=Envelope[AclEntry],
               responses=error_responses(401, 403, 404, 422))
def delete_acl(entry_id: UUID, trunk_id: UUID = TrunkId, who: Caller = Depends(OPERATE_OWN),
               conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        before = writes.locked(conn, who, ACL, entry_id, "ACL entry", where={"trunk_id": trunk_id})
        writes.delete(conn, who, ACL, "trunk_acl", before)
    return ok(who.request_id, _acl_row(before))


# ------------------------------------------------------------------ credentials

@router.get("/{trunk_id}/credentials", response_model=Envelope[list[Credential]],
            responses=error_responses(401, 403, 404, 422))
def list_credentials(trunk_id: UUID = TrunkId, who: Caller = Depends(READ_OWN),
                     conn: psycopg.Connection = Depends(connection), limit: PageLimit = 100,
                     cursor: Cursor = None) -> Any:
    _trunk(conn, who, trunk_id)
    rows = store.listing(conn, CREDENTIALS, {"trunk_id": trunk_id}, who.scope, cursor, limit + 1)
    return paged(who.request_id, rows, limit)


@router.put("/{trunk_id}/credentials/{username}", response_model=Envelope[Credential],
            responses=error_responses(400, 401, 403, 404, 409, 413, 422))
def set_credentials(body: PasswordSet, username: DigestUser, trunk_id: UUID = TrunkId,
                    who: Caller = Depends(OPERATE_OWN), conn: psycopg.Connection = Depends(connection),
                    svc: Services = Depends(services)) -> Any:
    """Creates the username on this trunk or changes its password. A username belongs to one
    trunk: one in use by another trunk is refused (409)."""
    realm = svc.settings.auth.realm
    with conn.transaction():
        trunk = _trunk(conn, who, trunk_id, lock=True)
        taken = conn.execute("SELECT trunk_id FROM trunks.trunk_auth WHERE username = %s AND realm = %s"
                             " AND deleted_at IS NULL FOR UPDATE", (username, realm)).fetchone()
        if taken and taken[0] != trunk_id:
            raise ApiError(409, f"username {username!r} is in use by another trunk")
        row = conn.execute(
            "INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1, ha1_sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username, realm) DO UPDATE SET"
            " account_id = EXCLUDED.account_id, trunk_id = EXCLUDED.trunk_id, ha1 = EXCLUDED.ha1,"
            " ha1_sha256 = EXCLUDED.ha1_sha256, deleted_at = NULL RETURNING id",
            (trunk["account_id"], trunk_id, username, realm, ha1_md5(username, realm, body.password),
             ha1_sha256(username, realm, body.password))).fetchone()
        assert row is not None
        after = store.fetch(conn, CREDENTIALS, row[0])
        assert after is not None
        audit.record(conn, who.actor, "set_password" if taken else "create", "trunk_credential", row[0],
                     None, {**after, "password": "changed"}, trunk["account_id"], who.request_id)
    return ok(who.request_id, after)


@router.delete("/{trunk_id}/credentials/{username}", response_model=Envelope[Credential],
               responses=error_responses(401, 403, 404, 422))
def delete_credentials(username: DigestUser, trunk_id: UUID = TrunkId, who: Caller = Depends(OPERATE_OWN),
                       conn: psycopg.Connection = Depends(connection)) -> Any:
    with conn.transaction():
        row = conn.execute("SELECT id FROM trunks.trunk_auth WHERE trunk_id = %s AND username = %s"
                           " AND deleted_at IS NULL", (trunk_id, username)).fetchone()
        if row is None:
            raise not_found("credential")
        before = writes.locked(conn, who, CREDENTIALS, row[0], "credential")
        writes.delete(conn, who, CREDENTIALS, "trunk_credential", before)
    return ok(who.request_id, before)
