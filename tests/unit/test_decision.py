from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from routing_engine.domain.decision import CallRequest, Reject, Relay, decide_invite
from routing_engine.domain.snapshot import AccountStatus
from routing_engine.domain.validation import problems

from .factories import NOW, World, customer_rate, gateway, rate


def call(source: str = "10.0.0.1", dialed: str = "12125551234", caller: str = "13055550100") -> CallRequest:
    return CallRequest("c1", source, 5060, "udp", dialed, caller)


def two_vendor_world() -> tuple[World, dict[str, object]]:
    w = World()
    a = w.vendor("vendor-a", [rate("1", "0.0100"), rate("1212", "0.0090")])
    b = w.vendor("vendor-b", [rate("1", "0.0080")])
    plan = w.plan("standard", [a, b])
    trunk = w.customer("10.0.0.1/32", plan)
    return w, {"a": a, "b": b, "plan": plan, "trunk": trunk}


def test_cheapest_vendor_is_tried_first() -> None:
    w, ids = two_vendor_world()
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay)
    assert [r.vendor_name for r in d.routes] == ["vendor-b", "vendor-a"]
    assert d.routes[0].rate == Decimal("0.0080")


def test_longest_prefix_decides_each_vendors_rate() -> None:
    w, _ = two_vendor_world()
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay)
    a = next(r for r in d.routes if r.vendor_name == "vendor-a")
    assert (a.prefix, a.rate) == ("1212", Decimal("0.0090"))


def test_equal_prices_fall_back_to_plan_priority() -> None:
    w = World()
    first = w.vendor("zulu", [rate("1", "0.01")])
    second = w.vendor("alpha", [rate("1", "0.01")])
    plan = w.plan("p", [first, second])
    w.customer("10.0.0.1/32", plan)
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay)
    assert [r.vendor_name for r in d.routes] == ["zulu", "alpha"]


def test_unknown_source_is_refused_with_403() -> None:
    w, _ = two_vendor_world()
    d = decide_invite(call(source="10.9.9.9"), w.snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.reason) == (403, "Forbidden")
    assert d.context.trunk_id is None


def test_call_from_suspended_account_is_refused() -> None:
    w = World()
    plan = w.plan("p", [w.vendor("v", [rate("1", "0.01")])])
    w.customer("10.0.0.1/32", plan, status=AccountStatus.SUSPENDED)
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.reason) == (403, "Account suspended")


def test_testing_account_may_call() -> None:
    w = World()
    plan = w.plan("p", [w.vendor("v", [rate("1", "0.01")])])
    w.customer("10.0.0.1/32", plan, status=AccountStatus.TESTING)
    assert isinstance(decide_invite(call(), w.snapshot(), NOW), Relay)


def test_disabled_trunk_is_refused() -> None:
    w = World()
    plan = w.plan("p", [w.vendor("v", [rate("1", "0.01")])])
    w.customer("10.0.0.1/32", plan, trunk_enabled=False)
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Reject) and d.code == 403


def test_unreadable_dialed_number_gets_484() -> None:
    w, _ = two_vendor_world()
    d = decide_invite(call(dialed="12"), w.snapshot(), NOW)
    assert isinstance(d, Reject) and d.code == 484
    assert d.reason_header == 'Reason: Q.850;cause=28;text="Address Incomplete"'


def test_destination_no_vendor_sells_gets_404_with_reason() -> None:
    w, _ = two_vendor_world()
    d = decide_invite(call(dialed="+442079460000"), w.snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.q850_cause) == (404, 3)
    assert all(c["reason"] == "no rate for destination" for c in d.trace["candidates"])  # type: ignore[index, union-attr]


def test_priced_destination_without_usable_gateway_gets_503() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.01")], gateways=[gateway("192.0.2.1", enabled=False)])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.q850_cause) == (503, 34)


def test_trunk_without_routing_plan_gets_503() -> None:
    w = World()
    w.customer("10.0.0.1/32", None)
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Reject) and d.code == 503


def test_disabled_vendor_is_dropped_with_its_reason() -> None:
    w = World()
    off = w.vendor("off", [rate("1", "0.001")], enabled=False)
    on = w.vendor("on", [rate("1", "0.01")])
    w.customer("10.0.0.1/32", w.plan("p", [off, on]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["on"]
    assert {"vendor": "off", "kept": False, "reason": "vendor disabled"} in d.trace["candidates"]  # type: ignore[operator]


def test_future_dated_rate_takes_over_at_its_moment() -> None:
    w = World()
    change = NOW + timedelta(hours=1)
    v = w.vendor("v", [rate("1", "0.0100", ends=change), rate("1", "0.0050", effective=change)])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    s = w.snapshot()
    before = decide_invite(call(), s, change - timedelta(seconds=1))
    after = decide_invite(call(), s, change)
    assert isinstance(before, Relay) and before.routes[0].rate == Decimal("0.0100")
    assert isinstance(after, Relay) and after.routes[0].rate == Decimal("0.0050")


def test_a_later_row_takes_over_at_its_moment_without_an_end_date_on_the_earlier_one() -> None:
    w = World()
    change = NOW + timedelta(hours=1)
    v = w.vendor("v", [rate("1", "0.0100"), rate("1", "0.0050", effective=change)])  # as decks are written
    w.customer("10.0.0.1/32", w.plan("p", [v]), rate_plan=w.rate_plan("r", [
        customer_rate("1", "0.0200"), replace(customer_rate("1", "0.0300"), effective_at=change)]))
    s = w.snapshot()
    assert problems(s) == []
    before = decide_invite(call(), s, change - timedelta(seconds=1))
    after = decide_invite(call(), s, change)
    assert isinstance(before, Relay) and (before.routes[0].rate, before.price.per_minute) == (
        Decimal("0.0100"), Decimal("0.0200"))
    assert isinstance(after, Relay) and (after.routes[0].rate, after.price.per_minute) == (
        Decimal("0.0050"), Decimal("0.0300"))


def test_expired_specific_rate_falls_back_to_shorter_prefix() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.0200"), rate("1212", "0.0050", ends=NOW)])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and (d.routes[0].prefix, d.routes[0].rate) == ("1", Decimal("0.0200"))


def test_each_enabled_gateway_of_a_vendor_becomes_a_route_in_priority_order() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.01")], gateways=[
        gateway("192.0.2.2", "second", priority=2), gateway("192.0.2.1", "first", priority=1),
        gateway("192.0.2.3", "off", enabled=False)])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and [r.gateway.name for r in d.routes] == ["first", "second"]


def test_missing_caller_id_does_not_block_the_call_and_is_recorded() -> None:
    w, _ = two_vendor_world()
    d = decide_invite(call(caller="anonymous"), w.snapshot(), NOW)
    assert isinstance(d, Relay) and d.context.from_e164 is None and d.context.to_e164 == "+12125551234"


def test_nanp_rates_use_the_jurisdiction_specific_column_when_known() -> None:
    from routing_engine.domain.snapshot import Jurisdiction

    r = rate("1212555", "0.03", inter="0.01", intra="0.02")
    assert r.price_for(Jurisdiction.INTERSTATE) == Decimal("0.01")
    assert r.price_for(Jurisdiction.INTRASTATE) == Decimal("0.02")
    assert r.price_for(Jurisdiction.INDETERMINATE) == Decimal("0.03")
