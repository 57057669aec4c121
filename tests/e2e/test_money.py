"""Rating, funds and limits end to end, on two Kamailio nodes sharing one Redis and Postgres."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters import ledger
from routing_engine.adapters.money import Limits, Wallet
from routing_engine.domain.rating import from_micros, to_micros
from tests.e2e import provision
from tests.e2e.harness import (
    Node,
    RawUA,
    call_id_of,
    cdr,
    explain,
    header,
    kamailio_node,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

pytestmark = pytest.mark.e2e

NODE_A, NODE_B = "127.0.0.9", "127.0.0.10"
VENDOR, DEAR_VENDOR = "127.0.0.81", "127.0.0.82"
NORATE, MARGIN, PREPAID, CONC, CPS, LOAD1, LOAD2, TWO = (f"127.0.0.{n}" for n in range(61, 69))
DIALED, CALLER = "12125551234", "13055550100"


def rate_plan(db: psycopg.Connection, name: str, prefix: str, rate: str, inc: int = 60) -> uuid.UUID:
    (pid,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, %s, %s, %s, %s)", (pid, prefix, rate, inc, inc))
    return pid  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    db = module_db
    provision.reset(db)
    v = provision.vendor(db, "steady", VENDOR, {"1": "0.0050"})
    dear = provision.vendor(db, "dear", DEAR_VENDOR, {"1": "0.0200"})
    plan = provision.plan(db, "money", [v])
    margin_plan = provision.plan(db, "margin", [dear, v])
    db.execute("UPDATE routing.routing_plans SET strategy = 'priority' WHERE id = %s", (margin_plan,))
    ids = {
        "norate": provision.customer(db, "M-NORATE", f"{NORATE}/32", plan,
                                     rate_plan=rate_plan(db, "uk-only", "44", "0.05")),
        "margin": provision.customer(db, "M-MARGIN", f"{MARGIN}/32", margin_plan,
                                     rate_plan=rate_plan(db, "cheap", "1", "0.010")),
        "prepaid": provision.customer(db, "M-PREPAID", f"{PREPAID}/32", plan, billing_type="prepaid",
                                      credit_limit="0", rate_plan=rate_plan(db, "per-second", "1", "0.60", 1)),
        "conc": provision.customer(db, "M-CONC", f"{CONC}/32", plan),
        "cps": provision.customer(db, "M-CPS", f"{CPS}/32", plan),
        "two": provision.customer(db, "M-TWO", f"{TWO}/32", plan),
    }
    load_plan = rate_plan(db, "load", "1", "0.05", 6)
    ids["load1"] = provision.customer(db, "M-LOAD1", f"{LOAD1}/32", plan, rate_plan=load_plan)
    ids["load2"] = provision.customer(db, "M-LOAD2", f"{LOAD2}/32", plan, rate_plan=load_plan)
    db.execute("UPDATE trunks.trunks SET max_concurrent = 2 WHERE id IN (%s, %s)", (ids["conc"][1], ids["two"][1]))
    db.execute("UPDATE trunks.trunks SET cps_limit = 2 WHERE id = %s", (ids["cps"][1],))
    return ids


@pytest.fixture(scope="module")
def nodes(world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis, e2e_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    with kamailio_node(e2e_env, NODE_A, tmp_path_factory.mktemp("money-a")) as a, \
            kamailio_node(e2e_env, NODE_B, tmp_path_factory.mktemp("money-b"),
                          extra_env={"WARP_NODE__NAME": "test-node-b"}) as b:
        yield a, b


@pytest.fixture(scope="module")
def node(nodes: tuple[Node, Node]) -> Node:
    return nodes[0]




def test_no_customer_price_no_call(node: Node, tmp_path: Path, module_db: psycopg.Connection) -> None:
    uac = sipp(scenario_expecting(403, tmp_path), NORATE, tmp_path, remote=node.target, service=DIALED,
               keys={"caller": CALLER})
    assert uac.wait() == 0, uac.report()
    assert "403 No customer rate" in uac.trace() and "Q.850;cause=57" in uac.trace()
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 403


def test_vendor_that_would_lose_money_is_skipped(node: Node, tmp_path: Path, e2e_env: dict[str, str],
                                                 module_db: psycopg.Connection) -> None:
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as steady, \
            vendor("vendor_answer.xml", DEAR_VENDOR, tmp_path) as dear:
        uac = sipp("customer_call.xml", MARGIN, tmp_path, remote=node.target, service=DIALED, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert steady.wait() == 0 and dear.received("INVITE") == []
    row = cdr(module_db, call_id_of(uac))
    assert (row["customer_rate"], row["vendor_rate"]) == (Decimal("0.010000"), Decimal("0.005000"))
    said = explain(e2e_env, "--source", MARGIN, "--to", DIALED)
    assert {"vendor": "dear", "kept": False, "rate": "0.020000", "prefix": "1",
            "reason": "cost above the customer's price (cost 0.020000 against a charge of 0.010000 for 60 s)"
            } in said["trace"]["candidates"]


def test_prepaid_call_is_cut_when_the_funds_run_out(node: Node, tmp_path: Path, module_db: psycopg.Connection,
                                                    world: dict[str, tuple[uuid.UUID, uuid.UUID]],
                                                    clean_redis: redis.Redis) -> None:
    account = world["prepaid"][0]
    wallet = Wallet(clean_redis)
    # 6 s at 0.60/min
    wallet.topup(account, to_micros(Decimal("0.06")), "e2e-topup", "2026-11-22T00:00:00+00:00", seed_micros=0)
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as steady:
        uac = sipp("customer_call_cut.xml", PREPAID, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait(timeout_s=30) == 0, uac.report()  # the BYE came from the network
        assert steady.wait() == 0, steady.report()        # so did the vendor's
    row = cdr(module_db, call_id_of(uac))
    assert (row["sip_code"], row["billable_s"], row["customer_price"]) == (200, 6, Decimal("0.060000"))
    assert 6 <= row["duration_s"] <= 7  # type: ignore[operator]
    wait_for(lambda: wallet.balance(account) == 0 and wallet.reserved(account) == 0, 10, "the charge")
    ledger = lambda: module_db.execute(  # noqa: E731
        "SELECT balance FROM billing.account_balances WHERE account_id = %s", (account,)).fetchone()[0]
    wait_for(lambda: ledger() == Decimal("0"), 10, "the ledger to record top-up and charge")


def test_prepaid_account_without_funds_gets_402(node: Node, tmp_path: Path, clean_redis: redis.Redis,
                                                 world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    wait_for(lambda: Wallet(clean_redis).balance(world["prepaid"][0]) == 0, 15, "the previous call's charge")
    uac = sipp(scenario_expecting(402, tmp_path), PREPAID, tmp_path, remote=node.target, service=DIALED,
               keys={"caller": CALLER})
    assert uac.wait() == 0, uac.report()
    assert "402 Insufficient funds" in uac.trace()


def held_calls(node_targets: list[str], source: str, tmp_path: Path, hold_ms: int = 4000) -> list:
    return [sipp("customer_call.xml", source, tmp_path, local_port=5060 + i, remote=target, service=DIALED,
                 keys={"caller": CALLER}, hold_ms=hold_ms) for i, target in enumerate(node_targets)]


def limit_scenario(nodes_for_calls: list[Node], third: Node, source: str, ids: tuple[uuid.UUID, uuid.UUID],
                   tmp_path: Path, clean_redis: redis.Redis) -> None:
    account, trunk = ids
    limits = Limits(clean_redis)
    now = time.time
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=2) as steady:
        calls = held_calls([n.target for n in nodes_for_calls], source, tmp_path)
        wait_for(lambda: limits.active(trunk, account, now())[0] == 2, 10, "two calls in progress")
        refused = sipp(scenario_expecting(503, tmp_path), source, tmp_path, local_port=5070, remote=third.target,
                       service=DIALED, keys={"caller": CALLER})
        assert refused.wait() == 0, refused.report()
        assert "503 Call limit reached" in refused.trace() and "Retry-After: 5" in refused.trace()
        for c in calls:
            assert c.wait() == 0, c.report()
        assert steady.wait() == 0
    wait_for(lambda: limits.active(trunk, account, now()) == (0, 0), 5, "the counters to return to zero")


def test_third_concurrent_call_is_refused(node: Node, tmp_path: Path, clean_redis: redis.Redis,
                                          world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    limit_scenario([node, node], node, CONC, world["conc"], tmp_path, clean_redis)


def test_two_nodes_enforce_one_shared_limit(nodes: tuple[Node, Node], tmp_path: Path, clean_redis: redis.Redis,
                                            world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    a, b = nodes
    limit_scenario([a, b], a, TWO, world["two"], tmp_path, clean_redis)


def test_cps_limit_turns_the_excess_away_with_retry_after(node: Node, tmp_path: Path) -> None:
    customer = RawUA(CPS, 5090)
    try:
        with vendor("vendor_reject.xml", VENDOR, tmp_path, calls=2,
                    keys={"reject_code": "486", "reject_reason": "Busy Here"}) as busy:
            invites = []
            for n in range(5):
                call_id = f"cps-{n}-{uuid.uuid4()}"
                invite = (f"INVITE sip:{DIALED}@{NODE_A} SIP/2.0\n"
                          f"Via: SIP/2.0/UDP {CPS}:5090;branch=z9hG4bK{call_id}\n"
                          f"From: <sip:{CALLER}@{CPS}>;tag=t{n}\nTo: <sip:{DIALED}@{NODE_A}>\nCall-ID: {call_id}\n"
                          f"CSeq: 1 INVITE\nContact: <sip:{CALLER}@{CPS}:5090>\nMax-Forwards: 70\n"
                          "Content-Length: 0\n\n")
                invites.append(invite)
                customer.send(invite, (NODE_A, 5060))
            finals: list[str] = []
            while len(finals) < 5:
                reply, _ = customer.recv_until(lambda m: m.startswith("SIP/2.0") and not m.startswith("SIP/2.0 1"))
                finals.append(reply)
                if reply.startswith("SIP/2.0 486"):  # ACK the vendor's refusal, hop by hop
                    cid = header(reply, "Call-ID")[0]
                    inv = next(i for i in invites if f"Call-ID: {cid}" in i)
                    customer.send(inv.replace("INVITE sip", "ACK sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
                                  .replace(f"To: <sip:{DIALED}@{NODE_A}>", f"To: {header(reply, 'To')[0]}"),
                                  (NODE_A, 5060))
            assert busy.wait() == 0, busy.report()
        codes = sorted(f.split()[1] for f in finals)
        assert codes == ["486", "486", "503", "503", "503"]
        assert all("Retry-After: 1" in f for f in finals if "503 CPS limit exceeded" in f)
    finally:
        customer.close()


def test_after_a_thousand_mixed_calls_counters_are_zero_and_money_adds_up(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis, database: str,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    with vendor("vendor_random.xml", VENDOR, tmp_path, calls=1000) as gateway:
        loads = [sipp("customer_any_outcome.xml", source, tmp_path, remote=node.target, service=DIALED,
                      keys={"caller": CALLER}, calls=500, hold_ms=100, extra=["-r", "30", "-l", "60"])
                 for source in (LOAD1, LOAD2)]
        for load in loads:
            assert load.wait(timeout_s=90) == 0, load.report()
        assert gateway.wait(timeout_s=30) == 0, gateway.report()
    limits, wallet = Limits(clean_redis), Wallet(clean_redis)
    for key in ("load1", "load2"):
        account, trunk = world[key]
        check_account(module_db, limits, wallet, key, account, trunk)
    report = ledger.check(database, clean_redis)  # warp ledger check: every live balance = its ledger
    assert report.accounts >= 2 and report.ok, [ledger.describe(d) for d in report.differences]


def check_account(db: psycopg.Connection, limits: Limits, wallet: Wallet, key: str, account: uuid.UUID,
                  trunk: uuid.UUID) -> None:
    def scalar(sql: str) -> object:
        return db.execute(sql, (account,)).fetchone()[0]  # type: ignore[index]

    wait_for(lambda: scalar("SELECT count(*) FROM cdr.cdrs WHERE account_id = %s") == 500, 30, f"500 CDRs of {key}")
    assert limits.active(trunk, account, time.time()) == (0, 0)
    wait_for(lambda: wallet.reserved(account) == wallet.held(account) == 0, 15, f"{key}'s reservations to be settled")
    cdr_total = scalar("SELECT coalesce(sum(customer_price), 0) FROM cdr.cdrs WHERE account_id = %s")
    answered = scalar("SELECT count(*) FROM cdr.cdrs WHERE account_id = %s AND sip_code = 200")
    assert 250 < answered < 450 and cdr_total > 0  # type: ignore[operator]  # the vendor answers about 70%
    assert from_micros(wallet.balance(account) or 0) == -cdr_total  # type: ignore[operator]
    wait_for(lambda: scalar("SELECT coalesce(sum(amount), 0) FROM billing.balance_updates"
                            " WHERE account_id = %s AND kind = 'call_charge'") == -cdr_total,  # type: ignore[operator]
             15, f"{key}'s ledger to match its CDRs")


def test_no_python_exception_escaped(nodes: tuple[Node, Node]) -> None:
    for n in nodes:
        log = n.log_text()
        assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
