"""The renewal task's decisions (routing_engine/calls/slices.py) and its registry entries."""

import uuid
from dataclasses import replace

import pytest

from routing_engine.adapters.money import SlicePrice
from routing_engine.calls.slices import SliceCall, apply, due, stale, unacked

NOW = 1_800_000_000.0
PRICE = SlicePrice(600_000, 1, 1, 0, 0)


def entry(paid: int = 20, answered_ago: float | None = 10, cap: int = 14_400, acked: bool = False) -> SliceCall:
    """A call admitted a minute ago, answered ``answered_ago`` seconds ago (None: not yet)."""
    call = SliceCall(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 0, cap, PRICE, paid, NOW - 60)
    if answered_ago is None:
        return call
    return replace(call.answered(NOW - answered_ago, 7, 42), acked=acked)


def test_a_registry_entry_reads_back_as_written() -> None:
    e = entry(acked=True)
    assert SliceCall.from_text(e.to_text()) == e


def test_an_unreadable_entry_is_refused_with_its_text() -> None:
    with pytest.raises(ValueError, match="slice entry unreadable"):
        SliceCall.from_text("not|an|entry")


def test_only_answered_calls_near_their_paid_end_ask_for_the_next_slice() -> None:
    near = entry(paid=20, answered_ago=16)        # 4 s left: within two ticks of 2 s (and 2 s of margin)
    early = entry(paid=20, answered_ago=5)        # 15 s left
    late = entry(paid=20, answered_ago=19)        # 1 s left: its timer may be firing
    ringing = entry(paid=20, answered_ago=None)
    capped = entry(paid=60, answered_ago=58, cap=60)
    asked = due([near, early, late, ringing, capped], NOW, slice_s=20, tick_s=2)
    assert [(r.call, r.paid_s, r.target_s) for r in asked] == [(near.call, 20, 40)]
    assert asked[0].expiry == near.answer_at + 40 + 30


def test_the_next_slice_never_goes_past_the_longest_call_allowed() -> None:
    near = entry(paid=50, answered_ago=47, cap=60)
    assert [r.target_s for r in due([near], NOW, slice_s=20, tick_s=2)] == [60]


def test_a_call_paid_further_gets_a_timeout_to_its_new_paid_end_with_a_second_to_spare() -> None:
    a, b, c = entry(answered_ago=16), entry(answered_ago=16), entry(answered_ago=16)
    asked = due([a, b, c], NOW, 20, 2)
    out = apply({e.call: e for e in (a, b, c)}, asked, [(40, 400_000), (20, 200_000), (-1, -1)], NOW)
    assert [(o.extended, o.timeout_s, o.gone, o.entry.paid_s) for o in out] == [
        (True, 40 - 16 + 1, False, 40), (False, 0, False, 20), (False, 0, True, 20)]


def test_calls_answered_and_never_seen_acked_are_checked_once_after_the_noack_timeout() -> None:
    fresh, old, checked = entry(answered_ago=2), entry(answered_ago=9), entry(answered_ago=9, acked=True)
    assert unacked([fresh, old, checked, entry(answered_ago=None)], NOW, 8) == [old]


def test_entries_of_calls_that_never_answered_leave_once_no_setup_can_last_that_long() -> None:
    ringing = entry(answered_ago=None)  # admitted 60 s ago
    assert stale([ringing, entry()], NOW, 59) == [ringing]
    assert stale([ringing], NOW, 61) == []
