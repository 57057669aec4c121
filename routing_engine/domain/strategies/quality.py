"""Quality-adjusted least cost: vendors demoted for poor quality (ASR below the plan's bar over
the sliding window, see adapters/quality.py) are tried last; within each group, least cost
rules (price, then plan priority, then name). A demoted vendor is not dropped: if every better
vendor fails, the call still has somewhere to go."""

from __future__ import annotations

import random
from collections.abc import Sequence

from routing_engine.domain.lcr import Candidate


def order(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (c.note is not None, c.cost, c.priority, c.vendor_name))
