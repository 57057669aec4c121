"""Scale-out and faults: two Kamailio nodes on one Redis and one Postgres, and what happens when
Redis, Postgres, a vendor or Kamailio itself goes away under traffic.

This module runs its own Redis and Postgres (dedicated servers on their own addresses, see
servers.py) because it stops them; the session's shared servers are never touched. What each
case shows is listed in RESILIENCE.md.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.money import Limits, Wallet
from routing_engine.domain.credentials import ha1_md5
from routing_engine.domain.rating import to_micros
from tests.e2e import provision
from tests.e2e.harness import (
    SCENARIOS,
    Node,
    Sipp,
    _stop_group,
    call_id_of,
    cdr,
    kamailio_node,
    request_uri,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)
from tests.e2e.servers import PostgresServer, RedisServer, dedicated

pytestmark = pytest.mark.e2e

NODE_A, NODE_B, NODE_C = "127.0.0.172", "127.0.0.173", "127.0.0.174"
REDIS_HOST, PG_HOST = "127.0.0.170", "127.0.0.171"
LOAD_A, LOAD_B, PREPAID, FAILOVER = "127.0.0.175", "127.0.0.176", "127.0.0.177", "127.0.0.178"
REGISTERED = "127.0.0.186"
GATEWAY, SLOW, BACKUP = "127.0.0.180", "127.0.0.181", "127.0.0.182"
DIALED, CALLER, DID = "12125551234", "13055550100", "12125559100"
REALM, REG_USER, REG_SECRET = "warp.local", "resil-reg", "resil registration secret"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[RedisServer, PostgresServer]]:
    # outside pytest's own temporary folder, which any pytest run makes 0700 again: the postgres
    # user must be able to reach its data directory until the server has stopped
    workdir = Path(tempfile.mkdtemp(prefix="warp-resil-"))
    try:
        with dedicated(REDIS_HOST, PG_HOST, int(os.environ.get("WARP_STACK__REDIS_PORT", "56444")),
                       int(os.environ.get("WARP_STACK__POSTGRES_PORT", "55444")), workdir) as pair:
            yield pair
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def db(servers: tuple[RedisServer, PostgresServer]) -> Iterator[psycopg.Connection]:
    """A connection per test: a test here may restart Postgres under a module-wide one."""
    with psycopg.connect(servers[1].url, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def store(servers: tuple[RedisServer, PostgresServer]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(servers[0].url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def world(servers: tuple[RedisServer, PostgresServer]) -> Iterator[dict[str, tuple[uuid.UUID, uuid.UUID]]]:
    with psycopg.connect(servers[1].url, autocommit=True) as conn:
        yield provision_world(conn)


def provision_world(db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    main = provision.vendor(db, "main", GATEWAY, {"1": "0.0050"})
    slow = provision.vendor(db, "slow", SLOW, {"1": "0.0010"})
    backup = provision.vendor(db, "backup", BACKUP, {"1": "0.0060"})
    plan = provision.plan(db, "resil", [main])
    fo_plan = provision.plan(db, "resil-failover", [slow, backup])
    db.execute("UPDATE routing.routing_plans SET attempt_timeout_ms = 1000 WHERE id = %s", (fo_plan,))
    (per_second,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('per-second') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', 0.60, 1, 1)", (per_second,))
    ids = {
        "a": provision.customer(db, "R-A", f"{LOAD_A}/32", plan),
        "b": provision.customer(db, "R-B", f"{LOAD_B}/32", plan),
        "prepaid": provision.customer(db, "R-PRE", f"{PREPAID}/32", plan, billing_type="prepaid",
                                      credit_limit="0", rate_plan=per_second),
        "failover": provision.customer(db, "R-FO", f"{FAILOVER}/32", fo_plan),
    }
    account, _ = ids["a"]
    (reg,) = db.execute("INSERT INTO trunks.trunks (account_id, name, routing_plan_id, auth_mode)"
                        " VALUES (%s, 'registered', %s, 'digest') RETURNING id", (account, plan)).fetchone()
    db.execute("INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1) VALUES (%s, %s, %s, %s, %s)",
               (account, reg, REG_USER, REALM, ha1_md5(REG_USER, REALM, REG_SECRET)))
    (nid,) = db.execute("INSERT INTO numbers.number_inventory (e164, status) VALUES (%s, 'assigned') RETURNING id",
                        ("+" + DID,)).fetchone()
    db.execute("INSERT INTO numbers.number_assignments (number_id, account_id, trunk_id) VALUES (%s, %s, %s)",
               (nid, account, reg))
    ids["registered"] = (account, reg)
    return ids


def node_env(servers: tuple[RedisServer, PostgresServer], name: str) -> dict[str, str]:
    return {"WARP_DATABASE__URL": servers[1].url, "WARP_REDIS__URL": servers[0].url, "WARP_NODE__NAME": name,
            "WARP_AUTH__NONCE_SECRET": "resil-nonce-secret", "WARP_AUTH__REALM": REALM}


@pytest.fixture(scope="module")
def nodes(world: dict[str, tuple[uuid.UUID, uuid.UUID]], servers: tuple[RedisServer, PostgresServer],
          e2e_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    with kamailio_node(e2e_env, NODE_A, tmp_path_factory.mktemp("resil-a"),
                       extra_env=node_env(servers, "resil-a")) as a, \
            kamailio_node(e2e_env, NODE_B, tmp_path_factory.mktemp("resil-b"),
                          extra_env=node_env(servers, "resil-b")) as b:
        yield a, b


def group_pids(leader: int) -> set[int]:
    """Every live process of a process group (Kamailio's main process and its workers)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == leader and fields[0] != "Z":
                pids.add(int(entry))
    return pids


def any_outcome(code: int, workdir: Path) -> Path:
    """customer_any_outcome.xml taking ``code`` (instead of 486) as the refusal it accepts."""
    path = workdir / f"customer_any_outcome_{code}.xml"
    path.write_text((SCENARIOS / "customer_any_outcome.xml").read_text().replace('response="486"',
                                                                                   f'response="{code}"'))
    return path


def call(node: Node, source: str, tmp_path: Path, port: int = 5060, hold_ms: int = 200, **kw: object) -> Sipp:
    return sipp("customer_call.xml", source, tmp_path, local_port=port, remote=node.target, service=DIALED,
                keys={"caller": CALLER}, hold_ms=hold_ms, **kw)  # type: ignore[arg-type]


def cdrs_of(db: psycopg.Connection, uac: Sipp) -> list[tuple[str, str]]:
    prefix = uac.messages.stem  # SIPp's Call-IDs are "<this run's name>-<n>@<address>"
    return db.execute("SELECT call_id, node FROM cdr.cdrs WHERE call_id LIKE %s", (prefix + "-%",)).fetchall()


# ------------------------------------------------------------------ scale-out

def test_a_trunk_registered_via_one_node_takes_calls_arriving_at_the_other(
        nodes: tuple[Node, Node], tmp_path: Path, db: psycopg.Connection,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]]) -> None:
    a, b = nodes
    reg = sipp("trunk_register.xml", REGISTERED, tmp_path, remote=a.target,
               keys={"aor": REG_USER, "expires": "300"}, extra=["-au", REG_USER, "-ap", REG_SECRET])
    assert reg.wait() == 0, reg.report()
    with vendor("vendor_answer.xml", REGISTERED, tmp_path) as trunk_side:
        caller = sipp("customer_call.xml", GATEWAY, tmp_path, local_port=5062, remote=b.target, service=DID,
                      keys={"caller": CALLER})
        assert caller.wait() == 0, caller.report()
        assert trunk_side.wait() == 0, trunk_side.report()
        assert request_uri(trunk_side.received("INVITE")[0]).startswith(f"sip:{REG_USER}@{REGISTERED}:5060")
    row = cdr(db, call_id_of(caller))
    assert (row["direction"], row["node"], row["trunk_id"]) == ("inbound", "resil-b", world["registered"][1])


