"""Rerating against the real Redis and Postgres: calls charged at a wrong price, the price
corrected, `rerate` posts each call's difference as an adjustment through the one money path
(live balance and ledger move by exactly the difference computed here), and a rerun posts
nothing."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import redis

from routing_engine.adapters import ledger
from routing_engine.adapters.money import LEDGER_STREAM, Wallet, ledger_entry
from routing_engine.companion.emitter import LedgerSink, PostgresSink
from routing_engine.domain.cdr import CdrRecord
from routing_engine.domain.rating import to_micros
from tests.conftest import test_environ

T0 = datetime(2026, 11, 30, 12, tzinfo=UTC)
MICRO = Decimal("0.000001")
WRONG, RIGHT, LATER = Decimal("0.020000"), Decimal("0.015000"), Decimal("0.031000")
DURATIONS = [1, 5, 6, 7, 59, 61, 125, 3600]


def priced(duration_s: int, per_minute: Decimal) -> Decimal:
    """6/6 billing computed here, independently of the engine: six-second blocks, half-up to 1e-6."""
    blocks = -(-duration_s // 6)
    return (per_minute * blocks * 6 / 60).quantize(MICRO, rounding=ROUND_HALF_UP)


def drain(client: redis.Redis, database: str) -> None:
    """The companion's ledger writer: write the stream, delete what it wrote."""
    entries = client.xrange(LEDGER_STREAM)
    LedgerSink(database, 5).write([ledger_entry(d) for _, d in entries])
    if entries:
        client.xdel(LEDGER_STREAM, *[i for i, _ in entries])


def customer(db: psycopg.Connection, ban: str, rate_plan: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    (aid,) = db.execute("INSERT INTO accounts.accounts (ban, name, rate_plan_id) VALUES (%s, %s, %s) RETURNING id",
                        (ban, ban, rate_plan)).fetchone()
    (tid,) = db.execute("INSERT INTO trunks.trunks (account_id, name) VALUES (%s, 't1') RETURNING id",
                        (aid,)).fetchone()
    return aid, tid


def calls(account: uuid.UUID, trunk: uuid.UUID, start: datetime) -> list[CdrRecord]:
    return [CdrRecord(cdr_id=uuid.uuid4(), call_id=f"rr-{account}-{d}", node="n", sip_code=200, account_id=account,
                      trunk_id=trunk, invite_at=start + timedelta(minutes=i), to_e164="+12125551234",
                      jurisdiction="interstate", duration_s=d, billable_s=-(-d // 6) * 6, customer_rate=WRONG,
                      customer_price=priced(d, WRONG), settle=True)
            for i, d in enumerate(DURATIONS)]


def adjustments(db: psycopg.Connection) -> dict[str, Decimal]:
    return dict(db.execute("SELECT reference, amount FROM billing.balance_updates WHERE kind = 'adjustment'"))


def test_rerating_posts_exactly_each_calls_difference_once(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (plan,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('rr') RETURNING id").fetchone()
    (rate,) = db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
                         " subsequent_increment) VALUES (%s, '1', %s, 6, 6) RETURNING id", (plan, WRONG)).fetchone()
    account, trunk = customer(db, "RR1", plan)
    other, other_trunk = customer(db, "RR2", plan)
    wallet = Wallet(redis_client)
    wrong = calls(account, trunk, T0)
    outside = calls(account, trunk, T0 - timedelta(days=2))[:2]  # before the period: not rerated
    theirs = calls(other, other_trunk, T0)[:3]                   # another account: not with --account
    for r in wrong + outside + theirs:
        wallet.reserve(r.cdr_id, r.account_id, T0.timestamp(), 3600, 1, 10_000_000, 100_000_000)  # type: ignore[arg-type]
    PostgresSink(database, 5, wallet=wallet).write(wrong + outside + theirs)  # charged as the companion charges
    drain(redis_client, database)
    before = wallet.balance(account)
    assert before == -sum(to_micros(r.customer_price) for r in wrong + outside)  # type: ignore[arg-type]

    db.execute("UPDATE billing.rate_plan_rates SET rate = %s WHERE id = %s", (RIGHT, rate))  # the correction
    report = ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1), account)
    want = {r.cdr_id: priced(r.duration_s, WRONG) - priced(r.duration_s, RIGHT) for r in wrong}
    assert (report.calls, report.adjusted, report.skipped) == (len(wrong), sum(1 for v in want.values() if v), [])
    assert report.total == sum(want.values())
    assert wallet.balance(account) == before + to_micros(sum(want.values()))  # type: ignore[operator]
    again = ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1), account)  # still in the stream
    assert (again.adjusted, again.unchanged) == (0, len(wrong))
    drain(redis_client, database)
    assert adjustments(db) == {f"rerate:{c}:1": v for c, v in want.items() if v}
    again = ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1), account)  # and in Postgres
    assert (again.adjusted, again.total) == (0, Decimal(0))
    assert wallet.balance(account) == before + to_micros(sum(want.values()))  # type: ignore[operator]
    stored = dict(db.execute("SELECT cdr_id, customer_price FROM cdr.cdrs WHERE account_id = %s", (account,)))
    assert {c: stored[c] for c in want} == {r.cdr_id: priced(r.duration_s, RIGHT) for r in wrong}
    assert {r.cdr_id: stored[r.cdr_id] for r in outside} == {r.cdr_id: r.customer_price for r in outside}
    assert ledger.check(database, redis_client).ok

    # a second correction, through the command: each call ends up charged exactly at the latest price
    db.execute("UPDATE billing.rate_plan_rates SET rate = %s WHERE id = %s", (LATER, rate))
    run = [sys.executable, "-m", "routing_engine.entrypoints.cli", "rerate", "--from", "2026-11-30",
           "--to", "2026-12-01", "--account", "RR1"]
    said = subprocess.run(run, env=test_environ(), capture_output=True, text=True, timeout=60)
    assert said.returncode == 0 and f"posted {len(wrong)} adjustments" in said.stdout, said.stdout + said.stderr
    drain(redis_client, database)
    charged = dict(db.execute(
        "SELECT c.cdr_id, -sum(b.amount) FROM cdr.cdrs c JOIN billing.balance_updates b"
        " ON b.reference = c.cdr_id::text OR b.reference LIKE 'rerate:' || c.cdr_id || ':%%'"
        " WHERE c.account_id = %s GROUP BY c.cdr_id", (account,)))
    assert {c: charged[c] for c in want} == {r.cdr_id: priced(r.duration_s, LATER) for r in wrong}
    said = subprocess.run(run, env=test_environ(), capture_output=True, text=True, timeout=60)
    assert "posted 0 adjustments" in said.stdout, said.stdout + said.stderr
    assert wallet.balance(other) == -sum(to_micros(r.customer_price) for r in theirs)  # type: ignore[arg-type]
    assert ledger.check(database, redis_client).ok


