"""The README's promises: `make run` (warp run) serves the demo call and Ctrl-C stops what it
started; `make start` / `make stop` do the same in the background."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.sipcheck import options_ping, wait_until_answering
from routing_engine.ops import demo, stack
from routing_engine.settings import PROJECT_ROOT, Settings
from tests.e2e import provision
from tests.e2e.harness import _stop_group, wait_for

pytestmark = pytest.mark.e2e

ADDRESS = "127.0.0.3"
WARP = [sys.executable, "-m", "routing_engine.entrypoints.cli"]


@pytest.fixture(scope="module")
def demo_world(module_db: psycopg.Connection, clean_redis: redis.Redis) -> None:
    provision.reset(module_db)
    demo.load(module_db)


@pytest.fixture
def run_env(e2e_env: dict[str, str], demo_world: None) -> dict[str, str]:
    return {**e2e_env, "WARP_SIP__LISTEN": f"udp:{ADDRESS}:5060,tcp:{ADDRESS}:5060",
            "WARP_SIP__CHILDREN": "2", "WARP_CDR__BATCH_SECONDS": "0.1",
            "WARP_NODE__NAME": "demo-node"}


@pytest.fixture
def warp_run(run_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(tmp_path / "warp-run.log", "wb") as out:
        proc = subprocess.Popen([*WARP, "run", "--no-demo"], env=run_env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=PROJECT_ROOT)
    try:
        if not wait_until_answering(ADDRESS, 5060, 60, is_alive=lambda: proc.poll() is None):
            raise AssertionError((tmp_path / "warp-run.log").read_text())
        yield proc
    finally:
        _stop_group(proc)
        print((tmp_path / "warp-run.log").read_text()[-4000:])


def demo_call(run_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "demo-call.sh")],
                          env={**run_env, "PROXY": f"{ADDRESS}:5060", "HOLD_MS": "500"},
                          capture_output=True, text=True, timeout=60)


def test_warp_run_serves_the_demo_call_and_ctrl_c_stops_what_it_started(
        warp_run: subprocess.Popen[bytes], run_env: dict[str, str], module_db: psycopg.Connection,
        settings: Settings) -> None:
    result = demo_call(run_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "200 OK" in result.stdout and "127.0.0.20" in result.stdout
    call_id = re.search(r"Call-ID (\S+)", result.stdout).group(1)  # type: ignore[union-attr]
    row = wait_for(lambda: module_db.execute(
        "SELECT sip_code, to_e164, duration_s FROM cdr.cdrs WHERE call_id = %s", (call_id,)).fetchone(),
        10, "the demo call's CDR")
    assert row[0] == 200 and row[1] == "+12125551234" and row[2] >= 1

    os.killpg(warp_run.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert warp_run.wait(timeout=30) == 0
    assert options_ping(ADDRESS, 5060, timeout_s=0.5) is None
    leftovers = subprocess.run(["pgrep", "-f", f"udp:{ADDRESS}:5060"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    # it did not start Postgres (the test run did), so it left it running
    assert stack.postgres_running(settings)


def test_start_and_stop_run_the_node_in_the_background(run_env: dict[str, str], settings: Settings) -> None:
    started = subprocess.run([*WARP, "start", "--no-demo"], env=run_env, capture_output=True,
                             text=True, timeout=90, cwd=PROJECT_ROOT)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert options_ping(ADDRESS, 5060) == 200
        status = subprocess.run([*WARP, "status"], env=run_env, capture_output=True, text=True)
        assert re.search(r"kamailio\s+running", status.stdout) and status.returncode == 0
    finally:
        stopped = subprocess.run([*WARP, "stop"], env=run_env, capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert options_ping(ADDRESS, 5060, timeout_s=0.5) is None
    assert stack.postgres_running(settings) and stack.redis_running(settings)
