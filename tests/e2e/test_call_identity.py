"""A Call-ID is not a call's identity: calls that share one (two customers by chance, one
customer on purpose, a new From tag on a known Call-ID) are each their own call, with their own
place in the limits, their own funds, their own charge, their own CDR and their own media.

Every call here is a real SIPp customer through a real Kamailio node (with its CDR emitter and a
real rtpengine); ``-cid_str`` gives the calls of a test one Call-ID, and each SIPp process writes
its own From tag.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from routing_engine.adapters.money import Limits, Wallet
from routing_engine.domain.rating import from_micros, to_micros
from tests.e2e import provision
from tests.e2e.harness import (
    MediaSink,
    Node,
    Rtpengine,
    Sipp,
    header,
    kamailio_node,
    rtpengine,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

pytestmark = pytest.mark.e2e

NODE = "127.0.6.1"
SHARE_A, SHARE_B, PREPAID, CONC, EXPOSED = "127.0.6.11", "127.0.6.12", "127.0.6.13", "127.0.6.14", "127.0.6.15"
MEDIA_X, MEDIA_Y = "127.0.6.21", "127.0.6.22"
RELAY = "127.0.6.30"
VENDOR_A, VENDOR_B = "127.0.6.41", "127.0.6.42"
MEDIA_VENDOR_X, MEDIA_VENDOR_Y = "127.0.6.45", "127.0.6.46"
SINK_PORT = 7078
DIALED, CALLER = "12125551234", "13055550100"


def same_call_id(tag: str) -> list[str]:
    """SIPp options that give a call the Call-ID every call of a test shares."""
    return ["-cid_str", f"shared-{tag}@customer.example"]


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    db = module_db
    provision.reset(db)
    (per_second,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('per-second') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', 0.60, 1, 1)", (per_second,))
    plans = {ip: provision.plan(db, f"to-{ip}", [provision.vendor(db, f"v-{ip}", ip, {"1": "0.0050"})])
             for ip in (VENDOR_A, VENDOR_B, MEDIA_VENDOR_X, MEDIA_VENDOR_Y)}
    ids = {
        "a": provision.customer(db, "ID-A", f"{SHARE_A}/32", plans[VENDOR_A], rate_plan=per_second),
        "b": provision.customer(db, "ID-B", f"{SHARE_B}/32", plans[VENDOR_B], rate_plan=per_second),
        "prepaid": provision.customer(db, "ID-PRE", f"{PREPAID}/32", plans[VENDOR_A], billing_type="prepaid",
                                      credit_limit="0", rate_plan=per_second),
        "conc": provision.customer(db, "ID-CONC", f"{CONC}/32", plans[VENDOR_A]),
        "exposed": provision.customer(db, "ID-EXP", f"{EXPOSED}/32", plans[VENDOR_A]),
        "x": provision.customer(db, "ID-X", f"{MEDIA_X}/32", plans[MEDIA_VENDOR_X]),
        "y": provision.customer(db, "ID-Y", f"{MEDIA_Y}/32", plans[MEDIA_VENDOR_Y]),
    }
    db.execute("UPDATE trunks.trunks SET max_concurrent = 1 WHERE id = %s", (ids["conc"][1],))
    db.execute("UPDATE trunks.trunks SET topology_hiding = false WHERE id = %s", (ids["exposed"][1],))
    db.execute("UPDATE trunks.trunks SET media_anchor = 'always' WHERE id IN (%s, %s)", (ids["x"][1], ids["y"][1]))
    return ids


@pytest.fixture(scope="module")
def relay(e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rtpengine]:
    with rtpengine(e2e_env, RELAY, tmp_path_factory.mktemp("identity-rtpengine"), port_min=42000,
                   port_max=42199) as r:
        yield r


@pytest.fixture(scope="module")
def node(world: dict[str, tuple[uuid.UUID, uuid.UUID]], relay: Rtpengine, clean_redis: redis.Redis,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(relay.env, NODE, tmp_path_factory.mktemp("identity-node")) as n:
        yield n


def cdrs(db: psycopg.Connection, call_id: str, count: int, timeout_s: float = 15) -> list[dict[str, Any]]:
    """The CDRs written for a Call-ID, once there are ``count`` of them (and never more)."""
    def fetch() -> list[dict[str, Any]] | None:
        cur = db.execute("SELECT * FROM cdr.cdrs WHERE call_id = %s ORDER BY invite_at", (call_id,))
        rows = [dict(zip([c.name for c in cur.description], r, strict=True)) for r in cur.fetchall()]
        assert len(rows) <= count, f"{len(rows)} CDRs for {call_id}, expected {count}"
        return rows if len(rows) == count else None

    return wait_for(fetch, timeout_s, f"{count} CDRs of {call_id}")  # type: ignore[no-any-return]


def from_tag(uac: Sipp) -> str:
    invite = next(line for line in uac.trace().splitlines() if line.startswith("From:"))
    return invite.split(";tag=", 1)[1].strip()


def answered(node: Node, customer: str, tmp_path: Path, call_id: list[str], port: int = 5060,
             hold_ms: int = 1000) -> Sipp:
    return sipp("customer_call.xml", customer, tmp_path, local_port=port, remote=node.target, service=DIALED,
                keys={"caller": CALLER}, hold_ms=hold_ms, extra=call_id)


def test_three_answered_calls_sharing_a_call_id_are_three_charges(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Two customers at the same time, then the first again, all with one Call-ID: three CDRs,
    three charges under three references, the ledger and the live balances right to the cent."""
    shared = same_call_id("charges")
    wallet = Wallet(clean_redis)
    with vendor("vendor_answer.xml", VENDOR_A, tmp_path) as gw_a, \
            vendor("vendor_answer.xml", VENDOR_B, tmp_path) as gw_b:
        first = answered(node, SHARE_A, tmp_path, shared, hold_ms=1500)
        second = answered(node, SHARE_B, tmp_path, shared)
        assert first.wait() == 0, first.report()
        assert second.wait() == 0, second.report()
        assert gw_a.wait() == 0 and gw_b.wait() == 0
    with vendor("vendor_answer.xml", VENDOR_A, tmp_path) as gw_a:
        again = answered(node, SHARE_A, tmp_path, shared, hold_ms=2000)  # the same customer, a new From tag
        assert again.wait() == 0, again.report()
        assert gw_a.wait() == 0
    assert len({from_tag(first), from_tag(second), from_tag(again)}) == 3
    rows = cdrs(module_db, shared[1], 3)
    assert [r["sip_code"] for r in rows] == [200, 200, 200]
    assert len({r["cdr_id"] for r in rows}) == 3
    assert all(r["customer_price"] > 0 for r in rows)
    (a, _), (b, _) = world["a"], world["b"]
    price = {acc: sum((r["customer_price"] for r in rows if r["account_id"] == acc), Decimal(0)) for acc in (a, b)}
    assert [r["account_id"] for r in rows].count(a) == 2
    # every call is charged, once, under its own reference: its CDR id
    def charges() -> list[tuple[Any, ...]]:
        return module_db.execute("SELECT reference, account_id, amount FROM billing.balance_updates"
                                 " WHERE kind = 'call_charge' ORDER BY reference").fetchall()
    wait_for(lambda: len(charges()) == 3, 15, "three charges in the ledger")
    assert charges() == sorted((str(r["cdr_id"]), r["account_id"], -r["customer_price"]) for r in rows)
    for acc in (a, b):
        assert from_micros(wallet.balance(acc) or 0) == -price[acc]
        assert wallet.reserved(acc) == 0
        (ledger,) = module_db.execute("SELECT balance FROM billing.account_balances WHERE account_id = %s",
                                      (acc,)).fetchone()
        assert ledger == -price[acc]


