"""Vendor quality: ASR and ACD per vendor over a sliding window, shared in Redis.

Each finished call adds its vendor attempts to one-minute buckets (``warp:q:<vendor>:<minute>``:
attempts, answered, answered seconds). A worker reads the window (default 15 minutes) at most
every ``refresh_s`` and decides which vendors are demoted: a vendor with at least
``min_samples`` attempts and an ASR below ``asr_min`` is demoted; it is restored only once its
ASR is back above ``asr_min + hysteresis`` (or it has too few attempts to judge), so a vendor
near the line does not flap. The ``quality`` strategy tries demoted vendors last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

log = logging.getLogger("warp.quality")
BUCKET_S = 60


@dataclass(frozen=True, slots=True)
class Quality:
    attempts: int
    answered: int
    seconds: int

    @property
    def asr(self) -> float:
        return self.answered / self.attempts if self.attempts else 0.0

    @property
    def acd(self) -> float:
        return self.seconds / self.answered if self.answered else 0.0


def record(client: Any, outcomes: Iterable[tuple[str, bool, int]], now: float, window_s: int) -> None:
    """Add call attempts: (vendor id, answered, answered seconds) each."""
    bucket = int(now // BUCKET_S) * BUCKET_S
    pipe = client.pipeline(transaction=False)
    for vendor_id, answered, seconds in outcomes:
        key = f"warp:q:{vendor_id}:{bucket}"
        pipe.hincrby(key, "attempts", 1)
        if answered:
            pipe.hincrby(key, "answered", 1)
            pipe.hincrby(key, "seconds", max(0, seconds))
        pipe.expire(key, window_s + BUCKET_S)
    pipe.execute()


def read(client: Any, vendor_ids: Iterable[UUID], now: float, window_s: int) -> dict[UUID, Quality]:
    ids = list(vendor_ids)
    last = int(now // BUCKET_S) * BUCKET_S
    buckets = [last - i * BUCKET_S for i in range(window_s // BUCKET_S)]
    pipe = client.pipeline(transaction=False)
    for vendor_id in ids:
        for b in buckets:
            pipe.hgetall(f"warp:q:{vendor_id}:{b}")
    replies = pipe.execute()
    out: dict[UUID, Quality] = {}
    for i, vendor_id in enumerate(ids):
        rows = replies[i * len(buckets):(i + 1) * len(buckets)]
        out[vendor_id] = Quality(sum(int(r.get("attempts", 0)) for r in rows),
                                 sum(int(r.get("answered", 0)) for r in rows),
                                 sum(int(r.get("seconds", 0)) for r in rows))
    return out


class QualityView:
    def __init__(self, client: Any, window_s: int = 900, min_samples: int = 20, asr_min: float = 0.2,
                 hysteresis: float = 0.05, refresh_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.window_s = window_s
        self.min_samples = min_samples
        self.asr_min = asr_min
        self.hysteresis = hysteresis
        self.refresh_s = refresh_s
        self.clock = clock
        self._stats: dict[UUID, Quality] = {}
        self._demoted: dict[UUID, str] = {}
        self._next = 0.0

    def demotion(self, vendor_id: UUID, known: Iterable[UUID] = ()) -> str | None:
        """Why this vendor is demoted now, or None."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.refresh_s
            try:
                self._stats = read(self.client, set(known) | {vendor_id}, now, self.window_s)
            except Exception as exc:  # no data: nobody is demoted
                log.warning("vendor quality unknown (%s)", exc)
                self._stats = {}
            self._judge()
        elif vendor_id not in self._stats:
            self._next = 0.0  # a vendor not read yet: read at the next call
        return self._demoted.get(vendor_id)

    def _judge(self) -> None:
        for vendor_id, q in self._stats.items():
            was = vendor_id in self._demoted
            if q.attempts < self.min_samples:
                self._demoted.pop(vendor_id, None)
                continue
            threshold = self.asr_min + (self.hysteresis if was else 0.0)
            if q.asr < threshold:
                self._demoted[vendor_id] = (f"demoted: ASR {q.asr:.0%} over {q.attempts} attempts "
                                            f"(below {threshold:.0%}), ACD {q.acd:.0f} s")
            else:
                self._demoted.pop(vendor_id, None)
