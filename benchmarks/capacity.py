"""Capacity side by side with native Kamailio (issue 10): the same Kamailio binary, the same
workers and the same SIPp load through three configurations —

  A  WARP: kamailio/kamailio.cfg + the KEMI module, the full call path (ACL, LRN from cache,
     jurisdiction, rating, LCR, limits, funds, dialog, CDR to Redis with the companion running);
  B  native: benchmarks/native/lcr.cfg — `permissions` ACL + `lcr` least cost + dialog, from
     the same generated vendor decks (benchmarks/capacity_data.py);
  C  null: benchmarks/native/null.cfg — a stateful proxy relaying to one gateway: the ceiling
     of this machine and this load generator.

For each: the highest call rate with < 0.1% failed calls (doubling ramp, then bisection), CPU
time per call over all Kamailio processes, INVITE->100 / INVITE->180 percentiles from SIPp's
response-time trace, RSS and PSS of all Kamailio processes; and whether SIPp itself was short
of CPU. Calls are INVITE, 100/180/200, ACK, a short hold, BYE, 200.

Every process started here runs in its own process group and is stopped on the way out,
also on Ctrl-C or an error.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import capacity_data
from routing_engine.adapters import sipcheck, stack
from routing_engine.settings import PROJECT_ROOT, Settings, load_settings

WARP_CLI = [sys.executable, "-m", "routing_engine.entrypoints.cli"]


HERE = Path(__file__).resolve().parent
SIPP = "/usr/bin/sipp"
PROXY, CUSTOMER, VENDOR, PORT = "127.0.0.120", "127.0.0.121", "127.0.0.131", 5060
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONFIGS = {"A": "WARP engine (KEMI, full call path)",
           "A0": "WARP engine, topology hiding off for the benchmark trunk (what topos costs)",
           "B": "native permissions + lcr + dialog",
           "C": "native null stateful proxy"}


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
    configs: tuple[str, ...] = ("A", "A0", "B", "C")
    profile_s: int = 0  # > 0: first profile A's workers with py-spy under the common rate for this long


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

    def kamailio_pids(self) -> list[int]:
        return group_pids(self.kamailio.pid)

    def helper_cpu(self) -> float:
        pids = [p for g in self.helpers for p in group_pids(g)]
        return cpu_seconds(pids + ([self.redis_pid] if self.redis_pid else []))


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
                with contextlib.suppress(OSError, ValueError):
                    redis_pid = int((warp.data_dir / "redis" / "redis.pid").read_text().strip())
            running = Node(name, kam, helpers=[emitter.pid], redis_pid=redis_pid)
        else:
            if name == "B":
                hash_size = 1 << max(7, rules.bit_length())
                cmd = _native_command(settings, "lcr.cfg", run_dir, opts, {"BENCH_RULE_HASH": str(hash_size)})
                # the URL carries the database password: the environment, not the command line (ps)
                native_env = {**os.environ, "BENCH_DB_URL": native_db_url.replace("postgresql://", "postgres://")}
            else:
                cmd = _native_command(settings, "null.cfg", run_dir, opts, {"BENCH_GATEWAY": f'"{VENDOR}:{PORT}"'})
                native_env = None
            running = Node(name, stack_.enter_context(started(cmd, log, env=native_env)))
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
    helper_cpu_s: float = 0.0
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
    idle_rate = _idle_rate(kam_pids)
    kam0, helper0, uas0, uac0 = cpu_seconds(kam_pids), running.helper_cpu(), cpu_seconds([uas.pid]), children_cpu()
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
    step.idle_cpu_s = idle_rate * step.wall_s
    step.kamailio_cpu_s = max(cpu_seconds(kam_pids) - kam0 - step.idle_cpu_s, 0.0)
    step.helper_cpu_s = running.helper_cpu() - helper0
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


def _idle_rate(pids: list[int], window_s: float = 1.0) -> float:
    """CPU seconds per second the node spends with no calls (timers): taken out of each step."""
    before = cpu_seconds(pids)
    time.sleep(window_s)
    return (cpu_seconds(pids) - before) / window_s


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
            f"Kamailio {1000 * step.kamailio_cpu_s / max(calls, 1):.2f} ms CPU/call, "
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


def redis_commands(settings: Settings) -> int:
    """Commands the node's Redis has run so far (INFO commandstats), the INFO calls left out."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _figures(name: str, running: Node, best: int, steps: list[Step]) -> dict[str, object]:
    steady = steps[0]  # the common rate: CPU per call, latency and memory are compared here
    p100 = percentiles(steady.invite_100_ms)
    p180 = percentiles(steady.invite_180_ms)
    calls = max(steady.calls, 1)
    passing = [s for s in steps if s.passed and s.rate == best]
    return {
        "max_cps": best,
        "cpu_ms_per_call": round(1000 * steady.kamailio_cpu_s / calls, 3),
        "cpu_ms_per_call_at_max": round(1000 * passing[0].kamailio_cpu_s / max(passing[0].calls, 1), 3)
        if passing else None,
        "helper_cpu_ms_per_call": round(1000 * steady.helper_cpu_s / calls, 3) if name in ("A", "A0") else None,
        "invite_100_p50_ms": p100[0], "invite_100_p99_ms": p100[1],
        "invite_100_mean_ms": round(statistics.fmean(steady.invite_100_ms), 2) if steady.invite_100_ms else None,
        "invite_180_p50_ms": p180[0], "invite_180_p99_ms": p180[1],
        "invite_180_mean_ms": round(statistics.fmean(steady.invite_180_ms), 2) if steady.invite_180_ms else None,
        "rss_mb": round(steady.rss_kb / 1024, 1), "pss_mb": round(steady.pss_kb / 1024, 1),
        "processes": len(running.kamailio_pids()),
        "sipp": _sipp_verdict(steps, best),
        "steps": [s.summary() for s in steps],
    }


