"""Routing decision latency, snapshot build/publish/load time and memory, on generated data.

1,000,000 vendor prefixes across 20 vendors plus 100,000 NPA-NXX homes (issue target:
decision p99 <= 100 us). The same ``decide_invite`` a SIP worker runs, on the same published,
memory-mapped snapshot file; then several worker processes map that file together and their
memory is read side by side (target: one shared copy).
"""

from __future__ import annotations

import gc
import ipaddress
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from routing_engine.adapters.snapshots import SnapshotStore
from routing_engine.domain.decision import CallRequest, Relay, decide_invite
from routing_engine.domain.lrn import LrnResult
from routing_engine.domain.numbers import E164
from routing_engine.domain.snapshot import (
    Account,
    AccountStatus,
    AclEntry,
    CustomerRate,
    Gateway,
    Location,
    PlanVendor,
    RoutingPlan,
    RoutingSnapshot,
    Trunk,
    VendorRate,
    build_rate_plan,
    build_vendor,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
STATES = ["NY", "NJ", "CA", "TX", "FL", "IL", "GA", "MA", "NV", "WA"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generate(vendors: int = 20, prefixes: int = 1_000_000, npanxx: int = 100_000, seed: int = 7) -> RoutingSnapshot:
    rnd = random.Random(seed)
    npas = [f"{rnd.randint(2, 9)}{rnd.randint(0, 9)}{rnd.randint(0, 9)}" for _ in range(300)]
    homes: dict[str, Location] = {}
    while len(homes) < npanxx:
        code = f"{rnd.choice(npas)}{rnd.randint(200, 999)}"
        homes[code] = Location("US", rnd.choice(STATES), None, None, f"RC{rnd.randint(1, 500)}")
    per_vendor = prefixes // vendors
    built: dict[uuid.UUID, Any] = {}
    home_list = list(homes)
    for v in range(vendors):
        rates: list[VendorRate] = []
        seen: set[str] = set()
        while len(rates) < per_vendor:
            if rnd.random() < 0.6:  # NANP NPA-NXX rows with jurisdictional prices
                prefix = "1" + rnd.choice(home_list) + str(rnd.randint(0, 9)) * rnd.randint(0, 1)
            else:
                prefix = str(rnd.randint(2, 9)) + "".join(str(rnd.randint(0, 9)) for _ in range(rnd.randint(1, 8)))
            if prefix in seen:
                continue
            seen.add(prefix)
            base = Decimal(rnd.randint(10, 9000)) / Decimal(1_000_000)
            rates.append(VendorRate(prefix, base * 3, EPOCH, None, base, base * 2))
        for catch_all in ("1", *map(str, range(2, 10))):
            if catch_all not in seen:
                rates.append(VendorRate(catch_all, Decimal("0.05"), EPOCH))
        vid = uuid.uuid4()
        built[vid] = build_vendor(vid, f"vendor-{v:02d}", [Gateway(uuid.uuid4(), "gw", f"192.0.2.{v + 1}")], rates)
    plan = RoutingPlan(uuid.uuid4(), "all", "least_cost", tuple(PlanVendor(v, i) for i, v in enumerate(built)))
    retail = build_rate_plan(uuid.uuid4(), "retail",
                             [CustomerRate(str(d), Decimal("1.0"), EPOCH) for d in range(1, 10)])
    account = Account(uuid.uuid4(), "BAN1", "bench", AccountStatus.ACTIVE, rate_plan_id=retail.id)
    trunk = Trunk(uuid.uuid4(), account.id, "t", plan.id)
    return RoutingSnapshot(
        version="bench", loaded_at=NOW, accounts=MappingProxyType({account.id: account}),
        trunks=MappingProxyType({trunk.id: trunk}),
        acl=(AclEntry(trunk.id, ipaddress.ip_network("10.0.0.1/32")),),
        vendors=MappingProxyType(built), plans=MappingProxyType({plan.id: plan}),
        npanxx=MappingProxyType(homes), rate_plans=MappingProxyType({retail.id: retail}),
    )


def call_numbers(snapshot: RoutingSnapshot, calls: int) -> list[tuple[str, str]]:
    rnd = random.Random(11)
    homes = list(snapshot.npanxx)
    numbers = []
    for _ in range(calls):
        if rnd.random() < 0.7:
            numbers.append(("1" + rnd.choice(homes) + f"{rnd.randint(0, 9999):04d}", "1" + rnd.choice(homes) + "0100"))
        else:
            numbers.append(("44" + f"{rnd.randint(10**9, 10**10 - 1)}", "12125550100"))
    return numbers


def _cache_hit(number: E164) -> LrnResult:  # an LRN cache hit, as most calls are
    return LrnResult(None, "cache")


def decide_all(snapshot: RoutingSnapshot, numbers: list[tuple[str, str]]) -> tuple[list[int], int]:
    """Nanoseconds per decision, and how many calls were relayed."""
    samples: list[int] = []
    relayed = 0
    for dialed, caller in numbers:
        request = CallRequest("c", "10.0.0.1", 5060, "udp", dialed, caller)
        t0 = time.perf_counter_ns()
        decision = decide_invite(request, snapshot, NOW, "US", _cache_hit)
        samples.append(time.perf_counter_ns() - t0)
        relayed += isinstance(decision, Relay)
    samples.sort()
    return samples, relayed


def _us(samples: list[int], pct: int) -> float:
    return round(statistics.quantiles(samples, n=100)[pct - 1] / 1000, 1)


def run(calls: int = 20_000, workers: int = 4, prefixes: int = 1_000_000) -> dict[str, object]:
    gc.collect()
    rss_before = _rss_mb()
    started = time.perf_counter()
    snapshot = generate(prefixes=prefixes, npanxx=min(100_000, prefixes // 10))
    build_s = time.perf_counter() - started
    rss_after = _rss_mb()
    numbers = call_numbers(snapshot, calls)

    with tempfile.TemporaryDirectory() as tmp:
        store = SnapshotStore(Path(tmp))
        started = time.perf_counter()
        store.publish(snapshot)
        publish_s = time.perf_counter() - started
        size_mb = store.path(snapshot.version).stat().st_size / 2**20
        started = time.perf_counter()
        mapped = store.load(snapshot.version)
        load_ms = (time.perf_counter() - started) * 1000
        gc.freeze()  # as a SIP worker does after loading a snapshot: the collector skips its objects
        in_memory, _ = decide_all(snapshot, numbers)
        samples, relayed = decide_all(mapped, numbers)
        del mapped
        memory = workers_memory(Path(tmp), snapshot.version, workers, calls)
    return {
        "vendors": len(snapshot.vendors),
        "vendor_prefixes": sum(len(v.rates) for v in snapshot.vendors.values()),
        "npanxx_rows": len(snapshot.npanxx),
        "decisions": calls,
        "relayed": relayed,
        "decision_p50_us": _us(samples, 50),
        "decision_p99_us": _us(samples, 99),
        "decision_max_us": round(samples[-1] / 1000, 1),
        "decision_in_memory_p50_us": _us(in_memory, 50),
        "decision_in_memory_p99_us": _us(in_memory, 99),
        "snapshot_build_s": round(build_s, 2),
        "snapshot_in_memory_mb": round(rss_after - rss_before, 0),
        "snapshot_file_mb": round(size_mb, 1),
        "snapshot_publish_s": round(publish_s, 2),
        "snapshot_load_ms": round(load_ms, 1),
        **memory,
    }


def workers_memory(directory: Path, version: str, workers: int, calls: int) -> dict[str, object]:
    """Start ``workers`` fresh processes that each map the published file and route ``calls``
    calls, as SIP workers do; once all are warm, read their memory together (PSS shares each
    shared page among the processes mapping it, so its sum is what the node really spends)."""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.worker", str(directory), version, str(calls)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(workers)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "warm":
                raise RuntimeError("a benchmark worker failed before it was warm")
        reports = []
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("measure\n")
            proc.stdin.flush()
            reports.append(json.loads(proc.stdout.readline()))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return {
        "workers": workers,
        "workers_rss_mb_total": round(sum(r["rss_mb"] for r in reports)),
        "workers_pss_mb_total": round(sum(r["pss_mb"] for r in reports)),
        "worker_pss_mb_max": round(max(r["pss_mb"] for r in reports)),
        "worker_load_ms_max": round(max(r["load_ms"] for r in reports), 1),
    }
