"""An API top-up reaches call admission at once (issue 18): a prepaid account refused with 402
tops up through the admin API and its very next call is admitted, on a real Kamailio node with
its companion, Redis and Postgres; afterwards every live balance matches its ledger."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from routing_engine.adapters import ledger
from routing_engine.adapters.money import LEDGER_STREAM, Wallet
from routing_engine.entrypoints.api import keys
from routing_engine.entrypoints.api.principals import Role
from routing_engine.entrypoints.api.server import create_app
from routing_engine.settings import load_settings
from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, kamailio_node, scenario_expecting, sipp, vendor, wait_for

pytestmark = pytest.mark.e2e

NODE, CUSTOMER, VENDOR = "127.0.41.1", "127.0.41.10", "127.0.41.20"
DIALED, CALLER = "12125551234", "13055550100"


@pytest.fixture(scope="module")
def prepaid(module_db: psycopg.Connection) -> uuid.UUID:
    db = module_db
    provision.reset(db)
    steady = provision.vendor(db, "topup-steady", VENDOR, {"1": "0.0050"})
    plan = provision.plan(db, "topup", [steady])
    (rates,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('topup-per-second') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', 0.60, 1, 1)", (rates,))
    account, _ = provision.customer(db, "TOPUP-1", f"{CUSTOMER}/32", plan, billing_type="prepaid",
                                    credit_limit="0", rate_plan=rates)
    return account


@pytest.fixture(scope="module")
def node(prepaid: uuid.UUID, clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, NODE, tmp_path_factory.mktemp("topup")) as n:
        yield n


@pytest.fixture(scope="module")
def admin_api(module_db: psycopg.Connection, e2e_env: dict[str, str]) -> Iterator[tuple[TestClient, str]]:
    """The admin API on the same Postgres and Redis as the node (in process), with an admin key."""
    settings = load_settings(environ=e2e_env)
    settings = dataclasses.replace(settings, api=dataclasses.replace(
        settings.api, jwt_secret="e2e-secret-of-at-least-thirty-two-characters"))
    _, key = keys.create(module_db, "e2e-topup-admin", Role.ADMIN, None, "test")
    with TestClient(create_app(settings)) as client:
        yield client, key


def test_an_account_refused_for_funds_tops_up_through_the_api_and_calls_at_once(
        node: Node, prepaid: uuid.UUID, admin_api: tuple[TestClient, str], clean_redis: redis.Redis,
        module_db: psycopg.Connection, database: str, tmp_path: Path) -> None:
    wallet = Wallet(clean_redis)
    # the companion loaded the live balance from the (empty) ledger: from now on admission reads it
    wait_for(lambda: wallet.balance(prepaid) == 0, 40, "the companion to seed the live balance")
    refused = sipp(scenario_expecting(402, tmp_path), CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
    assert refused.wait() == 0, refused.report()
    assert "402 Insufficient funds" in refused.trace()

    client, key = admin_api
    response = client.post(f"/api/v1/accounts/{prepaid}/topups", headers={"X-API-Key": key},
                           json={"amount": "0.30", "reference": "e2e-payment-1"})  # 30 s at 0.60/min
    assert response.status_code == 201, response.text
    assert response.json()["data"]["balance"]["live"] == "0.300000"

    with vendor("vendor_answer.xml", VENDOR, tmp_path) as steady:  # no waiting: the very next call
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert steady.wait() == 0, steady.report()
    row = cdr(module_db, call_id_of(uac))
    assert (row["sip_code"], row["customer_rate"]) == (200, Decimal("0.600000"))
    charge = row["customer_price"]
    assert isinstance(charge, Decimal) and charge > 0
    wait_for(lambda: clean_redis.xlen(LEDGER_STREAM) == 0 and wallet.reserved(prepaid) == 0, 15,
             "the charge to reach the ledger")
    assert wallet.balance(prepaid) == 300_000 - int(charge * 1_000_000)
    balance = module_db.execute("SELECT balance FROM billing.account_balances WHERE account_id = %s",
                                (prepaid,)).fetchone()
    assert balance == (Decimal("0.300000") - charge,)
    report = ledger.check(database, clean_redis)
    assert report.ok, [ledger.describe(d) for d in report.differences]
