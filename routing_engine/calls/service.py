"""The call's life, from its INVITE to its CDR, as one service with no Kamailio in it.

kemi/ reads a SIP message into values, calls one method here, and applies the action it gets
back (routing_engine/calls/sip.py); the call's state travels between callbacks as one typed
value (routing_engine/calls/state.py) kept in its dialog.

- ``shed``        every request first: blocked sources and floods get silence.
- ``invite``      identify (vendor gateway → inbound delivery; trunk ACL; digest) → decide →
                  admit (limits, funds) → media plan → the first vendor.
- ``register``    digest, then the trunk's bindings.
- ``branch`` / ``vendor_reply`` / ``failure`` / ``forward_failed``: each vendor attempt, its
                  ringing, and failover to the next one or the customer's final answer.
- ``in_dialog`` / ``by_dialog``: requests inside a call, only from one of its two sides.
- ``answered`` / ``ended``: the dialog's start and end.
- ``finish``      every end of a call comes here once: limits released, CDR with its money.
- ``salvage``     a callback failed with an admitted call in hand: it ends all the same.

Time is passed in (``now``) by the caller of every method.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from routing_engine import metrics
from routing_engine.adapters.quality import Outcome
from routing_engine.calls import admission, registration
from routing_engine.calls.media import Media
from routing_engine.calls.ports import MediaSessions, Node, Sip
from routing_engine.calls.sip import (
    NOTHING,
    Action,
    Challenge,
    Failure,
    Forward,
    Invite,
    Relay,
    Reply,
    Setup,
)
from routing_engine.calls.slices import Keeper
from routing_engine.calls.state import CallState, Route
from routing_engine.domain import auth, failover, inbound, rating, topology
from routing_engine.domain.cdr import CdrRecord, billable_duration, compact_trace, lrn_source_of, pdd_ms, q850_cause
from routing_engine.domain.decision import CallRequest, Reject
from routing_engine.domain.decision import Relay as Routed
from routing_engine.domain.destinations import parse_ip, uri_target
from routing_engine.domain.failover import Attempt
from routing_engine.domain.media_plan import behind_nat

log = logging.getLogger("warp.calls")

AUTH_INVALID_PASSWORD, AUTH_STALE_NONCE, AUTH_NO_CREDENTIALS, AUTH_NONCE_REUSED = -2, -4, -5, -6  # auth results
FLOOD_TABLE, PEER_TABLE, BLOCK_TABLE = "warpflood", "warppeer", "warpblock"  # kamailio.cfg htables
TIMEOUT_ROUTE = "WARP_TIMEOUT"  # kamailio.cfg's route: the dialog's timeout is reported before its BYEs


@functools.lru_cache(maxsize=4096)  # every request's source; a flood of new ones only evicts
def canonical_ip(text: str) -> str:
    address = parse_ip(text)
    return text if address is None else str(address)


@dataclass(frozen=True, slots=True)
class Shed:
    drop: bool
    tcp_lifetime_s: int | None = None  # a peer's TCP connection is kept this long


class CallService:
    def __init__(self, node: Node, sip: Sip, sessions: MediaSessions) -> None:
        self.node, self.sip = node, sip
        self.media = Media(node, sip, sessions)
        self.slices = Keeper(node, sip)  # the node's calls whose funds are renewed slice by slice
        # the admitted call the callback in progress holds and has not finished: if that callback
        # fails, ``salvage`` still ends it (CDR, charge, limits released)
        self.open_call: CallState | None = None

    # ------------------------------------------------------------------ the edge
    def shed(self, source_ip: str, transport: str, now: float, in_known_dialog: Callable[[], bool]) -> Shed:
        """Requests from a blocked source and floods (every request kind, counted per source
        address and second on this node) get silence. Peers (trunk ACL addresses, vendor
        gateways, addresses that proved a digest credential here) have the higher limit. A
        blocked source's in-dialog requests of calls in progress still pass, so those calls end
        (and are billed) when they end."""
        node, sip = self.node, self.sip
        source = canonical_ip(source_ip)
        # a table entry past its autoexpire counts as gone
        peer = node.is_peer(source) or sip.table_get(PEER_TABLE, source) is not None
        s = node.settings.sip
        limit = s.flood_peer_rps if peer else s.flood_rps
        count = sip.table_inc(FLOOD_TABLE, f"{source}/{int(now)}")
        if count > limit:
            if count == limit + 1:
                metrics.FLOOD_DROPS.inc()
                log.warning("source %s over its flood limit this second: requests dropped", source)
            return Shed(True)
        lifetime = s.tcp_peer_lifetime_s if transport == "tcp" and peer else None
        blocked = sip.table_get(BLOCK_TABLE, source) is not None or (
            node.blocks is not None and node.blocks.blocked(source, now))
        if blocked and not in_known_dialog():
            metrics.AUTH_FAILURES.labels("blocked_source").inc()
            return Shed(True)
        return Shed(False, lifetime)

    def refused_destination(self, uri: str) -> str | None:
        """Why a request may not go to ``uri``: one of this node's own services or no SIP peer's
        address (routing_engine/domain/destinations.py)."""
        host, port = uri_target(uri)
        return self.node.destination_refusal(host, port)

    # ------------------------------------------------------------------ new calls
    def invite(self, msg: Invite, now: datetime) -> Action:
        metrics.INITIAL_INVITES.inc()
        request, snapshot = msg.request, self.node.snapshot()
        if not request.caller:
            return self._refuse(request, now, Reject(400, "Bad From"))
        gateway = snapshot.gateway_hosts.get(canonical_ip(request.source_ip))
        if gateway is not None:
            return self._inbound(msg, gateway, now)
        found = auth.identify(snapshot, request.source_ip, request.source_port, request.transport, request.dialed)
        if found is not None:
            trunk_id, method = found.trunk_id, "acl"
        else:
            proven = self._digest(msg, now, invite=True)
            if not isinstance(proven, uuid.UUID):
                return proven  # challenged, refused or dropped already
            trunk_id, method = proven, "digest"
        with metrics.DECISION_SECONDS.time():
            decision = self.node.decide(request, snapshot, now, trunk_id=trunk_id, method=method)
        if isinstance(decision, Reject):
            return self._refuse(request, now, decision)
        return self._admit(msg, decision, now)

    def register(self, msg: Invite, contacts: Sequence[str], expires: str, user_agent: str, now: datetime) -> Action:
        proven = self._digest(msg, now, invite=False)
        if not isinstance(proven, uuid.UUID):
            return proven
        return registration.register(self.node, msg.request, proven, contacts, expires, user_agent, now)

    def _digest(self, msg: Invite, now: datetime, invite: bool) -> uuid.UUID | Action:
        """The trunk proven by digest credentials, or what to answer instead (a challenge, a
        refusal)."""
        node, sip = self.node, self.sip
        realm = node.settings.auth.realm
        credential = auth.credential(node.snapshot(), msg.auth_user)
        # An unknown user is checked against a random HA1: it fails exactly like a wrong password.
        result = sip.auth_check(realm, credential.ha1 if credential is not None else node.unknown_user_ha1)
        source = canonical_ip(msg.request.source_ip)
        if result == 1 and credential is not None:
            sip.consume_credentials()
            sip.table_put(PEER_TABLE, source, "1")
            return credential.trunk_id
        if result in (AUTH_STALE_NONCE, AUTH_NO_CREDENTIALS, AUTH_NONCE_REUSED):
            # none sent, stale, bound to another request or address, or used already: a challenge
            return Challenge(stale=result in (AUTH_STALE_NONCE, AUTH_NONCE_REUSED))
        metrics.AUTH_FAILURES.labels("bad_credentials").inc()
        # Only a wrong password against a nonce we issued to this very address counts toward a
        # block (the nonce is bound to the source IP): a spoofer who never saw our challenge
        # cannot make one, so forged UDP cannot block a customer. A peer is never blocked so.
        if result == AUTH_INVALID_PASSWORD and not node.is_peer(source):
            try:
                if node.defence.record_failure(source):
                    metrics.IP_BLOCKS.inc()
                    sip.table_put(BLOCK_TABLE, source, "1")  # every worker here, at once
                    log.warning("source %s blocked after repeated digest failures", source)
            except Exception as exc:
                log.warning("auth failure not counted, Redis unavailable: %s", exc)
        if invite:
            node.emit_cdr(self._refusal_cdr(msg.request, now, Reject(403, "Forbidden")))
        return Reply(403, "Forbidden")

    def _refuse(self, request: CallRequest, now: datetime, decision: Reject, direction: str = "outbound",
                headers: tuple[str, ...] = ()) -> Reply:
        self.node.emit_cdr(self._refusal_cdr(request, now, decision, direction))
        log.info("call %s refused %d %s", request.call_id, decision.code, decision.reason)
        extra = (decision.reason_header,) if decision.reason_header else ()
        return Reply(decision.code, decision.reason, (*extra, *headers))

    def _inbound(self, msg: Invite, gateway: Any, now: datetime) -> Action:
        request, snapshot = msg.request, self.node.snapshot()
        decision = inbound.decide_inbound(
            request.dialed, request.caller, gateway, snapshot,
            lambda trunk_id: self.node.registrations.contacts(trunk_id, now.timestamp()),
            self.node.settings.routing.default_region)
        if isinstance(decision, Reject):
            return self._refuse(request, now, decision, direction="inbound")
        vendor = snapshot.vendors.get(gateway.vendor_id)
        ctx = decision.context
        first, *others = decision.targets
        state = CallState(
            uuid.uuid4(), request.call_id, "inbound", now, request.dialed, request.caller,
            ctx.account_id, ctx.trunk_id, ctx.from_e164, ctx.to_e164, trace=compact_trace(decision.trace),
            routes=(Route(str(gateway.vendor_id), vendor.name if vendor else "", gateway.gateway.name, first.ruri),),
            peers=(canonical_ip(request.source_ip),))
        trunk = snapshot.trunks.get(ctx.trunk_id) if ctx.trunk_id else None
        # every registered contact rings at once; the first to answer takes the call
        return Forward(state, first.ruri, first.dst, tuple((t.ruri, t.dst) for t in others),
                       setup=Setup(skip_topology=self._skip_topology(msg, trunk)))

    def _admit(self, msg: Invite, decision: Routed, now: datetime) -> Action:
        request, node = msg.request, self.node
        # The call's identity, given here and kept in its dialog: its limits place, its funds, its
        # charge and its CDR are all keyed by it. A Call-ID is the caller's choice, and two calls
        # may share one (a new From tag on a known Call-ID is a new call).
        cdr_id = uuid.uuid4()
        admitted = admission.admit(node, cdr_id, request.call_id, decision, now)
        if isinstance(admitted, admission.Refused):
            return self._refuse(request, now, admitted.reject, headers=admitted.headers)
        ctx, snapshot = decision.context, node.snapshot()
        account = snapshot.accounts.get(ctx.account_id) if ctx.account_id else None
        routes = tuple(Route(str(r.vendor_id), r.vendor_name, r.gateway.name, r.ruri, r.from_user, str(r.rate),
                             r.terms.to_text())
                       for r in decision.routes[: decision.policy.max_attempts])
        state = CallState(
            cdr_id, request.call_id, "outbound", now, request.dialed, request.caller, ctx.account_id,
            ctx.trunk_id, ctx.from_e164, ctx.to_e164, ctx.lrn, lrn_source_of(decision.trace),
            account.ban if account else None, ctx.jurisdiction, compact_trace(admitted.trace), decision.policy, routes,
            limited=True, reserved=admitted.reserved_micros, max_s=admitted.max_s, price=decision.price,
            peers=(canonical_ip(request.source_ip),))
        self.open_call = state  # from here on, whatever fails, the call ends with its CDR and money
        trunk = snapshot.trunks[ctx.trunk_id]  # type: ignore[index]
        nat = behind_nat(request.source_ip, request.source_port, msg.via, msg.contact)
        media, refused, arm = self.media.start(request.call_id, msg.from_tag, trunk.media, nat, msg.has_sdp)
        state = state.evolve(media=media)
        self.open_call = state
        if refused:
            self.finish(state, 503, refused, now)
            return Reply(503, refused, ("Retry-After: 5",))
        setup = Setup(admitted.max_s, self._skip_topology(msg, trunk), arm)
        self.slices.register(state, now.timestamp())  # the node's renewal task extends it while paid
        return self._attempt(state, 0, now, setup)

    def _skip_topology(self, msg: Invite, trunk: Any) -> str | None:
        return None if topology.hides(trunk) else topology.skip_key(msg.request.call_id, msg.from_tag)

    def _attempt(self, state: CallState, index: int, now: datetime, setup: Setup | None = None) -> Forward:
        """Send the INVITE to route ``index``. The branch route runs only where it has work: the
        vendor wants the caller written its way, or the destination is refused (the branch route
        drops the branch, and the failure route moves on, as for any branch)."""
        s = self.node.settings.sip
        route = state.routes[index]
        state = state.evolve(route=index, attempt_at=now.isoformat(), attempt_ring=None)
        timers = (s.fr_inv_timeout_ms, state.policy.attempt_timeout_ms or s.fr_timeout_ms)
        branch_route = bool(route.from_user) or self.refused_destination(route.ruri) is not None
        return Forward(state, route.ruri, timers_ms=timers, vendor_replies=True, setup=setup,
                       branch_route=branch_route)

    def relayed(self) -> None:
        """The INVITE is on its way: its end comes with the failure route or the dialog's end."""
        self.open_call = None

    # ------------------------------------------------------------------ vendor attempts
    def branch(self, state: CallState | None, uri: str, call_id: str) -> str | None:
        """A branch about to leave: "" to drop it, the From user to write, or None (as it is)."""
        if (refused := self.refused_destination(uri)) is not None:
            metrics.SIP_REFUSED.labels("destination").inc()
            log.warning("call %s: branch to %s dropped: %s", call_id, uri, refused)
            return ""  # this branch is not sent; the failure route moves on
        route = state.current if state is not None else None
        return route.from_user if route is not None and route.from_user else None

    def vendor_reply(self, state: CallState, code: int, now: datetime) -> CallState | None:
        """A vendor's reply to the INVITE: its first ringing, for the PDD (None: nothing new)."""
        if not 180 <= code < 190 or state.attempt_ring:
            return None
        at = now.isoformat()
        return state.evolve(attempt_ring=at, ring_at=state.ring_at or at)

    def failure(self, state: CallState, f: Failure, now: datetime) -> Action:
        """A vendor's final failure: the next vendor, or the customer's final answer."""
        self.open_call = state
        route = state.routes[state.route]
        if f.canceled:  # the customer gave up: tm answers 487 itself; nothing more is tried
            attempts = (*state.attempts, _attempt(state, route, 487, "Request Terminated", now))
            self.finish(state.evolve(attempts=attempts), 487, "Request Terminated", now, hangup_side="caller")
            return NOTHING
        attempt = _attempt(state, route, f.code, f.reason, now, q850_cause(f.reason_header))
        return self._next(state.evolve(attempts=(*state.attempts, attempt)), f, now)

    def forward_failed(self, forward: Forward, now: datetime, failure: Failure | None) -> Action:
        """tm could not send ``forward``. A new call ends there (500); within failover, the next
        vendor is tried."""
        state = forward.state
        attempts = (*state.attempts, _attempt(state, state.routes[state.route], 500, "Relay failed", now))
        if failure is None:
            self.finish(state.evolve(attempts=attempts), 500, "Relay failed", now, hangup_side="proxy")
            return Reply(500, "Relay failed")
        return self._next(state.evolve(attempts=attempts), failure, now)

    def _next(self, state: CallState, f: Failure, now: datetime) -> Action:
        index = failover.next_route(state.policy, len(state.routes), state.attempts)
        if index is not None:
            log.info("call %s: %s answered %d, trying %s", state.call_id, state.attempts[-1].vendor,
                     state.attempts[-1].code, state.routes[index].vendor)
            return self._attempt(state, index, now)
        code, reason = failover.best_response(state.attempts)
        final = next(a for a in state.attempts if a.code == code)
        self.finish(state, code, reason, now, q850=final.q850_cause,
                    hangup_side="proxy" if f.branch_timeout else "callee")
        # Answered by us, not relayed: a relayed 503 would be turned into 500 (RFC 3261 16.7),
        # but a carrier's 503 is what tells the customer's switch to try elsewhere.
        return Reply(code, reason, stateful=True)

    # ------------------------------------------------------------------ inside the dialog
    def foreign(self, state: CallState | None, known_dialog: bool, source_ip: str) -> str | None:
        """Why an in-dialog request is not one of the call we carry (None: it is). A Route header
        naming us is not enough (that was an open relay), and neither is a Call-ID and tags learnt
        elsewhere: it must come from an address of one of the call's two sides."""
        if not known_dialog:
            return "no dialog of ours"
        source = canonical_ip(source_ip)
        if state is not None:
            if source in state.peers:
                return None
            # a vendor may hang up from another of its gateways, a customer from another address of its ACL
            vendors = [uuid.UUID(r.vendor_id) for r in state.routes if r.vendor_id]
            if auth.speaks_for(self.node.snapshot(), source, state.trunk_id, vendors):
                return None
        return f"from {source}, not a side of the call"

    def in_dialog(self, state: CallState | None, known_dialog: bool, source_ip: str, method: str,
                  downstream: bool, has_sdp: bool, call_id: str, target: str) -> Action:
        if (foreign := self.foreign(state, known_dialog, source_ip)) is not None:
            return self._refuse_in_dialog(method, foreign)
        arm = self.media.in_dialog(state.media if state else None, method, downstream, has_sdp, call_id)
        if (refused := self.refused_destination(target)) is not None:
            return self._refuse_in_dialog(method, refused, 403, "Forbidden")
        return Relay(arm)

    def by_dialog(self, state: CallState | None, known_dialog: bool, source_ip: str,
                  contact_of: Callable[[], str], call_id: str) -> Action:
        """A BYE of a call we carry whose route topos cannot restore (it keeps it in Redis, and
        Redis is down): the dialog module knows both sides' contacts, so the BYE goes on to the
        other side and the call ends normally (no route sets: we are the only Record-Route)."""
        if (foreign := self.foreign(state, known_dialog, source_ip)) is not None:
            return self._refuse_in_dialog("BYE", foreign)
        contact = contact_of()  # the dialog takes the BYE from here on: it ends the call
        if not contact:
            return Reply(404, "Not Here")
        if (refused := self.refused_destination(contact)) is not None:
            return self._refuse_in_dialog("BYE", refused, 403, "Forbidden")
        log.warning("call %s: BYE sent on by its dialog (route not restorable)", call_id)
        return Relay(ruri=contact)

    def _refuse_in_dialog(self, method: str, why: str, code: int = 481,
                          reason: str = "Call/Transaction Does Not Exist") -> Action:
        metrics.SIP_REFUSED.labels("destination" if code == 403 else "foreign").inc()
        log.warning("in-dialog %s refused: %s", method, why)
        return NOTHING if method == "ACK" else Reply(code, reason)

    def answered(self, state: CallState, source_ip: str, now: datetime, dialog: tuple[int, int]) -> CallState:
        """The dialog (``dialog``: its ids in Kamailio) started with its 200: the answer time, the
        called side's address, and its paid time running from now."""
        self.slices.answered(state, now.timestamp(), *dialog)
        return state.evolve(answer_at=now.isoformat(), peers=(*state.peers, canonical_ip(source_ip)))

    def ended(self, state: CallState, timeout: bool, by_tag: str, from_tag: str, reason_header: str,
              now: datetime) -> None:
        """dialog:end, or the timeout event, which comes first when the call's time is up (the
        dialog module then sends BYE both ways, and its dialog:end may never fire). Whichever comes
        first records the call: the caller keeps ``state.done`` in the dialog before this runs."""
        self.open_call = state
        state = self.slices.finished(state)  # charged up to what its slices paid for
        self.open_call = state
        route = state.routes[state.route]
        answer = datetime.fromisoformat(state.answer_at) if state.answer_at else None
        attempts = (*state.attempts, _attempt(state, route, 200, "OK", now, ended_at=state.answer_at))
        # a BYE from the caller carries the dialog's From tag; the timeout, or no BYE at all, is ours
        side = "proxy" if timeout or not by_tag else ("caller" if by_tag == from_tag else "callee")
        self.finish(state.evolve(attempts=attempts), 200, "OK", now, answer_at=answer, hangup_side=side,
                    q850=q850_cause(reason_header) if by_tag else None)

    # ------------------------------------------------------------------ the end
    def finish(self, state: CallState, code: int, reason: str, end_at: datetime, answer_at: datetime | None = None,
               hangup_side: str | None = None, q850: int | None = None) -> None:
        """Every end of a relayed call comes here once: limits released, the CDR (with its money)
        emitted; the emitter charges it and releases the funds reservation."""
        outcomes = []
        if state.direction == "outbound":
            ids = {r.vendor: r.vendor_id for r in state.routes}
            seconds = billable_duration(answer_at, end_at)
            outcomes = [Outcome(ids[a.vendor], a.code == 200, seconds if a.code == 200 else 0, a.pdd_ms,
                                state.to_e164 or "") for a in state.attempts if a.vendor in ids and a.code != 487]
        record = self._cdr(state, code, reason, end_at, answer_at, hangup_side, q850)
        record = replace(record, media=self.media.finish(state.call_id, state.media))
        release = (state.cdr_id, state.trunk_id, state.account_id) if state.limited else None
        self.node.end_call(record, release, outcomes)
        self.open_call = None

    def salvage(self, error: Exception, now: datetime) -> CallState | None:
        """A callback failed with an admitted call in hand and not finished: end it all the same,
        from what it surely holds — its CDR (code 500), its charge if it was answered, its limits
        place released — so no call leaves without its CDR and its money."""
        state, self.open_call = self.open_call, None
        if state is None:
            return None
        answer_dt = datetime.fromisoformat(state.answer_at) if state.answer_at else None
        duration = billable_duration(answer_dt, now)
        money: dict[str, Any] = {}
        try:
            if state.price is not None:
                owed = rating.bill(duration, state.max_s, state.price, None)
                money = {"billable_s": owed.billable_s, "customer_price": owed.customer_price,
                         "customer_rate": state.price.per_minute}
        except Exception:
            log.error("call %s: price not computed (%s): its reservation is released uncharged",
                      state.call_id, traceback.format_exc())
        record = CdrRecord(
            cdr_id=state.cdr_id, call_id=state.call_id, node=self.node.settings.node.name,
            invite_at=state.invite_at, end_at=now, answer_at=answer_dt, duration_s=duration, sip_code=500,
            sip_reason=f"Server Internal Error ({type(error).__name__})", direction=state.direction,
            account_id=state.account_id, trunk_id=state.trunk_id, from_raw=state.caller, to_raw=state.dialed,
            from_e164=state.from_e164, to_e164=state.to_e164, ban=state.ban, settle=bool(state.reserved),
            hangup_side="proxy", **money)
        with contextlib.suppress(Exception):
            record = replace(record, media=self.media.finish(state.call_id, state.media))
        release = (state.cdr_id, state.trunk_id, state.account_id) if state.limited else None
        self.node.end_call(record, release)
        log.error("call %s ended by the error above: CDR %s written with what the call held", state.call_id,
                  state.cdr_id)
        return state

    def failed_invite(self, request: CallRequest, now: datetime) -> None:
        """A new INVITE's callback failed before admission: its CDR says so."""
        self.node.emit_cdr(self._refusal_cdr(request, now, Reject(500, "Server Internal Error")))

    def _refusal_cdr(self, request: CallRequest, now: datetime, decision: Reject,
                     direction: str = "outbound") -> CdrRecord:
        ctx = decision.context
        account = self.node.snapshot().accounts.get(ctx.account_id) if ctx.account_id else None
        return CdrRecord(
            cdr_id=uuid.uuid4(), call_id=request.call_id, node=self.node.settings.node.name,
            invite_at=now, end_at=now, sip_code=decision.code, sip_reason=decision.reason, direction=direction,
            account_id=ctx.account_id, trunk_id=ctx.trunk_id, from_raw=request.caller, to_raw=request.dialed,
            from_e164=ctx.from_e164, to_e164=ctx.to_e164, lrn=ctx.lrn, jurisdiction=ctx.jurisdiction,
            trace=compact_trace(decision.trace), ban=account.ban if account else None,
            lrn_source=lrn_source_of(decision.trace), q850_cause=decision.q850_cause, hangup_side="proxy")

    def _cdr(self, state: CallState, code: int, reason: str, end_at: datetime, answer_at: datetime | None,
             hangup_side: str | None, q850: int | None) -> CdrRecord:
        route = state.current
        duration = billable_duration(answer_at, end_at)
        vendor_rate = Decimal(route.rate) if route is not None and route.rate else None
        money: dict[str, Any] = {}
        if state.price is not None:
            owed = rating.bill(duration, state.max_s, state.price, vendor_rate,
                               rating.terms_from_text(route.terms if route is not None else None))
            money = {"billable_s": owed.billable_s, "customer_rate": state.price.per_minute,
                     "customer_price": owed.customer_price, "vendor_cost": owed.vendor_cost,
                     "margin": owed.margin, "settle": bool(state.reserved)}
        ringing = datetime.fromisoformat(state.ring_at) if state.ring_at else None
        return CdrRecord(
            cdr_id=state.cdr_id, call_id=state.call_id, node=self.node.settings.node.name,
            invite_at=state.invite_at, sip_code=code, sip_reason=reason, direction=state.direction,
            account_id=state.account_id, trunk_id=state.trunk_id,
            provider_id=uuid.UUID(route.vendor_id) if route is not None else None,
            gateway=route.gateway if route is not None else None,
            from_raw=state.caller, to_raw=state.dialed, from_e164=state.from_e164 or None,
            to_e164=state.to_e164 or None, answer_at=answer_at, end_at=end_at, duration_s=duration,
            vendor_rate=vendor_rate,
            trace=state.trace or None, lrn=state.lrn or None,
            jurisdiction=state.jurisdiction or None, ban=state.ban or None, lrn_source=state.lrn_source or None,
            attempts=_attempts_json(state.attempts), ringing_at=ringing,
            pdd_ms=pdd_ms(state.invite_at, ringing), q850_cause=q850, hangup_side=hangup_side, **money)


def _attempt(state: CallState, route: Route, code: int, reason: str, now: datetime, q850: int | None = None,
             ended_at: str | None = None) -> Attempt:
    """The attempt of ``route`` ending now (or at ``ended_at``), with its times and PDD."""
    started, ringing = state.attempt_at, state.attempt_ring
    pdd = pdd_ms(datetime.fromisoformat(started), datetime.fromisoformat(ringing)) if started and ringing else None
    return Attempt(route.vendor, route.gateway, code, reason, started, ringing, ended_at or now.isoformat(), pdd, q850)


def _attempts_json(attempts: Sequence[Attempt]) -> str | None:
    return json.dumps([a.to_json() for a in attempts]) if attempts else None
