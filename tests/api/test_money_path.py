"""Top-ups, adjustments and refunds through the API take the one money path: the live balance
call admission reads (Redis) moves with the ledger, once per reference, and nothing is half
done when Redis is down. Real Postgres and Redis; the companion's ledger writer is the real one."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import psycopg
import pytest
import redis

from routing_engine.adapters import ledger
from routing_engine.adapters.money import LEDGER_STREAM, Wallet, ledger_entry
from routing_engine.companion.emitter import LedgerSink
from routing_engine.entrypoints.api.services import Services
from routing_engine.settings import Settings
from tests.api.conftest import Api, Carrier


def companion_writes_the_ledger(client: redis.Redis, database: str) -> int:
    """What the companion does with the ledger stream: write it, then delete what it wrote."""
    entries = client.xrange(LEDGER_STREAM)
    added = LedgerSink(database, 5).write([ledger_entry(d) for _, d in entries])
    if entries:
        client.xdel(LEDGER_STREAM, *[i for i, _ in entries])
    return added


def live(client: redis.Redis, account: Any) -> int | None:
    return Wallet(client).balance(UUID(str(account)))


def test_a_top_up_moves_the_live_balance_admission_reads(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    """The bug: the live balance existed (0), the API wrote only Postgres, admission never saw it."""
    account = carrier.a["id"]
    redis_client.set(f"warp:bal:{account}", 0)  # loaded, as the companion seeds every account
    topped = admin.post(f"/accounts/{account}/topups", json={"amount": "12.50", "reference": "pay-1"})["data"]
    assert live(redis_client, account) == 12_500_000
    assert topped["balance"]["live"] == "12.500000" and topped["balance"]["balance"] == "12.500000"
    # the stream entry names the API's own row: the companion's copy of it adds nothing
    assert companion_writes_the_ledger(redis_client, database) == 0
    assert api_db.execute("SELECT id::text, amount::text FROM billing.balance_updates").fetchall() == [
        (topped["id"], "12.500000")]
    report = ledger.check(database, redis_client)
    assert report.ok and report.accounts == 1, report


def test_a_first_top_up_starts_from_the_ledger_not_from_zero(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    account = carrier.a["id"]
    api_db.execute("INSERT INTO billing.balance_updates (account_id, amount, kind, reference)"
                   " VALUES (%s, 7.25, 'topup', 'opening')", (account,))
    assert live(redis_client, account) is None  # not loaded yet
    admin.post(f"/accounts/{account}/topups", json={"amount": "1", "reference": "pay-2"})
    assert live(redis_client, account) == 8_250_000
    assert ledger.check(database, redis_client).ok


def test_a_retried_reference_credits_once(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    account = carrier.a["id"]
    admin.post(f"/accounts/{account}/topups", json={"amount": "5", "reference": "pay-3"})
    admin.post(f"/accounts/{account}/topups", expect=409, json={"amount": "5", "reference": "pay-3"})
    companion_writes_the_ledger(redis_client, database)
    admin.post(f"/accounts/{account}/topups", expect=409, json={"amount": "5", "reference": "pay-3"})
    assert live(redis_client, account) == 5_000_000
    assert api_db.execute("SELECT count(*) FROM billing.balance_updates").fetchone() == (1,)
    assert ledger.check(database, redis_client).ok


def test_a_reference_that_reached_redis_but_not_postgres_is_refused_again(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    """The first attempt's answer was lost after Redis took it (its Postgres transaction rolled
    back): the retry finds the reference in Redis, and the money is there once."""
    account = UUID(carrier.a["id"])
    ledger.post(api_db, Wallet(redis_client), account, 3_000_000, "topup", "pay-4", datetime.now(UTC))
    admin.post(f"/accounts/{account}/topups", expect=409, json={"amount": "3", "reference": "pay-4"})
    companion_writes_the_ledger(redis_client, database)
    assert live(redis_client, account) == 3_000_000
    assert api_db.execute("SELECT amount::text FROM billing.balance_updates").fetchall() == [("3.000000",)]


def test_adjustments_and_refunds_take_the_same_path(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    account = carrier.a["id"]
    admin.post(f"/accounts/{account}/topups", json={"amount": "10", "reference": "pay-5"})
    admin.post(f"/accounts/{account}/adjustments", json={"amount": "-2.5", "reference": "ticket-1"})
    refund = admin.post(f"/accounts/{account}/adjustments",
                        json={"amount": "0.75", "kind": "refund", "reference": "ticket-2"})["data"]
    assert (refund["kind"], refund["balance"]["live"]) == ("refund", "8.250000")
    admin.post(f"/accounts/{account}/adjustments", expect=409, json={"amount": "-2.5", "reference": "ticket-1"})
    admin.post(f"/accounts/{account}/adjustments", expect=422,
               json={"amount": "-1", "kind": "refund", "reference": "ticket-3"})
    admin.post(f"/accounts/{account}/adjustments", expect=422, json={"amount": "0", "reference": "ticket-4"})
    assert live(redis_client, account) == 8_250_000
    companion_writes_the_ledger(redis_client, database)
    rows = api_db.execute("SELECT kind, amount::text FROM billing.balance_updates ORDER BY amount").fetchall()
    assert rows == [("adjustment", "-2.500000"), ("refund", "0.750000"), ("topup", "10.000000")]
    balance = admin.get(f"/accounts/{account}/balance")["data"]
    assert (balance["balance"], balance["live"]) == ("8.250000", "8.250000")
    assert ledger.check(database, redis_client).ok


def test_redis_down_means_503_and_nothing_done(
        admin: Api, carrier: Carrier, api_db: psycopg.Connection, monkeypatch: pytest.MonkeyPatch,
        api_settings: Settings) -> None:
    """A real client on a port where no Redis listens: the ledger row and audit record roll back."""
    dead = redis.Redis(host="127.0.0.1", port=9, socket_connect_timeout=0.5, socket_timeout=0.5,
                       decode_responses=True)
    monkeypatch.setattr(Services, "redis", lambda self: dead)
    account = carrier.a["id"]
    audits = api_db.execute("SELECT count(*) FROM audit.audit_log").fetchone()
    got = admin.post(f"/accounts/{account}/topups", expect=503, json={"amount": "5", "reference": "pay-6"})
    assert "nothing was done" in got["error"]["message"] and "same reference" in got["error"]["message"]
    assert api_db.execute("SELECT count(*) FROM billing.balance_updates").fetchone() == (0,)
    assert api_db.execute("SELECT count(*) FROM audit.audit_log").fetchone() == audits
    balance = admin.get(f"/accounts/{account}/balance")["data"]
    assert (balance["balance"], balance["live"]) == ("0", None)


def test_the_balance_reports_the_live_balance_beside_the_ledger(
        admin: Api, carrier: Carrier, redis_client: redis.Redis) -> None:
    account = carrier.a["id"]
    assert admin.get(f"/accounts/{account}/balance")["data"]["live"] is None
    redis_client.set(f"warp:bal:{account}", 1_500_000)
    got = admin.get(f"/accounts/{account}/balance")["data"]
    assert (got["balance"], got["live"]) == ("0", "1.500000")
    assert Decimal(got["live"]) - Decimal(got["balance"]) == Decimal("1.5")


def test_rerating_through_the_api_posts_the_difference_once(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, api_db: psycopg.Connection, database: str) -> None:
    """Two calls charged at 1.00/min (60/60) to a destination corrected to 0.40/min."""
    from datetime import timedelta

    from routing_engine.companion.emitter import PostgresSink
    from routing_engine.domain.cdr import CdrRecord

    account, trunk = UUID(carrier.a["id"]), UUID(carrier.trunk_a["id"])
    at = datetime(2026, 11, 30, 9, tzinfo=UTC)
    records = [CdrRecord(cdr_id=uuid4(), call_id=f"api-rr-{d}", node="n", sip_code=200, account_id=account,
                         trunk_id=trunk, invite_at=at + timedelta(minutes=d), to_e164="+33123456789",
                         duration_s=d, customer_price=Decimal(-(-d // 60)), settle=True) for d in (30, 61)]
    PostgresSink(database, 5, wallet=Wallet(redis_client)).write(records)  # charged 1.00 and 2.00
    api_db.execute("UPDATE billing.rate_plan_rates SET rate = 0.40 WHERE rate_plan_id = %s AND prefix = '3'",
                   (carrier.rate_plan["id"],))
    period = {"from": "2026-11-30T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    dry = admin.post(f"/accounts/{account}/rerating", expect=200, json={**period, "dry_run": True})["data"]
    assert (dry["adjusted"], dry["total"]) == (2, "1.800000")  # 3.00 charged, 1.20 due
    assert live(redis_client, account) == -3_000_000
    done = admin.post(f"/accounts/{account}/rerating", expect=200, json=period)["data"]
    assert (done["calls"], done["adjusted"], done["total"], done["skipped"]) == (2, 2, "1.800000", [])
    again = admin.post(f"/accounts/{account}/rerating", expect=200, json=period)["data"]
    assert (again["adjusted"], again["unchanged"]) == (0, 2)
    assert live(redis_client, account) == -1_200_000
    companion_writes_the_ledger(redis_client, database)
    assert ledger.check(database, redis_client).ok
    admin.post(f"/accounts/{account}/rerating", expect=422, json={"from": period["to"], "to": period["from"]})
