"""Vendor quality: ASR, ACD and PDD per vendor and per vendor × destination prefix over a
sliding window, shared in Redis.

Each finished call adds its vendor attempts to one-minute buckets: per vendor
(``warp:q:<vendor>:<minute>``: attempts, answered, answered seconds, PDD sum and count) and per
destination prefix (``warp:qp:<prefix>:<minute>``, one field per vendor and figure, so one prefix
is read for every vendor at once). The prefix is the dialed E.164 number's first
``prefix_digits`` digits (4: country 1 + NPA, or a country and its first digits).

A worker reads the window (default 15 minutes) at most every ``refresh_s`` and decides which
vendors are demoted — for every destination, or only for one prefix. A vendor (or vendor ×
prefix) with at least ``min_samples`` attempts is demoted when its ASR is below ``asr_min``, or
when its average PDD is above ``pdd_max_ms`` (if set, judged over at least ``min_samples``
rung attempts); it is restored only once it is back past the line by the ``hysteresis`` margin
(or has too few attempts to judge), so a vendor near the line does not flap. The ``quality``
strategy tries demoted vendors last.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

log = logging.getLogger("warp.quality")
BUCKET_S = 60
_FIGURES = ("attempts", "answered", "seconds", "pdd_sum", "pdd_n")


class Outcome(NamedTuple):
    """One vendor attempt of a finished call."""

    vendor_id: str
    answered: bool
    seconds: int = 0                # answered seconds
    pdd_ms: int | None = None       # INVITE to its first ringing, when it rang
    destination: str = ""           # the dialed E.164 digits


@dataclass(frozen=True, slots=True)
class Quality:
    attempts: int
    answered: int
    seconds: int
    pdd_sum: int = 0
    pdd_n: int = 0

    @property
    def asr(self) -> float:
        return self.answered / self.attempts if self.attempts else 0.0

    @property
    def acd(self) -> float:
        return self.seconds / self.answered if self.answered else 0.0

    @property
    def pdd_ms(self) -> float | None:
        return self.pdd_sum / self.pdd_n if self.pdd_n else None

    @classmethod
    def total(cls, rows: Iterable[dict[str, Any]], field_prefix: str = "") -> Quality:
        sums = dict.fromkeys(_FIGURES, 0)
        for row in rows:
            for name in _FIGURES:
                sums[name] += int(row.get(field_prefix + name, 0))
        return cls(**sums)


def prefix_of(destination: str, digits: int) -> str:
    return destination.lstrip("+")[:digits] if digits > 0 else ""


def record(client: Any, outcomes: Iterable[tuple[Any, ...]], now: float, window_s: int,
           prefix_digits: int = 0, pipe: Any = None) -> None:
    """Add call attempts (``Outcome`` or a tuple in its order) to the current minute. Given a
    pipeline, the commands join it and its owner executes it."""
    bucket = int(now // BUCKET_S) * BUCKET_S
    own = pipe is None
    pipe = client.pipeline(transaction=False) if own else pipe
    for outcome in (Outcome(*o) for o in outcomes):
        figures = {"attempts": 1}
        if outcome.answered:
            figures |= {"answered": 1, "seconds": max(0, outcome.seconds)}
        if outcome.pdd_ms is not None:
            figures |= {"pdd_sum": max(0, outcome.pdd_ms), "pdd_n": 1}
        key = f"warp:q:{outcome.vendor_id}:{bucket}"
        prefix = prefix_of(outcome.destination, prefix_digits)
        by_prefix = f"warp:qp:{prefix}:{bucket}"
        for name, value in figures.items():
            pipe.hincrby(key, name, value)
            if prefix:
                pipe.hincrby(by_prefix, f"{outcome.vendor_id}|{name}", value)
        pipe.expire(key, window_s + BUCKET_S)
        if prefix:
            pipe.expire(by_prefix, window_s + BUCKET_S)
    if own:
        pipe.execute()


def _buckets(now: float, window_s: int) -> list[int]:
    last = int(now // BUCKET_S) * BUCKET_S
    return [last - i * BUCKET_S for i in range(window_s // BUCKET_S)]


def read(client: Any, vendor_ids: Iterable[UUID], now: float, window_s: int) -> dict[UUID, Quality]:
    ids = list(vendor_ids)
    buckets = _buckets(now, window_s)
    pipe = client.pipeline(transaction=False)
    for vendor_id in ids:
        for b in buckets:
            pipe.hgetall(f"warp:q:{vendor_id}:{b}")
    replies = pipe.execute()
    return {vendor_id: Quality.total(replies[i * len(buckets):(i + 1) * len(buckets)])
            for i, vendor_id in enumerate(ids)}


def read_prefix(client: Any, prefix: str, now: float, window_s: int) -> dict[str, Quality]:
    """Every vendor's figures for one destination prefix, by vendor id (text)."""
    pipe = client.pipeline(transaction=False)
    for b in _buckets(now, window_s):
        pipe.hgetall(f"warp:qp:{prefix}:{b}")
    rows = pipe.execute()
    vendors = {str(k).split("|", 1)[0] for row in rows for k in row}
    return {v: Quality.total(rows, f"{v}|") for v in vendors}


