"""The ledger around the one money path: seeding, posting, reconciling, rerating.

Every balance change is one script in Redis (adapters/money.Wallet: ``settle`` for a call's
charge, ``post`` for a top-up, an adjustment or a refund) that moves the live balance and
appends the change to the ``warp:ledger`` stream; the companion writes the stream into
``billing.balance_updates`` and deletes what it wrote. So at any moment

    live balance (Redis) = Postgres ledger + the entries still in the stream not yet in Postgres

for every account whose live balance is loaded. ``check`` holds each account to that and names
those that differ; ``durable_balance`` is the right-hand side for one account (what a missing
live balance is seeded with); ``post`` is the money path for callers that hold a Postgres
connection (the API, the CLI, rerating); ``rerate`` posts the corrections of a period's calls.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from routing_engine.adapters import postgres
from routing_engine.adapters.money import LEDGER_STREAM, Duplicate, Posted, Unseeded, Wallet, ledger_entry
from routing_engine.domain import rerating
from routing_engine.domain.rating import from_micros, to_micros

Key = tuple[str, str]  # (kind, reference) as Postgres stores it


def _key(kind: str, reference: str) -> Key:
    return kind, postgres.storable_text(reference, postgres.INDEXED_TEXT_MAX)


def in_flight(client: Any) -> list[dict[str, Any]]:
    """The ledger entries still in the stream (written ones are deleted from it), readable ones."""
    out = []
    for _, data in client.xrange(LEDGER_STREAM):
        try:
            out.append(ledger_entry(data))
        except ValueError:
            continue  # the companion dead-letters it; it is a difference `check` reports
    return out


def stored(conn: psycopg.Connection, keys: Iterable[Key]) -> set[Key]:
    """Which of these (kind, reference) are in the Postgres ledger."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    rows = conn.execute("SELECT kind, reference FROM billing.balance_updates b"
                        " JOIN unnest(%s::text[], %s::text[]) AS w(kind, reference)"
                        " USING (kind, reference)", ([k for k, _ in wanted], [r for _, r in wanted])).fetchall()
    return {(str(k), str(r)) for k, r in rows}


