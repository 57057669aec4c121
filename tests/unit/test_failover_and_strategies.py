import random
import uuid
from collections import Counter
from decimal import Decimal

import pytest

from routing_engine.domain.failover import Attempt, Policy, best_response, next_route
from routing_engine.domain.lcr import Candidate
from routing_engine.domain.strategies import STRATEGIES, UnknownStrategy, strategy

POLICY = Policy(frozenset({408, 500, 502, 503, 504}), max_attempts=3)


def attempts(*codes: int) -> list[Attempt]:
    return [Attempt(f"v{i}", f"gw{i}", c, str(c)) for i, c in enumerate(codes)]


def test_first_attempt_takes_the_first_route() -> None:
    assert next_route(POLICY, 3, []) == 0


@pytest.mark.parametrize("code", [503, 408, 500])
def test_retryable_failure_moves_to_the_next_route(code: int) -> None:
    assert next_route(POLICY, 3, attempts(code)) == 1


@pytest.mark.parametrize("code", [486, 404, 487, 603, 480])
def test_busy_not_found_cancelled_or_declined_never_fail_over(code: int) -> None:
    assert next_route(POLICY, 3, attempts(code)) is None


def test_never_codes_stay_final_even_if_a_plan_lists_them() -> None:
    sloppy = Policy(frozenset({486, 503}), max_attempts=3)
    assert next_route(sloppy, 3, attempts(486)) is None


def test_attempts_are_bounded_by_the_plan_and_by_the_routes() -> None:
    assert next_route(Policy(frozenset({503}), max_attempts=2), 5, attempts(503, 503)) is None
    assert next_route(POLICY, 2, attempts(503, 503)) is None


@pytest.mark.parametrize("codes, best", [
    ((503, 408), 503),
    ((408, 503), 503),
    ((503, 486), 486),
    ((500, 503, 502), 503),
    ((503, 603), 603),
    ((408,), 408),
    ((502, 500), 502),
])
def test_customer_gets_the_best_final_response(codes: tuple[int, ...], best: int) -> None:
    assert best_response(attempts(*codes))[0] == best


def cand(name: str, rate: str, priority: int = 0, weight: int = 1) -> Candidate:
    return Candidate(uuid.uuid4(), name, priority, weight, Decimal(rate), "1")


def names(cs: list[Candidate]) -> list[str]:
    return [c.vendor_name for c in cs]


def test_least_cost_orders_by_price_then_priority_then_name() -> None:
    cs = [cand("c", "0.02", 0), cand("b", "0.01", 2), cand("a", "0.01", 2), cand("d", "0.01", 1)]
    assert names(strategy("least_cost")(cs, random.Random(1))) == ["d", "a", "b", "c"]


def test_priority_orders_by_plan_position_then_price() -> None:
    cs = [cand("cheap", "0.01", 2), cand("dear", "0.05", 1), cand("mid", "0.02", 1)]
    assert names(strategy("priority")(cs, random.Random(1))) == ["mid", "dear", "cheap"]


def test_weighted_split_follows_the_weights_and_is_stable_per_call() -> None:
    cs = [cand("a", "0.01", weight=70), cand("b", "0.01", weight=30), cand("z", "0.01", weight=0)]
    firsts = Counter(names(strategy("weighted")(cs, random.Random(seed)))[0] for seed in range(4000))
    assert 0.66 < firsts["a"] / 4000 < 0.74 and firsts["z"] == 0
    assert strategy("weighted")(cs, random.Random(42)) == strategy("weighted")(cs, random.Random(42))
    assert names(strategy("weighted")(cs, random.Random(7)))[-1] == "z"


def test_unknown_strategy_is_named_in_the_error() -> None:
    with pytest.raises(UnknownStrategy, match="'fastest'"):
        strategy("fastest")
    assert set(STRATEGIES) == {"least_cost", "priority", "weighted", "quality"}


def test_quality_strategy_tries_demoted_vendors_last_and_cheapest_first_within_each_group() -> None:
    from dataclasses import replace

    cs = [replace(cand("cheap-but-poor", "0.001"), note="demoted: ASR 5%"), cand("mid", "0.02"),
          cand("dear", "0.05"), replace(cand("poor-and-dear", "0.09"), note="demoted: ASR 1%")]
    assert names(strategy("quality")(cs, random.Random(1))) == ["mid", "dear", "cheap-but-poor", "poor-and-dear"]
