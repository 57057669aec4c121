"""Addresses: the checks the API makes before it stores an address a call may use.

- A destination (a trunk's inbound URI, a vendor gateway) may not be one of the node's own
  services nor a place no SIP peer lives (``destinations.Guard``): 422 with the reason. A DNS
  name is resolved, briefly; one that does not resolve now is taken (the SIP worker checks every
  relay's address again before sending).
- An ACL entry may not claim an address another account claims, unless carrier staff share it
  under the rule of ``validation`` (distinct tech prefixes), and nobody may claim a vendor
  gateway's address (a gateway is recognised first: the entry would never match, or would
  take the vendor's calls): 409. A gateway may not be added inside a trunk's ACL either.

ACL and gateway writes take one transaction-scoped advisory lock, so two writes racing cannot
both pass the check; snapshot validation stays the last line (a rule broken by SQL is refused
there).
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from uuid import UUID

import psycopg

from routing_engine.domain.destinations import Guard, IpAddress, parse_ip, uri_target
from routing_engine.domain.validation import AclClaim, acl_conflict, claims_overlap
from routing_engine.entrypoints.api.envelope import ApiError, invalid
from routing_engine.entrypoints.api.principals import Caller

_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="resolve")
RESOLVE_TIMEOUT_S = 2.0
_ADDRESS_LOCK = 0x77617270  # pg_advisory_xact_lock key of ACL and gateway writes


def _addresses(host: str) -> list[IpAddress]:
    literal = parse_ip(host)
    if literal is not None:
        return [literal]
    name = host.strip().rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):  # RFC 6761: always loopback
        return [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    try:
        infos = _RESOLVER.submit(socket.getaddrinfo, name, None).result(timeout=RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return []
    found = (parse_ip(str(info[4][0]).split("%", 1)[0]) for info in infos)
    return [a for a in found if a is not None]


def destination_refusal(guard: Guard, host: str, port: int) -> str | None:
    """Why SIP may not be sent to ``host``:``port`` (None: it may)."""
    for address in _addresses(host):
        refusal = guard.refusal(str(address), port)
        if refusal:
            return refusal
    return None


def check_inbound_uri(guard: Guard, uri: str | None) -> None:
    if uri:
        host, port = uri_target(uri)
        refusal = destination_refusal(guard, host, port)
        if refusal:
            raise invalid("body.inbound_uri", f"SIP may not be sent there: {refusal}")


def check_gateway(guard: Guard, host: str, port: int) -> None:
    refusal = destination_refusal(guard, host, port)
    if refusal:
        raise invalid("body.host", f"SIP may not be sent there: {refusal}")


def lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADDRESS_LOCK,))


def gateway_in(conn: psycopg.Connection, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str | None:
    """The first live vendor gateway (given by address) inside ``network``, named."""
    rows = conn.execute("SELECT g.host, g.name, p.name FROM routing.provider_gateways g"
                        " JOIN routing.providers p ON p.id = g.provider_id"
                        " WHERE g.deleted_at IS NULL AND p.deleted_at IS NULL ORDER BY g.id").fetchall()
    for host, name, vendor in rows:
        address = parse_ip(str(host))
        if address is not None and address.version == network.version and address in network:
            return f"gateway {name} of vendor {vendor}"
    return None


def claims_near(conn: psycopg.Connection, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                account_id: UUID) -> list[AclClaim]:
    """Other accounts' ACL entries whose networks overlap ``network``."""
    rows = conn.execute(
        "SELECT l.cidr, l.port, l.transport, t.id, t.name, t.account_id, t.tech_prefix"
        " FROM trunks.trunk_access_lists l JOIN trunks.trunks t ON t.id = l.trunk_id"
        " WHERE t.deleted_at IS NULL AND t.account_id <> %s AND l.cidr && %s::cidr ORDER BY l.id",
        (account_id, str(network))).fetchall()
    return [AclClaim(ipaddress.ip_network(str(r[0])), r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]


def check_acl_claim(conn: psycopg.Connection, who: Caller, claim: AclClaim) -> None:
    """409 if ``claim`` may not be stored (see the module docstring)."""
    for other in claims_near(conn, claim.network, claim.account_id):
        if who.scope is not None and claims_overlap(claim, other):
            raise ApiError(409, "this network overlaps another customer's addresses; ask the carrier")
        conflict = acl_conflict(claim, other)
        if conflict is not None:
            raise ApiError(409, f"{conflict}. Accounts may share an address only when every trunk on it"
                                " has a tech prefix and no prefix starts with another")
    gateway = gateway_in(conn, claim.network)
    if gateway is not None:
        raise ApiError(409, "this network holds a vendor gateway's address" if who.scope is not None
                       else f"this network holds the address of {gateway}: calls from it are the vendor's")


def check_trunk_prefix(conn: psycopg.Connection, who: Caller, trunk: dict[str, object],
                       tech_prefix: str | None) -> None:
    """A trunk's new tech prefix must still tell its shared addresses apart (409 if not)."""
    rows = conn.execute("SELECT cidr, port, transport FROM trunks.trunk_access_lists WHERE trunk_id = %s"
                        " ORDER BY id", (trunk["id"],)).fetchall()
    for cidr, port, transport in rows:
        check_acl_claim(conn, who, AclClaim(ipaddress.ip_network(str(cidr)), port, transport,
                                            trunk["id"], str(trunk["name"]), trunk["account_id"],  # type: ignore[arg-type]
                                            tech_prefix))


def check_gateway_address(conn: psycopg.Connection, host: str) -> None:
    """409 if a gateway at ``host`` would sit inside a trunk's ACL."""
    address = parse_ip(host)
    if address is None:
        return
    row = conn.execute("SELECT l.cidr, t.name FROM trunks.trunk_access_lists l JOIN trunks.trunks t"
                       " ON t.id = l.trunk_id WHERE t.deleted_at IS NULL AND l.cidr >>= %s::inet LIMIT 1",
                       (str(address),)).fetchone()
    if row is not None:
        raise ApiError(409, f"{address} is in the ACL of trunk {row[1]} ({row[0]}): a gateway there would take"
                            " that customer's calls for the vendor's")
