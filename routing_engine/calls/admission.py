"""Admission of a routed call: its place in the limits and its first funds slice, across every node.

``admit`` answers with the call's reservation and the decision's trace with what admission
found, or with the refusal (the code, the reason and the extra headers); the decision itself is
never written into. Redis unavailable is a refusal too: money
is never guessed. The call's place and its funds are held under the identity the handler gave
the call (its CDR id), never under its Call-ID, which the caller chooses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from routing_engine import metrics
from routing_engine.adapters.money import Funds, SlicePrice
from routing_engine.calls.ports import Node
from routing_engine.domain import rating
from routing_engine.domain.decision import Reject, Relay

log = logging.getLogger("warp.calls")


@dataclass(frozen=True, slots=True)
class Admitted:
    reserved_micros: int
    max_s: int  # the talk its first funds slice pays for (at most the configured cap)
    trace: dict[str, object]  # the decision's trace with the funds reserved


@dataclass(frozen=True, slots=True)
class Refused:
    reject: Reject
    headers: tuple[str, ...] = ()


def admit(app: Node, call: UUID, call_id: str, decision: Relay, now: datetime) -> Admitted | Refused:
    """Admit ``call`` (our identity for it; ``call_id`` is its SIP Call-ID, for the logs): its
    place in the limits and its first funds slice in one script, one round trip. ``max_s`` is
    what that slice pays for; the node's renewal task (calls/slices.py) extends it while the
    call lasts and the account pays."""
    snapshot = app.snapshot()
    ctx = decision.context
    if ctx.trunk_id is None or ctx.account_id is None:
        raise ValueError("a routed call without its trunk and account")
    trunk = snapshot.trunks[ctx.trunk_id]
    account = snapshot.accounts[ctx.account_id]
    cap = app.settings.sip.max_call_duration_s
    slice_s = min(app.settings.money.slice_s, cap)
    # until it is answered and its first slice is spent; renewals move it on from there
    hold = app.settings.sip.fr_inv_timeout_ms // 1000 + slice_s + 60
    unavailable = Refused(Reject(503, "Service Unavailable", ctx, decision.trace), ("Retry-After: 5",))
    credit = rating.to_micros(account.credit_limit) if account.billing_type == "postpaid" else 0
    funds = Funds(credit, slice_s, cap, SlicePrice.of(decision.price))
    try:
        trunk_cps = trunk.cps_limit or app.settings.sip.default_trunk_cps
        admission = app.limits.admit(call, trunk.id, account.id, now.timestamp(), hold, trunk_cps,
                                     account.cps_limit, trunk.max_concurrent, account.max_concurrent, funds)
    except Exception as exc:
        log.error("call %s refused: limits and funds unavailable (%s)", call_id, exc)
        return unavailable
    if admission.limit == "funds":
        trace = {**decision.trace, "funds": {"available": str(rating.from_micros(admission.available_micros))}}
        return Refused(Reject(402, "Insufficient funds", ctx, trace))
    if not admission.ok:
        metrics.LIMIT_REFUSALS.labels(admission.limit, admission.scope).inc()
        reason = "CPS limit exceeded" if admission.limit == "cps" else "Call limit reached"
        trace = {**decision.trace, "limits": f"{admission.scope} {admission.limit} limit reached"}
        return Refused(Reject(503, reason, ctx, trace),
                       (f"Retry-After: {1 if admission.limit == 'cps' else 5}",))
    trace = {**decision.trace, "funds": {"reserved": str(rating.from_micros(admission.reserved_micros)),
                                         "max_s": admission.paid_s}}
    return Admitted(admission.reserved_micros, admission.paid_s, trace)


def release(app: Node, call: UUID, call_id: str, trunk_id: UUID, account_id: UUID) -> None:
    """Give back a call's place in the limits now (best effort: it expires by itself)."""
    try:
        app.limits.release(call, trunk_id, account_id)
    except Exception as exc:
        log.warning("limits of %s not released now (%s); they expire on their own", call_id, exc)
