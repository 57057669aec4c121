"""LRN adapters: the Redis cache and the two dip sources (local LNP table, HTTP service).

Both sources run on a SIP worker when the cache misses, so both are bounded: the HTTP source by
its timeout, the local table by a statement timeout and, after a failure, a pause during which
it answers "unavailable" at once instead of waiting on a dead connection again.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psycopg

from routing_engine import metrics
from routing_engine.domain.lrn import LrnCache, LrnError

KEY = "warp:lrn:{}"


class RedisLrnCache:
    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, tn: str) -> str | None:
        value = self.client.get(KEY.format(tn))
        return None if value is None else str(value)

    def put(self, tn: str, value: str, ttl_s: int) -> None:
        self.client.set(KEY.format(tn), value, ex=ttl_s)


class WorkerLrnCache:
    """The answers this process saw lately, in front of the shared cache: a NANP call whose
    number was looked up here in the last ``ttl_s`` needs no Redis round trip for its LRN.

    Bounded: the least recently used answer leaves when ``size`` are held. Short-lived: an entry
    is taken back from the shared cache (or the source) after ``ttl_s``, so a number re-ported
    meanwhile is routed on its new LRN at most ``ttl_s`` late here. The shared entry itself lives
    ``lrn.cache_ttl_s`` (an hour), which bounds that anyway on every node."""

    def __init__(self, inner: LrnCache, size: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.size = size
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, tn: str) -> str | None:
        now = self.clock()
        if (held := self._entries.get(tn)) is not None:
            if held[0] > now:
                self._entries.move_to_end(tn)
                return held[1]
            del self._entries[tn]
        metrics.LRN_WORKER_MISSES.inc()
        value = self.inner.get(tn)
        if value is not None:
            self._remember(tn, value, now + self.ttl_s)
        return value

    def put(self, tn: str, value: str, ttl_s: int) -> None:
        self._remember(tn, value, self.clock() + min(self.ttl_s, ttl_s))
        self.inner.put(tn, value, ttl_s)

    def __len__(self) -> int:
        return len(self._entries)

    def _remember(self, tn: str, value: str, until: float) -> None:
        self._entries[tn] = (until, value)
        self._entries.move_to_end(tn)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class LocalLnp:
    """The routing.lnp table (bulk-loaded with COPY) in Postgres."""

    name = "local"

    def __init__(self, url: str, timeout_ms: int, pause_after_failure_s: float = 5.0) -> None:
        self.url = url
        self.timeout_ms = timeout_ms
        self.pause_s = pause_after_failure_s
        self._conn: psycopg.Connection | None = None
        self._unavailable_until = 0.0

    def lookup(self, tn: str) -> str | None:
        if time.monotonic() < self._unavailable_until:
            raise LrnError("local LNP table unavailable (recent failure)")
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=2,
                                             options=f"-c statement_timeout={self.timeout_ms}",
                                             application_name="warp-lrn")
            row = self._conn.execute("SELECT lrn FROM routing.lnp WHERE tn = %s", (tn,)).fetchone()
        except psycopg.Error as exc:
            self._unavailable_until = time.monotonic() + self.pause_s
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise LrnError(str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__) from exc
        return str(row[0]) if row else None


class HttpLnp:
    """An HTTP dip service: GET <url>?tn=<E.164 digits> answers {"lrn": "<digits>"} or
    {"lrn": null} when the number is not ported."""

    name = "http"

    def __init__(self, url: str, timeout_ms: int) -> None:
        self.url = url
        self.timeout_s = timeout_ms / 1000

    def lookup(self, tn: str) -> str | None:
        sep = "&" if "?" in self.url else "?"
        target = f"{self.url}{sep}{urllib.parse.urlencode({'tn': tn})}"
        try:
            with urllib.request.urlopen(target, timeout=self.timeout_s) as response:  # noqa: S310
                body = json.loads(response.read(65536))
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            raise LrnError(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict) or "lrn" not in body:
            raise LrnError("reply has no 'lrn' field")
        value = body["lrn"]
        if value is None:
            return None
        digits = str(value).lstrip("+")
        if not (digits.isdigit() and len(digits) == 11 and digits.startswith("1")):
            raise LrnError(f"reply has a malformed LRN {value!r}")
        return digits
