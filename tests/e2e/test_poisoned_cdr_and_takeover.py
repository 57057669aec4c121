"""Two attacks through a real node: a packet meant to halt every CDR (a NUL byte in a Call-ID,
which Postgres text cannot hold), and an ACL entry that takes over another account's address
(added with SQL, past the API's checks)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.settings import load_settings
from tests.e2e import provision
from tests.e2e.harness import Node, RawUA, call_id_of, cdr, kamailio_node, sipp, vendor, wait_for

pytestmark = pytest.mark.e2e

PROXY, VICTIM, TAKER, VENDOR, ATTACKER = "127.0.4.1", "127.0.4.11", "127.0.4.12", "127.0.4.20", "127.0.4.30"
DIALED, CALLER = "12125551234", "13055550100"
TAKER_TRUNK = uuid.UUID("00000000-0000-0000-0000-000000000001")  # sorts before any other trunk id


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    db = module_db
    provision.reset(db)
    plan = provision.plan(db, "poison", [provision.vendor(db, "poison-vendor", VENDOR, {"1": "0.0050"})])
    victim_account, victim_trunk = provision.customer(db, "P-VICTIM", f"{VICTIM}/32", plan)
    (taker_account,) = db.execute("INSERT INTO accounts.accounts (ban, name, rate_plan_id, billing_type, credit_limit)"
                                  " VALUES ('P-TAKER', 'Taker', %s, 'postpaid', 100000) RETURNING id",
                                  (provision.retail_plan(db),)).fetchone()
    db.execute("INSERT INTO trunks.trunks (id, account_id, name, routing_plan_id) VALUES (%s, %s, 'main', %s)",
               (TAKER_TRUNK, taker_account, plan))
    db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
               (taker_account, TAKER_TRUNK, f"{TAKER}/32"))
    return {"victim": victim_account, "taker": taker_account}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("poison"),
                       extra_env={"WARP_NODE__NAME": "poison-node"}) as n:
        yield n


def companion_log(node: Node) -> str:
    path = node.log_path.parent / "cdr-emitter.log"
    assert path.exists(), "the companion's log is missing"
    return path.read_text(errors="replace")


def acl_call(node: Node, source: str, tmp_path: Path) -> str:
    """One answered call from ``source``; its Call-ID."""
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as gw:
        uac = sipp("customer_call.xml", source, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert gw.wait() == 0, gw.report()
    return call_id_of(uac)


def test_a_nul_byte_in_a_call_id_neither_halts_the_cdr_stream_nor_is_lost(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, clean_redis: redis.Redis) -> None:
    poisoned = f"nul\x00{uuid.uuid4()}"
    ua = RawUA(ATTACKER, 5099)
    try:
        ua.send(f"INVITE sip:{DIALED}@{PROXY} SIP/2.0\nVia: SIP/2.0/UDP {ATTACKER}:5099;branch=z9hG4bKnul1\n"
                f"From: <sip:{CALLER}@{ATTACKER}>;tag=nul1\nTo: <sip:{DIALED}@{PROXY}>\nCall-ID: {poisoned}\n"
                "CSeq: 1 INVITE\nMax-Forwards: 70\nContact: <sip:x@127.0.4.30:5099>\n"
                'Proxy-Authorization: Digest username="nobody", realm="warp.local", nonce="made-up",'
                f' uri="sip:{DIALED}@{PROXY}", response="00000000000000000000000000000000"\n'
                "Content-Length: 0\n\n", (PROXY, 5060))
        reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0 4"))
        assert reply.startswith("SIP/2.0 403"), reply
    finally:
        ua.close()
    valid = acl_call(node, VICTIM, tmp_path)
    assert cdr(module_db, valid)["sip_code"] == 200  # written: the stream did not stop at the poisoned record
    stored = cdr(module_db, poisoned.replace("\x00", "\ufffd"))  # stored, the NUL visibly replaced
    assert stored["sip_code"] == 403
    stream = load_settings(environ=node.env).cdr.stream
    assert clean_redis.xlen(f"{stream}:dead") == 0  # sanitised, so nothing needed dead-lettering


def test_an_overlapping_acl_entry_of_another_account_is_refused_and_calls_stay_with_their_owner(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, world: dict[str, uuid.UUID]) -> None:
    before = acl_call(node, VICTIM, tmp_path)
    assert cdr(module_db, before)["account_id"] == world["victim"]
    builds = companion_log(node).count("snapshot ")
    module_db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
                      (world["taker"], TAKER_TRUNK, f"{VICTIM}/32"))
    wait_for(lambda: companion_log(node).count("snapshot ") > builds, 15, "the companion to build the new snapshot")
    after = acl_call(node, VICTIM, tmp_path)
    assert cdr(module_db, after)["account_id"] == world["victim"]  # not billed to the taker
    log = companion_log(node)
    assert re.search(r"snapshot \w+ refused, \d+ problem\(s\); \w+ stays in service", log), log[-3000:]
    conflict = re.search(rf"ACL {VICTIM}/32 of trunk main \(([0-9a-f-]+)\) overlaps {VICTIM}/32 of trunk main"
                         rf" \(([0-9a-f-]+)\) of another account", log)
    assert conflict and str(TAKER_TRUNK) in conflict.groups(), log[-3000:]
