"""Rating: what a call costs the customer. Money is Decimal; every rounding is stated here.

Rules:
- The customer's rate is found like a vendor's: the longest prefix of the destination (its LRN
  when ported) in the customer's rate plan, in force at the call's moment, priced for the
  call's jurisdiction. No rate -> no call.
- Billable seconds of an answered call lasting ``d`` seconds (d >= 1, whole seconds, a started
  second counting as a full one): ``d`` is raised to the minimum duration, then the first
  ``initial`` seconds are billed whole and the rest in blocks of ``subsequent`` seconds, each
  started block billed whole (60/60: per minute; 6/6: per six seconds; 1/1: per second).
- Charge = connection fee + per-minute price x billable seconds / 60, computed exactly and then
  rounded half-up to 6 decimal places (0.000001, the ledger's precision). An unanswered call
  costs nothing (no connection fee either).
- The longest call a sum of money pays for is the largest billable duration whose charge does
  not exceed it; a call is allowed only if that covers at least the first increment.
- A vendor bills us by the same rules, with the terms of its own rate row (``Terms``:
  increments, minimum duration, connection fee): its cost is the same exact sum, rounded the same
  way. A vendor row without terms is billed per second (1/1, no minimum, no fee). The connection
  fee is due on answered calls only: a call with no answered second (0 s) costs nothing, fee
  included, as the customer's charge does.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

MICRO = Decimal("0.000001")
SIXTY = Decimal(60)


@dataclass(frozen=True, slots=True)
class Price:
    """The customer's price for one call: per minute, with its billing rules."""

    per_minute: Decimal
    initial_s: int = 60
    subsequent_s: int = 60
    min_duration_s: int = 0
    connection_fee: Decimal = Decimal(0)
    prefix: str = ""

    def explain(self) -> dict[str, object]:
        return {"rate": str(self.per_minute), "prefix": self.prefix,
                "increments": f"{self.initial_s}/{self.subsequent_s}",
                "min_duration_s": self.min_duration_s, "connection_fee": str(self.connection_fee)}


@dataclass(frozen=True, slots=True)
class Terms:
    """How a vendor rate row is billed: first/next increments (s), minimum duration, connection fee."""

    initial_s: int = 1
    subsequent_s: int = 1
    min_duration_s: int = 0
    connection_fee: Decimal = Decimal(0)

    def to_text(self) -> str:
        """Compact form kept with a call's route, e.g. "60/60/30/0.01"."""
        return f"{self.initial_s}/{self.subsequent_s}/{self.min_duration_s}/{self.connection_fee}"

    def explain(self) -> dict[str, object]:
        return {"increments": f"{self.initial_s}/{self.subsequent_s}", "min_duration_s": self.min_duration_s,
                "connection_fee": str(self.connection_fee)}


PER_SECOND = Terms()


def terms_from_text(text: str | None) -> Terms:
    """The terms ``Terms.to_text`` wrote; none (a call routed before terms were kept): per second."""
    if not text:
        return PER_SECOND
    initial, subsequent, minimum, fee = text.split("/")
    return Terms(int(initial), int(subsequent), int(minimum), Decimal(fee))


def billable_seconds(duration_s: int, price: Price) -> int:
    return billed_seconds(duration_s, price.initial_s, price.subsequent_s, price.min_duration_s)


def billed_seconds(duration_s: int, initial_s: int, subsequent_s: int, min_duration_s: int) -> int:
    """The billable seconds of the module rules, from the terms as numbers."""
    if duration_s <= 0:
        return 0
    d = max(duration_s, min_duration_s)
    if d <= initial_s:
        return initial_s
    blocks = -(-(d - initial_s) // subsequent_s)  # ceiling division
    return initial_s + blocks * subsequent_s


def charge_for_billable(billable_s: int, price: Price) -> Decimal:
    if billable_s <= 0:
        return Decimal(0)
    exact = price.connection_fee + price.per_minute * Decimal(billable_s) / SIXTY
    return exact.quantize(MICRO, rounding=ROUND_HALF_UP)


def charge(duration_s: int, price: Price) -> Decimal:
    return charge_for_billable(billable_seconds(duration_s, price), price)


def max_duration(funds: Decimal, price: Price, cap_s: int) -> int:
    """The longest call (seconds, at most ``cap_s``) that ``funds`` pay for; 0 if not even the
    first increment."""
    first = billable_seconds(1, price)
    if charge_for_billable(first, price) > funds:
        return 0
    step_cost = price.per_minute * Decimal(price.subsequent_s) / SIXTY
    if step_cost <= 0:
        return cap_s
    extra = ((funds - charge_for_billable(first, price)) / step_cost).to_integral_value(ROUND_FLOOR)
    seconds = first + int(extra) * price.subsequent_s
    # rounding of the charge may let one more block fit, or one fewer: settle it exactly
    while charge_for_billable(seconds + price.subsequent_s, price) <= funds and seconds < cap_s:
        seconds += price.subsequent_s
    while seconds > first and charge_for_billable(seconds, price) > funds:
        seconds -= price.subsequent_s
    return min(seconds, cap_s)


def vendor_price(per_minute: Decimal, terms: Terms) -> Price:
    """A vendor rate with its terms, as the price the rating rules take."""
    return Price(per_minute, terms.initial_s, terms.subsequent_s, terms.min_duration_s, terms.connection_fee)


def vendor_cost(duration_s: int, per_minute: Decimal, terms: Terms = PER_SECOND) -> Decimal:
    """What a vendor charges us for a call of ``duration_s`` answered seconds, by its terms."""
    return charge(duration_s, vendor_price(per_minute, terms))


def to_micros(amount: Decimal) -> int:
    """Whole millionths, for exact integer arithmetic in Redis."""
    return int((amount / MICRO).to_integral_value(ROUND_HALF_UP))


def from_micros(micros: int) -> Decimal:
    return (Decimal(micros) * MICRO).quantize(MICRO)


@dataclass(frozen=True, slots=True)
class Bill:
    billable_s: int
    customer_price: Decimal
    vendor_cost: Decimal
    margin: Decimal


def bill(duration_s: int, max_s: int, price: Price, vendor_per_minute: Decimal | None,
         vendor_terms: Terms = PER_SECOND) -> Bill:
    """The money of one finished call. The duration is capped at the length the reservation paid
    for (the dialog timeout may fire a second late): the charge never exceeds what was reserved.
    The vendor's cost is for the same seconds, by its own terms."""
    seconds = min(max(duration_s, 0), max_s) if max_s > 0 else max(duration_s, 0)
    billable = billable_seconds(seconds, price)
    customer = charge_for_billable(billable, price)
    cost = vendor_cost(seconds, vendor_per_minute, vendor_terms) if vendor_per_minute is not None else Decimal(0)
    return Bill(billable, customer, cost, customer - cost)


def price_to_json(price: Price) -> dict[str, object]:
    return {"per_minute": str(price.per_minute), "initial": price.initial_s, "subsequent": price.subsequent_s,
            "min": price.min_duration_s, "fee": str(price.connection_fee), "prefix": price.prefix}


def price_from_json(data: dict[str, object]) -> Price:
    return Price(Decimal(str(data["per_minute"])), int(str(data["initial"])), int(str(data["subsequent"])),
                 int(str(data["min"])), Decimal(str(data["fee"])), str(data.get("prefix", "")))
