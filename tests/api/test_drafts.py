"""Drafts and replays through the admin API: edits checked as they are added, a replay of
recorded calls on a draft, publishing in one audited step (operators only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg

from routing_engine.adapters import postgres
from routing_engine.settings import Settings
from tests.api.conftest import Api, Carrier
from tests.integration.test_whatif import Call, cdr_of

YESTERDAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def test_a_draft_is_edited_replayed_and_published_through_the_api(
        operator: Api, reader: Api, carrier: Carrier, api_db: psycopg.Connection, api_settings: Settings) -> None:
    api_db.execute("TRUNCATE drafts.drafts CASCADE")
    api_db.execute("INSERT INTO routing.rates (provider_id, prefix, rate) VALUES (%s, '1', 0.50)",
                   (carrier.vendor["id"],))
    snapshot = postgres.load_snapshot(api_db, datetime.now(UTC), api_settings.auth.realm)
    calls = [Call("BAN-A", f"1212555{n:04d}", None, YESTERDAY + timedelta(hours=n), 30 * n) for n in range(1, 5)]
    postgres.insert_cdrs(api_db, [cdr_of(c, UUID(carrier.trunk_a["id"]), snapshot) for c in calls])

    operator.post("/drafts", json={"name": "echo-dearer", "description": "vendor-echo to 1.50"})
    operator.post("/drafts", expect=422, json={"name": "echo-dearer"})  # one open draft per name
    refused = operator.post("/drafts/echo-dearer/edits", expect=422, json={
        "target": "vendor_rate", "key": {"vendor": "vendor-echo", "prefix": "1"}, "values": {"rate": "-1"}})
    assert "rates_rate_check" in refused["error"]["message"]
    edit = operator.post("/drafts/echo-dearer/edits", json={
        "target": "vendor_rate", "key": {"vendor": "vendor-echo", "prefix": "1"}, "values": {"rate": "1.50"}})["data"]
    assert edit["seq"] == 1
    shown = reader.get("/drafts/echo-dearer")["data"]
    assert shown["problems"] == [] and shown["candidate_version"] != snapshot.version

    body = {"from": YESTERDAY.isoformat(), "to": (YESTERDAY + timedelta(days=1)).isoformat(), "draft": "echo-dearer"}
    report = reader.post("/replays", expect=200, json=body)["data"]
    # the only vendor now costs more than the customer pays: every call would be refused
    assert (report["total"]["calls"], report["total"]["refused"], report["total"]["rerouted"]) == (4, 4, 0)
    assert report["by_customer"]["BAN-A"]["revenue"]["after"] == "0"
    assert reader.post("/replays", expect=404, json={**body, "draft": "nothing"})["success"] is False

    reader.post("/drafts/echo-dearer/publish", expect=403)
    assert postgres.load_snapshot(api_db, datetime.now(UTC), api_settings.auth.realm).version == snapshot.version
    answer = operator.post("/drafts/echo-dearer/publish", expect=200)
    assert answer["data"]["published_version"] == shown["candidate_version"]
    row = api_db.execute("SELECT actor, action, request_id, after->>'version' FROM audit.audit_log"
                         " WHERE entity = 'draft'").fetchall()
    assert row == [("apikey:test-operator", "publish", answer["meta"]["request_id"], shown["candidate_version"])]
    assert api_db.execute("SELECT rate FROM routing.rates WHERE provider_id = %s",
                          (carrier.vendor["id"],)).fetchone()[0] == 1.5
    operator.get("/drafts/echo-dearer", expect=404)
