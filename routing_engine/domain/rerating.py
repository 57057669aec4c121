"""Rerating: what a finished call should have cost under the prices in force now, and the ledger
adjustment that makes its charge right.

Rules:
- The call is priced as at its INVITE (``invite_at``), with the rate plan its trunk (else its
  account) has now, by the longest prefix of its destination (the LRN when it was ported) and
  its jurisdiction: the rules of domain/decision.py and domain/rating.py, so a rerated call costs
  exactly what a live call with the corrected deck would.
- The duration is the CDR's ``duration_s`` (what the call lasted, already cut at what its
  reservation paid for); billable seconds, increments, minimum and connection fee follow the
  corrected rate.
- What was charged so far is the call's charge plus the adjustments of earlier rerating runs.
  The difference ``charged so far - corrected charge`` is posted as one adjustment (a credit when
  the call was overcharged); a call already right posts nothing, so a second run posts nothing.
- Each adjustment of a call has its own reference, ``rerate:<cdr id>:<n>`` (n = the number of
  adjustments the call had before, plus one): two runs that race post it once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from routing_engine.domain.rating import Price, billable_seconds, charge_for_billable
from routing_engine.domain.snapshot import Jurisdiction, RatePlan

PREFIX = "rerate:"


def customer_price(rate_plan: RatePlan | None, destination: str, jurisdiction: Jurisdiction,
                   at: datetime) -> Price | None:
    """The customer's price for a call to ``destination`` at ``at`` (as domain/decision.py finds it)."""
    rate = rate_plan.rate_for(destination, at) if rate_plan else None
    if rate is None:
        return None
    return Price(rate.price_for(jurisdiction), rate.initial_s, rate.subsequent_s, rate.min_duration_s,
                 rate.connection_fee, rate.prefix)


def jurisdiction_of(text: str | None) -> Jurisdiction:
    try:
        return Jurisdiction(text or "")
    except ValueError:
        return Jurisdiction.INDETERMINATE


@dataclass(frozen=True, slots=True)
class Rerated:
    cdr_id: UUID
    account_id: UUID
    charged: Decimal           # what the call cost the account so far (charge + earlier adjustments)
    corrected: Decimal         # what it costs at the corrected price
    billable_s: int
    price: Price

    @property
    def adjustment(self) -> Decimal:
        """What goes back to the account (negative: what it still owes)."""
        return self.charged - self.corrected


def rerate(cdr_id: UUID, account_id: UUID, duration_s: int, charged: Decimal, price: Price) -> Rerated:
    billable = billable_seconds(duration_s, price)
    return Rerated(cdr_id, account_id, charged, charge_for_billable(billable, price), billable, price)


def adjustment_reference(cdr_id: UUID, earlier: int) -> str:
    """The reference of a call's next rerating adjustment, after ``earlier`` ones."""
    return f"{PREFIX}{cdr_id}:{earlier + 1}"


def adjusted_call(reference: str) -> UUID | None:
    """The call a rerating adjustment's reference names (None if it names none)."""
    if not reference.startswith(PREFIX):
        return None
    try:
        return UUID(reference[len(PREFIX):].rpartition(":")[0])
    except ValueError:
        return None
