"""Replay: how fast a period's CDRs are decided again on a draft, and what memory it takes.

Runs against the embedded Postgres `make bench` starts, in its own database (``warp_bench_replay``,
dropped and created). Three vendors with 3,000 NANP NPA-NXX rates each, a least-cost plan, 20
customers paying one price list; 2,000 calls decided as a SIP worker decides them (their traces
and money as real CDRs carry them) and copied with new ids and times to ``calls`` CDRs of one
day. A draft sets half of one vendor's deck to 0.0090 (1,500 edits); the replay reads the day in pages and
decides every CDR on the draft's candidate snapshot. Figures: CDRs per second of the replay
(reading from Postgres included), the growth of the process's peak RSS during it, and the calls
it found rerouted or refused.
"""

from __future__ import annotations

import json
import os
import random
import resource
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg

from routing_engine.adapters import drafts, migrate, postgres
from routing_engine.bootstrap import Decider
from routing_engine.domain import rating
from routing_engine.domain.cdr import CdrRecord, compact_trace, lrn_source_of
from routing_engine.domain.decision import CallRequest, Relay
from routing_engine.domain.lrn import LrnResult
from routing_engine.ops import whatif
from routing_engine.settings import load_settings

DATABASE = "warp_bench_replay"
DAY = datetime(2026, 11, 30, tzinfo=UTC)
EDITS = 1500


def _id(conn: psycopg.Connection, statement: str, params: tuple[object, ...] = ()) -> uuid.UUID:
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def _provision(conn: psycopg.Connection, rnd: random.Random) -> tuple[list[uuid.UUID], list[str]]:
    npanxx = sorted({f"1{rnd.randint(201, 989)}{rnd.randint(200, 999)}" for _ in range(4000)})[:3000]
    vendors = []
    for n in range(3):
        vid = _id(conn, "INSERT INTO routing.providers (name) VALUES (%s) RETURNING id", (f"v{n}",))
        conn.execute("INSERT INTO routing.provider_gateways (provider_id, name, host) VALUES (%s, 'gw', %s)",
                     (vid, f"192.0.2.{10 + n}"))
        with conn.cursor().copy("COPY routing.rates (provider_id, prefix, rate) FROM STDIN") as copy:
            for prefix in npanxx:
                copy.write_row((vid, prefix, Decimal(rnd.randint(20, 80)) / 10000))
        vendors.append(vid)
    plan = _id(conn, "INSERT INTO routing.routing_plans (name) VALUES ('lcr') RETURNING id")
    for vid in vendors:
        conn.execute("INSERT INTO routing.routing_plan_providers (routing_plan_id, provider_id) VALUES (%s, %s)",
                     (plan, vid))
    retail = _id(conn, "INSERT INTO billing.rate_plans (name) VALUES ('retail') RETURNING id")
    conn.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
                 " subsequent_increment) VALUES (%s, '1', 0.0100, 6, 6)", (retail,))
    trunks = []
    for n in range(20):
        aid = _id(conn, "INSERT INTO accounts.accounts (ban, name, status, rate_plan_id, routing_plan_id)"
                  " VALUES (%s, %s, 'active', %s, %s) RETURNING id", (f"BAN{n:04d}", f"customer {n}", retail, plan))
        tid = _id(conn, "INSERT INTO trunks.trunks (account_id, name) VALUES (%s, 'main') RETURNING id", (aid,))
        trunks.append(tid)
    return trunks, npanxx


