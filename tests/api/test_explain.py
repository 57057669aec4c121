"""Route explain through the API: the ops example of docs/API.md, and parity with the CLI."""

from __future__ import annotations

import json

import pytest
import redis

from routing_engine.adapters.health import KEY as HEALTH_KEY
from routing_engine.entrypoints import cli
from routing_engine.settings import Settings
from tests.api.conftest import Api, Carrier, use_test_environment


def test_a_new_vendor_with_a_deck_attached_to_the_plan_takes_the_call(admin: Api, carrier: Carrier) -> None:
    # 1. a vendor with a gateway and a rate deck (cheaper than vendor-echo, which has no rate yet)
    vendor = admin.post("/vendors", json={"name": "vendor-fox", "number_format": "e164_plus"})["data"]
    admin.post(f"/vendors/{vendor['id']}/gateways", json={"name": "fox-gw1", "host": "127.0.0.22", "port": 5070})
    deck = "prefix,rate,effective_date\n1212,0.0040,2020-01-01\n44,0.0100,2020-01-01\n"
    imported = admin.post(f"/vendors/{vendor['id']}/rates/import", expect=200,
                          files={"file": ("fox.csv", deck, "text/csv")})["data"]
    assert (imported["rows"], imported["applied"]) == (2, 2)
    before = admin.get("/route/explain", params={"trunk": "BAN-A/trunk-1", "to": "12125551234"})["data"]
    assert before["decision"] == "reject" and before["code"] == 404
    # 2. into the customer's routing plan
    admin.put(f"/routing-plans/{carrier.plan['id']}/vendors/{vendor['id']}", json={"priority": 1})
    # 3. the call now routes to it, with the vendor's number format
    after = admin.get("/route/explain", params={"source": "127.0.0.11", "to": "12125551234",
                                                "from": "13055550100"})["data"]
    assert after["decision"] == "relay", after
    assert after["routes"][0]["vendor"] == "vendor-fox"
    assert after["routes"][0]["ruri"] == "sip:+12125551234@127.0.0.22:5070"
    assert after["routes"][0]["rate"] == "0.004000"


def test_explain_answers_exactly_what_the_cli_prints(admin: Api, carrier: Carrier, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    admin.post(f"/vendors/{carrier.vendor['id']}/rates", json={"prefix": "1", "rate": "0.01",
                                                               "effective_at": "2020-01-01T00:00:00Z"})
    args = {"trunk": "BAN-A/trunk-1", "to": "12125551234", "from": "13055550100", "at": "2026-06-01T12:00:00+00:00"}
    api = admin.get("/route/explain", params=args)["data"]
    use_test_environment(monkeypatch)
    capsys.readouterr()
    assert cli.main(["route", "explain", "--trunk", args["trunk"], "--to", args["to"], "--from", args["from"],
                     "--at", args["at"], "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert api == printed
    assert api["decision"] == "relay"


def test_a_gateway_the_probes_found_down_is_left_out_as_on_the_sip_side(admin: Api, carrier: Carrier,
                                                                       redis_client: redis.Redis) -> None:
    vendor = carrier.vendor["id"]
    admin.post(f"/vendors/{vendor}/rates", json={"prefix": "1", "rate": "0.01", "effective_at": "2020-01-01T00:00:00Z"})
    second = admin.post(f"/vendors/{vendor}/gateways", json={"name": "echo-gw2", "host": "127.0.0.23",
                                                             "priority": 5, "probe": True})["data"]
    assert second["probe"] is True
    first = next(g for g in admin.get(f"/vendors/{vendor}/gateways")["data"] if g["name"] == "echo-gw1")
    params = {"trunk": "BAN-A/trunk-1", "to": "12125551234"}
    assert [r["gateway"] for r in admin.get("/route/explain", params=params)["data"]["routes"]] == [
        "echo-gw1", "echo-gw2"]
    redis_client.sadd(HEALTH_KEY, first["id"])
    assert [r["gateway"] for r in admin.get("/route/explain", params=params)["data"]["routes"]] == ["echo-gw2"]


def test_explain_needs_a_source_or_a_trunk_that_exists(admin: Api, carrier: Carrier) -> None:
    assert admin.get("/route/explain", expect=422, params={"to": "12125551234"})["error"]["details"][0]["field"] \
        == "query.source"
    assert admin.get("/route/explain", expect=422, params={"to": "1", "trunk": "nope"})["success"] is False


def test_an_unknown_source_is_refused_like_the_sip_side_would(admin: Api, carrier: Carrier) -> None:
    got = admin.get("/route/explain", params={"source": "192.0.2.1", "to": "12125551234"})["data"]
    assert (got["decision"], got["code"]) == ("reject", 403)


def test_a_vendor_demoted_for_poor_quality_is_demoted_in_the_api_as_in_the_cli_and_on_the_sip_side(
        admin: Api, carrier: Carrier, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """Both explains decide through bootstrap.decider, as a SIP worker does: the API's used to
    leave vendor quality out, so a quality plan explained differently than it routed."""
    import time

    from routing_engine import bootstrap
    from routing_engine.adapters.quality import Outcome
    from routing_engine.adapters.quality import record as record_outcomes

    admin.patch(f"/routing-plans/{carrier.plan['id']}", json={"strategy": "quality"})
    echo = carrier.vendor["id"]
    admin.post(f"/vendors/{echo}/rates", json={"prefix": "1", "rate": "0.0010", "effective_at": "2020-01-01T00:00:00Z"})
    fox = admin.post("/vendors", json={"name": "vendor-fox"})["data"]
    admin.post(f"/vendors/{fox['id']}/gateways", json={"name": "fox-gw1", "host": "127.0.0.22"})
    admin.post(f"/vendors/{fox['id']}/rates", json={"prefix": "1", "rate": "0.0050",
                                                    "effective_at": "2020-01-01T00:00:00Z"})
    admin.put(f"/routing-plans/{carrier.plan['id']}/vendors/{fox['id']}", json={"priority": 1})
    params = {"trunk": "BAN-A/trunk-1", "to": "12125551234", "from": "13055550100"}
    assert [r["vendor"] for r in admin.get("/route/explain", params=params)["data"]["routes"]][0] == "vendor-echo"
    # the cheaper vendor answered none of its last 30 attempts
    record_outcomes(redis_client, [Outcome(echo, False, 0, None, "12125551234")] * 30, time.time())
    bootstrap.quality_aggregator(settings, redis_client).step()  # the companion's turn
    api = admin.get("/route/explain", params=params)["data"]
    assert [r["vendor"] for r in api["routes"]] == ["vendor-fox", "vendor-echo"]
    use_test_environment(monkeypatch)
    capsys.readouterr()
    assert cli.main(["route", "explain", "--trunk", params["trunk"], "--to", params["to"], "--from", params["from"],
                     "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["vendor"] for r in printed["routes"]] == ["vendor-fox", "vendor-echo"]
    assert printed["trace"]["candidates"] == api["trace"]["candidates"]
