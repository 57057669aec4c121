"""Rerating's pure rules: the corrected charge with the rate's increments, the adjustment's
sign, and the references that keep every adjustment of a call apart."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from routing_engine.domain import rerating
from routing_engine.domain.snapshot import CustomerRate, Jurisdiction, build_rate_plan

AT = datetime(2026, 11, 30, 12, tzinfo=UTC)
CALL = uuid.UUID("00000000-0000-0000-0000-000000000018")


def plan(**kw: object):  # type: ignore[no-untyped-def]
    rate = CustomerRate(prefix="1", rate=Decimal("0.012"), effective_at=datetime(2020, 1, 1, tzinfo=UTC),
                        **kw)  # type: ignore[arg-type]
    return build_rate_plan(uuid.uuid4(), "p", [rate])


def test_the_corrected_charge_follows_the_rates_increments_minimum_and_fee() -> None:
    price = rerating.customer_price(plan(initial_s=30, subsequent_s=6, min_duration_s=45,
                                         connection_fee=Decimal("0.001")), "12125551234",
                                    Jurisdiction.INTERSTATE, AT)
    assert price is not None
    r = rerating.rerate(CALL, CALL, 47, Decimal("0.020000"), price)
    # 47 s: 30 + 3 x 6 = 48 billable; 0.001 + 0.012 x 48 / 60 = 0.0106
    assert (r.billable_s, r.corrected, r.adjustment) == (48, Decimal("0.010600"), Decimal("0.009400"))


def test_an_undercharged_call_owes_the_difference() -> None:
    price = rerating.customer_price(plan(), "1212", Jurisdiction.INTRASTATE, AT)
    assert price is not None
    assert rerating.rerate(CALL, CALL, 60, Decimal("0.010000"), price).adjustment == Decimal("-0.002000")


def test_jurisdiction_prices_apply_and_no_rate_means_no_price() -> None:
    price = rerating.customer_price(plan(interstate_rate=Decimal("0.030")), "1212", Jurisdiction.INTERSTATE, AT)
    assert price is not None and price.per_minute == Decimal("0.030")
    assert rerating.customer_price(plan(), "4420", Jurisdiction.INTERSTATE, AT) is None
    assert rerating.customer_price(None, "1212", Jurisdiction.INTERSTATE, AT) is None
    assert rerating.jurisdiction_of(None) is Jurisdiction.INDETERMINATE
    assert rerating.jurisdiction_of("interstate") is Jurisdiction.INTERSTATE


def test_each_adjustment_of_a_call_has_its_own_reference_naming_the_call() -> None:
    refs = [rerating.adjustment_reference(CALL, n) for n in range(3)]
    assert refs == [f"rerate:{CALL}:1", f"rerate:{CALL}:2", f"rerate:{CALL}:3"]
    assert {rerating.adjusted_call(r) for r in refs} == {CALL}
    assert rerating.adjusted_call("ticket-1") is None and rerating.adjusted_call("rerate:nope:1") is None
