"""Strategies: how a routing plan orders the vendors that may carry a call.

One module per strategy, one function signature, one dispatch map. A strategy receives only
kept candidates and returns them in the order they are tried; each order is explainable from
the candidates' own data (rate, priority, weight). Ties are broken as each module states.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from routing_engine.domain.lcr import Candidate
from routing_engine.domain.strategies import least_cost, priority, quality, weighted

Strategy = Callable[[Sequence[Candidate], random.Random], list[Candidate]]

STRATEGIES: dict[str, Strategy] = {
    "least_cost": least_cost.order,
    "priority": priority.order,
    "weighted": weighted.order,
    "quality": quality.order,
}


class UnknownStrategy(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown routing strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})")
        self.name = name


def strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(name) from None
