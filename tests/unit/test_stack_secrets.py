"""Where the embedded servers' passwords travel: Kamailio's environment, never its command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing_engine.ops import stack
from routing_engine.settings import load_settings


def test_kamailio_gets_the_redis_password_in_its_environment_not_on_its_command_line(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "redis.password").write_text("rd-Secret_9\n")
    settings = load_settings(environ={"WARP_STACK__DATA_DIR": str(tmp_path), "WARP_STACK__REDIS_PORT": "56001"})
    env = stack.kamailio_env(settings, {})
    assert env["WARP_TOPOS_REDIS"] == "name=topos;addr=127.0.0.1;port=56001;db=0;pass=rd-Secret_9"
    assert "rd-Secret_9" not in " ".join(stack.kamailio_command(settings, tmp_path / "run"))


def test_the_topos_server_definition_takes_the_password_as_it_is_not_url_encoded() -> None:
    assert stack.topos_redis_server("redis://:p%40ss@cache:6380/2") == "name=topos;addr=cache;port=6380;db=2;pass=p@ss"
    assert stack.topos_redis_server("redis://cache:6380/2") == "name=topos;addr=cache;port=6380;db=2"
    with pytest.raises(stack.StackError, match="';'"):
        stack.topos_redis_server("redis://:a%3Bb@cache:6380/2")


def test_the_embedded_redis_configuration_sets_the_password_and_drops_the_dangerous_commands() -> None:
    lines = stack.redis_config("pw-1").splitlines()
    assert lines[0] == "requirepass pw-1" and "protected-mode yes" in lines
    renamed = {line.split()[1] for line in lines if line.startswith("rename-command")}
    assert {"CONFIG", "DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "ACL"} <= renamed
    assert not renamed & {"FLUSHDB", "EVAL", "EVALSHA", "INFO", "XADD", "SCAN"}  # the node and the tests use these
