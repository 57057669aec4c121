"""The module Kamailio loads (app_python3, KEMI): read the SIP message, decide, apply.

Kamailio does SIP (parsing, transactions, retransmissions, dialogs); routing_engine decides.
This file only translates between the two. Every callback runs behind ``_guarded``: a Python
exception never escapes into Kamailio; the request gets a 500 and the error is logged with
its Call-ID.

Settings come from the same file and environment overrides as every other process
(WARP_CONFIG, WARP_<SECTION>__<KEY>, DATABASE_URL, REDIS_URL), inherited from the launcher.
"""

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

import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from decimal import Decimal  # noqa: E402
from typing import Any  # noqa: E402

import KSR  # noqa: E402  (provided by app_python3)

from kemi.pv import NotText  # noqa: E402
from kemi.pv import pv as _pv  # noqa: E402
from routing_engine import bootstrap, metrics  # noqa: E402
from routing_engine.adapters.quality import Outcome  # noqa: E402
from routing_engine.calls import admission, media, registration  # noqa: E402
from routing_engine.domain import auth, destinations, failover, inbound, rating, topology  # noqa: E402
from routing_engine.domain.cdr import CdrRecord, billable_duration, compact_trace, lrn_source_of, pdd_ms, q850_cause  # noqa: E402
from routing_engine.domain.decision import CallRequest, Reject, Relay  # noqa: E402
from routing_engine.settings import load_settings  # noqa: E402

log = logging.getLogger("warp.kemi")

AUTH_INVALID_PASSWORD, AUTH_STALE_NONCE, AUTH_NO_CREDENTIALS, AUTH_NONCE_REUSED = -2, -4, -5, -6  # auth results
PROC_INIT = -127  # Kamailio's rank for the init call made in the main process before forking
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, PRACK, NOTIFY, REFER"
CALL_VAR = "$dlg_var(warp)"  # the call's context, kept with its dialog until the CDR is written
ANSWER_VAR = "$dlg_var(warp_answer)"
ROUTE_VAR = "$dlg_var(warp_route)"  # index of the route being tried (or that answered)
ATTEMPTS_VAR = "$dlg_var(warp_attempts)"  # JSON list of the failed attempts so far
DONE_VAR = "$dlg_var(warp_done)"  # set once the answered call's end has been recorded
RING_VAR = "$dlg_var(warp_ring)"  # first 180/183 of the call (any vendor): its PDD
ATTEMPT_AT_VAR = "$dlg_var(warp_att_at)"  # when the INVITE went to the vendor now being tried
ATTEMPT_RING_VAR = "$dlg_var(warp_att_ring)"  # that vendor's first 180/183
PEERS_VAR = "$dlg_var(warp_peers)"  # the addresses the call's two sides send from (space-separated)
_TOPOS_CALLS = metrics.KEMI_CALLBACKS.labels("ksr_topos_event")
FLOOD_TABLE, PEER_TABLE, BLOCK_TABLE = "warpflood", "warppeer", "warpblock"  # kamailio.cfg htables


