"""Decisions that need the LCR inputs: LRN, jurisdiction, blocks, translation, strategies."""

from dataclasses import replace
from decimal import Decimal

from routing_engine.domain.decision import CallRequest, Reject, Relay, decide_invite
from routing_engine.domain.lrn import LrnResult
from routing_engine.domain.numbers import E164
from routing_engine.domain.rating import Price, Terms
from routing_engine.domain.snapshot import Location, NumberFormat, Translation

from .factories import NOW, World, customer_rate, rate


def call(dialed: str = "12125551234", caller: str = "13055550100") -> CallRequest:
    return CallRequest("call-1", "10.0.0.1", 5060, "udp", dialed, caller)


def ported_to_miami(number: E164) -> LrnResult:
    return LrnResult("13055559999", "local") if number.digits == "12125551234" else LrnResult(None, "local")


def us_world(**vendor_kw: object) -> World:
    w = World()
    w.npanxx.update({"212555": Location("US", "NY", "132", None, "NYC"),
                     "305555": Location("US", "FL", "460", None, "MIAMI"),
                     "305556": Location("US", "FL", "460", None, "MIAMI")})
    return w


def test_ported_number_is_rated_on_its_lrn() -> None:
    w = us_world()
    ny = w.vendor("ny-cheap", [rate("1212555", "0.001"), rate("1", "0.050")])
    fl = w.vendor("fl-cheap", [rate("1305555", "0.002"), rate("1", "0.060")])
    w.customer("10.0.0.1/32", w.plan("p", [ny, fl]))
    d = decide_invite(call(), w.snapshot(), NOW, lrn_lookup=ported_to_miami)
    assert isinstance(d, Relay)
    assert [(r.vendor_name, r.prefix, r.rate) for r in d.routes] == [
        ("fl-cheap", "1305555", Decimal("0.002")), ("ny-cheap", "1", Decimal("0.050"))]
    assert d.context.lrn == "+13055559999"
    assert d.trace["lrn"] == {"source": "local", "ported": True, "lrn": "+13055559999"}


def test_jurisdiction_picks_the_rate_column() -> None:
    w = us_world()
    v = w.vendor("v", [rate("1212555", "0.030", inter="0.010", intra="0.020")])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    s = w.snapshot()
    interstate = decide_invite(call(caller="13055550100"), s, NOW)
    intrastate_after_port = decide_invite(call(caller="13055560100"), s, NOW, lrn_lookup=ported_to_miami)
    unknown_caller = decide_invite(call(caller=""), s, NOW)
    assert isinstance(interstate, Relay) and interstate.routes[0].rate == Decimal("0.010")
    assert interstate.context.jurisdiction == "interstate"
    # ported to Miami, caller in Miami: same rate centre -> local, priced as intrastate...
    # ...but the LRN's NPA-NXX (1305555) has no row here, so the vendor has no rate at all
    assert isinstance(intrastate_after_port, Reject) and intrastate_after_port.code == 404
    assert isinstance(unknown_caller, Relay) and unknown_caller.routes[0].rate == Decimal("0.030")
    assert unknown_caller.context.jurisdiction == "indeterminate"


def test_destination_blocked_by_the_plan_is_refused() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.01")])
    w.customer("10.0.0.1/32", w.plan("p", [v], blocked=("1900",)))
    d = decide_invite(call(dialed="19005551234"), w.snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.reason, d.q850_cause) == (403, "Destination blocked", 21)


def test_destination_blocked_by_a_vendor_drops_only_that_vendor() -> None:
    w = World()
    a = w.vendor("a", [rate("1", "0.001")], blocked=("1212",))
    b = w.vendor("b", [rate("1", "0.01")])
    w.customer("10.0.0.1/32", w.plan("p", [a, b]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["b"]
    assert {"vendor": "a", "kept": False,
            "reason": "destination blocked for this vendor (prefix 1212)"} in d.trace["candidates"]  # type: ignore[operator]


def test_vendor_translation_shapes_the_request_uri_and_from() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.01")], translation=Translation(
        NumberFormat.NATIONAL, tech_prefix="4455#", translate_caller=True, send_lrn=True))
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    d = decide_invite(call(), w.snapshot(), NOW, lrn_lookup=ported_to_miami)
    assert isinstance(d, Relay)
    assert d.routes[0].ruri_user == "4455#2125551234;rn=3055559999;npdi"
    assert d.routes[0].from_user == "3055550100"
    assert d.trace["routes"][0]["ruri"] == "sip:4455#2125551234;rn=3055559999;npdi@192.0.2.1:5060"  # type: ignore[index]


