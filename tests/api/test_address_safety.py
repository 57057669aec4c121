"""Who may claim an address, where SIP may be sent, and the API's smaller hardening: an ACL
entry may not take over another account's address or a vendor gateway's; a trunk's inbound URI
and a gateway may not be one of the node's own services; out-of-range times and ambiguous
credentials are refused cleanly."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from routing_engine.entrypoints import cli
from routing_engine.entrypoints.api.principals import Role
from routing_engine.settings import Settings
from tests.api.conftest import Api, Carrier, Keys, use_test_environment


def acl(api: Api, trunk: dict, cidr: str, expect: int = 201) -> dict:
    return api.post(f"/trunks/{trunk['id']}/acl", expect=expect, json={"cidr": cidr})  # type: ignore[no-any-return]


# ------------------------------------------------------------------ ACL takeover

def test_staff_cannot_put_another_accounts_address_in_an_acl(operator: Api, carrier: Carrier) -> None:
    """The demo attack: customer A's /32 added to customer B's trunk moved A's calls and billing."""
    refused = acl(operator, carrier.trunk_b, "127.0.0.11/32", expect=409)
    assert "overlaps 127.0.0.11/32 of trunk trunk-1" in refused["error"]["message"]
    assert "tech prefix" in refused["error"]["message"]
    acl(operator, carrier.trunk_b, "127.0.0.0/24", expect=409)  # a wider network over it as well
    assert [e["cidr"] for e in operator.get(f"/trunks/{carrier.trunk_b['id']}/acl")["data"]] == ["127.0.0.12/32"]


def test_staff_may_share_an_address_when_distinct_tech_prefixes_tell_the_calls_apart(
        operator: Api, carrier: Carrier) -> None:
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", json={"tech_prefix": "1111#"})
    acl(operator, carrier.trunk_b, "127.0.0.11/32", expect=409)  # B has no prefix yet: it would take every call
    operator.patch(f"/trunks/{carrier.trunk_b['id']}", json={"tech_prefix": "2222#"})
    acl(operator, carrier.trunk_b, "127.0.0.11/32")
    # the sharing holds only while the prefixes tell the calls apart
    refused = operator.patch(f"/trunks/{carrier.trunk_a['id']}", expect=409, json={"tech_prefix": None})
    assert "do not tell the calls apart" in refused["error"]["message"]
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", expect=409, json={"tech_prefix": "2222"})
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", json={"tech_prefix": "3333#"})


def test_a_customer_key_can_claim_neither_another_accounts_address_nor_a_gateways(
        api_keys: Keys, operator: Api, carrier: Carrier) -> None:
    customer_b = api_keys.api(Role.OPERATOR, carrier.b["id"])
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", json={"tech_prefix": "1111#"})
    operator.patch(f"/trunks/{carrier.trunk_b['id']}", json={"tech_prefix": "2222#"})
    refused = acl(customer_b, carrier.trunk_b, "127.0.0.11/32", expect=409)  # sharing is the carrier's call
    assert refused["error"]["message"] == "this network overlaps another customer's addresses; ask the carrier"
    refused = acl(customer_b, carrier.trunk_b, "127.0.0.21/32", expect=409)  # vendor-echo's gateway
    assert refused["error"]["message"] == "this network holds a vendor gateway's address"
    acl(customer_b, carrier.trunk_b, "127.0.0.13/32")  # an address of its own is fine


def test_nobody_may_put_a_vendor_gateways_address_in_an_acl(operator: Api, carrier: Carrier) -> None:
    refused = acl(operator, carrier.trunk_a, "127.0.0.16/28", expect=409)
    assert "gateway echo-gw1 of vendor vendor-echo" in refused["error"]["message"]


def test_a_gateway_cannot_be_added_inside_a_trunks_acl(operator: Api, carrier: Carrier) -> None:
    refused = operator.post(f"/vendors/{carrier.vendor['id']}/gateways", expect=409,
                            json={"name": "echo-gw2", "host": "127.0.0.11"})
    assert "ACL of trunk trunk-1" in refused["error"]["message"]


def test_explain_says_which_trunk_an_address_maps_to_and_why(operator: Api, admin: Api, carrier: Carrier) -> None:
    got = admin.get("/route/explain", params={"source": "127.0.0.11", "to": "12125551234"})["data"]["address"]
    assert got["trunk"] == "BAN-A/trunk-1" and got["trunk_id"] == carrier.trunk_a["id"]
    assert got["matches"] == [{"trunk": "BAN-A/trunk-1", "trunk_id": carrier.trunk_a["id"], "entry": "127.0.0.11/32",
                               "tech_prefix": None, "accepts_acl": True}]
    assert got["why"].startswith("the most specific matching entry")
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", json={"tech_prefix": "1111#"})
    operator.patch(f"/trunks/{carrier.trunk_b['id']}", json={"tech_prefix": "2222#"})
    acl(operator, carrier.trunk_b, "127.0.0.11/32")
    got = admin.get("/route/explain", params={"source": "127.0.0.11", "to": "2222#12125551234"})["data"]["address"]
    assert got["trunk"] == "BAN-B/trunk-1" and len(got["matches"]) == 2
    assert got["why"].startswith("the dialed number starts with its tech prefix 2222#")
    got = admin.get("/route/explain", params={"source": "127.0.0.21", "to": "12125551234"})["data"]["address"]
    assert got["trunk"] is None and "gateway echo-gw1 of vendor vendor-echo" in got["why"]


