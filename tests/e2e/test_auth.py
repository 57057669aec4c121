"""Trunk authentication, registration, inbound DIDs and brute-force defence, end to end."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.domain.credentials import ha1_md5
from tests.e2e import provision
from tests.e2e.harness import (
    SCENARIOS,
    Node,
    RawUA,
    call_id_of,
    cdr,
    kamailio_node,
    request_uri,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

WARP_CLI = [sys.executable, "-m", "routing_engine.entrypoints.cli"]

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.6"
REALM = "warp.local"
CARRIER = "127.0.0.71"            # vendor gateway: terminates our calls, originates DID calls
ACL_CUSTOMER = "127.0.0.51"
WIDE, NARROW = "127.0.0.52", "127.0.0.53"   # 127.0.0.52/31 vs 127.0.0.53/32
SHARED = "127.0.0.54"             # two customers behind one IP, told apart by tech prefix
DIGEST_CUSTOMER = "127.0.0.55"
REGISTERED = "127.0.0.56"
ATTACKER = "127.0.0.57"
DID_REGISTERED, DID_STATIC, DID_SUSPENDED = "12125559000", "12125559001", "12125559002"
DIALED, CALLER = "12125551234", "13055550100"


def trunk(db: psycopg.Connection, ban: str, name: str, status: str = "active", **columns: object) -> uuid.UUID:
    (aid,) = db.execute("INSERT INTO accounts.accounts (ban, name, status, rate_plan_id, credit_limit)"
                        " VALUES (%s, %s, %s, %s, 100000) ON CONFLICT (ban) DO UPDATE SET status = EXCLUDED.status"
                        " RETURNING id", (ban, ban, status, provision.retail_plan(db))).fetchone()
    plan = db.execute("SELECT id FROM routing.routing_plans WHERE name = 'auth-plan'").fetchone()[0]
    cols = {"account_id": aid, "name": name, "routing_plan_id": plan, **columns}
    (tid,) = db.execute(f"INSERT INTO trunks.trunks ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
                        " RETURNING id", tuple(cols.values())).fetchone()
    return tid


def acl(db: psycopg.Connection, trunk_id: uuid.UUID, cidr: str) -> None:
    db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr)"
               " SELECT account_id, id, %s FROM trunks.trunks WHERE id = %s", (cidr, trunk_id))


def password(db: psycopg.Connection, trunk_id: uuid.UUID, username: str, secret: str) -> None:
    db.execute("INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1)"
               " SELECT account_id, id, %s, %s, %s FROM trunks.trunks WHERE id = %s",
               (username, REALM, ha1_md5(username, REALM, secret), trunk_id))


def did(db: psycopg.Connection, number: str, trunk_id: uuid.UUID) -> None:
    (nid,) = db.execute("INSERT INTO numbers.number_inventory (e164, status) VALUES (%s, 'assigned')"
                        " RETURNING id", ("+" + number,)).fetchone()
    db.execute("INSERT INTO numbers.number_assignments (number_id, account_id, trunk_id)"
               " SELECT %s, account_id, id FROM trunks.trunks WHERE id = %s", (nid, trunk_id))


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, uuid.UUID]:
    db = module_db
    provision.reset(db)
    carrier = provision.vendor(db, "carrier", CARRIER, {"1": "0.0100"})
    provision.plan(db, "auth-plan", [carrier])
    ids = {
        "acl": trunk(db, "BAN-ACL", "acl", inbound_uri=f"sip:{ACL_CUSTOMER}:5080"),
        "wide": trunk(db, "BAN-WIDE", "wide"),
        # one account's: overlapping entries of two accounts are refused (validation.acl_conflict)
        "narrow": trunk(db, "BAN-WIDE", "narrow"),
        "t1": trunk(db, "BAN-T1", "t1", tech_prefix="1111#"),
        "t2": trunk(db, "BAN-T2", "t2", tech_prefix="2222#"),
        "digest": trunk(db, "BAN-DIG", "digest", auth_mode="digest"),
        "suspended": trunk(db, "BAN-SUS", "sus", status="suspended", auth_mode="digest"),
        "registered": trunk(db, "BAN-REG", "reg", auth_mode="digest", max_contacts=2),
    }
    acl(db, ids["acl"], f"{ACL_CUSTOMER}/32")
    acl(db, ids["wide"], "127.0.0.52/31")
    acl(db, ids["narrow"], f"{NARROW}/32")
    acl(db, ids["t1"], f"{SHARED}/32")
    acl(db, ids["t2"], f"{SHARED}/32")
    password(db, ids["digest"], "digest-user", "correct horse 1")
    password(db, ids["suspended"], "suspended-user", "correct horse 2")
    password(db, ids["registered"], "reg-user", "correct horse 3")
    did(db, DID_REGISTERED, ids["registered"])
    did(db, DID_STATIC, ids["acl"])
    did(db, DID_SUSPENDED, ids["suspended"])
    return {**ids, "carrier": carrier}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("auth-node"), extra_env={
            "WARP_AUTH__FAILURES_BEFORE_BLOCK": "3", "WARP_AUTH__BLOCK_S": "3",
            "WARP_AUTH__NONCE_SECRET": "e2e-shared-secret"}) as n:
        yield n




def outbound_call(node: Node, tmp_path: Path, source: str, dialed: str = DIALED,
                  scenario: str = "customer_call.xml", extra: list[str] | None = None) -> tuple:
    with vendor("vendor_answer.xml", CARRIER, tmp_path) as carrier:
        uac = sipp(scenario, source, tmp_path, remote=node.target, service=dialed,
                   keys={"caller": CALLER}, extra=extra)
        assert uac.wait() == 0, uac.report()
        assert carrier.wait() == 0, carrier.report()
        return uac, carrier.received("INVITE")[0]


@pytest.mark.parametrize("source, expected", [(ACL_CUSTOMER, "acl"), (WIDE, "wide"), (NARROW, "narrow")])
def test_source_address_identifies_the_most_specific_trunk(node: Node, tmp_path: Path, module_db: psycopg.Connection,
                                                           world: dict[str, uuid.UUID], source: str,
                                                           expected: str) -> None:
    uac, _ = outbound_call(node, tmp_path, source)
    assert cdr(module_db, call_id_of(uac))["trunk_id"] == world[expected]


def test_tech_prefix_picks_the_customer_behind_a_shared_ip_and_is_removed(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, world: dict[str, uuid.UUID]) -> None:
    uac, invite = outbound_call(node, tmp_path, SHARED, dialed=f"2222#{DIALED}")
    assert request_uri(invite) == f"sip:{DIALED}@{CARRIER}:5060"
    assert cdr(module_db, call_id_of(uac))["trunk_id"] == world["t2"]


def test_digest_credentials_identify_a_trunk_without_acl(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, world: dict[str, uuid.UUID]) -> None:
    uac, invite = outbound_call(node, tmp_path, DIGEST_CUSTOMER, scenario="customer_call_auth.xml",
                                extra=["-au", "digest-user", "-ap", "correct horse 1"])
    assert "Proxy-Authorization" not in invite  # credentials are consumed, never forwarded
    assert cdr(module_db, call_id_of(uac))["trunk_id"] == world["digest"]


def refused_after_auth(node: Node, tmp_path: Path, source: str, user: str, secret: str, code: int = 403):
    template = (SCENARIOS / "customer_auth_refused.xml").read_text().replace("EXPECTED_CODE", str(code))
    path = tmp_path / f"auth_refused_{code}.xml"
    path.write_text(template)
    uac = sipp(path, source, tmp_path, remote=node.target, service=DIALED, keys={"caller": CALLER},
               extra=["-au", user, "-ap", secret])
    assert uac.wait() == 0, uac.report()
    return uac


def final_response(uac) -> list[str]:
    """The refusal as the caller saw it, minus what differs per call (tags, ids, Via)."""
    last = uac.received("SIP/2.0 4")[-1]
    return [line for line in last.splitlines()
            if line and not line.startswith(("Via", "From", "To", "Call-ID", "CSeq", "Content-Length"))]


def test_wrong_password_and_unknown_user_look_the_same(node: Node, tmp_path: Path,
                                                       module_db: psycopg.Connection) -> None:
    wrong = refused_after_auth(node, tmp_path, DIGEST_CUSTOMER, "digest-user", "wrong password")
    unknown = refused_after_auth(node, tmp_path, DIGEST_CUSTOMER, "nobody-here", "wrong password")
    assert final_response(wrong) == final_response(unknown) == ["SIP/2.0 403 Forbidden", "Server: WARP"]
    assert cdr(module_db, call_id_of(wrong))["sip_code"] == 403


def test_suspended_account_is_refused_with_its_reason(node: Node, tmp_path: Path) -> None:
    uac = refused_after_auth(node, tmp_path, DIGEST_CUSTOMER, "suspended-user", "correct horse 2")
    assert "SIP/2.0 403 Account suspended" in uac.trace()


def register(node: Node, tmp_path: Path, expires: int, code: int = 200) -> None:
    text = (SCENARIOS / "trunk_register.xml").read_text()
    path = tmp_path / f"register_{code}.xml"
    path.write_text(text.replace('<recv response="200"/>', f'<recv response="{code}"/>'))
    uac = sipp(path, REGISTERED, tmp_path, remote=node.target, keys={"aor": "reg-user", "expires": str(expires)},
               extra=["-au", "reg-user", "-ap", "correct horse 3"])
    assert uac.wait() == 0, uac.report()
    return uac


def inbound_call(node: Node, tmp_path: Path, number: str, scenario: str = "customer_call.xml"):
    return sipp(scenario, CARRIER, tmp_path, local_port=5062, remote=node.target, service=number,
                keys={"caller": CALLER})


def test_registered_trunk_receives_calls_to_its_did_and_unregistered_gets_480(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, world: dict[str, uuid.UUID],
        clean_redis: redis.Redis) -> None:
    uac = register(node, tmp_path, 300)
    assert re.search(r"^Contact: <sip:reg-user@127\.0\.0\.56:5060;transport=UDP>;expires=(29\d|300)$",
                     uac.trace(), re.M)
    assert clean_redis.hlen(f"warp:reg:{world['registered']}") == 1

    with vendor("vendor_answer.xml", REGISTERED, tmp_path) as trunk_side:
        caller = inbound_call(node, tmp_path, DID_REGISTERED)
        assert caller.wait() == 0, caller.report()
        assert trunk_side.wait() == 0, trunk_side.report()
        assert request_uri(trunk_side.received("INVITE")[0]) == "sip:reg-user@127.0.0.56:5060;transport=UDP"
    row = cdr(module_db, call_id_of(caller))
    assert (row["direction"], row["trunk_id"], row["provider_id"], row["sip_code"]) == (
        "inbound", world["registered"], world["carrier"], 200)

    register(node, tmp_path, 0)  # un-REGISTER
    assert clean_redis.hlen(f"warp:reg:{world['registered']}") == 0
    offline = sipp(scenario_expecting(480, tmp_path), CARRIER, tmp_path, local_port=5062, remote=node.target,
                   service=DID_REGISTERED, keys={"caller": CALLER})
    assert offline.wait() == 0, offline.report()


def test_register_asking_for_too_short_an_interval_gets_423(node: Node, tmp_path: Path) -> None:
    uac = register(node, tmp_path, 10, code=423)
    assert "Min-Expires: 60" in uac.trace()


def test_static_trunk_gets_its_did_calls_at_its_address(node: Node, tmp_path: Path) -> None:
    with vendor("vendor_answer.xml", ACL_CUSTOMER, tmp_path, port=5080) as trunk_side:
        caller = inbound_call(node, tmp_path, DID_STATIC)
        assert caller.wait() == 0, caller.report()
        assert trunk_side.wait() == 0, trunk_side.report()
        assert request_uri(trunk_side.received("INVITE")[0]) == f"sip:{DID_STATIC}@{ACL_CUSTOMER}:5080"


@pytest.mark.parametrize("number, code", [("12125550000", 404), (DID_SUSPENDED, 403)])
def test_inbound_to_unknown_or_suspended_numbers_is_refused(node: Node, tmp_path: Path, number: str,
                                                            code: int) -> None:
    caller = sipp(scenario_expecting(code, tmp_path), CARRIER, tmp_path, local_port=5062, remote=node.target,
                  service=number, keys={"caller": CALLER})
    assert caller.wait() == 0, caller.report()


def invite_without_credentials(ua: RawUA, n: int) -> str:
    return (f"INVITE sip:{DIALED}@{PROXY} SIP/2.0\nVia: SIP/2.0/UDP {ATTACKER}:5099;branch=z9hG4bKbf{n}x;rport\n"
            f"From: <sip:{CALLER}@{ATTACKER}>;tag=bf{n}\nTo: <sip:{DIALED}@{PROXY}>\nCall-ID: bf-{n}-{uuid.uuid4()}\n"
            f"CSeq: 1 INVITE\nContact: <sip:{CALLER}@{ATTACKER}:5099>\nMax-Forwards: 70\nContent-Length: 0\n\n")


def test_brute_force_blocks_the_source_on_every_node_until_the_block_expires(
        node: Node, tmp_path: Path, clean_redis: redis.Redis) -> None:
    for _ in range(3):
        refused_after_auth(node, tmp_path, ATTACKER, "digest-user", "guess")
    assert clean_redis.exists(f"warp:block:{ATTACKER}")
    listed = subprocess.run([*WARP_CLI, "blocks", "list"], env=node.env,
                            capture_output=True, text=True, timeout=30)
    assert ATTACKER in listed.stdout
    ua = RawUA(ATTACKER, 5099)
    try:
        ua.send(invite_without_credentials(ua, 1), (PROXY, 5060))
        assert ua.drain(quiet_s=1.0) == [], "a blocked source must get no answer"
        wait_for(lambda: not clean_redis.exists(f"warp:block:{ATTACKER}"), 10, "the block to expire")

        def challenged() -> str | None:  # every worker drops the block within block_refresh_ms
            ua.send(invite_without_credentials(ua, 2), (PROXY, 5060))
            return next((m for m in ua.drain(quiet_s=0.3) if m.startswith("SIP/2.0 407")), None)

        reply = wait_for(challenged, 5, "a challenge once the block has expired")
        assert "Proxy-Authenticate: Digest" in reply
    finally:
        ua.close()


def test_ops_can_clear_a_block(node: Node, clean_redis: redis.Redis) -> None:
    clean_redis.set("warp:block:198.51.100.77", "9", ex=600)
    cleared = subprocess.run([*WARP_CLI, "blocks", "clear", "198.51.100.77"],
                             env=node.env, capture_output=True, text=True, timeout=30)
    assert cleared.returncode == 0 and "unblocked" in cleared.stdout
    assert not clean_redis.exists("warp:block:198.51.100.77")


def test_invite_without_a_from_user_is_a_bad_request(node: Node) -> None:
    ua = RawUA("127.0.0.58", 5060)
    try:
        ua.send(f"INVITE sip:{DIALED}@{PROXY} SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.58:5060;branch=z9hG4bKnofrom\n"
                f"From: <sip:127.0.0.58>;tag=x\nTo: <sip:{DIALED}@{PROXY}>\nCall-ID: nofrom\nCSeq: 1 INVITE\n"
                f"Max-Forwards: 70\nContent-Length: 0\n\n", (PROXY, 5060))
        reply, _ = ua.recv_until(lambda m: m.startswith("SIP/2.0 4"))
        assert reply.startswith("SIP/2.0 400")
    finally:
        ua.close()


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
