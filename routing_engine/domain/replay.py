"""Replay: a recorded call decided again with a candidate configuration, and what changes.

Each CDR's call is decided again by the decider live calls use, on the candidate snapshot, with
the LRN the CDR recorded (never a new lookup) and at the call's own moment unless the caller
names one. The comparison, per call:

- before: what the CDR says happened — its vendor (``provider_id``: the one that carried the
  call, or was tried last), its revenue (``customer_price``) and cost (``vendor_cost``);
- after: the candidate's first route carries the call for the same duration, billed by the same
  ``rating.bill`` as a live call's end; a refusal earns and costs nothing.

A call *changes vendor* when both route it and the vendors differ (a call that failed over in
life shows as moved to the candidate's first choice: a replay cannot know how a vendor would
have answered); it *would be refused* when it was routed and the candidate refuses it; it is
*newly routed* in the opposite case. Money is Decimal, summed exactly; margin = revenue - cost.

A call is grouped by destination (the customer rate prefix it was priced at, as its trace
says; else the candidate's; else "unpriced") and by customer (the account's BAN).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from routing_engine.domain import rating
from routing_engine.domain.decision import CallRequest, Decision, Relay
from routing_engine.domain.lrn import LrnResult
from routing_engine.domain.numbers import E164

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a replay reads of one CDR."""

    cdr_id: UUID
    call_id: str
    invite_at: datetime
    sip_code: int
    direction: str = "outbound"
    account_id: UUID | None = None
    ban: str | None = None
    trunk_id: UUID | None = None
    provider_id: UUID | None = None
    from_raw: str | None = None
    to_raw: str | None = None
    duration_s: int = 0
    customer_price: Decimal | None = None
    vendor_cost: Decimal | None = None
    lrn: str | None = None
    lrn_source: str | None = None
    priced_at: str | None = None  # the customer rate prefix the decision priced it at (its trace's rating)


class Unreplayable(ValueError):
    """A CDR that cannot be decided again; the message is the reason reported for it."""


def request_of(call: Recorded) -> CallRequest:
    """The call as the decider takes it: identified by the CDR's trunk (the source address is not
    in the CDR), dialed and calling numbers as the customer sent them."""
    if call.direction != "outbound":
        raise Unreplayable(f"direction {call.direction}: only outbound (termination) calls are routed by LCR")
    if call.trunk_id is None:
        raise Unreplayable("no trunk: the call was never identified")
    if not call.to_raw:
        raise Unreplayable("no dialed number recorded")
    if call.duration_s < 0:
        raise Unreplayable(f"negative duration {call.duration_s}")
    if call.duration_s > 0 and call.customer_price is None:
        raise Unreplayable("answered but no customer price recorded")
    return CallRequest(call_id=call.call_id, source_ip="", source_port=0, transport="udp",
                       dialed=call.to_raw, caller=call.from_raw or "")


def recorded_lrn(call: Recorded) -> Callable[[E164], LrnResult]:
    """The LRN lookup of a replayed call: the answer its CDR recorded, whatever is asked."""
    if call.lrn:
        digits = call.lrn.removeprefix("+")
        if not digits.isdigit():
            raise Unreplayable(f"bad LRN {call.lrn!r}")
        result = LrnResult(digits, call.lrn_source or "cdr")
    elif call.lrn_source == "failed":
        result = LrnResult(None, "failed", "the dip failed when the call was made")
    else:
        result = LrnResult(None, call.lrn_source or "skipped")

    def lookup(number: E164) -> LrnResult:
        return result

    return lookup


@dataclass(frozen=True, slots=True)
class Replayed:
    """One call, before and after."""

    cdr_id: UUID
    call_id: str
    destination: str
    customer: str
    vendor_before: UUID | None
    vendor_after: UUID | None
    vendor_after_name: str | None
    refusal: str | None          # the candidate's refusal ("503 No Route Available"), if it refuses
    duration_s: int
    revenue_before: Decimal
    revenue_after: Decimal
    cost_before: Decimal
    cost_after: Decimal

    @property
    def routed_before(self) -> bool:
        return self.vendor_before is not None

    @property
    def rerouted(self) -> bool:
        return self.vendor_before is not None and self.vendor_after is not None and \
            self.vendor_before != self.vendor_after

    @property
    def refused(self) -> bool:
        return self.routed_before and self.vendor_after is None

    @property
    def newly_routed(self) -> bool:
        return not self.routed_before and self.vendor_after is not None

    @property
    def margin_delta(self) -> Decimal:
        return (self.revenue_after - self.cost_after) - (self.revenue_before - self.cost_before)

    @property
    def changed(self) -> bool:
        return self.rerouted or self.refused or self.newly_routed or self.margin_delta != 0 \
            or self.revenue_after != self.revenue_before

    def to_json(self) -> dict[str, object]:
        return {"cdr_id": str(self.cdr_id), "call_id": self.call_id, "destination": self.destination,
                "customer": self.customer,
                "vendor_before": str(self.vendor_before) if self.vendor_before else None,
                "vendor_after": str(self.vendor_after) if self.vendor_after else None,
                "vendor_after_name": self.vendor_after_name, "refusal": self.refusal,
                "change": "rerouted" if self.rerouted else "refused" if self.refused
                else "newly_routed" if self.newly_routed else "price",
                "duration_s": self.duration_s,
                "revenue_delta": str(self.revenue_after - self.revenue_before),
                "cost_delta": str(self.cost_after - self.cost_before), "margin_delta": str(self.margin_delta)}


