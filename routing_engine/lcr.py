"""LCR: which vendors of a plan may carry a call, and why each one may not.

Every vendor of the caller's routing plan gets a verdict that explains it: kept with the rate
that matched, or dropped with the reason. The plan's strategy (strategies/) then orders the
kept ones. A price ceiling (the customer's price, from the rating step) is the seam for margin
protection: a vendor costing more is dropped with that reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from routing_engine.snapshot import (
    Gateway,
    Jurisdiction,
    RoutingPlan,
    RoutingSnapshot,
    Vendor,
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
) -> list[Candidate]:
    """A verdict for every vendor of the plan, in plan order.

    ``dialed_digits`` is checked against blocked destinations; ``rating_digits`` (the LRN when
    ported) finds the rate.
    """
    return [
        _verdict(member.vendor_id, member.priority, member.weight,
                 snapshot.vendors.get(member.vendor_id), dialed_digits, rating_digits,
                 jurisdiction, now, price_ceiling, gateway_up)
        for member in plan.vendors
    ]


def _verdict(
    vendor_id: UUID,
    priority: int,
    weight: int,
    vendor: Vendor | None,
    dialed_digits: str,
    rating_digits: str,
    jurisdiction: Jurisdiction,
    now: datetime,
    price_ceiling: Decimal | None,
    gateway_up: Callable[[UUID], bool],
) -> Candidate:
    if vendor is None:
        return Candidate(vendor_id, str(vendor_id), priority, weight, dropped=Drop.UNKNOWN_VENDOR)
    base = Candidate(vendor.id, vendor.name, priority, weight)
    if not vendor.enabled:
        return _with(base, dropped=Drop.VENDOR_DISABLED)
    blocked = longest_blocked(vendor.blocked, dialed_digits)
    if blocked is not None:
        return _with(base, dropped=Drop.BLOCKED_BY_VENDOR, detail=f"prefix {blocked}")
    rate = vendor.rate_for(rating_digits, now)
    if rate is None:
        return _with(base, dropped=Drop.NO_RATE)
    priced = _with(base, rate=rate.price_for(jurisdiction), prefix=rate.prefix)
    if not any(gw.enabled for gw in vendor.gateways):
        return _with(priced, dropped=Drop.NO_GATEWAY)
    if not any(gw.enabled and gateway_up(gw.id) for gw in vendor.gateways):
        return _with(priced, dropped=Drop.NO_GATEWAY, detail="down: not answering OPTIONS")
    if price_ceiling is not None and priced.cost > price_ceiling:
        return _with(priced, dropped=Drop.ABOVE_PRICE, detail=f"price {price_ceiling}")
    return priced


def _with(c: Candidate, **changes: object) -> Candidate:
    return replace(c, **changes)  # type: ignore[arg-type]
