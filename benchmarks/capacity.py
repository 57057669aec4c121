"""Capacity side by side with native Kamailio (issues 10 and 17): the same Kamailio binary, the
same workers and the same SIPp load through five configurations —

  A     WARP: kamailio/kamailio.cfg + the KEMI module, the full call path (ACL, LRN from cache,
        jurisdiction, rating, LCR, limits, funds, dialog, topology hiding, CDR to Redis with the
        companion running);
  A0    A with topology hiding off for the benchmark trunk (what topos costs);
  B     native, the same job: benchmarks/native/full.cfg — `permissions` ACL, `lcr` least cost,
        `dialog` profiles for concurrent calls, `pipelimit` for CPS, `cnxcc` credit control (in
        a Redis of its own), `acc` CDRs into Postgres, `topos` in Redis; from the same generated
        data and terms (benchmarks/capacity_data.py);
  Bmin  ("B-min") native, the least: benchmarks/native/lcr.cfg — `permissions` + `lcr` + dialog;
  C     null: benchmarks/native/null.cfg — a stateful proxy relaying to one gateway: the ceiling
        of this machine and this load generator.

For each: the highest call rate with < 0.1% failed calls (doubling ramp, then bisection); at
the common rate (the first step), CPU time per call of the whole node — every process but SIPp
(Kamailio, the companion, Redis, Postgres), each process family's idle rate measured just
before the step and subtracted — and of Kamailio alone, Redis commands per call (INFO
commandstats of every Redis of the node), Python callbacks per call (A, A0: the SIP workers'
warp_kemi_callbacks_total, read from their metric files), INVITE->100 / INVITE->180
percentiles from SIPp's response-time trace, RSS and PSS of all Kamailio processes; and whether
SIPp itself was short of CPU. Calls are INVITE, 100/180/200, ACK, a short hold, BYE, 200.

Every configuration runs ``reps`` times, interleaved (A, A0, B, Bmin, C, A, ...), each run of A
or A0 on a flushed Redis and B on a fresh Redis of its own; the result's flat keys are the
medians over the runs, ``spread`` holds their min and max. ``state_growth`` runs A twice on the
same Redis and reports which keys stay behind.

Every process started here runs in its own process group and is stopped on the way out,
also on Ctrl-C or an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import capacity_data
from routing_engine.adapters import sipcheck
from routing_engine.ops import stack
from routing_engine.settings import PROJECT_ROOT, Settings, load_settings

WARP_CLI = [sys.executable, "-m", "routing_engine.entrypoints.cli"]


HERE = Path(__file__).resolve().parent
SIPP = "/usr/bin/sipp"
PROXY, CUSTOMER, VENDOR, PORT = "127.0.0.120", "127.0.0.121", "127.0.0.131", 5060
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONFIGS = {"A": "WARP engine (KEMI, full call path)",
           "A0": "WARP engine, topology hiding off for the benchmark trunk (what topos costs)",
           "B": "native, the same job: permissions + lcr + dialog profiles + pipelimit + cnxcc + acc + topos",
           "Bmin": "native permissions + lcr + dialog (B-min)",
           "C": "native null stateful proxy"}
LABELS = {"Bmin": "B-min"}
REDIS_SERVER = "/usr/bin/redis-server"
# the flat figures of every configuration in results.json (the medians over the repetitions)
SUMMARY_FIGURES = ("node_cpu_ms_per_call", "cpu_ms_per_call", "max_cps", "redis_cmds_per_call",
                   "py_callbacks_per_call", "invite_100_p99_ms")


@dataclass(frozen=True)
class Options:
    step_s: float = 6.0  # load per step
    start_rate: int = 100  # first step: the common rate at which CPU per call and latency are compared
    max_rate: int = 3200
    bisections: int = 3
    hold_ms: int = 500
    children: int = 4
    tcp_children: int = 2
    warmup_calls: int = 150
    shm_mb: int = 512  # the same for every configuration; 128 MB runs out of transactions near 900 calls/s
    configs: tuple[str, ...] = ("A", "A0", "B", "Bmin", "C")
    profile_s: int = 0  # > 0: first profile A's workers with py-spy under the common rate for this long
    reps: int = 3  # runs of every configuration; medians and spread reported


QUICK = Options()
FULL = Options(step_s=20.0, bisections=5, hold_ms=1000, warmup_calls=500)


# ------------------------------------------------------------------ /proc readings

def group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    pids.append(int(entry))
    return pids


def children_of(parent: int) -> list[int]:
    """``parent`` and its direct children (a postmaster and its backends)."""
    pids = [parent]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    pids.append(int(entry))
    return pids


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings: a process born in between counts from zero, one
    that ended in between is lost (the node's processes live as long as the node)."""
    return sum(max(cpu - before.get(pid, 0.0), 0.0) for pid, cpu in after.items())


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def memory_kb(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                name, _, rest = line.partition(":")
                if name == "Rss":
                    rss += int(rest.split()[0])
                elif name == "Pss":
                    pss += int(rest.split()[0])
    return rss, pss


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------ processes

def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 10) -> None:
    stack.stop_group(proc, timeout_s)
    # a worker outliving its main process would still hold the port
    for pid in group_pids(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def started(cmd: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, stopped (the whole group) when the block ends."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        _stop(proc)


def _bench_environ(settings_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("WARP_") or k.startswith("WARP_STACK__")) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(settings_env)
    return env


@dataclass
class Node:
    """A running configuration: the Kamailio process group, and what else it needs."""

    name: str
    kamailio: subprocess.Popen[bytes]
    helpers: list[int] = field(default_factory=list)  # process groups counted apart (A's companion)
    redis_pid: int | None = None
    # every process family of the node but Kamailio, by name: how to find its processes now
    others: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    redis_urls: list[str] = field(default_factory=list)  # every Redis of the node (commandstats)
    callbacks_dir: Path | None = None  # the SIP workers' metric files (A, A0: Python callbacks)

    def kamailio_pids(self) -> list[int]:
        return group_pids(self.kamailio.pid)

    def helper_cpu(self) -> float:
        pids = [p for g in self.helpers for p in group_pids(g)]
        return cpu_seconds(pids + ([self.redis_pid] if self.redis_pid else []))

    def families(self) -> dict[str, list[int]]:
        """The node's processes by family, as they are now."""
        return {"kamailio": self.kamailio_pids(), **{name: find() for name, find in self.others.items()}}


def _pid_file(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return None


def _embedded_families(settings: Settings) -> dict[str, Callable[[], list[int]]]:
    """The embedded Redis and Postgres (postmaster and backends): part of every node's cost."""
    redis_pid = _pid_file(settings.data_dir / "redis" / "redis.pid")
    pg_pid = _pid_file(settings.data_dir / "postgres" / "postmaster.pid")
    out: dict[str, Callable[[], list[int]]] = {}
    if redis_pid:
        out["redis"] = lambda: [redis_pid]
    if pg_pid:
        out["postgres"] = lambda: children_of(pg_pid)
    return out


def free_port(low: int = 20000, high: int = 32767) -> int:
    """A loopback TCP port nobody listens on, below 32768: cnxcc keeps Redis's port in a
    signed short (a port above 32767 becomes negative and the module fails to start)."""
    import random
    import socket

    for port in random.sample(range(low, high + 1), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


@contextlib.contextmanager
def native_redis(workdir: Path) -> Iterator[tuple[int, int]]:
    """Configuration B's Redis (cnxcc cannot give a password): loopback only, empty, persisted
    like the embedded one (append-only, fsync every second). Yields (port, pid)."""
    directory = workdir / "redis"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    port = free_port()
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
           "--dir", str(directory), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    with started(cmd, directory / "redis.log") as proc:
        deadline = time.monotonic() + 20
        while not stack.port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"B's Redis did not start; see {directory / 'redis.log'}")
            time.sleep(0.05)
        yield port, proc.pid


def _wait_answering(proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> None:
    if not sipcheck.wait_until_answering(PROXY, PORT, timeout_s, is_alive=lambda: proc.poll() is None):
        raise RuntimeError(f"Kamailio did not come up; see {log}:\n{log.read_text(errors='replace')[-3000:]}")


def _native_command(settings: Settings, cfg: str, run_dir: Path, opts: Options, defines: dict[str, str]) -> list[str]:
    cmd = [settings.kamailio.binary, "-f", str(HERE / "native" / cfg), "-DD", "-E",
           "-m", str(settings.kamailio.shm_mb), "-M", str(settings.kamailio.pkg_mb), "-Y", str(run_dir),
           "-P", str(run_dir / "kamailio.pid"), "-l", f"udp:{PROXY}:{PORT}"]
    for name, value in {"BENCH_CHILDREN": str(opts.children), "BENCH_TCP_CHILDREN": str(opts.tcp_children),
                        "BENCH_LOG_LEVEL": str(settings.kamailio.log_level), **defines}.items():
        cmd += ["-A", f"{name}={value}"]
    return cmd


@contextlib.contextmanager
def node(name: str, env: dict[str, str], settings: Settings, opts: Options, workdir: Path,
         native_db_url: str, rules: int) -> Iterator[Node]:
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = workdir / "kamailio.log"
    with contextlib.ExitStack() as stack_:
        if name in ("A", "A0"):
            warp = load_settings(environ=env)
            kenv = stack.kamailio_env(warp, env)
            emitter = stack_.enter_context(started([*WARP_CLI, "cdr-emitter"],
                                                   workdir / "companion.log", env=kenv))
            kam = stack_.enter_context(started(stack.kamailio_command(warp, run_dir), log, env=kenv))
            redis_pid = None
            if warp.embedded_redis:
                redis_pid = _pid_file(warp.data_dir / "redis" / "redis.pid")
            running = Node(name, kam, helpers=[emitter.pid], redis_pid=redis_pid,
                           others={"companion": lambda: group_pids(emitter.pid), **_embedded_families(warp)},
                           redis_urls=[warp.redis_url], callbacks_dir=stack.metrics_dir(warp, "kamailio"))
        else:
            families = _embedded_families(settings)
            redis_urls = [settings.redis_url]
            native_env = None
            if name in ("B", "Bmin"):
                defines = {"BENCH_RULE_HASH": str(1 << max(7, rules.bit_length()))}
                if name == "B":
                    port, server = stack_.enter_context(native_redis(workdir))
                    families["native_redis"] = lambda: [server]
                    redis_urls.append(f"redis://127.0.0.1:{port}/0")
                    cap = settings.sip.max_call_duration_s
                    defines.update({
                        "BENCH_TOPOS_REDIS": f'"name=topos;addr=127.0.0.1;port={port};db=0"',
                        "BENCH_CNXCC_REDIS": f'"addr=127.0.0.1;port={port};db=1"',
                        "BENCH_MAX_DURATION": str(cap),
                        "BENCH_TOPOS_EXPIRE": str(cap + settings.sip.fr_inv_timeout_ms // 1000 + 180),
                    })
                    # what each part costs: WARP_BENCH_B_WITHOUT=cnxcc,topos,acc leaves those out
                    for part in filter(None, os.environ.get("WARP_BENCH_B_WITHOUT", "").split(",")):
                        defines[f"BENCH_WITHOUT_{part.strip().upper()}"] = "1"
                    with psycopg.connect(native_db_url, autocommit=True) as conn:  # this run's CDRs only
                        conn.execute("TRUNCATE acc, missed_calls")
                cmd = _native_command(settings, "full.cfg" if name == "B" else "lcr.cfg", run_dir, opts, defines)
                # the URL carries the database password: the environment, not the command line (ps)
                native_env = {**os.environ, "BENCH_DB_URL": native_db_url.replace("postgresql://", "postgres://")}
            else:
                cmd = _native_command(settings, "null.cfg", run_dir, opts, {"BENCH_GATEWAY": f'"{VENDOR}:{PORT}"'})
            running = Node(name, stack_.enter_context(started(cmd, log, env=native_env)), others=families,
                           redis_urls=redis_urls)
        _wait_answering(running.kamailio, log)
        yield running


# ------------------------------------------------------------------ one load step

@dataclass
class Step:
    rate: int
    calls: int
    passed: bool = False
    reason: str = ""
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    dead_call_msgs: int = 0
    achieved_rate: float = 0.0
    wall_s: float = 0.0
    kamailio_cpu_s: float = 0.0  # during the step, less what the node spends idle in as long
    idle_cpu_s: float = 0.0  # what was subtracted
    helper_cpu_s: float = 0.0  # the node's other processes (companion, Redis, Postgres), idle subtracted
    node_cpu_s: float = 0.0  # every process of the node but SIPp, each family's idle subtracted
    family_cpu_s: dict[str, float] = field(default_factory=dict)  # by family, idle subtracted
    family_idle_s: dict[str, float] = field(default_factory=dict)  # what was subtracted, by family
    redis_commands: int | None = None  # commands run by the node's Redis servers during the step
    py_callbacks: float | None = None  # Python callbacks made by the SIP workers during the step
    py_callbacks_by: dict[str, float] = field(default_factory=dict)
    py_cpu_s_by: dict[str, float] = field(default_factory=dict)  # workers' CPU in each callback
    worker_redis_round_trips: float | None = None  # sent by Kamailio's processes (not the companion)
    worker_lrn_reads: float = 0.0  # of which LRN reads the worker's own cache could not answer
    uac_cpu_s: float = 0.0
    uas_cpu_s: float = 0.0
    rss_kb: int = 0  # all Kamailio processes, right after the step
    pss_kb: int = 0
    invite_100_ms: list[float] = field(default_factory=list, repr=False)
    invite_180_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("invite_100_ms")
        data.pop("invite_180_ms")
        for key in ("invite_100", "invite_180"):
            samples = getattr(self, f"{key}_ms")
            data[f"{key}_p50_ms"], data[f"{key}_p99_ms"] = percentiles(samples)
            data[f"{key}_mean_ms"] = round(statistics.fmean(samples), 3) if samples else None
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in data.items()}


def percentiles(samples: list[float]) -> tuple[float | None, float | None]:
    if len(samples) < 2:
        return None, None
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return round(q[49], 2), round(q[98], 2)


def _stat_row(directory: Path) -> dict[str, str]:
    files = sorted(directory.glob("*_.csv"))
    if not files:
        return {}
    lines = [line for line in files[0].read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    return dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))


def _rtt(directory: Path) -> tuple[list[float], list[float], list[float]]:
    """(INVITE->100 ms, INVITE->180 ms, INVITE send times s) from SIPp's -trace_rtt file: when
    (ms since SIPp started), response time (ms; SIPp 3.6.1 measures whole milliseconds), timer."""
    at100: list[float] = []
    at180: list[float] = []
    times: list[float] = []
    for path in directory.glob("*_rtt.csv"):
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split(";")
            if len(parts) != 3:
                continue
            with contextlib.suppress(ValueError):
                when, value = float(parts[0]), float(parts[1])
                if parts[2] == "invite_100":
                    at100.append(value)
                    times.append((when - value) / 1000)
                elif parts[2] == "invite_180":
                    at180.append(value)
    return at100, at180, times


def run_step(running: Node, rate: int, calls: int, opts: Options, directory: Path, inject: Path, tag: str) -> Step:
    """One load step, with a vendor process of its own: a failed step's leftovers (200s
    retransmitted for lost ACKs) end with it instead of loading the next step."""
    directory.mkdir(parents=True, exist_ok=True)
    uas_cmd = [SIPP, "-sf", str(HERE / "sipp" / "uas.xml"), "-i", VENDOR, "-p", str(PORT), "-nostdin",
               "-buff_size", "4194304", "-trace_err"]
    with started(uas_cmd, directory / "uas.out", cwd=directory) as uas:
        if not udp_bound(VENDOR, PORT, uas):
            raise RuntimeError(f"SIPp vendor did not start; see {directory / 'uas.out'}")
        return _load(running, uas, rate, calls, opts, directory, inject, tag)


def _load(running: Node, uas: subprocess.Popen[bytes], rate: int, calls: int, opts: Options,
          directory: Path, inject: Path, tag: str) -> Step:
    step = Step(rate, calls)
    cmd = [SIPP, "-sf", str(HERE / "sipp" / "uac.xml"), "-inf", str(inject), "-i", CUSTOMER, "-p", str(PORT),
           "-nostdin", "-m", str(calls), "-r", str(rate), "-rp", "1000", "-d", str(opts.hold_ms),
           "-recv_timeout", "5000", "-buff_size", "4194304", "-cid_str", f"{tag}-%u-%p@%s",
           "-trace_rtt", "-rtt_freq", "1", "-trace_stat", "-fd", "60", "-trace_err",
           "-trace_screen", f"{PROXY}:{PORT}"]
    kam_pids = running.kamailio_pids()
    idle = idle_rates(running)
    before = {name: cpu_by_pid(pids) for name, pids in running.families().items()}
    commands0 = _redis_commands(running.redis_urls)
    counters0 = worker_counters(running.callbacks_dir) if running.callbacks_dir else None
    uas0, uac0 = cpu_seconds([uas.pid]), children_cpu()
    t0 = time.monotonic()
    with open(directory / "sipp.out", "wb") as out:
        uac = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               cwd=directory, start_new_session=True)
    try:
        rc = uac.wait(timeout=calls / rate * 1.5 + opts.hold_ms / 1000 + 20)
    except subprocess.TimeoutExpired:
        rc = None
    finally:
        _stop(uac)
    step.wall_s = time.monotonic() - t0
    for name, pids in running.families().items():
        spent = cpu_delta(before.get(name, {}), cpu_by_pid(pids))
        step.family_idle_s[name] = round(idle.get(name, 0.0) * step.wall_s, 4)
        step.family_cpu_s[name] = round(max(spent - step.family_idle_s[name], 0.0), 4)
    step.idle_cpu_s = step.family_idle_s["kamailio"]
    step.kamailio_cpu_s = step.family_cpu_s["kamailio"]
    step.node_cpu_s = sum(step.family_cpu_s.values())
    step.helper_cpu_s = step.node_cpu_s - step.kamailio_cpu_s
    if commands0 is not None:
        after = _redis_commands(running.redis_urls)
        step.redis_commands = after - commands0 if after is not None else None
    if counters0 is not None and running.callbacks_dir:
        counters1 = worker_counters(running.callbacks_dir)
        step.py_callbacks_by = _delta(counters1, counters0, CALLBACKS_SAMPLE)
        step.py_callbacks = sum(step.py_callbacks_by.values())
        step.py_cpu_s_by = {k: round(v, 4) for k, v in _delta(counters1, counters0, CPU_SAMPLE).items()}
        step.worker_redis_round_trips = sum(_delta(counters1, counters0, TRIPS_SAMPLE).values())
        step.worker_lrn_reads = sum(_delta(counters1, counters0, LRN_SAMPLE).values())
    step.uas_cpu_s = cpu_seconds([uas.pid]) - uas0
    step.uac_cpu_s = children_cpu() - uac0
    step.rss_kb, step.pss_kb = memory_kb(kam_pids)
    row = _stat_row(directory)
    step.successful = int(row.get("SuccessfulCall(C)", 0) or 0)
    step.failed = int(row.get("FailedCall(C)", 0) or 0)
    step.retransmissions = int(row.get("Retransmissions(C)", 0) or 0)
    step.dead_call_msgs = int(row.get("DeadCallMsgs(C)", 0) or 0)
    step.invite_100_ms, step.invite_180_ms, sent = _rtt(directory)
    if len(sent) > 10:
        step.achieved_rate = (len(sent) - 1) / max(max(sent) - min(sent), 1e-3)
    done = step.successful + step.failed
    if rc is None:
        step.reason = "SIPp did not finish in time (calls stuck)"
    elif done < calls:
        step.reason = f"only {done} of {calls} calls ended (SIPp exit {rc})"
    elif step.failed * 1000 >= done:
        step.reason = f"{step.failed} failed calls ({100 * step.failed / done:.2f}%)"
    elif step.achieved_rate and step.achieved_rate < 0.9 * rate:
        step.reason = f"call rate not reached ({step.achieved_rate:.0f}/s)"
    else:
        step.passed = True
    return step


def idle_rates(running: Node, window_s: float = 1.0) -> dict[str, float]:
    """CPU seconds per second each process family of the node spends with no calls (timers,
    the companion's polls, Redis's cron, Postgres's background writers), measured together
    in one window: taken out of each family's CPU in the step that follows."""
    families = running.families()
    before = {name: cpu_by_pid(pids) for name, pids in families.items()}
    time.sleep(window_s)
    return {name: cpu_delta(before[name], cpu_by_pid(pids)) / window_s for name, pids in families.items()}


CALLBACKS_SAMPLE = "warp_kemi_callbacks_total"
CPU_SAMPLE = "warp_kemi_callback_cpu_seconds_total"
TRIPS_SAMPLE = "warp_redis_round_trips_total"  # by process: the SIP workers' (and the slice task's)
LRN_SAMPLE = "warp_lrn_worker_cache_misses_total"  # of those, the LRN reads a worker's cache did not answer


def worker_counters(directory: Path) -> dict[str, dict[str, float]]:
    """The SIP workers' counters, summed over their multiprocess files, read once: sample name
    -> callback label ("" for a counter without one) -> value."""
    from prometheus_client.multiprocess import MultiProcessCollector

    files = [str(f) for f in directory.glob("*.db")]
    out: dict[str, dict[str, float]] = {}
    for metric in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
        for sample in metric.samples:
            if sample.name in (CALLBACKS_SAMPLE, CPU_SAMPLE, TRIPS_SAMPLE, LRN_SAMPLE):
                by = out.setdefault(sample.name, {})
                name = sample.labels.get("callback", "")
                by[name] = by.get(name, 0.0) + sample.value
    return out


def _delta(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], sample: str) -> dict[str, float]:
    """Per label, what ``sample`` grew by (labels that did not grow left out)."""
    was = before.get(sample, {})
    return {k: v - was.get(k, 0.0) for k, v in after.get(sample, {}).items() if v - was.get(k, 0.0) > 0}


def _redis_commands(urls: list[str]) -> int | None:
    if not urls:
        return None
    try:
        return sum(redis_commands(url) for url in urls)
    except Exception:
        return None


def _quiet(running: Node, timeout_s: float = 15) -> None:
    """Wait until the node is idle again (retransmissions and timers of a failed step done)."""
    pids = running.kamailio_pids()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.05:
            return


# ------------------------------------------------------------------ search for the capacity

def capacity(running: Node, opts: Options, workdir: Path, inject: Path,
             say: Any) -> tuple[int, list[Step]]:
    steps: list[Step] = []
    index = [0]

    def attempt(rate: int) -> Step:
        index[0] += 1
        calls = max(int(rate * opts.step_s), 200)
        step = run_step(running, rate, calls, opts, workdir / f"step-{index[0]:02d}-{rate}cps", inject,
                        f"{running.name}{index[0]}")
        steps.append(step)
        say(f"    {rate:5d} calls/s x {calls:6d}: {'ok' if step.passed else 'FAILED: ' + step.reason}; "
            f"node {1000 * step.node_cpu_s / max(calls, 1):.2f} ms CPU/call "
            f"(Kamailio {1000 * step.kamailio_cpu_s / max(calls, 1):.2f}), "
            f"SIPp UAC {100 * step.uac_cpu_s / max(step.wall_s, 1e-3):.0f}% of a core")
        _quiet(running)
        return step

    best, rate, failed_at = 0, opts.start_rate, 0
    while rate <= opts.max_rate:
        if not attempt(rate).passed:
            failed_at = rate
            break
        best, rate = rate, rate * 2
    if failed_at:
        low, high = best, failed_at
        for _ in range(opts.bisections):
            if high - low <= max(10, low // 20):
                break
            middle = (low + high) // 2
            if attempt(middle).passed:
                low = middle
            else:
                high = middle
        best = low
    return best, steps


def at_80_percent(running: Node, best: int, opts: Options, workdir: Path, inject: Path, name: str,
                  say: Any) -> dict[str, object]:
    """One more step at 80% of the maximum found: the latency a node shows with headroom left
    (issue 17's INVITE->100 target is set there)."""
    rate = max(int(best * 0.8), 10)
    calls = max(int(rate * opts.step_s), 200)
    step = run_step(running, rate, calls, opts, workdir / f"step-80pct-{rate}cps", inject, f"{name}e")
    p99, mean = percentiles(step.invite_100_ms)[1], (
        round(statistics.fmean(step.invite_100_ms), 2) if step.invite_100_ms else None)
    say(f"    {rate:5d} calls/s (80% of the maximum): {'ok' if step.passed else 'FAILED: ' + step.reason}; "
        f"INVITE->100 p99 {p99} ms, mean {mean} ms")
    _quiet(running)
    return {"rate_80pct": rate, "passed_80pct": step.passed, "invite_100_p99_ms_at_80pct": p99,
            "invite_100_mean_ms_at_80pct": mean}


def profile(running: Node, opts: Options, workdir: Path, inject: Path, say: Any) -> None:
    """py-spy over every Kamailio process (their embedded Pythons) during a steady load;
    collapsed stacks in profile.txt (flamegraph.pl / speedscope read them), a summary printed."""
    spy = Path(sys.executable).parent / "py-spy"
    out = workdir / "profile.txt"
    cmd = [str(spy), "record", "--pid", str(running.kamailio.pid), "--subprocesses", "--format", "raw",
           "--rate", "250", "--nonblocking", "--duration", str(opts.profile_s), "-o", str(out)]
    with started(cmd, workdir / "py-spy.log") as recorder:
        step = run_step(running, opts.start_rate, opts.start_rate * opts.profile_s, opts, workdir / "profile-step",
                        inject, "Ap")
        with contextlib.suppress(subprocess.TimeoutExpired):
            recorder.wait(timeout=30)
    say(f"    profiled {step.calls} calls at {opts.start_rate}/s: {out}")
    if out.exists():
        for line in summarise_profile(out):
            say(f"      {line}")


def summarise_profile(path: Path, top: int = 25) -> list[str]:
    """Inclusive share of samples per function (file:function), the heaviest first."""
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0] + " " + (frame.split(" (")[1].split(":")[0] if " (" in frame else "")
            if name not in seen:
                seen.add(name)
                inclusive[name] = inclusive.get(name, 0) + count
    ranked = sorted(inclusive.items(), key=lambda item: -item[1])[:top]
    return [f"{100 * n / max(total, 1):5.1f}%  {name}" for name, n in ranked]


def _sipp_verdict(steps: list[Step], best: int) -> str:
    """Was the generator short of CPU? Judged on the steps up to the first failure past the max."""
    relevant = [s for s in steps if s.rate <= max(best, 1) * 2]
    uac = max((s.uac_cpu_s / max(s.wall_s, 1e-3) for s in relevant), default=0.0)
    uas = max((s.uas_cpu_s / max(s.wall_s, 1e-3) for s in relevant), default=0.0)
    short = [s for s in relevant if "rate not reached" in s.reason]
    dead = sum(s.dead_call_msgs for s in relevant if s.passed)
    verdict = (f"SIPp UAC up to {100 * uac:.0f}% of a core, UAS up to {100 * uas:.0f}%, "
               f"{dead} dead-call messages in passing steps")
    if short or uac > 0.85 or uas > 0.85:
        return "SIPp MAY BE THE BOTTLENECK: " + verdict + (f"; rate not reached at {short[0].rate}/s" if short else "")
    return "SIPp not the bottleneck: " + verdict


def redis_commands(where: Settings | str) -> int:
    """Commands a Redis (the settings' or a URL's) has run so far (INFO commandstats), the INFO
    calls left out."""
    import redis

    client = redis.Redis.from_url(where if isinstance(where, str) else where.redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def figures(name: str, best: int, steps: list[Step]) -> dict[str, object]:
    """One run's figures (pure: from the steps alone). CPU per call, Redis commands, Python
    callbacks and latency are taken at the common rate (the first step), where every
    configuration carries the same load."""
    steady = steps[0]
    p100 = percentiles(steady.invite_100_ms)
    p180 = percentiles(steady.invite_180_ms)
    calls = max(steady.calls, 1)
    passing = [s for s in steps if s.passed and s.rate == best]
    per_call = {family: round(1000 * cpu / calls, 3) for family, cpu in steady.family_cpu_s.items()}
    return {
        "max_cps": best,
        # a node that fails the common rate is compared on a failing step: flagged in the table
        "common_rate_passed": steady.passed,
        "node_cpu_ms_per_call": round(1000 * steady.node_cpu_s / calls, 3),
        "cpu_ms_per_call": round(1000 * steady.kamailio_cpu_s / calls, 3),
        "cpu_ms_per_call_by_family": per_call,
        "cpu_ms_per_call_at_max": round(1000 * passing[0].kamailio_cpu_s / max(passing[0].calls, 1), 3)
        if passing else None,
        "helper_cpu_ms_per_call": round(1000 * steady.helper_cpu_s / calls, 3),
        "redis_cmds_per_call": round(steady.redis_commands / calls, 2) if steady.redis_commands is not None
        else 0.0,
        "py_callbacks_per_call": round(steady.py_callbacks / calls, 2) if steady.py_callbacks is not None else None,
        "py_callbacks_per_call_by": {k: round(v / calls, 2) for k, v in sorted(steady.py_callbacks_by.items())},
        # CPU of the SIP workers inside Python callbacks (what they call in Kamailio included)
        "py_cpu_ms_per_call": round(sum(steady.py_cpu_s_by.values()) * 1000 / calls, 3)
        if steady.py_cpu_s_by else None,
        "py_cpu_ms_per_call_by": {k: round(v * 1000 / calls, 3) for k, v in sorted(steady.py_cpu_s_by.items())},
        "worker_redis_round_trips_per_call": round(steady.worker_redis_round_trips / calls, 2)
        if steady.worker_redis_round_trips is not None else None,
        "worker_lrn_reads_per_call": round(steady.worker_lrn_reads / calls, 2)
        if steady.worker_redis_round_trips is not None else None,
        "invite_100_p50_ms": p100[0], "invite_100_p99_ms": p100[1],
        "invite_100_mean_ms": round(statistics.fmean(steady.invite_100_ms), 2) if steady.invite_100_ms else None,
        "invite_180_p50_ms": p180[0], "invite_180_p99_ms": p180[1],
        "invite_180_mean_ms": round(statistics.fmean(steady.invite_180_ms), 2) if steady.invite_180_ms else None,
        "rss_mb": round(steady.rss_kb / 1024, 1), "pss_mb": round(steady.pss_kb / 1024, 1),
        "sipp": _sipp_verdict(steps, best),
        "steps": [s.summary() for s in steps],
    }


# the numeric figures summarised over the repetitions (medians at the top level, min-max in spread)
TABLE_FIGURES = ("max_cps", "node_cpu_ms_per_call", "cpu_ms_per_call", "helper_cpu_ms_per_call",
                 "cpu_ms_per_call_at_max", "redis_cmds_per_call", "py_callbacks_per_call", "py_cpu_ms_per_call",
                 "worker_redis_round_trips_per_call", "worker_lrn_reads_per_call",
                 "invite_100_p50_ms", "invite_100_p99_ms", "invite_100_mean_ms",
                 "invite_100_p99_ms_at_80pct", "invite_100_mean_ms_at_80pct",
                 "invite_180_p50_ms", "invite_180_p99_ms", "rss_mb", "pss_mb", "processes")


def _median(values: list[float]) -> float | int:
    middle = statistics.median(values)
    return int(middle) if all(isinstance(v, int) for v in values) and middle == int(middle) else round(middle, 3)


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The flat result read by scripts (pure): for every configuration X and figure F,
    ``X_F`` = the median over X's runs; ``spread`` = {``X_F``: [min, max]}; ``runs`` = how
    many; then the ratios and issue 17's targets on the medians. ``X_py_callbacks_per_call``
    only where the node has Python workers (A, A0)."""
    rows: dict[str, Any] = {}
    spread: dict[str, list[float]] = {}
    for name, results in runs.items():
        for figure in TABLE_FIGURES:
            values = [r[figure] for r in results if isinstance(r.get(figure), int | float)]
            if not values:
                continue
            key = f"{name}_{figure}"
            rows[key] = _median(values)
            spread[key] = [min(values), max(values)]
        rows[f"{name}_runs"] = len(results)
        failing = sum(1 for r in results if r.get("common_rate_passed") is False)
        if failing:
            rows[f"{name}_runs_failing_the_common_rate"] = failing
    for figure in ("max_cps", "node_cpu_ms_per_call", "cpu_ms_per_call"):
        for other in ("B", "Bmin", "C"):
            if "A" in runs and other in runs:
                rows[f"A/{other}_{figure}"] = _ratio(rows.get(f"A_{figure}"), rows.get(f"{other}_{figure}"))
    rows.update(_targets(rows))
    for name, results in runs.items():
        rows[f"{name}_sipp"] = "; ".join(sorted({str(r.get("sipp")) for r in results}))
    rows["spread"] = spread
    return rows


def _targets(rows: dict[str, Any]) -> dict[str, str]:
    """Issue 17's targets, judged on the medians (those the benchmark measures)."""

    def verdict(ok: bool | None, text: str) -> str:
        return f"{'n/a' if ok is None else 'met' if ok else 'MISSED'} ({text})"

    def both(a: str, b: str) -> tuple[float, float] | None:
        x, y = rows.get(a), rows.get(b)
        return (float(x), float(y)) if isinstance(x, int | float) and isinstance(y, int | float) else None

    out: dict[str, str] = {}
    if pair := both("A_node_cpu_ms_per_call", "B_node_cpu_ms_per_call"):
        out["target_A_node_cpu_le_B"] = verdict(pair[0] <= pair[1], f"A {pair[0]} ms, B {pair[1]} ms")
    if pair := both("A_max_cps", "B_max_cps"):
        out["target_A_max_cps_ge_B"] = verdict(pair[0] >= pair[1], f"A {pair[0]:.0f}/s, B {pair[1]:.0f}/s")
    if pair := both("A_cpu_ms_per_call", "C_cpu_ms_per_call"):
        out["target_A_kamailio_cpu_le_1.5C"] = verdict(pair[0] <= 1.5 * pair[1],
                                                       f"A {pair[0]} ms, 1.5 x C {1.5 * pair[1]:.3f} ms")
    value = rows.get("A_py_callbacks_per_call")
    if isinstance(value, int | float):
        out["target_A_py_callbacks_le_8"] = verdict(value <= 8, f"A {value} per call")
    value, lrn_reads = rows.get("A_worker_redis_round_trips_per_call"), rows.get("A_worker_lrn_reads_per_call")
    if isinstance(value, int | float):  # an LRN cache miss aside; the per-second refreshes included
        besides = round(value - float(lrn_reads or 0), 2)
        out["target_A_worker_redis_round_trips_le_2"] = verdict(
            besides <= 2, f"A {besides} per call besides {lrn_reads or 0} LRN cache reads")
    value = rows.get("A_invite_100_p99_ms_at_80pct")
    if isinstance(value, int | float):
        out["target_A_invite_100_p99_le_10ms_at_80pct"] = verdict(value <= 10, f"A {value} ms")
    return out


# ------------------------------------------------------------------ the whole benchmark

@dataclass
class Bench:
    """What every run of every configuration shares: settings, data, the work folder."""

    env: dict[str, str]
    settings: Settings
    workdir: Path
    inject: Path
    data: capacity_data.BenchData
    native_url: str
    rules: int


def prepare(opts: Options, say: Any, folder: str = "capacity") -> Bench | dict[str, object]:
    """Settings, generated data in both schemas, SIPp's injection file."""
    base = load_settings(environ=_bench_environ({}))
    if not (base.embedded_postgres and base.embedded_redis):
        return {"skipped": "the capacity benchmark needs the embedded Postgres and Redis (make bench)"}
    bench_db = os.environ.get("WARP_BENCH_DB", "warp_bench")
    redis_db = os.environ.get("WARP_BENCH_REDIS_DB", "14")
    env = _bench_environ({
        "WARP_DATABASE__NAME": bench_db, "WARP_REDIS__DB": redis_db, "WARP_NODE__NAME": "bench",
        "WARP_SIP__LISTEN": f"udp:{PROXY}:{PORT}", "WARP_SIP__CHILDREN": str(opts.children),
        "WARP_SIP__TCP_CHILDREN": str(opts.tcp_children), "WARP_KAMAILIO__SHM_MB": str(opts.shm_mb),
        # no media relay: B and C relay signalling only, and the call path has no media
        "WARP_MEDIA__ENABLED": "false",
        "WARP_METRICS__LISTEN": f"{PROXY}:9464",  # the companion's endpoint, on the benchmark's address
    })
    settings = load_settings(environ=env)
    workdir = PROJECT_ROOT / "bench-results" / folder
    shutil.rmtree(workdir, ignore_errors=True)  # SIPp's files are found by pattern: none from an earlier run
    workdir.mkdir(parents=True)
    data = capacity_data.generate()
    inject = workdir / "calls.csv"
    capacity_data.write_injection_file(data, inject)
    capacity_data.load_warp(capacity_data.fresh_database(settings, bench_db), data, f"{CUSTOMER}/32", (VENDOR, PORT))
    native_url = capacity_data.fresh_database(settings, f"{bench_db}_native")
    rules = capacity_data.load_native(native_url, data, CUSTOMER, (VENDOR, PORT))
    say(f"  data: {len(data.vendors)} vendors, {data.rate_rows} rate rows, {rules} lcr rules, "
        f"{len(data.homes)} NPA-NXX, {len(data.calls)} distinct calls; {opts.children} UDP workers; "
        f"steps of {opts.step_s:.0f} s, hold {opts.hold_ms} ms; {opts.reps} run(s) of each configuration")
    return Bench(env, settings, workdir, inject, data, native_url, rules)


def fresh_redis(bench: Bench) -> int:
    """Empty the node's Redis database and cache every NANP number's LRN answer, as a warm node
    has it. Returns the number of answers cached."""
    import redis

    client = redis.Redis.from_url(bench.settings.redis_url)
    try:
        client.flushdb()
        return capacity_data.prime_lrn_cache(client, bench.data)
    finally:
        client.close()


def run_config(bench: Bench, name: str, opts: Options, config_dir: Path, say: Any) -> dict[str, Any]:
    """One run of one configuration: start its node, warm it up, search its capacity."""
    config_dir.mkdir(parents=True, exist_ok=True)
    if name in ("A", "A0"):
        with psycopg.connect(bench.settings.database_url, autocommit=True) as conn:
            conn.execute("UPDATE trunks.trunks SET topology_hiding = %s", (name == "A",))
    with contextlib.ExitStack() as processes:
        running = processes.enter_context(node(name, bench.env, bench.settings, opts, config_dir,
                                               bench.native_url, bench.rules))
        warm = run_step(running, 50, opts.warmup_calls, opts, config_dir / "warmup", bench.inject, f"{name}w")
        if not warm.passed:  # reported, and the search goes on: a node that cannot take 50/s scores 0
            say(f"    WARM-UP FAILED at 50 calls/s: {warm.reason}; see {config_dir / 'warmup'} "
                f"and {config_dir / 'kamailio.log'}")
            _quiet(running)
        if name == "A" and opts.profile_s:
            profile(running, opts, config_dir, bench.inject, say)
        best, steps = capacity(running, opts, config_dir, bench.inject, say)
        result = figures(name, best, steps)
        result.update(at_80_percent(running, best, opts, config_dir, bench.inject, name, say))
        result["processes"] = len(running.kamailio_pids())
        result["warmup"] = "ok" if warm.passed else warm.reason
    return result


def run(opts: Options = QUICK, say: Any = None) -> dict[str, object]:
    def _say(text: str) -> None:
        print(text, flush=True)

    say = say or _say
    started_at = time.monotonic()
    bench = prepare(opts, say)
    if not isinstance(bench, Bench):
        return bench
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in opts.configs}
    for rep in range(1, opts.reps + 1):
        for name in opts.configs:
            label = LABELS.get(name, name)
            say(f"  {label} (run {rep} of {opts.reps}): {CONFIGS[name]}")
            if name in ("A", "A0"):
                fresh_redis(bench)
            result = run_config(bench, name, opts, bench.workdir / name / f"run-{rep}", say)
            runs[name].append(result)
            say(f"  {label}: max {result['max_cps']} calls/s; node {result['node_cpu_ms_per_call']} ms CPU/call "
                f"(Kamailio {result['cpu_ms_per_call']}); {result['redis_cmds_per_call']} Redis commands/call"
                + (f"; {result['py_callbacks_per_call']} Python callbacks/call"
                   if result["py_callbacks_per_call"] is not None else "")
                + f"; INVITE->100 p99 {result['invite_100_p99_ms']} ms; {result['sipp']}")
    out = summarise(runs)
    out["seconds"] = round(time.monotonic() - started_at, 1)
    out["detail"] = runs
    return out


# ------------------------------------------------------------------ what stays behind in Redis

_VOLATILE = re.compile(r"^(?:[0-9a-fA-F-]{16,}|\d+|[0-9a-fA-F]{8,})$|@|tpsh-|(?:\D*\d){4}")


def key_family(key: str) -> str:
    """A key's family: its ':'-separated parts, with identities (UUIDs, numbers, Call-IDs, tags,
    topos' tpsh ids) as '*', consecutive ones as one ('b:x:INVITE:*' for every topos branch)."""
    parts: list[str] = []
    for part in key.split(":"):
        part = "*" if _VOLATILE.search(part) else part
        if not (part == "*" and parts and parts[-1] == "*"):
            parts.append(part)
    return ":".join(parts)


def redis_census(url: str) -> dict[str, dict[str, int]]:
    """Every key of the database by family: how many keys, their members (hash fields, set /
    sorted set members, list / stream entries; 1 for a string) and their memory (bytes)."""
    import redis

    client = redis.Redis.from_url(url)
    out: dict[str, dict[str, int]] = {}
    sizes = {"hash": "HLEN", "zset": "ZCARD", "set": "SCARD", "list": "LLEN", "stream": "XLEN"}
    try:
        batch: list[bytes] = []

        def count(keys: list[bytes]) -> None:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.type(key)
            types = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
            pipe = client.pipeline(transaction=False)
            for key, kind in zip(keys, types, strict=True):
                if kind in sizes:
                    pipe.execute_command(sizes[kind], key)
                else:
                    pipe.exists(key)
                pipe.memory_usage(key)
            values = pipe.execute()
            for i, key in enumerate(keys):
                family = out.setdefault(key_family(key.decode(errors="replace")),
                                        {"keys": 0, "members": 0, "bytes": 0})
                family["keys"] += 1
                family["members"] += int(values[2 * i] or 0)
                family["bytes"] += int(values[2 * i + 1] or 0)

        for key in client.scan_iter(count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                count(batch)
                batch = []
        if batch:
            count(batch)
    finally:
        client.close()
    return dict(sorted(out.items()))


def census_growth(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """Families whose keys, members or memory changed between two censuses (pure)."""
    out: dict[str, dict[str, int]] = {}
    zero = {"keys": 0, "members": 0, "bytes": 0}
    for family in sorted(set(before) | set(after)):
        b, a = before.get(family, zero), after.get(family, zero)
        delta = {k: a[k] - b[k] for k in zero}
        if any(delta.values()):
            out[family] = {**{f"{k}_after": a[k] for k in zero}, **{f"{k}_delta": v for k, v in delta.items()}}
    return out


def state_growth(opts: Options = QUICK, say: Any = None) -> dict[str, object]:
    """Issue 17: "something in A's state grows from run to run". A runs twice in a row on the
    same Redis (flushed and primed once, before the first run), each run a full capacity
    search; the Redis database is counted by key family before, after the first and after the
    second run (each count once the node has stopped and its calls are over)."""

    def _say(text: str) -> None:
        print(text, flush=True)

    say = say or _say
    started_at = time.monotonic()
    bench = prepare(opts, say, folder="capacity-state")
    if not isinstance(bench, Bench):
        return bench
    fresh_redis(bench)
    url = bench.settings.redis_url
    censuses = [redis_census(url)]
    results = []
    for rep in (1, 2):
        say(f"  A (run {rep} of 2, same Redis)")
        results.append(run_config(bench, "A", opts, bench.workdir / "A" / f"run-{rep}", say))
        censuses.append(redis_census(url))
        say(f"  A run {rep}: max {results[-1]['max_cps']} calls/s, node {results[-1]['node_cpu_ms_per_call']} "
            f"ms CPU/call, {results[-1]['redis_cmds_per_call']} Redis commands/call")
    first, second = census_growth(censuses[0], censuses[1]), census_growth(censuses[1], censuses[2])
    for title, growth in (("after run 1", first), ("after run 2 (against run 1)", second)):
        say(f"  Redis key families changed {title}:")
        for family, delta in growth.items():
            say(f"    {family:48} keys {delta['keys_after']:7d} ({delta['keys_delta']:+d}), members "
                f"{delta['members_after']:8d} ({delta['members_delta']:+d}), {delta['bytes_after'] / 1024:9.1f} KiB "
                f"({delta['bytes_delta'] / 1024:+.1f})")
    return {
        "state_A_max_cps_run1": results[0]["max_cps"], "state_A_max_cps_run2": results[1]["max_cps"],
        "state_A_node_cpu_ms_per_call_run1": results[0]["node_cpu_ms_per_call"],
        "state_A_node_cpu_ms_per_call_run2": results[1]["node_cpu_ms_per_call"],
        "state_A_redis_cmds_per_call_run1": results[0]["redis_cmds_per_call"],
        "state_A_redis_cmds_per_call_run2": results[1]["redis_cmds_per_call"],
        "state_keys_before": sum(f["keys"] for f in censuses[0].values()),
        "state_keys_after_run1": sum(f["keys"] for f in censuses[1].values()),
        "state_keys_after_run2": sum(f["keys"] for f in censuses[2].values()),
        "seconds": round(time.monotonic() - started_at, 1),
        "growth_run1": first, "growth_run2": second, "census": censuses, "detail": results,
    }


def udp_bound(ip: str, port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10) -> bool:
    want = f"{int.from_bytes(bytes(map(int, ip.split('.')))[::-1], 'big'):08X}:{port:04X}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        with open("/proc/net/udp") as fh:
            if any(line.split()[1] == want for line in fh.readlines()[1:]):
                return True
        time.sleep(0.05)
    return False


def _ratio(a: object, b: object) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 2)
    return None
