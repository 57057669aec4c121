"""The rating maths: increments, minimums, fees, rounding, and what a sum of money buys."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing_engine.domain.rating import Price, billable_seconds, charge, from_micros, max_duration, to_micros

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
