"""What one answered call costs the node, counted exactly: the Python callbacks Kamailio makes
(``warp_kemi_callbacks_total``) and the Redis commands issued (``INFO commandstats``).

Counters, not timings: they are exact on a loaded machine. The figures are printed, so that
``pytest -s`` on this file is also the quick way to see what a change saved."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from benchmarks import capacity
from routing_engine.ops import stack
from routing_engine.settings import Settings, load_settings
from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, kamailio_node, sipp, vendor, wait_for

pytestmark = pytest.mark.e2e

PROXY, CUSTOMER, VENDOR = "127.0.45.2", "127.0.45.11", "127.0.45.21"
DIALED, CALLER = "12125551234", "13055550100"
CALLS = 40
# Entered for every reply received or message sent unless kamailio.cfg says otherwise, with
# nothing to do there (the reply and onsend routes), or with one hash lookup that the cfg's
# native event_route[topos:msg-sending] now makes (the topos event)
IDLE_CALLBACKS = ("ksr_reply_route", "ksr_onsend_route", "ksr_onreply_route", "ksr_topos_event")


@pytest.fixture(scope="module")
def node(module_db: psycopg.Connection, clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    provision.reset(module_db)
    plan = provision.plan(module_db, "cost", [provision.vendor(module_db, "cost-vendor", VENDOR, {"1": "0.0050"})])
    provision.customer(module_db, "COST-1", f"{CUSTOMER}/32", plan)
    # the block list and the vendor verdicts read once per worker in the test's time, not every
    # second: the Redis round trips counted are then the calls' own, give or take those
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("cost-node"),
                       extra_env={"WARP_NODE__NAME": "cost-node", "WARP_AUTH__BLOCK_REFRESH_MS": "600000",
                                  "WARP_QUALITY__REFRESH_S": "600"}) as n:
        yield n


def callbacks(settings: Settings) -> Counter[str]:
    """Python callbacks so far, by callback, summed over the node's SIP workers (Kamailio's
    processes: not the companion's)."""
    counters = capacity.worker_counters(stack.metrics_dir(settings, "kamailio"))
    return Counter({name: int(n) for name, n in counters.get(capacity.CALLBACKS_SAMPLE, {}).items()})


def round_trips(settings: Settings) -> int:
    """Requests the node's SIP workers sent Redis so far (a pipeline is one)."""
    counters = capacity.worker_counters(stack.metrics_dir(settings, "kamailio"))
    return int(sum(counters.get(capacity.TRIPS_SAMPLE, {}).values()))


def redis_commands(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()})


def test_an_answered_call_enters_python_only_where_it_has_work(node: Node, tmp_path: Path,
                                                                 clean_redis: redis.Redis,
                                                                 module_db: psycopg.Connection) -> None:
    settings = load_settings(environ=node.env)
    # a first call warms every worker (connections, snapshot) so the counted ones are steady
    with vendor("vendor_answer.xml", VENDOR, tmp_path, calls=CALLS + 1) as gw:
        warm = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                    keys={"caller": CALLER})
        assert warm.wait() == 0, warm.report()
        cdr(module_db, call_id_of(warm))
        before, sent_before, trips_before = callbacks(settings), redis_commands(clean_redis), round_trips(settings)
        started = time.monotonic()
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER}, calls=CALLS, hold_ms=100, extra=["-r", "50"])
        assert uac.wait(timeout_s=60) == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    elapsed_s = time.monotonic() - started
    call_ids = {line.split(":", 1)[1].strip() for text in uac.received("SIP/2.0 200")
                for line in text.splitlines() if line.lower().startswith("call-id:")}
    assert len(call_ids) == CALLS
    for call_id in call_ids:
        cdr(module_db, call_id)  # written: the call's end has been through Python
    wait_for(lambda: callbacks(settings)["ksr_dialog_event"] - before["ksr_dialog_event"] >= 2 * CALLS, 10,
             "the calls' dialog events")
    entered = callbacks(settings) - before
    trips = round_trips(settings) - trips_before
    print(f"\nRedis round trips from the SIP workers per answered call: {trips / CALLS:.1f}")
    # two per call (admission; the call's end), plus at most, per worker: its first read of the
    # block list and of the verdicts, its LRN cache miss of the one number dialed, the gateway
    # health once a second; and the node's slice renewal every money.tick_s
    workers = settings.sip.children  # the UDP workers: the calls' requests reach no other
    besides = workers * (3 + math.ceil(elapsed_s) + 1) + math.ceil(elapsed_s / settings.money.tick_s) + 1
    assert trips <= 2 * CALLS + besides, (trips, besides)
    sent = redis_commands(clean_redis) - sent_before
    print(f"\nPython callbacks per answered call: {sum(entered.values()) / CALLS:.1f}",
          {name: round(n / CALLS, 1) for name, n in sorted(entered.items())})
    print(f"Redis commands per answered call (node and companion): {sum(sent.values()) / CALLS:.1f}",
          {name: round(n / CALLS, 1) for name, n in sorted(sent.items())})
    assert entered["ksr_request_route"] >= 3 * CALLS  # INVITE, ACK, BYE: the counter does count
    assert {name: entered[name] for name in IDLE_CALLBACKS} == dict.fromkeys(IDLE_CALLBACKS, 0)
    # the dialog's start and end only (kamailio.cfg's native dialog routes): not its 180 or ACK
    assert entered["ksr_dialog_event"] == 2 * CALLS
    # no branch route: the vendor wants nothing rewritten and its address is not refused
    assert entered["ksr_branch_route"] == 0
    assert sum(entered.values()) <= 8 * CALLS
