"""Postgres adapter: read the routing configuration into a snapshot; write CDR batches.

Only companions and start-up code call this module; the SIP call path never waits on Postgres.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from uuid import UUID

import psycopg
from psycopg import sql

from routing_engine.domain.cdr import CdrRecord, partitions_to_drop
from routing_engine.domain.media_plan import Anchor, MediaPolicy, OnFailure
from routing_engine.domain.snapshot import (
    Account,
    AccountStatus,
    AclEntry,
    Credential,
    CustomerRate,
    Gateway,
    Location,
    NumberFormat,
    PlanVendor,
    RoutingPlan,
    RoutingSnapshot,
    Translation,
    Trunk,
    VendorRate,
    build_rate_plan,
    build_vendor,
)


def connect(url: str, timeout_s: int = 5, autocommit: bool = True) -> psycopg.Connection:
    """Autocommit, so every `with conn.transaction()` block is a real transaction of its own."""
    return psycopg.connect(url, connect_timeout=timeout_s, autocommit=autocommit,
                           application_name="warp")


def load_snapshot(conn: psycopg.Connection, now: datetime, realm: str = "warp.local") -> RoutingSnapshot:
    """Read every routing table in one repeatable-read transaction (or the caller's) and build a snapshot."""
    digest = hashlib.sha256()
    # inside a caller's transaction (a draft's preview or publication) the caller's isolation holds
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if not nested:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")

        def rows(sql: str, params: tuple[object, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
            result = conn.execute(sql, params).fetchall()
            for row in result:
                digest.update(repr(row).encode())
            return result

        accounts = {
            r[0]: Account(r[0], r[1], r[2], AccountStatus(r[3]), r[4], r[5], r[6], r[7], r[8], r[9], r[10])
            for r in rows("SELECT id, ban, name, status, status_reason, routing_plan_id, billing_type,"
                          " credit_limit, rate_plan_id, cps_limit, max_concurrent"
                          " FROM accounts.accounts WHERE deleted_at IS NULL ORDER BY id")
        }
        trunks = {
            r[0]: Trunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
                        media=MediaPolicy(Anchor(r[14]), tuple(r[15]), OnFailure(r[16])), topology_hiding=r[17])
            for r in rows("SELECT id, account_id, name, routing_plan_id, enabled, strip_digits,"
                          " add_prefix, tech_prefix, auth_mode, inbound_uri, max_contacts, rate_plan_id,"
                          " cps_limit, max_concurrent, media_anchor, media_codecs, media_failure,"
                          " topology_hiding"
                          " FROM trunks.trunks WHERE deleted_at IS NULL ORDER BY id")
        }
        credentials = {
            r[1]: Credential(r[0], r[1], r[2])
            for r in rows("SELECT trunk_id, username, ha1 FROM trunks.trunk_auth"
                          " WHERE deleted_at IS NULL AND realm = %s ORDER BY id", (realm,))
            if r[0] in trunks
        }
        dids = {
            r[0][1:]: r[1]
            for r in rows("SELECT n.e164, a.trunk_id FROM numbers.number_assignments a"
                          " JOIN numbers.number_inventory n ON n.id = a.number_id"
                          " WHERE a.released_at IS NULL AND n.deleted_at IS NULL ORDER BY n.e164")
        }
        blocked_vendor: dict[UUID, list[str]] = {}
        blocked_plan: dict[UUID, list[str]] = {}
        for r in rows("SELECT provider_id, routing_plan_id, prefix FROM routing.blocked_destinations"
                      " ORDER BY id"):
            if r[0] is not None:
                blocked_vendor.setdefault(r[0], []).append(r[2])
            else:
                blocked_plan.setdefault(r[1], []).append(r[2])
        acl = tuple(
            AclEntry(r[0], ipaddress.ip_network(r[1]), r[2], r[3])
            for r in rows("SELECT trunk_id, cidr, port, transport FROM trunks.trunk_access_lists"
                          " ORDER BY id")
            if r[0] in trunks
        )
        gateways: dict[UUID, list[Gateway]] = {}
        for r in rows("SELECT provider_id, id, name, host, port, transport, priority, enabled, probe"
                      " FROM routing.provider_gateways WHERE deleted_at IS NULL ORDER BY id"):
            gateways.setdefault(r[0], []).append(Gateway(*r[1:]))
        rates: dict[UUID, list[VendorRate]] = {}
        for r in rows("SELECT provider_id, prefix, rate, effective_at, ends_at, interstate_rate,"
                      " intrastate_rate, indeterminate_rate, initial_increment, subsequent_increment,"
                      " min_duration_s, connection_fee FROM routing.rates"
                      " ORDER BY provider_id, prefix, effective_at"):
            rates.setdefault(r[0], []).append(VendorRate(*r[1:]))
        vendors = {
            r[0]: build_vendor(
                r[0], r[1], gateways.get(r[0], ()), rates.get(r[0], ()), r[2],
                Translation(NumberFormat(r[3]), r[4], r[5], r[6], r[7], r[8]),
                blocked_vendor.get(r[0], ()))
            for r in rows("SELECT id, name, enabled, number_format, strip_digits, add_prefix,"
                          " tech_prefix, translate_caller, send_lrn FROM routing.providers"
                          " WHERE deleted_at IS NULL ORDER BY id")
        }
        members: dict[UUID, list[PlanVendor]] = {}
        for r in rows("SELECT routing_plan_id, provider_id, priority, weight"
                      " FROM routing.routing_plan_providers WHERE enabled ORDER BY id"):
            members.setdefault(r[0], []).append(PlanVendor(r[1], r[2], r[3]))
        plans = {
            r[0]: RoutingPlan(r[0], r[1], r[2], tuple(members.get(r[0], ())), frozenset(r[3]), r[4],
                              r[5], frozenset(blocked_plan.get(r[0], ())), r[6], r[7])
            for r in rows("SELECT id, name, strategy, failover_codes, max_attempts,"
                          " attempt_timeout_ms, min_margin, allow_negative_margin FROM routing.routing_plans"
                          " WHERE deleted_at IS NULL ORDER BY id")
        }
        customer_rates: dict[UUID, list[CustomerRate]] = {}
        for r in rows("SELECT rate_plan_id, prefix, rate, effective_at, ends_at, interstate_rate,"
                      " intrastate_rate, indeterminate_rate, initial_increment, subsequent_increment,"
                      " min_duration_s, connection_fee FROM billing.rate_plan_rates"
                      " ORDER BY rate_plan_id, prefix, effective_at"):
            customer_rates.setdefault(r[0], []).append(CustomerRate(*r[1:]))
        rate_plans = {
            r[0]: build_rate_plan(r[0], r[1], customer_rates.get(r[0], ()))
            for r in rows("SELECT id, name FROM billing.rate_plans WHERE deleted_at IS NULL ORDER BY id")
        }
        npanxx = {
            r[0]: Location(r[1].strip(), r[2], r[3], r[4], r[5])
            for r in rows("SELECT npanxx, country, state, lata, ocn, rate_center FROM routing.npanxx"
                          " ORDER BY npanxx")
        }
    return RoutingSnapshot(
        version=digest.hexdigest()[:12],
        loaded_at=now,
        accounts=MappingProxyType(accounts),
        trunks=MappingProxyType(trunks),
        acl=acl,
        vendors=MappingProxyType(vendors),
        plans=MappingProxyType(plans),
        npanxx=MappingProxyType(npanxx),
        credentials=MappingProxyType(credentials),
        dids=MappingProxyType(dids),
        rate_plans=MappingProxyType(rate_plans),
    )


_CDR_COLUMNS = (
    "cdr_id", "call_id", "node", "direction", "account_id", "trunk_id", "provider_id", "gateway",
    "from_raw", "to_raw", "from_e164", "to_e164", "invite_at", "answer_at", "end_at",
    "duration_s", "sip_code", "sip_reason", "vendor_rate", "trace", "lrn", "jurisdiction", "attempts",
    "billable_s", "customer_rate", "customer_price", "vendor_cost", "margin", "media",
    "ban", "lrn_source", "ringing_at", "pdd_ms", "q850_cause", "hangup_side",
)
_INSERT_CDR = (
    f"INSERT INTO cdr.cdrs ({', '.join(_CDR_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_CDR_COLUMNS))}) "
    "ON CONFLICT (cdr_id, invite_at) DO NOTHING"
)


def ensure_cdr_partitions(conn: psycopg.Connection, days: Iterable[datetime]) -> None:
    """Create the daily partitions the given timestamps fall into (rows never wait on it:
    the default partition catches anything that arrives first)."""
    for day in sorted({d.astimezone(UTC).date() for d in days}):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        name = f"cdrs_{day:%Y%m%d}"
        exists = conn.execute("SELECT to_regclass(%s)", (f"cdr.{name}",)).fetchone()
        if exists and exists[0] is not None:
            continue
        # Rows of this day already in the default partition would block the new partition;
        # move them across in the same transaction. Locks are taken parent first, as every
        # reader takes them, so a concurrent query waits instead of deadlocking.
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute("LOCK TABLE cdr.cdrs IN ACCESS EXCLUSIVE MODE")
            conn.execute("LOCK TABLE cdr.cdrs_default IN ACCESS EXCLUSIVE MODE")
            conn.execute("CREATE TEMP TABLE moving ON COMMIT DROP AS SELECT * FROM cdr.cdrs_default"
                         " WHERE invite_at >= %s AND invite_at < %s", (start, start + timedelta(days=1)))
            conn.execute("DELETE FROM cdr.cdrs_default WHERE invite_at >= %s AND invite_at < %s",
                         (start, start + timedelta(days=1)))
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS cdr.{name} PARTITION OF cdr.cdrs "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
            )
            conn.execute("INSERT INTO cdr.cdrs SELECT * FROM moving")


def cdr_partitions(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                        " WHERE i.inhparent = 'cdr.cdrs'::regclass ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def drop_expired_cdr_partitions(conn: psycopg.Connection, today: date, retention_days: int) -> list[str]:
    """Drop the daily partitions older than the retention (and rows that old caught by the default
    partition). Each drop is its own short transaction that gives up on a busy table."""
    dropped = []
    for name in partitions_to_drop(cdr_partitions(conn), today, retention_days):
        with conn.transaction():
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS cdr.{}").format(sql.Identifier(name)))
        dropped.append(name)
    cutoff = datetime(today.year, today.month, today.day, tzinfo=UTC) - timedelta(days=retention_days)
    conn.execute("DELETE FROM cdr.cdrs_default WHERE invite_at < %s", (cutoff,))
    return dropped


# What a text column cannot hold: NUL (Postgres text refuses it) and lone surrogates (no UTF-8
# form). Both arrive from SIP headers a caller wrote; they are replaced, visibly, with U+FFFD.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# A b-tree index entry holds at most ~2700 bytes: indexed text (Call-ID, numbers, the ledger's
# reference) is cut to 512 characters (2048 bytes in UTF-8); other text to 8192.
INDEXED_TEXT_MAX = 512
TEXT_MAX = 8192
_INDEXED_CDR_TEXT = frozenset({"call_id", "from_e164", "to_e164"})
_JSON_CDR_COLUMNS = frozenset({"trace", "attempts", "media"})


def storable_text(value: str, limit: int = TEXT_MAX) -> str:
    """``value`` as a Postgres text column takes it: unstorable characters replaced, at most
    ``limit`` characters (a cut one ends with an ellipsis, so it reads as cut)."""
    clean = _UNSTORABLE.sub(REPLACEMENT, value)
    return clean if len(clean) <= limit else clean[: limit - 1] + "\u2026"


def _storable_json_value(value: object) -> object:
    if isinstance(value, str):
        return _UNSTORABLE.sub(REPLACEMENT, value)
    if isinstance(value, list):
        return [_storable_json_value(v) for v in value]
    if isinstance(value, dict):
        return {_UNSTORABLE.sub(REPLACEMENT, str(k)): _storable_json_value(v) for k, v in value.items()}
    return value


def storable_json(text: str) -> str:
    """JSON text as jsonb takes it: jsonb refuses ``\\u0000`` and lone surrogate escapes as well
    as raw NUL. Text that is no JSON at all is left as it is (the row is refused, see
    ``is_row_problem``)."""
    if "\\u" not in text and not _UNSTORABLE.search(text):
        return text  # the common case: nothing to look at
    try:
        parsed = json.loads(text, strict=False)
    except ValueError:
        return text
    return json.dumps(_storable_json_value(parsed), separators=(",", ":"))


def _cdr_value(column: str, value: object) -> object:
    if not isinstance(value, str):
        return value
    if column in _JSON_CDR_COLUMNS:
        return storable_json(value)
    return storable_text(value, INDEXED_TEXT_MAX if column in _INDEXED_CDR_TEXT else TEXT_MAX)


def cdr_row(record: CdrRecord) -> tuple[object, ...]:
    """The values of one CDR row, text made storable (see ``storable_text``)."""
    return tuple(_cdr_value(c, getattr(record, c)) for c in _CDR_COLUMNS)


def is_row_problem(exc: BaseException) -> bool:
    """Whether a failed insert failed because of what a row holds (a value out of range, a
    check or key violation, an index entry too large, a value the client cannot send) rather
    than because the connection or the server failed: retrying the same rows cannot help."""
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError
                  | psycopg.errors.ProgramLimitExceeded):
        return True
    return isinstance(exc, ValueError | TypeError | OverflowError) and not isinstance(exc, psycopg.Error)


def insert_cdrs(conn: psycopg.Connection, records: Sequence[CdrRecord]) -> int:
    """Insert a batch in one transaction; a record already stored is skipped. Returns rows added.
    A row Postgres refuses fails the whole batch (``is_row_problem`` tells that from an outage)."""
    if not records:
        return 0
    ensure_cdr_partitions(conn, (r.invite_at for r in records))
    with conn.transaction(), conn.cursor() as cur:
        # one pipelined round trip for the batch; rowcount adds up the rows each insert added
        cur.executemany(_INSERT_CDR, [cdr_row(r) for r in records])
        return max(0, cur.rowcount)
