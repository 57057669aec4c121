"""Routing snapshot: the immutable, in-memory copy of the routing configuration.

Postgres is the source of truth; a loader (adapters/postgres.py) reads it once and builds one
``RoutingSnapshot``. Decisions read only this value, so no query ever runs on the call path and
a half-applied edit is never visible: a reload builds a new snapshot and swaps it whole.
"""

from __future__ import annotations

import copyreg
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol
from uuid import UUID

from routing_engine.domain.media_plan import MediaPolicy
from routing_engine.domain.rating import Terms

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The small part of a published snapshot is pickled (packed.py); read-only mappings travel as dicts
# and come back read-only.
def _readonly(data: dict[object, object]) -> MappingProxyType[object, object]:
    return MappingProxyType(data)


copyreg.pickle(MappingProxyType, lambda m: (_readonly, (dict(m),)))

# Final responses that never move a call to the next vendor, whatever a plan says: the callee
# was reached (busy, declined, not found) or the caller gave up.
NEVER_FAILOVER = frozenset({404, 486, 487, 600, 603, 604, 606})
DEFAULT_FAILOVER = frozenset({408, 500, 502, 503, 504})


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TESTING = "testing"
    CLOSED = "closed"


class Jurisdiction(StrEnum):
    """How a call is classified for pricing (see jurisdiction.py for the rules)."""

    INTERSTATE = "interstate"
    INTRASTATE = "intrastate"
    LOCAL = "local"
    INDETERMINATE = "indeterminate"
    INTERNATIONAL = "international"
    TOLL_FREE = "toll_free"


class NumberFormat(StrEnum):
    E164 = "e164"            # 12125551234
    E164_PLUS = "e164_plus"  # +12125551234
    NATIONAL = "national"    # 2125551234 (NANP), 2079460000 (GB) — the country's national form


@dataclass(frozen=True, slots=True)
class Account:
    id: UUID
    ban: str
    name: str
    status: AccountStatus
    status_reason: str | None = None
    routing_plan_id: UUID | None = None
    billing_type: str = "postpaid"  # prepaid: spends its balance; postpaid: balance + credit limit
    credit_limit: Decimal = Decimal(0)
    rate_plan_id: UUID | None = None
    cps_limit: int | None = None
    max_concurrent: int | None = None


@dataclass(frozen=True, slots=True)
class Trunk:
    id: UUID
    account_id: UUID
    name: str
    routing_plan_id: UUID | None
    enabled: bool = True
    strip_digits: int = 0  # applied to what the customer dials, before the number is read
    add_prefix: str = ""
    tech_prefix: str | None = None  # tells apart customers behind one IP, e.g. "1234#"
    auth_mode: str = "acl"          # acl | digest | both
    inbound_uri: str | None = None  # static delivery of the trunk's DIDs (else its registrations)
    max_contacts: int = 5
    rate_plan_id: UUID | None = None  # else the account's
    cps_limit: int | None = None
    max_concurrent: int | None = None
    media: MediaPolicy = MediaPolicy()  # anchoring in rtpengine, allowed codecs, failure behaviour
    topology_hiding: bool = True  # the trunk's calls pass through topos (see topology.py)

    @property
    def allows_acl(self) -> bool:
        return self.auth_mode in ("acl", "both")

    @property
    def allows_digest(self) -> bool:
        return self.auth_mode in ("digest", "both")


@dataclass(frozen=True, slots=True)
class AclEntry:
    trunk_id: UUID
    network: IPNetwork
    port: int | None = None
    transport: str | None = None


@dataclass(frozen=True, slots=True)
class Gateway:
    id: UUID
    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    priority: int = 0
    enabled: bool = True
    probe: bool = False  # probed with OPTIONS by the companion; out of service while it does not answer

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def uri(self) -> str:
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{self.hostport}{suffix}"


@dataclass(frozen=True, slots=True)
class VendorRate:
    """A row of a vendor's deck: per-minute prices from ``effective_at``, and how the vendor bills
    them (first/next increments, minimum duration, connection fee; per second unless the deck
    says otherwise).

    Rows of one prefix follow each other by effective date: a later row supersedes the earlier
    one from its ``effective_at`` on, with no end date needed. ``ends_at`` is optional; a row past
    it is out of force, and the latest row still in force applies (or none)."""

    prefix: str
    rate: Decimal
    effective_at: datetime
    ends_at: datetime | None = None
    interstate_rate: Decimal | None = None
    intrastate_rate: Decimal | None = None
    indeterminate_rate: Decimal | None = None
    initial_s: int = 1
    subsequent_s: int = 1
    min_duration_s: int = 0
    connection_fee: Decimal = Decimal(0)

    def active_at(self, now: datetime) -> bool:
        return self.effective_at <= now and (self.ends_at is None or now < self.ends_at)

    @property
    def terms(self) -> Terms:
        return Terms(self.initial_s, self.subsequent_s, self.min_duration_s, self.connection_fee)

    def price_for(self, jurisdiction: Jurisdiction) -> Decimal:
        """The per-minute price for a call of this jurisdiction. Local calls are priced as
        intrastate; a missing jurisdictional column falls back to the row's ``rate``."""
        if jurisdiction is Jurisdiction.INTERSTATE and self.interstate_rate is not None:
            return self.interstate_rate
        if jurisdiction in (Jurisdiction.INTRASTATE, Jurisdiction.LOCAL) and self.intrastate_rate is not None:
            return self.intrastate_rate
        if jurisdiction is Jurisdiction.INDETERMINATE and self.indeterminate_rate is not None:
            return self.indeterminate_rate
        return self.rate


