"""CDR emitter: the companion that moves CDRs from the Redis stream into Postgres.

Batches of ``batch_size`` records or ``batch_seconds``, whichever comes first. A batch is
acknowledged in Redis only after its Postgres transaction committed, and the insert ignores
records already stored, so a crash at any moment loses nothing and duplicates nothing: the
unacknowledged entries are read again (as this consumer's pending entries) on restart.

No single record may hold up the others. An entry that is no record, and a record the sink
refuses for what it holds (``RecordsRefused``: a value Postgres cannot take, a key that does
not exist), goes to the stream's dead letters (``<stream>:dead``) with the reason, is counted
(``warp_dead_letters``) and acknowledged; a refused batch is split in halves until each refused
record stands alone, so every other record of it is written. A sink that is down (connection
refused or lost, a timeout) is another matter: the whole batch is kept and retried.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from routing_engine import metrics
from routing_engine.adapters import ledger, postgres
from routing_engine.domain.cdr import CdrRecord

log = logging.getLogger("warp.emitter")


class RecordsRefused(Exception):
    """A sink refused a batch because of what one or more of its records hold; the same records
    will never be taken, and the sink is fine for other records."""


class Sink(Protocol):
    """Where batches go: Postgres (PostgresSink), BigQuery (adapters/bigquery.BigQuerySink), the
    ledger. ``write`` stores a whole batch or raises (``RecordsRefused`` when a record is at
    fault, anything else when the sink is); storing a record twice must be harmless."""

    name: str

    def write(self, records: list[Any]) -> int: ...


class Stream(Protocol):
    """The emitter's view of the CDR stream (adapters/redis_store.CdrStream)."""

    def read_pending(self, consumer: str, count: int) -> list[tuple[str, dict[str, str]]]: ...

    def read_new(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]: ...

    def ack(self, entry_ids: list[str]) -> None: ...

    def dead_letter(self, entry_id: str, data: dict[str, str], error: str) -> None: ...


