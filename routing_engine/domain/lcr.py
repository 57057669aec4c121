"""LCR: which vendors of a plan may carry a call, and why each one may not.

Every vendor of the caller's routing plan gets a verdict that explains it: kept with the rate
that matched, or dropped with the reason. The plan's strategy (strategies/) then orders the
kept ones. Margin protection (``MarginFloor``, from the rating step): a vendor whose cost for a
call of the expected duration — its increments, minimum and connection fee applied — would
leave less than the plan's minimum margin of the customer's charge for that call is dropped
with the figures that condemned it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from functools import lru_cache
from uuid import UUID

from routing_engine.domain.rating import MICRO, PER_SECOND, SIXTY, Price, Terms, billed_seconds, charge
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
    terms: Terms = PER_SECOND  # how the vendor bills the matched rate

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
            if self.terms is not PER_SECOND and self.terms != PER_SECOND:
                out["billing"] = self.terms.to_text()
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
    terms: Terms = PER_SECOND  # how the vendor bills ``rate``: the call's cost in its CDR


    @property
    def ruri(self) -> str:
        suffix = "" if self.gateway.transport == "udp" else f";transport={self.gateway.transport}"
        return f"sip:{self.ruri_user}@{self.gateway.hostport}{suffix}"


class MarginFloor:
    """Margin protection for one call: a vendor is kept only when, for a call lasting
    ``expected_s`` answered seconds, the customer's charge minus the vendor's cost — each with its
    own increments, minimum duration and connection fee — is at least the plan's ``min_margin``
    (per minute) over that duration, rounded half-up to the millionth. The vendor's cost is
    exactly ``rating.vendor_cost`` (unit-tested against it), computed without building values:
    this runs for every vendor of every call."""

    __slots__ = ("expected_s", "revenue", "required", "_budget")

    def __init__(self, price: Price, expected_s: int, min_margin: Decimal = Decimal(0)) -> None:
        self.expected_s = expected_s
        self.revenue = charge(expected_s, price)
        self.required = (min_margin * Decimal(expected_s) / SIXTY).quantize(MICRO, rounding=ROUND_HALF_UP) \
            if min_margin else Decimal(0)
        self._budget = self.revenue - self.required  # the most a vendor may cost

    def cost(self, per_minute: Decimal, row: VendorRate) -> Decimal:
        """``rating.vendor_cost(expected_s, per_minute, row.terms)``."""
        seconds = _billed(self.expected_s, row.initial_s, row.subsequent_s, row.min_duration_s)
        exact = per_minute * seconds / SIXTY
        if row.connection_fee:
            exact = row.connection_fee + exact
        return exact.quantize(MICRO, rounding=ROUND_HALF_UP)

    def shortfall(self, per_minute: Decimal, row: VendorRate) -> str | None:
        """Why this vendor rate loses money (None: it does not)."""
        cost = self.cost(per_minute, row)
        if cost <= self._budget:
            return None
        floor = f", minimum margin {self.required}" if self.required else ""
        return f"cost {cost} against a charge of {self.revenue} for {self.expected_s} s{floor}"


@lru_cache(maxsize=4096)
def _billed(duration_s: int, initial_s: int, subsequent_s: int, min_duration_s: int) -> Decimal:
    return Decimal(billed_seconds(duration_s, initial_s, subsequent_s, min_duration_s))


def _terms(row: VendorRate) -> Terms:
    """The row's billing terms; the shared per-second value for most rows (no value built)."""
    if row.initial_s == 1 and row.subsequent_s == 1 and not row.min_duration_s and not row.connection_fee:
        return PER_SECOND
    return row.terms


def examine(
    plan: RoutingPlan,
    snapshot: RoutingSnapshot,
    dialed_digits: str,
    rating_digits: str,
    jurisdiction: Jurisdiction,
    now: datetime,
    margin: MarginFloor | None = None,
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
                 jurisdiction, margin, gateway_up, demotion)
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
    margin: MarginFloor | None,
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
    elif margin is not None:
        detail = margin.shortfall(price, rate)
        dropped = Drop.ABOVE_PRICE if detail is not None else None
    note = demotion(vendor_id, dialed_digits) if dropped is None else None
    return Candidate(vendor_id, name, priority, weight, price, prefix, dropped, detail, note, _terms(rate))
