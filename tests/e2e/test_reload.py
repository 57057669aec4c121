"""Routing operations end to end: hot reload under traffic, refused edits, rollback, gateway health."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.snapshots import SnapshotStore
from routing_engine.settings import load_settings
from tests.e2e import provision
from tests.e2e.harness import Node, Sipp, explain, kamailio_node, sipp, vendor, wait_for

WARP_CLI = [sys.executable, "-m", "routing_engine.entrypoints.cli"]


pytestmark = pytest.mark.e2e

PROXY, CUSTOMER, VENDOR_A, VENDOR_B = "127.0.0.14", "127.0.0.15", "127.0.0.16", "127.0.0.17"
DIALED, CALLER = "12125551234", "13055550100"


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, object]:
    provision.reset(module_db)
    a = provision.vendor(module_db, "alpha", VENDOR_A, {"1": "0.0050"})
    b = provision.vendor(module_db, "bravo", VENDOR_B, {"1": "0.0090"})
    provision.customer(module_db, "R-1", f"{CUSTOMER}/32", provision.plan(module_db, "reload", [a, b]))
    return {"a": a, "b": b}


@pytest.fixture(scope="module")
def node(world: dict[str, object], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("reload-node"), extra_env={
            "WARP_HEALTH__PROBE_INTERVAL_MS": "300", "WARP_HEALTH__PROBE_TIMEOUT_MS": "200"}) as n:
        yield n


@pytest.fixture(scope="module")
def store(node: Node) -> SnapshotStore:
    settings = load_settings(environ=node.env)
    store = SnapshotStore(settings.data_dir / "snapshots" / settings.node.name)
    wait_for(store.current, 10, "the companion's first publication")
    return store


def companion_log(node: Node) -> str:
    path = node.log_path.parent / "cdr-emitter.log"
    return path.read_text(errors="replace") if path.exists() else ""


def invite_times(uas: Sipp) -> list[float]:
    """When each INVITE reached this SIPp (its own clock, the same machine's)."""
    pattern = r"-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n\w+ message received \[\d+\] bytes :\n\nINVITE "
    stamps = re.findall(pattern, uas.trace())
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S.%f").timestamp() for s in stamps]


def one_call(node: Node, tmp_path: Path, gateway: str) -> None:
    with vendor("vendor_answer.xml", gateway, tmp_path) as uas:
        uac = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert uas.wait() == 0, uas.report()


def test_an_sql_edit_takes_effect_within_a_second_under_traffic_with_no_failed_call(
        node: Node, store: SnapshotStore, world: dict[str, object], module_db: psycopg.Connection,
        tmp_path: Path) -> None:
    before = store.current().version  # type: ignore[union-attr]
    a = sipp("vendor_answer.xml", VENDOR_A, tmp_path, calls=None)
    b = sipp("vendor_answer.xml", VENDOR_B, tmp_path, calls=None)
    try:
        load = sipp("customer_call.xml", CUSTOMER, tmp_path, remote=node.target, service=DIALED,
                    keys={"caller": CALLER}, calls=240, hold_ms=100, extra=["-r", "30"])
        wait_for(lambda: len(invite_times(a)) >= 60, 20, "traffic to flow to alpha")
        module_db.execute("UPDATE routing.rates SET rate = 0.0010 WHERE provider_id = %s", (world["b"],))
        edited_at = time.time()
        assert load.wait(timeout_s=60) == 0, load.report()  # every call of the run completed
    finally:
        for uas in (a, b):
            uas.proc.terminate()
            uas.proc.wait()
    assert store.current().version != before  # type: ignore[union-attr]
    to_a, to_b = invite_times(a), invite_times(b)
    assert len(to_a) + len(to_b) == 240 and to_b, (len(to_a), len(to_b))
    print(f"last call on the old version {max(to_a) - edited_at:+.3f} s after the commit, first on the new "
          f"{min(to_b) - edited_at:+.3f} s; {len(to_a)} + {len(to_b)} calls, none failed")
    assert max(to_a) < edited_at + 1.0, f"alpha still chosen {max(to_a) - edited_at:.3f} s after the edit"
    assert min(to_b) > edited_at - 0.05


def test_an_invalid_edit_is_refused_and_the_last_good_snapshot_keeps_routing(
        node: Node, store: SnapshotStore, world: dict[str, object], module_db: psycopg.Connection,
        tmp_path: Path) -> None:
    good = store.current().version  # type: ignore[union-attr]
    # alpha made cheapest (it would take the calls), in the same transaction as a plan with no vendors
    with module_db.transaction():
        module_db.execute("UPDATE routing.rates SET rate = 0.0001 WHERE provider_id = %s", (world["a"],))
        module_db.execute("INSERT INTO routing.routing_plans (name) VALUES ('empty')")
    wait_for(lambda: "refused" in companion_log(node), 10, "the companion to refuse the edit")
    assert "routing plan empty: has no vendors" in companion_log(node)
    assert store.current().version == good  # type: ignore[union-attr]
    one_call(node, tmp_path, VENDOR_B)  # still bravo, as before the bad edit
    with module_db.transaction():
        module_db.execute("DELETE FROM routing.routing_plans WHERE name = 'empty'")
        module_db.execute("UPDATE routing.rates SET rate = 0.0050 WHERE provider_id = %s", (world["a"],))


def test_rollback_puts_the_previous_version_back_in_service(
        node: Node, store: SnapshotStore, world: dict[str, object], module_db: psycopg.Connection,
        tmp_path: Path) -> None:
    start = store.current().version  # type: ignore[union-attr]
    module_db.execute("UPDATE routing.rates SET rate = 0.0001 WHERE provider_id = %s", (world["a"],))
    wait_for(lambda: store.current().version != start, 10, "the edit to be published")  # type: ignore[union-attr]
    one_call(node, tmp_path, VENDOR_A)
    rolled = subprocess.run([*WARP_CLI, "snapshot", "rollback"], env=node.env,
                            capture_output=True, text=True, timeout=30)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert store.current().version == start  # type: ignore[union-attr]
    wait_for(lambda: time.time() > store.current().published_at.timestamp() + 0.3, 2, "workers to look")  # type: ignore[union-attr]
    one_call(node, tmp_path, VENDOR_B)
    status = subprocess.run([*WARP_CLI, "snapshot", "status"], env=node.env,
                            capture_output=True, text=True, timeout=30)
    assert f"version    {start}" in status.stdout


class OptionsResponder:
    """A gateway that answers OPTIONS while ``alive`` is set."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, 5060))
        self.sock.settimeout(0.1)
        self.alive = threading.Event()
        self.alive.set()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            text = data.decode(errors="replace")
            if text.startswith("OPTIONS") and self.alive.is_set():
                keep = [ln for ln in text.split("\r\n") if ln.lower().startswith(("via:", "from:", "to:", "call-id:",
                                                                                  "cseq:"))]
                self.sock.sendto(("\r\n".join(["SIP/2.0 200 OK", *keep, "Content-Length: 0", "", ""])).encode(), addr)

    def close(self) -> None:
        self.done.set()
        self.thread.join()
        self.sock.close()


def test_a_dead_gateway_leaves_the_candidates_and_returns_when_it_answers(
        node: Node, store: SnapshotStore, world: dict[str, object], module_db: psycopg.Connection,
        tmp_path: Path, clean_redis: redis.Redis) -> None:
    module_db.execute("UPDATE routing.rates SET rate = 0.0001 WHERE provider_id = %s", (world["a"],))
    gateway = OptionsResponder(VENDOR_A)
    try:
        module_db.execute("UPDATE routing.provider_gateways SET probe = true WHERE provider_id = %s", (world["a"],))

        def first_choice() -> str:
            return str(explain(node.env, "--source", CUSTOMER, "--to", DIALED)["routes"][0]["vendor"])

        wait_for(lambda: first_choice() == "alpha", 10, "alpha to be chosen while it answers")
        gateway.alive.clear()
        went_down = time.monotonic()
        wait_for(lambda: first_choice() == "bravo", 10, "alpha to leave the candidates")
        assert time.monotonic() - went_down < 5
        assert "alpha-gw" in companion_log(node) and "stopped answering OPTIONS" in companion_log(node)
        one_call(node, tmp_path, VENDOR_B)
        gateway.alive.set()
        wait_for(lambda: first_choice() == "alpha", 10, "alpha to return")
    finally:
        module_db.execute("UPDATE routing.provider_gateways SET probe = false WHERE provider_id = %s", (world["a"],))
        gateway.close()


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
