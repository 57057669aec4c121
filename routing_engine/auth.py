"""Auth: who is calling. This step identifies customer trunks by source address (IP ACL).

When ACL entries of different trunks overlap, the most specific one wins: a /32 beats a /24,
and an entry pinned to a port or transport beats one that is not.
"""

from __future__ import annotations

import ipaddress
from uuid import UUID

from routing_engine.snapshot import AclEntry


def identify_by_acl(
    entries_most_specific_first: tuple[AclEntry, ...], source_ip: str, source_port: int, transport: str
) -> UUID | None:
    """The trunk whose ACL best matches the source, or None."""
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    transport = transport.lower()
    for entry in entries_most_specific_first:
        if (
            address.version == entry.network.version
            and address in entry.network
            and (entry.port is None or entry.port == source_port)
            and (entry.transport is None or entry.transport == transport)
        ):
            return entry.trunk_id
    return None
