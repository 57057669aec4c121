"""Funds as renewable slices: the node's calls, and what one tick of its renewal task does.

A call is admitted with one slice of funds (``money.slice_s`` of talk plus the connection fee,
calls/admission.py), and its dialog times out when that is spent. One task per node (a Kamailio
``rtimer`` process, kemi/slices.py) looks at the node's answered calls every ``money.tick_s``:
those whose paid time ends within two ticks (but not within two seconds) ask for their next
slice, all in one Redis script (adapters/money.py ``Wallet.renew``). A call that got more has
its dialog timeout moved to its new paid end; a call whose account could not pay keeps its
timeout, and the dialog module ends it with BYE both ways when its paid time is up — exactly
then, not at the next tick. A call whose account could pay part of a slice gets that part,
to the billing increment, so an account's last funds are spent to the last increment and its
balance ends at zero.

The charge of a call is computed from its real length capped at its paid length (``paid_s``),
which the registry entry carries to the call's end: no call is charged more than it reserved.
If the task stops (or Redis is down), calls run to the end of their slice and are cut there:
money is never guessed.

A 200 that is never ACKed (the caller gave up, or never got it) leaves its dialog half-made;
the dialog module would keep it for a minute and more. The task ends such a call
``sip.noack_timeout_s`` after its answer (BYE both ways, the call recorded as answered up to
then), so its place and its reservation are free within seconds.

The registry is shared memory of the node (a Kamailio htable): one entry per admitted call,
written at admission, completed at the answer, removed at the call's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from uuid import UUID

from routing_engine.adapters.money import Renewal, SlicePrice

RENEW_AHEAD_TICKS = 2
# A call whose paid time ends sooner than this is left alone: its dialog timer may be firing at
# that very moment (1 s timer ticks), and a timeout moved then is put back on a dialog that has
# already sent its BYEs.
TOO_LATE_S = 2
EXPIRY_MARGIN_S = 30  # a call's places and reservation outlive its paid end by this much
TIMEOUT_GRACE_S = 1   # a renewed dialog timeout errs late (the charge is capped at paid_s)


@dataclass(frozen=True, slots=True)
class SliceCall:
    """One admitted call of this node, as its registry entry keeps it."""

    call: UUID
    account_id: UUID
    trunk_id: UUID
    credit_micros: int
    cap_s: int
    price: SlicePrice
    paid_s: int
    admitted_at: float
    answer_at: float = 0.0  # 0: not answered yet
    h_entry: int = -1       # the dialog's identity in Kamailio, known from the answer on
    h_id: int = -1
    acked: bool = False     # its 200 was ACKed (checked once, money.noack_s after the answer)

    def to_text(self) -> str:
        p = self.price
        return "|".join(str(v) for v in (
            self.call, self.account_id, self.trunk_id, self.credit_micros, self.cap_s, p.per_minute_micros,
            p.initial_s, p.subsequent_s, p.min_duration_s, p.fee_micros, self.paid_s, repr(self.admitted_at),
            repr(self.answer_at),
            self.h_entry, self.h_id, int(self.acked)))

    @classmethod
    def from_text(cls, text: str) -> SliceCall:
        f = text.split("|")
        if len(f) != 16:
            raise ValueError(f"slice entry unreadable: {text[:200]!r}")
        return cls(UUID(f[0]), UUID(f[1]), UUID(f[2]), int(f[3]), int(f[4]),
                   SlicePrice(int(f[5]), int(f[6]), int(f[7]), int(f[8]), int(f[9])),
                   int(f[10]), float(f[11]), float(f[12]), int(f[13]), int(f[14]), f[15] == "1")

    def answered(self, at: float, h_entry: int, h_id: int) -> SliceCall:
        return replace(self, answer_at=at, h_entry=h_entry, h_id=h_id)

    @property
    def paid_until(self) -> float:
        return self.answer_at + self.paid_s


def stale(calls: list[SliceCall], now: float, setup_s: int) -> list[SliceCall]:
    """Entries of calls never answered and admitted longer ago than any setup lasts: calls that
    failed (their end was recorded by the failure route), which leave the registry."""
    return [c for c in calls if c.answer_at <= 0 and now - c.admitted_at > setup_s]


def unacked(calls: list[SliceCall], now: float, noack_s: int) -> list[SliceCall]:
    """Answered calls not yet seen ACKed ``noack_s`` after their 200: the dialog module says
    whether they were (its state); a call still without its ACK is ended then, so that its place
    and its funds are free within seconds, not at the end of the dialog's lifetime."""
    return [c for c in calls if c.answer_at > 0 and not c.acked and now - c.answer_at >= noack_s]


def due(calls: list[SliceCall], now: float, slice_s: int, tick_s: int) -> list[Renewal]:
    """The answered calls whose paid time ends within two ticks (and not too late to move their
    timeout), each asking for one more slice (never past its cap)."""
    out = []
    for c in calls:
        left = c.paid_until - now
        if c.answer_at <= 0 or c.paid_s >= c.cap_s or not TOO_LATE_S < left <= TOO_LATE_S + RENEW_AHEAD_TICKS * tick_s:
            continue
        target = min(c.paid_s + slice_s, c.cap_s)
        out.append(Renewal(c.call, c.account_id, c.trunk_id, c.credit_micros, c.paid_s, target,
                           c.answer_at + target + EXPIRY_MARGIN_S, c.price))
    return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one due call needs after the tick."""

    entry: SliceCall
    extended: bool       # paid further: its dialog timeout moves to ``timeout_s`` from now
    timeout_s: int
    gone: bool = False   # no reservation any more (settled, or lapsed): nothing to do


def apply(calls: dict[UUID, SliceCall], renewals: list[Renewal], results: list[tuple[int, int]],
          now: float) -> list[Outcome]:
    """The tick's answers (``Wallet.renew``) turned into new entries and dialog timeouts."""
    out = []
    for r, (paid, _) in zip(renewals, results, strict=True):
        entry = calls[r.call]
        if paid < 0:
            out.append(Outcome(entry, False, 0, gone=True))
        elif paid > entry.paid_s:
            new = replace(entry, paid_s=paid)
            out.append(Outcome(new, True, max(1, math.ceil(new.paid_until - now)) + TIMEOUT_GRACE_S))
        else:
            out.append(Outcome(entry, False, 0))
    return out
