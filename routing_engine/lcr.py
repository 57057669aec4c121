"""LCR: which vendors may carry a call, in which order, and why.

Every vendor of the caller's routing plan is examined and gets a verdict that explains it:
kept with the rate that matched, or dropped with the reason. Kept vendors are ordered by
price (least cost); ties go to the plan's priority, then the vendor name, so the order is
stable and explainable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from routing_engine.snapshot import Gateway, Jurisdiction, RoutingPlan, RoutingSnapshot, Vendor


class Drop(StrEnum):
    UNKNOWN_VENDOR = "vendor not in configuration"
    VENDOR_DISABLED = "vendor disabled"
    NO_RATE = "no rate for destination"
    NO_GATEWAY = "no enabled gateway"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One vendor of the plan and its verdict."""

    vendor_id: UUID
    vendor_name: str
    priority: int
    rate: Decimal | None = None
    prefix: str | None = None
    dropped: Drop | None = None

    @property
    def kept(self) -> bool:
        return self.dropped is None

    def explain(self) -> dict[str, object]:
        out: dict[str, object] = {"vendor": self.vendor_name, "kept": self.kept}
        if self.rate is not None:
            out["rate"] = str(self.rate)
            out["prefix"] = self.prefix
        if self.dropped is not None:
            out["reason"] = self.dropped.value
        return out


@dataclass(frozen=True, slots=True)
class Route:
    """One place to send the call: a vendor's gateway, at the vendor's rate."""

    vendor_id: UUID
    vendor_name: str
    gateway: Gateway
    rate: Decimal
    prefix: str


def examine(
    plan: RoutingPlan,
    snapshot: RoutingSnapshot,
    digits: str,
    jurisdiction: Jurisdiction,
    now: datetime,
) -> list[Candidate]:
    """A verdict for every vendor of the plan; kept ones first, cheapest first."""
    verdicts: list[Candidate] = []
    for member in plan.vendors:
        vendor = snapshot.vendors.get(member.vendor_id)
        verdicts.append(_verdict(member.vendor_id, member.priority, vendor, digits, jurisdiction, now))
    return sorted(verdicts, key=_order)


def routes(candidates: list[Candidate], snapshot: RoutingSnapshot) -> list[Route]:
    """The ordered destinations: each kept vendor's enabled gateways in their priority order."""
    out: list[Route] = []
    for c in candidates:
        if not c.kept or c.rate is None or c.prefix is None:
            continue
        vendor = snapshot.vendors[c.vendor_id]
        out.extend(
            Route(c.vendor_id, c.vendor_name, gw, c.rate, c.prefix)
            for gw in vendor.gateways
            if gw.enabled
        )
    return out


def _verdict(
    vendor_id: UUID,
    priority: int,
    vendor: Vendor | None,
    digits: str,
    jurisdiction: Jurisdiction,
    now: datetime,
) -> Candidate:
    if vendor is None:
        return Candidate(vendor_id, str(vendor_id), priority, dropped=Drop.UNKNOWN_VENDOR)
    if not vendor.enabled:
        return Candidate(vendor.id, vendor.name, priority, dropped=Drop.VENDOR_DISABLED)
    rate = vendor.rate_for(digits, now)
    if rate is None:
        return Candidate(vendor.id, vendor.name, priority, dropped=Drop.NO_RATE)
    price = rate.price_for(jurisdiction)
    if not any(gw.enabled for gw in vendor.gateways):
        return Candidate(vendor.id, vendor.name, priority, price, rate.prefix, Drop.NO_GATEWAY)
    return Candidate(vendor.id, vendor.name, priority, price, rate.prefix)


def _order(c: Candidate) -> tuple[bool, Decimal, int, str]:
    return (not c.kept, c.rate if c.rate is not None else Decimal("Infinity"), c.priority, c.vendor_name)
