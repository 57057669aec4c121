"""The renewal task (calls/slices.py Keeper) through kemi's registry port, against the recording
stand-in for Kamailio: the registry walk, the dialog timeouts it moves, the unACKed calls it
ends, the entry read at a call's end."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from routing_engine.adapters.money import Renewal, SlicePrice
from routing_engine.calls.slices import Keeper, SliceCall
from routing_engine.calls.state import CallState
from routing_engine.domain.rating import Price
from routing_engine.settings import load_settings
from tests.unit import fake_ksr

KSR = fake_ksr.install()

from kemi import warp_kemi  # noqa: E402  (imports KSR: the fake must be in place first)

PRICE = SlicePrice.of(Price(Decimal("0.60"), 1, 1))


@dataclass
class FakeWallet:
    answers: list[tuple[int, int]]
    asked: list[list[Renewal]] = field(default_factory=list)

    def renew(self, due: list[Renewal], now: float) -> list[tuple[int, int]]:
        self.asked.append(due)
        return self.answers[:len(due)]


@dataclass
class FakeNode:
    wallet: FakeWallet
    settings: Any = field(default_factory=lambda: load_settings(environ={
        "WARP_MONEY__SLICE_S": "20", "WARP_MONEY__TICK_S": "2", "WARP_SIP__NOACK_TIMEOUT_S": "8"}))


def registry(*entries: SliceCall) -> None:
    """The htable holds these entries; the walk reads them one by one."""
    KSR.reset()
    items = [(str(e.call), e.to_text()) for e in entries]
    position = {"i": -1}

    def next_item(iterator: str) -> int:
        position["i"] += 1
        if position["i"] >= len(items):
            return -1
        KSR.vars[f"$shtitkey({iterator})"], KSR.vars[f"$shtitval({iterator})"] = items[position["i"]]
        return 1

    KSR.answers["htable.sht_iterator_next"] = next_item


def answered(ago: float, paid: int = 20, acked: bool = True) -> SliceCall:
    now = time.time()
    call = SliceCall(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), 0, 14_400, PRICE, paid, now - ago - 1)
    return replace(call.answered(now - ago, 7, 42), acked=acked)


def written(entry: SliceCall) -> SliceCall:
    texts = [args[2] for name, args in KSR.calls if name == "htable.sht_sets" and args[1] == str(entry.call)]
    assert texts, "the entry was written back"
    return SliceCall.from_text(texts[-1])


def test_a_call_near_its_paid_end_gets_its_next_slice_and_its_dialog_timeout_moves() -> None:
    call = answered(16)
    registry(call)
    wallet = FakeWallet([(40, 400_000)])
    assert Keeper(FakeNode(wallet), warp_kemi._Sip()).tick(time.time()) == 1
    assert [(r.call, r.paid_s, r.target_s) for r in wallet.asked[0]] == [(call.call, 20, 40)]
    assert written(call).paid_s == 40
    timeouts = [args for name, args in KSR.calls if name == "dialog.dlg_set_timeout_id"]
    assert len(timeouts) == 1 and timeouts[0][1:] == (7, 42) and timeouts[0][0] in (25, 26)


def test_a_call_its_account_cannot_pay_keeps_its_timeout_and_is_cut_by_its_dialog() -> None:
    registry(answered(16))
    assert Keeper(FakeNode(FakeWallet([(20, 200_000)])), warp_kemi._Sip()).tick(time.time()) == 1
    assert not [c for c in KSR.calls if c[0] == "dialog.dlg_set_timeout_id"]


def test_nothing_due_means_no_round_trip_to_redis() -> None:
    registry(answered(2))
    wallet = FakeWallet([])
    assert Keeper(FakeNode(wallet), warp_kemi._Sip()).tick(time.time()) == 0 and wallet.asked == []


def test_a_call_whose_200_was_never_acked_is_ended_by_its_dialog_at_once() -> None:
    unacked, acked = answered(9, acked=False), answered(9, acked=False)
    acked = replace(acked, h_id=43)
    registry(unacked, acked)
    KSR.vars["$jsonrpl(body)"] = json.dumps({"jsonrpc": "2.0", "id": 1, "result": [
        {"h_entry": 7, "h_id": 42, "state": 3}, {"h_entry": 7, "h_id": 43, "state": 4}]})
    Keeper(FakeNode(FakeWallet([])), warp_kemi._Sip()).tick(time.time())
    assert ("dialog.dlg_set_timeout_id", (1, 7, 42)) in KSR.calls
    assert ("dialog.dlg_set_timeout_id", (1, 7, 43)) not in KSR.calls
    assert written(unacked).acked and written(acked).acked  # neither is asked about again


def test_an_unreadable_entry_is_dropped_and_the_others_are_still_renewed() -> None:
    good = answered(16)
    registry(good)
    items = KSR.answers["htable.sht_iterator_next"]
    first = {"done": False}

    def with_a_bad_one(iterator: str) -> int:
        if not first["done"]:
            first["done"] = True
            KSR.vars[f"$shtitkey({iterator})"], KSR.vars[f"$shtitval({iterator})"] = "bad-key", "garbage"
            return 1
        return int(items(iterator))

    KSR.answers["htable.sht_iterator_next"] = with_a_bad_one
    assert Keeper(FakeNode(FakeWallet([(40, 400_000)])), warp_kemi._Sip()).tick(time.time()) == 1
    assert ("htable.sht_rm", ("warpslice", "bad-key")) in KSR.calls
    assert written(good).paid_s == 40


@pytest.mark.parametrize("found", [True, False])
def test_a_calls_end_reads_what_its_slices_paid_for_and_removes_its_entry(found: bool) -> None:
    KSR.reset()
    state = CallState(uuid.uuid4(), "cid", "outbound", datetime.now(UTC), "1212", "1305", uuid.uuid4(),
                      uuid.uuid4(), max_s=20)
    entry = replace(answered(30, paid=60), call=state.cdr_id)
    KSR.answers["htable.sht_get"] = entry.to_text() if found else None
    ended = Keeper(FakeNode(FakeWallet([])), warp_kemi._Sip()).finished(state)  # type: ignore[arg-type]
    assert ended.max_s == (60 if found else 20)
    assert (("htable.sht_rm", ("warpslice", str(state.cdr_id))) in KSR.calls) is found
