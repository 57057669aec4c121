"""Deck rows: the CSV format of rate decks and the check of every row.

Columns are found by header name (case, spaces and dashes ignored; aliases below) or through a
per-request ``mapping`` {field: header}. A row becomes a tuple for COPY only if every value in
it is valid; otherwise each problem is reported with its line, and reading goes on so that one
answer names them all (up to MAX_ERRORS).

    prefix [code, dial_code, destination_code]   E.164 digits, 1-15          } one of
    npanxx [npa_nxx]                              6 digits, stored as 1NPANXX }
    rate [default_rate]                  per minute; if absent, the indeterminate rate
    interstate, intrastate, indeterminate [also with _rate]
    effective_date [effective_at, effective]      ISO date or date-time (UTC if no zone)
    end_date [ends_at], description               optional
    initial_increment [first_increment], subsequent_increment [next_increment, additional_increment],
    min_duration [min_duration_s, minimum_duration], connection_fee [setup_fee]
                                         how the row is billed; empty: a vendor deck's row is billed
                                         per second (1, 1, 0, 0), a price list's per minute (60, 60, 0, 0)

Rows follow each other by effective date: a row with a later effective date for a prefix
supersedes the earlier one from that moment on (no end date needed), so a rate change is one more
row, in the same file or merged in later. Only two rows of one prefix and moment conflict.

Money has at most 6 decimals (a seventh would be rounding someone's money) and no sign.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

MAX_ERRORS = 1000

_PREFIX = re.compile(r"[0-9]{1,15}")
_NPANXX = re.compile(r"[2-9][0-9]{2}[2-9][0-9]{2}")
_MONEY = re.compile(r"(?:[0-9]{1,6}(?:\.[0-9]{0,6})?|\.[0-9]{1,6})")
_MONEY_LOOSE = re.compile(r"[+-]?[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]+)?")
_INT = re.compile(r"[0-9]{1,4}")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ufffd]")  # U+FFFD: bytes that were not UTF-8


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


def _billing(increment: int) -> tuple[Column, ...]:
    """The billing terms of a row; ``increment`` is the deck's default first and next increment."""
    return (
        Column("initial_increment", ("initial_increment", "first_increment"), "int", "integer",
               "initial_increment", increment),
        Column("subsequent_increment", ("subsequent_increment", "next_increment", "additional_increment"), "int",
               "integer", "subsequent_increment", increment),
        Column("min_duration", ("min_duration", "min_duration_s", "minimum_duration"), "int", "integer",
               "min_duration_s", 0),
        Column("connection_fee", ("connection_fee", "setup_fee"), "money", "numeric(12,6)", "connection_fee", 0),
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


VENDOR_DECK = Deck("routing.rates", "provider_id", "routing.providers", "vendor", "vendor_rates",
                   _COMMON + _billing(1))
PLAN_DECK = Deck("billing.rate_plan_rates", "rate_plan_id", "billing.rate_plans", "rate plan", "rate_plan_rates",
                 _COMMON + _billing(60))


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
            parsed.astimezone(UTC)  # beyond years 1-9999 in UTC: Postgres stores it, nobody reads it back
    except (ValueError, OverflowError):
        parsed = None
    if len(cache) < 10000:
        cache[text] = parsed
    return parsed


def _money_problem(text: str) -> str:
    if "\ufffd" in text:
        return "bytes that are not UTF-8"
    if text.startswith("-"):
        return "negative"
    if _MONEY_LOOSE.fullmatch(text) and "." in text and len(text.split(".")[1]) > 6:
        return "more than 6 decimal places"
    return "not a decimal amount (e.g. 0.0125)"


def checked_rows(deck: Deck, records: Iterator[Sequence[str]], where: Callable[[int], int], columns: dict[str, int],
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
                    report.add_error(line, column.name, "longer than 200 characters, or control characters,"
                                                        " or bytes that are not UTF-8")
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


class Unreadable(Exception):
    """The file cannot be read past this point (not CSV, a field too large)."""


def guarded(records: Iterator[Sequence[str]], where: Callable[[int], int],
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
            raise Unreadable from exc
