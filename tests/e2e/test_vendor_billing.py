"""Vendor billing as decks have it, end to end: a vendor billed 60/60 with a 30 s minimum is
charged exactly per its deck in the CDR, and margin protection — judging a call of the node's
expected duration with every side's increments — drops it where it would lose money, so another
vendor carries the call."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, explain, kamailio_node, sipp, vendor

pytestmark = pytest.mark.e2e

NODE = "127.0.42.1"
MINUTE_VENDOR, SECOND_VENDOR = "127.0.42.81", "127.0.42.82"
BILLED_BY_MINUTE, BILLED_BY_SIX = "127.0.42.61", "127.0.42.62"  # two customers at 0.012/min
DIALED, CALLER = "12125551234", "13055550100"
EXPECTED_S = 20  # the node's routing.margin_expected_duration_s in this module
HOLD_MS = 2300   # the answered call lasts 3 started seconds


def customer_plan(db: psycopg.Connection, name: str, increment: int) -> uuid.UUID:
    (pid,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES (%s) RETURNING id", (name,)).fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', 0.012, %s, %s)", (pid, increment, increment))
    return pid  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> None:
    db = module_db
    provision.reset(db)
    minute = provision.vendor(db, "minute", MINUTE_VENDOR, {"1": "0.0100"})
    db.execute("UPDATE routing.rates SET initial_increment = 60, subsequent_increment = 60, min_duration_s = 30"
               " WHERE provider_id = %s", (minute,))
    second = provision.vendor(db, "second", SECOND_VENDOR, {"1": "0.0110"})  # per second, dearer per minute
    plan = provision.plan(db, "billing", [minute, second])
    db.execute("UPDATE routing.routing_plans SET strategy = 'priority' WHERE id = %s", (plan,))  # minute first
    provision.customer(db, "VB-MINUTE", f"{BILLED_BY_MINUTE}/32", plan, rate_plan=customer_plan(db, "by-minute", 60))
    provision.customer(db, "VB-SIX", f"{BILLED_BY_SIX}/32", plan, rate_plan=customer_plan(db, "by-six", 6))


@pytest.fixture(scope="module")
def env(e2e_env: dict[str, str]) -> dict[str, str]:
    return {**e2e_env, "WARP_ROUTING__MARGIN_EXPECTED_DURATION_S": str(EXPECTED_S)}


@pytest.fixture(scope="module")
def node(world: None, clean_redis: redis.Redis, env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(env, NODE, tmp_path_factory.mktemp("vendor-billing")) as n:
        yield n


def deck_cost(seconds: int, per_minute: str, first: int, following: int, minimum: int) -> Decimal:
    """The vendor's cost as its deck states it, worked out here independently of the rating code."""
    if seconds <= 0:
        return Decimal(0)
    billed = max(seconds, minimum)
    billed = first if billed <= first else first + math.ceil((billed - first) / following) * following
    return (Decimal(per_minute) * billed / 60).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)


def test_a_sixty_sixty_vendor_with_a_thirty_second_minimum_is_charged_exactly_per_its_deck(
        node: Node, tmp_path: Path, module_db: psycopg.Connection) -> None:
    # billed by the minute, the customer pays 0.012 for any call of the expected 20 s: the
    # minute vendor's 0.010 leaves a margin, so it keeps its first place
    with vendor("vendor_answer.xml", MINUTE_VENDOR, tmp_path) as minute, \
            vendor("vendor_answer.xml", SECOND_VENDOR, tmp_path) as second:
        uac = sipp("customer_call.xml", BILLED_BY_MINUTE, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, hold_ms=HOLD_MS)
        assert uac.wait() == 0, uac.report()
        assert minute.wait() == 0, minute.report()
        assert second.received("INVITE") == []
    row = cdr(module_db, call_id_of(uac))
    seconds = int(row["duration_s"])  # type: ignore[call-overload]
    assert row["sip_code"] == 200 and 1 <= seconds <= 30
    assert row["vendor_rate"] == Decimal("0.010000")
    # a call of under 30 s: the 30 s minimum, then the whole first minute — 0.010, not 0.0100 x s/60
    assert row["vendor_cost"] == deck_cost(seconds, "0.0100", 60, 60, 30) == Decimal("0.010000")
    assert row["customer_price"] == Decimal("0.012000")
    assert row["margin"] == Decimal("0.002000") == row["customer_price"] - row["vendor_cost"]  # type: ignore[operator]


def test_the_minute_vendor_is_dropped_where_it_would_lose_money_and_another_vendor_carries_the_call(
        node: Node, tmp_path: Path, env: dict[str, str], module_db: psycopg.Connection) -> None:
    # billed in 6 s blocks, the customer pays 0.0048 for the expected 20 s (24 s): the minute
    # vendor would cost 0.010 for it (a whole minute) although it is the cheaper per minute
    with vendor("vendor_answer.xml", MINUTE_VENDOR, tmp_path) as minute, \
            vendor("vendor_answer.xml", SECOND_VENDOR, tmp_path) as second:
        uac = sipp("customer_call.xml", BILLED_BY_SIX, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, hold_ms=HOLD_MS)
        assert uac.wait() == 0, uac.report()
        assert second.wait() == 0, second.report()
        assert minute.received("INVITE") == []
    row = cdr(module_db, call_id_of(uac))
    seconds = int(row["duration_s"])  # type: ignore[call-overload]
    assert row["sip_code"] == 200 and row["vendor_rate"] == Decimal("0.011000")
    assert row["vendor_cost"] == deck_cost(seconds, "0.0110", 1, 1, 0)
    assert row["customer_price"] == deck_cost(seconds, "0.012", 6, 6, 0)
    assert row["margin"] == row["customer_price"] - row["vendor_cost"] > 0  # type: ignore[operator]
    said = explain(env, "--source", BILLED_BY_SIX, "--to", DIALED)
    assert {"vendor": "minute", "kept": False, "rate": "0.010000", "prefix": "1", "billing": "60/60/30/0.000000",
            "reason": "cost above the customer's price (cost 0.010000 against a charge of 0.004800 for 20 s)"
            } in said["trace"]["candidates"]
