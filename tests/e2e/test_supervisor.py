"""The embedded stack as a supervisor an operator can trust (issue 16): `warp status` sees the node
`warp run` serves, a half-dead node is found and restarted by `warp start`, `warp stop` stops what
the node started, and Kamailio's Python does not follow the caller's PATH.

Everything runs for real (Kamailio, rtpengine, the companion, Postgres, Redis) on 127.0.8.x, and
every process a test starts is stopped when it ends, also on failure.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.adapters.sipcheck import options_ping, wait_until_answering
from routing_engine.ops import demo, stack
from routing_engine.settings import PROJECT_ROOT, Settings, load_settings
from tests.e2e import provision
from tests.e2e.harness import _stop_group, kamailio_node, wait_for

pytestmark = pytest.mark.e2e

WARP = [sys.executable, "-m", "routing_engine.entrypoints.cli"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_env(base: dict[str, str], address: str, name: str) -> dict[str, str]:
    """A node on ``address`` with its own rtpengine (ng control and media on the same address)."""
    return {**base, "WARP_SIP__LISTEN": f"udp:{address}:5060", "WARP_SIP__CHILDREN": "2",
            "WARP_SIP__TCP_CHILDREN": "1", "WARP_KAMAILIO__SHM_MB": "64", "WARP_NODE__NAME": name,
            "WARP_MEDIA__ENABLED": "true", "WARP_MEDIA__MANAGED": "true",
            "WARP_MEDIA__NG_ADDRESS": f"{address}:2223", "WARP_MEDIA__INTERFACE": address,
            "WARP_MEDIA__PORT_MIN": "48000", "WARP_MEDIA__PORT_MAX": "48099"}


def _warp(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WARP, *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=PROJECT_ROOT)


def _alive(pid: int) -> bool:
    """Alive and not a zombie waiting for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _pids(cmdline: str, environ: str | None = None) -> list[int]:
    """Live processes whose command line (and environment, if given) holds these texts."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not _alive(int(entry.name)):
            continue
        with contextlib.suppress(OSError):
            if cmdline not in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                continue
            if environ is None or f"{environ}\0".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def _only(pids: list[int]) -> int:
    assert len(pids) == 1, pids
    return pids[0]


def _record(settings: Settings) -> stack.NodeRecord:
    record = stack.read_record(settings.data_dir / "run" / settings.node.name)
    assert record is not None, "no node record"
    return record


@contextlib.contextmanager
def _stopped_at_the_end(env: dict[str, str]) -> Iterator[None]:
    """Whatever the test leaves running of this node, `warp stop` stops it; and if even that fails,
    the processes named in its record are killed."""
    settings = load_settings(environ=env)
    try:
        yield
    finally:
        result = _warp(env, "stop", timeout=90)
        print(f"--- warp stop ---\n{result.stdout}{result.stderr}")
        record = stack.read_record(settings.data_dir / "run" / settings.node.name)
        if record is not None:
            for process in record.processes.values():
                stack.stop_process(process, timeout_s=5)


# ------------------------------------------------------------------ status sees `warp run`

@pytest.fixture(scope="module")
def demo_world(module_db: psycopg.Connection, clean_redis: redis.Redis) -> None:
    provision.reset(module_db)
    demo.load(module_db)


def test_status_sees_the_node_warp_run_serves_and_stop_ends_that_run(
        e2e_env: dict[str, str], demo_world: None, tmp_path: Path) -> None:
    address = "127.0.8.11"
    env = _node_env(e2e_env, address, "super-run")
    log = tmp_path / "warp-run.log"
    with open(log, "wb") as out:
        run = subprocess.Popen([*WARP, "run", "--no-demo"], env=env, stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=PROJECT_ROOT)
    try:
        with _stopped_at_the_end(env):
            assert wait_until_answering(address, 5060, 60, is_alive=lambda: run.poll() is None), log.read_text()
            status = _warp(env, "status")
            assert status.returncode == 0, status.stdout + status.stderr
            for part in ("kamailio", "cdr-emitter", "rtpengine", "postgres", "redis"):
                assert re.search(rf"^{part}\s+running", status.stdout, re.M), status.stdout
            assert f"warp run (pid {run.pid})" in status.stdout, status.stdout

            # `warp stop` asks the foreground run to stop what it started, and it does
            stopped = _warp(env, "stop")
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            assert run.wait(timeout=30) == 0, log.read_text()
            assert options_ping(address, 5060, timeout_s=0.5) is None
            after = _warp(env, "status")
            assert after.returncode == 3 and re.search(r"^kamailio\s+stopped", after.stdout, re.M), after.stdout
    finally:
        _stop_group(run)
        print(f"--- warp run ---\n{log.read_text()[-4000:] if log.exists() else ''}")


# ------------------------------------------------------------------ a half-dead node

@pytest.fixture
def own_stack(e2e_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The environment of a node whose Postgres and Redis `warp start` starts itself, in a data
    folder of its own (not under tmp_path: the postgres user must reach it; see test_local_stack)."""
    data_dir = Path(tempfile.mkdtemp(prefix="warp-supervisor-"))
    env = {**_node_env(e2e_env, "127.0.8.12", "super-start"), "WARP_STACK__DATA_DIR": str(data_dir),
           "WARP_STACK__POSTGRES_PORT": str(_free_port()), "WARP_STACK__REDIS_PORT": str(_free_port()),
           "WARP_DATABASE__NAME": "warp", "WARP_REDIS__DB": "0"}
    settings = load_settings(environ=env)
    try:
        yield env
    finally:
        stack.down(settings)  # only if a failed test left them: the test itself asserts stop did it
        shutil.rmtree(data_dir, ignore_errors=True)