@dataclass(frozen=True, slots=True)
class CustomerRate(VendorRate):
    """A row of a customer's rate plan: billed per minute (60/60) unless it says otherwise."""

    initial_s: int = 60
    subsequent_s: int = 60


def longest_rate(rates: Mapping[str, tuple[VendorRate, ...]], max_len: int, digits: str,
                 now: datetime) -> VendorRate | None:
    """The rate of the longest prefix of ``digits`` that has one in force at ``now``."""
    for length in range(min(len(digits), max_len), 0, -1):
        entries = rates.get(digits[:length])
        if entries:
            for entry in reversed(entries):  # newest first
                if entry.active_at(now):
                    return entry
    return None


def index_rates(rates: Iterable[VendorRate]) -> tuple[Mapping[str, tuple[VendorRate, ...]], int]:
    by_prefix: dict[str, list[VendorRate]] = {}
    for rate in rates:
        by_prefix.setdefault(rate.prefix, []).append(rate)
    indexed = {p: tuple(sorted(rs, key=lambda r: r.effective_at)) for p, rs in by_prefix.items()}
    # a plain dict on the hot path (a read-only proxy costs a call per lookup); nothing writes it
    return indexed, max((len(p) for p in indexed), default=0)


@dataclass(frozen=True, slots=True)
class RatePlan:
    id: UUID
    name: str
    rates: Mapping[str, tuple[VendorRate, ...]]
    max_prefix_len: int = 0

    def rate_for(self, digits: str, now: datetime) -> CustomerRate | None:
        found = longest_rate(self.rates, self.max_prefix_len, digits, now)
        return found if isinstance(found, CustomerRate) else None


def build_rate_plan(id: UUID, name: str, rates: Iterable[CustomerRate]) -> RatePlan:
    indexed, max_len = index_rates(rates)
    return RatePlan(id, name, indexed, max_len)


@dataclass(frozen=True, slots=True)
class Translation:
    """How a vendor wants numbers written in the Request-URI (and From, if asked)."""

    number_format: NumberFormat = NumberFormat.E164
    strip_digits: int = 0
    add_prefix: str = ""
    tech_prefix: str = ""
    translate_caller: bool = False
    send_lrn: bool = False


@dataclass(frozen=True, slots=True)
class Vendor:
    id: UUID
    name: str
    gateways: tuple[Gateway, ...]
    # prefix -> that prefix's rates, oldest effective date first
    rates: Mapping[str, tuple[VendorRate, ...]]
    enabled: bool = True
    max_prefix_len: int = 0
    translation: Translation = field(default_factory=Translation)
    blocked: frozenset[str] = frozenset()  # destination prefixes this vendor must not carry


@dataclass(frozen=True, slots=True)
class PlanVendor:
    vendor_id: UUID
    priority: int = 0
    weight: int = 1


@dataclass(frozen=True, slots=True)
class RoutingPlan:
    id: UUID
    name: str
    strategy: str
    vendors: tuple[PlanVendor, ...]
    failover_codes: frozenset[int] = DEFAULT_FAILOVER
    max_attempts: int = 3
    attempt_timeout_ms: int | None = None
    blocked: frozenset[str] = frozenset()
    min_margin: Decimal = Decimal(0)
    allow_negative_margin: bool = False
    vendor_ids: frozenset[UUID] = field(init=False, repr=False, compare=False)  # hashed once, not per call

    def __post_init__(self) -> None:
        object.__setattr__(self, "vendor_ids", frozenset(m.vendor_id for m in self.vendors))


@dataclass(frozen=True, slots=True)
class Location:
    """Where a NANP NPA-NXX block is homed (LERG-like data)."""

    country: str
    state: str
    lata: str | None = None
    ocn: str | None = None
    rate_center: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    trunk_id: UUID
    username: str
    ha1: str  # MD5(username:realm:password); the password itself is never stored


@dataclass(frozen=True, slots=True)
class GatewayRef:
    vendor_id: UUID
    gateway: Gateway


class RateLookup(Protocol):
    max_len: int

    def rates_for(self, vendor_ids: frozenset[UUID], digits: str, now: datetime) -> dict[UUID, VendorRate]: ...


