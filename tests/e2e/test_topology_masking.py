"""Topology hiding without storage (sip.topology_hiding = topoh): neither side learns the
other's addresses, in-dialog requests find their way through the masked headers, no Redis
command is spent on it, and a trunk with topology hiding off is left as it is."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e import provision
from tests.e2e.harness import Node, call_id_of, cdr, header, kamailio_node, sipp, vendor

pytestmark = pytest.mark.e2e

PROXY, HIDDEN, EXPOSED, VENDOR = "127.0.45.60", "127.0.45.61", "127.0.45.62", "127.0.45.65"
DIALED, CALLER = "12125551234", "13055550100"
ROUTING = ("Via", "Record-Route", "Contact", "Route")


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    provision.reset(module_db)
    plan = provision.plan(module_db, "masked", [provision.vendor(module_db, "masked-vendor", VENDOR, {"1": "0.0050"})])
    ids = {name: provision.customer(module_db, f"M-{name}", f"{ip}/32", plan)
           for name, ip in (("hidden", HIDDEN), ("exposed", EXPOSED))}
    module_db.execute("UPDATE trunks.trunks SET topology_hiding = false WHERE id = %s", (ids["exposed"][1],))
    return ids


@pytest.fixture(scope="module")
def node(world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("topoh-node"), extra_env={
            "WARP_SIP__TOPOLOGY_HIDING": "topoh", "WARP_SIP__TOPOH_KEY": "test-mask-key-0123456789",
            "WARP_NODE__NAME": "topoh-node"}) as n:
        yield n


def redis_commands(client: redis.Redis) -> Counter[str]:
    return Counter({name.removeprefix("cmdstat_"): int(v["calls"])
                    for name, v in client.info("commandstats").items()})


def test_a_masked_call_shows_neither_side_the_other_and_its_in_dialog_requests_arrive(
        node: Node, tmp_path: Path, clean_redis: redis.Redis, module_db: psycopg.Connection) -> None:
    before = redis_commands(clean_redis)
    with vendor("vendor_answer_reinvite.xml", VENDOR, tmp_path) as gw:
        # INVITE, 200, ACK, re-INVITE, 200, ACK, BYE, 200: every in-dialog request is sent to the
        # masked Contact and Record-Route the customer was given
        uac = sipp("customer_reinvite.xml", HIDDEN, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    requests = gw.received("INVITE") + gw.received("ACK") + gw.received("BYE")
    assert len(gw.received("INVITE")) == 2 and len(gw.received("BYE")) == 1
    for request in requests:
        assert not [h for name in ROUTING for h in header(request, name) if HIDDEN in h], request
    replies = uac.received("SIP/2.0")
    assert replies
    for reply in replies:
        assert not [h for name in ROUTING for h in header(reply, name) if VENDOR in h], reply
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 200
    sent = redis_commands(clean_redis) - before
    assert sent["hmset"] == 0  # topos would have stored the dialog and each branch
    assert not [key for key in clean_redis.scan_iter(count=1000) if key.startswith(("d:z:", "b:x:"))]


def test_the_called_side_hangs_up_through_the_masked_headers(node: Node, tmp_path: Path,
                                                             module_db: psycopg.Connection) -> None:
    with vendor("vendor_hangup.xml", VENDOR, tmp_path) as gw:
        uac = sipp("customer_call_cut.xml", HIDDEN, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert gw.wait() == 0, gw.report()  # its BYE was answered: it reached the customer
        assert uac.wait() == 0, uac.report()
    (bye,) = uac.received("BYE")
    assert not [h for name in ROUTING for h in header(bye, name) if VENDOR in h], bye
    assert cdr(module_db, call_id_of(uac))["hangup_side"] == "callee"


def test_a_trunk_with_topology_hiding_off_is_not_masked(node: Node, tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as gw:
        uac = sipp("customer_call.xml", EXPOSED, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    invite = gw.received("INVITE")[0]
    assert any(EXPOSED in h for h in header(invite, "Contact"))
    assert any(EXPOSED in h for h in header(invite, "Via"))
    answered = [r for r in uac.received("SIP/2.0 200") if "INVITE" in header(r, "CSeq")[0]]
    assert any(VENDOR in h for h in header(answered[0], "Contact"))