def test_calls_through_both_nodes_leave_exactly_one_cdr_each(nodes: tuple[Node, Node], tmp_path: Path,
                                                            db: psycopg.Connection) -> None:
    a, b = nodes
    with vendor("vendor_answer.xml", GATEWAY, tmp_path, calls=60) as gw:
        loads = [call(n, source, tmp_path, hold_ms=100, calls=30, extra=["-r", "15"])
                 for n, source in ((a, LOAD_A), (b, LOAD_B))]
        for load in loads:
            assert load.wait(timeout_s=60) == 0, load.report()
        assert gw.wait(timeout_s=30) == 0, gw.report()
    for load, name in zip(loads, ("resil-a", "resil-b"), strict=True):
        wait_for(lambda load=load: len(cdrs_of(db, load)) >= 30, 20, f"30 CDRs from {name}")
        rows = cdrs_of(db, load)
        assert len(rows) == len({r[0] for r in rows}) == 30, "a CDR lost or doubled"
        assert {r[1] for r in rows} == {name}


# ------------------------------------------------------------------ faults

def test_a_vendor_answering_too_slowly_loses_the_call_to_the_next_after_the_attempt_timeout(
        nodes: tuple[Node, Node], tmp_path: Path, db: psycopg.Connection) -> None:
    a, _ = nodes
    with vendor("vendor_slow.xml", SLOW, tmp_path) as slow, vendor("vendor_answer.xml", BACKUP, tmp_path) as backup:
        uac = call(a, FAILOVER, tmp_path)
        assert uac.wait() == 0, uac.report()
        assert backup.wait() == 0, backup.report()
        assert len(slow.received("INVITE")) >= 1
    row = cdr(db, call_id_of(uac))
    # the slow vendor's 100 Trying comes 2.5 s after its INVITE: had the proxy waited for it (the
    # global 5 s timer), it would have carried the call. The plan's 1 s timeout moved it on first.
    assert [(t["vendor"], t["code"]) for t in row["attempts"]] == [("slow", 408), ("backup", 200)]  # type: ignore[union-attr]


