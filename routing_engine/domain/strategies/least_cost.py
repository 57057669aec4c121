"""Least cost (the default): cheapest first; equal prices by plan priority, then vendor name."""

from __future__ import annotations

import random
from collections.abc import Sequence

from routing_engine.domain.lcr import Candidate


def order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.cost, c.priority, c.vendor_name))
