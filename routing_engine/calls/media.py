"""Media anchoring in the call's life: the trunk's media plan applied through rtpengine.

- ``start``      initial INVITE: decide the plan, offer the customer's SDP (a late-offer INVITE
                 has none: the vendor's 200 carries the offer).
- ``in_dialog``  re-INVITE / UPDATE / ACK inside the dialog: offer an SDP a request carries,
                 answer the SDP an ACK carries (late offer).
- ``on_reply``   a 18x/2xx SDP answers the request's offer, or is the offer itself when the
                 request had none.
- ``finish``     every end of a call: the session's statistics are read and the session
                 deleted, by Call-ID and the caller's From tag through the ng protocol, which
                 works where no SIP message of the call is at hand (the dialog timeout). The From
                 tag matters: two calls may share a Call-ID, and ending one must not end the
                 other's media.

Offer and answer work on the message at hand (``Sip.rtp``: Kamailio's rtpengine module rewrites
its SDP); the rest uses the ng protocol (``MediaSessions``). Which side sent an SDP decides its
flags (domain.media_plan.ng_flags). Every failure is counted in one place: ``Node.count_media_failure``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from routing_engine.adapters.rtpengine_ng import NgError
from routing_engine.calls.ports import MediaSessions, Node, Sip
from routing_engine.calls.sip import ArmMedia
from routing_engine.domain.media_plan import (
    MediaPlan,
    MediaPolicy,
    OnFailure,
    Op,
    Side,
    call_stats,
    ng_flags,
    plan_media,
)

log = logging.getLogger("warp.media")


class Media:
    def __init__(self, node: Node, sip: Sip, sessions: MediaSessions) -> None:
        self.node, self.sip, self.sessions = node, sip, sessions

    def _failed(self, kind: str, call_id: str, detail: str) -> None:
        self.node.count_media_failure(kind)
        log.warning("call %s: media failure (%s): %s", call_id, kind, detail)

    def start(self, call_id: str, caller_tag: str, policy: MediaPolicy, nat: str | None,
              had_sdp: bool) -> tuple[dict[str, Any], str | None, ArmMedia | None]:
        """The call's media state, a refusal reason (the trunk refuses calls rtpengine cannot
        anchor) or None, and the replies to arm."""
        plan = plan_media(policy, nat, enabled=self.node.settings.media.enabled)
        state: dict[str, Any] = {**plan.to_json(), "caller_tag": caller_tag}
        if not plan.anchor:
            return state, None, None
        if had_sdp:
            offered = self.sip.rtp("offer", ng_flags(plan, Side.CUSTOMER, Op.OFFER))
        else:
            # late offer: rtpengine is only asked at the 200, when a refusal is no longer possible;
            # a trunk that refuses unanchored calls has rtpengine's presence checked now instead
            offered = plan.on_failure is OnFailure.CARRY or self.sessions.ping()
        if not offered:
            self._failed("offer", call_id, "rtpengine did not take the INVITE's offer" if had_sdp
                         else "rtpengine does not answer (late offer)")
            if plan.on_failure is OnFailure.REFUSE:
                self._failed("refused", call_id, "trunk refuses unanchored calls: 503")
                state.update(anchor=False, reason="rtpengine unavailable: refused")
                return state, "Media relay unavailable", None
            self._failed("carried", call_id, "call carried unanchored")
            state.update(anchor=False, reason="rtpengine unavailable: carried unanchored")
            return state, None, None
        state["late_offer"] = not had_sdp
        return state, None, _arm(state, Side.CUSTOMER, had_sdp)

    def in_dialog(self, state: dict[str, Any] | None, method: str, downstream: bool, had_sdp: bool,
                  call_id: str) -> ArmMedia | None:
        """A request inside an anchored dialog: its SDP goes through rtpengine too."""
        if not (state or {}).get("anchor") or method not in ("INVITE", "UPDATE", "ACK"):
            return None
        plan = MediaPlan.from_json(state or {})
        sender = Side.CUSTOMER if downstream else Side.VENDOR
        if method == "ACK":  # the answer to an offer a 200 carried (late offer)
            if had_sdp and not self.sip.rtp("answer", ng_flags(plan, sender, Op.ANSWER)):
                self._failed("answer", call_id, "rtpengine did not take the ACK's answer")
            return None
        if had_sdp and not self.sip.rtp("offer", ng_flags(plan, sender, Op.OFFER)):
            self._failed("offer", call_id, f"rtpengine did not take the {method}'s offer; sent unanchored")
            return None
        return _arm(state or {}, sender, had_sdp)

    def on_reply(self, armed: str, plan_json: str, code: int, has_sdp: bool, call_id: str) -> None:
        """A reply in a transaction whose request was anchored (``armed``: "sender:had_sdp")."""
        if not armed or not 100 < code < 300 or not has_sdp:
            return
        sender, had_sdp = armed.split(":")
        plan = MediaPlan.from_json(json.loads(plan_json))
        responder = Side.VENDOR if sender == Side.CUSTOMER.value else Side.CUSTOMER
        if had_sdp == "1":
            if not self.sip.rtp("answer", ng_flags(plan, responder, Op.ANSWER)):
                self._failed("answer", call_id, f"rtpengine did not take the {code}'s answer")
        elif not self.sip.rtp("offer", ng_flags(plan, responder, Op.OFFER)):
            self._failed("offer", call_id, f"rtpengine did not take the {code}'s offer (late offer)")

    def finish(self, call_id: str, state: dict[str, Any] | None) -> str | None:
        """The call ended: its statistics from rtpengine, then its session deleted. The CDR's
        ``media`` JSON (None for calls without media planning). Never raises: the CDR matters more."""
        if state is None:
            return None
        out: dict[str, Any] = {"anchored": bool(state.get("anchor")), "reason": state.get("reason", "")}
        if state.get("late_offer"):
            out["late_offer"] = True
        if not state.get("anchor"):
            return json.dumps(out, separators=(",", ":"))
        caller = state.get("caller_tag", "")
        try:
            try:
                out.update(call_stats(self.sessions.query(call_id, caller), caller))
            except NgError as exc:
                out["stats"] = "unavailable"
                log.info("call %s: no media statistics: %s", call_id, exc)
            try:
                self.sessions.delete(call_id, caller)
            except NgError as exc:
                # a late-offer call that never got its 200 has no session: nothing failed then
                if "Unknown call-id" not in str(exc):
                    self._failed("delete", call_id, str(exc))  # rtpengine's RTP timeout drops it later
        except Exception as exc:
            log.error("call %s: media end not handled: %s", call_id, exc)
        return json.dumps(out, separators=(",", ":"))


def _arm(state: dict[str, Any], sender: Side, had_sdp: bool) -> ArmMedia:
    return ArmMedia(sender.value, had_sdp, json.dumps(state, separators=(",", ":")))
