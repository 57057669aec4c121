"""Funds as renewable slices: the node's calls, and what one tick of its renewal task does.

A call is admitted with one slice of funds (``money.slice_s`` of talk plus the connection fee,
calls/admission.py), and its dialog times out when that is spent. One task per node (a Kamailio
``rtimer`` process; ``Keeper.tick``) looks at the node's answered calls every ``money.tick_s``:
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

import logging
import math
from dataclasses import dataclass, replace
from uuid import UUID

from routing_engine.adapters.money import Renewal, SlicePrice
from routing_engine.calls.ports import Node, Sip
from routing_engine.calls.state import CallState
from routing_engine.domain import rating

log = logging.getLogger("warp.slices")

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


CONFIRMED_NA = 3  # dialog state (dialog module): answered, not ACKed
TABLE = "warpslice"  # kamailio.cfg: the node's admitted calls, by call identity (CDR id)


class Registry:
    """The node's calls in its shared table."""

    def __init__(self, sip: Sip) -> None:
        self.sip = sip

    def put(self, key: str, text: str) -> None:
        self.sip.table_put(TABLE, key, text)

    def get(self, key: str) -> str | None:
        return self.sip.table_get(TABLE, key)

    def remove(self, key: str) -> None:
        self.sip.table_remove(TABLE, key)

    def items(self) -> list[tuple[str, str]]:
        return self.sip.table_items(TABLE)


class Keeper:
    """The node's registry of admitted calls and its renewal task."""

    def __init__(self, node: Node, sip: Sip) -> None:
        self.node, self.sip, self.registry = node, sip, Registry(sip)

    def register(self, state: CallState, now: float) -> None:
        """An admitted call, its dialog just created: renewed from its answer on."""
        if not state.reserved or state.price is None or state.account_id is None or state.trunk_id is None:
            return  # no funds held: nothing to renew
        account = self.node.snapshot().accounts.get(state.account_id)
        postpaid = account is not None and account.billing_type == "postpaid"
        credit = rating.to_micros(account.credit_limit) if postpaid and account is not None else 0
        entry = SliceCall(state.cdr_id, state.account_id, state.trunk_id, credit,
                          self.node.settings.sip.max_call_duration_s, SlicePrice.of(state.price), state.max_s, now)
        self.registry.put(str(state.cdr_id), entry.to_text())

    def answered(self, state: CallState, at: float, h_entry: int, h_id: int) -> None:
        """dialog:start: the call's paid time runs from now; its dialog can be found by its ids."""
        if (raw := self.registry.get(str(state.cdr_id))) is not None:
            self.registry.put(str(state.cdr_id), SliceCall.from_text(raw).answered(at, h_entry, h_id).to_text())

    def finished(self, state: CallState) -> CallState:
        """The call's end: its entry leaves the registry, and its state comes back with ``max_s``
        set to the length its slices paid for (what the charge is capped at)."""
        key = str(state.cdr_id)
        if (raw := self.registry.get(key)) is None:
            return state
        self.registry.remove(key)
        try:
            return state.evolve(max_s=SliceCall.from_text(raw).paid_s)
        except ValueError:
            log.error("call %s: %s; charged as admitted", state.call_id, raw)
            return state

    def _entries(self) -> dict[UUID, SliceCall]:
        calls: dict[UUID, SliceCall] = {}
        for key, text in self.registry.items():
            try:
                entry = SliceCall.from_text(text)
                calls[entry.call] = entry
            except ValueError as exc:  # one bad entry never holds up the others
                self.registry.remove(key)
                log.error("slice registry entry %s dropped: %s", key, exc)
        return calls

    def _end_unacked(self, calls: dict[UUID, SliceCall], suspects: list[SliceCall],
                     now: float) -> dict[UUID, SliceCall]:
        """Calls answered ``sip.noack_timeout_s`` ago: seen ACKed, they are marked so; still without
        their ACK, their dialog times out now (BYE both ways, the call recorded, place and funds
        released); gone, their entry goes. Answers the calls left to renew."""
        if not suspects:
            return calls
        states = self.sip.dialog_states()
        left = dict(calls)
        for c in suspects:
            key = str(c.call)
            state = states.get((c.h_entry, c.h_id))
            if state is None or state == CONFIRMED_NA:
                del left[c.call]
                if state is None:
                    self.registry.remove(key)
                    continue
                log.warning("call %s: its 200 was not ACKed %ds after it; ended", c.call, int(now - c.answer_at))
                self.sip.set_timeout(1, c.h_entry, c.h_id)
            else:
                left[c.call] = replace(c, acked=True)
            self.registry.put(key, replace(c, acked=True).to_text())
        return left

    def tick(self, now: float) -> int:
        """One tick: renew the due calls of this node; those left unpaid run to their timeout.
        Answers how many calls asked for a slice."""
        settings = self.node.settings
        calls = self._entries()
        setup_s = settings.sip.fr_inv_timeout_ms // 1000 + 60
        for entry in stale(list(calls.values()), now, setup_s):  # calls that failed: their end is recorded
            self.registry.remove(str(entry.call))
            del calls[entry.call]
        calls = self._end_unacked(calls, unacked(list(calls.values()), now, settings.sip.noack_timeout_s), now)
        renewals = due(list(calls.values()), now, settings.money.slice_s, settings.money.tick_s)
        if not renewals:
            return 0
        try:
            results = self.node.wallet.renew(renewals, now)
        except Exception as exc:
            log.warning("slices of %d calls not renewed (%s); they end with their paid time", len(renewals), exc)
            return 0
        cut = 0
        for outcome in apply(calls, renewals, results, now):
            entry, key = outcome.entry, str(outcome.entry.call)
            if outcome.gone:
                self.registry.remove(key)
            elif outcome.extended:
                self.registry.put(key, entry.to_text())
                if calls[entry.call].paid_until - now < TOO_LATE_S:
                    continue  # the answer came late: its timer may be firing; it ends at its old paid end
                if not self.sip.set_timeout(outcome.timeout_s, entry.h_entry, entry.h_id):
                    self.registry.remove(key)  # its dialog is gone: its end was recorded or is on its way
            else:
                cut += 1
        if cut:
            log.info("%d calls not renewed (funds): cut when their paid time is up", cut)
        return len(renewals)
