"""Validation: a snapshot that would route wrongly is refused before it goes into service.

Each problem names the rows involved, so the log tells ops what to fix:
- a rate that is negative, or two rates of one vendor (or customer plan) and prefix whose
  effective periods overlap (which one applies would be a guess);
- a routing plan with no vendors, or one that names a vendor that does not exist (deleted);
- a trunk or account pointing at a routing plan or rate plan that does not exist;
- a routing plan whose strategy is unknown;
- a trunk whose allowed media codecs are not encoding names rtpengine could take.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from routing_engine.media import codec_problems
from routing_engine.snapshot import RoutingSnapshot, VendorRate
from routing_engine.strategies import STRATEGIES


def _rate_problems(owner: str, rates: Mapping[str, tuple[VendorRate, ...]]) -> Iterable[str]:
    for prefix, entries in rates.items():
        for r in entries:
            prices = (r.rate, r.interstate_rate, r.intrastate_rate, r.indeterminate_rate)
            if any(p is not None and p < 0 for p in prices):
                yield f"{owner}: negative rate for prefix {prefix} (effective {r.effective_at.isoformat()})"
        for earlier, later in zip(entries, entries[1:], strict=False):
            if earlier.ends_at is None or earlier.ends_at > later.effective_at:
                end = earlier.ends_at.isoformat() if earlier.ends_at else "open-ended"
                yield (f"{owner}: rates for prefix {prefix} overlap: {earlier.effective_at.isoformat()} to {end}"
                       f" and from {later.effective_at.isoformat()}")


def problems(snapshot: RoutingSnapshot) -> list[str]:
    found: list[str] = []
    for vendor in snapshot.vendors.values():
        found.extend(_rate_problems(f"vendor {vendor.name}", vendor.rates))
    for rate_plan in snapshot.rate_plans.values():
        found.extend(_rate_problems(f"rate plan {rate_plan.name}", rate_plan.rates))
    for plan in snapshot.plans.values():
        if not plan.vendors:
            found.append(f"routing plan {plan.name}: has no vendors")
        for member in plan.vendors:
            if member.vendor_id not in snapshot.vendors:
                found.append(f"routing plan {plan.name}: vendor {member.vendor_id} does not exist (deleted?)")
        if plan.strategy not in STRATEGIES:
            found.append(f"routing plan {plan.name}: unknown strategy {plan.strategy!r}")
    for trunk in snapshot.trunks.values():
        if trunk.routing_plan_id is not None and trunk.routing_plan_id not in snapshot.plans:
            found.append(f"trunk {trunk.name} ({trunk.id}): routing plan {trunk.routing_plan_id} does not exist")
        if trunk.rate_plan_id is not None and trunk.rate_plan_id not in snapshot.rate_plans:
            found.append(f"trunk {trunk.name} ({trunk.id}): rate plan {trunk.rate_plan_id} does not exist")
        found.extend(f"trunk {trunk.name} ({trunk.id}): media: {p}" for p in codec_problems(trunk.media))
    for account in snapshot.accounts.values():
        if account.routing_plan_id is not None and account.routing_plan_id not in snapshot.plans:
            found.append(f"account {account.ban}: routing plan {account.routing_plan_id} does not exist")
        if account.rate_plan_id is not None and account.rate_plan_id not in snapshot.rate_plans:
            found.append(f"account {account.ban}: rate plan {account.rate_plan_id} does not exist")
    return found
