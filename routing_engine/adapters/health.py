"""Gateway health: vendor gateways that stop answering OPTIONS leave the candidate list.

The companion probes every gateway with ``probe = true`` and keeps the set of gateways that are
down in Redis (``warp:gw:down``), shared by all workers and nodes. A gateway is down after
``down_after`` probes in a row went unanswered and up again at its first answer. Workers read
the set at most once a second; if Redis cannot say, every gateway counts as up (routing goes
on; a dead gateway then costs one attempt timeout and fails over).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from uuid import UUID

from routing_engine.adapters.sipcheck import options_ping
from routing_engine.domain.snapshot import Gateway

log = logging.getLogger("warp.health")
KEY = "warp:gw:down"


class HealthView:
    def __init__(self, client: Any, refresh_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.refresh_s = refresh_s
        self.clock = clock
        self._down: frozenset[str] = frozenset()
        self._next = 0.0

    def down(self) -> frozenset[str]:
        now = self.clock()
        if now >= self._next:
            self._next = now + self.refresh_s
            try:
                self._down = frozenset(str(m) for m in self.client.smembers(KEY))
            except Exception as exc:
                log.warning("gateway health unknown (%s): treating every gateway as up", exc)
                self._down = frozenset()
        return self._down

    def is_up(self, gateway_id: UUID) -> bool:
        return str(gateway_id) not in self.down()


class Prober:
    def __init__(self, client: Any, timeout_s: float = 0.5, down_after: int = 2, source: str = "0.0.0.0") -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.down_after = down_after
        self.source = source
        self._misses: dict[UUID, int] = {}

    def probe(self, gateways: Iterable[Gateway]) -> None:
        for gw in gateways:
            answered = options_ping(gw.host, gw.port, timeout_s=self.timeout_s, source=self.source) is not None
            misses = 0 if answered else self._misses.get(gw.id, 0) + 1
            before = self._misses.get(gw.id, 0)
            self._misses[gw.id] = misses
            if answered and before >= self.down_after:
                self.client.srem(KEY, str(gw.id))
                log.warning("gateway %s (%s:%d) answers again: back in service", gw.name, gw.host, gw.port)
            elif misses == self.down_after:
                self.client.sadd(KEY, str(gw.id))
                log.warning("gateway %s (%s:%d) stopped answering OPTIONS: out of service", gw.name, gw.host, gw.port)
            elif answered and before == 0:
                self.client.srem(KEY, str(gw.id))  # a state left by an earlier companion
