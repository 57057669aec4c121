"""Limits and funds Lua scripts against the real Redis; the ledger and CDR sinks against Postgres."""

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
import redis

from routing_engine.adapters.money import LEDGER_STREAM, Limits, Wallet, ledger_entry
from routing_engine.companion.emitter import LedgerSink, PostgresSink, seed_balances
from routing_engine.domain.cdr import CdrRecord
from routing_engine.domain.rating import to_micros

T = 1_800_000_000.0
TRUNK, ACCOUNT = uuid.uuid4(), uuid.uuid4()
CALLS = uuid.uuid4()


def call(name: str) -> uuid.UUID:
    """A call's identity (as the node gives one to every call), named for the test's reading."""
    return uuid.uuid5(CALLS, name)


def admit(limits: Limits, call: uuid.UUID, now: float = T, **kw: int | None):
    args = {"trunk_cps": None, "account_cps": None, "trunk_max": None, "account_max": None, **kw}
    return limits.admit(call, TRUNK, ACCOUNT, now, 60, **args)  # type: ignore[arg-type]


def test_concurrency_limit_is_shared_by_every_node(redis_client: redis.Redis) -> None:
    node_a = Limits(redis_client)
    node_b = Limits(redis.Redis(**redis_client.connection_pool.connection_kwargs))  # its own connection
    assert admit(node_a, call("c1"), trunk_max=2).ok and admit(node_b, call("c2"), trunk_max=2).ok
    third = admit(node_a, call("c3"), trunk_max=2)
    assert (third.ok, third.limit, third.scope) == (False, "concurrent", "trunk")
    node_b.release(call("c1"), TRUNK, ACCOUNT)
    assert admit(node_b, call("c3"), trunk_max=2).ok
    assert node_a.active(TRUNK, ACCOUNT, T) == (2, 2)


def test_account_limit_applies_across_its_trunks(redis_client: redis.Redis) -> None:
    limits = Limits(redis_client)
    assert limits.admit(call("a1"), uuid.uuid4(), ACCOUNT, T, 60, None, None, None, 1).ok
    refused = limits.admit(call("a2"), uuid.uuid4(), ACCOUNT, T, 60, None, None, None, 1)
    assert (refused.limit, refused.scope) == ("concurrent", "account")


def test_a_forgotten_call_frees_its_place_when_it_expires(redis_client: redis.Redis) -> None:
    limits = Limits(redis_client)
    assert admit(limits, call("lost"), trunk_max=1).ok  # its node died: nobody releases it
    assert not admit(limits, call("next"), T + 30, trunk_max=1).ok
    assert admit(limits, call("next"), T + 61, trunk_max=1).ok


def test_cps_bucket_refills_over_time(redis_client: redis.Redis) -> None:
    limits = Limits(redis_client)
    results = [admit(limits, call(f"c{i}"), T, trunk_cps=3).ok for i in range(5)]
    assert results == [True, True, True, False, False]
    assert admit(limits, call("later"), T + 0.34, trunk_cps=3).ok  # one token back after 1/3 s
    refused = admit(limits, call("again"), T + 0.35, trunk_cps=3)
    assert (refused.limit, refused.scope) == ("cps", "trunk")


def test_a_refused_call_takes_nothing(redis_client: redis.Redis) -> None:
    limits = Limits(redis_client)
    assert admit(limits, call("c1"), trunk_cps=10, trunk_max=1).ok
    assert not admit(limits, call("c2"), trunk_cps=10, trunk_max=1).ok  # concurrency refuses...
    limits.release(call("c1"), TRUNK, ACCOUNT)
    # ...and took no token: 8 more fit in this second (10 - c1 - c3)
    assert sum(admit(limits, call(f"d{i}"), trunk_cps=10, trunk_max=100).ok for i in range(10)) == 9


