"""Validation: a snapshot that would route wrongly is refused before it goes into service.

Each problem names the rows involved, so the log tells ops what to fix:
- a rate that is negative or billing terms that cannot be billed (an increment under 1 s, a
  negative minimum or connection fee), or two rates of one vendor (or customer plan) and prefix
  with the same effective moment (which one applies would be a guess). Rows that follow each
  other by effective date are the normal way a deck changes: the later one supersedes the
  earlier from its ``effective_at`` on (snapshot.VendorRate), so that is not a problem;
- a routing plan with no vendors, or one that names a vendor that does not exist (deleted);
- a trunk or account pointing at a routing plan or rate plan that does not exist;
- a routing plan whose strategy is unknown;
- a trunk whose allowed media codecs are not encoding names rtpengine could take;
- an address two accounts claim (``acl_conflict``), or a trunk ACL entry that covers a vendor
  gateway's address (a call from there would be taken for the vendor's: the gateway wins);
- a trunk inbound URI or a gateway address that is one of the node's own services, or no SIP
  peer's (``destinations.Guard``; checked when the caller passes the node's guard).

Sharing an address between accounts (the rule, also applied by the admin API): two ACL entries
of trunks of different accounts may overlap (networks that share an address, and ports and
transports that do not rule each other out) only when both trunks carry a tech prefix and
neither prefix starts with the other. Then every call from the shared address names exactly one
of those trunks by the digits it dials, and a call with no prefix, or another one, is refused;
without it the trunk that sorts first would take the other account's calls and billing. Only
carrier staff may set such sharing up; a customer-scoped key can never claim an address another
account uses, and nobody can claim a vendor gateway's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from uuid import UUID

from routing_engine.domain.destinations import Guard, parse_ip, uri_target
from routing_engine.domain.media_plan import codec_problems
from routing_engine.domain.snapshot import RoutingSnapshot, VendorRate
from routing_engine.domain.strategies import STRATEGIES

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class AclClaim:
    """An ACL entry with what the sharing rule needs of its trunk."""

    network: IpNetwork
    port: int | None
    transport: str | None
    trunk_id: UUID
    trunk_name: str
    account_id: UUID
    tech_prefix: str | None

    def describe(self) -> str:
        pinned = "".join(f" {v}" for v in (self.port, self.transport) if v is not None)
        return f"{self.network}{pinned} of trunk {self.trunk_name} ({self.trunk_id})"


def claims_overlap(a: AclClaim, b: AclClaim) -> bool:
    """Whether one source could match both entries."""
    return (a.network.version == b.network.version and a.network.overlaps(b.network)
            and (a.port is None or b.port is None or a.port == b.port)
            and (a.transport is None or b.transport is None or a.transport.lower() == b.transport.lower()))


def prefixes_tell_apart(a: str | None, b: str | None) -> bool:
    """Two tech prefixes that route every prefixed call to exactly one of their trunks."""
    return a is not None and b is not None and a != "" and b != "" and not a.startswith(b) and not b.startswith(a)


def acl_conflict(a: AclClaim, b: AclClaim) -> str | None:
    """Why these two entries cannot both be in service (None: they can); see the module docstring."""
    if a.account_id == b.account_id or not claims_overlap(a, b):
        return None
    if prefixes_tell_apart(a.tech_prefix, b.tech_prefix):
        return None
    return (f"ACL {a.describe()} overlaps {b.describe()} of another account, and their tech prefixes"
            f" ({a.tech_prefix or 'none'}, {b.tech_prefix or 'none'}) do not tell the calls apart")


def overlapping_claims(claims: Iterable[AclClaim]) -> Iterator[tuple[AclClaim, AclClaim]]:
    """Every pair of claims whose networks overlap, without comparing every pair: networks are
    nested or disjoint, so in address order only the enclosing ones are still open."""
    ordered = sorted(claims, key=lambda c: (c.network.version, int(c.network.network_address), c.network.prefixlen))
    open_claims: list[AclClaim] = []
    for claim in ordered:
        start = int(claim.network.network_address)
        open_claims = [o for o in open_claims if o.network.version == claim.network.version
                       and int(o.network.broadcast_address) >= start]
        for other in open_claims:
            yield other, claim
        open_claims.append(claim)


def gateway_addresses(snapshot: RoutingSnapshot) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """Every vendor gateway given as an IP address, with a name for messages."""
    found: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    for vendor in snapshot.vendors.values():
        for gw in vendor.gateways:
            address = parse_ip(gw.host)
            if address is not None:
                found.setdefault(address, f"gateway {gw.name} of vendor {vendor.name}")
    return found


def _acl_problems(snapshot: RoutingSnapshot) -> Iterable[str]:
    claims = []
    for entry in snapshot.acl:
        trunk = snapshot.trunks.get(entry.trunk_id)
        if trunk is not None:
            claims.append(AclClaim(entry.network, entry.port, entry.transport, trunk.id, trunk.name,
                                   trunk.account_id, trunk.tech_prefix))
    for a, b in overlapping_claims(claims):
        conflict = acl_conflict(a, b)
        if conflict:
            yield conflict
    gateways = gateway_addresses(snapshot)
    for claim in claims:
        if claim.network.num_addresses == 1:
            hits = [gateways[a] for a in (claim.network.network_address,) if a in gateways]
        else:
            hits = [name for address, name in gateways.items() if address in claim.network]
        for name in hits:
            yield f"ACL {claim.describe()} covers the address of {name}"


def _destination_problems(snapshot: RoutingSnapshot, guard: Guard) -> Iterable[str]:
    for trunk in snapshot.trunks.values():
        if trunk.inbound_uri:
            host, port = uri_target(trunk.inbound_uri)
            refusal = guard.refusal(host, port) if parse_ip(host) is not None else None
            if refusal:
                yield f"trunk {trunk.name} ({trunk.id}): inbound URI {trunk.inbound_uri}: {refusal}"
    for vendor in snapshot.vendors.values():
        for gw in vendor.gateways:
            refusal = guard.refusal(gw.host, gw.port) if parse_ip(gw.host) is not None else None
            if refusal:
                yield f"vendor {vendor.name}: gateway {gw.name} ({gw.hostport}): {refusal}"


def _rate_problems(owner: str, rates: Mapping[str, tuple[VendorRate, ...]]) -> Iterable[str]:
    for prefix, entries in rates.items():
        for r in entries:
            prices = (r.rate, r.interstate_rate, r.intrastate_rate, r.indeterminate_rate)
            if any(p is not None and p < 0 for p in prices):
                yield f"{owner}: negative rate for prefix {prefix} (effective {r.effective_at.isoformat()})"
            if r.initial_s < 1 or r.subsequent_s < 1 or r.min_duration_s < 0 or r.connection_fee < 0:
                yield (f"{owner}: billing terms {r.terms.to_text()} for prefix {prefix} (effective"
                       f" {r.effective_at.isoformat()}) cannot be billed: increments of 1 s or more, no"
                       f" negative minimum or fee")
        # entries are sorted by effective date: two rows of one moment are neighbours
        for earlier, later in zip(entries, entries[1:], strict=False):
            if earlier.effective_at == later.effective_at:
                yield (f"{owner}: two rates for prefix {prefix} take effect at the same moment"
                       f" {later.effective_at.isoformat()} ({earlier.rate} and {later.rate})")


def problems(snapshot: RoutingSnapshot, guard: Guard | None = None) -> list[str]:
    """Every problem of the snapshot; with the node's ``guard``, destinations are checked too
    (names are resolved only when a call is sent, and checked then)."""
    found: list[str] = []
    for vendor in snapshot.vendors.values():
        found.extend(_rate_problems(f"vendor {vendor.name}", vendor.rates))
    for rate_plan in snapshot.rate_plans.values():
        found.extend(_rate_problems(f"rate plan {rate_plan.name}", rate_plan.rates))
    for plan in snapshot.plans.values():
        if not plan.vendors:
            found.append(f"routing plan {plan.name}: has no vendors")
        for member in plan.vendors:
            if member.vendor_id not in snapshot.vendors:
                found.append(f"routing plan {plan.name}: vendor {member.vendor_id} does not exist (deleted?)")
        if plan.strategy not in STRATEGIES:
            found.append(f"routing plan {plan.name}: unknown strategy {plan.strategy!r}")
    for trunk in snapshot.trunks.values():
        if trunk.routing_plan_id is not None and trunk.routing_plan_id not in snapshot.plans:
            found.append(f"trunk {trunk.name} ({trunk.id}): routing plan {trunk.routing_plan_id} does not exist")
        if trunk.rate_plan_id is not None and trunk.rate_plan_id not in snapshot.rate_plans:
            found.append(f"trunk {trunk.name} ({trunk.id}): rate plan {trunk.rate_plan_id} does not exist")
        found.extend(f"trunk {trunk.name} ({trunk.id}): media: {p}" for p in codec_problems(trunk.media))
    for account in snapshot.accounts.values():
        if account.routing_plan_id is not None and account.routing_plan_id not in snapshot.plans:
            found.append(f"account {account.ban}: routing plan {account.routing_plan_id} does not exist")
        if account.rate_plan_id is not None and account.rate_plan_id not in snapshot.rate_plans:
            found.append(f"account {account.ban}: rate plan {account.rate_plan_id} does not exist")
    found.extend(_acl_problems(snapshot))
    if guard is not None:
        found.extend(_destination_problems(snapshot, guard))
    return found
