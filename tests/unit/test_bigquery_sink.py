"""The BigQuery sink's row mapping and batching. BigQuery cannot be reached from here: the client is
a recording stand-in for google-cloud-bigquery's ``Client.insert_rows_json``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from routing_engine.adapters.bigquery import SCHEMA, BigQueryError, BigQuerySink, row
from routing_engine.companion.emitter import Emitter
from routing_engine.domain.cdr import CdrRecord
from tests.unit.test_emitter import MemoryStream

T0 = datetime(2026, 11, 22, 12, 0, 0, 250000, tzinfo=UTC)
TABLE = "carrier-prod.cdr.cdrs"


class RecordingClient:
    """Stands in for bigquery.Client: records every insert_rows_json call."""

    def __init__(self, refuse: int = 0) -> None:
        self.calls: list[tuple[str, list[dict[str, Any]], list[str]]] = []
        self.refuse = refuse

    def insert_rows_json(self, table: str, rows: list[dict[str, Any]], row_ids: list[str]) -> list[dict[str, Any]]:
        self.calls.append((table, rows, row_ids))
        if self.refuse:
            self.refuse -= 1
            return [{"index": 0, "errors": [{"reason": "invalid", "message": "no such field"}]}]
        return []


def full_record(n: int = 1) -> CdrRecord:
    return CdrRecord(
        cdr_id=uuid.UUID(int=n), call_id=f"call-{n}", node="node-1", invite_at=T0, sip_code=200, sip_reason="OK",
        direction="outbound", account_id=uuid.UUID(int=100), trunk_id=uuid.UUID(int=200),
        provider_id=uuid.UUID(int=300), gateway="gw-1", from_raw="13055550100", to_raw="12125551234",
        from_e164="+13055550100", to_e164="+12125551234", answer_at=T0, end_at=T0, duration_s=61,
        vendor_rate=Decimal("0.004"), trace='{"snapshot":"abc"}', lrn="+13055559999", jurisdiction="interstate",
        attempts='[{"vendor":"v","gateway":"gw-1","code":200,"reason":"OK"}]', billable_s=120,
        customer_rate=Decimal("0.010000"), customer_price=Decimal("0.020000"), vendor_cost=Decimal("0.004067"),
        margin=Decimal("0.015933"), settle=True, ban="BAN1001", lrn_source="local", ringing_at=T0, pdd_ms=1250,
        q850_cause=16, hangup_side="caller")


def test_a_row_holds_every_cdr_field_in_bigquery_json_types() -> None:
    r = row(full_record())
    assert set(r) == {name for name, _ in SCHEMA}  # every column filled; settle is internal, not exported
    assert r["cdr_id"] == "00000000-0000-0000-0000-000000000001"
    assert r["invite_at"] == "2026-11-22T12:00:00.250000+00:00"
    assert (r["customer_price"], r["vendor_rate"], r["margin"]) == ("0.020000", "0.004", "0.015933")
    assert (r["sip_code"], r["pdd_ms"], r["q850_cause"], r["hangup_side"]) == (200, 1250, 16, "caller")
    assert json.loads(r["attempts"])[0]["vendor"] == "v" and json.loads(r["trace"]) == {"snapshot": "abc"}
    json.dumps(r)  # nothing that insert_rows_json could not send


def test_a_refused_call_leaves_its_unknown_fields_out() -> None:
    refused = CdrRecord(cdr_id=uuid.uuid4(), call_id="c", node="n", invite_at=T0, sip_code=403,
                        sip_reason="No customer rate", q850_cause=57, hangup_side="proxy")
    r = row(refused)
    assert "answer_at" not in r and "customer_price" not in r and "provider_id" not in r
    assert (r["sip_code"], r["q850_cause"], r["duration_s"]) == (403, 57, 0)


def test_money_is_never_turned_into_a_float() -> None:
    r = row(CdrRecord(cdr_id=uuid.uuid4(), call_id="c", node="n", invite_at=T0, sip_code=200,
                      customer_price=Decimal("1E-6")))
    assert r["customer_price"] == "0.000001"


def test_a_batch_is_sent_in_chunks_with_the_cdr_id_as_insert_id() -> None:
    client = RecordingClient()
    sink = BigQuerySink(TABLE, client=client, max_rows=2)
    assert sink.write([full_record(n) for n in range(1, 6)]) == 5
    assert [len(rows) for _, rows, _ in client.calls] == [2, 2, 1]
    assert all(table == TABLE for table, _, _ in client.calls)
    assert [ids for _, _, ids in client.calls][0] == [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))]


def test_refused_rows_fail_the_batch_so_it_is_not_acknowledged() -> None:
    sink = BigQuerySink(TABLE, client=RecordingClient(refuse=1))
    with pytest.raises(BigQueryError, match="1 of 1 rows refused"):
        sink.write([full_record()])


def test_the_emitter_batches_for_bigquery_as_for_postgres_and_retries_a_refused_batch() -> None:
    entries = [(f"{n}-0", full_record(n).to_fields()) for n in range(1, 6)]
    stream = MemoryStream([], entries)
    client = RecordingClient(refuse=1)
    emitter = Emitter(stream, BigQuerySink(TABLE, client=client), "c", batch_size=2, batch_seconds=0.05,
                      min_backoff_s=0.001)
    emitter.run(lambda: len(stream.acked) == 5)
    # the first batch was refused once and sent again with the same insert ids; nothing acked before
    sent = [ids for _, _, ids in client.calls]
    assert sent[0] == sent[1] and [len(s) for s in sent] == [2, 2, 2, 1]
    assert stream.acked == [f"{n}-0" for n in range(1, 6)]