def _seed_cdrs(conn: psycopg.Connection, trunks: list[uuid.UUID], npanxx: list[str], rnd: random.Random,
               seeds: int) -> None:
    snapshot = postgres.load_snapshot(conn, DAY, "warp.local")
    decide = Decider("US", lrn=lambda number: LrnResult(None, "cache"))
    records = []
    for n in range(seeds):
        dialed = f"{rnd.choice(npanxx)}{rnd.randint(0, 9999):04d}"
        trunk = rnd.choice(trunks)
        at = DAY + timedelta(seconds=rnd.randint(0, 86399))
        decision = decide(CallRequest(f"seed-{n}", "", 0, "udp", dialed, "13055550100"), snapshot, at,
                          trunk_id=trunk, method="acl")
        if not isinstance(decision, Relay):
            continue
        route, duration = decision.routes[0], rnd.choice([0, rnd.randint(1, 900)])
        owed = rating.bill(duration, 0, decision.price, route.rate)
        ctx = decision.context
        records.append(CdrRecord(
            cdr_id=uuid.uuid4(), call_id=f"seed-{n}", node="bench", invite_at=at, sip_code=200 if duration else 487,
            account_id=ctx.account_id, trunk_id=trunk, provider_id=route.vendor_id, from_raw="13055550100",
            to_raw=dialed, from_e164=ctx.from_e164, to_e164=ctx.to_e164, duration_s=duration,
            vendor_rate=route.rate, trace=compact_trace(decision.trace), jurisdiction=ctx.jurisdiction,
            billable_s=owed.billable_s, customer_price=owed.customer_price, vendor_cost=owed.vendor_cost,
            margin=owed.margin, lrn_source=lrn_source_of(decision.trace)))
    postgres.insert_cdrs(conn, records)


def _multiply(conn: psycopg.Connection, calls: int, seeds: int) -> int:
    copies = max(0, calls // seeds - 1)
    columns = [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'cdr' AND table_name = 'cdrs'"
        " AND column_name NOT IN ('cdr_id', 'call_id', 'invite_at') ORDER BY ordinal_position").fetchall()]
    listed = ", ".join(columns)
    conn.execute(  # same calls, other ids and moments of the same day
        f"INSERT INTO cdr.cdrs (cdr_id, call_id, invite_at, {listed})"
        f" SELECT gen_random_uuid(), c.call_id || '-' || g, %s + (random() * interval '86399 seconds'), {listed}"
        " FROM cdr.cdrs c CROSS JOIN generate_series(1, %s) g", (DAY, copies))
    conn.execute("ANALYZE cdr.cdrs")
    row = conn.execute("SELECT count(*) FROM cdr.cdrs").fetchone()
    return int(row[0]) if row else 0


def run(calls: int = 200_000) -> dict[str, Any]:
    base = load_settings()
    with psycopg.connect(base.embedded_database_url("postgres"), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{DATABASE}"')
    settings = load_settings(environ={**os.environ, "WARP_DATABASE__NAME": DATABASE})
    rnd = random.Random(18)
    seeds = 2000
    try:
        with postgres.connect(settings.database_url) as conn:
            migrate.apply(conn)
            trunks, npanxx = _provision(conn, rnd)
            _seed_cdrs(conn, trunks, npanxx, rnd, seeds)
            stored = _multiply(conn, calls, seeds)
            draft = drafts.create(conn, "dearer-v0", "bench")
            # half of v0's deck dearer, written straight into the draft (add_edit would preview
            # the draft once per edit)
            with conn.cursor() as cur:
                cur.executemany('INSERT INTO drafts.edits (draft_id, seq, target, key, "values")'
                                " VALUES (%s, %s, 'vendor_rate', %s, %s)",
                                [(draft.id, n + 1, json.dumps({"vendor": "v0", "prefix": prefix}),
                                  json.dumps({"rate": "0.0090"})) for n, prefix in enumerate(npanxx[:EDITS])])
            started = time.perf_counter()
            name, snapshot = whatif.candidate(settings, conn, datetime.now(UTC), draft="dearer-v0")
            candidate_s = time.perf_counter() - started
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            report = whatif.replay(settings, conn, name, snapshot, DAY, DAY + timedelta(days=1))
            seconds = time.perf_counter() - started
            rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        with psycopg.connect(base.embedded_database_url("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    return {
        "replay_cdrs": stored,
        "replay_draft_edits": EDITS,
        "replay_candidate_build_s": round(candidate_s, 2),
        "replay_cdrs_per_s": round(report.total.calls / seconds),
        "replay_peak_rss_growth_mb": round((rss_after - rss_before) / 1024, 1),
        "replay_rerouted": report.total.rerouted,
        "replay_refused": report.total.refused,
        "replay_unreplayable": report.unreplayable,
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:32} {value}")
