"""Funds as renewable slices, end to end: a call reserves one slice of its price, the node's
renewal task adds the next ones while the account pays, and a call the account cannot pay for
any more is cut by its dialog when its paid time is up. Calls whose 200 is never ACKed free
their place and their funds within seconds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.money import Limits, Wallet
from routing_engine.domain.rating import from_micros, to_micros
from tests.e2e import provision
from tests.e2e.harness import Node, kamailio_node, sipp, vendor, wait_for

pytestmark = pytest.mark.e2e

NODE = "127.0.46.1"
VENDOR = "127.0.46.81"
HUNDRED, NINETY, NOACK = "127.0.46.61", "127.0.46.62", "127.0.46.63"
DIALED, CALLER = "12125551234", "13055550100"
SLICE_S, TICK_S, NOACK_S = 20, 2, 3
BYE_RACE = "terminating non-confirmed dialogs not supported"


def rate_plan(db: psycopg.Connection, name: str, rate: str, inc: int) -> uuid.UUID:
    (pid,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', %s, %s, %s)", (pid, rate, inc, inc))
    return pid  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    db = module_db
    provision.reset(db)
    plan = provision.plan(db, "slices", [provision.vendor(db, "steady", VENDOR, {"1": "0.0010"})])
    prepaid = {"billing_type": "prepaid", "credit_limit": "0"}
    return {
        # per minute, 60/60: a slice of 20 s costs a whole minute, 0.01
        "hundred": provision.customer(db, "S-HUNDRED", f"{HUNDRED}/32", plan,
                                      rate_plan=rate_plan(db, "per-minute", "0.01", 60), **prepaid),
        # per second at 0.60/min: 0.01 a second
        "ninety": provision.customer(db, "S-NINETY", f"{NINETY}/32", plan,
                                     rate_plan=rate_plan(db, "per-second", "0.60", 1), **prepaid),
        "noack": provision.customer(db, "S-NOACK", f"{NOACK}/32", plan),
    }


@pytest.fixture(scope="module")
def node(world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, NODE, tmp_path_factory.mktemp("slices"), extra_env={
            "WARP_MONEY__SLICE_S": str(SLICE_S), "WARP_MONEY__TICK_S": str(TICK_S),
            "WARP_SIP__NOACK_TIMEOUT_S": str(NOACK_S)}) as n:
        yield n


def topup(wallet: Wallet, account: uuid.UUID, amount: str) -> None:
    wallet.topup(account, to_micros(Decimal(amount)), f"e2e-{uuid.uuid4()}", "2026-12-01T00:00:00+00:00",
                 seed_micros=0)


def cdrs(db: psycopg.Connection, account: uuid.UUID) -> list[tuple]:
    return db.execute("SELECT sip_code, duration_s, billable_s, customer_price, hangup_side FROM cdr.cdrs"
                      " WHERE account_id = %s ORDER BY billable_s", (account,)).fetchall()


def charged(db: psycopg.Connection, account: uuid.UUID) -> Decimal:
    return db.execute("SELECT coalesce(sum(amount), 0) FROM billing.balance_updates"  # type: ignore[index, no-any-return]
                      " WHERE account_id = %s AND kind = 'call_charge'", (account,)).fetchone()[0]


def settled(wallet: Wallet, account: uuid.UUID) -> bool:
    return wallet.reserved(account) == 0 and wallet.held(account) == 0


def test_a_hundred_simultaneous_calls_on_a_prepaid_account_funded_for_them_are_all_admitted(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    account, trunk = world["hundred"]
    wallet, limits = Wallet(clean_redis), Limits(clean_redis)
    topup(wallet, account, "2.00")  # two minutes each at 0.01/min; the longest call allowed (4 h) costs 2.40
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=100) as gateway:
        load = sipp("customer_call.xml", HUNDRED, tmp_path, remote=node.target, service=DIALED,
                    keys={"caller": CALLER}, calls=100, hold_ms=8000, extra=["-r", "25", "-l", "100"])
        wait_for(lambda: limits.active(trunk, account, time.time())[1] == 100, 20, "100 calls up at once")
        assert wallet.held(account) == to_micros(Decimal("1.00"))  # one slice (a minute, 0.01) each
        assert load.wait(timeout_s=60) == 0, load.report()
        assert gateway.wait(timeout_s=30) == 0, gateway.report()
    wait_for(lambda: len(cdrs(module_db, account)) == 100, 30, "100 CDRs")
    rows = cdrs(module_db, account)
    assert {(r[0], r[2], r[3]) for r in rows} == {(200, 60, Decimal("0.010000"))}
    wait_for(lambda: settled(wallet, account), 15, "the reservations to be settled")
    assert from_micros(wallet.balance(account) or 0) == Decimal("1.00")
    wait_for(lambda: charged(module_db, account) == Decimal("-1.00"), 15, "the ledger to match the CDRs")


def test_three_calls_on_an_account_funded_for_ninety_seconds_are_cut_as_the_money_runs_out(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    account, _ = world["ninety"]
    wallet = Wallet(clean_redis)
    topup(wallet, account, "0.90")  # 90 s at 0.60/min, billed per second
    races_before = node.log_text().count(BYE_RACE)
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=3, extra=["-timeout", "90s"]) as gateway:
        calls = [sipp("customer_call_cut.xml", NINETY, tmp_path, local_port=5060 + i, remote=node.target,
                      service=DIALED, keys={"caller": CALLER}, extra=["-timeout", "90s"]) for i in range(3)]
        for c in calls:  # every BYE came from the network: the node cut all three
            assert c.wait(timeout_s=90) == 0, c.report()
        # ... and the vendor's too, unless Kamailio 5.6's own race between its two BYEs struck
        # (the caller's reply to the first ends the dialog before the second is sent; fixed
        # upstream in 2025): then its log says so, once per BYE not sent
        wait_for(lambda: len(gateway.received("BYE")) + node.log_text().count(BYE_RACE) - races_before == 3,
                 10, "a BYE to the vendor for each call")
    wait_for(lambda: len(cdrs(module_db, account)) == 3, 30, "3 CDRs")
    rows = cdrs(module_db, account)
    # first slices of 20 s each (60 s), then the 30 s left: 20 s to one call, 10 s to another, none
    # to the third, to the second
    assert [(r[0], r[2], r[4]) for r in rows] == [(200, 20, "proxy"), (200, 30, "proxy"), (200, 40, "proxy")]
    for _, duration, billable, _, _ in rows:
        assert billable <= duration <= billable + TICK_S  # cut within one tick of its paid end
    assert sum(r[3] for r in rows) == Decimal("0.90")
    wait_for(lambda: settled(wallet, account), 15, "the reservations to be settled")
    assert wallet.balance(account) == 0
    wait_for(lambda: charged(module_db, account) == Decimal("-0.90"), 15, "the ledger to match the CDRs")


def test_answered_calls_never_acked_free_their_places_and_funds_within_seconds(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    account, trunk = world["noack"]
    wallet, limits = Wallet(clean_redis), Limits(clean_redis)
    with vendor("vendor_answer_maybe_ack.xml", VENDOR, tmp_path, calls=60) as gateway:
        # an overload step: 60 calls in two seconds whose caller gives up on them once answered
        load = sipp("customer_no_ack.xml", NOACK, tmp_path, remote=node.target, service=DIALED,
                    keys={"caller": CALLER}, calls=60, extra=["-r", "30", "-l", "60"])
        assert load.wait(timeout_s=30) == 0, load.report()
        held_at = time.time()
        assert limits.active(trunk, account, held_at)[0] > 0 and wallet.held(account) > 0
        wait_for(lambda: limits.active(trunk, account, time.time()) == (0, 0), NOACK_S + 3 * TICK_S + 10,
                 "every place to be free")
        wait_for(lambda: settled(wallet, account), 10, "every reservation to be released")
        assert gateway.wait(timeout_s=30) == 0, gateway.report()  # the node sent each call's BYE
    assert time.time() - held_at < 30  # not the dialog module's own minute and a half
    wait_for(lambda: len(cdrs(module_db, account)) == 60, 30, "60 CDRs")
    assert {(r[0], r[4]) for r in cdrs(module_db, account)} == {(200, "proxy")}
    log = node.log_text()
    assert log and "its 200 was not ACKed" in log


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert log, "the node's log exists"
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
