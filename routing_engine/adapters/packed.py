"""Packed snapshots: the large tables of a routing snapshot as flat binary, read in place.

A published snapshot is one file: the big tables — every vendor's rate deck in one index, each
customer price list, the NPA-NXX homes — packed as sorted key arrays with their rows, and the
rest of the snapshot (accounts, trunks, plans: small) pickled after them. A SIP worker maps the
file read-only, so all the workers of a node share one copy in the page cache, and taking a new
version is a map plus a small unpickle, not millions of objects built in every process. A lookup
decodes only the rows it returns.

Table layout: ``n`` keys (uint64, ascending), ``n + 1`` offsets (uint64) into a value area. A
key is a digit string coded as ``len * 10**15 + int(digits)``, so "1" and "01" differ; prefixes
are at most 15 digits (the schema's CHECK).

Only buffers are handled here (bytes in, bytes out); opening and mapping files is the store's
business (adapters/snapshots.py).
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import IO, Any
from uuid import UUID

from routing_engine.domain.snapshot import CustomerRate, Location, RatePlan, RoutingSnapshot, VendorRate

MAGIC = b"WARPSNP2"
# magic, the format id (this code's layout), the schema it was built from (the last migration),
# offset of the table of contents
_HEADER = struct.Struct("<8s16s64sQ")
PACK_FORMAT = 3  # raise on any change to the tables below or to what the contents hold
_SPAN = 10**15
_MAX_DIGITS = 15
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_END = 2**63 - 1
_NO_EXP = 127  # exponent marking a missing (NULL) amount

# effective_at, ends_at (µs since the epoch), then rate, interstate, intrastate, indeterminate
# as (coefficient, exponent) so every Decimal comes back exactly as it went in, then the row's
# billing terms: initial_s, subsequent_s, min_duration_s, connection fee (vendor and customer rows
# alike).
_TIMES = struct.Struct("<qq")
_RATE = struct.Struct("<qq" + "qb" * 4 + "iiiqb")
_GROUP = struct.Struct("<HH")        # vendor number, rows that follow
_COUNT = struct.Struct("<H")
_CACHE_LIMIT = 65_536  # decoded rows kept per table in a process; cleared when full


class PackError(ValueError):
    """A value the packed form cannot hold exactly (the snapshot is then not published)."""


class FormatMismatch(ValueError):
    """A snapshot file written by another version of this code, or from another schema: it is
    refused (and rebuilt from Postgres), never read as if it were ours."""


def _layout() -> bytes:
    """This code's snapshot layout: the pack format and every value class a snapshot pickles,
    field by field, so a changed dataclass changes the id without anyone remembering to."""
    import dataclasses
    import enum

    from routing_engine.domain import media_plan as media
    from routing_engine.domain import snapshot

    parts = [f"pack:{PACK_FORMAT}"]
    for module in (snapshot, media):
        for name, value in sorted(vars(module).items()):
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                parts.append(f"{name}(" + ",".join(f"{f.name}:{f.type}" for f in dataclasses.fields(value)) + ")")
            elif isinstance(value, type) and issubclass(value, enum.Enum) and value.__module__ == module.__name__:
                parts.append(f"{name}[" + ",".join(f"{m.name}={m.value}" for m in value) + "]")
    return hashlib.sha256("\n".join(parts).encode()).digest()[:16]


LAYOUT = _layout()


def header(buffer: Any) -> tuple[bytes, str]:
    """(format id, schema) a packed file says it was written with."""
    buf = memoryview(buffer)
    if len(buf) < _HEADER.size:
        raise FormatMismatch("not a packed routing snapshot (too short)")
    magic, layout, schema, _ = _HEADER.unpack_from(buf, 0)
    if magic != MAGIC:
        raise FormatMismatch(f"not a snapshot of this format (magic {bytes(magic)[:8]!r}, this code writes {MAGIC!r})")
    return bytes(layout), schema.rstrip(b"\0").decode(errors="replace")


def check(buffer: Any, schema: str | None) -> None:
    """Refuse a file this code did not write (for this schema, unless ``schema`` is None)."""
    layout, written_for = header(buffer)
    if layout != LAYOUT:
        raise FormatMismatch(f"written by another version of the code (format {layout.hex()}, "
                             f"this code reads {LAYOUT.hex()})")
    if schema is not None and written_for != schema:
        raise FormatMismatch(f"built from schema {written_for or '?'}, this code expects {schema}")


def _key(digits: str) -> int | None:
    if not digits or len(digits) > _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    return len(digits) * _SPAN + int(digits)


def _digits(key: int) -> str:
    length, number = divmod(key, _SPAN)
    return str(number).zfill(length)


def _micros(when: datetime) -> int:
    if when.tzinfo is None:
        raise PackError(f"naive datetime {when.isoformat()} in a rate")
    return (when - _EPOCH) // timedelta(microseconds=1)


def _amount(value: Decimal | None) -> tuple[int, int]:
    if value is None:
        return 0, _NO_EXP
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or not -128 <= exponent < _NO_EXP:
        raise PackError(f"amount {value} cannot be packed")
    coefficient = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if not -(2**63) <= coefficient < 2**63:
        raise PackError(f"amount {value} has too many digits")
    return coefficient, exponent


def _decimal(coefficient: int, exponent: int) -> Decimal | None:
    return None if exponent == _NO_EXP else Decimal(coefficient).scaleb(exponent)


def _pack_rate(rate: VendorRate) -> bytes:
    ends = _NO_END if rate.ends_at is None else _micros(rate.ends_at)
    amounts = [part for value in (rate.rate, rate.interstate_rate, rate.intrastate_rate, rate.indeterminate_rate)
               for part in _amount(value)]
    return _RATE.pack(_micros(rate.effective_at), ends, *amounts, rate.initial_s, rate.subsequent_s,
                      rate.min_duration_s, *_amount(rate.connection_fee))


def _unpack_rate(buf: memoryview, at: int, prefix: str, customer: bool) -> VendorRate:
    eff, ends, r, re, inter, ie, intra, ia, indet, ix, initial, subsequent, minimum, fee, fe = \
        _RATE.unpack_from(buf, at)
    fields: dict[str, Any] = {
        "prefix": prefix, "rate": _decimal(r, re), "effective_at": _EPOCH + timedelta(microseconds=eff),
        "ends_at": None if ends == _NO_END else _EPOCH + timedelta(microseconds=ends),
        "interstate_rate": _decimal(inter, ie), "intrastate_rate": _decimal(intra, ia),
        "indeterminate_rate": _decimal(indet, ix), "initial_s": initial, "subsequent_s": subsequent,
        "min_duration_s": minimum, "connection_fee": _decimal(fee, fe) or Decimal(0)}
    return CustomerRate(**fields) if customer else VendorRate(**fields)


# ------------------------------------------------------------------ tables

class _Table:
    """Sorted keys and their value spans over a buffer."""

    __slots__ = ("_keys", "_offsets", "values", "size")

    def __init__(self, buf: memoryview, keys_at: int, size: int, values_at: int, values_len: int) -> None:
        self.size = size
        self._keys = buf[keys_at:keys_at + 8 * size].cast("Q")
        self._offsets = buf[keys_at + 8 * size:keys_at + 16 * size + 8].cast("Q")
        self.values = buf[values_at:values_at + values_len]

    def span(self, digits: str) -> tuple[int, int] | None:
        key = _key(digits)
        if key is None:
            return None
        i = bisect_left(self._keys, key)
        if i < self.size and self._keys[i] == key:
            return self._offsets[i], self._offsets[i + 1]
        return None

    def keys(self) -> Iterator[str]:
        return (_digits(k) for k in self._keys)


def _table_bytes(rows: Iterable[tuple[str, bytes]]) -> tuple[bytes, int, bytes]:
    """(keys + offsets, row count, value area) for rows given in any order."""
    keyed = []
    for digits, value in rows:
        key = _key(digits)
        if key is None:
            raise PackError(f"prefix {digits!r} is not 1-{_MAX_DIGITS} digits")
        keyed.append((key, value))
    keyed.sort(key=lambda kv: kv[0])
    offsets = [0]
    for _, value in keyed:
        offsets.append(offsets[-1] + len(value))
    index = struct.pack(f"<{len(keyed)}Q", *(k for k, _ in keyed)) + struct.pack(f"<{len(offsets)}Q", *offsets)
    return index, len(keyed), b"".join(v for _, v in keyed)


class PackedRateIndex:
    """Every vendor's rates in one packed index: prefix -> (vendor, rows oldest first)..."""

    def __init__(self, table: _Table, vendor_ids: tuple[UUID, ...], max_len: int) -> None:
        self._table = table
        self._vendor_ids = vendor_ids
        self.max_len = max_len
        self._cache: dict[int, VendorRate] = {}

    def rates_for(self, vendor_ids: frozenset[UUID], digits: str, now: datetime) -> dict[UUID, VendorRate]:
        found: dict[UUID, VendorRate] = {}
        now_us = _micros(now)
        values = self._table.values
        for length in range(min(len(digits), self.max_len), 0, -1):
            span = self._table.span(digits[:length])
            if span is None:
                continue
            pos, end = span
            while pos < end:
                number, count = _GROUP.unpack_from(values, pos)
                pos += _GROUP.size
                vendor_id = self._vendor_ids[number]
                if vendor_id in vendor_ids and vendor_id not in found:
                    for at in range(pos + (count - 1) * _RATE.size, pos - 1, -_RATE.size):  # newest first
                        effective, ends = _TIMES.unpack_from(values, at)
                        if effective <= now_us < ends:
                            found[vendor_id] = self._row(at, digits[:length])
                            break
                pos += count * _RATE.size
            if len(found) == len(vendor_ids):
                break
        return found

    def _row(self, at: int, prefix: str) -> VendorRate:
        row = self._cache.get(at)
        if row is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            row = self._cache[at] = _unpack_rate(self._table.values, at, prefix, customer=False)
        return row


