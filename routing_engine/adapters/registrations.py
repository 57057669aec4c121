"""Registrations in Redis, so that every Kamailio node sees every registered contact.

One hash per trunk, ``warp:reg:<trunk id>``: contact URI -> JSON {received, expires_at, call_id,
user_agent}. Updates run in a WATCH/MULTI transaction, so two REGISTERs of one trunk racing on
two nodes cannot lose each other's contacts. Expired contacts are ignored on read and pruned
on the next write; the whole key expires with its last contact.

Why our own store rather than usrloc + db_redis: the Python side needs the contacts for inbound
delivery and the per-trunk limits anyway, and one small hash per trunk is easy to inspect
(``HGETALL warp:reg:<id>``) at 3 a.m.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from routing_engine.domain.inbound import Contact
from routing_engine.domain.registrar import Plan

KEY = "warp:reg:{}"
log = logging.getLogger("warp.defence")


@dataclass(frozen=True, slots=True)
class Binding:
    uri: str
    expires_in: int
    received: str | None


class RegistrationStore:
    def __init__(self, client: Any) -> None:
        self.client = client

    def apply(self, trunk_id: object, plan: Plan, now: float, received: str, max_contacts: int,
              call_id: str = "", user_agent: str = "") -> list[Binding]:
        key = KEY.format(trunk_id)
        result: list[Binding] = []

        def update(pipe: Any) -> None:
            current = {uri: json.loads(v) for uri, v in pipe.hgetall(key).items()}
            live = {uri: b for uri, b in current.items() if b["expires_at"] > now}
            if plan.remove_all:
                live = {}
            for uri in plan.remove:
                live.pop(uri, None)
            for uri, seconds in plan.add:
                live[uri] = {"received": received, "expires_at": now + seconds, "call_id": call_id,
                             "user_agent": user_agent[:120]}
            if len(live) > max_contacts:  # keep the newest registrations, drop the oldest
                ranked = sorted(live.items(), key=lambda kv: kv[1]["expires_at"], reverse=True)
                live = dict(ranked[:max_contacts])
            pipe.multi()
            pipe.delete(key)
            if live:
                pipe.hset(key, mapping={uri: json.dumps(b) for uri, b in live.items()})
                pipe.expireat(key, int(max(b["expires_at"] for b in live.values())) + 1)
            result[:] = [Binding(uri, int(b["expires_at"] - now), b["received"])
                         for uri, b in sorted(live.items())]

        self.client.transaction(update, key)
        return result

    def bindings(self, trunk_id: object, now: float) -> list[Binding]:
        raw = self.client.hgetall(KEY.format(trunk_id))
        out = []
        for uri, value in sorted(raw.items()):
            b = json.loads(value)
            if b["expires_at"] > now:
                out.append(Binding(uri, int(b["expires_at"] - now), b["received"]))
        return out

    def contacts(self, trunk_id: object, now: float) -> list[Contact]:
        return [Contact(b.uri, b.received) for b in self.bindings(trunk_id, now)]


class Defence:
    """Brute-force defence shared by all nodes: digest failures per source IP within a window
    block that IP for a while. Blocks expire by themselves; ops can list and clear them."""

    FAILS = "warp:authfail:{}"
    BLOCK = "warp:block:{}"
    BLOCKED = "warp:blocked"  # sorted set: IP -> when its block ends (counted by the metrics endpoint)

    def __init__(self, client: Any, threshold: int, window_s: int, block_s: int) -> None:
        self.client = client
        self.threshold = threshold
        self.window_s = window_s
        self.block_s = block_s

    def is_blocked(self, ip: str) -> bool:
        return bool(self.client.exists(self.BLOCK.format(ip)))

    def record_failure(self, ip: str) -> bool:
        """Count one failure; True if the IP is now blocked."""
        pipe = self.client.pipeline()
        pipe.incr(self.FAILS.format(ip))
        pipe.expire(self.FAILS.format(ip), self.window_s, nx=True)
        count, _ = pipe.execute()
        if int(count) < self.threshold:
            return False
        pipe = self.client.pipeline()
        pipe.set(self.BLOCK.format(ip), str(int(count)), ex=self.block_s)
        pipe.delete(self.FAILS.format(ip))
        pipe.zadd(self.BLOCKED, {ip: time.time() + self.block_s})
        pipe.execute()
        return True

    @classmethod
    def count_blocked(cls, client: Any, now: float) -> int:
        """How many sources are blocked now (expired entries are removed first)."""
        pipe = client.pipeline()
        pipe.zremrangebyscore(cls.BLOCKED, "-inf", now)
        pipe.zcard(cls.BLOCKED)
        return int(pipe.execute()[1])

    def blocked_until(self, now: float) -> dict[str, float]:
        """Every source blocked at ``now``, with the moment its block ends."""
        return {str(ip): float(until) for ip, until in
                self.client.zrangebyscore(self.BLOCKED, now, "+inf", withscores=True)}

    def blocks(self) -> list[tuple[str, int]]:
        out = []
        for key in self.client.scan_iter(match=self.BLOCK.format("*"), count=500):
            ttl = self.client.ttl(key)
            if ttl and ttl > 0:
                out.append((str(key).split(":", 2)[2], int(ttl)))
        return sorted(out)

    def clear(self, ip: str) -> bool:
        self.client.zrem(self.BLOCKED, ip)
        return bool(self.client.delete(self.BLOCK.format(ip), self.FAILS.format(ip)))


class BlockCache:
    """The blocked sources as one SIP worker sees them: read from Redis at most every
    ``refresh_s``, so a request costs no round trip and a block reaches every worker of every
    node within ``refresh_s``. Redis unavailable: the last list read stays in force."""

    def __init__(self, defence: Defence, refresh_s: float) -> None:
        self.defence = defence
        self.refresh_s = refresh_s
        self._until: dict[str, float] = {}
        self._next = 0.0

    def blocked(self, ip: str, now: float) -> bool:
        if now >= self._next:
            self._next = now + self.refresh_s
            try:
                self._until = self.defence.blocked_until(now)
            except Exception as exc:
                log.warning("block list not refreshed, Redis unavailable: %s", exc)
        return self._until.get(ip, 0.0) > now


def connect_errors() -> tuple[type[Exception], ...]:
    return (redis.RedisError,)
