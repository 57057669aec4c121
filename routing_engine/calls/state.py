"""A call's state between Kamailio callbacks: one typed value, kept in its dialog as one compact
string (``$dlg_var(warp)``), read only by the callbacks that need it.

What the call was given at its INVITE (identity, parties, routes, price, reservation, media plan)
and what happened since (which route is being tried, the failed attempts, ringing and answer
times, the addresses its two sides send from) travel together: a callback reads the value,
the call service answers with a new one, and the adapter writes it back.

One thing is kept apart: a vendor's ringing (``ring_wire``), written by the reply route while
the 200 of the same call may be in another worker's dialog:start. It has its own variable, and
``with_ring`` puts it back into the value.

The wire form is a JSON array in field order behind a format tag, so a dialog written by
another version of this code is refused (``StateFormatError``) instead of being misread; the
format before this one ("c1", the trace as an object) is still read, so calls in progress
across an upgrade end with their CDR.

The decision's trace is kept as the compact JSON text the CDR carries: encoded once at the
INVITE, never again by the callbacks that write the state back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from routing_engine.domain import rating
from routing_engine.domain.cdr import compact_trace
from routing_engine.domain.failover import Attempt, Policy

WIRE_FORMAT = "c2"
READ_FORMATS = ("c1", WIRE_FORMAT)


class StateFormatError(ValueError):
    """A dialog's state written by another version of this code (or not by us)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One vendor the call may be sent to, in the order they are tried."""

    vendor_id: str
    vendor: str
    gateway: str
    ruri: str
    from_user: str | None = None   # the caller as this vendor wants it written
    rate: str | None = None        # the vendor's per-minute rate (None: inbound delivery)
    terms: str | None = None       # how the vendor bills it (rating.Terms.to_text; None: per second)

    def wire(self) -> list[Any]:
        return [self.vendor_id, self.vendor, self.gateway, self.ruri, self.from_user, self.rate, self.terms]


@dataclass(frozen=True, slots=True)
class CallState:
    cdr_id: UUID                   # the call's identity: limits, funds, charge and CDR hang on it
    call_id: str                   # the SIP Call-ID: the caller's choice, for logs and rtpengine
    direction: str                 # outbound (customer to vendor) or inbound (vendor to trunk)
    invite_at: datetime
    dialed: str
    caller: str
    account_id: UUID | None
    trunk_id: UUID | None
    from_e164: str | None = None
    to_e164: str | None = None
    lrn: str | None = None
    lrn_source: str | None = None
    ban: str | None = None
    jurisdiction: str | None = None
    trace: str | None = None       # the decision's trace, compact JSON (domain.cdr.compact_trace)
    policy: Policy = Policy(frozenset(), 1)
    routes: tuple[Route, ...] = ()
    limited: bool = False          # holds a place in the limits (released at its end)
    reserved: int = 0              # funds reserved, micros
    max_s: int = 0                 # the longest the call may last
    price: rating.Price | None = None
    media: dict[str, Any] | None = None
    # --- what happened since the INVITE
    route: int = 0                 # index of the route being tried, or that answered
    attempts: tuple[Attempt, ...] = ()
    ring_at: str | None = None     # the call's first 180/183 (any vendor): its PDD
    attempt_at: str | None = None  # when the INVITE went to the vendor now tried
    attempt_ring: str | None = None
    answer_at: str | None = None
    peers: tuple[str, ...] = ()    # the addresses the call's two sides send from
    done: bool = False             # its end has been recorded

    @property
    def current(self) -> Route | None:
        return self.routes[self.route] if self.route < len(self.routes) else None

    def evolve(self, **changes: Any) -> CallState:
        return replace(self, **changes)

    def to_wire(self) -> str:
        return json.dumps([
            WIRE_FORMAT, str(self.cdr_id), self.call_id, self.direction, self.invite_at.isoformat(),
            self.dialed, self.caller, _str(self.account_id), _str(self.trunk_id), self.from_e164,
            self.to_e164, self.lrn, self.lrn_source, self.ban, self.jurisdiction, self.trace,
            self.policy.to_json(), [r.wire() for r in self.routes], int(self.limited), self.reserved,
            self.max_s, rating.price_to_json(self.price) if self.price else None, self.media,
            self.route, [a.to_json() for a in self.attempts], self.ring_at, self.attempt_at,
            self.attempt_ring, self.answer_at, list(self.peers), int(self.done),
        ], separators=(",", ":"))

    def ring_wire(self) -> str:
        return f"{self.route}|{self.ring_at or ''}|{self.attempt_ring or ''}"

    def with_ring(self, text: str) -> CallState:
        """This state with the ringing kept apart (``ring_wire``); an attempt's ringing counts
        only for the attempt it was written for."""
        route, ring_at, attempt_ring = (text.split("|") + ["", "", ""])[:3]
        mine = route == str(self.route)
        return self.evolve(ring_at=self.ring_at or ring_at or None,
                           attempt_ring=(attempt_ring or None) if mine else self.attempt_ring)

    @classmethod
    def from_wire(cls, text: str) -> CallState:
        """The state a dialog keeps (a worker remembers the last few it read: a call's callbacks
        often come to the same worker, and the value is immutable)."""
        if (known := _READ.get(text)) is not None:
            return known
        state = cls._decode(text)
        if len(_READ) >= 256:
            _READ.clear()
        _READ[text] = state
        return state

    @classmethod
    def _decode(cls, text: str) -> CallState:
        try:
            v = json.loads(text)
            if not isinstance(v, list) or not v or v[0] not in READ_FORMATS or len(v) != 31:
                raise StateFormatError(f"call state of another format: {text[:40]!r}")
            if v[0] == "c1":  # the trace as an object
                v[15] = compact_trace(v[15]) if v[15] else None
            elif v[15] is not None and not isinstance(v[15], str):
                raise StateFormatError("call state not readable: trace is not text")
            return cls(
                UUID(v[1]), v[2], v[3], datetime.fromisoformat(v[4]), v[5], v[6], _uuid(v[7]), _uuid(v[8]),
                v[9], v[10], v[11], v[12], v[13], v[14], v[15], Policy.from_json(v[16]),
                tuple(Route(*r) for r in v[17]), bool(v[18]), int(v[19]), int(v[20]),
                rating.price_from_json(v[21]) if v[21] else None, v[22], int(v[23]),
                tuple(Attempt(**a) for a in v[24]), v[25], v[26], v[27], v[28], tuple(v[29]), bool(v[30]))
        except StateFormatError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise StateFormatError(f"call state not readable: {exc}") from exc


_READ: dict[str, CallState] = {}


def _str(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


def _uuid(value: str | None) -> UUID | None:
    return UUID(value) if value else None
