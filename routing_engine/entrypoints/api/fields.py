"""Fields: the constrained value types every request model is built from.

Each type carries the same limits as the column it lands in, so a value the database would
refuse is refused first, with a field error (422), never as a database error. Money is Decimal
on the way in (a JSON string or number) and a string on the way out.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Query
from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints

# printable text without control characters (Postgres text refuses NUL; logs dislike the rest)
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

Text = Annotated[str, StringConstraints(max_length=200, pattern=_PRINTABLE)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")]
Ban = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Prefix = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,15}$")]
E164 = Annotated[str, StringConstraints(pattern=r"^\+[1-9][0-9]{6,14}$")]
TechPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,8}#?$")]
DialPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9+]{0,15}$")]
VendorPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9+*#]{0,15}$")]
VendorTechPrefix = Annotated[str, StringConstraints(pattern=r"^[0-9*#]{0,15}$")]
SipUri = Annotated[str, StringConstraints(max_length=255, pattern=r"^sips?:[\x21-\x3f\x41-\x7e]+$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128, pattern=_PRINTABLE)]
DigestUser = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._+-]+$")]
Codec = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]  # as domain.media_plan

Port = Annotated[int, Field(ge=1, le=65535)]
Digits = Annotated[int, Field(ge=0, le=15)]
Priority = Annotated[int, Field(ge=-10000, le=10000)]
Weight = Annotated[int, Field(ge=0, le=10000)]
Seconds = Annotated[int, Field(ge=1, le=3600)]
MinSeconds = Annotated[int, Field(ge=0, le=3600)]

# numeric(12, 6): per-minute rates and fees; numeric(14, 4): credit limits; numeric(14, 6): ledger
Rate = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=6, allow_inf_nan=False)]
Margin = Annotated[Decimal, Field(ge=-999999, max_digits=12, decimal_places=6, allow_inf_nan=False)]
CreditLimit = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=4, allow_inf_nan=False)]
Amount = Annotated[Decimal, Field(gt=0, max_digits=14, decimal_places=6, allow_inf_nan=False)]

Transport = Literal["udp", "tcp", "tls"]
Strategy = Literal["least_cost", "priority", "weighted", "quality"]


def _host(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*", value):
        raise ValueError("not an IP address or a DNS name")
    return value.lower()


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR form (host bits must be zero): {exc}") from None


def storable_time(value: datetime) -> datetime:
    """A time Postgres stores and psycopg reads back: in UTC within years 1 to 9999 (one beyond,
    e.g. 0001-01-01T00:00+14:00, is stored, and then fails every read of its table)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC the time must fall within the years 1 to 9999") from None
    return value


Moment = Annotated[AwareDatetime, AfterValidator(storable_time)]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253), AfterValidator(_host)]
Cidr = Annotated[str, StringConstraints(min_length=1, max_length=49), AfterValidator(_cidr)]


def _drop_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def unset(**constraints: Any) -> Any:
    """Default of a PATCH field that may be left out but not set to null."""
    return Field(default=None, json_schema_extra=_drop_default, **constraints)


PageLimit = Annotated[int, Query(ge=1, le=1000, description="rows per page")]
Cursor = Annotated[UUID | None, Query(description="`meta.page.next_cursor` of the previous page")]
