"""Routing decision latency, snapshot build/publish/load time and memory, on generated data.

1,000,000 vendor prefixes across 20 vendors plus 100,000 NPA-NXX homes (issue target:
decision p99 <= 100 us). Everything in process: the same ``decide_invite`` a SIP worker runs.
"""

from __future__ import annotations

import gc
import ipaddress
import pickle
import random
import resource
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from routing_engine.decision import CallRequest, Relay, decide_invite
from routing_engine.lrn import LrnResult
from routing_engine.numbers import E164
from routing_engine.snapshot import (
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


def run(calls: int = 20_000) -> dict[str, object]:
    gc.collect()
    rss_before = _rss_mb()
    started = time.perf_counter()
    snapshot = generate()
    build_s = time.perf_counter() - started
    rss_after = _rss_mb()
    started = time.perf_counter()
    blob = pickle.dumps(snapshot, protocol=pickle.HIGHEST_PROTOCOL)
    dump_s = time.perf_counter() - started
    started = time.perf_counter()
    pickle.loads(blob)
    load_s = time.perf_counter() - started

    gc.freeze()  # as a SIP worker does after loading a snapshot: the collector skips its objects
    rnd = random.Random(11)
    homes = list(snapshot.npanxx)
    numbers = []
    for _ in range(calls):
        if rnd.random() < 0.7:
            numbers.append(("1" + rnd.choice(homes) + f"{rnd.randint(0, 9999):04d}", "1" + rnd.choice(homes) + "0100"))
        else:
            numbers.append(("44" + f"{rnd.randint(10**9, 10**10 - 1)}", "12125550100"))

    def lookup(number: E164) -> LrnResult:  # a cache hit, as most calls are
        return LrnResult(None, "cache")

    samples: list[int] = []
    relayed = 0
    for dialed, caller in numbers:
        request = CallRequest("c", "10.0.0.1", 5060, "udp", dialed, caller)
        t0 = time.perf_counter_ns()
        decision = decide_invite(request, snapshot, NOW, "US", lookup)
        samples.append(time.perf_counter_ns() - t0)
        relayed += isinstance(decision, Relay)
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    return {
        "vendors": len(snapshot.vendors),
        "vendor_prefixes": sum(len(v.rates) for v in snapshot.vendors.values()),
        "npanxx_rows": len(snapshot.npanxx),
        "decisions": calls,
        "relayed": relayed,
        "decision_p50_us": round(q[49] / 1000, 1),
        "decision_p99_us": round(q[98] / 1000, 1),
        "decision_max_us": round(samples[-1] / 1000, 1),
        "snapshot_build_s": round(build_s, 2),
        "snapshot_pickle_mb": round(len(blob) / 2**20, 1),
        "snapshot_publish_s": round(dump_s, 2),
        "snapshot_load_s": round(load_s, 2),
        "snapshot_rss_mb": round(rss_after - rss_before, 0),
    }
