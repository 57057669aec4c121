"""Failover: after a vendor's final failure, try the next one or give the customer an answer.

Rules:
- a response moves the call on only if the plan lists its code and it is not one that says
  the callee was reached or the caller gave up (404, 486, 487, 6xx never do);
- no more than the plan's ``max_attempts`` attempts, and never past the last route;
- when the call ends unanswered, the customer gets the best response seen: any 6xx first
  (a global answer), then a definite 4xx (not 408), then 5xx (503 preferred, so the customer's
  switch tries another carrier), then 408; within a class the earliest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from routing_engine.domain.snapshot import NEVER_FAILOVER


@dataclass(frozen=True, slots=True)
class Policy:
    failover_codes: frozenset[int]
    max_attempts: int
    attempt_timeout_ms: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"codes": sorted(self.failover_codes), "max": self.max_attempts,
                "timeout_ms": self.attempt_timeout_ms}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Policy:
        timeout = data.get("timeout_ms")
        return cls(frozenset(int(c) for c in data.get("codes") or []), int(data.get("max", 1)),
                   int(timeout) if timeout is not None else None)


@dataclass(frozen=True, slots=True)
class Attempt:
    vendor: str
    gateway: str
    code: int
    reason: str
    started_at: str | None = None   # ISO 8601: INVITE sent to the vendor
    ringing_at: str | None = None   # its first 180/183
    ended_at: str | None = None     # its final answer
    pdd_ms: int | None = None
    q850_cause: int | None = None   # from the Reason header of its final answer

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"vendor": self.vendor, "gateway": self.gateway, "code": self.code,
                                  "reason": self.reason}
        for key in ("started_at", "ringing_at", "ended_at", "pdd_ms", "q850_cause"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def next_route(policy: Policy, route_count: int, attempts: Sequence[Attempt]) -> int | None:
    """Index of the route to try next, or None when the call must end here."""
    if not attempts:
        return 0 if route_count else None
    last = attempts[-1]
    if last.code not in policy.failover_codes or last.code in NEVER_FAILOVER or last.code >= 600:
        return None
    if len(attempts) >= min(policy.max_attempts, route_count):
        return None
    return len(attempts)


def _rank(code: int) -> int:
    if code >= 600:
        return 0
    if 400 <= code < 500 and code != 408:
        return 1
    if code == 503:
        return 2
    if code >= 500:
        return 3
    return 4


def best_response(attempts: Sequence[Attempt]) -> tuple[int, str]:
    if not attempts:
        return 500, "Server Internal Error"
    best = min(enumerate(attempts), key=lambda ia: (_rank(ia[1].code), ia[0]))[1]
    return best.code, best.reason
