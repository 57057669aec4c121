"""Replay's comparison of a recorded call with its candidate decision, without a database."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from routing_engine.domain import lcr
from routing_engine.domain.decision import CallContext, Reject, Relay
from routing_engine.domain.failover import Policy
from routing_engine.domain.numbers import normalise
from routing_engine.domain.rating import Price
from routing_engine.domain.replay import Recorded, Report, Unreplayable, compare, recorded_lrn, request_of
from routing_engine.domain.snapshot import Gateway
from routing_engine.entrypoints.whatif_cli import ReplayProgress

AT = datetime(2026, 11, 30, 10, tzinfo=UTC)
A, B = uuid.uuid4(), uuid.uuid4()


def recorded(**overrides: object) -> Recorded:
    fields: dict[str, object] = dict(
        cdr_id=uuid.uuid4(), call_id="c1", invite_at=AT, sip_code=200, trunk_id=uuid.uuid4(), ban="BAN1",
        provider_id=A, to_raw="12125551234", duration_s=90, customer_price=Decimal("0.030000"),
        vendor_cost=Decimal("0.015000"), priced_at="1212")
    fields.update(overrides)
    return Recorded(**fields)  # type: ignore[arg-type]


def relay(vendor: uuid.UUID, rate: str, price: str = "0.020") -> Relay:
    route = lcr.Route(vendor, "v", Gateway(uuid.uuid4(), "gw", "127.0.43.10"), Decimal(rate), "1", "12125551234")
    return Relay((route,), CallContext(), {}, Policy(frozenset({503}), 1, None), Price(Decimal(price), 6, 6))


def test_the_lrn_is_the_one_the_cdr_recorded_whatever_is_asked() -> None:
    lookup = recorded_lrn(recorded(lrn="+12125550000", lrn_source="local"))
    result = lookup(normalise("13105550000", "US"))
    assert (result.lrn, result.source) == ("12125550000", "local")
    failed = recorded_lrn(recorded(lrn_source="failed"))(normalise("13105550000", "US"))
    assert (failed.lrn, failed.source) == (None, "failed")
    with pytest.raises(Unreplayable, match="bad LRN"):
        recorded_lrn(recorded(lrn="+1x"))


@pytest.mark.parametrize(("overrides", "why"), [
    ({"trunk_id": None}, "no trunk"),
    ({"direction": "inbound"}, "only outbound"),
    ({"to_raw": ""}, "no dialed number"),
    ({"customer_price": None}, "no customer price"),
])
def test_a_cdr_without_what_a_decision_needs_is_unreplayable(overrides: dict[str, object], why: str) -> None:
    with pytest.raises(Unreplayable, match=why):
        request_of(recorded(**overrides))


def test_a_call_moved_to_another_vendor_counts_its_cost_change_exactly() -> None:
    call = compare(recorded(), relay(B, "0.013"))
    assert call.rerouted and not call.refused
    # 90 s at 0.013/min per second = 0.0195; the customer pays 90 s in 6 s blocks at 0.020 = 0.030
    assert (call.revenue_after, call.cost_after) == (Decimal("0.030000"), Decimal("0.019500"))
    assert call.margin_delta == Decimal("-0.004500")
    assert compare(recorded(), relay(A, "0.010")).rerouted is False


def test_a_refused_call_loses_its_revenue_and_cost_and_a_refused_one_may_be_routed() -> None:
    call = compare(recorded(), Reject(503, "No Route Available"))
    assert call.refused and call.refusal == "503 No Route Available"
    assert call.margin_delta == Decimal("-0.015000")
    was_refused = compare(recorded(provider_id=None, duration_s=0, customer_price=None), relay(B, "0.013"))
    assert was_refused.newly_routed and was_refused.margin_delta == 0


def test_the_report_counts_everything_and_lists_up_to_its_limit() -> None:
    report = Report("draft x", "v1", AT, AT, max_listed=2)
    for _ in range(3):
        report.add(compare(recorded(), relay(B, "0.013")))
    report.add(compare(recorded(ban="BAN2"), relay(A, "0.008")))  # the same vendor, cheaper: listed for its price
    for n in range(3):
        report.skip(uuid.uuid4(), f"bad-{n}", f"unknown trunk: {n}")
    assert (report.total.calls, report.total.rerouted, report.changed, len(report.changes)) == (4, 3, 4, 2)
    assert report.by_customer["BAN1"].rerouted == 3 and report.by_customer["BAN2"].rerouted == 0
    assert set(report.by_destination) == {"1212"}
    assert (report.unreplayable, len(report.skipped), report.reasons) == (3, 2, {"unknown trunk": 3})
    assert report.to_json()["total"]["margin"]["delta"] == "-0.010500"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_drawn_on_a_terminal_only() -> None:
    quiet = io.StringIO()
    ReplayProgress(quiet)(500, 1000)
    assert quiet.getvalue() == ""
    screen = Terminal()
    bar = ReplayProgress(screen)
    bar._drawn = -1.0  # as if the last drawing were long ago
    bar(500, 1000)
    bar.finish()
    assert "[###############---------------]  50%  500 of 1,000 calls" in screen.getvalue()
    assert screen.getvalue().endswith("\n")