class _KsrLogHandler(logging.Handler):
    """Send Python logging through Kamailio's logger (same destination, same prefix)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace("\n", " | ") + "\n"
            if record.levelno >= logging.ERROR:
                KSR.err(text)
            elif record.levelno >= logging.WARNING:
                KSR.warn(text)
            elif record.levelno >= logging.INFO:
                KSR.info(text)
            else:
                KSR.dbg(text)
        except Exception:  # logging must never be the thing that breaks a call
            pass


def _guarded(method: Callable[..., int]) -> Callable[..., int]:
    """Kamailio callback wrapper: no exception leaves; a request in trouble gets a 500."""
    calls = metrics.KEMI_CALLBACKS.labels(method.__name__)

    @functools.wraps(method)
    def wrapper(self: kamailio, *args: Any) -> int:
        self.open_call = None
        calls.inc()
        try:
            return method(self, *args)
        except NotText as exc:
            log.info("request refused: %s is not UTF-8 text", exc)
            with contextlib.suppress(Exception):
                KSR.sl.send_reply(400, "Bad Request")  # sl itself never answers an ACK
            return 1
        except Exception as exc:
            call_id = ""
            try:
                metrics.KEMI_ERRORS.inc()
                call_id = _pv("$ci")
                log.error("unhandled %s in %s (Call-ID %s): %s", type(exc).__name__,
                          method.__name__, call_id, traceback.format_exc())
                if KSR.is_request() > 0 and not KSR.is_ACK() > 0:
                    KSR.sl.send_reply(500, "Server Internal Error")
                if self.open_call is not None:
                    self._salvage(self.open_call, exc)
                elif method.__name__ == "ksr_request_route" and KSR.is_INVITE() > 0 and not _pv("$tt"):
                    self._app().emit_cdr(self._cdr(self._request(), datetime.now(UTC), 500,
                                                   "Server Internal Error", Reject(500, "Server Internal Error")))
            except Exception:
                log.error("call %s: its end could not be recorded: %s", call_id, traceback.format_exc())
            return 1
        finally:
            self.open_call = None

    return wrapper


def mod_init() -> kamailio:
    handler = _KsrLogHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Once, in the main process before the workers fork: publish what Postgres holds now; each
    # worker then maps that one file. Without any configuration there is nothing to route with,
    # so an error here stops Kamailio at start-up with the reason in its log.
    try:
        version = bootstrap.prepare_snapshot(load_settings())
    except Exception as exc:
        log.error("no routing configuration: %s", exc)
        raise
    log.info("routing snapshot %s in service", version)
    return kamailio()


class kamailio:  # noqa: N801 - the class name app_python3 looks for
    def __init__(self) -> None:
        self.app: bootstrap.App | None = None
        # the admitted call this callback has in hand and has not finished yet: if the callback
        # fails, _guarded still ends it (CDR, charge, limits released) from what it holds
        self.open_call: dict[str, Any] | None = None

    # ------------------------------------------------------------------ process life
    def child_init(self, rank: int) -> int:
        if rank == PROC_INIT:
            return 0
        try:
            self.app = bootstrap.build_app()
        except Exception as exc:
            log.error("worker %d cannot start: %s", rank, exc)
            return -1
        return 0

    # ------------------------------------------------------------------ requests
    @_guarded
    def ksr_request_route(self, msg: Any) -> int:
        if self._shed():
            return 1  # blocked source or flood: no answer at all
        # RFC 3261 syntax first (kamailio.cfg says which checks); nothing is answered to an ACK
        if KSR.sanity.sanity_check_defaults() < 0:
            if KSR.is_ACK() <= 0:
                try:
                    start = (KSR.pv.get("$mb") or "").split("\r\n", 1)[0].split(" ")
                except UnicodeError:
                    start = []
                scheme = start[1].split(":", 1)[0].lower() if len(start) > 2 and ":" in start[1] else ""
                if scheme[:1].isalpha() and all(c.isalnum() or c in "+-." for c in scheme) \
                        and scheme not in ("sip", "sips", "tel", "tels"):
                    KSR.sl.sl_send_reply(416, "Unsupported URI Scheme")  # RFC 3261 8.2.2.1
                else:
                    KSR.sanity.sanity_reply()  # the 400 (or 420 with Unsupported) sanity chose
            return 1
        if int(KSR.pv.get("$cl") or 0) > int(KSR.pv.get("$bs") or 0):
            if KSR.is_ACK() <= 0:  # a body shorter than its Content-Length: UDP cut it (RFC 3261 18.3)
                KSR.sl.sl_send_reply(400, "Content-Length Beyond Message")
            return 1
        if KSR.maxfwd.process_maxfwd(10) < 0:
            KSR.sl.sl_send_reply(483, "Too Many Hops")
            return 1
        if KSR.is_OPTIONS() > 0 and KSR.siputils.has_totag() <= 0:
            # an OPTIONS to any URI of ours is answered here, with what we allow; one for another
            # domain is not relayed: nobody here by that name
            if KSR.is_myself_ruri() > 0:
                KSR.hdr.append_to_reply(f"Allow: {ALLOW}\r\n")
                KSR.sl.sl_send_reply(200, "OK")
            else:
                KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        if KSR.is_CANCEL() > 0:
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.siputils.has_totag() > 0:
            return self._within_dialog()
        # A retransmission of a request already being handled is absorbed by tm here.
        if KSR.tmx.t_precheck_trans() > 0:
            KSR.tm.t_check_trans()
            return 1
        if KSR.tm.t_check_trans() == 0:
            return 1
        if KSR.is_ACK() > 0:
            return 1  # ACK without a transaction to belong to: nothing to do
        if KSR.is_INVITE() > 0:
            return self._new_call()
        if KSR.is_REGISTER() > 0:
            return self._register()
        KSR.hdr.append_to_reply(f"Allow: {ALLOW}\r\n")
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        return 1

    def _within_dialog(self) -> int:
        """A request with a To tag. It is relayed only inside a dialog this node carries, and
        only from an address of one of that call's two sides: a Route header naming us is not
        enough (that was an open relay), and neither is a Call-ID and tags learnt elsewhere."""
        if KSR.rr.loose_route() > 0:
            call = _call_state()
            if (foreign := self._foreign_in_dialog(call)) is not None:
                return self._refuse_in_dialog(foreign)
            media.in_dialog(self._app(), call)
            if (refused := self._destination_refused()) is not None:
                return self._refuse_in_dialog(refused, 403, "Forbidden")
            if KSR.tm.t_relay() < 0:
                KSR.sl.sl_reply_error()
            return 1
        if KSR.is_ACK() > 0:
            # ACK to a negative reply we relayed: tm matches and absorbs it; a stray one is dropped.
            if KSR.tm.t_check_trans() > 0:
                KSR.tm.t_relay()
            return 1
        if KSR.is_BYE() > 0 and KSR.dialog.is_known_dlg() > 0:
            if (foreign := self._foreign_in_dialog(_call_state())) is not None:
                return self._refuse_in_dialog(foreign)
            return self._bye_by_dialog()
        KSR.sl.sl_send_reply(481, "Call/Transaction Does Not Exist")
        return 1

    def _foreign_in_dialog(self, call: dict[str, Any] | None) -> str | None:
        """Why this in-dialog request is not one of the call we carry, ``call`` (None: it is)."""
        if KSR.dialog.is_known_dlg() < 0:
            return "no dialog of ours"
        peers = _pv(PEERS_VAR).split()
        source = _canonical_ip(_pv("$si"))
        if source in peers:
            return None
        # a vendor may hang up from another of its gateways, a customer from another address of its ACL
        call = call or {}
        vendors = [uuid.UUID(r["vendor_id"]) for r in call.get("routes", []) if r.get("vendor_id")]
        trunk = uuid.UUID(call["trunk_id"]) if call.get("trunk_id") else None
        if auth.speaks_for(self._app().snapshot(), source, trunk, vendors):
            return None
        return f"from {source}, not a side of the call"

    def _refuse_in_dialog(self, why: str, code: int = 481, reason: str = "Call/Transaction Does Not Exist") -> int:
        metrics.SIP_REFUSED.labels("destination" if code == 403 else "foreign").inc()
        log.warning("in-dialog %s refused: %s", _pv("$rm"), why)
        if not KSR.is_ACK() > 0:  # is_ACK answers a bool
            KSR.sl.sl_send_reply(code, reason)
        return 1

    def _destination_refused(self) -> str | None:
        """Why the request may not go where $du (or else $ru) points: one of this node's own
        services or no SIP peer's address (routing_engine/domain/destinations.py)."""
        uri = _pv("$du") or _pv("$ru")
        host, port = destinations.uri_target(uri)
        return self._app().destination_refusal(host, port)

    def _shed(self) -> bool:
        """Drop, unanswered, requests from a blocked source and floods (every request kind,
        counted per source address and second on this node). Peers (trunk ACL addresses,
        vendor gateways, addresses that proved a digest credential here) have the higher limit.
        A blocked source's in-dialog requests of calls in progress still pass, so those calls
        end (and are billed) when they end."""
        app = self._app()
        source = _canonical_ip(_pv("$si"))
        now = time.time()
        # sht_get, not sht_is_null: only get treats an entry past its autoexpire as gone
        peer = app.is_peer(source) or bool(KSR.htable.sht_get(PEER_TABLE, source))
        sip = app.settings.sip
        limit = sip.flood_peer_rps if peer else sip.flood_rps
        count = KSR.htable.sht_inc(FLOOD_TABLE, f"{source}/{int(now)}")
        if count > limit:
            if count == limit + 1:
                metrics.FLOOD_DROPS.inc()
                log.warning("source %s over its flood limit this second: requests dropped", source)
            return True
        if _pv("$pr") == "tcp" and peer:
            KSR.tcpops.tcp_set_connection_lifetime(sip.tcp_peer_lifetime_s)
        blocked = bool(KSR.htable.sht_get(BLOCK_TABLE, source)) or (
            app.blocks is not None and app.blocks.blocked(source, now))
        if blocked:
            if KSR.siputils.has_totag() > 0 and KSR.dialog.is_known_dlg() > 0:
                return False
            metrics.AUTH_FAILURES.labels("blocked_source").inc()
            return True
        return False

    def _bye_by_dialog(self) -> int:
        """A BYE of a call we carry whose route topos cannot restore (it keeps it in Redis, and
        Redis is down): the dialog module knows both sides' contacts, so the BYE goes on to the
        other side and the call ends normally (no route sets: we are the only Record-Route)."""
        KSR.dialog.dlg_manage()  # matches the dialog by Call-ID and tags; the BYE ends it
        other = "$dlg(to_contact)" if _pv("$ft") == _pv("$dlg(from_tag)") else "$dlg(from_contact)"
        contact = _pv(other)
        if not contact:
            KSR.sl.sl_send_reply(404, "Not Here")
            return 1
        KSR.pv.sets("$ru", contact)
        if (refused := self._destination_refused()) is not None:
            return self._refuse_in_dialog(refused, 403, "Forbidden")
        log.warning("call %s: BYE sent on by its dialog (route not restorable)", _pv("$ci"))
        if KSR.tm.t_relay() < 0:
            KSR.sl.sl_reply_error()
        return 1

    def _request(self) -> CallRequest:
        return CallRequest(
            call_id=_pv("$ci"),
            source_ip=_pv("$si"),
            source_port=int(_pv("$sp") or 0),
            transport=_pv("$pr") or "udp",
            dialed=_pv("$rU"),
            caller=_pv("$fU"),
        )

    def _new_call(self) -> int:
        metrics.INITIAL_INVITES.inc()
        app = self._app()
        now = datetime.now(UTC)
        request = self._request()
        snapshot = app.snapshot()
        if not request.caller:
            self._refuse(request, now, Reject(400, "Bad From"))
            return 1
        gateway = snapshot.gateway_hosts.get(_canonical_ip(request.source_ip))
        if gateway is not None:
            return self._inbound(request, gateway, now)
        found = auth.identify(snapshot, request.source_ip, request.source_port, request.transport,
                              request.dialed)
        trunk_id, method = (found.trunk_id, "acl") if found else (None, "acl")
        if found is None:
            trunk_id = self._digest(request, now)
            if trunk_id is None:
                return 1  # challenged, refused or dropped already
            method = "digest"
        with metrics.DECISION_SECONDS.time():
            decision = app.decide(request, snapshot, now, trunk_id=trunk_id, method=method)
        if isinstance(decision, Reject):
            self._refuse(request, now, decision)
            return 1
        return self._relay(request, decision, now)

    def _refuse(self, request: CallRequest, now: datetime, decision: Reject, direction: str = "outbound",
                headers: tuple[str, ...] = ()) -> None:
        for extra in (decision.reason_header, *headers):
            if extra:
                KSR.hdr.append_to_reply(extra + "\r\n")
        KSR.sl.sl_send_reply(decision.code, decision.reason)
        self._app().emit_cdr(self._cdr(request, now, decision.code, decision.reason, decision=decision,
                                       direction=direction))
        log.info("call %s refused %d %s", request.call_id, decision.code, decision.reason)

    def _digest(self, request: CallRequest, now: datetime) -> Any:
        """The trunk proven by digest credentials; None when a challenge, a refusal or nothing
        (blocked source, flood) has been sent instead."""
        app = self._app()
        realm = app.settings.auth.realm
        if KSR.auth.has_credentials(realm) < 0:
            KSR.auth.auth_challenge(realm, 1)
            return None
        credential = auth.credential(app.snapshot(), _pv("$au"))
        # An unknown user is checked against a random HA1: it fails exactly like a wrong password.
        ha1 = credential.ha1 if credential is not None else app.unknown_user_ha1
        result = KSR.auth.pv_auth_check(realm, ha1, 1, 0)
        if result == 1 and credential is not None:
            KSR.auth.consume_credentials()
            KSR.htable.sht_seti(PEER_TABLE, _canonical_ip(request.source_ip), 1)
            return credential.trunk_id
        if result in (AUTH_STALE_NONCE, AUTH_NO_CREDENTIALS, AUTH_NONCE_REUSED):
            # stale, bound to another request or address, or used already: a fresh challenge
            stale = result in (AUTH_STALE_NONCE, AUTH_NONCE_REUSED)
            KSR.auth.auth_challenge(realm, 1 | (16 if stale else 0))
            return None
        metrics.AUTH_FAILURES.labels("bad_credentials").inc()
        # Only a wrong password against a nonce we issued to this very address counts toward a
        # block (the nonce is bound to the source IP): a spoofer who never saw our challenge
        # cannot make one, so forged UDP cannot block a customer. A trunk ACL address is never
        # blocked by digest failures.
        source = _canonical_ip(request.source_ip)
        if result == AUTH_INVALID_PASSWORD and not app.is_peer(source):
            try:
                if app.defence.record_failure(source):
                    metrics.IP_BLOCKS.inc()
                    KSR.htable.sht_seti(BLOCK_TABLE, source, 1)  # every worker here, at once
                    log.warning("source %s blocked after repeated digest failures", source)
            except Exception as exc:
                log.warning("auth failure not counted, Redis unavailable: %s", exc)
        KSR.sl.sl_send_reply(403, "Forbidden")
        if KSR.is_INVITE() > 0:
            app.emit_cdr(self._cdr(request, now, 403, "Forbidden", decision=Reject(403, "Forbidden")))
        return None

    def _register(self) -> int:
        now = datetime.now(UTC)
        request = self._request()
        trunk_id = self._digest(request, now)
        if trunk_id is not None:
            registration.register(self._app(), request, trunk_id, now)
        return 1

    def _inbound(self, request: CallRequest, gateway: Any, now: datetime) -> int:
        app = self._app()
        snapshot = app.snapshot()
        decision = inbound.decide_inbound(
            request.dialed, request.caller, gateway, snapshot,
            lambda trunk_id: app.registrations.contacts(trunk_id, now.timestamp()),
            app.settings.routing.default_region)
        if isinstance(decision, Reject):
            self._refuse(request, now, decision, direction="inbound")
            return 1
        vendor = snapshot.vendors.get(gateway.vendor_id)
        _hide_topology(request, snapshot.trunks.get(decision.context.trunk_id) if decision.context.trunk_id else None)
        KSR.dialog.dlg_manage()
        KSR.pv.sets(PEERS_VAR, _canonical_ip(request.source_ip))
        ctx = decision.context
        call = {
            "cdr_id": str(uuid.uuid4()),  # the call's identity: its Call-ID is the caller's choice
            "call_id": request.call_id, "direction": "inbound", "invite_at": now.isoformat(),
            "dialed": request.dialed, "caller": request.caller,
            "account_id": str(ctx.account_id), "trunk_id": str(ctx.trunk_id),
            "from_e164": ctx.from_e164, "to_e164": ctx.to_e164,
            "trace": compact_trace(decision.trace),
            "policy": failover.Policy(frozenset(), 1).to_json(),
            "routes": [{"vendor_id": str(gateway.vendor_id), "vendor": vendor.name if vendor else "",
                        "gateway": gateway.gateway.name, "ruri": t.ruri, "from": None, "rate": None}
                       for t in decision.targets[:1]],
        }
        KSR.pv.sets(CALL_VAR, json.dumps(call, separators=(",", ":")))
        KSR.pv.sets(ROUTE_VAR, "0")
        KSR.rr.record_route()
        # every registered contact rings at once; the first to answer takes the call
        for target in decision.targets[1:]:
            KSR.pv.sets("$ru", target.ruri)
            if target.dst:
                KSR.pv.sets("$du", target.dst)
            KSR.corex.append_branch()
            KSR.pv.sets("$du", "")  # each branch keeps its own; the next one starts clean
        first = decision.targets[0]
        KSR.pv.sets("$ru", first.ruri)
        if first.dst:
            KSR.pv.sets("$du", first.dst)
        KSR.tm.t_on_branch("ksr_branch_route")
        KSR.tm.t_on_failure("ksr_failure_route")
        if KSR.tm.t_relay() < 0:
            self._relay_failed(call, [])
        return 1

    def _relay(self, request: CallRequest, decision: Relay, now: datetime) -> int:
        # The call's identity, given here and kept in its dialog: its limits place, its funds, its
        # charge and its CDR are all keyed by it. A Call-ID is the caller's choice, and two calls
        # may share one (a new From tag on a known Call-ID is a new call).
        cdr_id = uuid.uuid4()
        admitted = admission.admit(self._app(), cdr_id, request.call_id, decision, now)
        if isinstance(admitted, admission.Refused):
            self._refuse(request, now, admitted.reject, headers=admitted.headers)
            return 1
        reserved, max_s = admitted.reserved_micros, admitted.max_s
        ctx = decision.context
        call = {
            "cdr_id": str(cdr_id),
            "limited": True,
            "reserved": reserved,
            "max_s": max_s,
            "price": rating.price_to_json(decision.price),
            "call_id": request.call_id,
            "invite_at": now.isoformat(),
            "dialed": request.dialed,
            "caller": request.caller,
            "account_id": str(ctx.account_id),
            "trunk_id": str(ctx.trunk_id),
            "from_e164": ctx.from_e164,
            "to_e164": ctx.to_e164,
            "lrn": ctx.lrn,
            "lrn_source": lrn_source_of(decision.trace),
            "ban": self._ban(ctx.account_id),
            "jurisdiction": ctx.jurisdiction,
            "trace": compact_trace(decision.trace),
            "policy": decision.policy.to_json(),
            "routes": [
                {"vendor_id": str(r.vendor_id), "vendor": r.vendor_name, "gateway": r.gateway.name,
                 "ruri": r.ruri, "from": r.from_user, "rate": str(r.rate)}
                for r in decision.routes[: decision.policy.max_attempts]
            ],
        }
        self.open_call = call  # from here on, whatever fails, the call ends with its CDR and money
        _hide_topology(request, self._app().snapshot().trunks.get(ctx.trunk_id) if ctx.trunk_id else None)
        # name a timeout route, so that the call's end is reported before the dialog module's BYEs
        KSR.pv.sets("$dlg_ctx(timeout_route)", "warp-timeout")
        KSR.dialog.dlg_manage()
        KSR.pv.sets(PEERS_VAR, _canonical_ip(request.source_ip))
        KSR.dialog.dlg_set_timeout(max_s)  # the dialog module sends BYE both ways when it runs out
        refused = media.start_call(self._app(), call, self._app().snapshot().trunks[ctx.trunk_id].media)  # type: ignore[index]
        KSR.pv.sets(CALL_VAR, json.dumps(call, separators=(",", ":")))
        if refused:
            KSR.hdr.append_to_reply("Retry-After: 5\r\n")
            KSR.sl.send_reply(503, refused)
            self._finish(call, 503, refused, now)
            return 1
        KSR.rr.record_route()
        if self._send_to(call, 0) < 0:
            self._relay_failed(call, [])
        self.open_call = None  # relayed: its end comes with the failure route or the dialog's end
        return 1

    def _send_to(self, call: dict[str, Any], index: int) -> int:
        """Relay the INVITE to route ``index``; the branch route applies its From user."""
        route = call["routes"][index]
        KSR.pv.sets("$ru", route["ruri"])
        KSR.pv.sets(ROUTE_VAR, str(index))
        sip = self._app().settings.sip
        policy = failover.Policy.from_json(call["policy"])
        KSR.tm.t_set_fr(sip.fr_inv_timeout_ms, policy.attempt_timeout_ms or sip.fr_timeout_ms)
        KSR.tm.t_on_branch("ksr_branch_route")
        KSR.tm.t_on_failure("ksr_failure_route")
        KSR.tm.t_on_reply("ksr_vendor_reply")
        KSR.pv.sets(ATTEMPT_AT_VAR, datetime.now(UTC).isoformat())
        KSR.pv.sets(ATTEMPT_RING_VAR, "")
        return int(KSR.tm.t_relay())

    def _relay_failed(self, call: dict[str, Any], attempts: list[failover.Attempt]) -> None:
        route = call["routes"][int(_pv(ROUTE_VAR) or 0)]
        attempts.append(_attempt(route, 500, "Relay failed"))
        KSR.sl.send_reply(500, "Relay failed")
        self._finish(call, 500, "Relay failed", datetime.now(UTC), attempts=attempts, hangup_side="proxy")

    def _finish(self, call: dict[str, Any], code: int, reason: str, end_at: datetime,
                answer_at: datetime | None = None, attempts: list[failover.Attempt] | None = None,
                hangup_side: str | None = None, q850: int | None = None) -> None:
        """Every end of a relayed call comes here once: limits released, the CDR (with its money)
        emitted; the emitter charges it and releases the funds reservation."""
        outcomes = []
        if attempts and call.get("direction", "outbound") == "outbound":
            ids = {r["vendor"]: r["vendor_id"] for r in call.get("routes", [])}
            seconds = billable_duration(answer_at, end_at)
            destination = call.get("to_e164") or ""
            outcomes = [Outcome(ids[a.vendor], a.code == 200, seconds if a.code == 200 else 0, a.pdd_ms, destination)
                        for a in attempts if a.vendor in ids and a.code != 487]
        record = self._cdr_from_call(call, code, reason, end_at, answer_at, attempts, hangup_side, q850)
        release = (record.cdr_id, call["trunk_id"], call["account_id"]) if call.get("limited") else None
        self._app().end_call(dataclasses.replace(record, media=media.finish(self._app(), call)), release, outcomes)
        self.open_call = None

    def _salvage(self, call: dict[str, Any], error: Exception) -> None:
        """A callback failed with ``call`` admitted and not finished: end it all the same, from the
        few fields it surely holds — its CDR (code 500), its charge if it was answered, its limits
        place released — so no call leaves without its CDR and its money."""
        app = self._app()
        now = datetime.now(UTC)
        answer = _pv(ANSWER_VAR) if _pv(CALL_VAR) else ""
        answer_at = datetime.fromisoformat(answer) if answer else None
        duration = billable_duration(answer_at, now)
        cdr_id = uuid.UUID(call["cdr_id"])
        money: dict[str, Any] = {}
        try:
            if call.get("price"):
                price = rating.price_from_json(call["price"])
                owed = rating.bill(duration, int(call.get("max_s") or 0), price, None)
                money = {"billable_s": owed.billable_s, "customer_price": owed.customer_price,
                         "customer_rate": price.per_minute}
        except Exception:
            log.error("call %s: price not computed (%s): its reservation is released uncharged",
                      call.get("call_id"), traceback.format_exc())
        record = CdrRecord(
            cdr_id=cdr_id, call_id=str(call.get("call_id") or ""), node=app.settings.node.name,
            invite_at=datetime.fromisoformat(call["invite_at"]), end_at=now, answer_at=answer_at,
            duration_s=duration, sip_code=500, sip_reason=f"Server Internal Error ({type(error).__name__})",
            direction=call.get("direction", "outbound"), account_id=uuid.UUID(call["account_id"]),
            trunk_id=uuid.UUID(call["trunk_id"]), from_raw=call.get("caller"), to_raw=call.get("dialed"),
            from_e164=call.get("from_e164"), to_e164=call.get("to_e164"), ban=call.get("ban"),
            settle=bool(call.get("reserved")), hangup_side="proxy", **money)
        with contextlib.suppress(Exception):
            record = dataclasses.replace(record, media=media.finish(app, call))
        release = (cdr_id, call["trunk_id"], call["account_id"]) if call.get("limited") else None
        app.end_call(record, release)
        with contextlib.suppress(Exception):
            KSR.pv.sets(DONE_VAR, "1")  # a later dialog event finds it recorded
        log.error("call %s ended by the error above: CDR %s written with what the call held",
                  call.get("call_id"), cdr_id)

    # ------------------------------------------------------------------ replies and failures
    @_guarded
    def ksr_reply_route(self, msg: Any) -> int:
        return 1

    @_guarded
    def ksr_branch_route(self, msg: Any) -> int:
        if (refused := self._destination_refused()) is not None:
            metrics.SIP_REFUSED.labels("destination").inc()
            log.warning("call %s: branch to %s dropped: %s", _pv("$ci"), _pv("$du") or _pv("$ru"), refused)
            KSR.set_drop()  # this branch is not sent; the failure route moves on
            return 1
        raw = _pv(CALL_VAR)
        if raw:
            route = json.loads(raw)["routes"][int(_pv(ROUTE_VAR) or 0)]
            if route.get("from"):
                KSR.pv.sets("$fU", route["from"])  # this vendor wants the caller written its way
        return 1

    @_guarded
    def ksr_vendor_reply(self, msg: Any) -> int:
        """A vendor's reply to the INVITE (tm reply route, one per transaction): note its first
        ringing for the PDD, and give an anchored call's SDP to the media relay."""
        if 180 <= int(KSR.pv.get("$rs") or 0) < 190 and not _pv(ATTEMPT_RING_VAR):
            now = datetime.now(UTC).isoformat()
            KSR.pv.sets(ATTEMPT_RING_VAR, now)
            if not _pv(RING_VAR):
                KSR.pv.sets(RING_VAR, now)
        media.on_reply(self._app())
        return 1

    @_guarded
    def ksr_failure_route(self, msg: Any) -> int:
        raw = _pv(CALL_VAR)
        if not raw:
            return 1
        call = json.loads(raw)
        self.open_call = call
        attempts = _attempts()
        route = call["routes"][int(_pv(ROUTE_VAR) or 0)]
        if KSR.tm.t_is_canceled() > 0:
            # the customer gave up: tm answers 487 itself; nothing more is tried
            attempts.append(_attempt(route, 487, "Request Terminated"))
            self._finish(call, 487, "Request Terminated", datetime.now(UTC), attempts=attempts, hangup_side="caller")
            return 1
        code = int(_pv("$T_reply_code") or 500)
        reason = _pv("$T_reply_reason") or "Vendor failure"
        attempts.append(_attempt(route, code, reason, q850_cause(_pv("$T_rpl($hdr(Reason))"))))
        policy = failover.Policy.from_json(call["policy"])
        while (index := failover.next_route(policy, len(call["routes"]), attempts)) is not None:
            KSR.pv.sets(ATTEMPTS_VAR, json.dumps([a.to_json() for a in attempts]))
            if self._send_to(call, index) > 0:
                self.open_call = None  # the next vendor has it
                log.info("call %s: %s answered %d, trying %s", call["call_id"], route["vendor"], code,
                         call["routes"][index]["vendor"])
                return 1
            route = call["routes"][index]
            attempts.append(_attempt(route, 500, "Relay failed"))
        final_code, final_reason = failover.best_response(attempts)
        # Answered by us, not relayed: a relayed 503 would be turned into 500 (RFC 3261 16.7),
        # but a carrier's 503 is what tells the customer's switch to try elsewhere.
        KSR.tm.t_reply(final_code, final_reason)
        final = next(a for a in attempts if a.code == final_code)
        self._finish(call, final_code, final_reason, datetime.now(UTC), attempts=attempts, q850=final.q850_cause,
                     hangup_side="proxy" if KSR.tm.t_branch_timeout() > 0 else "callee")
        return 1

    @_guarded
    def ksr_media_reply(self, msg: Any) -> int:
        media.on_reply(self._app())
        return 1

    @_guarded
    def ksr_onsend_route(self, msg: Any) -> int:
        return 1

    @_guarded
    def ksr_onreply_route(self, msg: Any) -> int:
        return 1

    def ksr_topos_event(self, msg: Any, evname: str) -> int:
        """topos:msg-sending (event_mode 2): a message about to go out; calls of trunks with
        topology hiding off are left as they are. Not _guarded: nothing may be answered here,
        and on any doubt the message is hidden."""
        try:
            _TOPOS_CALLS.inc()
            call_id = _pv("$ci")
            if any(KSR.htable.sht_is_null(topology.SKIP_TABLE, topology.skip_key(call_id, tag)) == -1
                   for tag in (_pv("$ft"), _pv("$tt")) if tag):
                KSR.set_drop()  # 'drop' in this event means: skip topology hiding
        except Exception:
            pass
        return 1

    # ------------------------------------------------------------------ dialog events
    @_guarded
    def ksr_dialog_event(self, msg: Any, evname: str) -> int:
        # other transitions arrive as "unknown", and dialog:failed was recorded by the failure route
        if evname == "dialog:start":
            KSR.pv.sets(ANSWER_VAR, datetime.now(UTC).isoformat())
            # the event runs on the answer: its source is the called side's address
            KSR.pv.sets(PEERS_VAR, f"{_pv(PEERS_VAR)} {_canonical_ip(_pv('$si'))}".strip())
        elif evname in ("dialog:end", "dialog:timeout"):
            # dialog:end, or the timeout event, which comes first when the call's time is up: the
            # dialog module then sends BYE both ways, and its dialog:end may never fire (the BYE
            # replies can finish the dialog before it gets there). Whichever comes first records
            # the call; the other finds it done.
            raw = _pv(CALL_VAR)
            if not raw or _pv(DONE_VAR):
                return 1
            KSR.pv.sets(DONE_VAR, "1")
            answer = _pv(ANSWER_VAR)
            call = json.loads(raw)
            self.open_call = call
            route = call["routes"][int(_pv(ROUTE_VAR) or 0)]
            attempts = [*_attempts(), _attempt(route, 200, "OK", ended_at=answer or None)]
            # a BYE from the caller carries the dialog's From tag; the timeout, or no BYE at all, is ours
            by = _pv("$ft")
            side = "proxy" if evname == "dialog:timeout" or not by else (
                "caller" if by == _pv("$dlg(from_tag)") else "callee")
            self._finish(call, 200, "OK", datetime.now(UTC),
                         answer_at=datetime.fromisoformat(answer) if answer else None, attempts=attempts,
                         hangup_side=side, q850=q850_cause(_pv("$hdr(Reason)")) if by else None)
        return 1

    # ------------------------------------------------------------------ helpers
    def _app(self) -> bootstrap.App:
        if self.app is None:  # a process that skipped child_init (should not happen) builds it now
            self.app = bootstrap.build_app()
        return self.app

    def _ban(self, account_id: Any) -> str | None:
        account = self._app().snapshot().accounts.get(account_id) if account_id else None
        return account.ban if account else None

    def _cdr(self, request: CallRequest, now: datetime, code: int, reason: str,
             decision: Reject, direction: str = "outbound") -> CdrRecord:
        ctx = decision.context
        return CdrRecord(
            cdr_id=uuid.uuid4(), call_id=request.call_id, node=self._app().settings.node.name,
            invite_at=now, end_at=now, sip_code=code, sip_reason=reason, direction=direction,
            account_id=ctx.account_id, trunk_id=ctx.trunk_id,
            from_raw=request.caller, to_raw=request.dialed,
            from_e164=ctx.from_e164, to_e164=ctx.to_e164, lrn=ctx.lrn, jurisdiction=ctx.jurisdiction,
            trace=compact_trace(decision.trace), ban=self._ban(ctx.account_id),
            lrn_source=lrn_source_of(decision.trace), q850_cause=decision.q850_cause, hangup_side="proxy",
        )

    def _cdr_from_call(self, call: dict[str, Any], code: int, reason: str, end_at: datetime,
                       answer_at: datetime | None = None,
                       attempts: list[failover.Attempt] | None = None,
                       hangup_side: str | None = None, q850: int | None = None) -> CdrRecord:
        route = call["routes"][int(_pv(ROUTE_VAR) or 0)] if call.get("routes") else {}
        duration = billable_duration(answer_at, end_at)
        money: dict[str, str] = {}
        if call.get("price"):
            price = rating.price_from_json(call["price"])
            vendor_rate = Decimal(route["rate"]) if route.get("rate") else None
            owed = rating.bill(duration, int(call.get("max_s") or 0), price, vendor_rate)
            money = {"billable_s": str(owed.billable_s), "customer_rate": str(price.per_minute),
                     "customer_price": str(owed.customer_price), "vendor_cost": str(owed.vendor_cost),
                     "margin": str(owed.margin), "settle": str(bool(call.get("reserved")))}
        fields = {k: call[k] for k in ("call_id", "direction", "invite_at", "account_id", "trunk_id",
                                       "from_e164", "to_e164", "lrn", "jurisdiction", "trace", "ban",
                                       "lrn_source") if call.get(k)}
        ringing = _pv(RING_VAR)
        pdd = pdd_ms(datetime.fromisoformat(call["invite_at"]), datetime.fromisoformat(ringing)) if ringing else None
        return CdrRecord.from_fields({
            **fields,
            "cdr_id": call.get("cdr_id") or str(uuid.uuid4()),
            "node": self._app().settings.node.name,
            "from_raw": call.get("caller") or "",
            "to_raw": call.get("dialed") or "",
            **({"provider_id": route["vendor_id"], "gateway": route["gateway"]} if route else {}),
            **({"vendor_rate": route["rate"]} if route.get("rate") else {}),
            "sip_code": str(code),
            "sip_reason": reason,
            **({"answer_at": answer_at.isoformat()} if answer_at else {}),
            "end_at": end_at.isoformat(),
            "duration_s": str(duration),
            **money,
            **({"attempts": json.dumps([a.to_json() for a in attempts])} if attempts else {}),
            **({"ringing_at": ringing, "pdd_ms": str(pdd)} if ringing else {}),
            **({"q850_cause": str(q850)} if q850 is not None else {}),
            **({"hangup_side": hangup_side} if hangup_side else {}),
        })


