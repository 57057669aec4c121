"""The embedded stack's servers answer only with the passwords it generated (issue 15 item 11).

Each test runs a stack of its own (a temporary data folder, free loopback ports), started and
stopped the way `warp exec` does, with the real redis-server and Postgres 15: the session's shared
servers are not touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from routing_engine.ops import stack
from routing_engine.settings import POSTGRES_SECRET, REDIS_SECRET, Settings, load_settings


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(data_dir: Path) -> Settings:
    return load_settings(environ={
        "WARP_STACK__DATA_DIR": str(data_dir),
        "WARP_STACK__POSTGRES_PORT": str(_free_port()),
        "WARP_STACK__REDIS_PORT": str(_free_port()),
    })


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Not under pytest's tmp_path: a concurrent pytest run resets its root folder to 0700, and the
    postgres user could then no longer reach the cluster (pg_ctl would lose sight of it)."""
    path = Path(tempfile.mkdtemp(prefix="warp-stack-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local(data_dir: Path) -> Iterator[Settings]:
    """A running embedded stack of its own."""
    settings = _settings(data_dir)
    try:
        stack.up(settings)
        yield settings
    finally:
        stack.down(settings)


def _tcp_url(settings: Settings, password: str | None) -> str:
    auth = f"warp:{password}" if password is not None else "warp"
    return f"postgresql://{auth}@127.0.0.1:{settings.stack.postgres_port}/postgres"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


# ------------------------------------------------------------------ redis

def test_redis_refuses_a_client_without_the_password_and_serves_one_with_it(local: Settings) -> None:
    port = local.stack.redis_port
    stranger = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):  # NOAUTH
        stranger.set("warp:probe", "x")
    stranger.close()
    wrong = redis.Redis(host="127.0.0.1", port=port, password="guessed", socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):  # WRONGPASS
        wrong.ping()
    wrong.close()
    # what a request smuggled into Redis's port (issue 15 item 2) gets: the command is not run
    with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
        raw.sendall(b"INVITE sip:x SIP/2.0\r\nSET warp:smuggled 1\r\n")
        assert b"NOAUTH" in raw.recv(256)
    client = redis.Redis.from_url(local.redis_url, socket_timeout=2)  # settings carry the password
    try:
        assert client.set("warp:probe", "x") and client.get("warp:probe") == b"x"
        assert client.exists("warp:smuggled") == 0
    finally:
        client.close()


def test_redis_commands_that_turn_a_password_into_a_shell_are_gone_the_ones_in_use_stay(
        local: Settings) -> None:
    client = redis.Redis.from_url(local.redis_url, socket_timeout=2)
    try:
        for command in (("CONFIG", "GET", "dir"), ("CONFIG", "SET", "dir", "/tmp"), ("MODULE", "LIST"),
                        ("SLAVEOF", "127.0.0.1", "1"), ("REPLICAOF", "127.0.0.1", "1"), ("DEBUG", "SLEEP", "0"),
                        ("ACL", "SETUSER", "default", "nopass")):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(*command)
        # what the node, the tests and the benchmarks send still works
        assert client.eval("return redis.call('INCR', KEYS[1])", 1, "warp:n") == 1
        assert client.flushdb() and "redis_version" in client.info()
        assert client.xadd("warp:s", {"a": "1"})
    finally:
        client.close()


# ------------------------------------------------------------------ postgres

def test_postgres_refuses_a_connection_without_the_password_over_tcp_and_the_socket(local: Settings) -> None:
    password = local.embedded_secret(POSTGRES_SECRET)
    assert password
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(_tcp_url(local, None), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(_tcp_url(local, "guessed"), connect_timeout=5)
    socket_dir = local.data_dir / "postgres"
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(f"host={socket_dir} port={local.stack.postgres_port} user=warp dbname=postgres",
                        connect_timeout=5)
    with psycopg.connect(_tcp_url(local, password), connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("warp",)
    with psycopg.connect(local.database_url, connect_timeout=5) as conn:  # the node's own URL
        assert conn.execute("SELECT current_database()").fetchone() == ("warp",)


# ------------------------------------------------------------------ the secrets

def test_the_secrets_are_files_only_their_owner_reads(local: Settings) -> None:
    folder = local.secrets_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["pgpass", "postgres.password", "redis.password"]
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        assert path.stat().st_uid == os.geteuid()
    assert len(local.embedded_secret(REDIS_SECRET) or "") >= 40  # token_urlsafe(32)
    assert local.embedded_secret(REDIS_SECRET) != local.embedded_secret(POSTGRES_SECRET)
    # psql and friends: PGPASSFILE=<data_dir>/secrets/pgpass
    result = subprocess.run(["psql", _tcp_url(local, None), "-w", "-Atc", "SELECT 42"], capture_output=True,
                            text=True, timeout=30, env={**os.environ, "PGPASSFILE": str(folder / "pgpass")})
    assert result.stdout.strip() == "42", result.stderr


def test_no_password_shows_on_a_server_command_line(local: Settings) -> None:
    postmaster = int((local.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    redis_pid = int((local.data_dir / "redis" / "redis.pid").read_text().strip())
    secrets = [local.embedded_secret(POSTGRES_SECRET), local.embedded_secret(REDIS_SECRET)]
    for pid in (postmaster, redis_pid):
        line = _cmdline(pid)
        assert line, pid
        assert not any(s and s in line for s in secrets), f"a password on the command line of {pid}"  # not shown
    assert not list(local.data_dir.glob(".initdb-*"))  # initdb's password file is gone


def test_a_restart_keeps_the_same_secrets_and_the_data(data_dir: Path) -> None:
    settings = _settings(data_dir)
    try:
        stack.up(settings)
        first = (settings.embedded_secret(POSTGRES_SECRET), settings.embedded_secret(REDIS_SECRET))
        assert all(first)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
        client = redis.Redis.from_url(settings.redis_url)
        client.set("warp:kept", "1")
        client.close()
        stack.down(settings)
        assert not stack.postgres_running(settings) and not stack.redis_running(settings)
        started = stack.up(settings)
        assert started.postgres and started.redis
        assert (settings.embedded_secret(POSTGRES_SECRET), settings.embedded_secret(REDIS_SECRET)) == first
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        client = redis.Redis.from_url(settings.redis_url)
        assert client.get("warp:kept") == b"1"
        client.close()
    finally:
        stack.down(settings)


def test_a_password_only_cluster_whose_password_file_is_lost_is_refused_naming_the_fix(data_dir: Path) -> None:
    settings = _settings(data_dir)
    try:
        stack.up(settings)
    finally:
        stack.down(settings)
    settings.secret_path(POSTGRES_SECRET).unlink()
    try:
        with pytest.raises(stack.StackError, match="postgres.password is missing: restore that file, or remove"):
            stack.start_postgres(settings)
        assert not stack.postgres_running(settings)
    finally:
        stack.stop_postgres(settings)


# ------------------------------------------------------------------ an older checkout's data

def _old_trust_cluster(settings: Settings) -> None:
    """What the stack made before passwords: initdb --auth=trust, a database with data in it."""
    pg = settings.data_dir / "postgres"
    pg.mkdir()
    stack._ensure_traversable(pg)
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres", "postgres")
    pg.chmod(0o700)
    subprocess.run([*stack._as_postgres_user(), str(stack.PG_BIN / "initdb"), "-D", str(pg), "-U", "warp",
                    "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                   check=True, capture_output=True)


def test_a_cluster_an_older_checkout_initialised_with_trust_is_given_the_password(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = _settings(data_dir)
    _old_trust_cluster(settings)
    try:
        # the older checkout's server, already running with trust when the new code starts
        options = f"-p {settings.stack.postgres_port} -c listen_addresses=127.0.0.1 -k {data_dir / 'postgres'}"
        subprocess.run([*stack._as_postgres_user(), str(stack.PG_BIN / "pg_ctl"), "-D", str(data_dir / "postgres"),
                        "-l", str(data_dir / "postgres" / "server.log"), "-o", options, "-w", "start"],
                       check=True, capture_output=True)
        with psycopg.connect(_tcp_url(settings, None), autocommit=True) as conn:  # trust: anyone
            conn.execute("CREATE DATABASE warp")
        with psycopg.connect(_tcp_url(settings, None).replace("/postgres", "/warp"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept AS SELECT 7 AS n")
        with caplog.at_level(logging.WARNING, logger="warp.stack"):
            started = stack.up(settings)
        assert not started.postgres  # it was running: upgraded in place, left running
        password = settings.embedded_secret(POSTGRES_SECRET)
        assert password
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(_tcp_url(settings, None), connect_timeout=5)
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (7,)
        hba = (data_dir / "postgres" / "pg_hba.conf").read_text()
        assert "trust" not in "".join(line.partition("#")[0] for line in hba.splitlines())
        assert "trusted every local connection" in caplog.text and password not in caplog.text
        assert password not in (data_dir / "postgres" / "server.log").read_text(errors="replace")
        # and after a restart it stays that way
        stack.down(settings)
        assert stack.up(settings).postgres
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(_tcp_url(settings, None), connect_timeout=5)
        with psycopg.connect(settings.database_url) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (7,)
    finally:
        stack.down(settings)


def test_a_redis_an_older_checkout_left_running_without_a_password_is_refused_naming_the_fix(
        data_dir: Path) -> None:
    settings = _settings(data_dir)
    directory = data_dir / "redis"
    directory.mkdir()
    subprocess.run([stack.REDIS_SERVER, "--port", str(settings.stack.redis_port), "--bind", "127.0.0.1",
                    "--dir", str(directory), "--daemonize", "yes", "--pidfile", str(directory / "redis.pid"),
                    "--logfile", str(directory / "redis.log"), "--save", ""], check=True, capture_output=True)
    try:
        from tests.e2e.harness import wait_for

        wait_for(lambda: stack.redis_running(settings), 20, "the old Redis")
        with pytest.raises(stack.StackError, match="answers without a password.*warp stack down"):
            stack.start_redis(settings)
    finally:
        stack.stop_redis(settings)
    assert stack.start_redis(settings)  # what the message says to do: stop it, start again
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=settings.stack.redis_port).ping()
    finally:
        stack.stop_redis(settings)


# ------------------------------------------------------------------ rtpengine's ng control

RTP_NG = "127.0.7.11:2224"


def _sockets_of(pid: int) -> list[tuple[str, str]]:
    """(netid, local address) of every socket the process holds, from ss."""
    out = subprocess.run(["ss", "-anpH"], capture_output=True, text=True, check=True).stdout
    return [(line.split()[0], line.split()[4]) for line in out.splitlines() if f"pid={pid}," in line]


def test_the_managed_rtpengine_answers_ng_on_its_loopback_address_only_with_no_other_control_port(
        tmp_path: Path) -> None:
    settings = load_settings(environ={"WARP_MEDIA__NG_ADDRESS": RTP_NG, "WARP_MEDIA__INTERFACE": "127.0.7.11",
                                      "WARP_MEDIA__PORT_MIN": "47300", "WARP_MEDIA__PORT_MAX": "47399"})
    proc = stack.start_rtpengine(settings, tmp_path / "run", tmp_path / "rtpengine.log")
    try:
        sockets = _sockets_of(proc.pid)
    finally:
        stack.stop_group(proc)
    assert ("udp", RTP_NG) in sockets
    # no CLI, HTTP/WebSocket, TCP-ng or legacy control listener: the ng socket is the one way in
    assert [s for s in sockets if s[0] not in ("udp", "u_str", "u_dgr")] == [], sockets
    assert [s for s in sockets if s[0] == "udp" and s[1] != RTP_NG] == [], sockets


@pytest.mark.parametrize("ng", ["0.0.0.0:2225", "192.0.2.1:2225"])
def test_the_managed_rtpengine_refuses_an_ng_address_off_loopback(ng: str, tmp_path: Path) -> None:
    settings = load_settings(environ={"WARP_MEDIA__NG_ADDRESS": ng})
    with pytest.raises(stack.StackError, match="loopback address only"):
        proc = stack.start_rtpengine(settings, tmp_path / "run", tmp_path / "rtpengine.log")
        stack.stop_group(proc)  # it started: the test fails, and leaves nothing running
    assert not (tmp_path / "rtpengine.log").exists()  # nothing was started
