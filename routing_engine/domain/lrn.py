"""LRN: for a NANP number, the Location Routing Number of the switch it is ported to.

Dialing a ported number on its old NPA-NXX pays the old carrier's price and reaches the wrong
switch; routing and pricing follow the LRN. A dip costs time and money, so answers (including
"not ported") are cached for an hour. If the dip fails or times out, the call is routed on the
dialed number and the trace says so: a dip outage must not stop traffic.

This module holds the rules; the cache and the sources are adapters behind the protocols below.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

from routing_engine.domain.jurisdiction import is_toll_free
from routing_engine.domain.numbers import E164

CACHE_TTL_S = 3600
NOT_PORTED = "-"  # what the cache stores for a number that is not ported


class LrnError(Exception):
    """The source could not answer (down, slow, malformed reply)."""


class LrnSource(Protocol):
    name: str

    def lookup(self, tn: str) -> str | None:
        """The LRN (E.164 digits) of ``tn``, None if not ported; LrnError if it cannot say."""
        ...


class LrnCache(Protocol):
    def get(self, tn: str) -> str | None: ...

    def put(self, tn: str, value: str, ttl_s: int) -> None: ...


@dataclass(frozen=True, slots=True)
class LrnResult:
    lrn: str | None        # E.164 digits of the LRN when ported
    source: str            # cache, the source's name, skipped, or failed
    error: str | None = None

    @property
    def ported(self) -> bool:
        return self.lrn is not None

    @property
    def dipped(self) -> bool:
        """Was portability checked (RFC 4694 npdi)?"""
        return self.source not in ("skipped", "failed")

    def explain(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "ported": self.ported}
        if self.lrn:
            out["lrn"] = "+" + self.lrn
        if self.error:
            out["error"] = self.error
        return out


SKIPPED = LrnResult(None, "skipped")


def needs_dip(number: E164) -> bool:
    return number.is_nanp and not is_toll_free(number)


def resolve(number: E164, cache: LrnCache | None, source: LrnSource | None,
            ttl_s: int = CACHE_TTL_S) -> LrnResult:
    """Cache first, then the source; failures of either degrade to routing on the dialed number."""
    if not needs_dip(number):
        return SKIPPED
    tn = number.digits
    cache_error: str | None = None
    if cache is not None:
        try:
            cached = cache.get(tn)
        except Exception as exc:  # the cache is an optimisation: go to the source
            cached, cache_error = None, f"cache: {exc}"
        if cached is not None:
            return LrnResult(None if cached == NOT_PORTED else cached, "cache")
    if source is None:
        return LrnResult(None, "failed", cache_error or "no LRN source configured")
    try:
        lrn = source.lookup(tn)
    except LrnError as exc:
        return LrnResult(None, "failed", f"{source.name}: {exc}")
    if lrn == tn:
        lrn = None  # an LRN equal to the number means it is not ported
    if cache is not None and cache_error is None:
        with contextlib.suppress(Exception):  # next call dips again; nothing is lost
            cache.put(tn, lrn or NOT_PORTED, ttl_s)
    return LrnResult(lrn, source.name)
