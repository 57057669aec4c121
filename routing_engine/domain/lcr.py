"""LCR: which vendors of a plan may carry a call, and why each one may not.

Every vendor of the caller's routing plan gets a verdict that explains it: kept with the rate
that matched, or dropped with the reason. The plan's strategy (strategies/) then orders the
kept ones. A price ceiling (the customer's price, from the rating step) is the seam for margin
protection: a vendor costing more is dropped with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from routing_engine.domain.snapshot import (
    Gateway,
    Jurisdiction,
    RoutingPlan,
    RoutingSnapshot,
    Vendor,
    VendorRate,
    longest_blocked,
)


class Drop(StrEnum):
    UNKNOWN_VENDOR = "vendor not in configuration"
    VENDOR_DISABLED = "vendor disabled"
    BLOCKED_BY_VENDOR = "destination blocked for this vendor"
    NO_RATE = "no rate for destination"
    NO_GATEWAY = "no enabled gateway"
    ABOVE_PRICE = "cost above the customer's price"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One vendor of the plan and its verdict."""

    vendor_id: UUID
    vendor_name: str
    priority: int
    weight: int = 1
    rate: Decimal | None = None
    prefix: str | None = None
    dropped: Drop | None = None
    detail: str | None = None
    note: str | None = None  # kept, but with a remark the strategy may use (e.g. a quality demotion)

    @property
    def kept(self) -> bool:
        return self.dropped is None

    @property
    def cost(self) -> Decimal:
        return self.rate if self.rate is not None else Decimal("Infinity")

    def explain(self) -> dict[str, object]:
        out: dict[str, object] = {"vendor": self.vendor_name, "kept": self.kept}
        if self.rate is not None:
            out["rate"] = str(self.rate)
            out["prefix"] = self.prefix
        if self.dropped is not None:
            out["reason"] = self.dropped.value + (f" ({self.detail})" if self.detail else "")
        if self.note is not None:
            out["quality"] = self.note
        return out


@dataclass(frozen=True, slots=True)
class Route:
    """One place to send the call: a vendor's gateway, at the vendor's rate, numbers as it wants."""

    vendor_id: UUID
    vendor_name: str
    gateway: Gateway
    rate: Decimal
    prefix: str
    ruri_user: str
    from_user: str | None = None

    @property
    def ruri(self) -> str:
        suffix = "" if self.gateway.transport == "udp" else f";transport={self.gateway.transport}"
        return f"sip:{self.ruri_user}@{self.gateway.hostport}{suffix}"


def examine(
    plan: RoutingPlan,
    snapshot: RoutingSnapshot,
    dialed_digits: str,
    rating_digits: str,
    jurisdiction: Jurisdiction,
    now: datetime,
    price_ceiling: Decimal | None = None,
    gateway_up: Callable[[UUID], bool] = lambda gateway_id: True,
    demotion: Callable[[UUID, str], str | None] = lambda vendor_id, destination: None,
) -> list[Candidate]:
    """A verdict for every vendor of the plan, in plan order.

    ``dialed_digits`` is checked against blocked destinations; ``rating_digits`` (the LRN when
    ported) finds the rate.
    """
    rates = snapshot.rates_for(plan.vendor_ids, rating_digits, now)
    return [
        _verdict(member.vendor_id, member.priority, member.weight,
                 snapshot.vendors.get(member.vendor_id), dialed_digits, rates.get(member.vendor_id),
                 jurisdiction, price_ceiling, gateway_up, demotion)
        for member in plan.vendors
    ]


def _verdict(
    vendor_id: UUID,
    priority: int,
    weight: int,
    vendor: Vendor | None,
    dialed_digits: str,
    rate: VendorRate | None,
    jurisdiction: Jurisdiction,
    price_ceiling: Decimal | None,
    gateway_up: Callable[[UUID], bool],
    demotion: Callable[[UUID, str], str | None],
) -> Candidate:
    if vendor is None:
        return Candidate(vendor_id, str(vendor_id), priority, weight, dropped=Drop.UNKNOWN_VENDOR)
    name = vendor.name
    if not vendor.enabled:
        return Candidate(vendor_id, name, priority, weight, dropped=Drop.VENDOR_DISABLED)
    if vendor.blocked:
        blocked = longest_blocked(vendor.blocked, dialed_digits)
        if blocked is not None:
            return Candidate(vendor_id, name, priority, weight, dropped=Drop.BLOCKED_BY_VENDOR,
                             detail=f"prefix {blocked}")
    if rate is None:
        return Candidate(vendor_id, name, priority, weight, dropped=Drop.NO_RATE)
    price, prefix = rate.price_for(jurisdiction), rate.prefix
    dropped: Drop | None = None
    detail: str | None = None
    if not any(gw.enabled for gw in vendor.gateways):
        dropped = Drop.NO_GATEWAY
    elif not any(gw.enabled and gateway_up(gw.id) for gw in vendor.gateways):
        dropped, detail = Drop.NO_GATEWAY, "down: not answering OPTIONS"
    elif price_ceiling is not None and price > price_ceiling:
        dropped, detail = Drop.ABOVE_PRICE, f"price {price_ceiling}"
    note = demotion(vendor_id, dialed_digits) if dropped is None else None
    return Candidate(vendor_id, name, priority, weight, price, prefix, dropped, detail, note)
