"""The node's slice registry in Kamailio shared memory, and its renewal task (KSR side).

routing_engine/calls/slices.py decides; this file reads and writes the ``warpslice`` htable
(kamailio.cfg) and moves dialog timeouts. ``tick`` runs in the node's one ``rtimer`` process
every ``money.tick_s``: one htable walk, one Redis script for the due calls, one timeout update
per call that got more time.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

import KSR

from routing_engine.adapters.money import SlicePrice
from routing_engine.calls.slices import TOO_LATE_S, SliceCall, apply, due, stale, unacked
from routing_engine.calls.state import CallState
from routing_engine.domain import rating

log = logging.getLogger("warp.slices")

TABLE = "warpslice"   # kamailio.cfg: the node's admitted calls, by call identity (CDR id)
ITERATOR = "warpslices"
CALL_KEY_VAR = "$dlg_var(warp_slice)"  # the dialog's key in TABLE
CONFIRMED_NA, CONFIRMED = 3, 4  # dialog states (dialog module): answered, and answered and ACKed


def register(state: CallState, node: Any) -> None:
    """An admitted call, its dialog just created: renewed from its answer on."""
    if not state.reserved or state.price is None or state.account_id is None or state.trunk_id is None:
        return  # no funds held: nothing to renew
    account = node.snapshot().accounts.get(state.account_id)
    credit = rating.to_micros(account.credit_limit) if account is not None and account.billing_type == "postpaid" else 0
    entry = SliceCall(state.cdr_id, state.account_id, state.trunk_id, credit, node.settings.sip.max_call_duration_s,
                      SlicePrice.of(state.price), state.max_s, time.time())
    KSR.htable.sht_sets(TABLE, str(state.cdr_id), entry.to_text())
    KSR.pv.sets(CALL_KEY_VAR, str(state.cdr_id))


def answered(at: float) -> None:
    """dialog:start: the call's paid time runs from now; its dialog can be found by its ids."""
    key = str(KSR.pv.get(CALL_KEY_VAR) or "")  # our own text: a call's CDR id
    raw = KSR.htable.sht_get(TABLE, key) if key else None
    if not raw:
        return
    entry = SliceCall.from_text(str(raw))
    h_entry, h_id = int(KSR.pv.get("$dlg(h_entry)") or -1), int(KSR.pv.get("$dlg(h_id)") or -1)
    KSR.htable.sht_sets(TABLE, key, entry.answered(at, h_entry, h_id).to_text())


def finished(state: CallState) -> CallState:
    """The call's end: its entry leaves the registry, and its state comes back with ``max_s``
    set to the length its slices paid for (what the charge is capped at)."""
    key = str(state.cdr_id)
    raw = KSR.htable.sht_get(TABLE, key)
    if not raw:
        return state
    KSR.htable.sht_rm(TABLE, key)
    try:
        return state.evolve(max_s=SliceCall.from_text(str(raw)).paid_s)
    except ValueError:
        log.error("call %s: %s; charged as admitted", state.call_id, raw)
        return state


def _entries() -> tuple[dict[uuid.UUID, SliceCall], list[str]]:
    calls: dict[uuid.UUID, SliceCall] = {}
    bad: list[str] = []
    raw: list[tuple[str, str]] = []
    if KSR.htable.sht_iterator_start(ITERATOR, TABLE) < 0:
        return calls, bad
    try:
        while KSR.htable.sht_iterator_next(ITERATOR) > 0:
            raw.append((str(KSR.pv.get(f"$shtitkey({ITERATOR})") or ""),
                        str(KSR.pv.get(f"$shtitval({ITERATOR})") or "")))
    finally:
        KSR.htable.sht_iterator_end(ITERATOR)  # the walk holds a slot lock: nothing else until here
    for key, text in raw:
        try:
            entry = SliceCall.from_text(text)
            calls[entry.call] = entry
        except ValueError as exc:
            bad.append(key)
            log.error("slice registry entry %s dropped: %s", key, exc)
    return calls, bad


def _dialog_states() -> dict[tuple[int, int], int]:
    """Every dialog of this node by its ids, with its state: one in-process RPC (no socket)."""
    if KSR.jsonrpcs.exec('{"jsonrpc": "2.0", "method": "dlg.briefing", "params": ["s"], "id": 1}') < 0:
        raise RuntimeError("dlg.briefing failed")
    body = json.loads(str(KSR.pv.get("$jsonrpl(body)") or "{}"))
    return {(int(d["h_entry"]), int(d["h_id"])): int(d["state"]) for d in body.get("result") or []}


def _end_unacked(calls: dict[uuid.UUID, SliceCall], suspects: list[SliceCall]) -> dict[uuid.UUID, SliceCall]:
    """Calls answered ``sip.noack_timeout_s`` ago: seen ACKed, they are marked so; still without
    their ACK, their dialog times out now (BYE both ways, the call recorded, place and funds
    released); gone, their entry goes. Answers the calls left to renew."""
    if not suspects:
        return calls
    states = _dialog_states()
    left = dict(calls)
    for c in suspects:
        key = str(c.call)
        state = states.get((c.h_entry, c.h_id))
        if state is None or state == CONFIRMED_NA:
            del left[c.call]
            if state is None:
                KSR.htable.sht_rm(TABLE, key)
                continue
            log.warning("call %s: its 200 was not ACKed %ds after it; ended", c.call, int(time.time() - c.answer_at))
            KSR.dialog.dlg_set_timeout_id(1, c.h_entry, c.h_id)
        else:
            left[c.call] = replace(c, acked=True)
        KSR.htable.sht_sets(TABLE, key, replace(c, acked=True).to_text())
    return left


def tick(app: Any) -> int:
    """One tick: renew the due calls of this node; those left unpaid run to their timeout."""
    money = app.settings.money
    calls, bad = _entries()
    now = time.time()
    setup_s = app.settings.sip.fr_inv_timeout_ms // 1000 + 60
    for key in bad:  # one bad entry never holds up the others
        KSR.htable.sht_rm(TABLE, key)
    for entry in stale(list(calls.values()), now, setup_s):  # calls that failed: the failure route ended them
        KSR.htable.sht_rm(TABLE, str(entry.call))
        del calls[entry.call]
    calls = _end_unacked(calls, unacked(list(calls.values()), now, app.settings.sip.noack_timeout_s))
    renewals = due(list(calls.values()), now, money.slice_s, money.tick_s)
    if not renewals:
        return 0
    try:
        results = app.wallet.renew(renewals, now)
    except Exception as exc:
        log.warning("slices of %d calls not renewed (%s); they end with their paid time", len(renewals), exc)
        return 0
    cut = 0
    for outcome in apply(calls, renewals, results, now):
        entry = outcome.entry
        key = str(entry.call)
        if outcome.gone:
            KSR.htable.sht_rm(TABLE, key)
        elif outcome.extended:
            KSR.htable.sht_sets(TABLE, key, entry.to_text())
            if calls[entry.call].paid_until - time.time() < TOO_LATE_S:
                continue  # the answer came late: its timer may be firing; it ends at its old paid end
            if KSR.dialog.dlg_set_timeout_id(outcome.timeout_s, entry.h_entry, entry.h_id) < 0:
                KSR.htable.sht_rm(TABLE, key)  # its dialog is gone: its end was recorded or is on its way
        else:
            cut += 1
    if cut:
        log.info("%d calls not renewed (funds): cut when their paid time is up", cut)
    return len(renewals)
