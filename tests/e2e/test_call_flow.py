"""One real Kamailio with the Python engine, SIPp customers and vendors on their own addresses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e import provision
from tests.e2e.harness import (
    Node,
    RawUA,
    call_id_of,
    cdr,
    header,
    kamailio_node,
    reply_to,
    scenario_expecting,
    sipp,
    vendor,
)

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.2"
CUSTOMER = "127.0.0.11"
SUSPENDED_CUSTOMER = "127.0.0.12"
STRANGER = "127.0.0.99"
SILENT_ROUTE_CUSTOMER = "127.0.0.13"
SILENT_VENDOR = "127.0.0.23"
DEAR_VENDOR = "127.0.0.21"
CHEAP_VENDOR = "127.0.0.22"
DIALED = "12125551234"
CALLER = "13055550100"


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    provision.reset(module_db)
    dear = provision.vendor(module_db, "dear", DEAR_VENDOR, {"1": "0.0100", "44": "0.0200"})
    cheap = provision.vendor(module_db, "cheap", CHEAP_VENDOR, {"1": "0.0080"})
    plan = provision.plan(module_db, "standard", [dear, cheap])
    account, trunk = provision.customer(module_db, "BAN-A", f"{CUSTOMER}/32", plan)
    provision.customer(module_db, "BAN-S", f"{SUSPENDED_CUSTOMER}/32", plan, status="suspended")
    silent = provision.vendor(module_db, "silent", SILENT_VENDOR, {"1": "0.0010"})
    provision.customer(module_db, "BAN-T", f"{SILENT_ROUTE_CUSTOMER}/32",
                       provision.plan(module_db, "silent-only", [silent]))
    return {"dear": dear, "cheap": cheap, "account": account, "trunk": trunk}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("node"),
                       extra_env={"WARP_SIP__FR_TIMEOUT_MS": "1500"}) as n:
        yield n




def test_options_to_the_proxy_is_answered(node: Node) -> None:
    from routing_engine.adapters.sipcheck import options_ping

    assert options_ping(node.address, node.port) == 200


def test_call_reaches_the_cheapest_vendor_and_bye_follows_the_dialog(
        node: Node, world: dict[str, uuid.UUID], module_db: psycopg.Connection, tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", CHEAP_VENDOR, tmp_path) as cheap, \
            vendor("vendor_answer.xml", DEAR_VENDOR, tmp_path) as dear:
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, hold_ms=1200)
        assert uac.wait() == 0, uac.report()
        assert cheap.wait() == 0, cheap.report()  # its one call completed: INVITE ... BYE/200
        invites = cheap.received("INVITE")
        assert invites and invites[0].startswith(f"INVITE sip:{DIALED}@{CHEAP_VENDOR}:5060 SIP/2.0")
        # topology hidden (topos): the vendor sees the proxy as the caller's only hop and contact
        assert "Record-Route" not in invites[0] and CUSTOMER not in header(invites[0], "Contact")[0]
        assert all(PROXY in via and CUSTOMER not in via for via in header(invites[0], "Via"))
        assert len(cheap.received("BYE")) == 1 and len(cheap.received("ACK")) == 1
        assert dear.received("INVITE") == []

    row = cdr(module_db, call_id_of(uac))
    assert row["sip_code"] == 200
    assert (row["account_id"], row["trunk_id"], row["provider_id"]) == (
        world["account"], world["trunk"], world["cheap"])
    assert (row["from_e164"], row["to_e164"]) == (f"+{CALLER}", f"+{DIALED}")
    assert (row["from_raw"], row["to_raw"], row["gateway"]) == (CALLER, DIALED, "cheap-gw")
    assert row["invite_at"] <= row["answer_at"] <= row["end_at"]  # type: ignore[operator]
    assert 1 <= row["duration_s"] <= 3  # type: ignore[operator]
    assert str(row["vendor_rate"]) == "0.008000"
    assert row["node"] == "test-node"
    assert row["trace"]["candidates"][0] == {  # type: ignore[index]
        "vendor": "cheap", "kept": True, "rate": "0.008000", "prefix": "1"}


def test_call_over_tcp_is_relayed_to_a_udp_vendor(node: Node, module_db: psycopg.Connection,
                                                  tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", CHEAP_VENDOR, tmp_path) as cheap:
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, local_port=5070, remote=node.target,
                   service=DIALED, keys={"caller": CALLER}, transport="t1")
        assert uac.wait() == 0, uac.report()
        assert cheap.wait() == 0, cheap.report()
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 200


def test_cancel_reaches_the_vendor_and_the_attempt_is_recorded_as_487(
        node: Node, module_db: psycopg.Connection, tmp_path: Path) -> None:
    with vendor("vendor_ring_until_cancel.xml", CHEAP_VENDOR, tmp_path) as cheap:
        uac = sipp("customer_cancel.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert cheap.wait() == 0, cheap.report()
        assert len(cheap.received("CANCEL")) == 1
    row = cdr(module_db, call_id_of(uac))
    assert (row["sip_code"], row["answer_at"], row["duration_s"]) == (487, None, 0)


def test_unknown_source_is_challenged_and_never_routed(node: Node, tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", CHEAP_VENDOR, tmp_path) as cheap:
        uac = sipp(scenario_expecting(407, tmp_path), STRANGER, tmp_path, remote=node.target,
                   service=DIALED, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert cheap.received("INVITE") == []
    assert 'Proxy-Authenticate: Digest realm="warp.local"' in uac.trace()


@pytest.mark.parametrize("source, dialed, code", [
    (SUSPENDED_CUSTOMER, DIALED, 403),   # account suspended
    (CUSTOMER, "12", 484),               # not a number
    (CUSTOMER, "81312345678", 404),      # Japan: no vendor sells it
])
def test_refused_calls_get_their_answer_and_a_cdr(node: Node, module_db: psycopg.Connection, tmp_path: Path,
                                                  source: str, dialed: str, code: int) -> None:
    uac = sipp(scenario_expecting(code, tmp_path), source, tmp_path, remote=node.target,
               service=dialed, keys={"caller": CALLER})
    assert uac.wait() == 0, uac.report()
    row = cdr(module_db, call_id_of(uac))
    assert row["sip_code"] == code and row["provider_id"] is None


def test_suspended_account_is_told_why(node: Node, tmp_path: Path) -> None:
    uac = sipp(scenario_expecting(403, tmp_path), SUSPENDED_CUSTOMER, tmp_path, remote=node.target,
               service=DIALED, keys={"caller": CALLER})
    assert uac.wait() == 0, uac.report()
    assert "SIP/2.0 403 Account suspended" in uac.trace()


def test_unsold_destination_carries_a_q850_reason(node: Node, tmp_path: Path) -> None:
    uac = sipp(scenario_expecting(404, tmp_path), CUSTOMER, tmp_path, remote=node.target,
               service="81312345678", keys={"caller": CALLER})
    assert uac.wait() == 0, uac.report()
    assert 'Reason: Q.850;cause=3;text="No Route"' in uac.trace()


def test_retransmitted_invite_is_absorbed_and_a_negative_reply_ack_stays_hop_by_hop(
        node: Node, module_db: psycopg.Connection) -> None:
    customer, gateway = RawUA(CUSTOMER, 5090), RawUA(CHEAP_VENDOR, 5060)
    try:
        call_id = f"raw-{uuid.uuid4()}"
        invite = (f"INVITE sip:{DIALED}@{PROXY}:5060 SIP/2.0\n"
                  f"Via: SIP/2.0/UDP {CUSTOMER}:5090;branch=z9hG4bK{call_id};rport\n"
                  f"From: <sip:{CALLER}@{CUSTOMER}>;tag=c1\nTo: <sip:{DIALED}@{PROXY}>\n"
                  f"Call-ID: {call_id}\nCSeq: 1 INVITE\nContact: <sip:{CALLER}@{CUSTOMER}:5090>\n"
                  f"Max-Forwards: 70\nContent-Length: 0\n\n")
        customer.send(invite, (PROXY, 5060))
        forwarded, proxy_addr = gateway.recv_until(lambda m: m.startswith("INVITE"))
        gateway.send(reply_to(forwarded, 180, "Ringing", "v1").replace("\r\n", "\n"), proxy_addr)
        customer.recv_until(lambda m: m.startswith("SIP/2.0 180"))
        for _ in range(2):  # the customer's switch retransmits
            customer.send(invite, (PROXY, 5060))
            customer.recv_until(lambda m: m.startswith("SIP/2.0 180"))  # tm answers from its state
        gateway.send(reply_to(forwarded, 486, "Busy Here", "v1").replace("\r\n", "\n"), proxy_addr)
        busy, _ = customer.recv_until(lambda m: m.startswith("SIP/2.0 486"))
        to_tag = header(busy, "To")[0]
        customer.send(invite.replace("INVITE sip", "ACK sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
                      .replace(f"To: <sip:{DIALED}@{PROXY}>", f"To: {to_tag}"), (PROXY, 5060))
        seen = gateway.drain(quiet_s=0.5)
        assert [m for m in seen if m.startswith("INVITE")] == [], "a retransmission leaked upstream"
        acks = [m for m in seen if m.startswith("ACK")]
        assert len(acks) == 1 and CUSTOMER not in header(acks[0], "Via")[0]  # the proxy's own ACK
        assert cdr(module_db, call_id)["sip_code"] == 486
    finally:
        customer.close()
        gateway.close()


def test_non_invite_outside_a_dialog_is_refused_with_405(node: Node) -> None:
    ua = RawUA(CUSTOMER, 5091)
    try:
        ua.send(f"MESSAGE sip:{DIALED}@{PROXY} SIP/2.0\nVia: SIP/2.0/UDP {CUSTOMER}:5091;branch=z9hG4bKm1\n"
                f"From: <sip:{CALLER}@{CUSTOMER}>;tag=m1\nTo: <sip:{DIALED}@{PROXY}>\nCall-ID: m1\n"
                f"CSeq: 1 MESSAGE\nMax-Forwards: 70\nContent-Length: 0\n\n", (PROXY, 5060))
        reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0"))
        assert reply.startswith("SIP/2.0 405") and header(reply, "Allow")
    finally:
        ua.close()


def test_reinvite_follows_the_dialog_to_the_vendor(node: Node, module_db: psycopg.Connection,
                                                   tmp_path: Path) -> None:
    with vendor("vendor_answer_reinvite.xml", CHEAP_VENDOR, tmp_path) as cheap:
        uac = sipp("customer_reinvite.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert cheap.wait() == 0, cheap.report()
        invites = cheap.received("INVITE")
        assert len(invites) == 2 and "CSeq: 2 INVITE" in invites[1]
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 200


def test_vendor_refusal_reaches_the_customer_and_is_recorded(node: Node, module_db: psycopg.Connection,
                                                             tmp_path: Path) -> None:
    with vendor("vendor_reject.xml", CHEAP_VENDOR, tmp_path) as cheap:
        uac = sipp(scenario_expecting(503, tmp_path), CUSTOMER, tmp_path, remote=node.target,
                   service=DIALED, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert cheap.wait() == 0, cheap.report()
    row = cdr(module_db, call_id_of(uac))
    assert (row["sip_code"], row["provider_id"] is not None) == (503, True)


def test_vendor_that_never_answers_times_out_with_408(node: Node, module_db: psycopg.Connection,
                                                     tmp_path: Path) -> None:
    silent = RawUA(SILENT_VENDOR, 5060)  # receives the INVITEs, answers nothing
    try:
        uac = sipp(scenario_expecting(408, tmp_path), SILENT_ROUTE_CUSTOMER, tmp_path,
                   remote=node.target, service=DIALED, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert any(m.startswith("INVITE") for m in silent.drain(quiet_s=0.2))
    finally:
        silent.close()
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 408


def test_no_python_exception_escaped_during_the_module(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