def margin_world(min_margin: str = "0", allow_negative: bool = False) -> World:
    w = World()
    dear = w.vendor("dear", [rate("1", "0.020")])
    ok = w.vendor("ok", [rate("1", "0.008")])
    plan = w.plan("p", [dear, ok])
    w.plans[plan] = replace(w.plans[plan], min_margin=Decimal(min_margin), allow_negative_margin=allow_negative)
    w.customer("10.0.0.1/32", plan, rate_plan=w.rate_plan("cheap", [customer_rate("1", "0.010")]))
    return w


def test_vendor_costing_more_than_the_customer_pays_is_dropped() -> None:
    d = decide_invite(call(), margin_world().snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["ok"]
    assert {"vendor": "dear", "kept": False, "rate": "0.020", "prefix": "1",
            "reason": "cost above the customer's price (cost 0.020000 against a charge of 0.010000 for 60 s)"
            } in d.trace["candidates"]  # type: ignore[operator]


def test_minimum_margin_can_leave_no_vendor_and_the_call_is_refused() -> None:
    d = decide_invite(call(), margin_world(min_margin="0.005").snapshot(), NOW)
    assert isinstance(d, Reject) and (d.code, d.reason) == (503, "No Route Available")


def test_a_plan_may_allow_negative_margin() -> None:
    d = decide_invite(call(), margin_world(allow_negative=True).snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["ok", "dear"]


def test_no_customer_price_means_no_call() -> None:
    w = World()
    v = w.vendor("v", [rate("1", "0.001")])
    w.customer("10.0.0.1/32", w.plan("p", [v]), rate_plan=w.rate_plan("uk-only", [customer_rate("44", "0.05")]))
    w.customer("10.0.0.2/32", w.plan("q", [v]), rate_plan=None)
    s = w.snapshot()
    for source in ("10.0.0.1", "10.0.0.2"):
        d = decide_invite(CallRequest("c", source, 5060, "udp", "12125551234", "13055550100"), s, NOW)
        assert isinstance(d, Reject) and (d.code, d.reason, d.q850_cause) == (403, "No customer rate", 57)


def test_customer_price_follows_the_lrn_and_jurisdiction() -> None:
    w = us_world()
    v = w.vendor("v", [rate("1", "0.001")])
    plan = w.rate_plan("nanp", [customer_rate("1212555", "0.05", inter="0.03", intra="0.04"),
                                customer_rate("1305555", "0.02", initial=6, subsequent=6, fee="0.01")])
    w.customer("10.0.0.1/32", w.plan("p", [v]), rate_plan=plan)
    ported = decide_invite(call(), w.snapshot(), NOW, lrn_lookup=ported_to_miami)
    home = decide_invite(call(dialed="12125557777"), w.snapshot(), NOW)
    assert isinstance(ported, Relay) and ported.price == Price(Decimal("0.02"), 6, 6, 0, Decimal("0.01"), "1305555")
    assert isinstance(home, Relay) and home.price.per_minute == Decimal("0.03")  # FL -> NY: interstate


def test_priority_strategy_ignores_price() -> None:
    w = World()
    dear = w.vendor("dear", [rate("1", "0.020")])
    cheap = w.vendor("cheap", [rate("1", "0.008")])
    w.customer("10.0.0.1/32", w.plan("p", [dear, cheap], strategy="priority"))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["dear", "cheap"]


def test_unknown_strategy_refuses_with_503_and_names_it() -> None:
    w = World()
    w.customer("10.0.0.1/32", w.plan("p", [w.vendor("v", [rate("1", "0.01")])], strategy="fastest"))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Reject) and d.code == 503 and "'fastest'" in str(d.trace["error"])


def test_the_plan_bounds_the_routes_listed_and_carries_its_failover_policy() -> None:
    w = World()
    vs = [w.vendor(f"v{i}", [rate("1", f"0.0{i + 1}")]) for i in range(4)]
    w.customer("10.0.0.1/32", w.plan("p", vs, max_attempts=2))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and d.policy.max_attempts == 2 and len(d.trace["routes"]) == 2  # type: ignore[arg-type]


def test_dip_failure_is_marked_and_routing_continues_on_the_dialed_number() -> None:
    w = us_world()
    v = w.vendor("v", [rate("1212555", "0.01")])
    w.customer("10.0.0.1/32", w.plan("p", [v]))
    d = decide_invite(call(), w.snapshot(), NOW,
                      lrn_lookup=lambda n: LrnResult(None, "failed", "http: timed out"))
    assert isinstance(d, Relay) and d.routes[0].prefix == "1212555"
    assert d.trace["lrn"] == {"source": "failed", "ported": False, "error": "http: timed out"}


# ------------------------------------------------------------------ margin with the vendors' terms

def billing_world() -> World:
    """A customer paying 0.012/min billed 6/6; a vendor at 0.010/min billed 60/60 with a 30 s
    minimum (cheaper per minute) and a per-second one at 0.011/min."""
    w = World()
    minute = w.vendor("minute", [rate("1", "0.010", billing="60/60/30/0")])
    second = w.vendor("second", [rate("1", "0.011")])
    w.customer("10.0.0.1/32", w.plan("p", [minute, second]),
               rate_plan=w.rate_plan("six", [customer_rate("1", "0.012", initial=6, subsequent=6)]))
    return w


def test_a_vendor_billing_whole_minutes_is_kept_when_the_expected_call_lasts_a_minute() -> None:
    d = decide_invite(call(), billing_world().snapshot(), NOW, margin_duration_s=60)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["minute", "second"]
    assert d.routes[0].terms == Terms(60, 60, 30, Decimal(0))  # the route carries the terms to the CDR
    assert {"vendor": "minute", "kept": True, "rate": "0.010", "prefix": "1", "billing": "60/60/30/0"
            } in d.trace["candidates"]  # type: ignore[operator]


def test_a_vendor_billing_whole_minutes_loses_money_on_a_short_expected_call_and_is_dropped() -> None:
    # 20 s: the customer pays 0.0048 (24 s in 6 s blocks at 0.012), the 60/60 vendor 0.010 (a whole minute)
    d = decide_invite(call(), billing_world().snapshot(), NOW, margin_duration_s=20)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["second"]
    assert {"vendor": "minute", "kept": False, "rate": "0.010", "prefix": "1", "billing": "60/60/30/0",
            "reason": "cost above the customer's price (cost 0.010000 against a charge of 0.004800 for 20 s)"
            } in d.trace["candidates"]  # type: ignore[operator]


def test_a_vendor_connection_fee_counts_against_the_margin() -> None:
    w = World()
    fee = w.vendor("fee", [rate("1", "0.005", billing="1/1/0/0.006")])  # cheap per minute, 0.006 per call
    w.customer("10.0.0.1/32", w.plan("p", [fee, w.vendor("flat", [rate("1", "0.009")])]),
               rate_plan=w.rate_plan("r", [customer_rate("1", "0.010")]))
    d = decide_invite(call(), w.snapshot(), NOW)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["flat"]
    assert {"vendor": "fee", "kept": False, "rate": "0.005", "prefix": "1", "billing": "1/1/0/0.006",
            "reason": "cost above the customer's price (cost 0.011000 against a charge of 0.010000 for 60 s)"
            } in d.trace["candidates"]  # type: ignore[operator]


def test_the_minimum_margin_is_per_minute_of_the_expected_call_and_met_exactly_is_enough() -> None:
    # 120 s: the charge is 0.024; a minimum margin of 0.002/min asks 0.004 of it. The 60/60 vendor
    # costs 0.020 (margin 0.004: kept), the per-second one 0.022 (margin 0.002: dropped).
    w = billing_world()
    plan = next(iter(w.plans))
    w.plans[plan] = replace(w.plans[plan], min_margin=Decimal("0.002"))
    d = decide_invite(call(), w.snapshot(), NOW, margin_duration_s=120)
    assert isinstance(d, Relay) and [r.vendor_name for r in d.routes] == ["minute"]
    assert {"vendor": "second", "kept": False, "rate": "0.011", "prefix": "1",
            "reason": "cost above the customer's price (cost 0.022000 against a charge of 0.024000 for 120 s,"
                      " minimum margin 0.004000)"} in d.trace["candidates"]  # type: ignore[operator]
