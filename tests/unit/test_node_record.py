"""The node's record (what `warp run` / `warp start` started) and Kamailio's Python environment."""

from __future__ import annotations

from pathlib import Path

from routing_engine import stack
from routing_engine.settings import load_settings


def test_kamailio_s_python_finds_the_system_installation_first_whatever_the_caller_s_path(tmp_path: Path) -> None:
    caller = {"PATH": "/root/.pyenv/shims:/opt/other/bin:/usr/bin:/bin", "PYTHONPATH": "/opt/other/lib",
              "PYTHONHOME": "/opt/other", "PYTHONUSERBASE": "/home/x/.local", "LANG": "C.UTF-8"}
    env = stack.kamailio_env(load_settings(environ={"WARP_STACK__DATA_DIR": str(tmp_path)}), caller)
    assert env["PATH"].split(":") == ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/root/.pyenv/shims", "/opt/other/bin"]
    assert env["PYTHONHOME"] == "/usr" and env["PYTHONNOUSERSITE"] == "1"
    assert "PYTHONPATH" not in env and "PYTHONUSERBASE" not in env
    assert env["LANG"] == "C.UTF-8"  # the rest of the caller's environment is kept
