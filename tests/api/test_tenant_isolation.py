"""Customer-scoped callers see and change only their own account's rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from routing_engine.entrypoints.api.principals import Role
from tests.api.conftest import Api, Carrier, Keys


@pytest.fixture
def customer_a(api_keys: Keys, carrier: Carrier) -> Api:
    return api_keys.api(Role.OPERATOR, carrier.a["id"])


@pytest.fixture
def reader_a(api_keys: Keys, carrier: Carrier) -> Api:
    return api_keys.api(Role.READ_ONLY, carrier.a["id"])


def ids(envelope: dict[str, object]) -> set[str]:
    return {row["id"] for row in envelope["data"]}  # type: ignore[attr-defined,index]


def test_lists_show_only_the_callers_own_rows(customer_a: Api, carrier: Carrier) -> None:
    assert ids(customer_a.get("/accounts")) == {carrier.a["id"]}
    assert ids(customer_a.get("/trunks")) == {carrier.trunk_a["id"]}
    assert ids(customer_a.get("/numbers")) == {carrier.did_a["id"]}
    assert ids(customer_a.get(f"/trunks?account_id={carrier.b['id']}")) == set()
    assert ids(customer_a.get(f"/numbers?account_id={carrier.b['id']}")) == set()
    # the shared rate plan its account uses is visible; another account's own plan is not
    assert ids(customer_a.get("/rate-plans")) == {carrier.rate_plan["id"]}


def test_another_accounts_rows_are_not_found_by_id(customer_a: Api, carrier: Carrier) -> None:
    for path in (f"/accounts/{carrier.b['id']}", f"/accounts/{carrier.b['id']}/balance",
                 f"/trunks/{carrier.trunk_b['id']}", f"/trunks/{carrier.trunk_b['id']}/acl",
                 f"/trunks/{carrier.trunk_b['id']}/credentials", f"/numbers/{carrier.did_b['id']}"):
        assert customer_a.get(path, expect=404)["error"]["code"] == "not_found", path


def test_another_accounts_rows_cannot_be_changed(customer_a: Api, admin: Api, carrier: Carrier) -> None:
    tb = carrier.trunk_b["id"]
    customer_a.patch(f"/trunks/{tb}", expect=404, json={"enabled": False})
    customer_a.delete(f"/trunks/{tb}", expect=404)
    customer_a.post(f"/trunks/{tb}/acl", expect=404, json={"cidr": "198.51.100.0/24"})
    customer_a.put(f"/trunks/{tb}/credentials/stolen", expect=404, json={"password": "long-enough-1"})
    acl_b = admin.get(f"/trunks/{tb}/acl")["data"][0]
    customer_a.delete(f"/trunks/{tb}/acl/{acl_b['id']}", expect=404)
    customer_a.delete(f"/trunks/{carrier.trunk_a['id']}/acl/{acl_b['id']}", expect=404)
    # a number of B moved to A's trunk, or A's number moved to B's trunk
    customer_a.put(f"/numbers/{carrier.did_b['id']}/assignment", expect=404, json={"trunk_id": carrier.trunk_a["id"]})
    customer_a.put(f"/numbers/{carrier.did_a['id']}/assignment", expect=422, json={"trunk_id": tb})
    customer_a.post("/trunks", expect=422, json={"account_id": carrier.b["id"], "name": "sneaky"})
    assert admin.get(f"/trunks/{tb}")["data"]["enabled"] is True
    assert admin.get(f"/numbers/{carrier.did_b['id']}")["data"]["assignment"]["trunk_id"] == tb


def test_a_customer_manages_its_own_trunks(customer_a: Api, carrier: Carrier) -> None:
    trunk = customer_a.post("/trunks", json={"name": "trunk-2", "auth_mode": "digest"})["data"]
    assert trunk["account_id"] == carrier.a["id"]
    customer_a.put(f"/trunks/{trunk['id']}/credentials/acme-2", json={"password": "a-long-secret"})
    customer_a.post(f"/trunks/{trunk['id']}/acl", json={"cidr": "198.51.100.8/29"})
    moved = customer_a.put(f"/numbers/{carrier.did_a['id']}/assignment", json={"trunk_id": trunk["id"]})["data"]
    assert moved["assignment"]["trunk_id"] == trunk["id"]


def test_a_customer_cannot_choose_its_routing_or_prices(customer_a: Api, carrier: Carrier) -> None:
    got = customer_a.patch(f"/trunks/{carrier.trunk_a['id']}", expect=403, json={"routing_plan_id": carrier.plan["id"]})
    assert "routing_plan_id" in got["error"]["message"]
    customer_a.post("/trunks", expect=403, json={"name": "t9", "rate_plan_id": carrier.rate_plan["id"]})
    for carrier_only in ({"media_anchor": "always"}, {"media_codecs": ["PCMU"]}, {"topology_hiding": False}):
        customer_a.patch(f"/trunks/{carrier.trunk_a['id']}", expect=403, json=carrier_only)
    customer_a.patch(f"/accounts/{carrier.a['id']}", expect=403, json={"credit_limit": "1000"})
    customer_a.post(f"/accounts/{carrier.a['id']}/topups", expect=403, json={"amount": "100"})


def test_a_customer_acl_may_not_overlap_another_customers_addresses(customer_a: Api, admin: Api,
                                                                     carrier: Carrier) -> None:
    got = customer_a.post(f"/trunks/{carrier.trunk_a['id']}/acl", expect=409, json={"cidr": "127.0.0.0/24"})
    assert "another customer" in got["error"]["message"]
    customer_a.post(f"/trunks/{carrier.trunk_a['id']}/acl", expect=409, json={"cidr": "127.0.0.12/32"})
    # carrier staff may, for customers behind one IP told apart by tech prefix (see test_address_safety)
    admin.post(f"/trunks/{carrier.trunk_a['id']}/acl", expect=409, json={"cidr": "127.0.0.12/32"})
    admin.patch(f"/trunks/{carrier.trunk_a['id']}", json={"tech_prefix": "1111#"})
    admin.patch(f"/trunks/{carrier.trunk_b['id']}", json={"tech_prefix": "2222#"})
    admin.post(f"/trunks/{carrier.trunk_a['id']}/acl", json={"cidr": "127.0.0.12/32"})


def test_carrier_wide_resources_are_closed_to_customers(reader_a: Api, customer_a: Api, carrier: Carrier) -> None:
    for api in (reader_a, customer_a):
        for path in ("/vendors", "/routing-plans", f"/vendors/{carrier.vendor['id']}/rates", "/blocked-destinations",
                     "/ip-blocks", "/route/explain?to=12125551234&trunk=BAN-A/trunk-1"):
            assert api.get(path, expect=403)["error"]["code"] == "forbidden", path


def test_a_read_only_customer_key_reads_but_does_not_write(reader_a: Api, carrier: Carrier) -> None:
    assert reader_a.get(f"/trunks/{carrier.trunk_a['id']}")["data"]["name"] == "trunk-1"
    reader_a.patch(f"/trunks/{carrier.trunk_a['id']}", expect=403, json={"enabled": False})


def test_cdrs_of_other_accounts_are_invisible_and_the_carrier_side_is_hidden(
        customer_a: Api, admin: Api, carrier: Carrier, api_db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    for account, call_id in ((carrier.a["id"], "call-a"), (carrier.b["id"], "call-b")):
        api_db.execute("INSERT INTO cdr.cdrs (cdr_id, call_id, node, account_id, invite_at, sip_code, vendor_rate,"
                       " provider_id, gateway, trace) VALUES (%s, %s, 'n', %s, %s, 200, 0.004, %s, 'gw', '{}')",
                       (uuid.uuid4(), call_id, account, now, carrier.vendor["id"]))
    mine = customer_a.get("/cdrs")["data"]
    assert [c["call_id"] for c in mine] == ["call-a"]
    assert mine[0]["vendor_rate"] is None and mine[0]["vendor_id"] is None and mine[0]["gateway"] is None
    assert customer_a.get(f"/cdrs?account_id={carrier.b['id']}")["data"] == []
    everything = admin.get("/cdrs")["data"]
    assert {c["call_id"] for c in everything} == {"call-a", "call-b"}
    assert everything[0]["vendor_rate"] == "0.004000"
