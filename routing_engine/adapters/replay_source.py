"""Replay source: a period's recorded calls from Postgres, a page at a time.

A day may hold millions of CDRs: they are read in pages of ``page_size`` in (invite_at, cdr_id)
order, each page its own short query from where the last one stopped (keyset paging on the
``cdrs_invite_at_cdr_id`` index), so memory holds one page and no transaction stays open.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg

from routing_engine.domain.replay import Recorded

_COLUMNS = ("cdr_id, call_id, invite_at, sip_code, direction, account_id, ban, trunk_id, provider_id,"
            " from_raw, to_raw, duration_s, customer_price, vendor_cost, lrn, lrn_source,"
            " trace->'rating'->>'prefix'")  # of the trace, only what a replay reads
_PERIOD = "invite_at >= %s AND invite_at < %s AND direction = 'outbound'"


def count(conn: psycopg.Connection, start: datetime, end: datetime) -> int:
    row = conn.execute(f"SELECT count(*) FROM cdr.cdrs WHERE {_PERIOD}", (start, end)).fetchone()
    return int(row[0]) if row else 0


def _recorded(row: tuple[Any, ...]) -> Recorded:
    return Recorded(cdr_id=row[0], call_id=row[1], invite_at=row[2], sip_code=row[3], direction=row[4],
                    account_id=row[5], ban=row[6], trunk_id=row[7], provider_id=row[8], from_raw=row[9],
                    to_raw=row[10], duration_s=row[11],
                    customer_price=Decimal(row[12]) if row[12] is not None else None,
                    vendor_cost=Decimal(row[13]) if row[13] is not None else None,
                    lrn=row[14], lrn_source=row[15], priced_at=row[16])


def pages(conn: psycopg.Connection, start: datetime, end: datetime, page_size: int = 2000) -> Iterator[list[Recorded]]:
    """The outbound CDRs of [start, end), page by page."""
    after: tuple[datetime, UUID] | None = None
    while True:
        if after is None:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM cdr.cdrs WHERE {_PERIOD}"
                                " ORDER BY invite_at, cdr_id LIMIT %s", (start, end, page_size)).fetchall()
        else:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM cdr.cdrs WHERE {_PERIOD} AND (invite_at, cdr_id) > (%s, %s)"
                                " ORDER BY invite_at, cdr_id LIMIT %s", (start, end, *after, page_size)).fetchall()
        if not rows:
            return
        yield [_recorded(r) for r in rows]
        if len(rows) < page_size:
            return
        after = (rows[-1][2], rows[-1][0])
