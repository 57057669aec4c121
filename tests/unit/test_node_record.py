"""The node's record (what `warp run` / `warp start` started) and Kamailio's Python environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from routing_engine.ops import stack
from routing_engine.settings import load_settings


def test_kamailio_s_python_finds_the_system_installation_first_whatever_the_caller_s_path(tmp_path: Path) -> None:
    caller = {"PATH": "/root/.pyenv/shims:/opt/other/bin:/usr/bin:/bin", "PYTHONPATH": "/opt/other/lib",
              "PYTHONHOME": "/opt/other", "PYTHONUSERBASE": "/home/x/.local", "LANG": "C.UTF-8"}
    env = stack.kamailio_env(load_settings(environ={"WARP_STACK__DATA_DIR": str(tmp_path)}), caller)
    assert env["PATH"].split(":") == ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/root/.pyenv/shims", "/opt/other/bin"]
    assert env["PYTHONHOME"] == "/usr" and env["PYTHONNOUSERSITE"] == "1"
    assert "PYTHONPATH" not in env and "PYTHONUSERBASE" not in env
    assert env["LANG"] == "C.UTF-8"  # the rest of the caller's environment is kept


def test_a_record_written_is_read_back_as_it_was(tmp_path: Path) -> None:
    record = stack.NodeRecord(owner=stack.Process(10, ("python", "warp", "run"), 5),
                              processes={"kamailio": stack.Process(11, ("/usr/sbin/kamailio", "-f", "k.cfg"), 6)},
                              servers=stack.Started(postgres=True, redis=False))
    stack.write_record(tmp_path, record)
    assert stack.read_record(tmp_path) == record
    assert [p.name for p in tmp_path.iterdir()] == ["node.json"]  # no temporary file left behind
    stack.remove_record(tmp_path)
    assert stack.read_record(tmp_path) is None


def test_the_servers_an_older_checkout_s_start_brought_up_still_count(tmp_path: Path) -> None:
    (tmp_path / "stack-started.json").write_text(json.dumps({"postgres": True, "redis": True}))
    record = stack.read_record(tmp_path)
    assert record == stack.NodeRecord(None, {}, stack.Started(postgres=True, redis=True))
    stack.write_record(tmp_path, record)  # folded into the one record
    assert not (tmp_path / "stack-started.json").exists()


def test_a_record_that_cannot_be_read_is_reported_naming_it(tmp_path: Path) -> None:
    (tmp_path / "node.json").write_text('{"processes": {"kamailio": {"pid": "x"}}}')
    with pytest.raises(stack.StackError, match=r"node\.json cannot be read"):
        stack.read_record(tmp_path)
