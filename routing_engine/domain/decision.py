"""Decision: for one new call (an initial INVITE), relay it or refuse it, and say why.

A request value, the routing snapshot and the LRN lookup in; a decision value out. The KEMI
adapter maps ``Relay`` and ``Reject`` onto Kamailio; ``warp route explain``, the CDR trace and
the tests read the same values.

Refusals and their SIP answers:

=====================================  ====  ==========================================
situation                              code  reason phrase / Reason header
=====================================  ====  ==========================================
source address matches no trunk ACL    403   Forbidden
trunk disabled                         403   Trunk disabled
account suspended / closed             403   Account suspended / Account closed
dialed number unreadable               484   Address Incomplete (Q.850 cause 28)
destination blocked by the plan        403   Destination blocked (Q.850 cause 21)
no customer rate for the destination   403   No customer rate (Q.850 cause 57)
trunk (and account) has no plan        503   No routing plan (Q.850 cause 47)
plan's strategy unknown                503   Routing plan misconfigured (Q.850 cause 47)
no vendor of the plan has a rate       404   No Route (Q.850 cause 3)
vendors priced but none usable now     503   No Route Available (Q.850 cause 34)
(e.g. all cost more than the customer
pays, unless the plan allows it)
=====================================  ====  ==========================================

Margin protection judges each vendor on a call of ``margin_duration_s`` answered seconds (the
setting ``routing.margin_expected_duration_s``, default 60): the customer's charge for it and the
vendor's cost for it, each by its own increments, minimum duration and connection fee
(lcr.MarginFloor). A call's real length is not known when it is routed; that expected length is
the stated assumption.

404 is final for the customer (the destination is not one we sell); 503 tells the customer's
switch that trying another carrier makes sense.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from routing_engine.domain import auth, lcr, lrn, translation
from routing_engine.domain.failover import Policy
from routing_engine.domain.jurisdiction import classify
from routing_engine.domain.numbers import E164, NumberError, normalise
from routing_engine.domain.rating import Price
from routing_engine.domain.snapshot import AccountStatus, RoutingSnapshot, longest_blocked
from routing_engine.domain.strategies import UnknownStrategy, strategy

LrnLookup = Callable[[E164], lrn.LrnResult]


@dataclass(frozen=True, slots=True)
class CallRequest:
    call_id: str
    source_ip: str
    source_port: int
    transport: str
    dialed: str  # user part of the Request-URI
    caller: str  # user part of the From URI


@dataclass(frozen=True, slots=True)
class CallContext:
    """What is known about the call so far; travels with it into the CDR."""

    account_id: UUID | None = None
    trunk_id: UUID | None = None
    from_e164: str | None = None
    to_e164: str | None = None
    lrn: str | None = None
    jurisdiction: str | None = None


@dataclass(frozen=True, slots=True)
class Relay:
    routes: tuple[lcr.Route, ...]
    context: CallContext
    trace: dict[str, object]
    policy: Policy
    price: Price  # what the customer pays for this call


@dataclass(frozen=True, slots=True)
class Reject:
    code: int
    reason: str
    context: CallContext = field(default_factory=CallContext)
    trace: dict[str, object] = field(default_factory=dict)
    q850_cause: int | None = None

    @property
    def reason_header(self) -> str | None:
        if self.q850_cause is None:
            return None
        return f'Reason: Q.850;cause={self.q850_cause};text="{self.reason}"'


Decision = Relay | Reject


def _no_lrn(number: E164) -> lrn.LrnResult:
    return lrn.LrnResult(None, "failed", "no LRN source configured") if lrn.needs_dip(number) else lrn.SKIPPED


def _not_judged(vendor_id: UUID, destination: str) -> str | None:
    return None


def decide_invite(
    request: CallRequest,
    snapshot: RoutingSnapshot,
    now: datetime,
    default_region: str = "US",
    lrn_lookup: LrnLookup = _no_lrn,
    trunk_id: UUID | None = None,
    method: str = "given",
    gateway_up: Callable[[UUID], bool] = lambda gateway_id: True,
    demotion: Callable[[UUID, str], str | None] = lambda vendor_id, destination: None,
    margin_duration_s: int = 60,
) -> Decision:
    """``trunk_id`` skips source identification: the trunk was identified by digest
    (``method="digest"``) or named for an explanation."""
    trace: dict[str, object] = {"snapshot": snapshot.version}
    if trunk_id is None:
        found = auth.identify(snapshot, request.source_ip, request.source_port, request.transport,
                              request.dialed)
    else:
        found = auth.Identified(trunk_id, auth.strip_tech_prefix(snapshot, trunk_id, request.dialed), method)
    trunk = snapshot.trunks.get(found.trunk_id) if found is not None else None
    if found is None or trunk is None:
        trace["auth"] = f"no trunk ACL matches {request.source_ip}"
        return Reject(403, "Forbidden", trace=trace)
    account = snapshot.accounts.get(trunk.account_id)
    context = CallContext(account_id=trunk.account_id, trunk_id=trunk.id)
    trace["auth"] = {"method": found.method, "trunk": trunk.name,
                     **({"tech_prefix": found.tech_prefix} if found.tech_prefix else {})}
    if not trunk.enabled:
        return Reject(403, "Trunk disabled", context, trace)
    if account is None or account.status in (AccountStatus.SUSPENDED, AccountStatus.CLOSED):
        status = account.status.value if account else "missing"
        trace["account"] = status
        return Reject(403, f"Account {status}", context, trace)
    trace["account"] = {"ban": account.ban, "status": account.status.value}

    caller: E164 | None
    try:
        caller = normalise(request.caller, default_region)
    except NumberError:
        caller = None  # a missing or odd caller ID does not stop routing; it is recorded
    try:
        dialed = normalise(translation.dialed_from_trunk(found.dialed, trunk), default_region)
    except NumberError as exc:
        trace["number"] = str(exc)
        return Reject(484, "Address Incomplete", context, trace, q850_cause=28)
    numbers: dict[str, object] = {"to": str(dialed), "from": str(caller) if caller else None}
    trace["numbers"] = numbers
    context = CallContext(account_id=account.id, trunk_id=trunk.id,
                          from_e164=str(caller) if caller else None, to_e164=str(dialed))

    plan = snapshot.plan_for(trunk)
    if plan is None:
        trace["plan"] = None
        return Reject(503, "No routing plan", context, trace, q850_cause=47)
    trace["plan"] = {"name": plan.name, "strategy": plan.strategy}
    blocked = longest_blocked(plan.blocked, dialed.digits)
    if blocked is not None:
        trace["blocked"] = f"plan {plan.name} blocks prefix {blocked}"
        return Reject(403, "Destination blocked", context, trace, q850_cause=21)
    try:
        order = strategy(plan.strategy)
    except UnknownStrategy as exc:
        trace["error"] = str(exc)
        return Reject(503, "Routing plan misconfigured", context, trace, q850_cause=47)

    dip = lrn_lookup(dialed)
    trace["lrn"] = dip.explain()
    destination = dip.lrn or dialed.digits
    classification = classify(dialed, caller, destination, snapshot.npanxx)
    trace["jurisdiction"] = classification.explain()
    context = CallContext(account_id=account.id, trunk_id=trunk.id,
                          from_e164=context.from_e164, to_e164=context.to_e164,
                          lrn=("+" + dip.lrn) if dip.lrn else None,
                          jurisdiction=classification.kind.value)

    rate_plan = snapshot.rate_plan_for(trunk)
    customer_rate = rate_plan.rate_for(destination, now) if rate_plan else None
    if customer_rate is None:
        trace["rating"] = {"plan": rate_plan.name if rate_plan else None, "rate": None}
        return Reject(403, "No customer rate", context, trace, q850_cause=57)
    price = Price(customer_rate.price_for(classification.kind), customer_rate.initial_s,
                  customer_rate.subsequent_s, customer_rate.min_duration_s, customer_rate.connection_fee,
                  customer_rate.prefix)
    trace["rating"] = {"plan": rate_plan.name if rate_plan else None, **price.explain()}
    # Margin protection: for a call of the expected length, a vendor may cost at most the charge
    # minus the plan's minimum margin.
    floor = None if plan.allow_negative_margin else lcr.MarginFloor(price, margin_duration_s, plan.min_margin)
    judged = demotion if plan.strategy == "quality" else _not_judged
    verdicts = lcr.examine(plan, snapshot, dialed.digits, destination, classification.kind, now, floor,
                           gateway_up, judged)
    kept = order([c for c in verdicts if c.kept], random.Random(_seed(request.call_id)))
    trace["candidates"] = [c.explain() for c in kept + [c for c in verdicts if not c.kept]]
    # only as many routes as the plan will try are built (each one costs a number translation)
    routes = tuple(itertools.islice((
        lcr.Route(c.vendor_id, c.vendor_name, gw, c.rate, c.prefix,
                  ruri_user=translation.dialed_for_vendor(dialed, dip, vendor.translation),
                  from_user=translation.caller_for_vendor(caller, vendor.translation), terms=c.terms)
        for c in kept
        if c.rate is not None and c.prefix is not None
        for vendor in (snapshot.vendors[c.vendor_id],)
        for gw in vendor.gateways
        if gw.enabled and gateway_up(gw.id)
    ), plan.max_attempts))
    if not routes:
        if any(c.rate is not None for c in verdicts):
            return Reject(503, "No Route Available", context, trace, q850_cause=34)
        return Reject(404, "No Route", context, trace, q850_cause=3)
    policy = Policy(plan.failover_codes, plan.max_attempts, plan.attempt_timeout_ms)
    trace["routes"] = [
        {"vendor": r.vendor_name, "gateway": r.gateway.name, "ruri": r.ruri,
         **({"from": r.from_user} if r.from_user else {})}
        for r in routes[: policy.max_attempts]
    ]
    return Relay(routes, context, trace, policy, price)


def _seed(call_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