def test_postgres_down_calls_route_on_the_snapshot_and_their_cdrs_arrive_once_it_returns(
        nodes: tuple[Node, Node], servers: tuple[RedisServer, PostgresServer], tmp_path: Path) -> None:
    a, _ = nodes
    _, pg = servers
    pg.stop()
    try:
        with vendor("vendor_answer.xml", GATEWAY, tmp_path, calls=5) as gw:
            load = call(a, LOAD_A, tmp_path, hold_ms=100, calls=5, extra=["-r", "10"])
            assert load.wait(timeout_s=30) == 0, load.report()  # every call routed and answered
            assert gw.wait() == 0, gw.report()
    finally:
        pg.start()
    with psycopg.connect(pg.url, autocommit=True) as conn:
        wait_for(lambda: len(cdrs_of(conn, load)) >= 5, 30, "the CDRs queued while Postgres was down")
        rows = cdrs_of(conn, load)
        assert len(rows) == len({r[0] for r in rows}) == 5


def test_redis_down_refuses_new_calls_lets_calls_in_progress_finish_and_heals_by_itself(
        nodes: tuple[Node, Node], servers: tuple[RedisServer, PostgresServer], tmp_path: Path,
        world: dict[str, tuple[uuid.UUID, uuid.UUID]], store: redis.Redis) -> None:
    a, _ = nodes
    r, pg = servers
    account, trunk = world["a"]
    limits, wallet = Limits(store), Wallet(store)
    workers = group_pids(a.kamailio.pid)  # type: ignore[union-attr]
    started: list[Sipp] = []
    try:
        outage(a, r, tmp_path, trunk, account, limits, started)
    finally:
        for uac in started:
            _stop_group(uac.proc)
    assert group_pids(a.kamailio.pid) == workers, "a worker died or was replaced"  # type: ignore[union-attr]
    # afterwards: the calls that ended during the outage recorded once (spooled, replayed), and
    # with them the counters back at zero and the reservations settled
    with psycopg.connect(pg.url, autocommit=True) as conn:
        for h in started[:2]:
            assert cdr(conn, call_id_of(h), timeout_s=30)["sip_code"] == 200
    wait_for(lambda: limits.active(trunk, account, time.time()) == (0, 0), 20, "the counters to return to zero")
    wait_for(lambda: wallet.reserved(account) == 0, 20, "the reservations to be settled")


def outage(a: Node, r: RedisServer, tmp_path: Path, trunk: uuid.UUID, account: uuid.UUID, limits: Limits,
           started: list[Sipp]) -> None:
    with vendor("vendor_answer.xml", GATEWAY, tmp_path, calls=100):
        held = [call(a, LOAD_A, tmp_path, port=5070 + i, hold_ms=3000) for i in range(2)]
        started += held
        wait_for(lambda: limits.active(trunk, account, time.time())[0] == 2, 10, "two calls in progress")
        r.stop()
        try:
            refused = sipp(scenario_expecting(503, tmp_path), LOAD_A, tmp_path, local_port=5080, remote=a.target,
                           service=DIALED, keys={"caller": CALLER})
            assert refused.wait() == 0, refused.report()
            assert "SIP/2.0 503 Service Unavailable" in refused.trace() and "Retry-After: 5" in refused.trace()
            # a steady load goes on through the outage: refused while Redis is away, answered after
            load = sipp(any_outcome(503, tmp_path), LOAD_A, tmp_path, local_port=5090, remote=a.target,
                        service=DIALED, keys={"caller": CALLER}, calls=40, hold_ms=200, extra=["-r", "5"])
            started.append(load)
            for h in held:  # their BYEs cross the outage: the calls end normally on both sides
                assert h.wait() == 0, h.report()
        finally:
            r.start()
        assert load.wait(timeout_s=60) == 0, load.report()
        assert load.received("SIP/2.0 503") and load.received("SIP/2.0 200"), "refused while down, answered after"


