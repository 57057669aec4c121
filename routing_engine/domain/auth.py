"""Auth: who is calling — by source address (IP ACL, optionally with a tech prefix), or by SIP
digest credentials (the `auth` module in Kamailio checks them; this module only finds the
stored HA1).

ACL rules: entries of trunks that allow ACL authentication are matched against the source;
when entries of different trunks overlap, the most specific wins (a /32 beats a /24, an entry
pinned to a port or transport beats one that is not). When several customers share one IP,
each of their trunks has a tech prefix: the matching trunk whose prefix starts the dialed
number wins (the longest prefix if several do), and the prefix is removed before routing. A
trunk without a tech prefix takes the calls that carry none.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID

from routing_engine.domain.destinations import parse_ip as _address
from routing_engine.domain.snapshot import AclEntry, Credential, RoutingSnapshot


@dataclass(frozen=True, slots=True)
class Identified:
    trunk_id: UUID
    dialed: str  # the dialed number without the tech prefix
    method: str  # acl | digest
    tech_prefix: str | None = None


def matches(entry: AclEntry, address: ipaddress.IPv4Address | ipaddress.IPv6Address,
             port: int, transport: str) -> bool:
    return (
        address.version == entry.network.version
        and address in entry.network
        and (entry.port is None or entry.port == port)
        and (entry.transport is None or entry.transport == transport)
    )


def identify(snapshot: RoutingSnapshot, source_ip: str, source_port: int, transport: str,
             dialed: str) -> Identified | None:
    """The trunk a call from this source, dialing this number, belongs to — by ACL."""
    address = _address(source_ip)
    if address is None:
        return None
    transport = transport.lower()
    matching = []
    for rank, entry in enumerate(snapshot.acl_by_specificity):
        trunk = snapshot.trunks.get(entry.trunk_id)
        if trunk is not None and trunk.allows_acl and matches(entry, address, source_port, transport):
            matching.append((rank, trunk))
    prefixed = [(rank, t) for rank, t in matching if t.tech_prefix and dialed.startswith(t.tech_prefix)]
    if prefixed:
        _, trunk = min(prefixed, key=lambda rt: (-len(rt[1].tech_prefix or ""), rt[0]))
        prefix = trunk.tech_prefix or ""
        return Identified(trunk.id, dialed[len(prefix):], "acl", prefix)
    for _, trunk in matching:
        if not trunk.tech_prefix:
            return Identified(trunk.id, dialed, "acl")
    return None


@dataclass(frozen=True, slots=True)
class Peers:
    """The addresses a snapshot knows as SIP peers: customer ACL entries and vendor gateways.
    They get the generous flood limit, and digest failures never block them."""

    exact: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def __contains__(self, source_ip: object) -> bool:
        address = _address(source_ip) if isinstance(source_ip, str) else None
        if address is None:
            return False
        return address in self.exact or any(address.version == n.version and address in n for n in self.networks)


def peers(snapshot: RoutingSnapshot) -> Peers:
    exact: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    networks = []
    for entry in snapshot.acl_by_specificity:
        if entry.network.num_addresses == 1:
            exact.add(entry.network.network_address)
        else:
            networks.append(entry.network)
    for host in snapshot.gateway_hosts:
        address = _address(host)
        if address is not None:
            exact.add(address)
    return Peers(frozenset(exact), tuple(networks))


def speaks_for(snapshot: RoutingSnapshot, source_ip: str, trunk_id: UUID | None,
               vendor_ids: Iterable[UUID]) -> bool:
    """May this address send requests inside a call of ``trunk_id`` carried by one of
    ``vendor_ids``? Yes from an address of the trunk's own ACL (a customer's SBC cluster may hang up
    from another of its nodes) and from a gateway of one of those vendors."""
    address = _address(source_ip)
    if address is None:
        return False
    gateway = snapshot.gateway_hosts.get(str(address))
    if gateway is not None and gateway.vendor_id in set(vendor_ids):
        return True
    return trunk_id is not None and any(
        entry.trunk_id == trunk_id and address.version == entry.network.version and address in entry.network
        for entry in snapshot.acl_by_specificity)


def credential(snapshot: RoutingSnapshot, username: str) -> Credential | None:
    """The stored credential for a digest username, if its trunk accepts digest."""
    found = snapshot.credentials.get(username)
    if found is None:
        return None
    trunk = snapshot.trunks.get(found.trunk_id)
    return found if trunk is not None and trunk.allows_digest else None


def strip_tech_prefix(snapshot: RoutingSnapshot, trunk_id: UUID, dialed: str) -> str:
    trunk = snapshot.trunks.get(trunk_id)
    prefix = trunk.tech_prefix if trunk else None
    return dialed[len(prefix):] if prefix and dialed.startswith(prefix) else dialed
