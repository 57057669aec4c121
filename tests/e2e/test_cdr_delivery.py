"""CDR delivery under failure, with real processes: the companion killed with -9 in the middle of a
batch, and Redis stopped while calls go on (CDRs spooled, delivered when it is back)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine import bootstrap
from routing_engine.domain.cdr import CdrRecord
from routing_engine.ops import stack
from routing_engine.settings import Settings, load_settings
from tests.e2e import provision
from tests.e2e.harness import (
    Node,
    _stop_group,
    call_id_of,
    kamailio_node,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

WARP_CLI = [sys.executable, "-m", "routing_engine.entrypoints.cli"]

pytestmark = pytest.mark.e2e

BACKLOG = 20_000
REDIS_IP, REDIS_PORT = "127.0.0.155", 6391   # a Redis of this test's own, stopped and started by it
PROXY, CUSTOMER, VENDOR = "127.0.0.156", "127.0.0.157", "127.0.0.158"
DIALED, CALLER = "12125551234", "13055550100"


def companion(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        return subprocess.Popen([*WARP_CLI, "companion"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


# ------------------------------------------------------------------ kill -9 mid-batch

def test_companion_killed_mid_batch_loses_nothing_and_duplicates_nothing(
        e2e_env: dict[str, str], settings: Settings, module_db: psycopg.Connection, clean_redis: redis.Redis,
        tmp_path: Path) -> None:
    provision.reset(module_db)
    now = datetime.now(UTC)
    pipe = clean_redis.pipeline(transaction=False)
    for n in range(BACKLOG):
        record = CdrRecord(cdr_id=uuid.uuid4(), call_id=f"backlog-{n}", node="test-node", invite_at=now,
                           sip_code=200, duration_s=n % 300)
        pipe.xadd(settings.cdr.stream, record.to_fields())  # type: ignore[arg-type]
    pipe.execute()
    env = {**e2e_env, "WARP_CDR__BATCH_SIZE": "500", "WARP_CDR__BATCH_SECONDS": "10"}
    rows = lambda: module_db.execute("SELECT count(*) FROM cdr.cdrs").fetchone()[0]  # noqa: E731
    pending = lambda: clean_redis.xpending(settings.cdr.stream, settings.cdr.group)["pending"]  # noqa: E731

    first = companion(env, tmp_path / "companion-1.log")
    try:
        # some batches committed and one read but not acknowledged: freeze it there, then kill it
        wait_for(lambda: rows() >= 2000 and pending() > 0, 60, "a batch in flight after some committed")
        os.killpg(first.pid, signal.SIGSTOP)
        in_flight, written = pending(), rows()
        assert 0 < in_flight <= 500 and written < BACKLOG
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        _stop_group(first)
    assert pending() == in_flight  # nothing acknowledged it on the way down

    second = companion(env, tmp_path / "companion-2.log")
    try:
        wait_for(lambda: rows() >= BACKLOG and clean_redis.xlen(settings.cdr.stream) == 0, 120,
                 "the whole backlog written")
    finally:
        _stop_group(second)
    total, distinct, calls = module_db.execute(
        "SELECT count(*), count(DISTINCT cdr_id), count(DISTINCT call_id) FROM cdr.cdrs").fetchone()
    assert (total, distinct, calls) == (BACKLOG, BACKLOG, BACKLOG)
    assert pending() == 0


# ------------------------------------------------------------------ Redis down: spool, then delivery

@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A redis-server of this test's own (never the session's shared one); stopped at the end."""
    directory = tmp_path / "redis"
    directory.mkdir()
    state: dict[str, object] = {"proc": None}

    def start() -> None:
        proc = subprocess.Popen(["/usr/bin/redis-server", "--port", str(REDIS_PORT), "--bind", REDIS_IP,
                                 "--save", "", "--appendonly", "no", "--dir", str(directory)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        state["proc"] = proc
        wait_for(lambda: stack.port_open(REDIS_PORT, REDIS_IP) or proc.poll() is not None, 10, "own Redis")
        assert proc.poll() is None, "own Redis did not start"

    def stop() -> None:
        proc = state["proc"]
        if isinstance(proc, subprocess.Popen):
            _stop_group(proc)
        state["proc"] = None

    state["start"], state["stop"] = start, stop
    start()
    try:
        yield state
    finally:
        stop()


@pytest.fixture
def spool_node(own_redis: dict[str, object], e2e_env: dict[str, str], module_db: psycopg.Connection,
               tmp_path: Path) -> Iterator[Node]:
    provision.reset(module_db)
    v = provision.vendor(module_db, "spool-vendor", VENDOR, {"1": "0.0050"})
    provision.customer(module_db, "BAN-SPOOL", f"{CUSTOMER}/32", provision.plan(module_db, "spool", [v]))
    env = {**e2e_env, "REDIS_URL": f"redis://{REDIS_IP}:{REDIS_PORT}/0"}
    settings = load_settings(environ={**env, "WARP_NODE__NAME": "spool-node"})
    spool = bootstrap.spool_dir(settings)
    for path in spool.glob("*"):
        path.unlink()
    with kamailio_node(env, PROXY, tmp_path / "node", extra_env={"WARP_NODE__NAME": "spool-node"}) as node:
        yield node


def spooled(node: Node) -> str:
    spool = bootstrap.spool_dir(load_settings(environ=node.env))
    return "".join(p.read_text() for p in spool.glob("*") if p.is_file())


def test_cdrs_are_spooled_while_redis_is_down_and_delivered_once_when_it_returns(
        spool_node: Node, own_redis: dict[str, object], module_db: psycopg.Connection, tmp_path: Path) -> None:
    node = spool_node
    with vendor("vendor_answer.xml", VENDOR, tmp_path) as carrier:
        answered = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                        keys={"caller": CALLER}, hold_ms=2000)
        wait_for(lambda: carrier.received("ACK"), 10, "the call answered")
        own_redis["stop"]()  # type: ignore[operator]
        assert answered.wait() == 0, answered.report()  # a call in progress finishes without Redis
        assert carrier.wait() == 0
    answered_id = call_id_of(answered)
    wait_for(lambda: answered_id in spooled(node), 10, "the answered call's CDR in the spool")

    refused = sipp(scenario_expecting(503, tmp_path), CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                   keys={"caller": CALLER})
    assert refused.wait() == 0, refused.report()  # money is never guessed: refused while Redis is down
    refused_id = call_id_of(refused)
    wait_for(lambda: refused_id in spooled(node), 10, "the refused call's CDR in the spool")
    ids = (answered_id, refused_id)
    stored = lambda: module_db.execute(  # noqa: E731
        "SELECT call_id, sip_code FROM cdr.cdrs WHERE call_id = ANY(%s) ORDER BY sip_code", (list(ids),)).fetchall()
    assert stored() == []

    own_redis["start"]()  # type: ignore[operator]
    wait_for(lambda: len(stored()) == 2, 90, "both spooled CDRs delivered to Postgres")
    assert stored() == [(answered_id, 200), (refused_id, 503)]
    wait_for(lambda: spooled(node) == "", 10, "the spool emptied")
    back = redis.Redis(host=REDIS_IP, port=REDIS_PORT, decode_responses=True)
    stream = load_settings(environ=node.env).cdr.stream
    wait_for(lambda: back.xlen(stream) == 0, 10, "the stream drained")
    back.close()
    assert len(stored()) == 2  # delivered once, nothing left to deliver again