def test_a_call_that_cannot_be_priced_now_is_skipped_and_named(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (plan,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('rr-gone') RETURNING id").fetchone()
    (rate,) = db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate) VALUES (%s, '1', %s)"
                         " RETURNING id", (plan, WRONG)).fetchone()
    account, trunk = customer(db, "RR3", plan)
    wallet = Wallet(redis_client)
    (record,) = calls(account, trunk, T0)[:1]
    PostgresSink(database, 5, wallet=wallet).write([record])
    db.execute("DELETE FROM billing.rate_plan_rates WHERE id = %s", (rate,))
    report = ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1))
    assert report.adjusted == 0 and report.skipped == [f"{record.cdr_id}: no customer rate for 12125551234 now"]
    assert wallet.balance(account) == -to_micros(record.customer_price)  # type: ignore[arg-type]


def test_a_cdr_left_at_the_old_price_by_a_crash_is_corrected_by_the_rerun_without_posting_again(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (plan,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('rr-crash') RETURNING id").fetchone()
    (rate,) = db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
                         " subsequent_increment) VALUES (%s, '1', %s, 6, 6) RETURNING id", (plan, WRONG)).fetchone()
    account, trunk = customer(db, "RR4", plan)
    (record,) = calls(account, trunk, T0)[6:7]  # 125 s
    PostgresSink(database, 5, wallet=Wallet(redis_client)).write([record])
    db.execute("UPDATE billing.rate_plan_rates SET rate = %s WHERE id = %s", (RIGHT, rate))
    assert ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1)).adjusted == 1
    # the run died between posting the adjustment and recording the new price on the CDR
    db.execute("UPDATE cdr.cdrs SET customer_price = %s WHERE cdr_id = %s", (record.customer_price, record.cdr_id))
    again = ledger.rerate(database, redis_client, T0, T0 + timedelta(days=1))
    assert (again.adjusted, again.unchanged) == (0, 1)
    assert db.execute("SELECT customer_price FROM cdr.cdrs WHERE cdr_id = %s", (record.cdr_id,)).fetchone() == (
        priced(125, RIGHT),)
    assert Wallet(redis_client).balance(account) == -to_micros(priced(125, RIGHT))