def test_the_cli_explains_an_address_as_the_api_does(admin: Api, carrier: Carrier,
                                                   capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    args = {"source": "127.0.0.11", "to": "12125551234", "at": "2026-06-01T12:00:00+00:00"}
    api = admin.get("/route/explain", params=args)["data"]
    use_test_environment(monkeypatch)
    capsys.readouterr()
    argv = ["route", "explain", "--source", args["source"], "--to", args["to"], "--at", args["at"]]
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["address"] == api["address"]
    assert cli.main(argv) == 0
    assert "address       127.0.0.11 -> BAN-A/trunk-1: the most specific matching entry" in capsys.readouterr().out


# ------------------------------------------------------------------ destinations

def test_an_inbound_uri_at_one_of_the_nodes_services_is_refused(
        api_keys: Keys, operator: Api, carrier: Carrier, api_settings: Settings) -> None:
    redis = urlsplit(api_settings.redis_url)
    customer_a = api_keys.api(Role.OPERATOR, carrier.a["id"])
    for api in (customer_a, operator):
        refused = api.patch(f"/trunks/{carrier.trunk_a['id']}", expect=422,
                            json={"inbound_uri": f"sip:{redis.hostname}:{redis.port};transport=tcp"})
        assert "is this node's Redis" in refused["error"]["message"]
        assert refused["error"]["details"][0]["field"] == "body.inbound_uri"
    refused = operator.post("/trunks", expect=422, json={"account_id": carrier.a["id"], "name": "t2",
                                                          "inbound_uri": f"sip:localhost:{redis.port}"})
    assert "is this node's Redis" in refused["error"]["message"]
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", expect=422, json={"inbound_uri": "sip:169.254.169.254"})
    operator.patch(f"/trunks/{carrier.trunk_a['id']}", json={"inbound_uri": "sip:198.51.100.2:5060"})


def test_a_gateway_at_one_of_the_nodes_services_is_refused(operator: Api, carrier: Carrier,
                                                           api_settings: Settings) -> None:
    postgres = urlsplit(api_settings.database_url)
    gateways = f"/vendors/{carrier.vendor['id']}/gateways"
    refused = operator.post(gateways, expect=422, json={"name": "pg", "host": postgres.hostname,
                                                        "port": postgres.port})
    assert "is this node's Postgres" in refused["error"]["message"]
    gw = operator.get(gateways)["data"][0]
    refused = operator.patch(f"{gateways}/{gw['id']}", expect=422, json={"port": postgres.port, "host": "127.0.0.1"})
    assert "is this node's Postgres" in refused["error"]["message"]
    assert operator.get(gateways)["data"][0]["host"] == "127.0.0.21"


# ------------------------------------------------------------------ smaller items

def test_a_time_too_early_for_the_default_range_is_a_400_not_a_crash(reader: Api) -> None:
    got = reader.get("/cdrs", expect=400, params={"until": "0001-01-01T00:00:00Z"})
    assert got["success"] is False and got["error"]["details"][0]["field"] == "query.until"
    reader.get("/cdrs", params={"since": "0001-01-01T00:00:00Z", "until": "0001-01-02T00:00:00Z"})
    reader.get("/cdrs", params={"since": "9999-12-30T00:00:00Z", "until": "9999-12-31T23:59:59Z"})


def test_explain_at_the_ends_of_time_answers(admin: Api, carrier: Carrier) -> None:
    for at in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        admin.get("/route/explain", params={"trunk": "BAN-A/trunk-1", "to": "12125551234", "at": at})


def test_an_invalid_bearer_token_beside_a_valid_key_is_refused(client: TestClient, reader: Api) -> None:
    response = client.get("/api/v1/vendors", headers={"X-API-Key": reader.key, "Authorization": "Bearer forged"})
    assert response.status_code == 401
    assert "not both" in response.json()["error"]["message"]
    assert client.get("/api/v1/vendors", headers={"X-API-Key": reader.key}).status_code == 200


def test_a_rate_time_postgres_would_store_but_never_read_back_is_refused(operator: Api, carrier: Carrier) -> None:
    """0001-01-01T00:00+14:00 is a year-0 time in UTC: stored, it made every later read of the
    rates (and every snapshot build) fail."""
    rates = f"/vendors/{carrier.vendor['id']}/rates"
    for field, at in (("effective_at", "0001-01-01T00:00:00+14:00"), ("ends_at", "9999-12-31T23:59:00-14:00")):
        got = operator.post(rates, expect=422, json={"prefix": "44", "rate": "0.01", field: at})
        assert got["error"]["details"][0]["field"] == f"body.{field}"
    operator.get(rates)
