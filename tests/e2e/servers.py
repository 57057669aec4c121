"""Dedicated Redis and Postgres servers for tests that stop and start them.

The session's shared servers are never stopped by a test: a test that takes a server away runs
its own, on its own loopback address, in its own temporary folder, and stops it at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from routing_engine.adapters import migrate
from routing_engine.ops import stack
from tests.e2e.harness import wait_for


def _tcp_open(host: str, port: int) -> bool:
    return stack.port_open(port, host)


@dataclass
class RedisServer:
    host: str
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        path = self.directory / "redis.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text().strip())
        return None

    def start(self) -> None:
        # the same persistence as the embedded server: counters and streams survive a restart
        subprocess.run([stack.REDIS_SERVER, "--port", str(self.port), "--bind", self.host,
                        "--dir", str(self.directory), "--daemonize", "yes",
                        "--pidfile", str(self.directory / "redis.pid"),
                        "--logfile", str(self.directory / "redis.log"),
                        "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""], check=True)
        wait_for(lambda: _tcp_open(self.host, self.port), 20, f"Redis on {self.host}:{self.port}")

    def stop(self) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
                wait_for(lambda: not _alive(pid), 20, "Redis to stop")
        (self.directory / "redis.pid").unlink(missing_ok=True)


@dataclass
class PostgresServer:
    host: str
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"postgresql://warp@{self.host}:{self.port}/warp"

    def _ctl(self, *args: str) -> None:
        subprocess.run([*stack._as_postgres_user(), str(stack.PG_BIN / "pg_ctl"), "-D", str(self.directory),
                        *args], check=True, capture_output=True)

    def init(self) -> None:
        self.directory.mkdir(parents=True)
        stack._ensure_traversable(self.directory)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self.directory.chmod(0o700)
        subprocess.run([*stack._as_postgres_user(), str(stack.PG_BIN / "initdb"), "-D", str(self.directory),
                        "-U", "warp", "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
                       check=True, capture_output=True)
        self.start()
        with psycopg.connect(f"postgresql://warp@{self.host}:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE warp")
        with psycopg.connect(self.url, autocommit=True) as conn:
            migrate.apply(conn)

    def start(self) -> None:
        self._ctl("-l", str(self.directory / "server.log"), "-w", "-t", "60", "-o",
                  f"-p {self.port} -c listen_addresses={self.host} -k {self.directory} -c fsync=off", "start")

    def stop(self) -> None:
        try:
            self._ctl("-m", "fast", "-w", "stop")
        except subprocess.CalledProcessError as exc:
            if b"Is server running?" not in exc.stderr:
                raise AssertionError(f"Postgres did not stop: {exc.stdout!r} {exc.stderr!r}") from exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def dedicated(redis_host: str, pg_host: str, port_redis: int, port_pg: int,
              workdir: Path) -> Iterator[tuple[RedisServer, PostgresServer]]:
    workdir.mkdir(parents=True, exist_ok=True)
    stack._ensure_traversable(workdir)
    (workdir / "redis").mkdir(exist_ok=True)
    r = RedisServer(redis_host, port_redis, workdir / "redis")
    pg = PostgresServer(pg_host, port_pg, workdir / "postgres")
    try:
        r.start()
        pg.init()
        yield r, pg
    finally:
        try:
            r.stop()
        finally:
            pg.stop()
