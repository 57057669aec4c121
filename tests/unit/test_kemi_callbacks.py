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
        return SimpleNamespace(ok=True, limit="", scope="")

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
    kam.app = app  # type: ignore[assignment]
    return kam


def invite(node: warp_kemi.kamailio) -> dict[str, Any]:
    """The initial INVITE, relayed: the call's state as kept in its dialog."""
    assert node.ksr_request_route(None) == 1
    assert ("tm.t_relay", ()) in KSR.calls
    return json.loads(KSR.vars[warp_kemi.CALL_VAR])  # type: ignore[no-any-return]


def only_cdr(app: FakeApp) -> tuple[CdrRecord, Any]:
    assert len(app.ended) == 1, app.ended
    return app.ended[0]


# ------------------------------------------------------------------ the callbacks as they should run

def test_an_initial_invite_is_admitted_under_our_own_identity_and_relayed_to_the_vendor(
        node: warp_kemi.kamailio, app: FakeApp) -> None:
    call = invite(node)
    assert KSR.vars["$ru"].startswith(f"sip:{DIALED}@192.0.2.1")
    assert call["cdr_id"] == str(app.limits.admitted[0]) and call["call_id"] == "cid-1@10.0.0.1"
    assert KSR.vars[warp_kemi.PEERS_VAR] == CALLER_IP
    assert app.ended == [] and KSR.replies == []  # nothing answered by us, no CDR yet


def test_the_last_vendor_failing_answers_the_customer_and_ends_the_call(node: warp_kemi.kamailio,
                                                                         app: FakeApp) -> None:
    call = invite(node)
    KSR.vars.update({"$T_reply_code": "503", "$T_reply_reason": "Service Unavailable"})
    assert node.ksr_failure_route(None) == 1
    assert KSR.replies == [(503, "Service Unavailable")]
    record, release = only_cdr(app)
    assert (record.sip_code, str(record.cdr_id), record.settle) == (503, call["cdr_id"], True)
    assert release[0] == record.cdr_id


def test_an_answered_call_is_billed_when_its_dialog_ends(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    KSR.vars[warp_kemi.ANSWER_VAR] = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    KSR.vars.update({"$ft": "caller-tag", "$dlg(from_tag)": "caller-tag"})
    assert node.ksr_dialog_event(None, "dialog:end") == 1
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side) == (200, "caller")
    assert record.customer_price == Decimal("1.000000")  # 30 s billed 60/60 at 1.00/min


# ------------------------------------------------------------------ a callback failing half-way

def test_a_failure_after_admission_still_ends_the_call_with_its_cdr_and_releases_its_place(
        node: warp_kemi.kamailio, app: FakeApp, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any) -> None:
        raise RuntimeError("media relay exploded")

    monkeypatch.setattr(warp_kemi.media, "start_call", explode)
    assert node.ksr_request_route(None) == 1
    assert KSR.replies == [(500, "Server Internal Error")]
    record, release = only_cdr(app)
    assert record.cdr_id == app.limits.admitted[0]  # the admitted call's own identity
    assert (record.sip_code, record.settle, record.customer_price) == (500, True, Decimal("0.000000"))
    assert release == (record.cdr_id, str(record.trunk_id), str(record.account_id))
    assert node.open_call is None


def test_a_failure_in_the_failure_route_still_ends_the_call(node: warp_kemi.kamailio, app: FakeApp,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    call = invite(node)

    def explode(*args: Any) -> None:
        raise RuntimeError("failover broke")

    monkeypatch.setattr(warp_kemi.failover, "next_route", explode)
    KSR.vars.update({"$T_reply_code": "503", "$T_reply_reason": "Service Unavailable"})
    assert node.ksr_failure_route(None) == 1
    record, release = only_cdr(app)
    assert (str(record.cdr_id), record.sip_code, record.settle) == (call["cdr_id"], 500, True)
    assert release is not None


def test_a_failure_when_the_dialog_ends_still_charges_the_answered_call(node: warp_kemi.kamailio, app: FakeApp,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    invite(node)
    KSR.vars[warp_kemi.ANSWER_VAR] = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()

    def explode(*args: Any) -> None:
        raise RuntimeError("attempt record broke")

    monkeypatch.setattr(warp_kemi, "_attempt", explode)
    assert node.ksr_dialog_event(None, "dialog:end") == 1
    record, release = only_cdr(app)
    assert (record.sip_code, record.settle) == (500, True)
    assert record.customer_price == Decimal("1.000000") and record.billable_s == 60
    assert release is not None
    assert KSR.vars[warp_kemi.DONE_VAR] == "1"
    # the dialog's other end event finds it recorded: no second CDR
    assert node.ksr_dialog_event(None, "dialog:timeout") == 1
    assert len(app.ended) == 1


# ------------------------------------------------------------------ the other callbacks, one by one

def in_dialog(node: warp_kemi.kamailio, method: str, source: str, call: dict[str, Any] | None) -> None:
    KSR.calls.clear()
    KSR.replies.clear()
    KSR.vars.update({"$si": source, "$rm": method, "$ru": f"sip:{CALLER}@{CALLER_IP}:5060", "$du": ""})
    if call is not None:
        KSR.vars[warp_kemi.CALL_VAR] = json.dumps(call)
    KSR.answers.update({"siputils.has_totag": 1, "rr.loose_route": 1, "is_INVITE": method == "INVITE",
                        "is_BYE": method == "BYE", "is_ACK": method == "ACK",
                        "dialog.is_known_dlg": 1 if call is not None else -1})
    assert node.ksr_request_route(None) == 1


def test_a_bye_from_either_side_of_the_call_is_relayed(node: warp_kemi.kamailio, app: FakeApp) -> None:
    call = invite(node)
    KSR.vars["$si"] = "192.0.2.1"  # the vendor's 200
    assert node.ksr_dialog_event(None, "dialog:start") == 1
    assert KSR.vars[warp_kemi.PEERS_VAR] == f"{CALLER_IP} 192.0.2.1"
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
    first = KSR.vars[warp_kemi.RING_VAR]
    assert first and KSR.vars[warp_kemi.ATTEMPT_RING_VAR] == first
    assert node.ksr_vendor_reply(None) == 1  # a second 180 changes nothing
    assert KSR.vars[warp_kemi.RING_VAR] == first


def test_a_canceled_call_ends_as_487_by_the_caller(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    KSR.answers["tm.t_is_canceled"] = 1
    assert node.ksr_failure_route(None) == 1
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side) == (487, "caller")


def test_the_dialog_timeout_ends_the_call_as_the_proxys(node: warp_kemi.kamailio, app: FakeApp) -> None:
    invite(node)
    KSR.vars[warp_kemi.ANSWER_VAR] = (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
    assert node.ksr_dialog_event(None, "dialog:timeout") == 1
    assert node.ksr_dialog_event(None, "dialog:end") == 1  # the end after the timeout finds it done
    record, _ = only_cdr(app)
    assert (record.sip_code, record.hangup_side, record.billable_s) == (200, "proxy", 120)


def test_the_topos_event_skips_only_calls_whose_trunk_exposes_its_topology(node: warp_kemi.kamailio) -> None:
    KSR.answers["htable.sht_is_null"] = 1  # not in the skip table
    assert node.ksr_topos_event(None, "topos:msg-sending") == 1
    assert ("set_drop", ()) not in KSR.calls
    KSR.answers["htable.sht_is_null"] = -1
    assert node.ksr_topos_event(None, "topos:msg-sending") == 1
    assert ("set_drop", ()) in KSR.calls


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
