"""Funds: what admission and slice renewal cost in Redis as an account's concurrent calls grow.

Runs against the embedded Redis `make bench` starts, on accounts and a trunk of its own (random
ids, deleted afterwards).

- admission: one call admitted (limits and its first slice, one script) on an account already
  holding N calls; round trip per admission and Redis CPU per script (``INFO commandstats``),
  for N = 0, 100, 1,000, 5,000. Flat in N: the account's reserved total is kept, not summed.
- renewal: one tick of a node's renewal task for N due calls (one script); milliseconds per tick
  and per call.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import redis

from routing_engine.adapters import redis_store
from routing_engine.adapters.money import Funds, Limits, Renewal, SlicePrice, Wallet
from routing_engine.domain.rating import Price
from routing_engine.settings import load_settings

PRICE = SlicePrice.of(Price(Decimal("0.010"), 6, 6))
T = 1_800_000_000.0


def _script_usec(client: Any) -> tuple[int, int]:
    stats = client.info("commandstats")
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


def _loaded(client: Any, timeout_s: float = 60) -> None:
    """Wait while Redis loads its append-only file (the embedded stack has just started it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.exceptions.BusyLoadingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run(held: tuple[int, ...] = (0, 100, 1000, 5000), samples: int = 500) -> dict[str, object]:
    client = redis_store.connect(load_settings().redis_url, 5000)
    _loaded(client)
    limits, wallet = Limits(client), Wallet(client)
    trunk = uuid.uuid4()
    accounts: list[uuid.UUID] = []
    funds = Funds(10**12, 60, 14_400, PRICE)
    results: dict[str, object] = {}
    try:
        for n in held:
            account = uuid.uuid4()
            accounts.append(account)
            for _ in range(n):
                limits.admit(uuid.uuid4(), trunk, account, T, 600, None, None, None, None, funds)
            calls0, usec0 = _script_usec(client)
            started = time.perf_counter()
            for _ in range(samples):
                limits.admit(uuid.uuid4(), trunk, account, T, 600, None, None, None, None, funds)
            elapsed = time.perf_counter() - started
            calls1, usec1 = _script_usec(client)
            results[f"admission with {n} calls held, round trip (us)"] = round(elapsed / samples * 1e6)
            results[f"admission with {n} calls held, Redis CPU (us)"] = round((usec1 - usec0) / max(calls1 - calls0, 1))
        account = uuid.uuid4()
        accounts.append(account)
        calls = [uuid.uuid4() for _ in range(1000)]
        for c in calls:
            limits.admit(c, trunk, account, T, 600, None, None, None, None, funds)
        due = [Renewal(c, account, trunk, 10**12, 60, 120, T + 600, PRICE) for c in calls]
        started = time.perf_counter()
        wallet.renew(due, T + 50)
        elapsed = time.perf_counter() - started
        results["renewal tick, 1000 due calls (ms)"] = round(elapsed * 1000, 1)
        results["renewal tick, per call (us)"] = round(elapsed / len(calls) * 1e6, 1)
    finally:
        keys = [k for a in accounts for k in (*Wallet._keys(a), *Limits._keys(trunk, a))]
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    return results
