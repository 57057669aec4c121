"""Rates: rows of vendor decks and customer rate plans, and the upload that replaces a deck.

Shared by vendors.py (routing.rates) and rate_plans.py (billing.rate_plan_rates): the row
models, the listing filters, and ``upload()``, which runs a multipart CSV upload through
decks.import_deck and turns its report into a response — 200 with counts, or 422 naming every
bad line (nothing is applied then).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, Self
from uuid import UUID

import psycopg
from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field, model_validator

from routing_engine.entrypoints.api import decks
from routing_engine.entrypoints.api.envelope import ApiError, FieldError, invalid
from routing_engine.entrypoints.api.fields import MinSeconds, Moment, Prefix, Rate, Seconds, Text
from routing_engine.entrypoints.api.principals import Caller

MAPPING_HELP = ('JSON object naming the file\'s column for a field when the header differs, '
                'e.g. {"prefix": "Dial Code", "rate": "Price"}')
MODE_HELP = "replace: the deck becomes exactly the file; merge: rows are added or replace same prefix+date"


class RateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: Prefix = Field(description="E.164 digits without '+', e.g. 44 or 1212555")
    description: Text | None = None
    rate: Rate = Field(description="per minute; international, toll-free, and NANP when nothing else applies")
    interstate_rate: Rate | None = None
    intrastate_rate: Rate | None = None
    indeterminate_rate: Rate | None = None
    effective_at: Moment | None = Field(
        default=None, description="default: now; a later row for the prefix supersedes this one from its own")
    ends_at: Moment | None = Field(default=None, description="optional: a later row needs none")
    initial_increment: Seconds = Field(default=1, description="first billing increment (s); vendor default 1")
    subsequent_increment: Seconds = Field(default=1, description="next billing increments (s); vendor default 1")
    min_duration_s: MinSeconds = 0
    connection_fee: Rate = Field(default=Decimal(0), description="per answered call")

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        start = self.effective_at or datetime.now(UTC)
        if self.ends_at is not None and self.ends_at <= start:
            raise ValueError("ends_at must be after effective_at")
        return self

    def row(self) -> dict[str, Any]:
        out = self.model_dump()
        out["effective_at"] = self.effective_at or datetime.now(UTC)
        return out


class PlanRateCreate(RateCreate):
    initial_increment: Seconds = 60
    subsequent_increment: Seconds = 60


class VendorRate(BaseModel):
    id: UUID
    provider_id: UUID
    prefix: str
    description: str | None
    rate: Decimal
    interstate_rate: Decimal | None
    intrastate_rate: Decimal | None
    indeterminate_rate: Decimal | None
    initial_increment: int
    subsequent_increment: int
    min_duration_s: int
    connection_fee: Decimal
    effective_at: datetime
    ends_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PlanRate(BaseModel):
    id: UUID
    rate_plan_id: UUID
    prefix: str
    description: str | None
    rate: Decimal
    interstate_rate: Decimal | None
    intrastate_rate: Decimal | None
    indeterminate_rate: Decimal | None
    initial_increment: int
    subsequent_increment: int
    min_duration_s: int
    connection_fee: Decimal
    effective_at: datetime
    ends_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ImportResult(BaseModel):
    target: str
    mode: str
    rows: int = Field(description="data rows in the file")
    applied: int = Field(description="rows written")
    replaced: int = Field(description="earlier rows deleted (replace mode)")
    seconds: float


def prefix_filters(prefix: str | None, starts_with: str | None, matching: str | None) -> list[tuple[str, list[Any]]]:
    """Listing conditions: an exact prefix, prefixes starting with digits, or every prefix that
    covers a number (the rows the longest-prefix match chooses from)."""
    extra: list[tuple[str, list[Any]]] = []
    if prefix is not None:
        extra.append(("prefix = %s", [prefix]))
    if starts_with is not None:
        extra.append(("prefix LIKE %s", [starts_with + "%"]))
    if matching is not None:
        extra.append(("prefix = ANY(%s)", [[matching[:n] for n in range(1, len(matching) + 1)]]))
    return extra


def _mapping(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise invalid("body.mapping", "not valid JSON") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid("body.mapping", 'expected a JSON object of strings, e.g. {"prefix": "Dial Code"}')
    return value


def upload(conn: psycopg.Connection, who: Caller, deck: decks.Deck, owner_id: UUID, file: UploadFile,
           mapping: str | None, mode: Literal["replace", "merge"], effective_at: datetime | None) -> dict[str, Any]:
    # undecodable bytes become U+FFFD, which the row checks name with their line
    text = io.TextIOWrapper(file.file, encoding="utf-8-sig", errors="replace", newline="")
    try:
        report = decks.import_deck(conn, deck, owner_id, csv.reader(text), _mapping(mapping), mode=mode,
                                   effective_at=effective_at, actor=who.actor, request_id=who.request_id)
    except decks.DeckError as exc:
        raise invalid("body.mapping", str(exc)) from None
    finally:
        text.detach()
    if not report.ok:
        details = [FieldError(field=e.column, message=e.problem, line=e.line, type="invalid_row")
                   for e in report.errors]
        shown = "" if report.error_count == len(details) else f" (the first {len(details)} are listed)"
        raise ApiError(422, f"{report.error_count} problems in the file{shown}; nothing was imported",
                       details, code="invalid_rows")
    return {"target": report.target, "mode": report.mode, "rows": report.rows, "applied": report.applied,
            "replaced": report.replaced, "seconds": report.seconds}