class QualityView:
    _PREFIX_CACHE_LIMIT = 10_000  # prefixes remembered per worker; forgotten all at once past it

    def __init__(self, client: Any, window_s: int = 900, min_samples: int = 20, asr_min: float = 0.2,
                 hysteresis: float = 0.05, refresh_s: float = 5.0, clock: Callable[[], float] = time.time,
                 prefix_digits: int = 0, pdd_max_ms: int = 0) -> None:
        self.client = client
        self.window_s = window_s
        self.min_samples = min_samples
        self.asr_min = asr_min
        self.hysteresis = hysteresis
        self.refresh_s = refresh_s
        self.clock = clock
        self.prefix_digits = prefix_digits
        self.pdd_max_ms = pdd_max_ms
        self._stats: dict[UUID, Quality] = {}
        self._demoted: dict[UUID, str] = {}
        self._next = 0.0
        self._prefixes: dict[str, tuple[float, dict[str, Quality]]] = {}
        self._prefix_demoted: dict[tuple[str, str], str] = {}

    def demotion(self, vendor_id: UUID, known: Iterable[UUID] = (), destination: str = "") -> str | None:
        """Why this vendor is demoted now — for every destination, or for this one's prefix — or None."""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.refresh_s
            try:
                self._stats = read(self.client, set(known) | {vendor_id}, now, self.window_s)
            except Exception as exc:  # no data: nobody is demoted
                log.warning("vendor quality unknown (%s)", exc)
                self._stats = {}
            for vid, q in self._stats.items():
                self._set(self._demoted, vid, self._verdict(q, vid in self._demoted), "demoted: ")
        elif vendor_id not in self._stats:
            self._next = 0.0  # a vendor not read yet: read at the next call
        overall = self._demoted.get(vendor_id)
        prefix = prefix_of(destination, self.prefix_digits)
        if overall is not None or not prefix:
            return overall
        return self._prefix_demotion(str(vendor_id), prefix, now)

    def _prefix_demotion(self, vendor_id: str, prefix: str, now: float) -> str | None:
        cached = self._prefixes.get(prefix)
        if cached is None or now >= cached[0]:
            try:
                figures = read_prefix(self.client, prefix, now, self.window_s)
            except Exception as exc:
                log.warning("vendor quality for %s unknown (%s)", prefix, exc)
                figures = {}
            if len(self._prefixes) >= self._PREFIX_CACHE_LIMIT:
                self._prefixes.clear()
                self._prefix_demoted.clear()
            self._prefixes[prefix] = (now + self.refresh_s, figures)
            for vid, q in figures.items():
                key = (vid, prefix)
                self._set(self._prefix_demoted, key, self._verdict(q, key in self._prefix_demoted),
                          f"demoted for {prefix}*: ")
        return self._prefix_demoted.get((vendor_id, prefix))

    @staticmethod
    def _set(demoted: dict[Any, str], key: Any, verdict: str | None, lead: str) -> None:
        if verdict is None:
            demoted.pop(key, None)
        else:
            demoted[key] = lead + verdict

    def _verdict(self, q: Quality, was: bool) -> str | None:
        """The reason to demote, or None; once demoted, the line moves by the hysteresis."""
        if q.attempts < self.min_samples:
            return None
        pdd = f", PDD {q.pdd_ms:.0f} ms" if q.pdd_ms is not None else ""
        asr_line = self.asr_min + (self.hysteresis if was else 0.0)
        if q.asr < asr_line:
            return f"ASR {q.asr:.0%} over {q.attempts} attempts (below {asr_line:.0%}), ACD {q.acd:.0f} s{pdd}"
        if self.pdd_max_ms and q.pdd_n >= self.min_samples and q.pdd_ms is not None:
            pdd_line = self.pdd_max_ms * ((1 - self.hysteresis) if was else 1.0)
            if q.pdd_ms > pdd_line:
                return f"PDD {q.pdd_ms:.0f} ms over {q.pdd_n} attempts (above {pdd_line:.0f} ms), ASR {q.asr:.0%}"
        return None
