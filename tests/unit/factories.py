"""Small builders for snapshots in unit tests (no database)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

from routing_engine.domain.rating import terms_from_text
from routing_engine.domain.snapshot import (
    Account,
    AccountStatus,
    AclEntry,
    CustomerRate,
    Gateway,
    Location,
    PlanVendor,
    RatePlan,
    RoutingPlan,
    RoutingSnapshot,
    Translation,
    Trunk,
    VendorRate,
    build_rate_plan,
    build_vendor,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def rate(prefix: str, price: str, effective: datetime = EPOCH, ends: datetime | None = None,
         inter: str | None = None, intra: str | None = None, billing: str | None = None) -> VendorRate:
    """A vendor rate row; ``billing`` is its terms as "initial/subsequent/minimum/fee" (else per second)."""
    terms = terms_from_text(billing)
    return VendorRate(prefix, Decimal(price), effective, ends,
                      Decimal(inter) if inter else None, Decimal(intra) if intra else None, None,
                      terms.initial_s, terms.subsequent_s, terms.min_duration_s, terms.connection_fee)


def customer_rate(prefix: str, price: str, initial: int = 60, subsequent: int = 60, fee: str = "0",
                  minimum: int = 0, inter: str | None = None, intra: str | None = None) -> CustomerRate:
    return CustomerRate(prefix, Decimal(price), EPOCH, None, Decimal(inter) if inter else None,
                        Decimal(intra) if intra else None, None, initial, subsequent, minimum, Decimal(fee))


def gateway(host: str, name: str = "gw1", enabled: bool = True, priority: int = 0) -> Gateway:
    return Gateway(uuid.uuid4(), name, host, 5060, "udp", priority, enabled)


class World:
    """A mutable recipe for a snapshot: add parts, then call snapshot()."""

    def __init__(self) -> None:
        self.accounts: dict[uuid.UUID, Account] = {}
        self.trunks: dict[uuid.UUID, Trunk] = {}
        self.acl: list[AclEntry] = []
        self.vendors: dict = {}
        self.plans: dict[uuid.UUID, RoutingPlan] = {}
        self.npanxx: dict[str, Location] = {}
        self.rate_plans: dict[uuid.UUID, RatePlan] = {}
        # customers pay 1.00/min everywhere unless a test gives them a plan of their own
        self.retail = self.rate_plan("retail", [customer_rate(str(d), "1.00") for d in range(1, 10)])

    def rate_plan(self, name: str, rates: list[CustomerRate]) -> uuid.UUID:
        pid = uuid.uuid4()
        self.rate_plans[pid] = build_rate_plan(pid, name, rates)
        return pid

    def vendor(self, name: str, rates: list[VendorRate], gateways: list[Gateway] | None = None,
               enabled: bool = True, translation: Translation | None = None,
               blocked: tuple[str, ...] = ()) -> uuid.UUID:
        vid = uuid.uuid4()
        self.vendors[vid] = build_vendor(vid, name, gateways or [gateway(f"192.0.2.{len(self.vendors) + 1}")],
                                         rates, enabled, translation, blocked)
        return vid

    def plan(self, name: str, vendor_ids: list[uuid.UUID], strategy: str = "least_cost",
             blocked: tuple[str, ...] = (), max_attempts: int = 3) -> uuid.UUID:
        pid = uuid.uuid4()
        self.plans[pid] = RoutingPlan(pid, name, strategy,
                                      tuple(PlanVendor(v, i) for i, v in enumerate(vendor_ids)),
                                      max_attempts=max_attempts, blocked=frozenset(blocked))
        return pid

    def customer(self, cidr: str, plan_id: uuid.UUID | None, status: AccountStatus = AccountStatus.ACTIVE,
                 trunk_enabled: bool = True, port: int | None = None,
                 transport: str | None = None, name: str = "trunk-1",
                 rate_plan: uuid.UUID | None | str = "retail") -> uuid.UUID:
        aid = uuid.uuid4()
        self.accounts[aid] = Account(aid, f"BAN{len(self.accounts) + 1}", f"Customer {aid}", status,
                                     rate_plan_id=self.retail if rate_plan == "retail" else rate_plan)  # type: ignore[arg-type]
        tid = uuid.uuid4()
        self.trunks[tid] = Trunk(tid, aid, name, plan_id, trunk_enabled)
        self.acl.append(AclEntry(tid, ipaddress.ip_network(cidr), port, transport))
        return tid

    def snapshot(self) -> RoutingSnapshot:
        return RoutingSnapshot(
            version="test", loaded_at=NOW,
            accounts=MappingProxyType(dict(self.accounts)), trunks=MappingProxyType(dict(self.trunks)),
            acl=tuple(self.acl), vendors=MappingProxyType(dict(self.vendors)),
            plans=MappingProxyType(dict(self.plans)), npanxx=MappingProxyType(dict(self.npanxx)),
            rate_plans=MappingProxyType(dict(self.rate_plans)),
        )