class PackedRates(Mapping[str, tuple[VendorRate, ...]]):
    """One customer price list: prefix -> its rows, oldest effective date first."""

    def __init__(self, table: _Table) -> None:
        self._table = table
        self._cache: dict[str, tuple[VendorRate, ...]] = {}

    def get(self, prefix: str, default: Any = None) -> Any:
        rows = self._cache.get(prefix)
        if rows is not None:
            return rows
        span = self._table.span(prefix)
        if span is None:
            return default
        pos, _ = span
        (count,) = _COUNT.unpack_from(self._table.values, pos)
        size = _RATE.size
        start = pos + _COUNT.size
        rows = tuple(_unpack_rate(self._table.values, start + i * size, prefix, customer=True)
                     for i in range(count))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[prefix] = rows
        return rows

    def __getitem__(self, prefix: str) -> tuple[VendorRate, ...]:
        rows = self.get(prefix)
        if rows is None:
            raise KeyError(prefix)
        return rows  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return self._table.keys()

    def __len__(self) -> int:
        return self._table.size


class PackedLocations(Mapping[str, Location]):
    """NPA-NXX -> where it is homed."""

    def __init__(self, table: _Table) -> None:
        self._table = table

    def get(self, npanxx: str, default: Any = None) -> Any:
        span = self._table.span(npanxx)
        if span is None:
            return default
        fields = bytes(self._table.values[span[0]:span[1]]).decode().split("\x1f")
        country, state, lata, ocn, center = (None if f == "\x00" else f for f in fields)
        return Location(country or "", state or "", lata, ocn, center)

    def __getitem__(self, npanxx: str) -> Location:
        found = self.get(npanxx)
        if found is None:
            raise KeyError(npanxx)
        return found  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return self._table.keys()

    def __len__(self) -> int:
        return self._table.size