def test_reservations_share_the_funds_and_the_balance_never_goes_below_zero(redis_client: redis.Redis) -> None:
    wallet = Wallet(redis_client)
    wallet.topup(ACCOUNT, to_micros(Decimal("1.00")), "t1", "2026-11-22T00:00:00+00:00", seed_micros=0)
    first = wallet.reserve(call("c1"), ACCOUNT, T, 3600, to_micros(Decimal("0.10")), to_micros(Decimal("0.70")), 0)
    second = wallet.reserve(call("c2"), ACCOUNT, T, 3600, to_micros(Decimal("0.10")), to_micros(Decimal("0.70")), 0)
    third = wallet.reserve(call("c3"), ACCOUNT, T, 3600, to_micros(Decimal("0.10")), to_micros(Decimal("0.70")), 0)
    assert (first.micros, second.micros, third.micros) == (700_000, 300_000, 0)
    assert wallet.settle(call("c1"), ACCOUNT, 650_000, "x") and wallet.settle(call("c2"), ACCOUNT, 300_000, "x")
    assert wallet.balance(ACCOUNT) == 50_000 and wallet.reserved(ACCOUNT) == 0


def test_a_reservation_left_by_a_dead_node_lapses_with_the_calls_real_length(redis_client: redis.Redis) -> None:
    """A call reserved for the longest call allowed (4 h) that turns out to be able to last 60 s:
    if its node dies, the funds come back after those 60 s (plus margins), not after 4 h."""
    wallet = Wallet(redis_client)
    wallet.topup(ACCOUNT, to_micros(Decimal("1.00")), "t1", "2026-11-22T00:00:00+00:00", seed_micros=0)
    first, want = to_micros(Decimal("0.10")), to_micros(Decimal("1.00"))
    assert wallet.reserve(call("lost"), ACCOUNT, T, 14_400, first, want, 0).micros == 1_000_000
    wallet.extend(call("lost"), ACCOUNT, T + 240)
    wallet.extend(call("never-reserved"), ACCOUNT, T + 240)  # nothing to move: nothing is created
    assert wallet.expiries(ACCOUNT) == {call("lost"): T + 240}
    assert wallet.reserve(call("next"), ACCOUNT, T + 239, 60, first, want, 0).micros == 0
    assert wallet.reserve(call("next"), ACCOUNT, T + 241, 60, first, want, 0).micros == 1_000_000
    assert redis_client.ttl(f"warp:resv:{ACCOUNT}") > 0


def test_a_call_is_charged_once_however_often_it_is_settled(redis_client: redis.Redis) -> None:
    wallet = Wallet(redis_client)
    wallet.topup(ACCOUNT, 1_000_000, "t1", "x", seed_micros=0)
    wallet.reserve(call("c1"), ACCOUNT, T, 60, 1, 500_000, 0)
    assert [wallet.settle(call("c1"), ACCOUNT, 400_000, "x") for _ in range(3)] == [True, False, False]
    assert wallet.balance(ACCOUNT) == 600_000
    assert redis_client.xlen(LEDGER_STREAM) == 2  # the top-up and one charge


def test_a_batch_of_settlements_gives_each_outcome_as_settle_would(
        redis_client: redis.Redis) -> None:
    wallet, unseeded = Wallet(redis_client), uuid.uuid4()
    wallet.topup(ACCOUNT, 1_000_000, "t1", "x", seed_micros=0)
    for name in ("b1", "b2"):
        wallet.reserve(call(name), ACCOUNT, T, 60, 1, 300_000, 0)
    assert wallet.settle(call("b2"), ACCOUNT, 200_000, "x")
    before = redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    outcomes = wallet.settle_many([(call("b1"), ACCOUNT, 250_000, "x"), (call("b2"), ACCOUNT, 200_000, "x"),
                                   (call("b3"), unseeded, 100_000, "x")])
    assert outcomes == [True, False, None]  # charged now, charged before, account not seeded
    assert redis_client.info("commandstats")["cmdstat_evalsha"]["calls"] - before == 3
    assert wallet.balance(ACCOUNT) == 550_000 and wallet.reserved(ACCOUNT) == 0
    assert not redis_client.exists(f"warp:bal:{unseeded}")  # nothing moved for it
    assert wallet.settle_many([]) == []


def test_postpaid_accounts_spend_their_credit_limit(redis_client: redis.Redis) -> None:
    wallet = Wallet(redis_client)
    r = wallet.reserve(call("c1"), ACCOUNT, T, 60, 1000, 5_000_000, credit_micros=2_000_000)
    assert r.micros == 2_000_000 and r.available == 2_000_000