def test_kamailio_killed_mid_call_leaks_nothing_beyond_the_calls_own_expiry(
        world: dict[str, tuple[uuid.UUID, uuid.UUID]], servers: tuple[RedisServer, PostgresServer],
        e2e_env: dict[str, str], tmp_path: Path, store: redis.Redis, db: psycopg.Connection,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    limits, wallet = Limits(store), Wallet(store)
    pre_account, pre_trunk = world["prepaid"]
    b_account, b_trunk = world["b"]
    # 30 s
    wallet.topup(pre_account, to_micros(Decimal("0.30")), "resil-topup", "2026-11-22T00:00:00+00:00", seed_micros=0)
    env = node_env(servers, "resil-c")
    with kamailio_node(e2e_env, NODE_C, tmp_path_factory.mktemp("resil-c1"), extra_env=env) as c, \
            vendor("vendor_answer.xml", GATEWAY, tmp_path, calls=10):
        finished = call(c, LOAD_B, tmp_path, calls=3, hold_ms=100, extra=["-r", "10"])
        assert finished.wait() == 0, finished.report()
        held = [call(c, LOAD_B, tmp_path, port=5071, hold_ms=30000),
                call(c, PREPAID, tmp_path, port=5072, hold_ms=30000)]
        wait_for(lambda: limits.active(b_trunk, b_account, time.time())[0] == 1
                 and limits.active(pre_trunk, pre_account, time.time())[0] == 1, 10, "two calls in progress")
        killed_at = time.time()
        os.killpg(c.kamailio.pid, signal.SIGKILL)  # type: ignore[union-attr]
        c.kamailio.wait()  # type: ignore[union-attr]
        for h in held:
            _stop_group(h.proc)
    # CDRs already written to the stream are not lost: the three finished calls, once each
    wait_for(lambda: len(cdrs_of(db, finished)) >= 3, 20, "the finished calls' CDRs")
    assert len({r[0] for r in cdrs_of(db, finished)}) == len(cdrs_of(db, finished)) == 3
    # the calls in progress died with the node: their places and funds are held until their own
    # expiry (their longest possible life: 30 s of funds for the prepaid call), then free
    held_ids = [call_id_of(h) for h in held]
    # each trunk has one call left in progress: its place is held under the node's identity for
    # it (its CDR id), not under its Call-ID
    for account, trunk, life in ((b_account, b_trunk, 14_400), (pre_account, pre_trunk, 30)):
        (expiry,) = limits.expiries(trunk).values()
        assert expiry <= killed_at + life + 120 + 60 + 1
        assert limits.active(trunk, account, expiry - 1)[0] == 1
        assert limits.active(trunk, account, expiry + 1) == (0, 0)
    (lapse,) = wallet.expiries(pre_account).values()
    assert lapse <= killed_at + 30 + 120 + 60 + 1, "the reservation outlives the call it pays for"
    probe_call = uuid.uuid4()
    probe = wallet.reserve(probe_call, pre_account, lapse + 1, 60, 1, to_micros(Decimal("1")), 0)
    assert probe.micros == to_micros(Decimal("0.30")), "the dead call's funds came back"
    wallet.settle(probe_call, pre_account, 0, "2026-11-22T00:00:00+00:00")
    assert db.execute("SELECT count(*) FROM cdr.cdrs WHERE call_id = ANY(%s)", (held_ids,)).fetchone()[0] == 0
    # a restarted node serves calls at once
    with kamailio_node(e2e_env, NODE_C, tmp_path_factory.mktemp("resil-c2"), extra_env=env) as again, \
            vendor("vendor_answer.xml", GATEWAY, tmp_path):
        after = call(again, LOAD_B, tmp_path)
        assert after.wait() == 0, after.report()
        assert "unhandled" not in again.log_text() and "Traceback" not in again.log_text()


def test_no_python_exception_escaped(nodes: tuple[Node, Node]) -> None:
    for n in nodes:
        log = n.log_text()
        assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
