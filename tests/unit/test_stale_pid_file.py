"""A Kamailio killed with -9 can stay a zombie until something reaps it, and Kamailio refuses to
start while its pid file names any process kill(pid, 0) reaches: a restart must clear it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from routing_engine.ops import stack


def _zombie() -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 5
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not become a zombie"
        time.sleep(0.01)
    return child


def test_a_pid_file_naming_a_zombie_is_removed(tmp_path: Path) -> None:
    child = _zombie()
    try:
        os.kill(child.pid, 0)  # what Kamailio checks: a zombie answers it
        pid_file = tmp_path / "kamailio.pid"
        pid_file.write_text(f"{child.pid}\n")
        assert stack.clear_stale_pid_file(pid_file) == child.pid
        assert not pid_file.exists()
    finally:
        child.wait()


def test_a_pid_file_naming_a_live_process_is_left_to_kamailio(tmp_path: Path) -> None:
    with subprocess.Popen(["sleep", "30"]) as live:
        try:
            pid_file = tmp_path / "kamailio.pid"
            pid_file.write_text(f"{live.pid}\n")
            assert stack.clear_stale_pid_file(pid_file) is None
            assert pid_file.exists()
        finally:
            live.kill()


def test_a_pid_file_of_a_gone_process_or_unreadable_is_handled(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    pid_file = tmp_path / "kamailio.pid"
    pid_file.write_text(f"{gone.pid}\n")
    assert stack.clear_stale_pid_file(pid_file) == gone.pid and not pid_file.exists()
    assert stack.clear_stale_pid_file(tmp_path / "none.pid") is None
    (tmp_path / "bad.pid").write_text("not a pid")
    assert stack.clear_stale_pid_file(tmp_path / "bad.pid") is None