def _hide_topology(request: CallRequest, trunk: Any) -> None:
    if not topology.hides(trunk):
        KSR.htable.sht_sets(topology.SKIP_TABLE, topology.skip_key(request.call_id, _pv("$ft")), "1")


def _canonical_ip(text: str) -> str:
    address = destinations.parse_ip(text)
    return text if address is None else str(address)


def _attempt(route: dict[str, Any], code: int, reason: str, q850: int | None = None,
             ended_at: str | None = None) -> failover.Attempt:
    """The attempt of ``route`` ending now (or at ``ended_at``), with its times and PDD."""
    started, ringing = _pv(ATTEMPT_AT_VAR) or None, _pv(ATTEMPT_RING_VAR) or None
    pdd = pdd_ms(datetime.fromisoformat(started), datetime.fromisoformat(ringing)) if started and ringing else None
    return failover.Attempt(route["vendor"], route["gateway"], code, reason, started, ringing,
                            ended_at or datetime.now(UTC).isoformat(), pdd, q850)


def _call_state() -> dict[str, Any] | None:
    """The call's context kept with its dialog (None outside a dialog of ours)."""
    raw = _pv(CALL_VAR)
    return json.loads(raw) if raw else None


def _attempts() -> list[failover.Attempt]:
    raw = _pv(ATTEMPTS_VAR)
    return [failover.Attempt(**a) for a in json.loads(raw)] if raw else []
