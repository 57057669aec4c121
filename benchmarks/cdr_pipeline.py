"""CDR pipeline: emitter throughput into Postgres, and end-to-end lag at a steady call rate.

Runs against the embedded Redis and Postgres `make bench` starts: its own database
(``warp_bench_cdr``, dropped and created) and its own stream key, deleted afterwards.

- throughput: 50,000 generated CDRs (realistic trace and attempts) appended to the stream, then
  one emitter (PostgresSink, batches of 500) drains it; CDRs per second of the drain.
- lag: CDRs appended one by one at a steady rate (as SIP workers do) while the emitter runs with
  the project's batching (500 rows or ``batch_seconds``); lag = commit time - the stream entry's
  time, per CDR, p50/p99. Also the append cost a SIP worker pays per CDR (one XADD).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg

from routing_engine.adapters import migrate, redis_store
from routing_engine.companion.emitter import Emitter, PostgresSink
from routing_engine.domain.cdr import CdrRecord
from routing_engine.settings import load_settings

DATABASE = "warp_bench_cdr"
STREAM = "warp:bench:cdr"
GROUP = "bench"


def _record(n: int) -> CdrRecord:
    now = datetime.now(UTC)
    trace = {"snapshot": "0123456789ab", "auth": {"method": "acl", "trunk": "trunk-1"},
             "numbers": {"to": "+12125551234", "from": "+13055550100"}, "lrn": {"source": "cache", "ported": False},
             "jurisdiction": {"kind": "interstate"}, "rating": {"plan": "retail", "rate": "0.010000"},
             "routes": [{"vendor": "vendor-a", "gateway": "a-gw1", "ruri": "sip:+12125551234@192.0.2.10:5060"}]}
    attempts = [{"vendor": "vendor-a", "gateway": "a-gw1", "code": 200, "reason": "OK",
                 "started_at": now.isoformat(), "ringing_at": now.isoformat(), "ended_at": now.isoformat(),
                 "pdd_ms": 1200}]
    return CdrRecord(cdr_id=uuid.uuid4(), call_id=f"bench-{n}-{uuid.uuid4().hex[:8]}", node="bench", invite_at=now,
                     sip_code=200, sip_reason="OK", account_id=uuid.uuid4(), trunk_id=uuid.uuid4(),
                     provider_id=uuid.uuid4(), gateway="a-gw1", from_raw="13055550100", to_raw="12125551234",
                     from_e164="+13055550100", to_e164="+12125551234", answer_at=now, end_at=now, duration_s=95,
                     vendor_rate=Decimal("0.004"), trace=json.dumps(trace), jurisdiction="interstate",
                     attempts=json.dumps(attempts), billable_s=120, customer_rate=Decimal("0.010000"),
                     customer_price=Decimal("0.020000"), vendor_cost=Decimal("0.006333"),
                     margin=Decimal("0.013667"), ban="BAN1001", lrn_source="cache", ringing_at=now, pdd_ms=1200,
                     hangup_side="caller")


class _TimedEmitter(Emitter):
    """Records, per CDR, the time from its stream entry to the commit of its batch."""

    lags: list[float]

    def flush(self, entries: list[tuple[str, dict[str, str]]]) -> int:
        added = super().flush(entries)
        committed = time.time()
        self.lags.extend(committed - int(entry_id.split("-")[0]) / 1000 for entry_id, _ in entries)
        return added


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(total: int = 50_000, rates: tuple[int, ...] = (200, 1000), seconds: float = 10.0) -> dict[str, object]:
    settings = load_settings()
    with psycopg.connect(settings.embedded_database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    url = settings.embedded_database_url(DATABASE)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate.apply(conn)
    client = redis_store.connect(settings.redis_url, 5000)
    client.delete(STREAM)
    stream = redis_store.CdrStream(client, STREAM, GROUP, 10_000_000)
    stream.ensure_group()
    results: dict[str, object] = {}
    try:
        records = [_record(n) for n in range(total)]
        started = time.perf_counter()
        for start in range(0, total, 1000):
            pipe = client.pipeline(transaction=False)
            for r in records[start:start + 1000]:
                pipe.xadd(STREAM, r.to_fields())  # type: ignore[arg-type]
            pipe.execute()
        results["cdr stream append, pipelined (CDR/s)"] = round(total / (time.perf_counter() - started))
        emitter = Emitter(stream, PostgresSink(url, 5), consumer="bench", batch_size=settings.cdr.batch_size,
                          batch_seconds=settings.cdr.batch_seconds)
        started = time.perf_counter()
        emitter.run(lambda: stream.backlog() == 0)
        results[f"emitter into Postgres, {total} CDRs (CDR/s)"] = round(total / (time.perf_counter() - started))
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM cdr.cdrs").fetchone()
        assert stored is not None and stored[0] == total, f"{stored} rows for {total} CDRs"

        for rate in rates:
            lagging = _TimedEmitter(stream, PostgresSink(url, 5), consumer="bench", batch_size=settings.cdr.batch_size,
                                    batch_seconds=settings.cdr.batch_seconds)
            lagging.lags = []
            done = threading.Event()
            runner = threading.Thread(target=lagging.run, args=(lambda d=done: d.is_set() and stream.backlog() == 0,))
            runner.start()
            appends: list[float] = []
            count = int(rate * seconds)
            t0 = time.monotonic()
            for n in range(count):
                delay = t0 + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                record = _record(n)
                before = time.perf_counter()
                stream.append(record)
                appends.append(time.perf_counter() - before)
            done.set()
            runner.join()
            lags = lagging.lags
            key = f"lag at {rate} CDR/s, batches {settings.cdr.batch_size}/{settings.cdr.batch_seconds:g}s"
            results[f"{key} p50 (s)"] = round(statistics.median(lags), 3)
            results[f"{key} p99 (s)"] = round(_pct(lags, 0.99), 3)
            results[f"append by a SIP worker at {rate}/s p50 (us)"] = round(statistics.median(appends) * 1e6)
            results[f"append by a SIP worker at {rate}/s p99 (us)"] = round(_pct(appends, 0.99) * 1e6)
    finally:
        client.delete(STREAM)
        client.close()
        with psycopg.connect(settings.embedded_database_url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return results