# ------------------------------------------------------------------ the whole benchmark

def run(opts: Options = QUICK, say: Any = None) -> dict[str, object]:
    def _say(text: str) -> None:
        print(text, flush=True)

    say = say or _say
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
    workdir = PROJECT_ROOT / "bench-results" / "capacity"
    shutil.rmtree(workdir, ignore_errors=True)  # SIPp's files are found by pattern: none from an earlier run
    workdir.mkdir(parents=True)

    started_at = time.monotonic()
    data = capacity_data.generate()
    inject = workdir / "calls.csv"
    capacity_data.write_injection_file(data, inject)
    capacity_data.load_warp(capacity_data.fresh_database(settings, bench_db), data, f"{CUSTOMER}/32", (VENDOR, PORT))
    native_url = capacity_data.fresh_database(settings, f"{bench_db}_native")
    rules = capacity_data.load_native(native_url, data, CUSTOMER, (VENDOR, PORT))
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.flushdb()
        cached = capacity_data.prime_lrn_cache(client, data)
    finally:
        client.close()
    say(f"  data: {len(data.vendors)} vendors, {data.rate_rows} rate rows, {rules} lcr rules, "
        f"{len(data.homes)} NPA-NXX, {len(data.calls)} distinct calls ({cached} LRN answers cached); "
        f"{opts.children} UDP workers; steps of {opts.step_s:.0f} s, hold {opts.hold_ms} ms")

    out: dict[str, dict[str, object]] = {}
    for name in opts.configs:
        say(f"  {name}: {CONFIGS[name]}")
        config_dir = workdir / name
        config_dir.mkdir(parents=True, exist_ok=True)
        if name in ("A", "A0"):
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("UPDATE trunks.trunks SET topology_hiding = %s", (name == "A",))
        with contextlib.ExitStack() as processes:
            running = processes.enter_context(node(name, env, settings, opts, config_dir, native_url, rules))
            warm = run_step(running, 50, opts.warmup_calls, opts, config_dir / "warmup", inject, f"{name}w")
            if not warm.passed:
                raise RuntimeError(f"{name}: warm-up calls failed ({warm.reason}); see {config_dir / 'warmup'} "
                                   f"and {config_dir / 'kamailio.log'}")
            if name == "A" and opts.profile_s:
                profile(running, opts, config_dir, inject, say)
            commands_before = redis_commands(settings) if name in ("A", "A0") else 0
            best, steps = capacity(running, opts, config_dir, inject, say)
            out[name] = _figures(name, running, best, steps)
            if name in ("A", "A0"):  # every Redis command of the node (workers and companion) per call offered
                out[name]["redis_commands_per_call"] = round(
                    (redis_commands(settings) - commands_before) / max(sum(s.calls for s in steps), 1), 1)
        say(f"  {name}: max {best} calls/s; {out[name]['sipp']}")
    result = _table(out)
    result["seconds"] = round(time.monotonic() - started_at, 1)
    result["detail"] = out
    return result


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


def _table(out: dict[str, dict[str, object]]) -> dict[str, object]:
    """Flat rows for the printed table: one per figure and configuration, then the ratios."""
    rows: dict[str, object] = {}
    for figure in ("max_cps", "cpu_ms_per_call", "cpu_ms_per_call_at_max", "helper_cpu_ms_per_call",
                   "invite_100_p50_ms", "invite_100_p99_ms", "invite_100_mean_ms",
                   "invite_180_p50_ms", "invite_180_p99_ms", "invite_180_mean_ms",
                   "rss_mb", "pss_mb", "processes", "redis_commands_per_call"):
        for name, figures in out.items():
            if figures.get(figure) is not None:
                rows[f"{name}_{figure}"] = figures[figure]
    for figure in ("max_cps", "cpu_ms_per_call", "cpu_ms_per_call_at_max", "invite_100_mean_ms", "pss_mb"):
        for other in ("B", "C"):
            if "A" in out and other in out:
                rows[f"A/{other}_{figure}"] = _ratio(out["A"].get(figure), out[other].get(figure))
    if "A" in out and "B" in out:
        ratio = rows.get("A/B_max_cps")
        rows["target_A_max_cps_vs_B"] = (f"{'met' if isinstance(ratio, float) and ratio >= 0.8 else 'MISSED'}"
                                         f" (A/B {ratio}, target >= 0.8)")
    for name, figures in out.items():
        rows[f"{name}_sipp"] = figures["sipp"]
    return rows