def _location_bytes(location: Location) -> bytes:
    fields = (location.country, location.state, location.lata, location.ocn, location.rate_center)
    if any(f is not None and ("\x1f" in f or f == "\x00") for f in fields):
        raise PackError(f"location {location} holds a separator character")
    return "\x1f".join("\x00" if f is None else f for f in fields).encode()


# ------------------------------------------------------------------ files

def write(snapshot: RoutingSnapshot, out: IO[bytes], schema: str = "") -> None:
    """Write ``snapshot`` in packed form to ``out`` (a binary file at position 0); ``schema``
    names the database schema it was built from (the last migration)."""
    vendor_ids = tuple(snapshot.vendors)
    numbers = {vid: n for n, vid in enumerate(vendor_ids)}
    index: dict[str, list[bytes]] = {}
    for vid, vendor in snapshot.vendors.items():
        for prefix, rows in vendor.rates.items():
            index.setdefault(prefix, []).append(
                _GROUP.pack(numbers[vid], len(rows)) + b"".join(_pack_rate(r) for r in rows))
    tables: dict[str, tuple[int, int, int, int]] = {}
    if len(schema.encode()) > 64:
        raise PackError(f"schema name too long: {schema[:80]}")
    out.write(_HEADER.pack(MAGIC, LAYOUT, schema.encode(), 0))

    def section(name: str, rows: Iterable[tuple[str, bytes]]) -> None:
        keys, size, values = _table_bytes(rows)
        keys_at = _align(out)
        out.write(keys)
        values_at = out.tell()
        out.write(values)
        tables[name] = (keys_at, size, values_at, len(values))

    section("rates", ((p, b"".join(groups)) for p, groups in index.items()))
    for pid, plan in snapshot.rate_plans.items():
        section(f"plan:{pid}", ((p, _COUNT.pack(len(rows)) + b"".join(_pack_rate(r) for r in rows))
                                for p, rows in plan.rates.items()))
    section("npanxx", ((n, _location_bytes(loc)) for n, loc in snapshot.npanxx.items()))
    light = replace(
        snapshot,
        vendors={vid: replace(v, rates={}) for vid, v in snapshot.vendors.items()},
        rate_plans={pid: replace(p, rates={}) for pid, p in snapshot.rate_plans.items()},
        npanxx={}, packed_index=None)
    toc = {"snapshot": light, "vendor_ids": vendor_ids, "max_len": snapshot.rate_index.max_len, "tables": tables}
    toc_at = _align(out)
    out.write(pickle.dumps(toc, protocol=pickle.HIGHEST_PROTOCOL))
    out.seek(0)
    out.write(_HEADER.pack(MAGIC, LAYOUT, schema.encode(), toc_at))


def _align(out: IO[bytes]) -> int:
    at = out.tell()
    if at % 8:
        out.write(b"\0" * (8 - at % 8))
    return out.tell()


def read(buffer: Any, schema: str | None = None) -> RoutingSnapshot:
    """The snapshot in a packed buffer (bytes or a read-only mmap); its tables read the buffer in
    place. A file of another code version is refused (FormatMismatch), and of another schema too
    when ``schema`` is given."""
    buf = memoryview(buffer)
    check(buf, schema)
    toc_at = _HEADER.unpack_from(buf, 0)[3]
    toc = pickle.loads(buf[toc_at:])  # noqa: S301 - our own file, written by write()
    snapshot: RoutingSnapshot = toc["snapshot"]
    tables = {name: _Table(buf, *where) for name, where in toc["tables"].items()}
    plans = {pid: RatePlan(p.id, p.name, PackedRates(tables[f"plan:{pid}"]), p.max_prefix_len)
             for pid, p in snapshot.rate_plans.items()}
    return replace(snapshot, packed_index=PackedRateIndex(tables["rates"], toc["vendor_ids"], toc["max_len"]),
                   rate_plans=MappingProxyType(plans), npanxx=PackedLocations(tables["npanxx"]))
