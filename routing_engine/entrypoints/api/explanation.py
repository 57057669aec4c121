"""Explanation: the JSON document of a routing decision, as ``warp route explain --json`` prints
it and ``GET /api/v1/route/explain`` answers it — one function, so the two cannot drift apart.
Imports no web framework: the CLI can use it at no cost.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from routing_engine.domain import auth
from routing_engine.domain.decision import Decision, Relay
from routing_engine.domain.destinations import parse_ip
from routing_engine.domain.snapshot import RoutingSnapshot


def explanation(decision: Decision, at: datetime, address: dict[str, Any] | None = None) -> dict[str, Any]:
    """The document ``warp route explain --json`` prints, as plain JSON values; ``address``:
    what the source address maps to (``address_owner``), when the call was given by source."""
    if isinstance(decision, Relay):
        result: dict[str, object] = {
            "decision": "relay",
            "routes": [{"vendor": r.vendor_name, "gateway": r.gateway.name, "ruri": r.ruri,
                        "from": r.from_user, "rate": str(r.rate), "prefix": r.prefix}
                       for r in decision.routes[: decision.policy.max_attempts]],
            "failover": decision.policy.to_json(),
        }
    else:
        result = {"decision": "reject", "code": decision.code, "reason": decision.reason}
    result["at"] = at.isoformat()
    if address is not None:
        result["address"] = address
    result["trace"] = decision.trace
    plain: dict[str, Any] = json.loads(json.dumps(result, default=str))
    return plain


def trunk_label(snapshot: RoutingSnapshot, trunk: Any) -> str:
    account = snapshot.accounts.get(trunk.account_id)
    return f"{account.ban}/{trunk.name}" if account else str(trunk.name)


def address_owner(snapshot: RoutingSnapshot, source_ip: str, port: int, transport: str,
                  dialed: str) -> dict[str, Any]:
    """Which trunk a call from this source, dialing this number, belongs to, and why: every ACL
    entry that matches it, most specific first, and the rule that chose (auth.identify's)."""
    address = parse_ip(source_ip)
    out: dict[str, Any] = {"source": source_ip, "matches": [], "trunk": None}
    if address is None:
        out["why"] = "not an IP address"
        return out
    gateway = snapshot.gateway_hosts.get(str(address))
    if gateway is not None:
        vendor = snapshot.vendors.get(gateway.vendor_id)
        out["vendor"] = vendor.name if vendor else str(gateway.vendor_id)
        out["why"] = (f"the address of gateway {gateway.gateway.name} of vendor {out['vendor']}: its calls are"
                      " the vendor's (to our numbers); ACL entries are not consulted")
        return out
    for entry in snapshot.acl_by_specificity:
        trunk = snapshot.trunks.get(entry.trunk_id)
        if trunk is None or not auth.matches(entry, address, port, transport.lower()):
            continue
        pinned = "".join(f" {v}" for v in (entry.port, entry.transport) if v is not None)
        out["matches"].append({"trunk": trunk_label(snapshot, trunk), "trunk_id": str(trunk.id),
                               "entry": f"{entry.network}{pinned}", "tech_prefix": trunk.tech_prefix,
                               "accepts_acl": trunk.allows_acl})
    found = auth.identify(snapshot, source_ip, port, transport, dialed)
    if found is None:
        out["why"] = ("no ACL entry matches: the caller is asked for digest credentials" if not out["matches"]
                      else "no matching trunk takes this call (each has a tech prefix the number does not start"
                           " with, or does not accept ACL authentication): digest credentials are asked")
        return out
    trunk = snapshot.trunks[found.trunk_id]
    out["trunk"] = trunk_label(snapshot, trunk)
    out["trunk_id"] = str(trunk.id)
    if found.tech_prefix:
        out["why"] = (f"the dialed number starts with its tech prefix {found.tech_prefix} (the longest matching"
                      " prefix wins; it is removed before routing)")
    else:
        out["why"] = ("the most specific matching entry (a longer network first, then one pinned to a port or"
                      " transport) of a trunk without a tech prefix")
    return out
