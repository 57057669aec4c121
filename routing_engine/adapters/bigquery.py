"""BigQuery sink: the same CDR batches the Postgres sink writes, streamed into a BigQuery table.

Off unless ``cdr.bigquery_table`` (project.dataset.table) is set; needs the optional extra
(``pip install '.[bigquery]'``) and Google credentials found the usual way
(GOOGLE_APPLICATION_CREDENTIALS, workload identity). It runs as its own emitter on its own
consumer group of the CDR stream, so a BigQuery outage holds up only BigQuery: its batches
stay pending and are retried with backoff, and Postgres keeps being written.

Rows go through ``insert_rows_json`` in chunks of at most ``max_rows`` (BigQuery's advice for
streaming inserts is about 500 rows per request), each with the CDR id as ``insertId``, so a
batch retried after a crash or a partial failure is de-duplicated by BigQuery (best effort,
within its de-duplication window). The table's schema is ``SCHEMA`` below.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from routing_engine.domain.cdr import CdrRecord

# (column, BigQuery type): create the table with these (partition it by DAY on invite_at)
SCHEMA: tuple[tuple[str, str], ...] = (
    ("cdr_id", "STRING"), ("call_id", "STRING"), ("node", "STRING"), ("direction", "STRING"),
    ("account_id", "STRING"), ("ban", "STRING"), ("trunk_id", "STRING"), ("provider_id", "STRING"),
    ("gateway", "STRING"), ("from_raw", "STRING"), ("to_raw", "STRING"), ("from_e164", "STRING"),
    ("to_e164", "STRING"), ("lrn", "STRING"), ("lrn_source", "STRING"), ("jurisdiction", "STRING"),
    ("invite_at", "TIMESTAMP"), ("ringing_at", "TIMESTAMP"), ("answer_at", "TIMESTAMP"),
    ("end_at", "TIMESTAMP"), ("pdd_ms", "INT64"), ("duration_s", "INT64"), ("billable_s", "INT64"),
    ("customer_rate", "NUMERIC"), ("customer_price", "NUMERIC"), ("vendor_rate", "NUMERIC"),
    ("vendor_cost", "NUMERIC"), ("margin", "NUMERIC"), ("sip_code", "INT64"), ("sip_reason", "STRING"),
    ("q850_cause", "INT64"), ("hangup_side", "STRING"), ("attempts", "JSON"), ("trace", "JSON"),
)
_COLUMNS = tuple(name for name, _ in SCHEMA)


class BigQueryError(RuntimeError):
    """BigQuery refused rows of a batch: the batch is not acknowledged and is sent again."""


def row(record: CdrRecord) -> dict[str, Any]:
    """A CDR as a JSON row for ``insert_rows_json``: ids as strings, times in ISO 8601 UTC,
    money as exact decimal strings (NUMERIC), trace and attempts as JSON text; no nulls."""
    out: dict[str, Any] = {}
    for column in _COLUMNS:
        value = getattr(record, column)
        if value is None:
            continue
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = format(value, "f")
        out[column] = value
    return out


class BigQuerySink:
    name = "bigquery"

    def __init__(self, table: str, client: Any = None, max_rows: int = 500) -> None:
        self.table = table
        self.max_rows = max_rows
        self._client = client

    def _bigquery(self) -> Any:
        if self._client is None:
            from google.cloud import bigquery

            self._client = bigquery.Client(project=self.table.split(".", 1)[0])
        return self._client

    def write(self, records: list[CdrRecord]) -> int:
        rows = [row(r) for r in records]
        client = self._bigquery()
        for start in range(0, len(rows), self.max_rows):
            chunk = rows[start:start + self.max_rows]
            errors = client.insert_rows_json(self.table, chunk, row_ids=[r["cdr_id"] for r in chunk])
            if errors:
                raise BigQueryError(f"{self.table}: {len(errors)} of {len(chunk)} rows refused, e.g. {errors[0]}")
        return len(rows)
