"""Rates by effective date and vendor billing terms, through Postgres: a deck edit the way decks
are written (one more row, later effective date) is published and takes over at its moment, with
the vendor's billing terms; only two rows of one prefix and moment are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from routing_engine.adapters.snapshots import SnapshotStore
from routing_engine.companion.publisher import build_and_publish
from routing_engine.domain.rating import Terms
from routing_engine.entrypoints.api import decks
from routing_engine.ops import demo
from routing_engine.settings import Settings

NUMBER = "44"  # the prefix itself: the demo has longer 44... prefixes too


def a_vendor_selling(db: psycopg.Connection, prefix: str) -> tuple[UUID, Decimal]:
    row = db.execute("SELECT provider_id, rate FROM routing.rates WHERE prefix = %s ORDER BY provider_id LIMIT 1",
                     (prefix,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_a_future_dated_row_merged_into_a_deck_is_published_and_takes_over_at_its_moment(
        db: psycopg.Connection, settings: Settings, tmp_path: Path) -> None:
    demo.load(db)
    vendor, today = a_vendor_selling(db, "44")
    change = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    report = decks.import_vendor_deck(db, vendor, iter([
        ["prefix", "rate", "effective_date", "initial_increment", "subsequent_increment", "min_duration",
         "connection_fee"],
        ["44", "0.031", change.isoformat(), "60", "60", "30", "0.0100"]]), mode="merge")
    assert report.ok, report.errors
    assert db.execute("SELECT count(*) FROM routing.rates WHERE provider_id = %s AND prefix = '44'"
                      " AND ends_at IS NULL", (vendor,)).fetchone() == (2,)  # nobody closed the old row
    store = SnapshotStore(tmp_path)
    assert build_and_publish(settings, db, store) is not None  # valid, published
    published = store.current()
    assert published is not None
    mapped = store.load(published.version)  # what the SIP workers read
    before = mapped.rates_for(frozenset({vendor}), NUMBER, change - timedelta(seconds=1))[vendor]
    after = mapped.rates_for(frozenset({vendor}), NUMBER, change)[vendor]
    assert (before.rate, before.terms) == (today, Terms())  # the demo's row: per second
    assert (after.rate, after.terms) == (Decimal("0.031"), Terms(60, 60, 30, Decimal("0.01")))


def test_two_rows_of_one_prefix_and_moment_are_refused_and_the_deck_stays(db: psycopg.Connection) -> None:
    demo.load(db)
    vendor, today = a_vendor_selling(db, "44")
    report = decks.import_vendor_deck(db, vendor, iter([
        ["prefix", "rate", "effective_date"], ["44", "0.02", "2027-01-01"], ["44", "0.03", "2027-01-01"]]),
        mode="merge")
    assert not report.ok and "repeats line 2" in str(report.errors[0])
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute("INSERT INTO routing.rates (provider_id, prefix, rate, effective_at)"
                   " SELECT provider_id, prefix, 0.02, effective_at FROM routing.rates"
                   " WHERE provider_id = %s AND prefix = '44'", (vendor,))
    assert db.execute("SELECT rate FROM routing.rates WHERE provider_id = %s AND prefix = '44'",
                      (vendor,)).fetchall() == [(today,)]


def test_vendor_billing_terms_outside_what_can_be_billed_are_refused_by_the_schema(db: psycopg.Connection) -> None:
    demo.load(db)
    vendor, _ = a_vendor_selling(db, "44")
    for column, value in (("initial_increment", 0), ("subsequent_increment", 0), ("min_duration_s", -1),
                          ("connection_fee", -0.01)):
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute(f"UPDATE routing.rates SET {column} = %s WHERE provider_id = %s", (value, vendor))
