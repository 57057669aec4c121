"""The `warp` command: run the local stack, manage the database, explain routing decisions.

    warp run                    everything in the foreground; Ctrl-C stops what it started
    warp start | stop | status  the same in the background (scripts, load tests)
    warp setup                  embedded Postgres + Redis up, migrations, demo data
    warp stack up | down        only the embedded Postgres and Redis
    warp stack secrets          their passwords, made if missing (docker-compose reads them too)
    warp db migrate | demo      schema migrations / demo data (idempotent)
    warp exec -- CMD ...        set up, run CMD, stop what was started for it (make test)
    warp kamailio               Kamailio in the foreground with these settings
    warp rtpengine              rtpengine (media relay) in the foreground with these settings
    warp cdr-emitter            the CDR emitter (Redis stream -> Postgres)
    warp route explain ...      what the engine would do with a call, and why
    warp load lnp|npanxx FILE   bulk-load ported numbers or NPA-NXX homes from CSV
    warp credentials set ...    a trunk's digest username/password, stored as HA1
    warp blocks list | clear IP source addresses blocked for digest brute force
    warp funds show|topup BAN [AMOUNT]  live and ledger balance; top-ups
    warp ledger check           every live balance against its ledger; non-zero exit if one differs
    warp rerate --from T --to T [--account BAN] [--dry-run]  reprice a period's calls, post the differences
    warp snapshot status|rollback       the routing configuration in service
    warp api                    the admin API (HTTP/JSON) on api.listen
    warp api-keys create|list|revoke  admin API keys (a new key is printed once)
    warp rates import --vendor NAME FILE.csv   a vendor rate deck (or --rate-plan NAME) from CSV
    warp draft create|edit|show|publish|drop  routing and price edits, validated before they go live
    warp replay --from T --to T [--draft NAME | --version V]  a period's calls decided again
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, cast

from routing_engine.adapters import migrate
from routing_engine.ops import demo, stack
from routing_engine.settings import Settings, SettingsError, load_settings

log = logging.getLogger("warp")
LEDGER_CHECK_EVERY_S = 60.0  # the companion's ledger check, for warp_ledger_* metrics


def _say(text: str) -> None:
    print(f"warp: {text}", flush=True)


# ------------------------------------------------------------------ set-up

def setup(settings: Settings, with_demo: bool = True) -> stack.Started:
    started = stack.up(settings)
    if started.postgres:
        _say(f"Postgres started on 127.0.0.1:{settings.stack.postgres_port} "
             f"(data in {settings.data_dir / 'postgres'})")
    if started.redis:
        _say(f"Redis started on 127.0.0.1:{settings.stack.redis_port}")
    from routing_engine.adapters import postgres

    with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
        applied = migrate.apply(conn)
        _say(f"migrations applied: {', '.join(applied)}" if applied else "schema up to date")
        if with_demo:
            summary = demo.load(conn)
            _say(f"demo data present: {summary.accounts} accounts, {summary.trunks} trunks, "
                 f"{summary.dids} DIDs, {summary.vendors} vendors, {summary.rates} vendor rates")
    return started


# ------------------------------------------------------------------ processes

def _run_dir(settings: Settings) -> Path:
    return settings.data_dir / "run" / settings.node.name


def _sip_probe_target(settings: Settings) -> tuple[str, int] | None:
    for sock in settings.sip.listen:
        proto, _, hostport = sock.partition(":")
        host, _, port = hostport.rpartition(":")
        if proto == "udp":
            return host.strip("[]"), int(port)
    return None


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path | None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - owned by the child
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)


def _process_names(settings: Settings) -> tuple[str, ...]:
    own_rtpengine = settings.media.enabled and settings.media.managed
    return ("kamailio", "cdr-emitter", *(("rtpengine",) if own_rtpengine else ()))


def start_processes(settings: Settings, log_dir: Path | None,
                    on_start: Callable[[str, subprocess.Popen[bytes]], None] | None = None,
                    ) -> dict[str, subprocess.Popen[bytes]]:
    """Start rtpengine (when this node manages its own), the CDR emitter and Kamailio; wait until
    rtpengine answers an ng ping and Kamailio answers OPTIONS. ``on_start`` hears of each process
    as soon as it runs (the node's record: a start cut short leaves nothing unnamed)."""
    from routing_engine.adapters import sipcheck

    def started(name: str, proc: subprocess.Popen[bytes]) -> None:
        procs[name] = proc
        if on_start is not None:
            on_start(name, proc)

    env = stack.kamailio_env(settings)
    if log_dir:
        log_dir.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    if "rtpengine" in _process_names(settings):
        # before Kamailio: its rtpengine module pings the relay when the workers start
        rtp_log = (log_dir or settings.data_dir / "log" / settings.node.name) / "rtpengine.log"
        started("rtpengine", stack.start_rtpengine(settings, _run_dir(settings), rtp_log))
        _say(f"rtpengine started: ng control on {settings.media.ng_address}, media on "
             f"{settings.media.interface} ports {settings.media.port_min}-{settings.media.port_max} (log {rtp_log})")
    started("cdr-emitter", _spawn([sys.executable, "-m", "routing_engine.entrypoints.cli", "cdr-emitter"], env,
                                  log_dir / "cdr-emitter.log" if log_dir else None))
    if (stale := stack.clear_stale_pid_file(_run_dir(settings) / "kamailio.pid")) is not None:
        _say(f"kamailio's pid file named pid {stale}, which no longer runs (or is a zombie): removed")
    started("kamailio", _spawn(stack.kamailio_command(settings, _run_dir(settings)), env,
                               log_dir / "kamailio.log" if log_dir else None))
    target = _sip_probe_target(settings)
    if target:
        kam = procs["kamailio"]
        if not sipcheck.wait_until_answering(*target, timeout_s=60, is_alive=lambda: kam.poll() is None):
            code = kam.poll()
            stop_processes(procs)
            why = f"exited with code {code}" if code is not None else "did not answer OPTIONS within 60 s"
            where = f" (see {log_dir / 'kamailio.log'})" if log_dir else ""
            raise stack.StackError(f"Kamailio did not come up: it {why}{where}")
    return procs


def stop_processes(procs: dict[str, subprocess.Popen[bytes]], timeout_s: float = 15) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for proc in procs.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _listening(settings: Settings) -> str:
    return ", ".join(settings.sip.listen)


# ------------------------------------------------------------------ the node's record

STOP_ORDER = ("kamailio", "cdr-emitter", "rtpengine")  # no new calls first, then the rest


@dataclass
class _Recorder:
    """The node's record, written again as each process starts."""
    run_dir: Path
    owner: stack.Process | None
    servers: stack.Started
    processes: dict[str, stack.Process] = field(default_factory=dict)

    def save(self) -> None:
        stack.write_record(self.run_dir, stack.NodeRecord(self.owner, dict(self.processes), self.servers))

    def add(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        found = stack.identify_started(proc.pid, [str(a) for a in cast(list[str], proc.args)])
        if found is not None:
            self.processes[name] = found
            self.save()


def _parts(settings: Settings, record: stack.NodeRecord) -> list[str]:
    names = list(_process_names(settings))
    return names + [name for name in record.processes if name not in names]


@dataclass(frozen=True)
class _Part:
    """What runs of one part of the node. A pid is trusted only while it still names the process
    the record saw start; ``left`` are the processes of a dead one that remain (Kamailio's
    workers outlive their main process for a while when it is killed)."""
    name: str
    pid: int | None = None  # while it runs
    left: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.pid is not None:
            return f"{self.name} running (pid {self.pid})"
        if self.left:
            return f"{self.name} not running ({len(self.left)} of its processes remain: pid {_pids(self.left)})"
        return f"{self.name} not running"


def _pids(pids: tuple[int, ...]) -> str:
    return ", ".join(map(str, pids))


def _survey(settings: Settings, record: stack.NodeRecord) -> list[_Part]:
    parts = []
    for name in _parts(settings, record):
        process = record.processes.get(name)
        if process is None:
            parts.append(_Part(name))
        elif stack.is_ours(process):
            parts.append(_Part(name, pid=process.pid))
        else:
            parts.append(_Part(name, left=tuple(stack.group_members(process))))
    return parts


def _take_over(settings: Settings, run_dir: Path) -> tuple[stack.Started | None, bool]:
    """Before `warp run` or `warp start`: find what is left of this node. Returns the servers a
    previous start brought up (their stop is now ours) once leftovers are stopped, or None if the
    node runs (the bool: all of it)."""
    record = stack.read_record(run_dir)
    if record is None:
        return stack.Started(), False
    parts = _survey(settings, record)
    found = ", ".join(map(str, parts))
    all_running = all(part.pid is not None for part in parts)
    if record.owner is not None and stack.is_ours(record.owner):
        _say(f"already running in the foreground: `warp run` (pid {record.owner.pid}) serves this node "
             f"({found}); Ctrl-C there or `make stop` stops it")
        return None, all_running
    if all_running:
        _say(f"already running: {found}; `make stop` stops it")
        return None, True
    if record.processes:
        _say(f"found what is left of node {settings.node.name}: {found}; stopping what is left, then "
             f"starting the node again")
        _stop_recorded(record)
    return record.servers, False


def _stop_recorded(record: stack.NodeRecord, quiet: bool = True) -> None:
    names = [n for n in STOP_ORDER if n in record.processes]
    for name in names + [n for n in record.processes if n not in names]:
        process = record.processes[name]
        pids = stack.stop_process(process)
        if process.pid in pids:
            _say(f"{name} stopped (pid {process.pid})")
        elif pids:
            _say(f"{name}: {len(pids)} processes it left stopped")
        elif not quiet:
            _say(f"{name} was not running")


def _union(a: stack.Started, b: stack.Started) -> stack.Started:
    return stack.Started(postgres=a.postgres or b.postgres, redis=a.redis or b.redis)


# ------------------------------------------------------------------ run, start, stop, status

def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    run_dir = _run_dir(settings)
    with stack.node_lock(run_dir):
        previous, _ = _take_over(settings, run_dir)
        if previous is None:
            return 1
        servers = _union(previous, setup(settings, with_demo=not args.no_demo))
        # from here a start or stop of this node finds this run serving it
        record = _Recorder(run_dir, owner=stack.identify(os.getpid()), servers=servers)
        record.save()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        procs = start_processes(settings, log_dir=None, on_start=record.add)
        _say(f"SIP listening on {_listening(settings)} — Ctrl-C stops everything started here")
        while not stopping and all(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
        exited = [name for name, p in procs.items() if p.poll() is not None]
        if exited and not stopping:
            _say(f"{', '.join(exited)} exited; stopping")
        return 0 if stopping else 1
    finally:
        stop_processes(procs)
        stack.down(settings, servers)
        stack.remove_record(run_dir)
        _say("stopped")


def cmd_start(settings: Settings, args: argparse.Namespace) -> int:
    with stack.node_lock(_run_dir(settings)):
        return _start(settings, args)


def _start(settings: Settings, args: argparse.Namespace) -> int:
    run_dir = _run_dir(settings)
    previous, all_running = _take_over(settings, run_dir)
    if previous is None:
        return 0 if all_running else 1
    started = setup(settings, with_demo=not args.no_demo)
    # which servers this node brought up, this start or an earlier one: `warp stop` stops those
    record = _Recorder(run_dir, owner=None, servers=_union(previous, started))
    record.save()
    log_dir = settings.data_dir / "log" / settings.node.name
    try:
        start_processes(settings, log_dir, on_start=record.add)
    except stack.StackError:
        stack.down(settings, started)
        if previous.postgres or previous.redis:  # an earlier start's servers: still ours to stop
            stack.write_record(run_dir, stack.NodeRecord(None, {}, previous))
        else:
            stack.remove_record(run_dir)
        raise
    _say(f"started in the background; SIP on {_listening(settings)}; logs in {log_dir}; "
         f"stop with `make stop`")
    return 0


def cmd_stop(settings: Settings, args: argparse.Namespace) -> int:
    with stack.node_lock(_run_dir(settings)):
        return _stop(settings)


def _stop(settings: Settings) -> int:
    run_dir = _run_dir(settings)
    record = stack.read_record(run_dir)
    if record is None:
        _say(f"nothing to stop: node {settings.node.name} has no record of a start in {run_dir}")
        return 0
    owner = record.owner
    if owner is not None and stack.is_ours(owner):
        # the foreground run stops what it started, servers included, and removes the record
        os.kill(owner.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while stack.is_ours(owner) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not stack.is_ours(owner) and stack.read_record(run_dir) is None:
            _say(f"`warp run` (pid {owner.pid}) stopped the node")
            return 0
        _say(f"`warp run` (pid {owner.pid}) did not stop the node within 60 s; stopping what it left")
        with contextlib.suppress(ProcessLookupError):
            if stack.is_ours(owner):
                os.kill(owner.pid, signal.SIGKILL)
        record = stack.read_record(run_dir) or record
    _stop_recorded(record, quiet=False)
    stack.down(settings, record.servers)
    stopped = [n for n, s in (("Postgres", record.servers.postgres), ("Redis", record.servers.redis)) if s]
    if stopped:
        _say(f"{' and '.join(stopped)} stopped")
    stack.remove_record(run_dir)
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    """What runs of this node, from its record (a pid counts only while it names the process the
    record saw start). Exit 0 if every part runs, 3 otherwise."""
    record = stack.read_record(_run_dir(settings)) or stack.NodeRecord(None, {}, stack.Started())
    parts = _survey(settings, record)
    for part in parts:
        if part.pid is not None:
            print(f"{part.name:12} running  pid {part.pid}")
        elif part.left:
            print(f"{part.name:12} stopped  {len(part.left)} of its processes remain: pid {_pids(part.left)} "
                  f"(`make start` starts the node again, `make stop` stops them)")
        else:
            print(f"{part.name:12} stopped")
    print(f"{'postgres':12} {'running' if stack.postgres_running(settings) else 'stopped'}")
    print(f"{'redis':12} {'running' if stack.redis_running(settings) else 'stopped'}")
    if record.owner is not None and stack.is_ours(record.owner):
        print(f"{'started by':12} warp run (pid {record.owner.pid}), in the foreground")
    elif record.owner is not None:
        print(f"{'started by':12} warp run (pid {record.owner.pid}), which is gone: `make stop` stops what it left")
    elif record.processes:
        print(f"{'started by':12} warp start, in the background")
    return 0 if all(part.pid is not None for part in parts) else 3


def cmd_exec(settings: Settings, args: argparse.Namespace) -> int:
    command = [c for c in args.command if c != "--"]
    if not command:
        raise SystemExit("warp exec: give a command after --")
    started = setup(settings, with_demo=False)
    try:
        child = subprocess.Popen(command)
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                # the command got the same Ctrl-C: let it stop what it started, then stop ours
                continue
    finally:
        stack.down(settings, _hand_over(settings, started))


def _hand_over(settings: Settings, started: stack.Started) -> stack.Started:
    """The servers `warp exec` started that it may stop: none while a node started meanwhile
    (`make start` beside `make test`) runs on them; that node's stop stops them instead."""
    if not (started.postgres or started.redis):
        return started
    for path in sorted((settings.data_dir / "run").glob(f"*/{stack.NODE_RECORD}")):
        with stack.node_lock(path.parent):
            record = stack.read_record(path.parent)
            if record is None or not any(stack.is_ours(p) for p in record.processes.values()):
                continue
            stack.write_record(path.parent, replace(record, servers=_union(record.servers, started)))
        _say(f"the embedded servers stay up: node {path.parent.name} runs on them, and its stop stops them")
        return stack.Started()
    return started


def cmd_kamailio(settings: Settings, args: argparse.Namespace) -> int:
    cmd = stack.kamailio_command(settings, _run_dir(settings))
    os.execve(cmd[0], cmd, stack.kamailio_env(settings))


def cmd_rtpengine(settings: Settings, args: argparse.Namespace) -> int:
    """rtpengine in the foreground with these settings, logging to stderr (docker-compose)."""
    cmd = stack.rtpengine_command(settings, _run_dir(settings))
    os.execv(cmd[0], cmd)


def cmd_cdr_emitter(settings: Settings, args: argparse.Namespace) -> int:
    """The companion: CDRs and ledger entries from Redis streams into Postgres, balance seeding,
    routing snapshots published on every configuration change, gateway health probes."""
    import threading

    # the companion's own multiprocess metric folder, set before prometheus_client is imported
    stack.reset_metrics_dir(stack.metrics_dir(settings, "companion"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(stack.metrics_dir(settings, "companion"))

    from routing_engine import metrics
    from routing_engine.adapters import metric_sources, redis_store
    from routing_engine.adapters.health import Prober
    from routing_engine.adapters.money import LEDGER_STREAM, Limits, Wallet, ledger_entry
    from routing_engine.bootstrap import quality_aggregator, snapshot_store, spool_dir
    from routing_engine.companion import publisher
    from routing_engine.companion.emitter import Emitter, LedgerSink, PostgresSink, replay_spool, seed_balances

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    bigquery = bool(settings.cdr.bigquery_table)

    def stream_for(name: str, group: str = settings.cdr.group, shared: bool = False) -> redis_store.CdrStream:
        client = redis_store.connect(settings.redis_url, 5000)
        stream = redis_store.CdrStream(client, name, group, settings.cdr.stream_maxlen, shared=shared)
        while not stop.is_set():
            try:
                stream.ensure_group()
                break
            except Exception as exc:
                log.warning("Redis not reachable yet (%s); retrying", exc)
                stop.wait(1)
        return stream

    cdrs = stream_for(settings.cdr.stream, shared=bigquery)
    ledger = stream_for(LEDGER_STREAM)
    wallet = Wallet(ledger.client)
    last_seed = [0.0]

    def ledger_idle() -> None:
        if time.monotonic() - last_seed[0] >= 30:
            seeded = seed_balances(settings.database_url, wallet)
            last_seed[0] = time.monotonic()
            if seeded:
                log.info("seeded %d live balances from the ledger", seeded)

    consumer = f"{settings.node.name}-emitter"
    workers = [
        Emitter(stream=cdrs, sink=PostgresSink(settings.database_url, settings.database.connect_timeout_s,
                                               wallet=Wallet(cdrs.client), limits=Limits(cdrs.client),
                                               retention_days=settings.cdr.retention_days),
                consumer=consumer, batch_size=settings.cdr.batch_size, batch_seconds=settings.cdr.batch_seconds,
                on_idle=lambda: replay_spool(settings, cdrs)),
        Emitter(stream=ledger, sink=LedgerSink(settings.database_url, settings.database.connect_timeout_s),
                consumer=consumer, batch_size=settings.cdr.batch_size, batch_seconds=settings.cdr.batch_seconds,
                on_idle=ledger_idle, parse=ledger_entry, what="ledger entries"),
    ]
    if bigquery:
        from routing_engine.adapters.bigquery import BigQuerySink

        workers.append(Emitter(stream=stream_for(settings.cdr.stream, settings.cdr.bigquery_group, shared=True),
                               sink=BigQuerySink(settings.cdr.bigquery_table), consumer=consumer,
                               batch_size=settings.cdr.batch_size, batch_seconds=settings.cdr.batch_seconds,
                               what="CDRs for BigQuery"))
    threads = [threading.Thread(target=w.run, args=(stop.is_set,), name=w.what) for w in workers]
    # vendor quality: the window of call outcomes judged here, the verdicts published for the workers
    quality = quality_aggregator(settings, redis_store.connect(settings.redis_url, 5000))
    threads.append(threading.Thread(target=quality.run, args=(stop.is_set,), name="quality"))
    latest: list[Any] = [None]
    threads.append(threading.Thread(target=publisher.follow, name="snapshots",
                                    args=(settings, snapshot_store(settings), stop,
                                          lambda snapshot: latest.__setitem__(0, snapshot))))
    h = settings.health
    prober = Prober(redis_store.connect(settings.redis_url, 2000), h.probe_timeout_ms / 1000, h.down_after,
                    h.probe_source)

    def probe_loop() -> None:
        while not stop.wait(h.probe_interval_ms / 1000):
            snapshot = latest[0]
            if snapshot is None:
                continue
            try:
                prober.probe([gw for v in snapshot.vendors.values() for gw in v.gateways if gw.probe and gw.enabled])
            except Exception as exc:
                log.warning("gateway probes skipped: %s", exc)

    threads.append(threading.Thread(target=probe_loop, name="probes"))
    checked: list[Any] = [None]

    def ledger_loop() -> None:  # `warp ledger check`, for the metrics (warp_ledger_accounts_differing)
        from routing_engine.adapters import ledger

        client = redis_store.connect(settings.redis_url, 5000)
        while not stop.wait(LEDGER_CHECK_EVERY_S if checked[0] is not None else 5):
            try:
                checked[0] = report = ledger.check(settings.database_url, client)
            except Exception as exc:
                log.warning("ledger check skipped: %s", exc)
                continue
            for d in report.differences:
                log.error("ledger: %s", ledger.describe(d))

    threads.append(threading.Thread(target=ledger_loop, name="ledger check"))
    server = None
    if settings.metrics.listen:
        m = settings.metrics
        ctl = m.kamailio_ctl or str(_run_dir(settings) / "kamailio_ctl")
        metrics.register_source("kamailio",
                                metric_sources.kamailio_source(m.kamcmd, ctl if ":" in ctl else f"unix:{ctl}"))
        metrics.register_source("redis", metric_sources.redis_source(
            redis_store.connect(settings.redis_url, 2000), settings.cdr.stream,
            lambda: {vid: v.name for vid, v in latest[0].vendors.items()} if latest[0] else {}))
        metrics.register_source("snapshot", metric_sources.snapshot_source(snapshot_store(settings)))
        metrics.register_source("spool", metric_sources.spool_source(spool_dir(settings)))
        metrics.register_source("ledger", metric_sources.ledger_source(lambda: checked[0]))
        if settings.media.enabled:
            metrics.register_source("rtpengine", metric_sources.rtpengine_source(
                redis_store.connect(settings.redis_url, 2000), settings.media.ng_address))
        server = metrics.serve(m.listen, metrics.registry(stack.metrics_dir(settings)))
    log.info("emitter following %s and %s as %s", settings.cdr.stream, LEDGER_STREAM, consumer)
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join()
    if server is not None:
        server.shutdown()
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.adapters import postgres

    with postgres.connect(settings.database_url) as conn:
        applied = migrate.apply(conn)
    _say(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.adapters import postgres

    with postgres.connect(settings.database_url) as conn:
        summary = demo.load(conn)
    _say(f"demo data present: {summary}")
    return 0


def cmd_load(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.adapters import postgres
    from routing_engine.ops import bulk

    path = Path(args.file)
    table, rows = (bulk.LNP, bulk.lnp_rows(path)) if args.what == "lnp" else (bulk.NPANXX, bulk.npanxx_rows(path))
    try:
        with postgres.connect(settings.database_url) as conn:
            count = bulk.load(conn, table, rows)
    except (bulk.BulkError, OSError) as exc:
        print(f"warp: {path}: {exc} (nothing loaded)", file=sys.stderr)
        return 1
    _say(f"{count} rows loaded into {table.name}")
    return 0


def cmd_credentials(settings: Settings, args: argparse.Namespace) -> int:
    """Store a trunk's digest credentials as HA1 hashes; the password is read, never stored."""
    import getpass

    from routing_engine.adapters import postgres
    from routing_engine.domain.credentials import ha1_md5, ha1_sha256

    password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("password: ")
    if len(password) < 8:
        print("warp: refusing a password shorter than 8 characters", file=sys.stderr)
        return 2
    realm = settings.auth.realm
    with postgres.connect(settings.database_url) as conn:
        ban, _, name = args.trunk.partition("/")
        row = conn.execute("SELECT t.id, t.account_id FROM trunks.trunks t JOIN accounts.accounts a"
                           " ON a.id = t.account_id WHERE a.ban = %s AND t.name = %s AND t.deleted_at IS NULL",
                           (ban, name)).fetchone()
        if row is None:
            print(f"warp: no trunk {args.trunk!r} (give BAN/trunk-name)", file=sys.stderr)
            return 1
        conn.execute(
            "INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1, ha1_sha256)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (username, realm) DO UPDATE SET"
            " trunk_id = EXCLUDED.trunk_id, account_id = EXCLUDED.account_id, ha1 = EXCLUDED.ha1,"
            " ha1_sha256 = EXCLUDED.ha1_sha256, deleted_at = NULL",
            (row[1], row[0], args.username, realm, ha1_md5(args.username, realm, password),
             ha1_sha256(args.username, realm, password)))
    _say(f"credentials of {args.trunk} set for user {args.username!r} in realm {realm!r} (stored as HA1)")
    return 0


def cmd_funds(settings: Settings, args: argparse.Namespace) -> int:
    """Top up a prepaid balance (or adjust one), and show live and ledger balances."""
    import uuid as uuidlib
    from decimal import Decimal, InvalidOperation

    from routing_engine.adapters import ledger, postgres, redis_store
    from routing_engine.adapters.money import Wallet
    from routing_engine.domain.rating import from_micros, to_micros

    with postgres.connect(settings.database_url) as conn:
        row = conn.execute("SELECT account_id, billing_type, credit_limit, balance FROM billing.account_balances"
                           " WHERE ban = %s", (args.ban,)).fetchone()
    if row is None:
        print(f"warp: no account with BAN {args.ban!r}", file=sys.stderr)
        return 1
    account_id, billing_type, credit_limit, ledger_balance = row
    wallet = Wallet(redis_store.connect(settings.redis_url, 2000))
    if args.action == "topup":
        try:
            amount = Decimal(args.amount or "")
        except InvalidOperation:
            amount = Decimal(0)
        if amount <= 0 or amount != amount.quantize(Decimal("0.000001")):
            print("warp: give a positive amount with at most 6 decimal places", file=sys.stderr)
            return 2
        now = datetime.now(UTC)
        with postgres.connect(settings.database_url) as conn:
            posted = ledger.post(conn, wallet, account_id, to_micros(amount), "topup", f"topup-{uuidlib.uuid4()}", now)
        _say(f"{args.ban}: +{amount}; live balance {from_micros(posted.balance_micros)}"
             " (written to the ledger by the companion)")
        return 0
    live_micros = wallet.balance(account_id)
    print(f"account        {args.ban} ({billing_type}, credit limit {credit_limit})")
    print(f"live balance   {from_micros(live_micros) if live_micros is not None else 'not loaded yet'}")
    print(f"reserved       {from_micros(wallet.reserved(account_id))} by calls in progress")
    print(f"ledger balance {ledger_balance} (Postgres; charges arrive within a batch interval)")
    return 0


def cmd_ledger(settings: Settings, args: argparse.Namespace) -> int:
    """Every live balance (Redis) against its Postgres ledger plus what is in flight in the
    stream; names each account that differs. Exit 0: none differs; 1: one or more do."""
    from routing_engine.adapters import ledger, redis_store

    report = ledger.check(settings.database_url, redis_store.connect(settings.redis_url, 5000))
    for d in report.differences:
        print(f"DIFFERS  {ledger.describe(d)}")
    if report.dead_letters:  # moved the live balance, never reached the ledger: a difference above
        print(f"warp: {report.dead_letters} ledger entries dead-lettered (see warp:ledger:dead and their _error)")
    _say(f"{report.accounts} live balances checked ({report.not_loaded} accounts not loaded yet, "
         f"{report.in_flight} ledger entries in flight): "
         + ("all match their ledger" if report.ok else f"{len(report.differences)} differ"))
    return 0 if report.ok else 1


def cmd_rerate(settings: Settings, args: argparse.Namespace) -> int:
    """Reprice the charged calls of a period with the prices in force now; post each call's
    difference as a ledger adjustment through the one money path (idempotent: a rerun posts
    nothing new)."""
    from uuid import UUID

    from routing_engine.adapters import ledger, postgres, redis_store

    try:
        start, end = (_moment(t) for t in (args.start, args.end))
    except ValueError as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 2
    account = None
    if args.account:
        with postgres.connect(settings.database_url) as conn:
            row = conn.execute("SELECT id FROM accounts.accounts WHERE ban = %s OR id::text = %s",
                               (args.account, args.account)).fetchone()
        if row is None:
            print(f"warp: no account {args.account!r} (give its BAN or id)", file=sys.stderr)
            return 1
        account = UUID(str(row[0]))
    report = ledger.rerate(settings.database_url, redis_store.connect(settings.redis_url, 5000), start, end,
                           account, realm=settings.auth.realm, dry_run=args.dry_run)
    for line in report.skipped:
        print(f"SKIPPED  {line}")
    verb = "would post" if args.dry_run else "posted"
    _say(f"{report.calls} charged calls from {start.isoformat()} to {end.isoformat()}: {verb} {report.adjusted}"
         f" adjustments totalling {report.total} (credit to accounts), {report.unchanged} already right,"
         f" {len(report.skipped)} skipped")
    return 0


def _moment(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO date or time: {text!r}") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def cmd_blocks(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.adapters import redis_store
    from routing_engine.adapters.registrations import Defence

    a = settings.auth
    defence = Defence(redis_store.connect(settings.redis_url, 2000), a.failures_before_block,
                      a.failure_window_s, a.block_s)
    if args.action == "clear":
        if not args.ip:
            print("warp: blocks clear needs an IP address", file=sys.stderr)
            return 2
        _say(f"{args.ip} unblocked" if defence.clear(args.ip) else f"{args.ip} was not blocked")
        return 0
    blocks = defence.blocks()
    for ip, ttl in blocks:
        print(f"{ip:40} blocked for {ttl} s more")
    if not blocks:
        _say("no source is blocked")
    return 0


def cmd_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    """The routing snapshot in service: its version and age; roll back one step."""
    from routing_engine.bootstrap import snapshot_store

    store = snapshot_store(settings)
    if args.action == "rollback":
        try:
            now = store.rollback()
        except LookupError as exc:
            print(f"warp: {exc}", file=sys.stderr)
            return 1
        _say(f"rolled back: {now.version} is in service again (was {now.previous}); workers switch within "
             f"{settings.snapshot.check_interval_ms} ms")
        return 0
    current = store.current()
    if current is None:
        print("no snapshot published yet (is the companion running?)")
        return 3
    age = (datetime.now(UTC) - current.built_at).total_seconds()
    print(f"version    {current.version}")
    print(f"built      {current.built_at.isoformat(timespec='seconds')} ({age:.0f} s ago)")
    print(f"published  {current.published_at.isoformat(timespec='seconds')}")
    print(f"previous   {current.previous or '-'}")
    return 0


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "up":
        setup(settings, with_demo=False)
    elif args.action == "secrets":  # where they are, never what they are
        stack.ensure_secrets(settings)
        _say(f"passwords of the embedded Postgres (role warp) and Redis in {settings.secrets_dir}: "
             f"postgres.password, redis.password, pgpass (PGPASSFILE for psql)")
    else:
        stack.down(settings)
        _say("embedded Postgres and Redis stopped")
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.entrypoints.api.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return serve(settings)


def _delegate(module: str, config: str | None, rest: list[str], entry: str = "main") -> int:
    """Commands with a parser of their own (warp api-keys, warp rates, warp draft, warp replay)."""
    import importlib

    main_of = getattr(importlib.import_module(module), entry)
    return int(main_of((["--config", config] if config else []) + rest))


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    from routing_engine.adapters import redis_store
    from routing_engine.bootstrap import decider, load_snapshot
    from routing_engine.domain.decision import CallRequest, Relay
    from routing_engine.entrypoints.api.explanation import address_owner, explanation, trunk_label

    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    snapshot = load_snapshot(settings)
    trunk_id = None
    if args.trunk:
        matches = [t for t in snapshot.trunks.values()
                   if args.trunk in (str(t.id), t.name) or args.trunk == trunk_label(snapshot, t)]
        if len(matches) != 1:
            print(f"warp: --trunk {args.trunk!r} matches {len(matches)} trunks; use its id or BAN/name",
                  file=sys.stderr)
            return 2
        trunk_id = matches[0].id
    elif not args.source:
        print("warp: give --source IP or --trunk", file=sys.stderr)
        return 2
    client = redis_store.connect(settings.redis_url, settings.redis.socket_timeout_ms)
    request = CallRequest(call_id=args.call_id, source_ip=args.source or "", source_port=args.port,
                          transport=args.transport, dialed=args.to, caller=args.caller or "")
    # decided as a SIP worker decides (the API's explain uses the same decider)
    decision = decider(settings, client, fresh=True)(request, snapshot, at, trunk_id=trunk_id)
    address = address_owner(snapshot, args.source, args.port, args.transport, args.to) \
        if args.source and not args.trunk else None
    result = explanation(decision, at, address)  # the same document the admin API answers
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    trace = decision.trace
    print(f"snapshot      {snapshot.version}   at {at.isoformat()}")
    if address is not None:
        print(f"address       {address['source']} -> {address['trunk'] or 'no trunk'}: {address['why']}")
        for m in cast(list[dict[str, Any]], address["matches"]):
            print(f"  matches     {m['entry']} of {m['trunk']} (tech prefix {m['tech_prefix'] or 'none'})")
    for key in ("auth", "account", "numbers", "plan", "lrn", "jurisdiction", "rating", "blocked", "error", "number"):
        if key in trace:
            print(f"{key:13} {_flat(trace[key])}")
    for c in cast(list[dict[str, Any]], trace.get("candidates", [])):
        verdict = "kept   " if c["kept"] else "dropped"
        billed = f", billed {c['billing']}" if "billing" in c else ""  # first/next/minimum/fee
        detail = f"rate {c['rate']} (prefix {c['prefix']}{billed})" if "rate" in c else ""
        reason = f" — {c['reason']}" if "reason" in c else ""
        print(f"  {verdict} {c['vendor']:20} {detail}{reason}")
    if result["decision"] == "relay":
        print("routes, in order:")
        for i, r in enumerate(cast(list[dict[str, str]], result["routes"]), start=1):
            caller = f" from {r['from']}" if r["from"] else ""
            print(f"  {i}. {r['vendor']} via {r['gateway']} at {r['rate']}/min: {r['ruri']}{caller}")
        policy = decision.policy if isinstance(decision, Relay) else None
        if policy:
            print(f"failover      on {sorted(policy.failover_codes)}, at most {policy.max_attempts} attempts")
    else:
        print(f"refused       {result['code']} {result['reason']}")
    return 0


def _flat(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items() if v is not None)
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warp", description="WARP routing core")
    parser.add_argument("--config", help="settings file (default: $WARP_CONFIG or config/warp.yaml)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "start"):
        p = sub.add_parser(name)
        p.add_argument("--no-demo", action="store_true", help="do not load the demo data")
    sub.add_parser("stop")
    sub.add_parser("status")
    sub.add_parser("setup")
    p = sub.add_parser("stack")
    p.add_argument("action", choices=["up", "down", "secrets"])
    p = sub.add_parser("db")
    p.add_argument("action", choices=["migrate", "demo"])
    p = sub.add_parser("exec")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("load", help="bulk-load a CSV file: lnp (tn,lrn) or npanxx")
    p.add_argument("what", choices=["lnp", "npanxx"])
    p.add_argument("file")
    p = sub.add_parser("credentials", help="set a trunk's digest credentials (password on stdin)")
    p.add_argument("action", choices=["set"])
    p.add_argument("--trunk", required=True, help="BAN/trunk-name, e.g. BAN1001/trunk-2")
    p.add_argument("--username", required=True)
    p = sub.add_parser("snapshot", help="the routing snapshot in service; roll back one step")
    p.add_argument("action", choices=["status", "rollback"])
    p = sub.add_parser("funds", help="an account's balance: show, or top up")
    p.add_argument("action", choices=["show", "topup"])
    p.add_argument("ban")
    p.add_argument("amount", nargs="?")
    p = sub.add_parser("ledger", help="check every live balance against its ledger")
    p.add_argument("action", choices=["check"])
    p = sub.add_parser("rerate", help="reprice a period's calls and post the differences as adjustments")
    p.add_argument("--from", dest="start", required=True, help="ISO date/time (UTC unless given), inclusive")
    p.add_argument("--to", dest="end", required=True, help="ISO date/time, exclusive")
    p.add_argument("--account", help="only this account (BAN or id)")
    p.add_argument("--dry-run", action="store_true", help="report what would be posted, post nothing")
    p = sub.add_parser("blocks", help="source IPs blocked for digest brute force")
    p.add_argument("action", choices=["list", "clear"])
    p.add_argument("ip", nargs="?")
    sub.add_parser("kamailio")
    sub.add_parser("rtpengine", help="rtpengine in the foreground with these settings")
    sub.add_parser("cdr-emitter", aliases=["companion"])
    p = sub.add_parser("route")
    rsub = p.add_subparsers(dest="route_cmd", required=True)
    e = rsub.add_parser("explain", help="explain how a hypothetical call would be routed")
    e.add_argument("--source", help="source IP of the calling switch")
    e.add_argument("--trunk", help="or the trunk: its id, or BAN/name (e.g. BAN1001/trunk-1)")
    e.add_argument("--call-id", default="explain", help="seeds the weighted strategy like a real call")
    e.add_argument("--port", type=int, default=5060)
    e.add_argument("--transport", default="udp")
    e.add_argument("--to", required=True, help="dialed number as the customer sends it")
    e.add_argument("--from", dest="caller", help="calling number")
    e.add_argument("--at", help="ISO time of the call (default: now)")
    e.add_argument("--json", action="store_true")
    sub.add_parser("api", help="serve the admin API on api.listen")
    for name, text in (("api-keys", "admin API keys: create | list | revoke"),
                       ("rates", "rate decks from CSV: import --vendor NAME FILE.csv"),
                       ("draft", "routing and price edits, validated, not yet published: create | edit | show |"
                                 " publish | drop"),
                       ("replay", "re-decide a period's calls on a draft or version: --from --to [--draft NAME]")):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    args, extra = parser.parse_known_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)

    def _after(command: str) -> list[str]:
        # every word after the command, in order: `warp replay --from ...` starts with options,
        # which argparse would set aside from the rest
        return given[given.index(command) + 1:]

    if extra and args.cmd not in ("api-keys", "rates", "draft", "replay"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"warp: settings: {exc}", file=sys.stderr)
        return 2
    handlers: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
        "run": cmd_run, "start": cmd_start, "stop": cmd_stop, "status": cmd_status,
        "exec": cmd_exec, "kamailio": cmd_kamailio, "cdr-emitter": cmd_cdr_emitter, "companion": cmd_cdr_emitter,
        "stack": cmd_stack, "route": cmd_explain, "load": cmd_load,
        "credentials": cmd_credentials, "blocks": cmd_blocks, "funds": cmd_funds, "snapshot": cmd_snapshot,
        "ledger": cmd_ledger, "rerate": cmd_rerate,
        "api": cmd_api, "rtpengine": cmd_rtpengine,
        "api-keys": lambda s, a: _delegate("routing_engine.entrypoints.api.keys_cli", a.config, a.rest + extra),
        "rates": lambda s, a: _delegate("routing_engine.entrypoints.api.rates_cli", a.config, a.rest + extra),
        "draft": lambda s, a: _delegate("routing_engine.entrypoints.whatif_cli", a.config, _after("draft")),
        "replay": lambda s, a: _delegate("routing_engine.entrypoints.whatif_cli", a.config, _after("replay"),
                                         "replay_main"),
        "setup": lambda s, a: (setup(s), 0)[1],
        "db": lambda s, a: cmd_migrate(s, a) if a.action == "migrate" else cmd_demo(s, a),
    }
    try:
        return int(handlers[args.cmd](settings, args))
    except (stack.StackError, migrate.MigrationError) as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
