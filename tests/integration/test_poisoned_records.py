"""No single record holds up the others: poisoned CDRs and ledger entries between good ones,
through the real stream, emitter and Postgres."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
import redis

from routing_engine import metrics
from routing_engine.adapters import postgres, redis_store
from routing_engine.adapters.money import LEDGER_STREAM, ledger_entry
from routing_engine.companion.emitter import Emitter, LedgerSink, PostgresSink
from routing_engine.domain.cdr import CdrRecord
from routing_engine.settings import Settings

T0 = datetime.now(UTC).replace(microsecond=0)


def record(call_id: str, **extra: object) -> CdrRecord:
    return CdrRecord(cdr_id=uuid.uuid4(), call_id=call_id, node="test-node", invite_at=T0, sip_code=403,
                     sip_reason="Forbidden", **extra)  # type: ignore[arg-type]


def drain(stream: redis_store.CdrStream, emitter: Emitter, client: redis.Redis) -> None:
    """Run the emitter until its stream holds nothing unacknowledged (or give up)."""
    rounds = iter(range(50))
    emitter.run(lambda: next(rounds, None) is None
                or (client.xlen(stream.stream) == 0 and not client.xpending(stream.stream, stream.group)["pending"]))


def dead_letters(sink: str) -> float:
    return metrics.DEAD_LETTERS.labels(sink, "refused")._value.get()


def test_a_nul_byte_and_a_lone_surrogate_are_stored_visibly_replaced(db: psycopg.Connection) -> None:
    trace = json.dumps({"auth": {"call_id": "a\x00b"}, "note": "\ud800"})
    batch = [record("good-1"), record("evil\x00call\ud800id", from_raw="<sip:\x00@x>", trace=trace,
                                      attempts='[{"reason": "x\\u0000y"}]'), record("good-2")]
    assert postgres.insert_cdrs(db, batch) == 3
    stored = dict(db.execute("SELECT call_id, from_raw FROM cdr.cdrs").fetchall())
    assert stored["evil\ufffdcall\ufffdid"] == "<sip:\ufffd@x>"
    (kept_trace, attempts) = db.execute("SELECT trace, attempts FROM cdr.cdrs WHERE call_id LIKE 'evil%'").fetchone()
    assert kept_trace == {"auth": {"call_id": "a\ufffdb"}, "note": "\ufffd"} and attempts == [{"reason": "x\ufffdy"}]


def test_a_call_id_too_large_for_its_index_is_stored_cut(db: psycopg.Connection) -> None:
    huge = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(3000))  # incompressible, 9 kB of UTF-8
    assert postgres.insert_cdrs(db, [record(huge)]) == 1
    (stored,) = db.execute("SELECT call_id FROM cdr.cdrs").fetchone()
    assert len(stored) == postgres.INDEXED_TEXT_MAX and stored.endswith("\u2026") and huge.startswith(stored[:-1])


@pytest.mark.parametrize("poison", [{"vendor_rate": Decimal("123456789")},   # numeric(12, 6) overflows
                                    {"q850_cause": 70000},                    # smallint overflows
                                    {"trace": "{not json"}])
def test_a_record_postgres_refuses_is_dead_lettered_and_the_good_ones_around_it_are_written(
        db: psycopg.Connection, redis_client: redis.Redis, settings: Settings, database: str,
        poison: dict[str, object]) -> None:
    stream = redis_store.CdrStream(redis_client, settings.cdr.stream, settings.cdr.group, 10000)
    stream.ensure_group()
    for n in range(3):
        stream.append(record(f"good-{n}"))
    bad_id = stream.append(record("poisoned", **poison))
    for n in range(3, 6):
        stream.append(record(f"good-{n}"))
    before = dead_letters("postgres")
    drain(stream, Emitter(stream, PostgresSink(database, 5), consumer="t", batch_size=10, batch_seconds=0.1),
          redis_client)
    assert sorted(r[0] for r in db.execute("SELECT call_id FROM cdr.cdrs")) == [f"good-{n}" for n in range(6)]
    dead = redis_client.xrange(f"{settings.cdr.stream}:dead")
    assert len(dead) == 1
    _, fields = dead[0]
    assert fields["call_id"] == "poisoned" and fields["_entry"] == bad_id
    assert fields["_error"].startswith("refused by postgres: ")
    assert redis_client.xpending(settings.cdr.stream, settings.cdr.group)["pending"] == 0
    assert dead_letters("postgres") == before + 1


def test_a_postgres_outage_keeps_the_whole_batch_for_a_retry(
        redis_client: redis.Redis, settings: Settings) -> None:
    stream = redis_store.CdrStream(redis_client, settings.cdr.stream, settings.cdr.group, 10000)
    stream.ensure_group()
    stream.append(record("good"))
    unreachable = "postgresql://warp@127.0.0.1:9/nowhere"  # nothing listens on port 9
    emitter = Emitter(stream, PostgresSink(unreachable, 1), consumer="t", batch_size=1, batch_seconds=0.1,
                      min_backoff_s=0.01, max_backoff_s=0.01)
    rounds = iter(range(30))
    emitter.run(lambda: next(rounds, None) is None)
    assert redis_client.xlen(f"{settings.cdr.stream}:dead") == 0
    assert redis_client.xpending(settings.cdr.stream, settings.cdr.group)["pending"] == 1  # kept, unacknowledged


def test_a_ledger_entry_postgres_refuses_is_dead_lettered_and_the_others_are_written(
        db: psycopg.Connection, redis_client: redis.Redis, database: str) -> None:
    (account,) = db.execute("INSERT INTO accounts.accounts (ban, name, billing_type) VALUES ('P1', 'P', 'prepaid')"
                            " RETURNING id").fetchone()
    ledger = redis_store.CdrStream(redis_client, LEDGER_STREAM, "warp-emitter", 10000)
    ledger.ensure_group()
    at = T0.isoformat()
    for account_id, reference in ((account, "call-1"), (uuid.uuid4(), "no-such-account"), (account, "nul\x00call")):
        redis_client.xadd(LEDGER_STREAM, {"account_id": str(account_id), "amount_micros": "-250000",
                                          "kind": "call_charge", "reference": reference, "at": at})
    before = dead_letters("ledger")
    drain(ledger, Emitter(ledger, LedgerSink(database, 5), consumer="t", batch_size=10, batch_seconds=0.1,
                          parse=ledger_entry, what="ledger entries"), redis_client)
    rows = db.execute("SELECT reference, amount FROM billing.balance_updates ORDER BY reference").fetchall()
    assert rows == [("call-1", Decimal("-0.250000")), ("nul\ufffdcall", Decimal("-0.250000"))]
    dead = redis_client.xrange(f"{LEDGER_STREAM}:dead")
    assert [f["reference"] for _, f in dead] == ["no-such-account"]
    assert "ForeignKeyViolation" in dead[0][1]["_error"]
    assert dead_letters("ledger") == before + 1
