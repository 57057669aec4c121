"""Real calls through a node leave their CDRs; a replay of them against a draft that makes one
vendor dearer reports the calls that move to the other vendor and the ones that would be
refused, with the margin delta computed here from the CDRs — LRN as the CDR recorded it, even
after the number's porting record is gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import psycopg
import pytest
import redis

from routing_engine.adapters import drafts
from routing_engine.ops import whatif
from routing_engine.settings import Settings
from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, kamailio_node, sipp, vendor

pytestmark = pytest.mark.e2e

PROXY, CUSTOMER = "127.0.43.1", "127.0.43.20"
CHEAP, LOCAL = "127.0.43.10", "127.0.43.11"
TO_212, TO_305, PORTED = "12125551234", "13055551234", "13105550000"  # 310 number ported into 212
LRN = "12125550000"
CALLER = "13055550100"
MICRO = Decimal("0.000001")


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    db = module_db
    provision.reset(db)
    db.execute("TRUNCATE drafts.drafts, routing.lnp CASCADE")
    cheap = provision.vendor(db, "cheap-all", CHEAP, {"1": "0.0050"})
    local = provision.vendor(db, "local-212", LOCAL, {"1212": "0.0080"})
    plan = provision.plan(db, "replayed", [cheap, local])
    account, trunk = provision.customer(db, "BAN-REPLAY", f"{CUSTOMER}/32", plan)
    db.execute("INSERT INTO routing.lnp (tn, lrn) VALUES (%s, %s)", (PORTED, LRN))
    return {"cheap": cheap, "local": local, "account": account, "trunk": trunk}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("replay-node"),
                       extra_env={"WARP_NODE__NAME": "replay-node"}) as n:
        yield n


def test_a_replay_of_real_calls_on_a_dearer_vendor_reports_the_moved_and_refused_calls(
        node: Node, world: dict[str, uuid.UUID], module_db: psycopg.Connection, settings: Settings,
        clean_redis: redis.Redis, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("replay-calls")
    started = datetime.now(UTC) - timedelta(seconds=1)
    rows = {}
    for dialed in (TO_212, TO_305, PORTED):
        with vendor("vendor_answer.xml", CHEAP, tmp) as uas:
            uac = sipp("customer_call.xml", CUSTOMER, tmp, remote=node.target, service=dialed,
                       keys={"caller": CALLER}, hold_ms=1500)
            assert uac.wait() == 0, uac.report()
            assert uas.wait() == 0
        rows[dialed] = cdr(module_db, call_id_of(uac))
    assert {r["provider_id"] for r in rows.values()} == {world["cheap"]}
    assert rows[PORTED]["lrn"] == "+" + LRN and all(r["duration_s"] >= 1 for r in rows.values())
    # the number is no longer ported, nor cached: a replay that looked it up again would refuse it
    module_db.execute("DELETE FROM routing.lnp")
    clean_redis.flushdb()

    drafts.create(module_db, "cheap-dearer", "test")
    drafts.add_edit(module_db, "cheap-dearer", drafts.Edit("vendor_rate", {"vendor": "cheap-all", "prefix": "1"},
                                                           {"rate": "2.00"}),  # above the 1.00 the customer pays
                    datetime.now(UTC), settings.auth.realm)
    name, snapshot = whatif.candidate(settings, module_db, datetime.now(UTC), draft="cheap-dearer")
    report = whatif.replay(settings, module_db, name, snapshot, started, datetime.now(UTC) + timedelta(seconds=1))

    by_call = {c.call_id: c for c in report.changes}
    moved = {str(rows[d]["call_id"]) for d in (TO_212, PORTED)}
    assert {i for i, c in by_call.items() if c.rerouted} == moved
    assert {c.vendor_after for c in by_call.values() if c.rerouted} == {world["local"]}
    assert {i for i, c in by_call.items() if c.refused} == {str(rows[TO_305]["call_id"])}
    assert report.unreplayable == 0 and report.total.calls == 3

    def per_second(rate: str, seconds: object) -> Decimal:
        return (Decimal(rate) * int(str(seconds)) / 60).quantize(MICRO, rounding=ROUND_HALF_UP)

    expected = Decimal(0)
    for dialed, row in rows.items():
        before = Decimal(str(row["customer_price"])) - Decimal(str(row["vendor_cost"]))
        after = Decimal(str(row["customer_price"])) - per_second("0.0080", row["duration_s"]) if dialed != TO_305 \
            else Decimal(0)
        expected += after - before
    assert report.total.margin_after - report.total.margin_before == expected
    assert report.by_customer["BAN-REPLAY"].margin_after - report.by_customer["BAN-REPLAY"].margin_before == expected
