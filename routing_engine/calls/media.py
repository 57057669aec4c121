"""Media anchoring from KEMI: the trunk's media plan applied through Kamailio's rtpengine module.

warp_kemi.py calls four hooks; everything media does lives here:

- ``start_call``   initial INVITE (request route): decide the plan, offer the customer's SDP
                   (a late-offer INVITE has none: the vendor's 200 carries the offer).
- ``in_dialog``    re-INVITE / UPDATE / ACK inside the dialog: offer an SDP a request carries,
                   answer the SDP an ACK carries (late offer).
- ``on_reply``     tm onreply route (``ksr_vendor_reply`` for the INVITE, ``ksr_media_reply``
                   in dialog): a 18x/2xx SDP answers the request's offer, or is the offer
                   itself when the request had none.
- ``finish``       every end of a call (BYE, CANCEL, final failure, dialog timeout): the
                   session's statistics are read and the session deleted, by Call-ID and the
                   caller's From tag through the ng protocol, which works even where no SIP
                   message of the call is at hand (the dialog timeout runs on a faked message).
                   The From tag matters: two calls may share a Call-ID (rtpengine then holds them
                   as one session with a leg per tag), and ending one must not end the other's
                   media.

Which side sent an SDP decides its flags (routing_engine.domain.media_plan.ng_flags). Every failure to reach
or use rtpengine is counted in one place: routing_engine.adapters.media_failures.count.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import KSR  # provided by app_python3

from kemi.pv import pv as _pv
from routing_engine.adapters import media_failures
from routing_engine.adapters.rtpengine_ng import NgClient, NgError
from routing_engine.domain.media_plan import (
    MediaPlan,
    MediaPolicy,
    OnFailure,
    Op,
    Side,
    behind_nat,
    call_stats,
    ng_flags,
    plan_media,
)

log = logging.getLogger("warp.media")

PLAN_AVP = "$avp(warp_mplan)"  # the call's plan, for the replies of this transaction
SDP_AVP = "$avp(warp_msdp)"    # who sent this transaction's request, and whether it had an SDP
REPLY_ROUTE = "ksr_media_reply"


def _has_sdp() -> bool:
    content_type = _pv("$cT").lower()
    return bool(_pv("$rb").strip()) and (not content_type or "application/sdp" in content_type)


def _failed(app: Any, kind: str, call_id: str, detail: str) -> None:
    """The single place a media failure is counted (and logged)."""
    media_failures.count(app.cdr_stream.client, kind)
    log.warning("call %s: media failure (%s): %s", call_id, kind, detail)


def _arm_replies(plan: dict[str, Any], sender: Side, had_sdp: bool) -> None:
    KSR.pv.sets(PLAN_AVP, json.dumps(plan, separators=(",", ":")))
    KSR.pv.sets(SDP_AVP, f"{sender.value}:{int(had_sdp)}")
    KSR.tm.t_on_reply(REPLY_ROUTE)


def start_call(app: Any, call: dict[str, Any], policy: MediaPolicy) -> str | None:
    """Plan the call's media and offer the customer's SDP to rtpengine. Puts the plan into
    ``call['media']``; returns a refusal reason when the trunk refuses calls rtpengine cannot
    anchor, else None."""
    nat = behind_nat(_pv("$si"), int(_pv("$sp") or 0), _pv("$hdr(Via)"), _pv("$hdr(Contact)"))
    plan = plan_media(policy, nat, enabled=app.settings.media.enabled)
    state: dict[str, Any] = {**plan.to_json(), "caller_tag": _pv("$ft")}
    call["media"] = state
    if not plan.anchor:
        return None
    had_sdp = _has_sdp()
    if had_sdp:
        offered = KSR.rtpengine.rtpengine_offer(ng_flags(plan, Side.CUSTOMER, Op.OFFER)) > 0
    else:
        # late offer: rtpengine is only asked at the 200, when a refusal is no longer possible;
        # a trunk that refuses unanchored calls has rtpengine's presence checked now instead
        offered = plan.on_failure is OnFailure.CARRY or _client(app).ping()
    if not offered:
        _failed(app, "offer", call["call_id"], "rtpengine did not take the INVITE's offer" if had_sdp
                else "rtpengine does not answer (late offer)")
        if plan.on_failure is OnFailure.REFUSE:
            _failed(app, "refused", call["call_id"], "trunk refuses unanchored calls: 503")
            state.update(anchor=False, reason="rtpengine unavailable: refused")
            return "Media relay unavailable"
        _failed(app, "carried", call["call_id"], "call carried unanchored")
        state.update(anchor=False, reason="rtpengine unavailable: carried unanchored")
        return None
    state["late_offer"] = not had_sdp
    _arm_replies(state, Side.CUSTOMER, had_sdp)
    return None


def in_dialog(app: Any, call: dict[str, Any] | None) -> None:
    """A request inside an anchored dialog: its SDP goes through rtpengine too."""
    state = (call or {}).get("media") or {}
    if not state.get("anchor") or not (KSR.is_INVITE() > 0 or KSR.is_UPDATE() > 0 or KSR.is_ACK() > 0):
        return
    plan = MediaPlan.from_json(state)
    sender = Side.CUSTOMER if KSR.rr.is_direction("downstream") > 0 else Side.VENDOR
    had_sdp = _has_sdp()
    if KSR.is_ACK() > 0:
        # the answer to an offer a 200 carried (late offer)
        if had_sdp and KSR.rtpengine.rtpengine_answer(ng_flags(plan, sender, Op.ANSWER)) < 0:
            _failed(app, "answer", _pv("$ci"), "rtpengine did not take the ACK's answer")
        return
    if had_sdp and KSR.rtpengine.rtpengine_offer(ng_flags(plan, sender, Op.OFFER)) < 0:
        _failed(app, "offer", _pv("$ci"), f"rtpengine did not take the {_pv('$rm')}'s offer; sent unanchored")
        return
    _arm_replies(state, sender, had_sdp)


def on_reply(app: Any) -> None:
    """A reply in a transaction whose request was anchored: its SDP answers (or offers)."""
    sent = _pv(SDP_AVP)
    code = int(_pv("$rs") or 0)
    if not sent or not 100 < code < 300 or not _has_sdp():
        return
    sender, had_sdp = sent.split(":")
    plan = MediaPlan.from_json(json.loads(_pv(PLAN_AVP)))
    responder = Side.VENDOR if sender == Side.CUSTOMER.value else Side.CUSTOMER
    if had_sdp == "1":
        if KSR.rtpengine.rtpengine_answer(ng_flags(plan, responder, Op.ANSWER)) < 0:
            _failed(app, "answer", _pv("$ci"), f"rtpengine did not take the {code}'s answer")
    elif KSR.rtpengine.rtpengine_offer(ng_flags(plan, responder, Op.OFFER)) < 0:
        _failed(app, "offer", _pv("$ci"), f"rtpengine did not take the {code}'s offer (late offer)")


_ng: NgClient | None = None  # one per worker process (its socket is opened after the fork)


def _client(app: Any) -> NgClient:
    global _ng
    if _ng is None:
        m = app.settings.media
        _ng = NgClient(m.ng_address, m.timeout_ms / 1000, m.retries)
    return _ng


def finish(app: Any, call: dict[str, Any]) -> str | None:
    """The call ended: its statistics from rtpengine, then its session deleted. Returns the CDR's
    ``media`` JSON (None for calls from before media planning). Never raises: the CDR matters more."""
    state = call.get("media")
    if state is None:
        return None
    out: dict[str, Any] = {"anchored": bool(state.get("anchor")), "reason": state.get("reason", "")}
    if state.get("late_offer"):
        out["late_offer"] = True
    if not state.get("anchor"):
        return json.dumps(out, separators=(",", ":"))
    caller = state.get("caller_tag", "")
    try:
        client = _client(app)
        try:
            out.update(call_stats(client.query(call["call_id"], caller), caller))
        except NgError as exc:
            out["stats"] = "unavailable"
            log.info("call %s: no media statistics: %s", call["call_id"], exc)
        try:
            client.delete(call["call_id"], caller)
        except NgError as exc:
            # a late-offer call that never got its 200 has no session: nothing failed then
            if "Unknown call-id" not in str(exc):
                _failed(app, "delete", call["call_id"], str(exc))  # rtpengine's RTP timeout drops it later
    except Exception as exc:
        log.error("call %s: media end not handled: %s", call.get("call_id"), exc)
    return json.dumps(out, separators=(",", ":"))
