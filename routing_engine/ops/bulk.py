"""Bulk loads of the large reference tables: ported numbers (LNP) and NPA-NXX homes.

CSV in, COPY into a temporary table, one upsert into the real table, all in one transaction:
a file with a bad row changes nothing, and the error names the line.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

_TN = re.compile(r"^1?[2-9]\d{9}$")
_NPANXX = re.compile(r"^[2-9]\d{2}[2-9]\d{2}$")


class BulkError(ValueError):
    pass


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    key: str


LNP = Table("routing.lnp", ("tn", "lrn"), "tn")
NPANXX = Table("routing.npanxx", ("npanxx", "country", "state", "lata", "ocn", "rate_center"), "npanxx")


def _nanp(value: str, line: int, what: str) -> str:
    digits = value.strip().lstrip("+")
    if not _TN.match(digits):
        raise BulkError(f"line {line}: {what} {value!r} is not a 10- or 11-digit NANP number")
    return digits if len(digits) == 11 else "1" + digits


def lnp_rows(path: Path) -> Iterator[tuple[str, ...]]:
    """tn,lrn per line (header optional); numbers with or without the leading 1 or '+'."""
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or (line == 1 and row[0].strip().lower() == "tn"):
                continue
            if len(row) < 2:
                raise BulkError(f"line {line}: expected tn,lrn")
            yield _nanp(row[0], line, "tn"), _nanp(row[1], line, "lrn")


def npanxx_rows(path: Path) -> Iterator[tuple[str | None, ...]]:
    """npanxx,country,state,lata,ocn,rate_center per line (header optional)."""
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or (line == 1 and row[0].strip().lower() == "npanxx"):
                continue
            if len(row) < 3:
                raise BulkError(f"line {line}: expected npanxx,country,state[,lata,ocn,rate_center]")
            npanxx = row[0].strip()
            if not _NPANXX.match(npanxx):
                raise BulkError(f"line {line}: {npanxx!r} is not an NPA-NXX")
            if not row[2].strip():
                raise BulkError(f"line {line}: state is empty")
            rest = [c.strip() or None for c in row[3:6]] + [None] * (6 - max(len(row), 3))
            yield (npanxx, row[1].strip() or "US", row[2].strip(), *rest[:3])


def load(conn: psycopg.Connection, table: Table, rows: Iterator[tuple[str | None, ...]]) -> int:
    """Upsert every row in one transaction; returns the number of rows in the file."""
    cols = ", ".join(table.columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c != table.key)
    count = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE bulk_in (LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DROP")
        with cur.copy(f"COPY bulk_in ({cols}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                count += 1
        cur.execute(f"INSERT INTO {table.name} ({cols}) SELECT DISTINCT ON ({table.key}) {cols} FROM bulk_in"
                    f" ORDER BY {table.key} ON CONFLICT ({table.key}) DO UPDATE SET {updates}, updated_at = now()")
    return count
