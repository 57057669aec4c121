"""Priority: the plan's order (lower number first); equal priorities cheapest first, then name."""

from __future__ import annotations

import random
from collections.abc import Sequence

from routing_engine.domain.lcr import Candidate


def order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.priority, c.cost, c.vendor_name))
