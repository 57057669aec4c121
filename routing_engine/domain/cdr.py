"""CDR: the record one call attempt leaves behind.

Built from values the call path already holds (the decision's context, the times the adapter
observed), so the same function serves answered, failed and refused calls. Records travel as
flat string maps (a Redis stream entry) and are read back with validation, because the
emitter must never write a half-understood row.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class CdrRecord:
    cdr_id: uuid.UUID
    call_id: str
    node: str
    invite_at: datetime
    sip_code: int
    sip_reason: str = ""
    direction: str = "outbound"
    account_id: uuid.UUID | None = None
    trunk_id: uuid.UUID | None = None
    provider_id: uuid.UUID | None = None
    gateway: str | None = None
    from_raw: str | None = None
    to_raw: str | None = None
    from_e164: str | None = None
    to_e164: str | None = None
    answer_at: datetime | None = None
    end_at: datetime | None = None
    duration_s: int = 0
    vendor_rate: Decimal | None = None
    trace: str | None = None  # compact JSON of the routing decision
    lrn: str | None = None
    jurisdiction: str | None = None
    attempts: str | None = None  # JSON list: vendor, gateway, final code, reason per attempt
    billable_s: int = 0
    customer_rate: Decimal | None = None
    customer_price: Decimal | None = None
    vendor_cost: Decimal | None = None
    margin: Decimal | None = None
    settle: bool = False  # funds were reserved: the emitter charges customer_price and releases them
    released: bool = False  # the node freed the call's limits places with this entry (else the emitter does)
    media: str | None = None  # compact JSON: anchored or why not, rtpengine's packet counts, MOS
    ban: str | None = None            # the account's Billing Account Number
    lrn_source: str | None = None     # cache, local, http, failed, skipped
    ringing_at: datetime | None = None  # first 180/183 from any vendor
    pdd_ms: int | None = None         # post-dial delay: INVITE received to first ringing
    q850_cause: int | None = None     # from the Reason header of the final answer or the BYE, or ours
    hangup_side: str | None = None    # caller, callee or proxy (a refusal, a timeout, the funds cut-off)

    def to_fields(self) -> dict[str, str]:
        """Flat string map for a Redis stream entry; None fields are left out."""
        out: dict[str, str] = {}
        for key in _FIELD_NAMES:  # flat values: no need for asdict's deep copy
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, datetime):
                out[key] = value.astimezone(UTC).isoformat()
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_fields(cls, data: dict[str, str]) -> CdrRecord:
        """Inverse of to_fields; raises ValueError naming the bad field."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            raw = data[f.name]
            try:
                kwargs[f.name] = _parse(f.name, raw)
            except (ValueError, ArithmeticError) as exc:
                raise ValueError(f"CDR field {f.name}: bad value {raw!r}") from exc
        for required in ("cdr_id", "call_id", "node", "invite_at", "sip_code"):
            if required not in kwargs:
                raise ValueError(f"CDR field {required}: missing")
        return cls(**kwargs)


_FIELD_NAMES = tuple(f.name for f in fields(CdrRecord))
_UUIDS = {"cdr_id", "account_id", "trunk_id", "provider_id"}
_TIMES = {"invite_at", "answer_at", "end_at", "ringing_at"}
HANGUP_SIDES = ("caller", "callee", "proxy")


def _parse(name: str, raw: str) -> Any:
    if name in _UUIDS:
        return uuid.UUID(raw)
    if name in _TIMES:
        value = datetime.fromisoformat(raw)
        if value.tzinfo is None:
            raise ValueError("timestamp without time zone")
        return value
    if name in ("sip_code", "duration_s", "billable_s", "pdd_ms", "q850_cause"):
        return int(raw)
    if name in ("vendor_rate", "customer_rate", "customer_price", "vendor_cost", "margin"):
        return Decimal(raw)
    if name == "hangup_side":
        if raw not in HANGUP_SIDES:
            raise ValueError(f"expected one of {', '.join(HANGUP_SIDES)}")
        return raw
    if name in ("settle", "released"):
        if raw not in ("True", "False"):
            raise ValueError("expected True or False")
        return raw == "True"
    return raw


def billable_duration(answer_at: datetime | None, end_at: datetime | None) -> int:
    """Whole seconds from answer to end, a started second counting as a full one."""
    if answer_at is None or end_at is None or end_at <= answer_at:
        return 0
    return math.ceil((end_at - answer_at).total_seconds())


def compact_trace(trace: dict[str, object]) -> str:
    return json.dumps(trace, separators=(",", ":"), default=str)


def lrn_source_of(trace: dict[str, object]) -> str | None:
    """Where the LRN came from, as the decision's trace says (None when the call never got there)."""
    lrn = trace.get("lrn")
    return str(lrn.get("source")) if isinstance(lrn, dict) and lrn.get("source") else None


_CAUSE = re.compile(r"(?:^|,)\s*Q\.850\s*;(?:[^,]*;)?\s*cause\s*=\s*(\d{1,3})", re.I)


def q850_cause(reason_header: str | None) -> int | None:
    """The Q.850 cause of a Reason header (RFC 3326), e.g. ``Q.850;cause=16;text="Normal"``."""
    if not reason_header:
        return None
    match = _CAUSE.search(reason_header)
    return int(match.group(1)) if match else None


def pdd_ms(invite_at: datetime | None, ringing_at: datetime | None) -> int | None:
    if invite_at is None or ringing_at is None:
        return None
    return max(0, round((ringing_at - invite_at).total_seconds() * 1000))


def partitions_to_drop(names: list[str], today: date, retention_days: int) -> list[str]:
    """Daily partitions (``cdrs_YYYYMMDD``) whose whole day lies more than ``retention_days``
    before ``today``: with 7, on the 22nd the 14th goes and the 15th stays, so a CDR is kept
    for at least 7 full days. Other names (the default partition) are never chosen."""
    keep_from = today - timedelta(days=retention_days)
    out = []
    for name in names:
        match = re.fullmatch(r"cdrs_(\d{8})", name)
        if not match:
            continue
        try:
            day = datetime.strptime(match.group(1), "%Y%m%d").date()
        except ValueError:
            continue
        if day < keep_from:
            out.append(name)
    return sorted(out)
