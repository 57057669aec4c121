"""Redis stream -> emitter -> Postgres, with the real servers."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import redis

from routing_engine import bootstrap
from routing_engine.adapters import postgres, redis_store
from routing_engine.companion.emitter import Emitter, PostgresSink, replay_spool
from routing_engine.domain.cdr import CdrRecord
from routing_engine.settings import Settings

T0 = datetime.now(UTC).replace(microsecond=0)


def record(n: int, at: datetime = T0) -> CdrRecord:
    return CdrRecord(cdr_id=uuid.uuid4(), call_id=f"call-{n}", node="test-node", invite_at=at,
                     sip_code=200, sip_reason="OK", to_e164="+12125551234", duration_s=n)


def stream_for(client: redis.Redis, settings: Settings) -> redis_store.CdrStream:
    s = redis_store.CdrStream(client, settings.cdr.stream, settings.cdr.group, 10000)
    s.ensure_group()
    return s


def emitter(settings: Settings, stream: redis_store.CdrStream, database: str) -> Emitter:
    return Emitter(stream, PostgresSink(database, 5), consumer="test-emitter", batch_size=2,
                   batch_seconds=0.2)


def stored(db: psycopg.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT call_id FROM cdr.cdrs ORDER BY call_id")]


def test_cdrs_appended_to_the_stream_land_in_postgres_once(
        db: psycopg.Connection, redis_client: redis.Redis, settings: Settings, database: str) -> None:
    stream = stream_for(redis_client, settings)
    for n in range(3):
        stream.append(record(n))
    emitter(settings, stream, database).run(lambda: stream.backlog() == 0)
    assert stored(db) == ["call-0", "call-1", "call-2"]
    row = db.execute("SELECT duration_s, sip_code, to_e164, tableoid::regclass::text FROM cdr.cdrs"
                     " WHERE call_id = 'call-2'").fetchone()
    assert row == (2, 200, "+12125551234", f"cdr.cdrs_{T0:%Y%m%d}")


def test_a_batch_read_but_never_acknowledged_is_written_once_after_restart(
        db: psycopg.Connection, redis_client: redis.Redis, settings: Settings, database: str) -> None:
    stream = stream_for(redis_client, settings)
    for n in range(2):
        stream.append(record(n))
    # A first emitter reads the batch, writes it, and dies before acknowledging.
    entries = stream.read_new("test-emitter", 10, 100)
    postgres.insert_cdrs(db, [CdrRecord.from_fields(d) for _, d in entries])
    # Its successor (same consumer name) finds the pending entries and writes them again.
    emitter(settings, stream, database).run(lambda: stream.backlog() == 0)
    assert stored(db) == ["call-0", "call-1"]
    assert redis_client.xpending(settings.cdr.stream, settings.cdr.group)["pending"] == 0


def test_rows_caught_by_the_default_partition_move_to_their_day(db: psycopg.Connection) -> None:
    day = T0 - timedelta(days=3)
    db.execute("INSERT INTO cdr.cdrs (cdr_id, call_id, node, invite_at, sip_code)"
               " VALUES (%s, 'early', 'n', %s, 200)", (uuid.uuid4(), day))
    postgres.insert_cdrs(db, [record(1, day)])
    rows = db.execute("SELECT call_id, tableoid::regclass::text FROM cdr.cdrs ORDER BY 1").fetchall()
    assert rows == [("call-1", f"cdr.cdrs_{day:%Y%m%d}"), ("early", f"cdr.cdrs_{day:%Y%m%d}")]


def test_cdrs_spooled_while_redis_was_down_are_replayed_into_postgres(
        db: psycopg.Connection, redis_client: redis.Redis, settings: Settings, database: str) -> None:
    spool = bootstrap.spool_dir(settings)
    for n in range(3):
        bootstrap.spool_write(spool, record(n))
    stream = stream_for(redis_client, settings)
    assert replay_spool(settings, stream) == 3
    assert not list(spool.glob("*"))
    emitter(settings, stream, database).run(lambda: stream.backlog() == 0)
    assert stored(db) == ["call-0", "call-1", "call-2"]


def test_sip_worker_spools_when_redis_is_unreachable(settings: Settings, tmp_path) -> None:
    dead = redis_store.connect("redis://127.0.0.1:1/0", 100)
    app = bootstrap.App(settings, redis_store.CdrStream(dead, "s", "g", 10), follower=None,  # type: ignore[arg-type]
                        decide=bootstrap.Decider(settings.routing.default_region))
    app._spool = tmp_path
    app.emit_cdr(record(7))
    lines = [line for f in tmp_path.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == 1 and '"call_id": "call-7"' in lines[0]


def partitions(db: psycopg.Connection) -> list[str]:
    return postgres.cdr_partitions(db)


def test_the_emitter_drops_partitions_past_the_retention(db: psycopg.Connection, database: str) -> None:
    today = T0.date()
    days = [T0 - timedelta(days=d) for d in (10, 8, 7, 0)]
    postgres.insert_cdrs(db, [record(n, at) for n, at in enumerate(days)])
    sink = PostgresSink(database, 5, retention_days=7)
    sink.write([record(9)])  # connects, writes, then applies the retention
    names = partitions(db)
    for gone in (days[0], days[1]):
        assert f"cdrs_{gone:%Y%m%d}" not in names
    for kept in (days[2], days[3]):
        assert f"cdrs_{kept:%Y%m%d}" in names
    assert "cdrs_default" in names
    assert stored(db) == ["call-2", "call-3", "call-9"]
    assert sink.expire(today) == []  # at most once per retention_every_s


def test_with_two_consumer_groups_an_entry_stays_until_both_have_committed_it(
        redis_client: redis.Redis, settings: Settings) -> None:
    postgres_side = redis_store.CdrStream(redis_client, settings.cdr.stream, "pg", 10000, shared=True)
    bigquery_side = redis_store.CdrStream(redis_client, settings.cdr.stream, "bq", 10000, shared=True)
    postgres_side.ensure_group()
    bigquery_side.ensure_group()
    for n in range(3):
        postgres_side.append(record(n))
    postgres_side.ack([i for i, _ in postgres_side.read_new("c", 10, 10)])
    assert redis_client.xlen(settings.cdr.stream) == 3  # BigQuery has not read them yet
    read = bigquery_side.read_new("c", 2, 10)
    bigquery_side.ack([i for i, _ in read])
    assert redis_client.xlen(settings.cdr.stream) == 1  # the third still waits for BigQuery
    bigquery_side.ack([i for i, _ in bigquery_side.read_new("c", 10, 10)])
    assert redis_client.xlen(settings.cdr.stream) == 0


def test_a_batch_insert_counts_only_the_rows_it_added(db: psycopg.Connection) -> None:
    batch = [record(n) for n in range(3)]
    assert postgres.insert_cdrs(db, batch) == 3
    assert postgres.insert_cdrs(db, [*batch, record(3)]) == 1


def test_places_freed_with_the_cdr_are_not_freed_again_but_a_spooled_cdr_s_are(
        db: psycopg.Connection, redis_client: redis.Redis, settings: Settings, database: str,
        tmp_path) -> None:
    from routing_engine.adapters.money import Limits

    limits, trunk, account = Limits(redis_client), uuid.uuid4(), uuid.uuid4()
    stream = stream_for(redis_client, settings)
    app = bootstrap.App(settings, stream, follower=None, limits=limits,  # type: ignore[arg-type]
                        decide=bootstrap.Decider(settings.routing.default_region))
    app._spool = tmp_path
    ended, spooled = (replace(record(n), trunk_id=trunk, account_id=account) for n in (1, 2))
    now = datetime.now(UTC).timestamp()  # the places' keys expire by the clock: not T0, set at import
    for call in (ended.cdr_id, spooled.cdr_id):
        assert limits.admit(call, trunk, account, now, 60, None, None, None, None).ok
    app.end_call(ended, (ended.cdr_id, trunk, account))  # the node frees the place with the CDR
    assert limits.active(trunk, account, now) == (1, 1)
    bootstrap.spool_write(bootstrap.spool_dir(settings), spooled)  # Redis was down at its end
    assert replay_spool(settings, stream) == 1
    zrem = redis_client.info("commandstats").get("cmdstat_zrem", {}).get("calls", 0)
    Emitter(stream, PostgresSink(database, 5, limits=limits), consumer="test-emitter", batch_size=10,
            batch_seconds=0.2).run(lambda: stream.backlog() == 0)
    assert stored(db) == ["call-1", "call-2"]
    assert limits.active(trunk, account, now) == (0, 0)
    # the spooled call's two places only: the ended one's were freed with its entry
    assert redis_client.info("commandstats")["cmdstat_zrem"]["calls"] - zrem == 2
