"""Decks: bulk import of rate decks from CSV — vendor decks (routing.rates) and customer rate
plans (billing.rate_plan_rates).

A file is validated row by row (every problem named with its line), streamed with COPY into a
temporary table, checked for duplicate keys there, and only then applied, all in one
transaction: a file with any error changes nothing.

Columns, found by header name (case and spaces ignored; aliases in brackets), or through a
per-request ``mapping`` {field: header}:

    prefix [code, dial_code, destination_code]  E.164 digits, 1-15     } one of the two
    npanxx [npa_nxx]                             6 digits, stored as 1NPANXX }
    rate [default_rate]                  per-minute price; if absent, the indeterminate rate
    interstate [interstate_rate], intrastate [intrastate_rate], indeterminate [indeterminate_rate]
    effective_date [effective_at, effective]    ISO date or date-time (UTC if no zone);
                                                 missing: the request's effective_at, else now
    end_date [ends_at]                           optional
    description                                  optional
    customer plans also: initial_increment, subsequent_increment, min_duration, connection_fee

Money has at most 6 decimals (a seventh would be rounding someone's money) and no sign.

Modes: ``replace`` (default) — after the import the deck is exactly the file: every earlier row
of that vendor or plan is deleted in the same transaction. ``merge`` — rows of the file are
added, and a row with the same prefix and effective date as an existing one replaces it.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg import sql

from routing_engine.api import audit

MAX_ERRORS = 1000
Mode = Literal["replace", "merge"]

_PREFIX = re.compile(r"[0-9]{1,15}")
_NPANXX = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{2}")
_MONEY = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})")
_MONEY_LOOSE = re.compile(r"[+-]?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]+)?")
_INT = re.compile(r"[0-9]{1,4}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class DeckError(ValueError):
    """A problem with the request itself (unknown owner, bad mapping), not with a row."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    column: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.column}: {self.problem}"