def test_concurrent_reservations_never_overspend(redis_client: redis.Redis) -> None:
    wallet = Wallet(redis_client)
    wallet.topup(ACCOUNT, 1_000_000, "t1", "x", seed_micros=0)
    got: list[int] = []

    def grab(i: int) -> None:
        client = redis.Redis(connection_pool=redis_client.connection_pool)
        got.append(Wallet(client).reserve(call(f"c{i}"), ACCOUNT, T, 60, 10_000, 30_000, 0).micros)

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(got) == 1_000_000 and wallet.reserved(ACCOUNT) == 1_000_000
    assert (got.count(30_000), got.count(10_000), got.count(0)) == (33, 1, 26)


def test_ledger_entries_and_settlement_reach_postgres_once(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name, billing_type) VALUES ('L1', 'L', 'prepaid')"
                            " RETURNING id").fetchone()
    wallet = Wallet(redis_client)
    wallet.topup(account, 2_000_000, "topup-1", "2026-11-22T10:00:00+00:00", seed_micros=0)
    wallet.reserve(call("call-1"), account, T, 60, 1, 1_000_000, 0)
    record = CdrRecord(cdr_id=call("call-1"), call_id="call-1", node="n", sip_code=200, account_id=account,
                       invite_at=datetime(2026, 11, 22, 10, tzinfo=UTC), customer_price=Decimal("0.250000"),
                       settle=True)
    sink = PostgresSink(database, 5, wallet=wallet)
    sink.write([record])
    sink.write([record])  # redelivered after a crash
    entries = [ledger_entry(d) for _, d in redis_client.xrange(LEDGER_STREAM)]
    LedgerSink(database, 5).write(entries)
    LedgerSink(database, 5).write(entries)
    rows = db.execute("SELECT kind, amount, reference FROM billing.balance_updates ORDER BY kind").fetchall()
    assert rows == [("call_charge", Decimal("-0.250000"), str(record.cdr_id)),
                    ("topup", Decimal("2.000000"), "topup-1")]
    assert wallet.balance(account) == 1_750_000 and wallet.reserved(account) == 0
    assert db.execute("SELECT balance FROM billing.account_balances WHERE account_id = %s",
                      (account,)).fetchone() == (Decimal("1.750000"),)


