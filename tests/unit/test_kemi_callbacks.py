"""The KEMI callbacks run against a recording stand-in for Kamailio (tests/unit/fake_ksr.py):
what each one sends, and that a call admitted is never left without its CDR and its money —
also when a callback fails half-way."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from routing_engine.bootstrap import Decider
from routing_engine.calls import service as service_module
from routing_engine.calls.service import CallService
from routing_engine.calls.state import CallState, StateFormatError
from routing_engine.domain.cdr import CdrRecord
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.settings import load_settings
from tests.unit import fake_ksr
from tests.unit.factories import World, rate

KSR = fake_ksr.install()

from kemi import warp_kemi  # noqa: E402  (imports KSR: the fake must be in place first)

CALLER_IP, DIALED, CALLER = "10.0.0.1", "12125551234", "13055550100"


@dataclass
class FakeLimits:
    admitted: list[uuid.UUID] = field(default_factory=list)

    def admit(self, call: uuid.UUID, *args: Any) -> Any:
        self.admitted.append(call)
        return SimpleNamespace(ok=True, limit="", scope="", paid_s=3600, reserved_micros=10_000,
                               available_micros=10**12)

    def release(self, *args: Any) -> None:
        pass


@dataclass
class FakeWallet:
    def reserve(self, call: uuid.UUID, account: uuid.UUID, now: float, hold: int, first: int, want: int,
                credit: int) -> Any:
        return SimpleNamespace(micros=want, available=10**12)


@dataclass
class FakeApp:
    snap: RoutingSnapshot
    settings: Any = field(default_factory=lambda: load_settings(environ={
        "WARP_MEDIA__ENABLED": "false", "WARP_NODE__NAME": "unit-node"}))
    limits: FakeLimits = field(default_factory=FakeLimits)
    wallet: FakeWallet = field(default_factory=FakeWallet)
    ended: list[tuple[CdrRecord, Any]] = field(default_factory=list)
    blocks: Any = None
    lrn_lookup: Any = None
    cdr_stream: Any = field(default_factory=lambda: SimpleNamespace(client=None))
    unknown_user_ha1: str = "0" * 32
    defence: Any = None
    decide: Decider = field(default_factory=lambda: Decider("US"))

    def snapshot(self) -> RoutingSnapshot:
        return self.snap

    def end_call(self, record: CdrRecord, release: Any = None, outcomes: Any = None) -> None:
        self.ended.append((record, release))

    def emit_cdr(self, record: CdrRecord) -> None:
        self.end_call(record)

    def is_peer(self, ip: str) -> bool:
        return ip == CALLER_IP

    def destination_refusal(self, host: str, port: int) -> str | None:
        return None

    def count_media_failure(self, kind: str) -> None:
        pass


class NoSessions:
    def ping(self) -> bool:
        return True

    def query(self, call_id: str, from_tag: str) -> dict[str, Any]:
        return {}

    def delete(self, call_id: str, from_tag: str) -> None:
        pass


@pytest.fixture
def app() -> FakeApp:
    w = World()
    w.customer(f"{CALLER_IP}/32", w.plan("p", [w.vendor("v", [rate("1", "0.01")])]))
    return FakeApp(w.snapshot())


@pytest.fixture
def node(app: FakeApp) -> warp_kemi.kamailio:
    KSR.reset()
    KSR.vars.update({"$si": CALLER_IP, "$sp": "5060", "$pr": "udp", "$rU": DIALED, "$fU": CALLER,
                     "$ci": "cid-1@10.0.0.1", "$ft": "caller-tag", "$rm": "INVITE"})
    KSR.answers.update({"is_INVITE": True, "is_ACK": False, "is_request": True, "is_OPTIONS": False,
                        "is_CANCEL": False, "siputils.has_totag": -1, "tmx.t_precheck_trans": -1,
                        "tm.t_check_trans": -1, "htable.sht_is_null": 1, "htable.sht_get": None,
                        "tm.t_is_canceled": -1,
                        "tm.t_branch_timeout": -1})
    kam = warp_kemi.kamailio()
    kam.svc = CallService(app, warp_kemi._Sip(), NoSessions())  # type: ignore[arg-type]
    return kam


def state() -> CallState:
    call = warp_kemi._state()  # as the callbacks read it: the dialog's state with its ringing
    assert call is not None
    return call


def keep(call: CallState) -> None:
    KSR.vars[warp_kemi.STATE] = call.to_wire()


def invite(node: warp_kemi.kamailio) -> CallState:
    """The initial INVITE, relayed: the call's state as kept in its dialog."""
    assert node.ksr_request_route(None) == 1
    assert ("tm.t_relay", ()) in KSR.calls
    return state()


