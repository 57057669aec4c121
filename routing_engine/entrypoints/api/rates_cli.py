"""``warp rates import``: load a vendor deck or a customer price list from CSV, with progress.

    warp rates import --vendor NAME FILE.csv [--mode replace|merge] [--map FIELD=COLUMN ...]
                      [--effective-at 2026-12-01T00:00Z]
    warp rates import --rate-plan NAME FILE.csv ...

Same validation and semantics as the API's import (routing_engine.entrypoints.api.decks): one transaction,
any bad line is reported (``line N: column: problem``) and nothing changes. Exit status 0 when
imported, 1 when the file was refused, 2 for a usage error (unknown vendor, bad option).
"""

from __future__ import annotations

import argparse
import csv
import getpass
import io
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO

from psycopg import sql

from routing_engine.adapters import postgres
from routing_engine.entrypoints.api import decks
from routing_engine.settings import SettingsError, load_settings

SHOWN_ERRORS = 20


class ProgressBar:
    """``[#######-----]  58%  580,000 rows  9.1 s`` on stderr while the file is read, redrawn at
    most 5 times a second (on a terminal; elsewhere one line per 10%), then a line when the
    database work starts."""

    def __init__(self, total_bytes: int, position: Callable[[], int], out: IO[str] | None = None) -> None:
        self.total = max(total_bytes, 1)
        self.position = position
        self.out = out or sys.stderr
        self.tty = self.out.isatty()
        self.started = time.monotonic()
        self.rows = 0
        self._drawn = 0.0
        self._decile = -1

    def __call__(self, rows: int) -> None:
        self.rows = rows
        self._draw(done=False)

    def stage(self, name: str) -> None:
        self._draw(done=True)
        self.out.write(f"file read and valid; {name} in one transaction ...\n")
        self.out.flush()

    def _draw(self, done: bool) -> None:
        now = time.monotonic()
        share = 1.0 if done else min(self.position() / self.total, 1.0)
        line = f"{share:4.0%}  {self.rows:,} rows  {now - self.started:.1f} s"
        if self.tty:
            if not done and now - self._drawn < 0.2:
                return
            self._drawn = now
            filled = int(share * 30)
            self.out.write(f"\r[{'#' * filled}{'-' * (30 - filled)}] {line}" + ("\n" if done else ""))
        else:
            decile = int(share * 10)
            if decile == self._decile:
                return
            self._decile = decile
            self.out.write(line + "\n")
        self.out.flush()


def _mapping(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field or not column:
            raise ValueError(f"--map expects FIELD=COLUMN, got {pair!r}")
        out[field.strip()] = column.strip()
    return out


def _when(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warp rates", description="rate decks and price lists from CSV")
    parser.add_argument("--config", help="settings file (default: $WARP_CONFIG or config/warp.yaml)")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("import", help="replace (or merge into) a deck from a CSV file")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--vendor", help="vendor name (routing.providers)")
    target.add_argument("--rate-plan", help="customer rate plan name (billing.rate_plans)")
    p.add_argument("file", help="CSV with a header row")
    p.add_argument("--mode", choices=["replace", "merge"], default="replace",
                   help="replace: the deck becomes exactly the file (default); merge: add/replace rows")
    p.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="the file's column for a field, e.g. --map prefix='Dial Code' (repeatable)")
    p.add_argument("--effective-at", help="ISO time for rows without an effective date (default: now)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        mapping = _mapping(args.map)
        effective = _when(args.effective_at)
    except (SettingsError, ValueError) as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 2
    deck, name = (decks.VENDOR_DECK, args.vendor) if args.vendor else (decks.PLAN_DECK, args.rate_plan)
    try:
        raw = open(args.file, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"warp: {exc}", file=sys.stderr)
        return 2
    with raw, postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
        row = conn.execute(sql.SQL("SELECT id FROM {} WHERE name = %s AND deleted_at IS NULL").format(
            sql.Identifier(*deck.owner_table.split("."))), (name,)).fetchone()
        if row is None:
            print(f"warp: no {deck.entity} named {name!r}", file=sys.stderr)
            return 2
        bar = ProgressBar(os.fstat(raw.fileno()).st_size, raw.tell)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        try:
            report = decks.import_deck(conn, deck, row[0], csv.reader(text), mapping, mode=args.mode,
                                       effective_at=effective, actor=f"cli:{getpass.getuser()}", progress=bar,
                                       stage=bar.stage)
        except decks.DeckError as exc:
            print(f"warp: {exc}", file=sys.stderr)
            return 2
    if not report.ok:
        if bar.tty:
            sys.stderr.write("\n")
        for error in report.errors[:SHOWN_ERRORS]:
            print(f"warp: {args.file}: {error}", file=sys.stderr)
        if report.error_count > SHOWN_ERRORS:
            print(f"warp: ... and {report.error_count - SHOWN_ERRORS} more", file=sys.stderr)
        print(f"warp: {report.error_count} problems in {args.file}; nothing was imported", file=sys.stderr)
        return 1
    replaced = f" (replaced {report.replaced:,} earlier rows)" if args.mode == "replace" else ""
    print(f"warp: {report.applied:,} rates loaded into {report.target}{replaced} in {report.seconds:.1f} s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