def test_second_call_with_the_same_call_id_gets_402_when_the_funds_pay_for_one(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    account, trunk = world["prepaid"]
    wallet, limits = Wallet(clean_redis), Limits(clean_redis)
    # 6 s
    wallet.topup(account, to_micros(Decimal("0.06")), "identity-topup", "2026-12-01T00:00:00+00:00", seed_micros=0)
    shared = same_call_id("funds")
    with vendor("vendor_answer.xml", VENDOR_A, tmp_path) as gateway:
        held = answered(node, PREPAID, tmp_path, shared, hold_ms=3000)
        wait_for(lambda: wallet.reserved(account) == to_micros(Decimal("0.06")), 10, "the first call's reservation")
        second = sipp(scenario_expecting(402, tmp_path), PREPAID, tmp_path, local_port=5061, remote=node.target,
                      service=DIALED, keys={"caller": CALLER}, extra=shared)
        assert second.wait() == 0, second.report()
        assert "402 Insufficient funds" in second.trace()
        # the refusal gave back nothing of the first call's, neither at once nor when the emitter
        # wrote the refusal's CDR: its place and its funds are still held
        assert cdrs(module_db, shared[1], 1)[0]["sip_code"] == 402
        assert limits.active(trunk, account, time.time()) == (1, 1)
        assert wallet.reserved(account) == to_micros(Decimal("0.06"))
        assert held.wait() == 0, held.report()
        assert gateway.wait() == 0 and len(gateway.received("INVITE")) == 1
    rows = cdrs(module_db, shared[1], 2)
    assert sorted(r["sip_code"] for r in rows) == [200, 402]
    (answered_call,) = [r for r in rows if r["sip_code"] == 200]
    wait_for(lambda: wallet.reserved(account) == 0, 10, "the reservation to be settled")
    assert from_micros(wallet.balance(account) or 0) == Decimal("0.06") - answered_call["customer_price"]
    assert limits.active(trunk, account, time.time()) == (0, 0)


def test_second_concurrent_call_with_the_same_call_id_meets_the_call_limit(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    account, trunk = world["conc"]
    limits = Limits(clean_redis)
    shared = same_call_id("limit")
    with vendor("vendor_answer.xml", VENDOR_A, tmp_path) as gateway:
        held = answered(node, CONC, tmp_path, shared, hold_ms=3000)
        wait_for(lambda: limits.active(trunk, account, time.time())[0] == 1, 10, "the first call in progress")
        second = sipp(scenario_expecting(503, tmp_path), CONC, tmp_path, local_port=5061, remote=node.target,
                      service=DIALED, keys={"caller": CALLER}, extra=shared)
        assert second.wait() == 0, second.report()
        assert "503 Call limit reached" in second.trace() and "Retry-After: 5" in second.trace()
        # the first call keeps its place, also once the refusal's CDR is written
        assert cdrs(module_db, shared[1], 1)[0]["sip_code"] == 503
        assert limits.active(trunk, account, time.time()) == (1, 1)
        assert held.wait() == 0, held.report()
        assert gateway.wait() == 0 and len(gateway.received("INVITE")) == 1
    assert sorted(r["sip_code"] for r in cdrs(module_db, shared[1], 2)) == [200, 503]
    wait_for(lambda: limits.active(trunk, account, time.time()) == (0, 0), 5, "the counters to return to zero")


def test_ending_one_call_keeps_the_media_of_another_with_the_same_call_id(
        node: Node, relay: Rtpengine, tmp_path: Path, module_db: psycopg.Connection) -> None:
    """rtpengine holds both calls as one session (one Call-ID) with a leg per From tag: the end of
    the first deletes its own legs only, and the other call's RTP goes on through rtpengine."""
    shared = same_call_id("media")
    sink_x, sink_y = MediaSink(MEDIA_VENDOR_X, SINK_PORT), MediaSink(MEDIA_VENDOR_Y, SINK_PORT)
    try:
        with vendor("vendor_media_answer.xml", MEDIA_VENDOR_X, tmp_path, keys={"sink_port": str(SINK_PORT)}) as gw_x, \
                vendor("vendor_media_answer.xml", MEDIA_VENDOR_Y, tmp_path, keys={"sink_port": str(SINK_PORT)}) as gw_y:
            long = sipp("customer_media_call.xml", MEDIA_X, tmp_path, remote=node.target, service=DIALED,
                        keys={"caller": CALLER, "contact_host": MEDIA_X}, hold_ms=5000,
                        extra=["-mi", MEDIA_X, *shared])
            wait_for(lambda: sink_x.packets >= 10, 10, "the long call's RTP at its vendor")
            short = sipp("customer_media_call.xml", MEDIA_Y, tmp_path, remote=node.target, service=DIALED,
                         keys={"caller": CALLER, "contact_host": MEDIA_Y}, hold_ms=500,
                         extra=["-mi", MEDIA_Y, *shared])
            assert short.wait() == 0, short.report()
            assert gw_y.wait() == 0, gw_y.report()
            assert sink_y.packets > 0
            cdrs(module_db, shared[1], 1)  # the short call has ended and been recorded
            assert relay.calls() == [shared[1]], "the long call's media session went with the short call"
            after = sink_x.packets
            wait_for(lambda: sink_x.packets >= after + 20, 5, "the long call's RTP to go on through rtpengine")
            assert sink_x.source_ips() == {RELAY}
            assert long.wait() == 0, long.report()
            assert gw_x.wait() == 0, gw_x.report()
    finally:
        sink_x.close()
        sink_y.close()
    rows = cdrs(module_db, shared[1], 2)
    long_cdr, short_cdr = sorted(rows, key=lambda r: r["duration_s"], reverse=True)
    assert long_cdr["media"]["anchored"] is True and short_cdr["media"]["anchored"] is True
    # each call's statistics are its own legs' only
    assert long_cdr["media"]["from_customer"] > short_cdr["media"]["from_customer"] > 0
    wait_for(lambda: relay.calls() == [], 5, "rtpengine's session list to be empty")


def test_a_call_id_used_before_by_a_trunk_without_topology_hiding_does_not_expose_another_call(
        node: Node, tmp_path: Path) -> None:
    """Topology hiding is skipped per call; keyed by Call-ID alone, a hidden customer's call
    whose Call-ID an exposed trunk's call had used (for hours after that call) went unhidden."""
    shared = same_call_id("topology")
    seen: dict[str, str] = {}
    for customer in (EXPOSED, SHARE_A):  # a vendor SIPp each: SIPp takes one Call-ID as one call
        with vendor("vendor_answer.xml", VENDOR_A, tmp_path) as gateway:
            uac = answered(node, customer, tmp_path, shared, hold_ms=200)
            assert uac.wait() == 0, uac.report()
            assert gateway.wait() == 0, gateway.report()
            seen[customer] = gateway.received("INVITE")[0]
    hidden, seen_exposed, seen_hidden = uac, seen[EXPOSED], seen[SHARE_A]
    routing = ("Via", "Record-Route", "Contact", "Route")
    assert any(EXPOSED in h for h in header(seen_exposed, "Contact"))  # that trunk's choice
    assert not [h for name in routing for h in header(seen_hidden, name) if SHARE_A in h], seen_hidden
    assert header(seen_hidden, "Record-Route") == [] and len(header(seen_hidden, "Via")) == 1
    for reply in hidden.received("SIP/2.0"):
        assert not [h for name in routing for h in header(reply, name) if VENDOR_A in h], reply


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert log, "the node wrote no log"
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