def test_a_call_that_ended_while_redis_was_down_frees_its_place_when_its_cdr_is_written(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    """The SIP worker could not release the call at its end; its spooled CDR, replayed once Redis
    is back, does it (the counters do not wait for the call's 4 h expiry)."""
    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('R1', 'R') RETURNING id").fetchone()
    (trunk,) = db.execute("INSERT INTO trunks.trunks (account_id, name) VALUES (%s, 't') RETURNING id",
                          (account,)).fetchone()
    limits = Limits(redis_client)
    assert limits.admit(call("ended"), trunk, account, T, 14_400, None, None, None, None).ok
    assert limits.admit(call("going-on"), trunk, account, T, 14_400, None, None, None, None).ok
    record = CdrRecord(cdr_id=call("ended"), call_id="ended", node="n", sip_code=200, account_id=account,
                       trunk_id=trunk, invite_at=datetime(2026, 11, 22, 10, tzinfo=UTC))
    PostgresSink(database, 5, limits=limits).write([record])
    assert limits.active(trunk, account, T) == (1, 1)
    assert set(limits.expiries(trunk)) == {call("going-on")}


def test_live_balances_are_seeded_from_the_ledger_without_overwriting(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    (a1,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('S1', 'S') RETURNING id").fetchone()
    (a2,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('S2', 'S') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference) VALUES"
               " (%s, 5.5, 'topup', 'r1'), (%s, 1, 'topup', 'r2')", (a1, a2))
    wallet = Wallet(redis_client)
    redis_client.set(f"warp:bal:{a2}", 42)
    seed_balances(database, wallet)
    assert (wallet.balance(a1), wallet.balance(a2)) == (5_500_000, 42)


def test_calls_sharing_a_call_id_are_charged_each_once_under_their_own_reference(
        db: psycopg.Connection, database: str, redis_client: redis.Redis) -> None:
    """Three answered calls with one Call-ID (two customers, one of them twice): three charges,
    three ledger rows, each balance right to the micro. Keyed by Call-ID, the first one charged
    and the other two were free."""
    (a1,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('D1', 'D') RETURNING id").fetchone()
    (a2,) = db.execute("INSERT INTO accounts.accounts (ban, name) VALUES ('D2', 'D') RETURNING id").fetchone()
    wallet = Wallet(redis_client)
    at = datetime(2026, 11, 22, 10, tzinfo=UTC)
    records = [CdrRecord(cdr_id=uuid.uuid4(), call_id="same@host", node="n", sip_code=200, account_id=account,
                         invite_at=at, customer_price=Decimal(price), settle=True)
               for account, price in ((a1, "0.120000"), (a2, "0.070000"), (a1, "0.010001"))]
    for r in records:
        assert wallet.reserve(r.cdr_id, r.account_id, T, 60, 1, 1_000_000, 5_000_000).micros == 1_000_000  # type: ignore[arg-type]
    sink = PostgresSink(database, 5, wallet=wallet)
    sink.write(records)
    sink.write(records)  # redelivered: nothing charged twice
    assert (wallet.balance(a1), wallet.balance(a2)) == (-130_001, -70_000)
    assert wallet.reserved(a1) == wallet.reserved(a2) == 0
    entries = [ledger_entry(d) for _, d in redis_client.xrange(LEDGER_STREAM)]
    assert sorted(e["reference"] for e in entries) == sorted(str(r.cdr_id) for r in records)
    LedgerSink(database, 5).write(entries)
    charges = db.execute("SELECT account_id, amount, reference FROM billing.balance_updates"
                         " WHERE kind = 'call_charge'").fetchall()
    assert sorted(charges) == sorted((r.account_id, -r.customer_price, str(r.cdr_id)) for r in records)  # type: ignore[operator]
    balances = dict(db.execute("SELECT account_id, balance FROM billing.account_balances"
                               " WHERE account_id IN (%s, %s)", (a1, a2)).fetchall())
    assert balances == {a1: Decimal("-0.130001"), a2: Decimal("-0.070000")}


def test_two_calls_sharing_a_call_id_hold_two_places_and_two_reservations(redis_client: redis.Redis) -> None:
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    first, second = uuid.uuid4(), uuid.uuid4()  # one Call-ID, two calls: two identities
    assert admit(limits, first, trunk_max=1).ok
    refused = admit(limits, second, trunk_max=1)
    assert (refused.ok, refused.limit) == (False, "concurrent")
    wallet.topup(ACCOUNT, 100_000, "t1", "x", seed_micros=0)
    assert wallet.reserve(first, ACCOUNT, T, 60, 10_000, 1_000_000, 0).micros == 100_000
    assert wallet.reserve(second, ACCOUNT, T, 60, 10_000, 1_000_000, 0).micros == 0  # nothing left for it
    limits.release(second, TRUNK, ACCOUNT)  # the refused call gives back only what is its own
    assert limits.active(TRUNK, ACCOUNT, T) == (1, 1) and wallet.reserved(ACCOUNT) == 100_000


def test_a_call_id_is_no_call_identity(redis_client: redis.Redis) -> None:
    """The adapter takes our identity only: a caller's text (a Call-ID) is refused outright."""
    limits, wallet = Limits(redis_client), Wallet(redis_client)
    with pytest.raises(TypeError, match="UUID"):
        admit(limits, "a3f9@10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="UUID"):
        wallet.settle("a3f9@10.0.0.1", ACCOUNT, 1, "x")  # type: ignore[arg-type]
    assert redis_client.keys("warp:*") == []


def test_places_left_by_an_older_release_under_a_call_id_are_not_reported_as_calls(
        redis_client: redis.Redis) -> None:
    limits = Limits(redis_client)
    redis_client.zadd(f"warp:active:trunk:{TRUNK}", {"old-call-id@host": T + 60})
    assert admit(limits, call("new"), trunk_max=5).ok
    assert limits.expiries(TRUNK) == {call("new"): T + 60}