def pending(conn: psycopg.Connection, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stream entries Postgres does not hold yet (a written entry may still be in the
    stream for a moment: it counts once)."""
    there = stored(conn, (_key(e["kind"], e["reference"]) for e in entries))
    return [e for e in entries if _key(e["kind"], e["reference"]) not in there]


def ledger_micros(conn: psycopg.Connection, account_id: UUID) -> int:
    row = conn.execute("SELECT COALESCE(sum(amount), 0) FROM billing.balance_updates WHERE account_id = %s",
                       (account_id,)).fetchone()
    return to_micros(Decimal(row[0]) if row else Decimal(0))


def durable_balance(conn: psycopg.Connection, client: Any, account_id: UUID) -> int:
    """The account's balance from the durable side: its Postgres ledger plus what is still on
    its way there in the stream (micros). The stream is read first: an entry the companion
    writes in between is then found in Postgres, never missed by both reads."""
    entries = [e for e in in_flight(client) if e["account_id"] == account_id]
    return ledger_micros(conn, account_id) + sum(int(e["amount_micros"]) for e in pending(conn, entries))


def post(conn: psycopg.Connection, wallet: Wallet, account_id: UUID, micros: int, kind: str, reference: str,
         at: datetime, entry_id: UUID | None = None) -> Posted:
    """A top-up, adjustment or refund through the one money path. Refused (``Duplicate``) when
    Postgres has the (kind, reference) already, or the stream carries it; a live balance not
    loaded yet is seeded with the durable balance in the same script. Redis down: its error
    propagates and nothing moved (the script is all or nothing)."""
    if stored(conn, [_key(kind, reference)]) and entry_id is None:
        raise Duplicate(f"{kind} {reference!r} is in the ledger already")
    try:
        return wallet.post(account_id, micros, kind, reference, at.isoformat(), entry_id=entry_id)
    except Unseeded:
        seed = durable_balance(conn, wallet.client, account_id)
        if entry_id is not None:  # the caller's own row is in its transaction already: not twice
            seed -= micros
        return wallet.post(account_id, micros, kind, reference, at.isoformat(), seed_micros=seed,
                           entry_id=entry_id)


# ------------------------------------------------------------------ check

@dataclass(frozen=True, slots=True)
class Difference:
    account_id: UUID
    ban: str
    live_micros: int
    ledger_micros: int      # Postgres
    in_flight_micros: int   # in the stream, not in Postgres yet

    @property
    def micros(self) -> int:
        """Live minus durable: positive, Redis holds more than the ledger explains."""
        return self.live_micros - self.ledger_micros - self.in_flight_micros


@dataclass
class Report:
    accounts: int = 0        # with a live balance, compared
    not_loaded: int = 0      # no live balance yet (seeded when first used)
    in_flight: int = 0       # stream entries not in Postgres yet
    dead_letters: int = 0    # ledger entries the companion could not write (`warp:ledger:dead`)
    differences: list[Difference] = field(default_factory=list)
    checked_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences


def _compare(url: str, client: Any, only: set[UUID] | None) -> Report:
    """One pass. Postgres first, in one repeatable-read snapshot; then the live balances and the
    stream in one Redis transaction; then, in the same Postgres snapshot, which stream entries
    it holds. Whatever the snapshot holds was posted before Redis was read, so it is in the live
    balance; what Redis holds beyond it is in the stream."""
    report = Report(checked_at=time.time())
    with postgres.connect(url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = conn.execute("SELECT a.id, a.ban, COALESCE(sum(b.amount), 0) FROM accounts.accounts a"
                            " LEFT JOIN billing.balance_updates b ON b.account_id = a.id GROUP BY a.id").fetchall()
        accounts = [(r[0], r[1], to_micros(Decimal(r[2]))) for r in rows if only is None or r[0] in only]
        pipe = client.pipeline(transaction=True)
        pipe.mget([f"warp:bal:{a}" for a, _, _ in accounts] or ["warp:bal:-"])
        pipe.xrange(LEDGER_STREAM)
        pipe.xlen(f"{LEDGER_STREAM}:dead")
        live, stream, report.dead_letters = pipe.execute()
        entries = []
        for _, data in stream:
            try:
                entries.append(ledger_entry(data))
            except ValueError:
                continue
        waiting = pending(conn, entries)
    report.in_flight = len(waiting)
    flight: dict[UUID, int] = {}
    for e in waiting:
        flight[e["account_id"]] = flight.get(e["account_id"], 0) + e["amount_micros"]
    for (account_id, ban, ledger), value in zip(accounts, live, strict=False):
        if value is None:
            report.not_loaded += 1
            continue
        report.accounts += 1
        d = Difference(account_id, ban, int(value), ledger, flight.get(account_id, 0))
        if d.micros != 0:
            report.differences.append(d)
    return report


def check(url: str, client: Any, passes: int = 3, pause_s: float = 0.2) -> Report:
    """Compare every account's live balance with its ledger. An account that differs is looked
    at again (an entry the companion writes and deletes between the two reads of a pass looks
    like a difference for that pass only); reported are those that differ in every pass."""
    report = _compare(url, client, None)
    for _ in range(passes - 1):
        if report.ok:
            break
        time.sleep(pause_s)
        again = _compare(url, client, {d.account_id for d in report.differences})
        still = {d.account_id for d in again.differences}
        report.differences = [d for d in again.differences if d.account_id in still]
        report.in_flight = again.in_flight
    return report


def describe(d: Difference) -> str:
    return (f"{d.ban} ({d.account_id}): live {from_micros(d.live_micros)}, ledger {from_micros(d.ledger_micros)}"
            f" + in flight {from_micros(d.in_flight_micros)}: differs by {from_micros(d.micros)}")


# ------------------------------------------------------------------ rerating

@dataclass
class RerateReport:
    calls: int = 0            # charged calls in the period
    adjusted: int = 0         # adjustments posted now
    unchanged: int = 0        # already at the corrected price
    skipped: list[str] = field(default_factory=list)  # a call that cannot be priced now, and why
    total: Decimal = Decimal(0)  # sum of the adjustments posted (credit to accounts: positive)


def rerate(url: str, client: Any, start: datetime, end: datetime, account: UUID | None = None,
           now: datetime | None = None, realm: str = "warp.local", dry_run: bool = False) -> RerateReport:
    """Rerate the charged calls that started in [start, end) (of one account if given) with the
    prices in Postgres now; post each difference as an adjustment through the one money path
    and record the corrected rating on the CDR. Running it again posts nothing new."""
    wallet = Wallet(client)
    report = RerateReport()
    now = now or datetime.now(UTC)
    with postgres.connect(url) as conn:
        snapshot = postgres.load_snapshot(conn, now, realm)
        calls = conn.execute(
            "SELECT c.cdr_id, c.invite_at, c.account_id, c.trunk_id, c.duration_s, c.to_e164, c.lrn,"
            " c.jurisdiction, c.customer_price FROM cdr.cdrs c WHERE c.invite_at >= %s AND c.invite_at < %s"
            " AND c.account_id IS NOT NULL AND (%s::uuid IS NULL OR c.account_id = %s::uuid)"
            " AND c.duration_s > 0 ORDER BY c.invite_at, c.cdr_id",
            (start, end, account, account)).fetchall()
        by_call = {r[0]: r for r in calls}
        charged, adjustments = _charged(conn, client, set(by_call))
        for cdr_id, invite_at, account_id, trunk_id, duration_s, to_e164, lrn, jurisdiction, on_cdr in calls:
            if cdr_id not in charged:
                continue  # never charged (not settled, or its charge is lost: `check` says so)
            report.calls += 1
            trunk = snapshot.trunks.get(trunk_id) if trunk_id else None
            plan = snapshot.rate_plan_for(trunk) if trunk else None
            destination = (lrn or to_e164 or "").lstrip("+")
            price = rerating.customer_price(plan, destination, rerating.jurisdiction_of(jurisdiction), invite_at)
            if price is None:
                report.skipped.append(f"{cdr_id}: no customer rate for {destination or '?'} now")
                continue
            result = rerating.rerate(cdr_id, account_id, duration_s, charged[cdr_id], price)
            if dry_run:
                if result.adjustment:
                    report.adjusted += 1
                    report.total += result.adjustment
                else:
                    report.unchanged += 1
                continue
            posted = False
            if result.adjustment:
                reference = rerating.adjustment_reference(cdr_id, adjustments.get(cdr_id, 0))
                try:
                    post(conn, wallet, account_id, to_micros(result.adjustment), "adjustment", reference, now)
                    posted = True
                except Duplicate:
                    pass  # a run racing this one posted it
            if posted:
                report.adjusted += 1
                report.total += result.adjustment
            else:
                report.unchanged += 1
            if on_cdr != result.corrected:  # the CDR says what the call costs now (also after a crash here)
                with conn.transaction():
                    conn.execute("UPDATE cdr.cdrs SET customer_rate = %s, customer_price = %s, billable_s = %s,"
                                 " margin = %s - COALESCE(vendor_cost, 0) WHERE cdr_id = %s AND invite_at = %s",
                                 (price.per_minute, result.corrected, result.billable_s, result.corrected,
                                  cdr_id, invite_at))
    return report


def _charged(conn: psycopg.Connection, client: Any, calls: set[UUID]) -> tuple[dict[UUID, Decimal], dict[UUID, int]]:
    """Per call: what it cost so far (its charge and rerating adjustments, in Postgres or still
    in the stream) and how many adjustments it had."""
    cost: dict[UUID, Decimal] = {}
    count: dict[UUID, int] = {}
    charged: set[UUID] = set()
    seen: set[Key] = set()

    def add(kind: str, reference: str, amount: Decimal) -> None:
        try:
            call = UUID(reference) if kind == "call_charge" else rerating.adjusted_call(reference)
        except ValueError:
            return
        if call is None or call not in calls or _key(kind, reference) in seen:
            return
        seen.add(_key(kind, reference))
        cost[call] = cost.get(call, Decimal(0)) - amount  # a charge is negative, a credit positive
        if kind == "call_charge":
            charged.add(call)
        else:
            count[call] = count.get(call, 0) + 1

    entries = in_flight(client)  # the stream first (see durable_balance)
    refs = [str(c) for c in calls]
    for kind, reference, amount in conn.execute(
            "SELECT kind, reference, amount FROM billing.balance_updates WHERE"
            " (kind = 'call_charge' AND reference = ANY(%s)) OR (kind = 'adjustment' AND reference LIKE 'rerate:%%'"
            " AND split_part(reference, ':', 2) = ANY(%s))", (refs, refs)).fetchall():
        add(kind, reference, Decimal(amount))
    for e in entries:
        if e["kind"] in ("call_charge", "adjustment"):
            add(e["kind"], e["reference"], from_micros(e["amount_micros"]))
    return {c: cost[c] for c in charged}, count
