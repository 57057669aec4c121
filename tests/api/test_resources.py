"""What each resource does beyond plain reads and writes: its rules, and what it refuses."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import redis

from routing_engine.adapters.registrations import Defence
from routing_engine.domain.credentials import ha1_md5, ha1_sha256
from tests.api.conftest import Api, Carrier


def test_a_balance_is_the_ledger_and_a_reference_credits_once(admin: Api, carrier: Carrier) -> None:
    account = carrier.a["id"]
    admin.patch(f"/accounts/{account}", json={"credit_limit": "50", "billing_type": "postpaid"})
    topped = admin.post(f"/accounts/{account}/topups", json={"amount": 10.25, "reference": "pay-7"})["data"]
    assert topped["balance"] == {**topped["balance"], "balance": "10.250000", "available": "60.250000"}
    admin.post(f"/accounts/{account}/topups", expect=409, json={"amount": "10.25", "reference": "pay-7"})
    admin.patch(f"/accounts/{account}", json={"billing_type": "prepaid"})
    balance = admin.get(f"/accounts/{account}/balance")["data"]
    assert (balance["balance"], balance["available"], balance["credit_limit"]) == ("10.250000", "10.250000", "50.0000")
    for amount in ("0", "-5", "1e400", "0.0000001", "NaN"):
        admin.post(f"/accounts/{account}/topups", expect=422, json={"amount": amount})


def test_account_references_must_exist(admin: Api, carrier: Carrier) -> None:
    got = admin.patch(f"/accounts/{carrier.a['id']}", expect=422, json={"routing_plan_id": str(uuid.uuid4())})
    assert got["error"]["details"][0]["field"] == "body.routing_plan_id"
    admin.patch(f"/accounts/{carrier.a['id']}", expect=422, json={"name": None})
    cleared = admin.patch(f"/accounts/{carrier.a['id']}", json={"routing_plan_id": None})["data"]
    assert cleared["routing_plan_id"] is None


def test_passwords_are_stored_as_ha1_and_never_returned(admin: Api, carrier: Carrier,
                                                        api_db: psycopg.Connection) -> None:
    got = admin.put(f"/trunks/{carrier.trunk_a['id']}/credentials/acme-1", json={"password": "s3cret-enough"})
    assert "s3cret" not in str(got) and "ha1" not in str(got)
    assert api_db.execute("SELECT ha1, ha1_sha256 FROM trunks.trunk_auth WHERE username = 'acme-1'").fetchone() == (
        ha1_md5("acme-1", "warp.local", "s3cret-enough"), ha1_sha256("acme-1", "warp.local", "s3cret-enough"))
    listed = admin.get(f"/trunks/{carrier.trunk_a['id']}/credentials")["data"]
    assert [c["username"] for c in listed] == ["acme-1"] and "ha1" not in str(listed)
    # a username belongs to one trunk
    admin.put(f"/trunks/{carrier.trunk_b['id']}/credentials/acme-1", expect=409, json={"password": "another-one"})
    admin.delete(f"/trunks/{carrier.trunk_a['id']}/credentials/acme-1")
    admin.put(f"/trunks/{carrier.trunk_b['id']}/credentials/acme-1", json={"password": "another-one"})
    admin.put(f"/trunks/{carrier.trunk_a['id']}/credentials/acme-1", expect=422, json={"password": "short"})


def test_deleting_a_trunk_releases_its_numbers_and_drops_its_acl(admin: Api, carrier: Carrier,
                                                                 api_db: psycopg.Connection) -> None:
    admin.delete(f"/trunks/{carrier.trunk_a['id']}")
    number = admin.get(f"/numbers/{carrier.did_a['id']}")["data"]
    assert (number["status"], number["assignment"]) == ("available", None)
    assert api_db.execute("SELECT count(*) FROM trunks.trunk_access_lists WHERE trunk_id = %s",
                          (carrier.trunk_a["id"],)).fetchone() == (0,)
    admin.get(f"/trunks/{carrier.trunk_a['id']}", expect=404)


def test_trunk_fields_are_validated_like_the_schema(admin: Api, carrier: Carrier) -> None:
    base = {"account_id": carrier.a["id"]}
    for bad in ({"name": "bad name"}, {"name": "t", "tech_prefix": "12#3"}, {"name": "t", "inbound_uri": "sip:a@b"},
                {"name": "t", "auth_mode": "magic"}, {"name": "t", "max_contacts": 0}):
        admin.post("/trunks", expect=422, json={**base, **bad})
    trunk = admin.post("/trunks", json={**base, "name": "t2", "tech_prefix": "7001#",
                                        "inbound_uri": "sip:198.51.100.2:5060"})["data"]
    admin.post("/trunks", expect=409, json={**base, "name": "t3", "tech_prefix": "7001#"})
    assert admin.patch(f"/trunks/{trunk['id']}", json={"tech_prefix": None})["data"]["tech_prefix"] is None
    admin.post(f"/trunks/{trunk['id']}/acl", expect=422, json={"cidr": "10.0.0.1/24"})  # host bits set
    entry = admin.post(f"/trunks/{trunk['id']}/acl", json={"cidr": "2001:db8::/64", "transport": "tcp"})["data"]
    assert entry["cidr"] == "2001:db8::/64"


def test_numbers_are_assigned_moved_released_and_retired(admin: Api, carrier: Carrier) -> None:
    did = admin.post("/numbers", json={"e164": "+442079460000", "number_type": "local", "region": "London"})["data"]
    admin.post("/numbers", expect=409, json={"e164": "+442079460000"})
    admin.post("/numbers", expect=422, json={"e164": "442079460000"})
    moved = admin.put(f"/numbers/{did['id']}/assignment", json={"trunk_id": carrier.trunk_a["id"]})["data"]
    assert (moved["status"], moved["assignment"]["account_id"]) == ("assigned", carrier.a["id"])
    moved = admin.put(f"/numbers/{did['id']}/assignment", json={"trunk_id": carrier.trunk_b["id"]})["data"]
    assert moved["assignment"]["account_id"] == carrier.b["id"]
    admin.patch(f"/numbers/{did['id']}", expect=409, json={"status": "reserved"})
    admin.delete(f"/numbers/{did['id']}", expect=409)
    assert admin.delete(f"/numbers/{did['id']}/assignment")["data"]["status"] == "available"
    assert [n["e164"] for n in admin.get("/numbers", params={"starts_with": "+44"})["data"]] == ["+442079460000"]
    assert admin.delete(f"/numbers/{did['id']}")["data"]["status"] == "retired"
    assert admin.get("/numbers", params={"starts_with": "+44"})["data"] == []


def test_a_vendor_in_a_plan_cannot_be_deleted(admin: Api, carrier: Carrier) -> None:
    got = admin.delete(f"/vendors/{carrier.vendor['id']}", expect=409)
    assert "standard" in got["error"]["message"]
    admin.delete(f"/routing-plans/{carrier.plan['id']}/vendors/{carrier.vendor['id']}")
    admin.delete(f"/vendors/{carrier.vendor['id']}")
    admin.get(f"/vendors/{carrier.vendor['id']}", expect=404)


def test_routing_plans_refuse_codes_that_never_fail_over_and_unknown_strategies(admin: Api, carrier: Carrier) -> None:
    plan = f"/routing-plans/{carrier.plan['id']}"
    got = admin.patch(plan, expect=422, json={"failover_codes": [503, 486]})
    assert "486" in got["error"]["details"][0]["message"]
    admin.patch(plan, expect=422, json={"strategy": "fastest"})
    admin.patch(plan, expect=422, json={"max_attempts": 11})
    changed = admin.patch(plan, json={"failover_codes": [503, 408, 503], "max_attempts": 4,
                                      "attempt_timeout_ms": 2000, "strategy": "priority"})["data"]
    assert (changed["failover_codes"], changed["max_attempts"]) == ([408, 503], 4)
    admin.delete(plan, expect=409)  # accounts use it
    member = admin.put(f"{plan}/vendors/{carrier.vendor['id']}", json={"priority": 9, "weight": 3})["data"]
    assert (member["vendor_name"], member["priority"], member["weight"]) == ("vendor-echo", 9, 3)
    admin.put(f"{plan}/vendors/{uuid.uuid4()}", expect=404, json={})


def test_blocked_destinations_name_exactly_one_owner(admin: Api, carrier: Carrier) -> None:
    admin.post("/blocked-destinations", expect=422, json={"prefix": "1900"})
    admin.post("/blocked-destinations", expect=422, json={"prefix": "1900", "routing_plan_id": carrier.plan["id"],
                                                          "vendor_id": carrier.vendor["id"]})
    admin.post("/blocked-destinations", expect=422, json={"prefix": "1900", "vendor_id": str(uuid.uuid4())})
    block = admin.post("/blocked-destinations", json={"prefix": "1900", "reason": "premium",
                                                      "routing_plan_id": carrier.plan["id"]})["data"]
    admin.post(f"/vendors/{carrier.vendor['id']}/rates", json={"prefix": "1", "rate": "0.01",
                                                               "effective_at": "2020-01-01T00:00:00Z"})
    refused = admin.get("/route/explain", params={"trunk": "BAN-A/trunk-1", "to": "19005551234"})["data"]
    assert (refused["code"], refused["reason"]) == (403, "Destination blocked")
    assert [b["id"] for b in admin.get("/blocked-destinations",
                                       params={"routing_plan_id": carrier.plan["id"]})["data"]] == [block["id"]]
    admin.delete(f"/blocked-destinations/{block['id']}")


def test_ip_blocks_are_listed_and_lifted(admin: Api, redis_client: redis.Redis) -> None:
    defence = Defence(redis_client, 1, 60, 600)
    defence.record_failure("203.0.113.50")
    assert admin.get("/ip-blocks")["data"][0]["ip"] == "203.0.113.50"
    assert admin.delete("/ip-blocks/203.0.113.50")["data"]["ip"] == "203.0.113.50"
    assert not defence.is_blocked("203.0.113.50")
    admin.delete("/ip-blocks/203.0.113.50", expect=404)
    admin.delete("/ip-blocks/not-an-ip", expect=422)


def test_rate_rows_can_be_listed_by_the_number_they_cover(admin: Api, carrier: Carrier) -> None:
    vendor = carrier.vendor["id"]
    for prefix in ("1", "1212", "1212555", "44"):
        admin.post(f"/vendors/{vendor}/rates", json={"prefix": prefix, "rate": "0.01"})
    covering = admin.get(f"/vendors/{vendor}/rates", params={"matching": "12125551234"})["data"]
    assert sorted(r["prefix"] for r in covering) == ["1", "1212", "1212555"]
    admin.post(f"/vendors/{vendor}/rates", expect=422, json={"prefix": "44", "rate": "0.01",
                                                            "effective_at": "2026-01-01T00:00:00Z",
                                                            "ends_at": "2025-01-01T00:00:00Z"})


def test_lists_are_paged_with_a_cursor(admin: Api) -> None:
    for i in range(5):
        admin.post("/vendors", json={"name": f"v{i}"})
    first = admin.get("/vendors", params={"limit": 2})
    second = admin.get("/vendors", params={"limit": 2, "cursor": first["meta"]["page"]["next_cursor"]})
    third = admin.get("/vendors", params={"limit": 2, "cursor": second["meta"]["page"]["next_cursor"]})
    names = [v["name"] for page in (first, second, third) for v in page["data"]]
    assert sorted(names) == [f"v{i}" for i in range(5)] and third["meta"]["page"]["next_cursor"] is None


def test_cdrs_are_searched_by_time_number_and_call_id_newest_first(admin: Api, carrier: Carrier,
                                                                  api_db: psycopg.Connection) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        api_db.execute("INSERT INTO cdr.cdrs (cdr_id, call_id, node, account_id, to_e164, invite_at, sip_code)"
                       " VALUES (%s, %s, 'n', %s, %s, %s, 200)",
                       (uuid.uuid4(), f"c{i}", carrier.a["id"], f"+1212555000{i % 2}", now - timedelta(hours=i)))
    api_db.execute("INSERT INTO cdr.cdrs (cdr_id, call_id, node, invite_at, sip_code) VALUES (%s, 'old', 'n', %s, 404)",
                   (uuid.uuid4(), now - timedelta(days=3)))
    assert [c["call_id"] for c in admin.get("/cdrs")["data"]] == ["c0", "c1", "c2", "c3", "c4"]
    assert [c["call_id"] for c in admin.get("/cdrs", params={"number": "12125550001"})["data"]] == ["c1", "c3"]
    assert [c["call_id"] for c in admin.get("/cdrs", params={"call_id": "c2"})["data"]] == ["c2"]
    week = {"since": (now - timedelta(days=7)).isoformat(), "until": (now + timedelta(minutes=1)).isoformat()}
    pages, cursor = [], None
    while True:
        got = admin.get("/cdrs", params={**week, "limit": 4, **({"cursor": cursor} if cursor else {})})
        pages.append([c["call_id"] for c in got["data"]])
        cursor = got["meta"]["page"]["next_cursor"]
        if cursor is None:
            break
    assert pages == [["c0", "c1", "c2", "c3"], ["c4", "old"]]
    admin.get("/cdrs", expect=422, params={"since": (now - timedelta(days=40)).isoformat()})
    admin.get("/cdrs", expect=422, params={"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()})
    admin.get("/cdrs", expect=422, params={"cursor": "bm9wZQ"})


def test_a_trunks_media_policy_and_topology_hiding_are_set_through_the_api(admin: Api, carrier: Carrier) -> None:
    trunk = carrier.trunk_a["id"]
    before = admin.get(f"/trunks/{trunk}")["data"]
    assert (before["media_anchor"], before["media_codecs"], before["media_failure"], before["topology_hiding"]) == (
        "never", [], "carry", True)
    changed = admin.patch(f"/trunks/{trunk}", json={"media_anchor": "nat", "media_codecs": ["PCMA", "telephone-event"],
                                                    "media_failure": "refuse", "topology_hiding": False})["data"]
    assert (changed["media_anchor"], changed["media_codecs"], changed["media_failure"],
            changed["topology_hiding"]) == ("nat", ["PCMA", "telephone-event"], "refuse", False)
    for bad in ({"media_anchor": "sometimes"}, {"media_codecs": ["PCMA; rm -rf"]}, {"media_failure": None},
                {"topology_hiding": None}, {"media_codecs": ["G729"] * 33}):
        admin.patch(f"/trunks/{trunk}", expect=422, json=bad)