@dataclass
class Emitter:
    stream: Stream
    sink: Sink
    consumer: str
    batch_size: int = 500
    batch_seconds: float = 10.0
    clock: Callable[[], float] = time.monotonic
    min_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    on_idle: Callable[[], object] | None = None  # e.g. replay the local spool into the stream
    parse: Callable[[dict[str, str]], Any] = CdrRecord.from_fields
    what: str = "CDRs"
    _read_delay: float = field(default=0.5, init=False)

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Drain what this consumer left unacknowledged, then follow the stream until stopped."""
        while not should_stop():
            pending = self._read(self.stream.read_pending, self.consumer, self.batch_size)
            if pending is None:
                continue
            if not pending:
                break
            self._flush_with_retry(pending, should_stop)
        batch: list[tuple[str, dict[str, str]]] = []
        started = self.clock()
        while not should_stop():
            wait_s = max(0.0, self.batch_seconds - (self.clock() - started)) if batch else 1.0
            block_ms = max(1, min(1000, int(wait_s * 1000)))
            fresh = self._read(self.stream.read_new, self.consumer, self.batch_size - len(batch), block_ms) or []
            if not fresh and self.on_idle is not None:
                try:
                    self.on_idle()
                except Exception as exc:
                    log.warning("idle task failed: %s", exc)
            if fresh and not batch:
                started = self.clock()
            batch.extend(fresh)
            if batch and (len(batch) >= self.batch_size or self.clock() - started >= self.batch_seconds):
                self._flush_with_retry(batch, should_stop)
                batch = []
        if batch:
            self._flush_with_retry(batch, lambda: True)

    def _read(self, read: Callable[..., list[tuple[str, dict[str, str]]]],
              *args: Any) -> list[tuple[str, dict[str, str]]] | None:
        """A read from the stream; None after a failure (Redis down, or restarted without its
        data so the consumer group is gone: it is created again), having backed off."""
        try:
            entries = read(*args)
        except Exception as exc:
            log.warning("%s stream not readable (%s); retrying in %.1fs", self.what, exc, self._read_delay)
            time.sleep(self._read_delay)
            self._read_delay = min(self._read_delay * 2, self.max_backoff_s)
            ensure_group = getattr(self.stream, "ensure_group", None)
            if ensure_group is not None:
                with contextlib.suppress(Exception):
                    ensure_group()
            return None
        self._read_delay = self.min_backoff_s
        return entries

    def flush(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        """Write one batch and acknowledge it; raises if the sink fails (nothing acknowledged
        but dead letters). Returns the rows the sink added."""
        readable: list[tuple[str, dict[str, str], Any]] = []
        for entry_id, data in entries:
            try:
                readable.append((entry_id, data, self.parse(data)))
            except ValueError as exc:
                log.error("%s entry %s unreadable, moved to dead letters: %s", self.what, entry_id, exc)
                self._dead_letter(entry_id, data, str(exc), "unreadable")
        return self._write(readable)

    def _write(self, batch: list[tuple[str, dict[str, str], Any]]) -> int:
        """Write and acknowledge; a refused batch is bisected down to its refused records."""
        sink = getattr(self.sink, "name", "sink")
        try:
            added = self.sink.write([record for _, _, record in batch])
        except RecordsRefused as exc:
            if len(batch) == 1:
                entry_id, data, _ = batch[0]
                log.error("%s entry %s refused by %s, moved to dead letters: %s", self.what, entry_id, sink, exc)
                self._dead_letter(entry_id, data, f"refused by {sink}: {exc}", "refused")
                return 0
            half = len(batch) // 2
            return self._write(batch[:half]) + self._write(batch[half:])
        ids = [entry_id for entry_id, _, _ in batch]
        self.stream.ack(ids)
        metrics.batch_written(sink, len(batch), added, ids, time.time())
        log.info("wrote %d %s (%d new)", len(batch), self.what, added)
        return added

    def _dead_letter(self, entry_id: str, data: dict[str, str], error: str, reason: str) -> None:
        """Parked first, then acknowledged: an entry is never lost in between."""
        self.stream.dead_letter(entry_id, data, error[:1000])
        self.stream.ack([entry_id])
        metrics.DEAD_LETTERS.labels(getattr(self.sink, "name", "sink"), reason).inc()

    def _flush_with_retry(
        self, entries: list[tuple[str, dict[str, str]]], should_stop: Callable[[], bool]
    ) -> None:
        delay = self.min_backoff_s
        while True:
            try:
                self.flush(entries)
                return
            except Exception as exc:  # the sink is down: keep the batch, back off, try again
                metrics.SINK_BATCHES.labels(getattr(self.sink, "name", "sink"), "failed").inc()
                log.warning("%s batch of %d not written (%s); retrying in %.1fs",
                            self.what, len(entries), exc, delay)
                if should_stop():
                    return  # unacknowledged: delivered again on the next start
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)


class PostgresSink(Sink):
    """Writes batches into cdr.cdrs; reconnects after a failure.

    With a wallet, it first settles the calls that reserved funds: the exact charge, once per
    call (by CDR id, the identity the call's funds and places are held under: never the Call-ID,
    which calls may share), and the reservation released, for a whole batch in one round trip.
    With limits, it frees the concurrency places of each finished call whose entry does not say
    ``released``: the SIP worker frees them with the entry (the same pipeline, before it) unless
    Redis was down then, and a CDR spooled during an outage reaches this point only once Redis is
    back.
    Settling before the insert and acknowledging after it means a crash anywhere repeats only
    idempotent steps.
    """

    name = "postgres"

    def __init__(self, url: str, timeout_s: int, wallet: Any = None, limits: Any = None,
                 retention_days: int | None = None, retention_every_s: float = 3600.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.wallet = wallet
        self.limits = limits
        self.retention_days = retention_days
        self.retention_every_s = retention_every_s
        self._conn: Any = None
        self._next_retention = 0.0

    def expire(self, today: Any = None) -> list[str]:
        """Drop the partitions past the retention (at most once per ``retention_every_s``);
        a failure is logged and tried again next time, never holding up a batch."""
        if self.retention_days is None or self._conn is None or time.monotonic() < self._next_retention:
            return []
        self._next_retention = time.monotonic() + self.retention_every_s
        try:
            dropped = postgres.drop_expired_cdr_partitions(self._conn, today or datetime.now(UTC).date(),
                                                           self.retention_days)
        except Exception as exc:
            log.warning("CDR retention not applied now (%s); next try in %.0fs", exc, self.retention_every_s)
            return []
        if dropped:
            metrics.PARTITIONS_DROPPED.inc(len(dropped))
            log.info("CDR partitions older than %d days dropped: %s", self.retention_days, ", ".join(dropped))
        return dropped

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = postgres.connect(self.url, self.timeout_s)
            # the next days' partitions exist before their first CDR, so the write path rarely locks
            now = datetime.now(UTC)
            postgres.ensure_cdr_partitions(self._conn, [now + timedelta(days=d) for d in range(3)])
        return self._conn

    def write(self, records: list[CdrRecord]) -> int:
        from routing_engine.domain.rating import to_micros

        if self.wallet is not None:
            charges = [(r.cdr_id, r.account_id, to_micros(r.customer_price or Decimal(0)),
                        (r.end_at or r.invite_at).isoformat())
                       for r in records if r.settle and r.account_id is not None]
            for charge, done in zip(charges, self.wallet.settle_many(charges), strict=True):
                if done is None:  # no live balance yet: it starts from the durable one, not zero
                    seed = ledger.durable_balance(self._connection(), self.wallet.client, charge[1])
                    self.wallet.settle(*charge, seed_micros=seed)
        if self.limits is not None:
            self.limits.release_many([(r.cdr_id, r.trunk_id, r.account_id) for r in records
                                      if not r.released and r.trunk_id is not None and r.account_id is not None])
        self._connection()
        try:
            added = postgres.insert_cdrs(self._conn, records)
        except Exception as exc:
            if postgres.is_row_problem(exc) and not self._conn.closed:
                raise RecordsRefused(_first_line(exc)) from exc  # the connection stays good
            try:
                self._conn.close()
            finally:
                self._conn = None
            raise
        self.expire()
        return added


class LedgerSink(Sink):
    """Writes balance changes into billing.balance_updates; (kind, reference) makes it idempotent.
    A stream entry is deleted once written (CdrStream.ack), so the stream holds only what is in
    flight: `warp ledger check` counts it with the Postgres ledger."""

    name = "ledger"

    def __init__(self, url: str, timeout_s: int) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self._conn: Any = None

    def write(self, records: list[Any]) -> int:
        from routing_engine.domain.rating import from_micros

        if self._conn is None or self._conn.closed:
            self._conn = postgres.connect(self.url, self.timeout_s)
        try:
            added = 0
            with self._conn.transaction(), self._conn.cursor() as cur:
                for r in records:
                    # a reference is text from the stream (a CDR id, a top-up reference): made storable;
                    # an entry whose row its poster wrote already (the API, with its id) adds nothing
                    cur.execute("INSERT INTO billing.balance_updates (id, account_id, amount, kind, reference,"
                                " created_at) VALUES (COALESCE(%s, gen_random_uuid()), %s, %s, %s, %s, %s)"
                                " ON CONFLICT (kind, reference) DO NOTHING",
                                (r.get("id"), r["account_id"], from_micros(r["amount_micros"]), r["kind"],
                                 postgres.storable_text(r["reference"], postgres.INDEXED_TEXT_MAX), r["at"]))
                    added += cur.rowcount
            return added
        except Exception as exc:
            if postgres.is_row_problem(exc) and not self._conn.closed:
                raise RecordsRefused(_first_line(exc)) from exc
            try:
                self._conn.close()
            finally:
                self._conn = None
            raise


def _first_line(exc: BaseException) -> str:
    """The error without the offending value Postgres may quote on its DETAIL lines."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def seed_balances(database_url: str, wallet: Any) -> int:
    """Give every account without a live balance in Redis its durable balance: the Postgres
    ledger plus what is still in the ledger stream (adapters/ledger.durable_balance, for all)."""
    from routing_engine.domain.rating import to_micros

    entries = ledger.in_flight(wallet.client)  # the stream first: see ledger.durable_balance
    with postgres.connect(database_url) as conn:
        rows = conn.execute("SELECT account_id, balance FROM billing.account_balances").fetchall()
        waiting = ledger.pending(conn, entries)
    balances = {r[0]: to_micros(r[1]) for r in rows}
    for e in waiting:
        if e["account_id"] in balances:
            balances[e["account_id"]] += e["amount_micros"]
    return int(wallet.seed(balances))


def replay_spool(settings: Any, stream: Any) -> int:
    """Move CDRs that SIP workers spooled to disk (Redis was down) into the stream.

    The file is renamed first, so workers start a fresh one; the lock waits out a worker that
    was in the middle of writing to it. A file is deleted only after all its lines are in Redis.
    """
    from routing_engine.bootstrap import spool_dir

    moved = 0
    directory = spool_dir(settings)
    if not directory.exists():
        return 0
    for path in sorted(directory.glob("cdr-*.jsonl")) + sorted(directory.glob("*.replaying")):
        if path.suffix == ".jsonl":
            claimed = path.with_suffix(".replaying")
            path.rename(claimed)
            path = claimed
        with path.open() as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            lines = fh.read().splitlines()
        for line in lines:
            if line.strip():
                stream.client.xadd(stream.stream, json.loads(line), maxlen=stream.maxlen,
                                   approximate=True)
                moved += 1
                metrics.CDR_REPLAYED.inc()
        path.unlink()
    if moved:
        log.info("replayed %d spooled CDRs into the stream", moved)
    return moved
