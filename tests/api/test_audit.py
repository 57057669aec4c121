"""Every write leaves an audit row — who, what, before and after — with secrets redacted."""

from __future__ import annotations

from typing import Any

import psycopg

from routing_engine.entrypoints.api import audit
from tests.api.conftest import Api, Carrier


def audit_rows(db: psycopg.Connection, entity: str) -> list[tuple[Any, ...]]:
    return db.execute("SELECT actor, action, entity_id, before, after, account_id::text, request_id"
                      " FROM audit.audit_log WHERE entity = %s ORDER BY created_at, id", (entity,)).fetchall()


def test_a_change_is_audited_with_actor_before_after_and_request(admin: Api, carrier: Carrier,
                                                                api_db: psycopg.Connection) -> None:
    answer = admin.patch(f"/accounts/{carrier.a['id']}", json={"status": "suspended", "status_reason": "overdue"})
    actor, action, entity_id, before, after, account, request_id = audit_rows(api_db, "account")[-1]
    assert (actor, action, entity_id, account) == ("apikey:test-admin", "update", carrier.a["id"], carrier.a["id"])
    assert (before["status"], after["status"], after["status_reason"]) == ("active", "suspended", "overdue")
    assert request_id == answer["meta"]["request_id"]


def test_creations_and_deletions_are_audited(admin: Api, carrier: Carrier, api_db: psycopg.Connection) -> None:
    gw = admin.post(f"/vendors/{carrier.vendor['id']}/gateways", json={"name": "gw2", "host": "Example.NET"})["data"]
    assert gw["host"] == "example.net"
    admin.delete(f"/vendors/{carrier.vendor['id']}/gateways/{gw['id']}")
    rows = [r for r in audit_rows(api_db, "gateway") if r[2] == gw["id"]]
    assert [(r[1], r[3] is None, r[4] is None) for r in rows] == [("create", True, False), ("delete", False, True)]


def test_a_refused_write_leaves_no_audit_row(admin: Api, carrier: Carrier, api_db: psycopg.Connection) -> None:
    count = api_db.execute("SELECT count(*) FROM audit.audit_log").fetchone()
    admin.post("/vendors", expect=409, json={"name": "vendor-echo"})
    admin.patch(f"/routing-plans/{carrier.plan['id']}", expect=422, json={"failover_codes": [486]})
    assert api_db.execute("SELECT count(*) FROM audit.audit_log").fetchone() == count


def test_passwords_and_hashes_never_reach_the_audit_log(admin: Api, carrier: Carrier,
                                                        api_db: psycopg.Connection) -> None:
    admin.put(f"/trunks/{carrier.trunk_a['id']}/credentials/acme-1", json={"password": "Zebra-Crossing-99"})
    admin.put(f"/trunks/{carrier.trunk_a['id']}/credentials/acme-1", json={"password": "Another-Secret-77"})
    (ha1,) = api_db.execute("SELECT ha1 FROM trunks.trunk_auth WHERE username = 'acme-1'").fetchone()
    (everything,) = api_db.execute("SELECT string_agg(row_to_json(a)::text, ' ') FROM audit.audit_log a").fetchone()
    for secret in ("Zebra-Crossing-99", "Another-Secret-77", ha1):
        assert secret not in everything
    actions = [r[1] for r in audit_rows(api_db, "trunk_credential")]
    assert actions == ["create", "set_password"]
    assert audit_rows(api_db, "trunk_credential")[-1][4]["password"] == audit.REDACTED


def test_redaction_reaches_nested_secret_looking_keys() -> None:
    cleaned = audit.redact({"name": "x", "nested": [{"api_key": "k", "HA1": "h", "token": "t", "port": 5060}]})
    assert cleaned == {"name": "x", "nested": [{"api_key": "[redacted]", "HA1": "[redacted]", "token": "[redacted]",
                                                "port": 5060}]}


def test_a_top_up_is_audited_and_written_to_the_ledger(admin: Api, carrier: Carrier,
                                                      api_db: psycopg.Connection) -> None:
    admin.post(f"/accounts/{carrier.a['id']}/topups", json={"amount": "25.50", "reference": "pay-1"})
    assert api_db.execute("SELECT kind, amount::text, reference FROM billing.balance_updates").fetchall() == [
        ("topup", "25.500000", "pay-1")]
    (_, action, _, _, after, account, _) = audit_rows(api_db, "balance_update")[-1]
    assert (action, after["amount"], account) == ("create", "25.500000", carrier.a["id"])