def _rating_prefix(trace: dict[str, object]) -> str | None:
    rated = trace.get("rating")
    if isinstance(rated, dict) and rated.get("prefix"):
        return str(rated["prefix"])
    return None


def compare(call: Recorded, decision: Decision, customer: str | None = None) -> Replayed:
    """The call before (its CDR) and after (the candidate's decision)."""
    answered = call.duration_s > 0
    revenue_before = (call.customer_price or ZERO) if answered else ZERO
    cost_before = (call.vendor_cost or ZERO) if answered else ZERO
    destination = call.priced_at or _rating_prefix(decision.trace) or "unpriced"
    who = customer or call.ban or (str(call.account_id) if call.account_id else "unknown")
    if isinstance(decision, Relay):
        first = decision.routes[0]
        owed = rating.bill(call.duration_s, 0, decision.price, first.rate, first.terms)
        return Replayed(call.cdr_id, call.call_id, destination, who, call.provider_id, first.vendor_id,
                        first.vendor_name, None, call.duration_s, revenue_before, owed.customer_price,
                        cost_before, owed.vendor_cost)
    return Replayed(call.cdr_id, call.call_id, destination, who, call.provider_id, None, None,
                    f"{decision.code} {decision.reason}", call.duration_s, revenue_before, ZERO, cost_before, ZERO)


@dataclass(slots=True)
class Tally:
    calls: int = 0
    rerouted: int = 0
    refused: int = 0
    newly_routed: int = 0
    revenue_before: Decimal = ZERO
    revenue_after: Decimal = ZERO
    cost_before: Decimal = ZERO
    cost_after: Decimal = ZERO

    def add(self, call: Replayed) -> None:
        self.calls += 1
        self.rerouted += call.rerouted
        self.refused += call.refused
        self.newly_routed += call.newly_routed
        self.revenue_before += call.revenue_before
        self.revenue_after += call.revenue_after
        self.cost_before += call.cost_before
        self.cost_after += call.cost_after

    @property
    def margin_before(self) -> Decimal:
        return self.revenue_before - self.cost_before

    @property
    def margin_after(self) -> Decimal:
        return self.revenue_after - self.cost_after

    def to_json(self) -> dict[str, object]:
        return {"calls": self.calls, "rerouted": self.rerouted, "refused": self.refused,
                "newly_routed": self.newly_routed,
                "revenue": {"before": str(self.revenue_before), "after": str(self.revenue_after),
                            "delta": str(self.revenue_after - self.revenue_before)},
                "cost": {"before": str(self.cost_before), "after": str(self.cost_after),
                         "delta": str(self.cost_after - self.cost_before)},
                "margin": {"before": str(self.margin_before), "after": str(self.margin_after),
                           "delta": str(self.margin_after - self.margin_before)}}


@dataclass(frozen=True, slots=True)
class Skipped:
    cdr_id: UUID | None
    call_id: str | None
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"cdr_id": str(self.cdr_id) if self.cdr_id else None, "call_id": self.call_id, "reason": self.reason}


@dataclass
class Report:
    """A replay's result. Changed calls and unreplayable CDRs are listed up to ``max_listed``
    each (counted in full)."""

    candidate: str
    snapshot: str
    start: datetime
    end: datetime
    max_listed: int = 1000
    total: Tally = field(default_factory=Tally)
    by_destination: dict[str, Tally] = field(default_factory=dict)
    by_customer: dict[str, Tally] = field(default_factory=dict)
    changes: list[Replayed] = field(default_factory=list)
    changed: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    unidentified: int = 0  # refused before a trunk was known (unknown source, failed digest): nothing to route
    unreplayable: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, call: Replayed) -> None:
        self.total.add(call)
        self.by_destination.setdefault(call.destination, Tally()).add(call)
        self.by_customer.setdefault(call.customer, Tally()).add(call)
        if call.changed:
            self.changed += 1
            if len(self.changes) < self.max_listed:
                self.changes.append(call)

    def skip(self, cdr_id: UUID | None, call_id: str | None, reason: str) -> None:
        self.unreplayable += 1
        kind = reason.split(":", 1)[0][:80]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        if len(self.skipped) < self.max_listed:
            self.skipped.append(Skipped(cdr_id, call_id, reason))

    def to_json(self) -> dict[str, object]:
        return {"candidate": self.candidate, "snapshot": self.snapshot,
                "from": self.start.isoformat(), "to": self.end.isoformat(),
                "total": self.total.to_json(),
                "by_destination": {k: t.to_json() for k, t in sorted(self.by_destination.items())},
                "by_customer": {k: t.to_json() for k, t in sorted(self.by_customer.items())},
                "changed": self.changed, "changes": [c.to_json() for c in self.changes],
                "unidentified": self.unidentified,
                "unreplayable": self.unreplayable, "unreplayable_reasons": dict(sorted(self.reasons.items())),
                "skipped": [s.to_json() for s in self.skipped]}
