"""`warp ledger check` against the real companion, Redis and Postgres: 1,000 random call charges
settled the way the companion settles CDRs, top-ups through the money path in between, the
companion killed and started again in the middle; every live balance matches its ledger, and
an account whose live balance was tampered with is named."""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import redis

from routing_engine.adapters import ledger, redis_store
from routing_engine.adapters.money import LEDGER_STREAM, Wallet
from routing_engine.companion.emitter import seed_balances
from routing_engine.domain.cdr import CdrRecord
from routing_engine.domain.rating import to_micros
from routing_engine.ops import stack
from routing_engine.settings import Settings
from tests.conftest import test_environ
from tests.e2e.harness import wait_for

CALLS, ACCOUNTS = 1000, 12
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def companion_env() -> dict[str, str]:
    return {**test_environ(), "WARP_CDR__BATCH_SECONDS": "0.1", "WARP_CDR__BATCH_SIZE": "50"}


@contextlib.contextmanager
def companion(log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The real companion (`warp cdr-emitter`), stopped however the test ends."""
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "routing_engine.entrypoints.cli", "cdr-emitter"],
                                env=companion_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            stack.stop_group(proc)


def warp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "routing_engine.entrypoints.cli", *args], env=test_environ(),
                          capture_output=True, text=True, timeout=60)


def charges(db: psycopg.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM billing.balance_updates WHERE kind = 'call_charge'").fetchone()[0])


def drained(client: redis.Redis, settings: Settings) -> bool:
    return client.xlen(settings.cdr.stream) == 0 and client.xlen(LEDGER_STREAM) == 0


def test_live_balances_match_the_ledger_after_random_charges_top_ups_and_a_companion_crash(
        db: psycopg.Connection, database: str, redis_client: redis.Redis, settings: Settings,
        tmp_path: Path) -> None:
    rng = random.Random(18)
    accounts = []
    expected: dict[uuid.UUID, int] = {}
    for n in range(ACCOUNTS):
        (aid,) = db.execute("INSERT INTO accounts.accounts (ban, name, billing_type) VALUES (%s, %s, %s)"
                            " RETURNING id", (f"LC{n}", f"Check {n}", "prepaid" if n % 2 else "postpaid")).fetchone()
        accounts.append(aid)
        expected[aid] = 0
        if n % 3 == 0:  # an opening balance written straight into the ledger (as demo data is)
            db.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference)"
                       " VALUES (%s, 20, 'topup', %s)", (aid, f"opening-{n}"))
            expected[aid] += 20_000_000
    cdrs = redis_store.CdrStream(redis_client, settings.cdr.stream, settings.cdr.group, 100_000)
    wallet = Wallet(redis_client)
    seed_balances(database, wallet)  # as the companion does on its first idle moment
    log = tmp_path / "companion.log"
    with contextlib.ExitStack() as running:
        proc = running.enter_context(companion(log))
        for i in range(CALLS):
            account = rng.choice(accounts)
            call = uuid.uuid4()
            price = Decimal(rng.randint(1, 500_000)) / Decimal(1_000_000)
            wallet.reserve(call, account, T0.timestamp() + i, 3600, 1, 1_000_000, 100_000_000)
            cdrs.append(CdrRecord(cdr_id=call, call_id=f"lc-{i}", node="test-node", sip_code=200, account_id=account,
                                  invite_at=T0 + timedelta(seconds=i), duration_s=rng.randint(1, 300),
                                  customer_price=price, settle=True))
            expected[account] -= to_micros(price)
            if i % 40 == 7:  # a top-up through the money path (as the API and `warp funds topup` post it)
                amount = rng.randint(1, 5_000_000)
                ledger.post(db, wallet, account, amount, "topup", f"lc-topup-{i}", datetime.now(UTC))
                expected[account] += amount
            if i == CALLS // 2:  # the companion dies mid-stream, with batches read and not acknowledged
                wait_for(lambda: charges(db) > 0, 30, f"the companion at work:\n{log.read_text()[-3000:]}")
                proc.kill()
                proc.wait(timeout=10)
                mid = ledger.check(database, redis_client)  # what is in flight counts: no difference
                assert mid.ok, [ledger.describe(d) for d in mid.differences]
                proc = running.enter_context(companion(log))
        assert log.exists()
        try:
            wait_for(lambda: drained(redis_client, settings), 60, "both streams written")
        except AssertionError as exc:  # the companion's log as it is now, not as it was at the start
            raise AssertionError(f"{exc}: {redis_client.xlen(settings.cdr.stream)} CDRs and "
                                 f"{redis_client.xlen(LEDGER_STREAM)} ledger entries left;\n"
                                 f"{log.read_text()[-3000:]}") from None
    report = ledger.check(database, redis_client)
    assert report.ok, [ledger.describe(d) for d in report.differences]
    assert (report.accounts, report.in_flight) == (ACCOUNTS, 0)
    stored = dict(db.execute("SELECT account_id, balance FROM billing.account_balances").fetchall())
    assert {a: to_micros(stored[a]) for a in accounts} == expected  # every charge once, every top-up once
    assert {a: wallet.balance(a) for a in accounts} == expected
    assert db.execute("SELECT count(*) FROM billing.balance_updates WHERE kind = 'call_charge'").fetchone() == (CALLS,)
    said = warp("ledger", "check")
    assert said.returncode == 0, said.stdout + said.stderr
    assert f"{ACCOUNTS} live balances checked" in said.stdout and "all match" in said.stdout

    tampered = accounts[5]
    redis_client.incrby(f"warp:bal:{tampered}", 1234)
    report = ledger.check(database, redis_client)
    assert [(d.account_id, d.ban, d.micros) for d in report.differences] == [(tampered, "LC5", 1234)]
    said = warp("ledger", "check")
    assert said.returncode == 1, said.stdout + said.stderr
    assert "DIFFERS  LC5" in said.stdout and "differs by 0.001234" in said.stdout and "1 differ" in said.stdout


def test_a_top_up_still_in_the_stream_is_no_difference_and_a_lost_one_is(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('LF1', 'F') RETURNING id").fetchone()
    wallet = Wallet(redis_client)
    ledger.post(db, wallet, account, 2_500_000, "topup", "in-flight-1", datetime.now(UTC))
    report = ledger.check(database, redis_client)  # no companion: the entry waits in the stream
    assert report.ok and report.in_flight == 1
    redis_client.delete(LEDGER_STREAM)  # lost on its way (e.g. trimmed before it was written)
    (d,) = ledger.check(database, redis_client).differences
    assert (d.live_micros, d.ledger_micros, d.in_flight_micros, d.micros) == (2_500_000, 0, 0, 2_500_000)
    redis_client.xadd(f"{LEDGER_STREAM}:dead", {"kind": "topup", "_error": "refused by ledger: ..."})
    assert ledger.check(database, redis_client).dead_letters == 1
    said = warp("ledger", "check")
    assert said.returncode == 1 and "1 ledger entries dead-lettered" in said.stdout, said.stdout + said.stderr


def test_an_account_without_a_live_balance_is_charged_from_its_ledger_not_from_zero(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    """Settled before its balance was seeded: it starts from the ledger (10.00), not from 0."""
    from routing_engine.companion.emitter import PostgresSink

    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('LS1', 'S') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference)"
               " VALUES (%s, 10, 'topup', 'opening')", (account,))
    record = CdrRecord(cdr_id=uuid.uuid4(), call_id="ls-1", node="n", sip_code=200, account_id=account,
                       invite_at=T0, customer_price=Decimal("0.400000"), settle=True)
    PostgresSink(database, 5, wallet=Wallet(redis_client)).write([record])
    assert Wallet(redis_client).balance(account) == 9_600_000
    assert ledger.check(database, redis_client).ok


def test_warp_funds_topup_takes_the_money_path_and_starts_from_the_ledger(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name, billing_type) VALUES ('LT1', 'T', 'prepaid')"
                            " RETURNING id").fetchone()
    db.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference)"
               " VALUES (%s, 4, 'topup', 'opening')", (account,))
    said = warp("funds", "topup", "LT1", "1.5")
    assert said.returncode == 0 and "live balance 5.500000" in said.stdout, said.stdout + said.stderr
    (entry,) = ledger.in_flight(redis_client)
    assert (entry["account_id"], entry["amount_micros"], entry["kind"]) == (account, 1_500_000, "topup")
    assert ledger.check(database, redis_client).ok