@dataclass
class ImportReport:
    target: str                 # "vendor alpha" / "rate plan retail"
    mode: str
    rows: int = 0               # data rows read
    applied: int = 0            # rows written
    replaced: int = 0           # earlier rows deleted (replace mode)
    seconds: float = 0.0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0        # all errors, also those past MAX_ERRORS

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def add_error(self, line: int, column: str, problem: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(RowError(line, column, problem))


@dataclass(frozen=True)
class Column:
    name: str                           # field name (and temp-table column)
    aliases: tuple[str, ...]
    kind: str                           # money | int | text | date
    sql_type: str
    db_column: str
    default: int | None = None          # for NOT NULL columns the file may leave empty


_COMMON = (
    Column("description", ("description",), "text", "text", "description"),
    Column("rate", ("rate", "default_rate"), "money", "numeric(12,6)", "rate"),
    Column("interstate", ("interstate", "interstate_rate"), "money", "numeric(12,6)", "interstate_rate"),
    Column("intrastate", ("intrastate", "intrastate_rate"), "money", "numeric(12,6)", "intrastate_rate"),
    Column("indeterminate", ("indeterminate", "indeterminate_rate"), "money", "numeric(12,6)",
           "indeterminate_rate"),
    Column("end_date", ("end_date", "ends_at"), "date", "timestamptz", "ends_at"),
)
_PLAN_EXTRA = (
    Column("initial_increment", ("initial_increment",), "int", "integer", "initial_increment", 60),
    Column("subsequent_increment", ("subsequent_increment",), "int", "integer", "subsequent_increment", 60),
    Column("min_duration", ("min_duration", "min_duration_s"), "int", "integer", "min_duration_s", 0),
    Column("connection_fee", ("connection_fee",), "money", "numeric(12,6)", "connection_fee", 0),
)
_KEY_ALIASES = {"prefix": ("prefix", "code", "dial_code", "destination_code"), "npanxx": ("npanxx", "npa_nxx"),
                "effective_date": ("effective_date", "effective_at", "effective")}


@dataclass(frozen=True)
class Deck:
    """Where a deck goes: the table, the column naming its owner, and the optional columns."""

    table: str
    owner_column: str
    owner_table: str
    entity: str
    audit_entity: str
    columns: tuple[Column, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return (*_KEY_ALIASES, *(c.name for c in self.columns))


VENDOR_DECK = Deck("routing.rates", "provider_id", "routing.providers", "vendor", "vendor_rates", _COMMON)
PLAN_DECK = Deck("billing.rate_plan_rates", "rate_plan_id", "billing.rate_plans", "rate plan", "rate_plan_rates",
                 _COMMON + _PLAN_EXTRA)


def _norm(header: str) -> str:
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def resolve_columns(deck: Deck, header: Sequence[str], mapping: Mapping[str, str],
                    report: ImportReport) -> dict[str, int]:
    """Field -> column index, from the mapping first, then by name and alias."""
    positions = {_norm(h): i for i, h in enumerate(header)}
    unknown = sorted(set(mapping) - set(deck.fields))
    if unknown:
        raise DeckError(f"mapping names unknown fields {unknown}; known: {', '.join(deck.fields)}")
    aliases = {**_KEY_ALIASES, **{c.name: c.aliases for c in deck.columns}}
    found: dict[str, int] = {}
    for name in deck.fields:
        if name in mapping:
            wanted = _norm(mapping[name])
            if wanted not in positions:
                report.add_error(1, mapping[name], f"mapped column for {name} is not in the header")
                continue
            found[name] = positions[wanted]
            continue
        for alias in aliases[name]:
            if alias in positions:
                found[name] = positions[alias]
                break
    if ("prefix" in found) == ("npanxx" in found):
        report.add_error(1, "prefix", "the header needs exactly one of prefix (or code) and npanxx")
    if not {"rate", "indeterminate"} & set(found):
        report.add_error(1, "rate", "the header needs a rate (or indeterminate) column")
    return found


def _date(text: str, cache: dict[str, datetime | None]) -> datetime | None:
    if text in cache:
        return cache[text]
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        else:
            parsed = datetime.fromisoformat(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
    except ValueError:
        parsed = None
    if len(cache) < 10000:
        cache[text] = parsed
    return parsed


def _money_problem(text: str) -> str:
    if text.startswith("-"):
        return "negative"
    if _MONEY_LOOSE.fullmatch(text) and "." in text and len(text.split(".")[1]) > 6:
        return "more than 6 decimal places"
    return "not a decimal amount (e.g. 0.0125)"


def _rows(deck: Deck, records: Iterator[Sequence[str]], where: Callable[[int], int], columns: dict[str, int],
          default_effective: datetime, report: ImportReport) -> Iterator[tuple[Any, ...]]:
    """Validated rows as tuples for COPY: (line, prefix, effective_at, *deck columns)."""
    dates: dict[str, datetime | None] = {}
    key_field = "prefix" if "prefix" in columns else "npanxx"
    key_at = columns.get(key_field, 0)
    eff_at = columns.get("effective_date")
    optional = [(c, columns[c.name]) for c in deck.columns if c.name in columns]
    width = max(columns.values(), default=0) + 1
    for index, record in enumerate(records, start=2):
        line = where(index)
        if not any(record):
            continue
        report.rows += 1
        if len(record) < width:
            record = [*record, *[""] * (width - len(record))]
        bad = False
        key = record[key_at].strip()
        if key_field == "prefix":
            if not _PREFIX.fullmatch(key):
                report.add_error(line, "prefix", f"{key[:20]!r} is not 1-15 digits")
                bad = True
        elif _NPANXX.fullmatch(key):
            key = "1" + key
        else:
            report.add_error(line, "npanxx", f"{key[:20]!r} is not an NPA-NXX (6 digits, NXX not 0/1)")
            bad = True
        effective = default_effective
        if eff_at is not None and record[eff_at].strip():
            parsed = _date(record[eff_at].strip(), dates)
            if parsed is None:
                report.add_error(line, "effective_date", "not an ISO date (e.g. 2026-12-01 or 2026-12-01T00:00Z)")
                bad = True
            else:
                effective = parsed
        values: dict[str, Any] = {}
        for column, at in optional:
            text = record[at].strip()
            if not text:
                continue
            if column.kind == "money":
                if not _MONEY.fullmatch(text):
                    report.add_error(line, column.name, _money_problem(text))
                    bad = True
                values[column.name] = text
            elif column.kind == "int":
                if not _INT.fullmatch(text) or not (column.name == "min_duration" or int(text) > 0):
                    report.add_error(line, column.name, "not a whole number of seconds (1-9999)")
                    bad = True
                values[column.name] = text
            elif column.kind == "date":
                parsed = _date(text, dates)
                if parsed is None:
                    report.add_error(line, column.name, "not an ISO date")
                    bad = True
                elif parsed <= effective:
                    report.add_error(line, column.name, "must be after the effective date")
                    bad = True
                values[column.name] = parsed
            else:
                if len(text) > 200 or _CONTROL.search(text):
                    report.add_error(line, column.name, "longer than 200 characters or has control characters")
                    bad = True
                values[column.name] = text
        if "rate" not in values:
            if "indeterminate" in values:
                values["rate"] = values["indeterminate"]
            else:
                report.add_error(line, "rate", "missing")
                bad = True
        if bad or report.error_count:
            continue  # keep reading to report every problem, but stop feeding COPY
        yield (line, key, effective, *(values.get(c.name) for c in deck.columns))


def import_deck(conn: psycopg.Connection, deck: Deck, owner_id: UUID, rows_iter: Iterable[Sequence[str]],
                mapping: Mapping[str, str] | None = None, *, mode: Mode = "replace",
                effective_at: datetime | None = None, actor: str = "cli", request_id: str | None = None,
                progress: Callable[[int], None] | None = None) -> ImportReport:
    """Validate and apply a deck atomically. ``rows_iter`` yields CSV records, the header first
    (a ``csv.reader`` gives physical line numbers in errors; other iterables count records)."""
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
                for count, row in enumerate(_rows(deck, _guarded(records, where, report), where, columns,
                                                  default_effective, report), start=1):
                    copy.write_row(row)
                    if progress is not None and count % 10000 == 0:
                        progress(count)
            except _Unreadable:
                pass
        if report.ok:
            for prefix, effective, lines in conn.execute(
                    "SELECT prefix, effective_at, array_agg(line ORDER BY line) FROM deck_in"
                    " GROUP BY prefix, effective_at HAVING count(*) > 1 ORDER BY min(line) LIMIT %s", (MAX_ERRORS,)):
                for line in lines[1:]:
                    report.add_error(line, "prefix", f"{prefix} effective {effective.isoformat()} repeats line {lines[0]}")
        if not report.ok:
            raise psycopg.Rollback()  # leaves the with-block; nothing of the file stays
        report.applied, report.replaced, before = _apply(conn, deck, owner_id, mode)
        audit.record(conn, actor, "import", deck.audit_entity, owner_id, {"rows": before},
                     {"rows_in_file": report.rows, "applied": report.applied, "replaced": report.replaced,
                      "mode": mode}, request_id=request_id)
    report.seconds = round(time.monotonic() - started, 3)
    if progress is not None:
        progress(report.rows)
    return report


class _Unreadable(Exception):
    pass


def _guarded(records: Iterator[Sequence[str]], where: Callable[[int], int],
             report: ImportReport) -> Iterator[Sequence[str]]:
    index = 1
    while True:
        index += 1
        try:
            yield next(records)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as exc:
            report.add_error(where(index), "file", f"unreadable from here on: {exc}")
            raise _Unreadable from exc


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
    conflict = sql.SQL("")
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
