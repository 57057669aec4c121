"""Routing snapshot: the immutable, in-memory copy of the routing configuration.

Postgres is the source of truth; a loader (adapters/postgres.py) reads it once and builds one
``RoutingSnapshot``. Decisions read only this value, so no query ever runs on the call path and
a half-applied edit is never visible: a reload builds a new snapshot and swaps it whole.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from uuid import UUID

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TESTING = "testing"
    CLOSED = "closed"


class Jurisdiction(StrEnum):
    """How a NANP call is priced; later issues compute it from NPANXX data."""

    INTERSTATE = "interstate"
    INTRASTATE = "intrastate"
    INDETERMINATE = "indeterminate"
    INTERNATIONAL = "international"


@dataclass(frozen=True, slots=True)
class Account:
    id: UUID
    ban: str
    name: str
    status: AccountStatus
    status_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Trunk:
    id: UUID
    account_id: UUID
    name: str
    routing_plan_id: UUID | None
    enabled: bool = True


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

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        suffix = "" if self.transport == "udp" else f";transport={self.transport}"
        return f"sip:{host}:{self.port}{suffix}"


@dataclass(frozen=True, slots=True)
class VendorRate:
    prefix: str
    rate: Decimal
    effective_at: datetime
    ends_at: datetime | None = None
    interstate_rate: Decimal | None = None
    intrastate_rate: Decimal | None = None

    def active_at(self, now: datetime) -> bool:
        return self.effective_at <= now and (self.ends_at is None or now < self.ends_at)

    def price_for(self, jurisdiction: Jurisdiction) -> Decimal:
        if jurisdiction is Jurisdiction.INTERSTATE and self.interstate_rate is not None:
            return self.interstate_rate
        if jurisdiction is Jurisdiction.INTRASTATE and self.intrastate_rate is not None:
            return self.intrastate_rate
        return self.rate


@dataclass(frozen=True, slots=True)
class Vendor:
    id: UUID
    name: str
    gateways: tuple[Gateway, ...]
    # prefix -> that prefix's rates, oldest effective date first
    rates: Mapping[str, tuple[VendorRate, ...]]
    enabled: bool = True
    max_prefix_len: int = 0

    def rate_for(self, digits: str, now: datetime) -> VendorRate | None:
        """Longest prefix of ``digits`` with a rate in force at ``now``."""
        for length in range(min(len(digits), self.max_prefix_len), 0, -1):
            entries = self.rates.get(digits[:length])
            if entries:
                for entry in reversed(entries):  # newest first
                    if entry.active_at(now):
                        return entry
        return None


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


@dataclass(frozen=True)
class RoutingSnapshot:
    version: str
    loaded_at: datetime
    accounts: Mapping[UUID, Account]
    trunks: Mapping[UUID, Trunk]
    acl: tuple[AclEntry, ...]
    vendors: Mapping[UUID, Vendor]
    plans: Mapping[UUID, RoutingPlan]
    # ACL entries most specific first, so the first match is the best one.
    _acl_by_specificity: tuple[AclEntry, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        ordered = sorted(
            self.acl,
            key=lambda e: (-e.network.prefixlen, e.port is None, e.transport is None, str(e.trunk_id)),
        )
        object.__setattr__(self, "_acl_by_specificity", tuple(ordered))

    @property
    def acl_by_specificity(self) -> tuple[AclEntry, ...]:
        return self._acl_by_specificity


def build_vendor(
    id: UUID, name: str, gateways: Iterable[Gateway], rates: Iterable[VendorRate], enabled: bool = True
) -> Vendor:
    """A vendor with its rate deck indexed by prefix."""
    by_prefix: dict[str, list[VendorRate]] = {}
    for rate in rates:
        by_prefix.setdefault(rate.prefix, []).append(rate)
    indexed = {p: tuple(sorted(rs, key=lambda r: r.effective_at)) for p, rs in by_prefix.items()}
    return Vendor(
        id=id,
        name=name,
        gateways=tuple(sorted(gateways, key=lambda g: (g.priority, g.name))),
        rates=MappingProxyType(indexed),
        enabled=enabled,
        max_prefix_len=max((len(p) for p in indexed), default=0),
    )
