"""Decks: bulk import of rate decks from CSV — vendor decks (routing.rates) and customer price
lists (billing.rate_plan_rates) — all or nothing.

The file is checked row by row (deck_rows: the columns, and every problem named with its line),
streamed with COPY into a temporary table, checked there for duplicate keys, and only then
applied, in one transaction: a file with any error changes nothing, and readers see the old deck
until the commit. The owner's row is locked, so two imports of one deck wait for each other.

Modes: ``replace`` (default) — after the import the deck is exactly the file: every earlier row
of that vendor or price list is deleted in the same transaction. ``merge`` — rows of the file
are added, and a row with the same prefix and effective date as an existing one replaces it.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg import sql

from routing_engine.entrypoints.api import audit
from routing_engine.entrypoints.api.deck_rows import (
    MAX_ERRORS,
    PLAN_DECK,
    VENDOR_DECK,
    Deck,
    DeckError,
    ImportReport,
    RowError,
    Unreadable,
    checked_rows,
    guarded,
    resolve_columns,
)

__all__ = ["PLAN_DECK", "VENDOR_DECK", "Deck", "DeckError", "ImportReport", "RowError", "import_deck",
           "import_rate_plan", "import_vendor_deck"]
Mode = Literal["replace", "merge"]


def import_deck(conn: psycopg.Connection, deck: Deck, owner_id: UUID, rows_iter: Iterable[Sequence[str]],
                mapping: Mapping[str, str] | None = None, *, mode: Mode = "replace",
                effective_at: datetime | None = None, actor: str = "cli", request_id: str | None = None,
                progress: Callable[[int], None] | None = None,
                stage: Callable[[str], None] | None = None) -> ImportReport:
    """Validate and apply a deck atomically. ``rows_iter`` yields CSV records, the header first
    (a ``csv.reader`` gives physical line numbers in errors; other iterables count records).
    ``progress`` hears the number of rows read every 10,000 rows; ``stage`` hears "writing" when
    the file is read and valid and the database work starts."""
    started = time.monotonic()
    if mode not in ("replace", "merge"):
        raise DeckError(f"mode must be replace or merge, not {mode!r}")
    records = iter(rows_iter)
    line_num = getattr(rows_iter, "line_num", None)

    def where(index: int) -> int:
        return int(getattr(rows_iter, "line_num", index)) if line_num is not None else index

    with conn.transaction():
        owner = conn.execute(sql.SQL("SELECT name FROM {} WHERE id = %s AND deleted_at IS NULL FOR UPDATE").format(
            sql.Identifier(*deck.owner_table.split("."))), (owner_id,)).fetchone()
        if owner is None:
            raise DeckError(f"no such {deck.entity} {owner_id}")
        report = ImportReport(f"{deck.entity} {owner[0]}", mode)
        try:
            header = next(records)
        except StopIteration:
            report.add_error(1, "header", "the file is empty")
            return report
        except (csv.Error, UnicodeDecodeError) as exc:
            report.add_error(1, "header", f"unreadable: {exc}")
            return report
        columns = resolve_columns(deck, header, mapping or {}, report)
        if not report.ok:
            return report
        names = ["line", "prefix", "effective_at", *(c.name for c in deck.columns)]
        types = ["integer", "text", "timestamptz", *(c.sql_type for c in deck.columns)]
        conn.execute(sql.SQL("CREATE TEMP TABLE deck_in ({}) ON COMMIT DROP").format(sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in zip(names, types, strict=True))))
        default_effective = effective_at or datetime.now(UTC)
        with conn.cursor() as cur, cur.copy(sql.SQL("COPY deck_in ({}) FROM STDIN").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in names))) as copy:
            try:
                for count, row in enumerate(checked_rows(deck, guarded(records, where, report), where, columns,
                                                  default_effective, report), start=1):
                    copy.write_row(row)
                    if progress is not None and count % 10000 == 0:
                        progress(count)
            except Unreadable:
                pass
        if progress is not None:
            progress(report.rows)
        if report.ok:
            for prefix, effective, lines in conn.execute(
                    "SELECT prefix, effective_at, array_agg(line ORDER BY line) FROM deck_in"
                    " GROUP BY prefix, effective_at HAVING count(*) > 1 ORDER BY min(line) LIMIT %s", (MAX_ERRORS,)):
                for line in lines[1:]:
                    report.add_error(line, "prefix",
                                     f"{prefix} effective {effective.isoformat()} repeats line {lines[0]}")
        if not report.ok:
            raise psycopg.Rollback()  # leaves the with-block; nothing of the file stays
        if stage is not None:
            stage("writing")
        report.applied, report.replaced, before = _apply(conn, deck, owner_id, mode)
        audit.record(conn, actor, "import", deck.audit_entity, owner_id, {"rows": before},
                     {"rows_in_file": report.rows, "applied": report.applied, "replaced": report.replaced,
                      "mode": mode}, request_id=request_id)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _apply(conn: psycopg.Connection, deck: Deck, owner_id: UUID, mode: Mode) -> tuple[int, int, int]:
    table = sql.Identifier(*deck.table.split("."))
    owner = sql.Identifier(deck.owner_column)
    before_row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(table, owner),
                              (owner_id,)).fetchone()
    before = int(before_row[0]) if before_row else 0
    replaced = 0
    if mode == "replace":
        replaced = conn.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(table, owner), (owner_id,)).rowcount
    targets = [owner, sql.Identifier("prefix"), sql.Identifier("effective_at"),
               *(sql.Identifier(c.db_column) for c in deck.columns)]
    # NOT NULL columns with defaults get the default where the file left them empty
    sources = [sql.Placeholder(), sql.Identifier("prefix"), sql.Identifier("effective_at"),
               *(sql.SQL("COALESCE({}, {})").format(sql.Identifier(c.name), sql.Literal(c.default))
                 if c.default is not None else sql.Identifier(c.name) for c in deck.columns)]
    conflict: sql.Composable = sql.SQL("")
    if mode == "merge":
        conflict = sql.SQL(" ON CONFLICT ({}, prefix, effective_at) DO UPDATE SET {}, updated_at = now()").format(
            owner, sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c.db_column),
                                                                          sql.Identifier(c.db_column))
                                      for c in deck.columns))
    # in key order, so the (owner, prefix, effective_at) indexes fill sequentially: for an unsorted
    # file this halves the time
    applied = conn.execute(sql.SQL("INSERT INTO {} ({}) SELECT {} FROM deck_in ORDER BY prefix, effective_at{}").format(
        table, sql.SQL(", ").join(targets), sql.SQL(", ").join(sources), conflict), (owner_id,)).rowcount
    return applied, replaced, before


def import_vendor_deck(conn: psycopg.Connection, provider_id: UUID, rows_iter: Iterable[Sequence[str]],
                       mapping: Mapping[str, str] | None = None, **options: Any) -> ImportReport:
    """Replace (or merge into) a vendor's rate deck from CSV records; see the module doc."""
    return import_deck(conn, VENDOR_DECK, provider_id, rows_iter, mapping, **options)


def import_rate_plan(conn: psycopg.Connection, rate_plan_id: UUID, rows_iter: Iterable[Sequence[str]],
                     mapping: Mapping[str, str] | None = None, **options: Any) -> ImportReport:
    """Replace (or merge into) a customer rate plan's rates from CSV records."""
    return import_deck(conn, PLAN_DECK, rate_plan_id, rows_iter, mapping, **options)
