"""Stack: the embedded local Postgres cluster and Redis server, the Kamailio launcher, and the
node's record of what it started (read by `warp status` and `warp stop`).

Both servers live under the project's git-ignored data folder on their own loopback ports, so
a developer machine's own services are never touched. Starting is idempotent: a server that is
already up is left alone and reported as not started by us, so whoever started it stops it.

Neither answers without a password: on the first start each gets one (``secrets.token_urlsafe``)
in ``<data_dir>/secrets/`` (folder 0700, files 0600), which ``settings.database_url`` and
``settings.redis_url`` carry. Passwords reach the servers through files and stdin, never a
command line (any local user reads those in ps). A cluster an older checkout initialised with
trust auth is given the password and password-only access on its next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from routing_engine.settings import (
    EMBEDDED_POSTGRES_USER,
    POSTGRES_SECRET,
    PROJECT_ROOT,
    REDIS_SECRET,
    Settings,
)

log = logging.getLogger("warp.stack")

PG_BIN = Path("/usr/lib/postgresql/15/bin")
REDIS_SERVER = "/usr/bin/redis-server"


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Started:
    postgres: bool = False
    redis: bool = False


# ------------------------------------------------------------------ helpers

def _as_postgres_user() -> list[str]:
    """Postgres refuses to run as root; when we are root, run its tools as 'postgres'."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _ensure_traversable(path: Path) -> None:
    """Let the postgres user reach a data folder below directories only root may enter
    (e.g. a clone under a mktemp -d folder): add the search bit (o+x) where it is missing."""
    if os.geteuid() != 0:
        return
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _run(cmd: list[str], what: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({' '.join(cmd)}):\n{result.stdout}{result.stderr}")


# ------------------------------------------------------------------ secrets

def ensure_secret(settings: Settings, name: str) -> str:
    """The embedded server's password: generated on first use, then kept (and re-tightened to
    0600 in a 0700 folder if someone loosened them)."""
    directory = settings.secrets_dir
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    path = settings.secret_path(name)
    existing = settings.embedded_secret(name)
    if existing is None:
        # written aside, then linked into place: a concurrent start never reads half a file,
        # and whichever start links first wins
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        existing = settings.embedded_secret(name)
        assert existing is not None
    path.chmod(0o600)
    if name == POSTGRES_SECRET:
        _write_private(settings.secrets_dir / "pgpass", f"127.0.0.1:*:*:{EMBEDDED_POSTGRES_USER}:{existing}\n")
    return existing


def ensure_secrets(settings: Settings) -> None:
    """Both embedded servers' passwords (``warp stack secrets``; docker-compose reads them too)."""
    ensure_secret(settings, POSTGRES_SECRET)
    ensure_secret(settings, REDIS_SECRET)


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, never readable by others even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


# ------------------------------------------------------------------ postgres

# pg_hba.conf of the embedded cluster: the password of role warp for every connection, over
# the loopback TCP port and over the socket (in the cluster's own 0700 folder) alike.
PG_HBA = """\
# Written by the WARP embedded stack (routing_engine/ops/stack.py): password (SCRAM) for everyone.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""

def _pg_dir(settings: Settings) -> Path:
    return settings.data_dir / "postgres"


def postgres_running(settings: Settings) -> bool:
    pg = _pg_dir(settings)
    if not (pg / "PG_VERSION").exists():
        return False
    result = subprocess.run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(pg), "status"],
                            capture_output=True)
    return result.returncode == 0


def start_postgres(settings: Settings) -> bool:
    """Initialise (first time) and start the embedded cluster. True if this call started it."""
    pg = _pg_dir(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _ensure_traversable(settings.data_dir)
    if postgres_running(settings):
        return False
    if port_open(settings.stack.postgres_port):
        raise StackError(f"port {settings.stack.postgres_port} is taken by another program; "
                         f"set stack.postgres_port (WARP_STACK__POSTGRES_PORT) to a free port")
    if not (pg / "PG_VERSION").exists():
        _initdb(settings, pg)
    elif not _trusting(pg) and settings.embedded_secret(POSTGRES_SECRET) is None:
        raise StackError(_lost_password(settings))
    log_file = pg / "server.log"
    options = (f"-p {settings.stack.postgres_port} -c listen_addresses=127.0.0.1 "
               f"-k {pg} -c max_connections=200 -c fsync=on")
    _run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(pg), "-l", str(log_file),
          "-o", options, "-w", "-t", "60", "start"], "starting Postgres")
    return True


def _initdb(settings: Settings, pg: Path) -> None:
    """A new cluster whose superuser warp has the generated password, for every connection."""
    password = ensure_secret(settings, POSTGRES_SECRET)
    pg.mkdir(parents=True, exist_ok=True)
    owned = os.geteuid() == 0  # initdb runs as postgres: it gets the password in a file of its own
    if owned:
        shutil.chown(pg, "postgres", "postgres")
    pg.chmod(0o700)
    pwdir = Path(tempfile.mkdtemp(dir=settings.data_dir, prefix=".initdb-"))  # mode 0700
    try:
        pwfile = pwdir / "pw"
        _write_private(pwfile, password + "\n")
        if owned:
            shutil.chown(pwdir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        _run([*_as_postgres_user(), str(PG_BIN / "initdb"), "-D", str(pg), "-U", EMBEDDED_POSTGRES_USER,
              "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"], "initdb")
    finally:
        shutil.rmtree(pwdir, ignore_errors=True)
    _rewrite_hba(pg)


def _trusting(pg: Path) -> bool:
    """Whether pg_hba.conf lets anyone in without a password (an older checkout's cluster)."""
    try:
        text = (pg / "pg_hba.conf").read_text()
    except FileNotFoundError:
        return False
    return any("trust" in line.partition("#")[0].split() for line in text.splitlines())


def _rewrite_hba(pg: Path) -> None:
    path = pg / "pg_hba.conf"
    with open(path, "w") as out:  # in place: it keeps its owner (postgres) and mode
        out.write(PG_HBA)


def _lost_password(settings: Settings) -> str:
    return (f"the embedded Postgres in {_pg_dir(settings)} requires a password, but "
            f"{settings.secret_path(POSTGRES_SECRET)} is missing: restore that file, or remove "
            f"{_pg_dir(settings)} (its data is lost) to start a new cluster")


def secure_postgres(settings: Settings) -> bool:
    """Give a running cluster initialised with trust auth (an older checkout) the generated
    password and password-only access; True if it had to. Nothing to do on a cluster made here."""
    import psycopg
    from psycopg import sql

    pg = _pg_dir(settings)
    if not _trusting(pg):
        return False
    password = ensure_secret(settings, POSTGRES_SECRET)
    trusted = f"postgresql://{EMBEDDED_POSTGRES_USER}@127.0.0.1:{settings.stack.postgres_port}/postgres"
    try:
        conn = psycopg.connect(trusted, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise StackError(f"the embedded Postgres in {pg} trusts some connections (pg_hba.conf) but not this "
                         f"one, so it cannot be given its password: {exc}; set the password of role "
                         f"{EMBEDDED_POSTGRES_USER} to the one in {settings.secret_path(POSTGRES_SECRET)} and "
                         f"remove the trust lines, or remove {pg} (its data is lost)") from None
    with conn:
        # the SCRAM verifier is made here: the password itself never reaches the server (or its log)
        verifier = conn.pgconn.encrypt_password(password.encode(), EMBEDDED_POSTGRES_USER.encode(),
                                                b"scram-sha-256")
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            sql.Identifier(EMBEDDED_POSTGRES_USER), sql.Literal(verifier.decode())))
        _rewrite_hba(pg)
        conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while _accepts_without_password(trusted):  # the postmaster reloads pg_hba.conf on its signal
        if time.monotonic() > deadline:
            raise StackError(f"Postgres in {pg} still accepts connections without a password after "
                             f"pg_hba.conf was rewritten; see {pg / 'server.log'}")
        time.sleep(0.05)
    log.warning("the embedded Postgres in %s trusted every local connection (an older checkout): role %s "
                "now has the password in %s, and pg_hba.conf asks everyone for it", pg,
                EMBEDDED_POSTGRES_USER, settings.secret_path(POSTGRES_SECRET))
    return True


def _accepts_without_password(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5):
            return True
    except psycopg.OperationalError:
        return False


def stop_postgres(settings: Settings) -> None:
    if postgres_running(settings):
        _run([*_as_postgres_user(), str(PG_BIN / "pg_ctl"), "-D", str(_pg_dir(settings)),
              "-m", "fast", "-w", "stop"], "stopping Postgres")


def ensure_database(settings: Settings, name: str | None = None) -> None:
    """Create the database if it does not exist (embedded cluster only)."""
    import psycopg

    db = name or settings.database.name
    with psycopg.connect(settings.embedded_database_url("postgres"), autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{db}"')


# ------------------------------------------------------------------ redis

def _redis_dir(settings: Settings) -> Path:
    return settings.data_dir / "redis"


def redis_running(settings: Settings) -> bool:
    pidfile = _redis_dir(settings) / "redis.pid"
    if not pidfile.exists():
        return False
    try:
        os.kill(int(pidfile.read_text().strip()), 0)
    except (ValueError, ProcessLookupError, PermissionError):
        return False
    return port_open(settings.stack.redis_port)


# Commands the node never sends and that turn a Redis password into a shell or a data leak
# (CONFIG SET dir/dbfilename, MODULE LOAD, replicating to or from another server, ACL changes).
# The tests' FLUSHDB, Lua scripts (EVALSHA) and INFO stay.
REDIS_DISABLED_COMMANDS = ("CONFIG", "DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "SYNC", "PSYNC",
                           "FAILOVER", "MIGRATE", "ACL")


def redis_config(password: str) -> str:
    """The embedded Redis's secret part of its configuration, handed over on its stdin."""
    lines = [f"requirepass {password}", "protected-mode yes"]
    lines += [f'rename-command {name} ""' for name in REDIS_DISABLED_COMMANDS]
    return "\n".join(lines) + "\n"


def _redis_refuses_strangers(settings: Settings) -> bool:
    """Whether the Redis on our port asks for a password (False: it answers anyone)."""
    with socket.create_connection(("127.0.0.1", settings.stack.redis_port), timeout=2) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(128).startswith(b"-NOAUTH")


def start_redis(settings: Settings) -> bool:
    directory = _redis_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    if redis_running(settings):
        if not _redis_refuses_strangers(settings):
            raise StackError(f"the embedded Redis on 127.0.0.1:{settings.stack.redis_port} answers without a "
                             f"password (an older checkout started it): stop it with `warp stack down` and start "
                             f"again, and it comes back with the password in {settings.secret_path(REDIS_SECRET)}")
        return False
    if port_open(settings.stack.redis_port):
        raise StackError(f"port {settings.stack.redis_port} is taken by another program; "
                         f"set stack.redis_port (WARP_STACK__REDIS_PORT) to a free port")
    password = ensure_secret(settings, REDIS_SECRET)
    # "-": the configuration (with the password) comes on stdin, so no file and no argument holds it.
    # Append-only file: the CDR stream and counters survive a restart of Redis.
    result = subprocess.run(
        [REDIS_SERVER, "-", "--port", str(settings.stack.redis_port), "--bind", "127.0.0.1",
         "--dir", str(directory), "--daemonize", "yes", "--pidfile", str(directory / "redis.pid"),
         "--logfile", str(directory / "redis.log"), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", ""],
        input=redis_config(password), capture_output=True, text=True)
    if result.returncode != 0:  # Redis quotes a configuration line it refuses: never the password
        output = (result.stdout + result.stderr).replace(password, "<password>")
        raise StackError(f"starting Redis failed:\n{output}")
    # up only once it answers AND its pid file is written (Redis may write it after opening its
    # port): without the pid file it could not be stopped
    deadline = time.monotonic() + 20
    while not (port_open(settings.stack.redis_port) and (directory / "redis.pid").exists()):
        if time.monotonic() > deadline:
            raise StackError(f"Redis did not start; see {directory / 'redis.log'}")
        time.sleep(0.05)
    return True


def stop_redis(settings: Settings) -> None:
    """Stop the Redis of this data folder: by its pid file, whether or not its port answers at
    this moment (a busy machine can miss a connect, and the server must not be left running)."""
    pidfile = _redis_dir(settings) / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    if "redis-server" not in _cmdline_of(pid):
        return  # gone, or the pid now names another program
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    _wait_gone(pid, 20)


def _cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)


# ------------------------------------------------------------------ the pair

def up(settings: Settings) -> Started:
    started_pg = start_postgres(settings) if settings.embedded_postgres else False
    if settings.embedded_postgres:
        secure_postgres(settings)
        ensure_database(settings)
    started_redis = start_redis(settings) if settings.embedded_redis else False
    return Started(postgres=started_pg, redis=started_redis)


def down(settings: Settings, started: Started | None = None) -> None:
    """Stop the embedded servers (only those in ``started`` when given)."""
    if settings.embedded_redis and (started is None or started.redis):
        stop_redis(settings)
    if settings.embedded_postgres and (started is None or started.postgres):
        stop_postgres(settings)


# ------------------------------------------------------------------ kamailio

def metrics_dir(settings: Settings, family: str | None = None) -> Path:
    """Where a process family (kamailio, companion) keeps its multiprocess metric files; the
    endpoint merges every family of the node. One folder per family, because in containers the
    families have separate PID spaces and two processes must never share a file name."""
    root = settings.data_dir / "metrics" / settings.node.name
    return root / family if family else root


def reset_metrics_dir(path: Path) -> None:
    """Empty a family's metric folder before its processes start: files of a previous run would
    count as live processes (and their counters would be added to the new ones)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def kamailio_command(settings: Settings, run_dir: Path) -> list[str]:
    """The Kamailio command line for these settings (foreground, logging to stderr). Called just
    before Kamailio starts, it also empties Kamailio's metric folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    reset_metrics_dir(metrics_dir(settings, "kamailio"))
    k = settings.kamailio
    s = settings.sip
    defines = {
        "WARP_KEMI_SCRIPT": f'"{PROJECT_ROOT / "kemi" / "warp_kemi.py"}"',
        "WARP_CTL_SOCKET": f'"unix:{run_dir / "kamailio_ctl"}"',
        "WARP_CHILDREN": str(s.children),
        "WARP_TCP_CHILDREN": str(s.tcp_children),
        "WARP_LOG_LEVEL": str(k.log_level),
        "WARP_FR_TIMER": str(s.fr_timeout_ms),
        "WARP_FR_INV_TIMER": str(s.fr_inv_timeout_ms),
        "WARP_MAX_DURATION": str(s.max_call_duration_s),
        "WARP_SERVER_HEADER": f'"Server: {s.server_header}"',
        "WARP_USER_AGENT_HEADER": f'"User-Agent: {s.server_header}"',
        "WARP_NONCE_EXPIRE": str(settings.auth.nonce_expire_s),
        "WARP_TCP_LIFETIME": str(s.tcp_lifetime_s),
        "WARP_TCP_MAX_CONNECTIONS": str(s.tcp_max_connections),
        # a fresh local block outlives every worker's next read of the shared list
        "WARP_BLOCK_TABLE": f'"warpblock=>size=10;autoexpire={_local_block_s(settings)}"',
    }
    m = settings.media
    if m.enabled:  # the rtpengine module is loaded only then (kamailio.cfg: #!ifdef WARP_RTPENGINE_SOCK)
        defines.update({
            "WARP_RTPENGINE_SOCK": f'"udp:{m.ng_address}"',
            "WARP_RTPENGINE_TOUT_MS": str(m.timeout_ms),
            "WARP_RTPENGINE_RETR": str(m.retries),
            "WARP_RTPENGINE_DISABLE_TOUT": str(m.disable_s),
        })
    cmd = [k.binary, "-f", str(PROJECT_ROOT / "kamailio" / "kamailio.cfg"), "-DD", "-E",
           "-m", str(k.shm_mb), "-M", str(k.pkg_mb), "-Y", str(run_dir),
           "-P", str(run_dir / "kamailio.pid")]
    for sock in s.listen:
        cmd += ["-l", sock]
    if not s.server_header:
        defines["WARP_NO_SIGNATURE"] = "1"
    if s.topology_hiding == "topoh":  # kamailio.cfg: #!ifdef WARP_TOPOH (the key travels in the environment)
        defines["WARP_TOPOH"] = "1"
        defines["WARP_TOPOH_IP"] = f'"{s.topoh_ip or listen_host(s.listen)}"'
    topos_expire = s.max_call_duration_s + s.fr_inv_timeout_ms // 1000 + 180  # outlives any call
    defines["WARP_TOPOS_EXPIRE"] = str(topos_expire)
    defines["WARP_SLICE_TABLE"] = f'"warpslice=>size=12;autoexpire={topos_expire}"'
    defines["WARP_SLICE_TIMER"] = f'"name=slices;interval={settings.money.tick_s};mode=1;"'
    defines["WARP_TOPOS_SKIP_TABLE"] = f'"tpskip=>size=8;autoexpire={topos_expire}"'
    for name, value in defines.items():
        cmd += ["-A", f"{name}={value}"]
    return cmd


def listen_host(listen: tuple[str, ...]) -> str:
    """The address of the first listen socket ("udp:192.0.2.7:5060" -> 192.0.2.7)."""
    first = listen[0] if listen else "127.0.0.1"
    parts = first.split(":")
    host = parts[1] if len(parts) >= 2 and parts[0] in ("udp", "tcp", "tls", "sctp") else parts[0]
    return host.strip("[]")


def _local_block_s(settings: Settings) -> int:
    """How long a block placed by a worker is held in the node's shared table: until every worker
    has read the shared list again, and never past the block itself."""
    # htable's expiry has whole seconds and rounds up: one second less than the block itself
    return max(1, min(settings.auth.block_s - 1, 2 * settings.auth.block_refresh_ms // 1000 + 2))


# Kamailio's app_python3 embeds Debian's libpython3.11, whose standard library is under /usr.
KAMAILIO_PYTHON_HOME = "/usr"
SYSTEM_PATH = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
# Variables that move an interpreter's standard library or import path (the KEMI script adds the
# venv's site-packages itself).
PYTHON_PATH_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "PYTHONPLATLIBDIR", "PYTHONUSERBASE",
                         "PYTHONEXECUTABLE", "PYTHONSTARTUP")


def python_env(env: dict[str, str]) -> dict[str, str]:
    """The environment an embedded Python needs to load the standard library of the libpython it
    is linked with, whatever the caller's shell has.

    An embedded interpreter has no executable of its own: it looks ``python3`` up in PATH and takes
    the standard library of the installation it finds there (any folder whose ../lib/python3.11/
    holds os.py). With pyenv's or another build's python3 first in PATH, Kamailio's workers load
    that library with Debian's libpython and die on its C modules (``_ssl``: undefined symbol).
    So: PYTHONHOME names Debian's, PATH starts with the system folders, and no variable from the
    caller moves the library or the import path."""
    clean = {k: v for k, v in env.items() if k not in PYTHON_PATH_VARIABLES}
    rest = [d for d in env.get("PATH", "").split(os.pathsep) if d and d not in SYSTEM_PATH]
    clean["PATH"] = os.pathsep.join([*SYSTEM_PATH, *rest])
    clean["PYTHONHOME"] = KAMAILIO_PYTHON_HOME
    clean["PYTHONNOUSERSITE"] = "1"  # ~/.local/lib/python3.11 would shadow the venv's packages
    return clean


def kamailio_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Kamailio's environment: secrets travel here (read by #!trydefenvs), not on its command
    line, which any local user can read; and a Python environment that does not depend on the
    caller's PATH (``python_env``)."""
    env = python_env(dict(os.environ if base is None else base))
    env["WARP_CONFIG"] = settings.config_path
    env.setdefault("WARP_VENV", str(PROJECT_ROOT / ".venv"))
    # read by prometheus_client when the SIP workers first import it (multiprocess mode)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir(settings, "kamailio"))
    env.pop("WARP_NONCE_SECRET", None)
    if settings.auth.nonce_secret:
        env["WARP_NONCE_SECRET"] = settings.auth.nonce_secret
    env["WARP_TOPOS_REDIS"] = topos_redis_server(settings.redis_url)
    env.pop("WARP_TOPOH_KEY", None)
    if settings.sip.topology_hiding == "topoh":
        env["WARP_TOPOH_KEY"] = settings.sip.topoh_key
    return env


def topos_redis_server(url: str) -> str:
    """The ndb_redis server definition (name=topos) for the Redis the node uses."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    spec = f"name=topos;addr={parts.hostname or '127.0.0.1'};port={parts.port or 6379};db={db}"
    if parts.password:
        password = unquote(parts.password)
        if ";" in password:  # ndb_redis splits its server definition on ';'
            raise StackError("the Redis password contains ';', which Kamailio's ndb_redis cannot take")
        spec += f";pass={password}"
    return spec


# ------------------------------------------------------------------ rtpengine

RTPENGINE_CONFIG = PROJECT_ROOT / "rtpengine" / "rtpengine.conf"


def rtpengine_command(settings: Settings, run_dir: Path) -> list[str]:
    """rtpengine in the foreground, userspace only, with this node's addresses and ports."""
    m = settings.media
    run_dir.mkdir(parents=True, exist_ok=True)
    return [m.binary, f"--config-file={RTPENGINE_CONFIG}", "--config-section=rtpengine",
            f"--interface={m.interface}", f"--listen-ng={m.ng_address}",
            f"--port-min={m.port_min}", f"--port-max={m.port_max}", "--table=-1",
            f"--pidfile={run_dir / 'rtpengine.pid'}"]


def start_rtpengine(settings: Settings, run_dir: Path, log_path: Path,
                    timeout_s: float = 20) -> subprocess.Popen[bytes]:
    """Start rtpengine (its own process group, stderr to ``log_path``); return once it answers
    an ng ping. Raises StackError if it exits or stays silent."""
    from routing_engine.adapters.rtpengine_ng import NgClient

    host = settings.media.ng_address.rpartition(":")[0].strip("[]")
    if not _loopback(host):
        # rtpengine's ng protocol has no authentication and no source filter (10.5): whoever
        # reaches the socket lists, queries and deletes calls. The one rtpengine started here
        # (warp run/start, the tests) keeps it on loopback; a shared one elsewhere is media.managed=false.
        raise StackError(f"media.ng_address {settings.media.ng_address}: the rtpengine started here binds its "
                         f"unauthenticated ng control to a loopback address only (e.g. 127.0.0.1:22222); for "
                         f"an rtpengine on another host set media.managed=false")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    client = NgClient(settings.media.ng_address, timeout_s=0.2, retries=0)
    if client.ping():
        client.close()
        raise StackError(f"something already answers rtpengine's ng protocol on {settings.media.ng_address}; "
                         f"set media.ng_address (WARP_MEDIA__NG_ADDRESS) to a free address")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(rtpengine_command(settings, run_dir), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not client.ping():
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_group(proc)
                raise StackError(f"rtpengine did not start; see {log_path}")
    finally:
        client.close()
    return proc


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    """Stop a process started in its own session, with everything in its group: TERM, then KILL
    if it is still there after ``timeout_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ------------------------------------------------------------------ the node's record

# What `warp run` and `warp start` started, in <data_dir>/run/<node>/node.json: read by
# `warp status` and `warp stop`, and by the next start to find what is left of a node.
NODE_RECORD = "node.json"
LEGACY_SERVERS_RECORD = "stack-started.json"  # what an older checkout's `warp start` wrote


@dataclass(frozen=True)
class Process:
    """A process the node started, and how to be sure a pid still names it: the same command
    line (/proc/<pid>/cmdline) and the same start time (a reused pid has another)."""
    pid: int
    argv: tuple[str, ...]
    start_ticks: int  # field 22 of /proc/<pid>/stat, in clock ticks since boot


@dataclass(frozen=True)
class NodeRecord:
    owner: Process | None  # the `warp run` serving in the foreground; None for `warp start`
    processes: dict[str, Process]
    servers: Started  # the embedded servers this node brought up, which its stop stops


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return text.rpartition(")")[2].split()  # the name may hold spaces and parentheses


def _argv_of(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return tuple(raw.decode(errors="replace").split("\0")[:-1]) if raw else None


def identify(pid: int) -> Process | None:
    """The live process with this pid (a zombie is not live), as a record would name it."""
    fields = _proc_stat(pid)
    argv = _argv_of(pid)
    if fields is None or argv is None or fields[0] in ("Z", "X"):
        return None
    return Process(pid, argv, int(fields[19]))


def clear_stale_pid_file(path: Path) -> int | None:
    """Remove a pid file whose process is gone or a zombie (a Kamailio killed with -9 stays one
    until something reaps it); answers the pid removed. Kamailio refuses to start while its pid
    file names any process kill(pid, 0) reaches, and that includes a zombie."""
    try:
        pid = int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if identify(pid) is not None:
        return None  # a live process: Kamailio's own check decides
    path.unlink(missing_ok=True)
    return pid


def identify_started(pid: int, argv: list[str] | tuple[str, ...], timeout_s: float = 5) -> Process | None:
    """The process just started with ``argv``, once /proc shows it running that: a vfork()ed child
    lets its parent go on before the kernel has set up the new program's command line. (A script
    runs as its interpreter followed by ``argv``.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        found = identify(pid)
        if found is not None and found.argv[-len(argv):] == tuple(argv):
            return found
        if _proc_stat(pid) is None or time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def is_ours(process: Process) -> bool:
    """Whether the recorded process still runs: its pid names the same program, started then."""
    return identify(process.pid) == process


def group_members(process: Process) -> list[int]:
    """The live processes of a recorded process's group running its command line: the process
    itself and the workers it forked (Kamailio's outlive their main process for a while when it is
    killed). A process of another program that happens to join the group is not taken."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is None or fields[0] in ("Z", "X") or int(fields[2]) != process.pid:
            continue
        if _argv_of(int(entry.name)) == process.argv:
            pids.append(int(entry.name))
    return sorted(pids)


def stop_process(process: Process, timeout_s: float = 15) -> list[int]:
    """Stop a recorded process and its workers (TERM, then KILL after ``timeout_s``), only the
    ones that are still its; return the pids that were running."""
    pids = group_members(process)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    killed = False
    while group_members(process):
        if time.monotonic() > deadline:
            if killed:
                break  # a process KILL does not end at once is stuck in the kernel: nothing more to do
            for pid in group_members(process):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            # wait for them to be gone too: until then they hold their sockets, and a node started
            # again at once could not bind its SIP port
            killed, deadline = True, time.monotonic() + 5
        time.sleep(0.05)
    return pids


def _process_json(process: Process) -> dict[str, object]:
    return {"pid": process.pid, "argv": list(process.argv), "start_ticks": process.start_ticks}


def _process_of(data: dict[str, object]) -> Process:
    argv = data["argv"]
    assert isinstance(argv, list)
    return Process(int(str(data["pid"])), tuple(str(a) for a in argv), int(str(data["start_ticks"])))


def write_record(run_dir: Path, record: NodeRecord) -> None:
    """Replace the record in one step (a reader never sees half of one)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"owner": _process_json(record.owner) if record.owner else None,
            "processes": {name: _process_json(p) for name, p in record.processes.items()},
            "servers": {"postgres": record.servers.postgres, "redis": record.servers.redis}}
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{NODE_RECORD}.")
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, run_dir / NODE_RECORD)
    (run_dir / LEGACY_SERVERS_RECORD).unlink(missing_ok=True)  # folded into this record


def read_record(run_dir: Path) -> NodeRecord | None:
    """The node's record; an older checkout's stack-started.json counts for its servers. A record
    that cannot be read is reported, not guessed at."""
    path = run_dir / NODE_RECORD
    legacy = run_dir / LEGACY_SERVERS_RECORD
    try:
        if path.exists():
            data = json.loads(path.read_text())
            owner = data.get("owner")
            return NodeRecord(owner=_process_of(owner) if owner else None,
                              processes={name: _process_of(p) for name, p in data["processes"].items()},
                              servers=Started(**data["servers"]))
        if legacy.exists():
            return NodeRecord(owner=None, processes={}, servers=Started(**json.loads(legacy.read_text())))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise StackError(f"the node's record {path} cannot be read ({exc}); see what runs with `ps`, "
                         f"stop it, and remove the file") from None
    return None


def remove_record(run_dir: Path) -> None:
    (run_dir / NODE_RECORD).unlink(missing_ok=True)
    (run_dir / LEGACY_SERVERS_RECORD).unlink(missing_ok=True)


@contextlib.contextmanager
def node_lock(run_dir: Path, timeout_s: float = 120) -> Iterator[None]:
    """One start, stop or change of a node's record at a time: two starts at once would both find
    the node stopped and start it twice."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "node.lock", "w") as lock:  # released when closed; children do not inherit it
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StackError(f"another start or stop of this node has held {run_dir / 'node.lock'} "
                                     f"for {timeout_s:.0f} s") from None
                time.sleep(0.1)
        yield