class RateIndex:
    """Every vendor's rates in one index, prefix -> ((vendor id, rates), ...): a call's rates are
    found with one lookup per prefix length, not one per vendor and length."""

    def __init__(self, vendors: Iterable[Vendor]) -> None:
        index: dict[str, list[tuple[UUID, tuple[VendorRate, ...]]]] = {}
        for vendor in vendors:
            for prefix, entries in vendor.rates.items():
                index.setdefault(prefix, []).append((vendor.id, entries))
        self._index = {p: tuple(v) for p, v in index.items()}
        self.max_len = max((len(p) for p in index), default=0)

    def rates_for(self, vendor_ids: frozenset[UUID], digits: str, now: datetime) -> dict[UUID, VendorRate]:
        found: dict[UUID, VendorRate] = {}
        index = self._index
        for length in range(min(len(digits), self.max_len), 0, -1):
            entries = index.get(digits[:length])
            if not entries:
                continue
            for vendor_id, rates in entries:
                if vendor_id in vendor_ids and vendor_id not in found:
                    for rate in reversed(rates):  # newest first
                        if rate.active_at(now):
                            found[vendor_id] = rate
                            break
            if len(found) == len(vendor_ids):
                break
        return found


@dataclass(frozen=True)
class RoutingSnapshot:
    version: str
    loaded_at: datetime
    accounts: Mapping[UUID, Account]
    trunks: Mapping[UUID, Trunk]
    acl: tuple[AclEntry, ...]
    vendors: Mapping[UUID, Vendor]
    plans: Mapping[UUID, RoutingPlan]
    npanxx: Mapping[str, Location] = field(default_factory=lambda: MappingProxyType({}))
    credentials: Mapping[str, Credential] = field(default_factory=lambda: MappingProxyType({}))
    dids: Mapping[str, UUID] = field(default_factory=lambda: MappingProxyType({}))  # E.164 digits -> trunk
    rate_plans: Mapping[UUID, RatePlan] = field(default_factory=lambda: MappingProxyType({}))
    # vendor gateways by IP address: a request from one of them is an inbound (origination) call
    gateway_hosts: Mapping[str, GatewayRef] = field(init=False, repr=False)
    # every vendor's rates in one index: built here from the vendors' decks, or the packed index
    # of a published snapshot file (whose vendors then carry no rates of their own)
    packed_index: RateLookup | None = field(default=None, repr=False)
    rate_index: RateLookup = field(init=False, repr=False)
    # ACL entries most specific first, so the first match is the best one.
    _acl_by_specificity: tuple[AclEntry, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ordered = sorted(
            self.acl,
            key=lambda e: (-e.network.prefixlen, e.port is None, e.transport is None, str(e.trunk_id)),
        )
        object.__setattr__(self, "_acl_by_specificity", tuple(ordered))
        hosts: dict[str, GatewayRef] = {}
        for vendor in self.vendors.values():
            for gw in vendor.gateways:
                try:
                    key = str(ipaddress.ip_address(gw.host))
                except ValueError:
                    continue  # a DNS name cannot be matched against a source address
                hosts.setdefault(key, GatewayRef(vendor.id, gw))
        object.__setattr__(self, "gateway_hosts", MappingProxyType(hosts))
        object.__setattr__(self, "rate_index", self.packed_index or RateIndex(self.vendors.values()))

    def rates_for(self, vendor_ids: frozenset[UUID], digits: str, now: datetime) -> dict[UUID, VendorRate]:
        """Each of these vendors' rate for ``digits`` (longest prefix in force at ``now``)."""
        return self.rate_index.rates_for(vendor_ids, digits, now)

    @property
    def acl_by_specificity(self) -> tuple[AclEntry, ...]:
        return self._acl_by_specificity

    def plan_for(self, trunk: Trunk) -> RoutingPlan | None:
        """The trunk's own plan, else its account's."""
        plan_id = trunk.routing_plan_id
        if plan_id is None:
            account = self.accounts.get(trunk.account_id)
            plan_id = account.routing_plan_id if account else None
        return self.plans.get(plan_id) if plan_id is not None else None

    def rate_plan_for(self, trunk: Trunk) -> RatePlan | None:
        """The customer price list for a trunk: its own, else its account's."""
        plan_id = trunk.rate_plan_id
        if plan_id is None:
            account = self.accounts.get(trunk.account_id)
            plan_id = account.rate_plan_id if account else None
        return self.rate_plans.get(plan_id) if plan_id is not None else None


def longest_blocked(blocked: frozenset[str], digits: str) -> str | None:
    """The blocked prefix that covers ``digits``, if any."""
    for length in range(len(digits), 0, -1):
        if digits[:length] in blocked:
            return digits[:length]
    return None


def build_vendor(
    id: UUID,
    name: str,
    gateways: Iterable[Gateway],
    rates: Iterable[VendorRate],
    enabled: bool = True,
    translation: Translation | None = None,
    blocked: Iterable[str] = (),
) -> Vendor:
    """A vendor with its rate deck indexed by prefix."""
    indexed, max_len = index_rates(rates)
    return Vendor(
        id=id,
        name=name,
        gateways=tuple(sorted(gateways, key=lambda g: (g.priority, g.name))),
        rates=indexed,
        enabled=enabled,
        max_prefix_len=max_len,
        translation=translation or Translation(),
        blocked=frozenset(blocked),
    )
