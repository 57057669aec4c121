"""The quality strategy end to end: a vendor that fails every call is demoted and tried last."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e import provision
from tests.e2e.harness import SCENARIOS, Node, _stop_group, explain, kamailio_node, sipp, udp_bound, wait_for

pytestmark = pytest.mark.e2e

PROXY, CUSTOMER, FLAKY, SOLID = "127.0.0.18", "127.0.0.19", "127.0.0.24", "127.0.0.25"
DIALED, CALLER = "12125551234", "13055550100"


@pytest.fixture(scope="module")
def node(module_db: psycopg.Connection, clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    provision.reset(module_db)
    flaky = provision.vendor(module_db, "flaky", FLAKY, {"1": "0.0010"})
    solid = provision.vendor(module_db, "solid", SOLID, {"1": "0.0050"})
    plan = provision.plan(module_db, "by-quality", [flaky, solid])
    module_db.execute("UPDATE routing.routing_plans SET strategy = 'quality' WHERE id = %s", (plan,))
    provision.customer(module_db, "Q-1", f"{CUSTOMER}/32", plan)
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("quality-node"), extra_env={
            "WARP_QUALITY__MIN_SAMPLES": "10", "WARP_QUALITY__REFRESH_S": "0.2"}) as n:
        yield n


def test_a_vendor_failing_every_call_is_demoted_and_tried_last(node: Node, tmp_path: Path) -> None:
    reject = tmp_path / "vendor_reject_503.xml"  # answers 503 to everything
    reject.write_text((SCENARIOS / "vendor_reject.xml").read_text().replace("REJECT_CODE", "503")
                      .replace("REJECT_REASON", "Service Unavailable"))
    flaky = sipp(reject, FLAKY, tmp_path, calls=None)
    solid = sipp("vendor_answer.xml", SOLID, tmp_path, calls=None)
    try:
        wait_for(lambda: udp_bound(FLAKY, 5060) and udp_bound(SOLID, 5060), 10, "the vendors")
        calls = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                     keys={"caller": CALLER}, calls=40, hold_ms=50, extra=["-r", "10"])
        assert calls.wait(timeout_s=60) == 0, calls.report()  # every call completed: failover or not
    finally:
        for uas in (flaky, solid):
            _stop_group(uas.proc)
    tried_flaky = len(flaky.received("INVITE"))
    assert 10 <= tried_flaky < 25, tried_flaky  # judged after 10 attempts, then tried last
    said = explain(node.env, "--source", CUSTOMER, "--to", DIALED)
    assert said["routes"][0]["vendor"] == "solid"
    flaky_verdict = next(c for c in said["trace"]["candidates"] if c["vendor"] == "flaky")
    assert flaky_verdict["kept"] and flaky_verdict["quality"].startswith("demoted: ASR 0% over")