def answered(seconds_ago: int) -> None:
    keep(state().evolve(answer_at=(datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()))


def only_cdr(app: FakeApp) -> tuple[CdrRecord, Any]:
    assert len(app.ended) == 1, app.ended
    return app.ended[0]


# ------------------------------------------------------------------ the callbacks as they should run

def test_an_initial_invite_is_admitted_under_our_own_identity_and_relayed_to_the_vendor(
        node: warp_kemi.kamailio, app: FakeApp) -> None:
    call = invite(node)
    assert KSR.vars["$ru"].startswith(f"sip:{DIALED}@192.0.2.1")
    assert call.cdr_id == app.limits.admitted[0] and call.call_id == "cid-1@10.0.0.1"
    assert call.peers == (CALLER_IP,) and call.attempt_at is not None
    assert ("dialog.dlg_manage", ()) in KSR.calls and ("rr.record_route", ()) in KSR.calls
    assert ("dialog.dlg_set_timeout", (call.max_s,)) in KSR.calls
    assert app.ended == [] and KSR.replies == []  # nothing answered by us, no CDR yet


def test_the_last_vendor_failing_answers_the_customer_and_ends_the_call(node: warp_kemi.kamailio,
                                                                         app: FakeApp) -> None:
    call = invite(node)
    KSR.vars.update({"$T_reply_code": "503", "$T_reply_reason": "Service Unavailable"})
    assert node.ksr_failure_route(None) == 1
    assert KSR.replies == [(503, "Service Unavailable")]
    record, release = only_cdr(app)
    assert (record.sip_code, record.cdr_id, record.settle) == (503, call.cdr_id, True)
    assert release[0] == record.cdr_id


def test_an_answered_call_is_billed_when_its_dialog_ends(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    answered(30)
    KSR.vars.update({"$ft": "caller-tag", "$dlg(from_tag)": "caller-tag"})
    assert node.ksr_dialog_event(None, "dialog:end") == 1
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side) == (200, "caller")
    assert record.customer_price == Decimal("1.000000")  # 30 s billed 60/60 at 1.00/min


def test_an_answered_call_costs_what_the_vendors_deck_says_and_its_cdr_carries_the_margin(
        node: warp_kemi.kamailio) -> None:
    w = World()
    w.customer(f"{CALLER_IP}/32", w.plan("p", [w.vendor("v", [rate("1", "0.01", billing="60/60/30/0.002")])]))
    deck = FakeApp(w.snapshot())
    node.svc = CallService(deck, warp_kemi._Sip(), NoSessions())  # type: ignore[arg-type]
    call = invite(node)
    assert call.routes[0].terms == "60/60/30/0.002"  # kept in the dialog with the rate
    answered(10)
    KSR.vars.update({"$ft": "caller-tag", "$dlg(from_tag)": "caller-tag"})
    assert node.ksr_dialog_event(None, "dialog:end") == 1
    record, _ = only_cdr(deck)
    # 10 s: raised to the 30 s minimum, billed as the first whole minute, plus the connection fee
    assert (record.vendor_rate, record.vendor_cost) == (Decimal("0.01"), Decimal("0.012000"))
    assert record.margin == record.customer_price - record.vendor_cost == Decimal("0.988000")  # type: ignore[operator]


# ------------------------------------------------------------------ a callback failing half-way

def test_a_failure_after_admission_still_ends_the_call_with_its_cdr_and_releases_its_place(
        node: warp_kemi.kamailio, app: FakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> None:
        raise RuntimeError("media relay exploded")

    monkeypatch.setattr(node.svc.media, "start", explode)
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [(500, "Server Internal Error")]
    record, release = only_cdr(app)
    assert record.cdr_id == app.limits.admitted[0]  # the admitted call's own identity
    assert (record.sip_code, record.settle, record.customer_price) == (500, True, Decimal("0.000000"))
    assert release == (record.cdr_id, record.trunk_id, record.account_id)
    assert node.svc.open_call is None


def test_a_failure_in_the_failure_route_still_ends_the_call(node: warp_kemi.kamailio, app: FakeApp,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    call = invite(node)

    def explode(*args: Any) -> None:
        raise RuntimeError("failover broke")

    monkeypatch.setattr(service_module.failover, "next_route", explode)
    KSR.vars.update({"$T_reply_code": "503", "$T_reply_reason": "Service Unavailable"})
    assert node.ksr_failure_route(None) == 1
    record, release = only_cdr(app)
    assert (record.cdr_id, record.sip_code, record.settle) == (call.cdr_id, 500, True)
    assert release is not None


def test_a_failure_when_the_dialog_ends_still_charges_the_answered_call(node: warp_kemi.kamailio, app: FakeApp,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    invite(node)
    answered(30)

    def explode(*args: Any) -> None:
        raise RuntimeError("attempt record broke")

    monkeypatch.setattr(service_module, "_attempt", explode)
    assert node.ksr_dialog_event(None, "dialog:end") == 1
    record, release = only_cdr(app)
    assert (record.sip_code, record.settle) == (500, True)
    assert record.customer_price == Decimal("1.000000") and record.billable_s == 60
    assert release is not None
    assert state().done
    # the dialog's other end event finds it recorded: no second CDR
    assert node.ksr_dialog_event(None, "dialog:timeout") == 1
    assert len(app.ended) == 1


# ------------------------------------------------------------------ the other callbacks, one by one

def in_dialog(node: warp_kemi.kamailio, method: str, source: str, call: CallState | None) -> None:
    KSR.calls.clear()
    KSR.replies.clear()
    KSR.vars.update({"$si": source, "$rm": method, "$ru": f"sip:{CALLER}@{CALLER_IP}:5060", "$du": ""})
    KSR.vars.pop(warp_kemi.STATE, None)
    if call is not None:
        keep(call)
    KSR.answers.update({"siputils.has_totag": 1, "rr.loose_route": 1, "is_INVITE": method == "INVITE",
                        "is_BYE": method == "BYE", "is_ACK": method == "ACK",
                        "dialog.is_known_dlg": 1 if call is not None else -1})
    assert node.ksr_request_route(None) == 1


def test_a_bye_from_either_side_of_the_call_is_relayed(node: warp_kemi.kamailio, app: FakeApp) -> None:
    call = invite(node)
    KSR.vars["$si"] = "192.0.2.1"  # the vendor's 200
    assert node.ksr_dialog_event(None, "dialog:start") == 1
    call = state()
    assert call.peers == (CALLER_IP, "192.0.2.1") and call.answer_at is not None
    for source in (CALLER_IP, "192.0.2.1"):
        in_dialog(node, "BYE", source, call)
        assert ("tm.t_relay", ()) in KSR.calls and KSR.replies == []


def test_an_in_dialog_request_from_a_third_address_or_of_no_dialog_is_not_relayed(node: warp_kemi.kamailio,
                                                                                   app: FakeApp) -> None:
    call = invite(node)
    in_dialog(node, "BYE", "198.51.100.66", call)  # a real call's dialog, but neither of its sides
    assert ("tm.t_relay", ()) not in KSR.calls and KSR.replies == [(481, "Call/Transaction Does Not Exist")]
    in_dialog(node, "INVITE", "198.51.100.66", None)  # any To tag and our Route: no dialog of ours
    assert ("tm.t_relay", ()) not in KSR.calls and KSR.replies == [(481, "Call/Transaction Does Not Exist")]
    in_dialog(node, "ACK", "198.51.100.66", None)  # an ACK is never answered
    assert KSR.replies == []


def test_an_in_dialog_request_to_a_node_service_gets_403(node: warp_kemi.kamailio, app: FakeApp,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    call = invite(node)
    monkeypatch.setattr(app, "destination_refusal", lambda host, port: "127.0.0.1:6379 is this node's Redis")
    in_dialog(node, "BYE", CALLER_IP, call)
    assert ("tm.t_relay", ()) not in KSR.calls and KSR.replies == [(403, "Forbidden")]


def test_a_branch_to_a_forbidden_destination_is_dropped(node: warp_kemi.kamailio, app: FakeApp,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    invite(node)
    monkeypatch.setattr(app, "destination_refusal", lambda host, port: "no SIP peer's address")
    KSR.calls.clear()
    assert node.ksr_branch_route(None) == 1
    assert ("set_drop", ()) in KSR.calls


def test_a_cancel_goes_to_its_transaction_only(node: warp_kemi.kamailio) -> None:
    KSR.answers.update({"is_CANCEL": True, "tm.t_check_trans": -1})
    assert node.ksr_request_route(None) == 1
    assert ("tm.t_relay", ()) not in KSR.calls
    KSR.answers["tm.t_check_trans"] = 1
    assert node.ksr_request_route(None) == 1
    assert ("tm.t_relay", ()) in KSR.calls


def test_the_first_ringing_of_each_attempt_is_noted_for_the_pdd(node: warp_kemi.kamailio) -> None:
    invite(node)
    KSR.vars["$rs"] = "180"
    assert node.ksr_vendor_reply(None) == 1
    first = state().ring_at
    assert first and state().attempt_ring == first
    assert KSR.vars[warp_kemi.STATE] != KSR.vars[warp_kemi.RING]  # kept apart from the rest of the state
    ring = KSR.vars[warp_kemi.RING]
    assert node.ksr_vendor_reply(None) == 1  # a second 180 changes nothing
    assert KSR.vars[warp_kemi.RING] == ring


def test_a_canceled_call_ends_as_487_by_the_caller(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    KSR.answers["tm.t_is_canceled"] = 1
    assert node.ksr_failure_route(None) == 1
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side) == (487, "caller")


def test_the_dialog_timeout_ends_the_call_as_the_proxys(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    answered(90)
    assert node.ksr_dialog_event(None, "dialog:timeout") == 1
    assert node.ksr_dialog_event(None, "dialog:end") == 1  # the end after the timeout finds it done
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side, record.billable_s) == (200, "proxy", 120)


def test_a_field_that_is_not_utf8_gets_400_not_500(node: warp_kemi.kamailio, app: FakeApp,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    read = fake_ksr._Pv.get

    def undecodable(pv: Any, name: str) -> Any:
        if name == "$rU":
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
        return read(pv, name)

    monkeypatch.setattr(fake_ksr._Pv, "get", undecodable)
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [(400, "Bad Request")] and app.ended == []


# ------------------------------------------------------------------ more of the call's life, callback by callback

@pytest.fixture
def two_vendors() -> FakeApp:
    w = World()
    w.customer(f"{CALLER_IP}/32", w.plan("p", [w.vendor("cheap", [rate("1", "0.01")]),
                                              w.vendor("dear", [rate("1", "0.02")])]))
    return FakeApp(w.snapshot())


def test_a_vendor_failure_moves_the_call_to_the_next_vendor(node: warp_kemi.kamailio, two_vendors: FakeApp) -> None:
    kam = node
    kam.svc = CallService(two_vendors, warp_kemi._Sip(), NoSessions())  # type: ignore[arg-type]
    first = invite(kam)
    assert first.route == 0 and [r.vendor for r in first.routes] == ["cheap", "dear"]
    KSR.calls.clear()
    KSR.vars.update({"$T_reply_code": "503", "$T_reply_reason": "Service Unavailable"})
    assert kam.ksr_failure_route(None) == 1
    moved = state()
    assert moved.route == 1 and [(a.vendor, a.code) for a in moved.attempts] == [("cheap", 503)]
    assert ("tm.t_relay", ()) in KSR.calls and KSR.replies == [] and two_vendors.ended == []
    assert KSR.vars["$ru"].startswith(f"sip:{DIALED}@192.0.2.2")
    # the second vendor fails too: the customer gets the best answer, the CDR both attempts
    KSR.vars.update({"$T_reply_code": "486", "$T_reply_reason": "Busy Here"})
    assert kam.ksr_failure_route(None) == 1
    assert KSR.replies == [(486, "Busy Here")] and ("tm.t_reply", (486, "Busy Here")) in KSR.calls
    record, _ = only_cdr(two_vendors)
    assert record.sip_code == 486 and record.attempts is not None and '"cheap"' in record.attempts


def test_an_invite_that_cannot_be_relayed_ends_with_500_and_its_cdr(node: warp_kemi.kamailio, app: FakeApp) -> None:
    KSR.answers["tm.t_relay"] = -1
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [(500, "Relay failed")]
    record, release = only_cdr(app)
    assert (record.sip_code, record.hangup_side) == (500, "proxy") and release[0] == record.cdr_id


def test_the_branch_route_writes_the_caller_as_the_vendor_wants_it(node: warp_kemi.kamailio) -> None:
    call = invite(node)
    route = call.routes[0]
    keep(call.evolve(routes=(type(route)(route.vendor_id, route.vendor, route.gateway, route.ruri, "+" + CALLER),)))
    assert node.ksr_branch_route(None) == 1
    assert KSR.vars["$fU"] == "+" + CALLER and ("set_drop", ()) not in KSR.calls


def test_an_ack_and_a_reinvite_inside_the_call_are_relayed(node: warp_kemi.kamailio) -> None:
    call = invite(node)
    for method in ("ACK", "INVITE"):
        in_dialog(node, method, CALLER_IP, call)
        assert ("tm.t_relay", ()) in KSR.calls and KSR.replies == []


def test_an_anchored_reply_gives_its_sdp_to_the_media_relay(node: warp_kemi.kamailio) -> None:
    KSR.vars.update({"$rs": "200", "$rb": "v=0\r\n", "$cT": "application/sdp",
                     warp_kemi.SDP_AVP: "customer:1", warp_kemi.PLAN_AVP: '{"anchor":true}'})
    assert node.ksr_media_reply(None) == 1
    assert [c for c in KSR.calls if c[0].startswith("rtpengine.")] and \
        KSR.calls[-1][0] == "rtpengine.rtpengine_answer"
    KSR.calls.clear()
    KSR.vars[warp_kemi.SDP_AVP] = ""  # a transaction whose request was not anchored
    assert node.ksr_media_reply(None) == 1
    assert not [c for c in KSR.calls if c[0].startswith("rtpengine.")]


def test_a_register_is_challenged_first(node: warp_kemi.kamailio) -> None:
    KSR.answers.update({"is_INVITE": False, "is_REGISTER": True, "auth.pv_auth_check": -5})  # none sent
    KSR.vars["$si"] = "203.0.113.9"
    assert node.ksr_request_route(None) == 1
    assert ("auth.auth_challenge", (node.svc.node.settings.auth.realm, 1)) in KSR.calls
    KSR.calls.clear()
    KSR.answers.update({"auth.pv_auth_check": -4})  # a stale nonce
    assert node.ksr_request_route(None) == 1
    assert ("auth.auth_challenge", (node.svc.node.settings.auth.realm, 17)) in KSR.calls


def test_options_to_us_is_answered_with_what_we_allow(node: warp_kemi.kamailio) -> None:
    KSR.answers.update({"is_INVITE": False, "is_OPTIONS": True, "is_myself_ruri": 1})
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [(200, "OK")] and any(c[0] == "hdr.append_to_reply" and "Allow:" in c[1][0]
                                                 for c in KSR.calls)


def test_a_flood_from_one_source_is_dropped_unanswered(node: warp_kemi.kamailio, app: FakeApp) -> None:
    KSR.answers["htable.sht_inc"] = app.settings.sip.flood_peer_rps + 1  # CALLER_IP is a peer
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [] and ("tm.t_relay", ()) not in KSR.calls and app.ended == []


def test_a_call_state_of_another_format_is_refused_not_misread() -> None:
    from routing_engine.calls.state import StateFormatError
    with pytest.raises(StateFormatError):
        CallState.from_wire('["c0","x"]')
    with pytest.raises(StateFormatError):
        CallState.from_wire('{"cdr_id": "x"}')


def test_the_call_state_survives_its_wire_form(node: warp_kemi.kamailio) -> None:
    call = invite(node)
    assert CallState.from_wire(call.to_wire()) == call
    # compact: no key names, one array; the trace is its CDR text (quoted), encoded once
    assert len(call.to_wire()) < 1600
    assert isinstance(call.trace, str) and json.loads(call.trace)["funds"]["reserved"]


def test_a_state_of_the_previous_format_is_still_read_and_its_trace_kept_for_the_cdr(
        node: warp_kemi.kamailio) -> None:
    call = invite(node)
    wire = json.loads(call.to_wire())
    wire[0], wire[15] = "c1", json.loads(wire[15])  # as the version before wrote it: trace as an object
    old = CallState.from_wire(json.dumps(wire))
    assert old == call and json.loads(old.trace or "") == json.loads(call.trace or "")
    wire[0] = "c9"
    with pytest.raises(StateFormatError):
        CallState.from_wire(json.dumps(wire))


def test_an_invite_to_a_vendor_with_nothing_to_rewrite_skips_the_branch_route(node: warp_kemi.kamailio) -> None:
    invite(node)
    assert ("tm.t_relay", ()) in KSR.calls
    assert not [c for c in KSR.calls if c[0] == "tm.t_on_branch"]  # one Python entry less per call


def test_the_branch_route_is_armed_for_a_vendor_that_wants_the_caller_written_its_way(
        node: warp_kemi.kamailio, app: FakeApp) -> None:
    from routing_engine.domain.snapshot import Translation

    w = World()
    w.customer(f"{CALLER_IP}/32", w.plan("p", [w.vendor("v", [rate("1", "0.01")],
                                                        translation=Translation(translate_caller=True))]))
    app.snap = w.snapshot()
    invite(node)
    assert ("tm.t_on_branch", ("ksr_branch_route",)) in KSR.calls


def test_the_branch_route_is_armed_to_drop_a_branch_to_a_refused_destination(
        node: warp_kemi.kamailio, app: FakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app, "destination_refusal", lambda host, port: "no SIP peer's address")
    invite(node)
    assert ("tm.t_on_branch", ("ksr_branch_route",)) in KSR.calls
    assert node.ksr_branch_route(None) == 1 and ("set_drop", ()) in KSR.calls


def test_a_callback_run_inside_another_counts_its_cpu_once(node: warp_kemi.kamailio, app: FakeApp,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from routing_engine import metrics

    invite(node)
    answered(30)
    in_dialog(node, "ACK", CALLER_IP, state())  # sets up an in-dialog request from the caller

    def spent(callback: str) -> float:
        return float(metrics.KEMI_CALLBACK_CPU.labels(callback)._value.get())

    before = spent("ksr_request_route"), spent("ksr_dialog_event")
    ticks = iter(range(100))
    monkeypatch.setattr(warp_kemi.time, "thread_time", lambda: float(next(ticks)))
    # the BYE's loose_route runs dialog:end (Kamailio's dialog module does, inside that call)
    KSR.vars.update({"$rm": "BYE", "$dlg(from_tag)": "caller-tag"})
    KSR.answers.update({"is_BYE": True, "is_ACK": False,
                        "rr.loose_route": lambda *_: (node.ksr_dialog_event(None, "dialog:end"), 1)[1]})
    assert node.ksr_request_route(None) == 1
    assert ("tm.t_relay", ()) in KSR.calls and len(app.ended) == 1
    # the BYE from tick 0 to 3, its dialog's end from 1 to 2: 2 are the BYE's own, 1 the end's
    after = spent("ksr_request_route"), spent("ksr_dialog_event")
    assert (after[0] - before[0], after[1] - before[1]) == (2.0, 1.0)
