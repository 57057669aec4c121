"""The module Kamailio loads (app_python3, KEMI): messages into values, the call service's
actions (routing_engine/calls/) back into Kamailio; nothing is decided here. Behind ``_guarded``
no exception escapes into Kamailio: the request gets a 500, an admitted call still its CDR."""

from __future__ import annotations

import os
import site
import sys
from pathlib import Path

_PROJECT = Path(__file__).resolve().parent.parent
# Kamailio embeds Debian's python3.11; the project's dependencies live in the venv built from
# that same interpreter, so adding its site-packages is enough.
_VENV = Path(os.environ.get("WARP_VENV", _PROJECT / ".venv"))
site.addsitedir(str(_VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"))
if str(_PROJECT) not in sys.path:
    sys.path.insert(0, str(_PROJECT))

import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import KSR  # noqa: E402  (provided by app_python3)

from routing_engine import bootstrap, metrics  # noqa: E402
from routing_engine.calls import service as calls  # noqa: E402
from routing_engine.calls import sip  # noqa: E402
from routing_engine.calls.state import CallState  # noqa: E402
from routing_engine.domain.decision import CallRequest  # noqa: E402
from routing_engine.domain.topology import SKIP_TABLE  # noqa: E402

log = logging.getLogger("warp.kemi")
PROC_INIT = -127  # Kamailio's rank for the init call made in the main process before forking
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, PRACK, NOTIFY, REFER"
STATE, RING = "$dlg_var(warp)", "$dlg_var(warp_ring)"  # the call's state (routing_engine/calls/state.py)
PLAN_AVP, SDP_AVP = "$avp(warp_mplan)", "$avp(warp_msdp)"  # this transaction's media plan, its sender


class NotText(ValueError):
    """A SIP field that is not UTF-8 text: the sender's error (400), not ours (500)."""


def pv(name: str) -> str:
    """A pseudo-variable as text ("" when unset)."""
    try:
        value = KSR.pv.get(name)
    except UnicodeDecodeError as exc:
        raise NotText(name) from exc
    return "" if value is None else str(value)


class _KsrLogHandler(logging.Handler):
    """Python logging through Kamailio's logger (same destination, same prefix)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", " | ") + "\n"
            level = record.levelno
            (KSR.err if level >= 40 else KSR.warn if level >= 30 else KSR.info if level >= 20 else KSR.dbg)(text)
        except Exception:  # logging must never be the thing that breaks a call
            pass


class _Sip:
    """calls.ports.Sip: what only Kamailio can do for the message at hand."""

    def table_inc(self, table: str, key: str) -> int:
        return int(KSR.htable.sht_inc(table, key))

    def table_get(self, table: str, key: str) -> str | None:
        return None if (v := KSR.htable.sht_get(table, key)) is None else str(v)  # sht_get honours autoexpire

    def table_put(self, table: str, key: str, text: str) -> None:
        KSR.htable.sht_sets(table, key, text)

    def table_remove(self, table: str, key: str) -> None:
        KSR.htable.sht_rm(table, key)

    def table_items(self, table: str) -> list[tuple[str, str]]:
        found, walk = [], f"{table}-walk"
        if KSR.htable.sht_iterator_start(walk, table) >= 0:
            try:
                while KSR.htable.sht_iterator_next(walk) > 0:
                    found.append((pv(f"$shtitkey({walk})"), pv(f"$shtitval({walk})")))
            finally:
                KSR.htable.sht_iterator_end(walk)  # the walk holds a slot lock until here
        return found

    def set_timeout(self, seconds: int, h_entry: int, h_id: int) -> bool:
        return bool(KSR.dialog.dlg_set_timeout_id(seconds, h_entry, h_id) >= 0)

    def dialog_states(self) -> dict[tuple[int, int], int]:  # one in-process RPC, no socket
        if KSR.jsonrpcs.exec('{"jsonrpc": "2.0", "method": "dlg.briefing", "params": ["s"], "id": 1}') < 0:
            raise RuntimeError("dlg.briefing failed")
        found = json.loads(pv("$jsonrpl(body)") or "{}").get("result") or []
        return {(int(d["h_entry"]), int(d["h_id"])): int(d["state"]) for d in found}

    def auth_check(self, realm: str, ha1: str) -> int:
        return int(KSR.auth.pv_auth_check(realm, ha1, 1, 0))

    def consume_credentials(self) -> None:
        KSR.auth.consume_credentials()

    def rtp(self, op: str, flags: str) -> bool:
        return bool((KSR.rtpengine.rtpengine_offer if op == "offer" else KSR.rtpengine.rtpengine_answer)(flags) > 0)


# CPU of the callbacks run inside the one running now: dialog:end runs within the BYE's
# loose_route, and is counted as its own, not twice
_nested = [0.0]


def _guarded(method: Callable[..., int]) -> Callable[..., int]:
    calls_made = metrics.KEMI_CALLBACKS.labels(method.__name__)
    cpu_spent = metrics.KEMI_CALLBACK_CPU.labels(method.__name__)

    @functools.wraps(method)
    def wrapper(self: kamailio, *args: Any) -> int:
        calls_made.inc()
        outer, _nested[0] = _nested[0], 0.0
        started = time.thread_time()
        try:
            return method(self, *args)
        except NotText as exc:
            log.info("request refused: %s is not UTF-8 text", exc)
            KSR.sl.send_reply(400, "Bad Request")  # sl itself never answers an ACK
        except Exception as exc:
            try:
                metrics.KEMI_ERRORS.inc()
                log.error("unhandled %s in %s (Call-ID %s): %s", type(exc).__name__, method.__name__,
                          KSR.pv.get("$ci"), traceback.format_exc())
                if KSR.is_request() > 0 and not KSR.is_ACK() > 0:
                    KSR.sl.send_reply(500, "Server Internal Error")
                if (ended := self.svc.salvage(exc, datetime.now(UTC))) is not None:
                    if KSR.pv.get(STATE):
                        KSR.pv.sets(STATE, ended.evolve(done=True).to_wire())  # a later event finds it done
                elif method.__name__ == "ksr_request_route" and KSR.is_INVITE() > 0 and not pv("$tt"):
                    self.svc.failed_invite(_request(), datetime.now(UTC))
            except Exception:
                log.error("call's end could not be recorded: %s", traceback.format_exc())
        finally:
            self.svc.open_call = None
            spent = time.thread_time() - started
            cpu_spent.inc(max(spent - _nested[0], 0.0))
            _nested[0] = outer + spent
        return 1

    return wrapper


def mod_init() -> kamailio:
    bootstrap.prepare_kamailio(_KsrLogHandler())  # once, before the workers fork; raises: no start
    return kamailio()


class kamailio:  # noqa: N801 - the class name app_python3 looks for
    svc: calls.CallService

    def child_init(self, rank: int) -> int:
        if rank == PROC_INIT:
            return 0
        try:
            self.svc = bootstrap.build_worker(_Sip())
        except Exception as exc:
            log.error("worker %d cannot start: %s", rank, exc)
            return -1
        return 0

    @_guarded
    def ksr_request_route(self, msg: Any) -> int:
        shed = self.svc.shed(pv("$si"), pv("$pr"), time.time(),
                             lambda: KSR.siputils.has_totag() > 0 and KSR.dialog.is_known_dlg() > 0)
        if shed.drop:
            return 1  # blocked source or flood: no answer at all
        if shed.tcp_lifetime_s:
            KSR.tcpops.tcp_set_connection_lifetime(shed.tcp_lifetime_s)
        ack = KSR.is_ACK() > 0  # nothing is ever answered to an ACK
        if KSR.sanity.sanity_check_defaults() < 0:  # RFC 3261 syntax (kamailio.cfg says which checks)
            if not ack:
                try:
                    start = (KSR.pv.get("$mb") or "").split("\r\n", 1)[0]
                except UnicodeError:
                    start = ""
                if sip.unsupported_scheme(start):
                    KSR.sl.sl_send_reply(416, "Unsupported URI Scheme")
                else:
                    KSR.sanity.sanity_reply()  # the 400 (or 420 with Unsupported) sanity chose
            return 1
        if int(pv("$cl") or 0) > int(pv("$bs") or 0):  # a body shorter than its Content-Length: cut
            return 1 if ack else self._apply(sip.Reply(400, "Content-Length Beyond Message"))
        if KSR.maxfwd.process_maxfwd(10) < 0:
            return self._apply(sip.Reply(483, "Too Many Hops"))
        totag = KSR.siputils.has_totag() > 0
        if KSR.is_OPTIONS() > 0 and not totag:  # any URI of ours answers; another domain's: nobody here
            return self._apply(sip.Reply(200, "OK", (f"Allow: {ALLOW}",)) if KSR.is_myself_ruri() > 0
                               else sip.Reply(404, "Not Here"))
        if KSR.is_CANCEL() > 0:
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if totag:
            return self._within_dialog(ack)
        if KSR.tmx.t_precheck_trans() > 0:  # a retransmission of a request being handled: tm absorbs it
            KSR.tm.t_check_trans()
            return 1
        if KSR.tm.t_check_trans() == 0 or ack:
            return 1  # ACK without a transaction to belong to: nothing to do
        now = datetime.now(UTC)
        if KSR.is_INVITE() > 0:
            return self._apply(self.svc.invite(_invite(), now))
        if KSR.is_REGISTER() > 0:
            contacts = [pv(f"$(hdr(Contact)[{i}])") for i in range(int(pv("$hdrc(Contact)") or 0))]
            return self._apply(self.svc.register(_invite(), contacts, pv("$hdr(Expires)"), pv("$ua"), now))
        return self._apply(sip.Reply(405, "Method Not Allowed", (f"Allow: {ALLOW}",)))

    def _within_dialog(self, ack: bool) -> int:
        """A request with a To tag: relayed only inside a dialog this node carries, from one of its sides."""
        if KSR.rr.loose_route() > 0:
            return self._apply(self.svc.in_dialog(
                _state(), KSR.dialog.is_known_dlg() > 0, pv("$si"), pv("$rm"), KSR.rr.is_direction("downstream") > 0,
                _has_sdp(), pv("$ci"), pv("$du") or pv("$ru")))
        if ack:  # ACK to a negative reply we relayed: tm matches and absorbs it; a stray one is dropped
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.is_BYE() > 0 and KSR.dialog.is_known_dlg() > 0:  # topos could not restore its route
            return self._apply(self.svc.by_dialog(_state(), True, pv("$si"), _dialog_contact, pv("$ci")))
        return self._apply(sip.Reply(481, "Call/Transaction Does Not Exist"))

    def _apply(self, action: sip.Action, failure: sip.Failure | None = None) -> int:
        while isinstance(action, sip.Forward):
            if self._forward(action):
                self.svc.relayed()
                return 1
            action = self.svc.forward_failed(action, datetime.now(UTC), failure)
        if isinstance(action, sip.Reply):
            for header in action.headers:
                KSR.hdr.append_to_reply(header + "\r\n")
            (KSR.tm.t_reply if action.stateful else KSR.sl.send_reply)(action.code, action.reason)
        elif isinstance(action, sip.Challenge):
            KSR.auth.auth_challenge(self.svc.node.settings.auth.realm, 1 | (16 if action.stale else 0))
        elif isinstance(action, sip.Relay):
            _arm(action.media)
            if action.ruri:
                KSR.pv.sets("$ru", action.ruri)
            if KSR.tm.t_relay() < 0:
                KSR.sl.sl_reply_error()
        return 1

    def _forward(self, f: sip.Forward) -> bool:
        if (setup := f.setup) is not None:
            if setup.skip_topology:
                KSR.htable.sht_sets(SKIP_TABLE, setup.skip_topology, "1")
            if setup.timeout_s is not None:  # the call's end is reported before the dialog module's BYEs
                KSR.pv.sets("$dlg_ctx(timeout_route)", calls.TIMEOUT_ROUTE)
            KSR.dialog.dlg_manage()
            if setup.timeout_s is not None:
                KSR.dialog.dlg_set_timeout(setup.timeout_s)  # then the dialog module sends BYE both ways
            _arm(setup.media)
            KSR.rr.record_route()
        KSR.pv.sets(STATE, f.state.to_wire())
        for ruri, dst in f.branches:
            KSR.pv.sets("$ru", ruri)
            KSR.pv.sets("$du", dst or "")
            KSR.corex.append_branch()
        KSR.pv.sets("$ru", f.ruri)
        KSR.pv.sets("$du", f.dst or "")
        if f.timers_ms:
            KSR.tm.t_set_fr(*f.timers_ms)
        if f.branch_route:
            KSR.tm.t_on_branch("ksr_branch_route")
        KSR.tm.t_on_failure("ksr_failure_route")
        if f.vendor_replies:
            KSR.tm.t_on_reply("ksr_vendor_reply")
        return bool(KSR.tm.t_relay() > 0)

    @_guarded
    def ksr_branch_route(self, msg: Any) -> int:
        wanted = self.svc.branch(_state(), pv("$du") or pv("$ru"), pv("$ci"))
        if wanted == "":
            KSR.set_drop()  # this branch is not sent; the failure route moves on
        elif wanted:
            KSR.pv.sets("$fU", wanted)  # this vendor wants the caller written its way
        return 1

    @_guarded
    def ksr_vendor_reply(self, msg: Any) -> int:
        code, state = int(pv("$rs") or 0), None
        if 180 <= code < 190 and (state := _state()) is not None \
                and (ringing := self.svc.vendor_reply(state, code, datetime.now(UTC))) is not None:
            KSR.pv.sets(RING, ringing.ring_wire())
        self.svc.media.on_reply(pv(SDP_AVP), pv(PLAN_AVP), code, _has_sdp(), pv("$ci"))
        return 1

    @_guarded
    def ksr_media_reply(self, msg: Any) -> int:
        self.svc.media.on_reply(pv(SDP_AVP), pv(PLAN_AVP), int(pv("$rs") or 0), _has_sdp(), pv("$ci"))
        return 1

    @_guarded
    def ksr_failure_route(self, msg: Any) -> int:
        if (state := _state()) is None:
            return 1
        failure = sip.Failure(KSR.tm.t_is_canceled() > 0, int(pv("$T_reply_code") or 500),
                          pv("$T_reply_reason") or "Vendor failure", pv("$T_rpl($hdr(Reason))"),
                          KSR.tm.t_branch_timeout() > 0)
        return self._apply(self.svc.failure(state, failure, datetime.now(UTC)), failure)

    @_guarded
    def ksr_dialog_event(self, msg: Any, evname: str) -> int:
        # kamailio.cfg's native routes call it for these three only (dialog:failed: the failure route)
        if evname not in ("dialog:start", "dialog:end", "dialog:timeout") or (state := _state()) is None:
            return 1
        now = datetime.now(UTC)
        if evname == "dialog:start":  # it runs on the answer: its source is the called side's address
            dialog = int(pv("$dlg(h_entry)") or -1), int(pv("$dlg(h_id)") or -1)
            KSR.pv.sets(STATE, self.svc.answered(state, pv("$si"), now, dialog).to_wire())
        elif not state.done:
            KSR.pv.sets(STATE, state.evolve(done=True).to_wire())
            self.svc.ended(state, evname == "dialog:timeout", pv("$ft"), pv("$dlg(from_tag)"), pv("$hdr(Reason)"), now)
        return 1

    def ksr_slices_tick(self, msg: Any, evname: str) -> int:
        """rtimer (one process per node): renew the funds slices of this node's calls. Not
        _guarded: there is no request to answer; an error waits for the next tick."""
        try:
            self.svc.slices.tick(time.time())
        except Exception:
            log.error("slices tick failed: %s", traceback.format_exc())
        return 1


def _arm(media: sip.ArmMedia | None) -> None:
    if media is not None:
        KSR.pv.sets(PLAN_AVP, media.plan)
        KSR.pv.sets(SDP_AVP, f"{media.sender}:{int(media.had_sdp)}")
        KSR.tm.t_on_reply("ksr_media_reply")


def _state() -> CallState | None:
    raw, ring = pv(STATE), pv(RING)
    return None if not raw else CallState.from_wire(raw).with_ring(ring) if ring else CallState.from_wire(raw)


def _dialog_contact() -> str:
    KSR.dialog.dlg_manage()  # matches the dialog by Call-ID and tags; the BYE ends it
    return pv("$dlg(to_contact)" if pv("$ft") == pv("$dlg(from_tag)") else "$dlg(from_contact)")


def _has_sdp() -> bool:
    content_type = pv("$cT").lower()
    return bool(pv("$rb").strip()) and (not content_type or "application/sdp" in content_type)


def _request() -> CallRequest:
    return CallRequest(pv("$ci"), pv("$si"), int(pv("$sp") or 0), pv("$pr") or "udp", pv("$rU"), pv("$fU"))


def _invite() -> sip.Invite:
    return sip.Invite(_request(), pv("$ft"), pv("$au"), pv("$hdr(Via)"), pv("$hdr(Contact)"), _has_sdp())
