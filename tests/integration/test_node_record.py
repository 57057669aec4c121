"""A pid in the node's record is trusted only while it names the process the record saw start,
and what a dead process leaves of its group is found and stopped (real processes, no servers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from routing_engine.ops import stack
from tests.e2e.harness import wait_for

# a leader that forks a worker running the same program, as Kamailio does
FORKING = [sys.executable, "-c", "import os, time\nos.fork()\ntime.sleep(120)\n"]


@pytest.fixture
def forking() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(FORKING, start_new_session=True)
    try:
        yield proc
    finally:
        stack.stop_group(proc, timeout_s=5)
        for pid in _group(proc.pid):  # the forked worker, if a test left it
            os.kill(pid, signal.SIGKILL)


def _group(pgid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_a_process_is_ours_while_its_pid_names_the_program_the_record_saw_start(
        forking: subprocess.Popen[bytes]) -> None:
    process = stack.identify_started(forking.pid, FORKING)
    assert process is not None and process.argv == tuple(FORKING)
    assert stack.is_ours(process)
    # the same pid taken by another program, or started at another time, is not ours
    assert not stack.is_ours(stack.Process(process.pid, ("/usr/sbin/kamailio",), process.start_ticks))
    assert not stack.is_ours(stack.Process(process.pid, process.argv, process.start_ticks + 1))


def test_what_a_killed_leader_leaves_of_its_group_is_found_and_stopped(forking: subprocess.Popen[bytes]) -> None:
    process = stack.identify_started(forking.pid, FORKING)
    assert process is not None
    members = wait_for(lambda: len(stack.group_members(process)) == 2 and stack.group_members(process), 10,
                       "the leader and its worker")
    assert process.pid in members
    os.kill(process.pid, signal.SIGKILL)
    forking.wait()  # reaped: a zombie would not count anyway
    assert not stack.is_ours(process)
    (worker,) = stack.group_members(process)
    assert worker != process.pid
    assert stack.stop_process(process, timeout_s=5) == [worker]
    wait_for(lambda: not _group(process.pid), 10, "the worker to be gone")
    assert stack.group_members(process) == [] and stack.stop_process(process) == []


def test_a_process_of_another_program_in_the_group_is_left_alone() -> None:
    # the leader starts another program (sleep), which stays in its group when the leader dies
    argv = [sys.executable, "-c", "import subprocess, time\nsubprocess.Popen(['sleep', '120'])\ntime.sleep(120)\n"]
    leader = subprocess.Popen(argv, start_new_session=True)
    try:
        process = stack.identify_started(leader.pid, argv)
        assert process is not None
        (stranger,) = wait_for(lambda: [p for p in _group(leader.pid) if p != leader.pid], 10, "the other program")
        assert stack.group_members(process) == [leader.pid]
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait()
        assert stack.group_members(process) == [] and stack.stop_process(process, timeout_s=5) == []
        assert stranger in _group(leader.pid)  # still running
    finally:
        stack.stop_group(leader, timeout_s=5)
        for pid in _group(leader.pid):
            os.kill(pid, signal.SIGKILL)
