"""Decision: for one new call (an initial INVITE), relay it or refuse it, and say why.

Pure: a request value and the routing snapshot in, a decision value out. The KEMI adapter maps
``Relay`` and ``Reject`` onto Kamailio; tests and ``route explain`` read the same values.

Refusals and their SIP answers:

=====================================  ====  ==========================================
situation                              code  reason phrase / Reason header
=====================================  ====  ==========================================
source address matches no trunk ACL    403   Forbidden
trunk disabled                         403   Trunk disabled
account suspended / closed             403   Account suspended / Account closed
trunk has no routing plan              503   No routing plan (Q.850 cause 47)
dialed number unreadable               484   Address Incomplete (Q.850 cause 28)
no vendor of the plan has a rate       404   No Route (Q.850 cause 3)
vendors priced but none usable now     503   No Route Available (Q.850 cause 34)
=====================================  ====  ==========================================

404 is final for the customer (the destination is not one we sell); 503 tells the customer's
switch that trying another carrier makes sense.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from routing_engine import auth, lcr
from routing_engine.numbers import E164, NumberError, normalise
from routing_engine.snapshot import AccountStatus, Jurisdiction, RoutingSnapshot


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


@dataclass(frozen=True, slots=True)
class Relay:
    routes: tuple[lcr.Route, ...]
    context: CallContext
    trace: dict[str, object]


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


def decide_invite(
    request: CallRequest, snapshot: RoutingSnapshot, now: datetime, default_region: str = "US"
) -> Decision:
    trace: dict[str, object] = {"snapshot": snapshot.version}
    trunk_id = auth.identify_by_acl(
        snapshot.acl_by_specificity, request.source_ip, request.source_port, request.transport
    )
    trunk = snapshot.trunks.get(trunk_id) if trunk_id is not None else None
    if trunk is None:
        trace["auth"] = f"no trunk ACL matches {request.source_ip}"
        return Reject(403, "Forbidden", trace=trace)
    account = snapshot.accounts.get(trunk.account_id)
    context = CallContext(account_id=trunk.account_id, trunk_id=trunk.id)
    trace["auth"] = {"method": "acl", "trunk": trunk.name}
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
        dialed = normalise(request.dialed, default_region)
    except NumberError as exc:
        trace["number"] = str(exc)
        return Reject(484, "Address Incomplete", context, trace, q850_cause=28)
    context = CallContext(
        account_id=account.id,
        trunk_id=trunk.id,
        from_e164=str(caller) if caller else None,
        to_e164=str(dialed),
    )
    trace["numbers"] = {"to": str(dialed), "from": str(caller) if caller else None}

    plan = snapshot.plans.get(trunk.routing_plan_id) if trunk.routing_plan_id else None
    if plan is None:
        trace["plan"] = None
        return Reject(503, "No routing plan", context, trace, q850_cause=47)
    # Jurisdiction arrives with the LCR issue; until then NANP calls take the indeterminate rate.
    jurisdiction = Jurisdiction.INDETERMINATE if dialed.is_nanp else Jurisdiction.INTERNATIONAL
    candidates = lcr.examine(plan, snapshot, dialed.digits, jurisdiction, now)
    trace["plan"] = plan.name
    trace["jurisdiction"] = jurisdiction.value
    trace["candidates"] = [c.explain() for c in candidates]
    found = lcr.routes(candidates, snapshot)
    if not found:
        if any(c.rate is not None for c in candidates):
            return Reject(503, "No Route Available", context, trace, q850_cause=34)
        return Reject(404, "No Route", context, trace, q850_cause=3)
    trace["routes"] = [f"{r.vendor_name}/{r.gateway.name}" for r in found]
    return Relay(tuple(found), context, trace)
