"""Vendor quality: ASR, ACD and PDD per vendor and per vendor × destination prefix over a
sliding window, judged by the companion and published as verdicts the SIP workers read.

The work is split so that the call path pays almost nothing:

- a call's end adds its vendor attempts to the quality stream (``warp:quality``) with ONE
  command, an XADD in the pipeline that also carries its CDR (``record``);
- the companion (``Aggregator``, one per node) follows the whole stream, keeps the window in
  memory as one-minute buckets with running totals (per vendor, and per vendor × prefix, the
  prefix being the dialed E.164 number's first ``prefix_digits`` digits), judges it every
  ``refresh_s`` and publishes the verdicts as one small JSON value (``warp:quality:verdicts``):
  every vendor's figures, and only the demotions per prefix. Every node's companion reads every
  entry, so they all publish the same verdicts; a restarted one rebuilds its window from the
  stream, which the companions trim to the last ``window_s``;
- a worker (``QualityView``) reads that one value at most every ``refresh_s``.

A vendor (or vendor × prefix) with at least ``min_samples`` attempts is demoted when its ASR is
below ``asr_min``, or when its average PDD is above ``pdd_max_ms`` (if set, judged over at least
``min_samples`` rung attempts); it is restored only once it is back past the line by the
``hysteresis`` margin (or has too few attempts to judge), so a vendor near the line does not
flap. The ``quality`` strategy tries demoted vendors last. No verdicts, or verdicts older than
``STALE_S`` (the companions are gone): nobody is demoted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

log = logging.getLogger("warp.quality")
BUCKET_S = 60
STREAM = "warp:quality"
VERDICTS = "warp:quality:verdicts"
STREAM_MAXLEN = 500_000  # a bound on the stream when no companion trims it to the window
STALE_S = 60.0           # verdicts older than this are not used (no companion publishes them)
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


def prefix_of(destination: str, digits: int) -> str:
    return destination.lstrip("+")[:digits] if digits > 0 else ""


def record(client: Any, outcomes: Iterable[tuple[Any, ...]], now: float, pipe: Any = None,
           maxlen: int = STREAM_MAXLEN) -> None:
    """Add a call's attempts (``Outcome`` or a tuple in its order) to the quality stream: one
    XADD. Given a pipeline, the command joins it and its owner executes it."""
    rows = [[str(o.vendor_id), int(bool(o.answered)), int(o.seconds), o.pdd_ms, o.destination]
            for o in (Outcome(*t) for t in outcomes)]
    if not rows:
        return
    target = client if pipe is None else pipe
    target.xadd(STREAM, {"t": repr(float(now)), "o": json.dumps(rows, separators=(",", ":"))},
                maxlen=maxlen, approximate=True)


# ------------------------------------------------------------------ the companion's side

class Window:
    """Attempts per vendor and per (prefix, vendor) over the last ``window_s``, in one-minute
    buckets with running totals: adding an attempt or letting a minute go is O(its keys)."""

    def __init__(self, window_s: int, prefix_digits: int) -> None:
        self.window_s = window_s
        self.prefix_digits = prefix_digits
        self._buckets: dict[int, dict[tuple[str, ...], list[int]]] = {}
        self.totals: dict[tuple[str, ...], list[int]] = {}

    def _oldest(self, now: float) -> int:
        return int(now // BUCKET_S) * BUCKET_S - (self.window_s // BUCKET_S - 1) * BUCKET_S

    def add(self, at: float, outcome: Outcome, now: float) -> None:
        minute = int(at // BUCKET_S) * BUCKET_S
        if minute < self._oldest(now):
            return  # already out of the window
        figures = [1, 0, 0, 0, 0]
        if outcome.answered:
            figures[1], figures[2] = 1, max(0, int(outcome.seconds))
        if outcome.pdd_ms is not None:
            figures[3], figures[4] = max(0, int(outcome.pdd_ms)), 1
        keys: list[tuple[str, ...]] = [("v", outcome.vendor_id)]
        if prefix := prefix_of(outcome.destination, self.prefix_digits):
            keys.append(("p", prefix, outcome.vendor_id))
        bucket = self._buckets.setdefault(minute, {})
        for key in keys:
            for sums in (bucket.setdefault(key, [0] * 5), self.totals.setdefault(key, [0] * 5)):
                for i, value in enumerate(figures):
                    sums[i] += value

    def expire(self, now: float) -> None:
        oldest = self._oldest(now)
        for minute in [m for m in self._buckets if m < oldest]:
            for key, figures in self._buckets.pop(minute).items():
                sums = self.totals[key]
                for i, value in enumerate(figures):
                    sums[i] -= value
                if sums[0] <= 0:
                    del self.totals[key]


@dataclass(frozen=True)
class Judge:
    """The demotion rule (see the module's docstring)."""

    min_samples: int = 20
    asr_min: float = 0.2
    hysteresis: float = 0.05
    pdd_max_ms: int = 0

    def verdict(self, q: Quality, was: bool) -> str | None:
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


class Aggregator:
    """The companion's half: follow the quality stream, keep the window, publish the verdicts
    every ``publish_s``. One bad entry is logged and skipped; the others count."""

    def __init__(self, client: Any, judge: Judge, window_s: int = 900, prefix_digits: int = 0,
                 publish_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.judge = judge
        self.window = Window(window_s, prefix_digits)
        self.publish_s = publish_s
        self.clock = clock
        self._last_id: str | None = None
        self._published_at = 0.0
        self._demoted: set[tuple[str, ...]] = set()  # demoted when last judged (for the hysteresis)
        self.skipped = 0

    def start(self) -> None:
        """Take over the published demotions (for the hysteresis) and read the stream over the window."""
        doc = _load(self.client.get(VERDICTS)) or {}
        self._demoted = {("v", v) for v, f in doc.get("vendors", {}).items() if f.get("demoted")}
        self._demoted |= {("p", prefix, v) for prefix, by_vendor in doc.get("prefixes", {}).items()
                          for v in by_vendor}
        since = max(0, int((time.time() - self.window.window_s - BUCKET_S) * 1000))
        start = f"{since}-0"
        while entries := self.client.xrange(STREAM, min=start, count=1000):
            self._fold(entries)
            start = f"({entries[-1][0]}"
        self._last_id = self._last_id or f"{since}-0"  # followed from here on (set once replayed)

    def step(self, block_ms: int | None = None) -> None:
        """Fold in what the stream has gained (waiting up to ``block_ms`` for it), and publish
        if it is time."""
        if self._last_id is None:
            self.start()
        replies = self.client.xread({STREAM: self._last_id}, count=1000, block=block_ms)
        for _stream, entries in replies or []:
            self._fold(entries)
        now = self.clock()
        if now - self._published_at >= self.publish_s:
            self.publish(now)

    def run(self, stopped: Callable[[], bool]) -> None:
        while not stopped():
            try:
                self.step(block_ms=int(self.publish_s * 1000))
            except Exception as exc:
                log.warning("vendor quality not updated: %s", exc)
                time.sleep(self.publish_s)

    def _fold(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        now = self.clock()
        for entry_id, fields in entries:
            self._last_id = entry_id
            try:
                at = float(fields["t"])
                outcomes = [Outcome(str(r[0]), bool(r[1]), int(r[2]), None if r[3] is None else int(r[3]), str(r[4]))
                            for r in json.loads(fields["o"])]
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                self.skipped += 1
                log.warning("quality entry %s skipped: %s (%r)", entry_id, exc, fields)
                continue
            for outcome in outcomes:
                self.window.add(at, outcome, now)

    def publish(self, now: float) -> dict[str, Any]:
        self.window.expire(now)
        vendors: dict[str, dict[str, Any]] = {}
        prefixes: dict[str, dict[str, str]] = {}
        demoted: set[tuple[str, ...]] = set()
        for key, sums in self.window.totals.items():
            verdict = self.judge.verdict(Quality(*sums), key in self._demoted)
            if key[0] == "v":
                why = None if verdict is None else f"demoted: {verdict}"
                vendors[key[1]] = {"figures": list(sums), "demoted": why}
            else:
                why = None if verdict is None else f"demoted for {key[1]}*: {verdict}"
                if why is not None:
                    prefixes.setdefault(key[1], {})[key[2]] = why
            if why is not None:
                demoted.add(key)
        self._demoted = demoted
        doc = {"at": now, "vendors": vendors, "prefixes": prefixes}
        pipe = self.client.pipeline(transaction=False)
        pipe.set(VERDICTS, json.dumps(doc, separators=(",", ":")))
        # the stream keeps what a restarted companion needs: the window (entry ids are Redis's clock)
        pipe.xtrim(STREAM, minid=f"{int((time.time() - self.window.window_s - BUCKET_S) * 1000)}-0",
                   approximate=False)
        pipe.execute()
        self._published_at = now
        return doc


def _load(raw: str | bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def figures(client: Any) -> dict[str, Quality]:
    """Every vendor's figures over the window as last published, by vendor id (text)."""
    doc = _load(client.get(VERDICTS)) or {}
    return {v: Quality(*f["figures"]) for v, f in doc.get("vendors", {}).items()}


# ------------------------------------------------------------------ the SIP worker's side

class QualityView:
    """The published verdicts, read at most every ``refresh_s`` (one GET of one small value)."""

    def __init__(self, client: Any, refresh_s: float = 1.0, clock: Callable[[], float] = time.time,
                 prefix_digits: int = 0, stale_s: float = STALE_S) -> None:
        self.client = client
        self.refresh_s = refresh_s
        self.clock = clock
        self.prefix_digits = prefix_digits
        self.stale_s = stale_s
        self._next = 0.0
        self._vendors: dict[str, str] = {}
        self._prefixes: dict[str, dict[str, str]] = {}

    def demotion(self, vendor_id: UUID, known: Iterable[UUID] = (), destination: str = "") -> str | None:
        """Why this vendor is demoted now — for every destination, or for this one's prefix — or None.
        (``known``: the other vendors of the snapshot; the verdicts carry them all already.)"""
        now = self.clock()
        if now >= self._next:
            self._next = now + self.refresh_s
            self._read(now)
        vendor = str(vendor_id)
        overall = self._vendors.get(vendor)
        prefix = prefix_of(destination, self.prefix_digits)
        if overall is not None or not prefix:
            return overall
        return self._prefixes.get(prefix, {}).get(vendor)

    def _read(self, now: float) -> None:
        vendors: dict[str, str] = {}
        prefixes: dict[str, dict[str, str]] = {}
        try:
            doc = _load(self.client.get(VERDICTS)) or {}
            age = now - float(doc.get("at", now))
            if age > self.stale_s:
                log.warning("vendor quality verdicts of %.0f s ago not used: is a companion running?", age)
            else:
                vendors = {v: f["demoted"] for v, f in doc.get("vendors", {}).items() if f.get("demoted")}
                prefixes = doc.get("prefixes", {})
        except Exception as exc:  # no data, or data not understood: nobody is demoted
            log.warning("vendor quality unknown (%s)", exc)
        self._vendors, self._prefixes = vendors, prefixes