def test_start_finds_what_is_left_of_a_node_whose_kamailio_was_killed_and_stop_stops_everything(
        own_stack: dict[str, str]) -> None:
    env = own_stack
    settings = load_settings(environ=env)
    with _stopped_at_the_end(env):
        first = _warp(env, "start", "--no-demo")
        assert first.returncode == 0, first.stdout + first.stderr
        assert options_ping("127.0.8.12", 5060) == 200
        assert stack.postgres_running(settings) and stack.redis_running(settings)
        # found from what runs, not from the node's record: the test does not trust what it tests
        run_dir = settings.data_dir / "run" / settings.node.name
        kamailio = int((run_dir / "kamailio.pid").read_text())  # Kamailio's own pid file
        companion = _pids(cmdline="cdr-emitter", environ=f"WARP_STACK__DATA_DIR={settings.data_dir}")
        survivors = {"rtpengine": _only(_pids(cmdline="--listen-ng=127.0.8.12:2223")), "cdr-emitter": _only(companion)}

        os.kill(kamailio, signal.SIGKILL)
        wait_for(lambda: not _alive(kamailio), 10, "the killed Kamailio to be gone")
        status = _warp(env, "status")
        assert status.returncode == 3 and re.search(r"^kamailio\s+stopped", status.stdout, re.M), status.stdout

        again = _warp(env, "start", "--no-demo")
        log = settings.data_dir / "log" / settings.node.name / "kamailio.log"
        assert again.returncode == 0, again.stdout + again.stderr + (log.read_text()[-4000:] if log.exists() else "")
        assert "already running" not in again.stdout
        # it says what it found of its node: the survivors by name and pid, Kamailio not running
        found = again.stdout
        assert re.search(rf"rtpengine running \(pid {survivors['rtpengine']}\)", found), found
        assert re.search(rf"cdr-emitter running \(pid {survivors['cdr-emitter']}\)", found), found
        assert re.search(r"kamailio not running", found), found
        assert options_ping("127.0.8.12", 5060) == 200
        restarted = _record(settings)
        assert restarted.processes["kamailio"].pid != kamailio
        assert _warp(env, "status").returncode == 0
        # the restart keeps the fact that this node's start brought Postgres and Redis up
        assert restarted.servers == stack.Started(postgres=True, redis=True)

        stopped = _warp(env, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert options_ping("127.0.8.12", 5060, timeout_s=0.5) is None
    for pid in (*survivors.values(), *(p.pid for p in restarted.processes.values())):
        assert not _alive(pid), pid
    assert not stack.postgres_running(settings) and not stack.redis_running(settings), stopped.stdout


def test_servers_warp_exec_started_stay_up_for_a_node_started_meanwhile_whose_stop_stops_them(
        own_stack: dict[str, str]) -> None:
    env = own_stack
    settings = load_settings(environ=env)
    with _stopped_at_the_end(env):
        # `make test` in one terminal, `make start` in another while it runs
        result = _warp(env, "exec", "--", *WARP, "start", "--no-demo")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "the embedded servers stay up: node super-start runs on them" in result.stdout, result.stdout
        assert stack.postgres_running(settings) and stack.redis_running(settings)
        assert options_ping("127.0.8.12", 5060) == 200
        assert _record(settings).servers == stack.Started(postgres=True, redis=True)
        stopped = _warp(env, "stop")
        assert stopped.returncode == 0 and "Postgres and Redis stopped" in stopped.stdout, stopped.stdout
    assert not stack.postgres_running(settings) and not stack.redis_running(settings)


def test_a_pid_in_the_record_that_now_belongs_to_another_program_is_not_taken_for_ours(
        e2e_env: dict[str, str], tmp_path: Path) -> None:
    env = _node_env(e2e_env, "127.0.8.13", "super-reused")
    settings = load_settings(environ=env)
    run_dir = settings.data_dir / "run" / settings.node.name
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        # what a record says after a reboot: Kamailio had the pid a stranger has now
        kamailio_argv = tuple(stack.kamailio_command(settings, tmp_path / "run"))
        stack.write_record(run_dir, stack.NodeRecord(
            owner=None, processes={"kamailio": stack.Process(stranger.pid, kamailio_argv, 1)},
            servers=stack.Started()))
        status = _warp(env, "status")
        assert status.returncode == 3 and re.search(r"^kamailio\s+stopped", status.stdout, re.M), status.stdout
        stopped = _warp(env, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert stranger.poll() is None, "warp stop killed a process that was not the node's"
        assert stack.read_record(run_dir) is None
    finally:
        stranger.kill()
        stranger.wait()
        stack.remove_record(run_dir)


# ------------------------------------------------------------------ Kamailio's Python and PATH

def _fake_prefix(root: Path) -> Path:
    """A 'Python installation' whose interpreter exits 1 and whose standard library is empty apart
    from the landmark (lib/python3.11/os.py) an embedded interpreter looks for next to it."""
    (root / "lib" / "python3.11").mkdir(parents=True)
    (root / "lib" / "python3.11" / "os.py").write_text("raise ImportError('not the real os module')\n")
    binary = root / "bin"
    binary.mkdir()
    script = binary / "python3.11"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)
    (binary / "python3").symlink_to("python3.11")
    return binary


def _other_interpreter(root: Path) -> Path:
    """A folder whose python3 and python3.11 are another installation's (pyenv's, when present)."""
    candidates = sorted(Path.home().glob(".pyenv/versions/3.11*/bin/python3.11"))
    if not candidates:
        pytest.skip("no other Python 3.11 installation on this machine")
    binary = root / "bin"
    binary.mkdir(parents=True)
    for name in ("python3", "python3.11"):
        (binary / name).symlink_to(candidates[-1])
    return binary


@pytest.mark.parametrize("make_first", [_fake_prefix, _other_interpreter], ids=["fake", "other-install"])
def test_kamailio_starts_and_answers_when_another_python3_comes_first_in_path(
        e2e_env: dict[str, str], demo_world: None, tmp_path: Path, make_first: object) -> None:
    first = make_first(tmp_path / "python")  # type: ignore[operator]
    path = f"{first}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    assert shutil.which("python3", path=path) == str(first / "python3")
    with kamailio_node({**e2e_env, "PATH": path}, "127.0.8.14", tmp_path / "node") as node:
        assert options_ping(node.address, node.port) == 200
