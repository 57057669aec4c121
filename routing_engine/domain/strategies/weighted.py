"""Weighted split: traffic shared in proportion to the plan's weights.

The first vendor is drawn with probability weight / total, the next among the rest, and so on
(draws without replacement), from a generator seeded by the call, so one call always gets the
same order and the explain output can reproduce it. Weight 0 vendors come last, cheapest first.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from routing_engine.domain.lcr import Candidate


def order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    pool = sorted((c for c in candidates if c.weight > 0), key=lambda c: (c.vendor_name, str(c.vendor_id)))
    zero = sorted((c for c in candidates if c.weight <= 0), key=lambda c: (c.cost, c.vendor_name))
    ordered: list[Candidate] = []
    while pool:
        pick = rng.uniform(0, sum(c.weight for c in pool))
        for i, c in enumerate(pool):
            pick -= c.weight
            if pick <= 0 or i == len(pool) - 1:
                ordered.append(pool.pop(i))
                break
    return ordered + zero
