"""The rating maths: increments, minimums, fees, rounding, and what a sum of money buys."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing_engine.domain.lcr import MarginFloor
from routing_engine.domain.rating import (
    PER_SECOND,
    Price,
    Terms,
    bill,
    billable_seconds,
    charge,
    from_micros,
    max_duration,
    terms_from_text,
    to_micros,
    vendor_cost,
)
from routing_engine.domain.snapshot import VendorRate

from .factories import EPOCH

increments = st.sampled_from([(60, 60), (30, 6), (6, 6), (1, 1), (60, 1)])
prices = st.builds(
    lambda inc, per_minute, fee, minimum: Price(per_minute, inc[0], inc[1], minimum, fee),
    increments,
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("5"), places=6),
    st.decimals(min_value=Decimal("0"), max_value=Decimal("0.5"), places=6),
    st.sampled_from([0, 0, 30, 60]),
)


@pytest.mark.parametrize("duration, inc, expected", [
    (1, (60, 60), 60), (60, (60, 60), 60), (61, (60, 60), 120),
    (1, (6, 6), 6), (7, (6, 6), 12), (13, (6, 6), 18),
    (1, (1, 1), 1), (59, (1, 1), 59),
    (1, (30, 6), 30), (31, (30, 6), 36), (0, (60, 60), 0),
])
def test_billing_increments(duration: int, inc: tuple[int, int], expected: int) -> None:
    assert billable_seconds(duration, Price(Decimal("1"), *inc)) == expected


def test_minimum_duration_and_connection_fee() -> None:
    p = Price(Decimal("0.60"), 1, 1, min_duration_s=30, connection_fee=Decimal("0.05"))
    assert billable_seconds(10, p) == 30
    assert charge(10, p) == Decimal("0.350000")  # 0.05 + 0.60 * 30/60
    assert charge(0, p) == Decimal("0")  # unanswered: no fee either


def test_charges_round_half_up_to_the_millionth() -> None:
    p = Price(Decimal("0.000013"), 1, 1)
    assert charge(3, p) == Decimal("0.000001")  # 0.00000065 -> up
    assert charge(2, p) == Decimal("0.000000")  # 0.000000433.. -> down


@given(prices, st.integers(min_value=1, max_value=20000))
def test_billable_time_covers_the_call_and_sits_on_the_increment_lattice(p: Price, d: int) -> None:
    b = billable_seconds(d, p)
    assert b >= d and b >= p.min_duration_s and b >= p.initial_s
    assert b == p.initial_s or (b - p.initial_s) % p.subsequent_s == 0


@given(prices, st.integers(min_value=1, max_value=20000), st.integers(min_value=1, max_value=600))
def test_a_longer_call_never_costs_less(p: Price, d: int, more: int) -> None:
    assert charge(d + more, p) >= charge(d, p)


@given(prices, st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=6))
def test_the_longest_affordable_call_is_affordable_and_one_more_block_is_not(p: Price, funds: Decimal) -> None:
    cap = 100_000
    d = max_duration(funds, p, cap)
    if d == 0:
        assert charge(1, p) > funds
        return
    assert charge(d, p) <= funds
    if d < cap:
        assert charge(d + 1, p) > funds


def test_funds_for_thirty_seconds() -> None:
    p = Price(Decimal("1.20"), 1, 1)  # 0.02 per second
    assert max_duration(Decimal("0.60"), p, 14400) == 30
    assert max_duration(Decimal("0.019999"), p, 14400) == 0


@given(st.decimals(min_value=Decimal("-1000000"), max_value=Decimal("1000000"), places=6))
def test_micros_round_trip(amount: Decimal) -> None:
    assert from_micros(to_micros(amount)) == amount


# ------------------------------------------------------------------ what a vendor charges us

SIXTY_SIXTY_MIN_30 = Terms(60, 60, 30, Decimal(0))


@pytest.mark.parametrize("duration, expected", [
    (0, "0"),              # unanswered: nothing
    (1, "0.012000"),       # one second: the whole first increment (60 s) at 0.012/min
    (30, "0.012000"),      # the 30 s minimum lies inside the first increment
    (60, "0.012000"),      # exactly on the increment: no extra block
    (61, "0.024000"),      # one second into the next block: the whole block
    (120, "0.024000"),
    (121, "0.036000"),
])
def test_a_sixty_sixty_vendor_with_a_thirty_second_minimum_bills_whole_minutes(duration: int,
                                                                              expected: str) -> None:
    assert vendor_cost(duration, Decimal("0.012"), SIXTY_SIXTY_MIN_30) == Decimal(expected)


@pytest.mark.parametrize("duration, terms, expected", [
    (1, Terms(6, 6), "0.001200"),             # 6 s at 0.012/min
    (6, Terms(6, 6), "0.001200"),
    (7, Terms(6, 6), "0.002400"),
    (1, Terms(30, 6), "0.006000"),            # first 30 s whole
    (30, Terms(30, 6), "0.006000"),
    (31, Terms(30, 6), "0.007200"),           # 30 + one 6 s block
    (10, Terms(6, 6, 30), "0.006000"),        # raised to the 30 s minimum, which sits on the 6 s lattice
    (31, Terms(6, 6, 30), "0.007200"),        # past the minimum: 36 s
    (17, Terms(1, 1), "0.003400"),            # per second
    (0, Terms(6, 6, 30, Decimal("0.01")), "0"),  # unanswered: no connection fee either
    (1, Terms(6, 6, 0, Decimal("0.01")), "0.011200"),  # answered: the fee on top of the first block
])
def test_vendor_increments_minimums_and_connection_fee(duration: int, terms: Terms, expected: str) -> None:
    assert vendor_cost(duration, Decimal("0.012"), terms) == Decimal(expected)


def test_vendor_cost_rounds_half_up_to_the_millionth_once() -> None:
    # 7 s at 0.000013/min per second: 0.0000015166.. -> 0.000002; the fee is added before rounding
    assert vendor_cost(7, Decimal("0.000013"), PER_SECOND) == Decimal("0.000002")
    assert vendor_cost(7, Decimal("0.000013"), Terms(1, 1, 0, Decimal("0.0000005"))) == Decimal("0.000002")
    assert vendor_cost(3, Decimal("0.000010"), Terms(1, 1, 0, Decimal("0.0000005"))) == Decimal("0.000001")
    # 0.0000005 exactly: half rounds up
    assert vendor_cost(3, Decimal("0.000010"), PER_SECOND) == Decimal("0.000001")


def test_a_vendor_row_without_terms_is_billed_per_second_as_before() -> None:
    assert vendor_cost(61, Decimal("0.012")) == Decimal("0.012200")
    assert terms_from_text(None) == PER_SECOND and terms_from_text("") == PER_SECOND


@given(st.sampled_from([Terms(60, 60, 30), Terms(6, 6), Terms(30, 6, 0, Decimal("0.02")), PER_SECOND]))
def test_terms_survive_their_compact_form(terms: Terms) -> None:
    assert terms_from_text(terms.to_text()) == terms


def test_a_finished_call_bills_the_vendor_by_its_terms_for_the_seconds_the_customer_pays() -> None:
    customer = Price(Decimal("0.018"), 6, 6)
    owed = bill(45, 600, customer, Decimal("0.012"), SIXTY_SIXTY_MIN_30)
    assert (owed.billable_s, owed.customer_price, owed.vendor_cost, owed.margin) == (
        48, Decimal("0.014400"), Decimal("0.012000"), Decimal("0.002400"))
    capped = bill(700, 600, customer, Decimal("0.012"), SIXTY_SIXTY_MIN_30)  # cut at the paid-for 600 s
    assert capped.vendor_cost == Decimal("0.120000")
    assert bill(0, 600, customer, Decimal("0.012"), Terms(60, 60, 30, Decimal("0.05"))).vendor_cost == Decimal(0)


@given(st.integers(min_value=1, max_value=7200), st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=6),
       st.sampled_from([(1, 1), (60, 60), (6, 6), (30, 6), (60, 1)]), st.sampled_from([0, 30, 61]),
       st.decimals(min_value=Decimal("0"), max_value=Decimal("0.5"), places=6))
def test_margin_protection_costs_a_vendor_exactly_as_its_cdr_will(expected_s: int, per_minute: Decimal,
                                                                  inc: tuple[int, int], minimum: int,
                                                                  fee: Decimal) -> None:
    row = VendorRate("1", per_minute, EPOCH, None, None, None, None, inc[0], inc[1], minimum, fee)
    floor = MarginFloor(Price(Decimal("0.01")), expected_s)
    assert floor.cost(per_minute, row) == vendor_cost(expected_s, per_minute, row.terms)
