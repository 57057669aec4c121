"""What-if on a real Postgres: drafts stay out of the live configuration until they are published
(in one audited step), and a replay of yesterday's CDRs against a draft reports exactly the calls
it reroutes or refuses and the margin they lose, as computed here independently."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import psycopg
import pytest

from routing_engine.adapters import drafts, postgres
from routing_engine.bootstrap import Decider, snapshot_store
from routing_engine.domain import destinations, rating
from routing_engine.domain.cdr import CdrRecord, compact_trace, lrn_source_of
from routing_engine.domain.decision import CallRequest, Relay
from routing_engine.domain.lrn import LrnResult
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.entrypoints.api.drafts import publish_draft
from routing_engine.ops import whatif
from routing_engine.settings import Settings
from tests.conftest import test_environ

ROOT = Path(__file__).resolve().parents[2]
MICRO = Decimal("0.000001")
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
YESTERDAY = TODAY - timedelta(days=1)
RATE_A, RATE_B, RAISED_A, PRICE = Decimal("0.010"), Decimal("0.012"), Decimal("0.030"), Decimal("0.020")


@dataclass(frozen=True)
class Carrier:
    a: uuid.UUID
    b: uuid.UUID
    trunks: dict[str, uuid.UUID]  # BAN -> trunk


@pytest.fixture
def carrier(db: psycopg.Connection) -> Carrier:
    """carrier-a sells all of +1 at 0.010, carrier-b only +1 212 at 0.012; customers pay 0.020
    (6/6 increments). Least cost: every call goes to carrier-a."""
    db.execute("TRUNCATE drafts.drafts CASCADE")
    ids = {}
    for name, host, prefix, rate in (("carrier-a", "127.0.43.10", "1", RATE_A),
                                     ("carrier-b", "127.0.43.11", "1212", RATE_B)):
        (vid,) = db.execute("INSERT INTO routing.providers (name) VALUES (%s) RETURNING id", (name,)).fetchone()
        db.execute("INSERT INTO routing.provider_gateways (provider_id, name, host) VALUES (%s, %s, %s)",
                   (vid, f"{name}-gw", host))
        db.execute("INSERT INTO routing.rates (provider_id, prefix, rate) VALUES (%s, %s, %s)", (vid, prefix, rate))
        ids[name] = vid
    (plan,) = db.execute("INSERT INTO routing.routing_plans (name) VALUES ('wholesale') RETURNING id").fetchone()
    for vid in ids.values():
        db.execute("INSERT INTO routing.routing_plan_providers (routing_plan_id, provider_id) VALUES (%s, %s)",
                   (plan, vid))
    (retail,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('retail') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate, initial_increment,"
               " subsequent_increment) VALUES (%s, '1', %s, 6, 6)", (retail, PRICE))
    trunks = {}
    for n, ban in enumerate(("BAN4301", "BAN4302")):
        (aid,) = db.execute("INSERT INTO accounts.accounts (ban, name, status, rate_plan_id, routing_plan_id)"
                            " VALUES (%s, %s, 'active', %s, %s) RETURNING id", (ban, ban, retail, plan)).fetchone()
        (tid,) = db.execute("INSERT INTO trunks.trunks (account_id, name) VALUES (%s, 'main') RETURNING id",
                            (aid,)).fetchone()
        db.execute("INSERT INTO trunks.trunk_access_lists (account_id, trunk_id, cidr) VALUES (%s, %s, %s)",
                   (aid, tid, f"127.0.43.{20 + n}/32"))
        trunks[ban] = tid
    return Carrier(ids["carrier-a"], ids["carrier-b"], trunks)


@dataclass(frozen=True)
class Call:
    ban: str
    dialed: str
    lrn: str | None  # E.164 digits when ported
    at: datetime
    duration_s: int


def yesterdays_calls() -> list[Call]:
    rnd = random.Random(43)
    calls = []
    for i in range(60):
        npa = rnd.choice(["212", "310", "415"])
        lrn = "12125550000" if npa == "310" and i % 5 == 0 else None  # a few 310 numbers ported into 212
        duration = 0 if i % 7 == 3 else rnd.randint(1, 600)
        calls.append(Call(rnd.choice(["BAN4301", "BAN4302"]), f"1{npa}555{rnd.randint(0, 9999):04d}", lrn,
                          YESTERDAY + timedelta(hours=8, minutes=13 * i), duration))
    return calls


def cdr_of(call: Call, trunk_id: uuid.UUID, snapshot: RoutingSnapshot, node: str = "test-node") -> CdrRecord:
    """The CDR a real call leaves: decided as a SIP worker decides (its LRN answered by the dip of
    the moment), billed by ``rating.bill``, the trace stored as the call path stores it."""
    call_id = f"replay-{uuid.uuid4()}"
    dip = LrnResult(call.lrn, "local")
    decision = Decider("US", lrn=lambda number: dip)(
        CallRequest(call_id, "127.0.43.20", 5060, "udp", call.dialed, "14155550100"), snapshot, call.at,
        trunk_id=trunk_id, method="acl")
    assert isinstance(decision, Relay), decision
    route = decision.routes[0]
    owed = rating.bill(call.duration_s, 0, decision.price, route.rate)
    ctx = decision.context
    answer = call.at + timedelta(seconds=2)
    return CdrRecord(
        cdr_id=uuid.uuid4(), call_id=call_id, node=node, invite_at=call.at,
        sip_code=200 if call.duration_s else 487, sip_reason="OK" if call.duration_s else "Request Terminated",
        account_id=ctx.account_id, trunk_id=ctx.trunk_id, provider_id=route.vendor_id, gateway=route.gateway.name,
        from_raw="14155550100", to_raw=call.dialed, from_e164=ctx.from_e164, to_e164=ctx.to_e164,
        answer_at=answer if call.duration_s else None,
        end_at=answer + timedelta(seconds=call.duration_s), duration_s=call.duration_s, vendor_rate=route.rate,
        trace=compact_trace(decision.trace), lrn=ctx.lrn, jurisdiction=ctx.jurisdiction,
        billable_s=owed.billable_s, customer_rate=decision.price.per_minute, customer_price=owed.customer_price,
        vendor_cost=owed.vendor_cost, margin=owed.margin, ban=call.ban, lrn_source=lrn_source_of(decision.trace))


def store_yesterday(db: psycopg.Connection, settings: Settings, carrier: Carrier) -> tuple[list[Call], list[CdrRecord]]:
    snapshot = postgres.load_snapshot(db, datetime.now(UTC), settings.auth.realm)
    calls = yesterdays_calls()
    records = [cdr_of(c, carrier.trunks[c.ban], snapshot) for c in calls]
    assert {r.provider_id for r in records} == {carrier.a}  # today every call goes to carrier-a
    postgres.insert_cdrs(db, records)
    return calls, records


# the money, computed here without the project's rating code
def per_second_cost(rate: Decimal, seconds: int) -> Decimal:
    return (rate * seconds / 60).quantize(MICRO, rounding=ROUND_HALF_UP) if seconds else Decimal(0)


def customer_charge(seconds: int) -> Decimal:
    if seconds == 0:
        return Decimal(0)
    billed = max(6, math.ceil(seconds / 6) * 6)
    return (PRICE * billed / 60).quantize(MICRO, rounding=ROUND_HALF_UP)


def raise_carrier_a(db: psycopg.Connection, settings: Settings) -> None:
    drafts.create(db, "dearer-a", "test", "carrier-a raises +1 to 0.030")
    drafts.add_edit(db, "dearer-a", drafts.Edit("vendor_rate", {"vendor": "carrier-a", "prefix": "1"},
                                                {"rate": str(RAISED_A)}), datetime.now(UTC), settings.auth.realm)


def test_replaying_yesterday_against_a_dearer_vendor_reports_exactly_the_rerouted_calls_and_margin(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    calls, records = store_yesterday(db, settings, carrier)
    raise_carrier_a(db, settings)
    name, snapshot = whatif.candidate(settings, db, datetime.now(UTC), draft="dearer-a")
    report = whatif.replay(settings, db, name, snapshot, YESTERDAY, TODAY, page_size=7)  # pages end mid-run

    # carrier-a now costs more than the customer pays: margin protection drops it everywhere;
    # calls to +1 212 (by LRN when ported) move to carrier-b, the others have no vendor left
    rerouted = {r.cdr_id for c, r in zip(calls, records, strict=True) if (c.lrn or c.dialed).startswith("1212")}
    refused = {r.cdr_id for r in records} - rerouted
    assert any(c.lrn for c in calls) and 0 < len(rerouted) < len(records)
    changes = {c.cdr_id: c for c in report.changes}
    assert {i for i, c in changes.items() if c.rerouted} == rerouted
    assert all(changes[i].vendor_after == carrier.b for i in rerouted)
    assert {i for i, c in changes.items() if c.refused} == refused
    assert {changes[i].refusal for i in refused} == {"503 No Route Available"}
    assert (report.total.calls, report.total.rerouted, report.total.refused) == (60, len(rerouted), len(refused))
    assert report.unreplayable == 0

    margin = Decimal(0)
    for c, r in zip(calls, records, strict=True):
        a_cost = per_second_cost(RATE_A, c.duration_s)
        if r.cdr_id in rerouted:
            margin -= per_second_cost(RATE_B, c.duration_s) - a_cost
        else:
            margin -= customer_charge(c.duration_s) - a_cost
    assert margin < 0
    assert report.total.margin_after - report.total.margin_before == margin
    by_customer = sum((t.margin_after - t.margin_before for t in report.by_customer.values()), Decimal(0))
    assert by_customer == margin and set(report.by_customer) == {"BAN4301", "BAN4302"}
    assert set(report.by_destination) == {"1"}  # the customer's rate prefix
    assert report.total.revenue_before == sum((customer_charge(c.duration_s) for c in calls), Decimal(0))


def test_a_cdr_that_cannot_be_replayed_is_reported_with_its_reason_and_the_rest_go_on(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    calls, records = store_yesterday(db, settings, carrier)
    stranger = uuid.uuid4()
    bad = [
        CdrRecord(uuid.uuid4(), "unknown-trunk", "test-node", YESTERDAY + timedelta(hours=9), 200,
                  trunk_id=stranger, to_raw="12125550100", duration_s=10, customer_price=Decimal("0.01")),
        CdrRecord(uuid.uuid4(), "no-number", "test-node", YESTERDAY + timedelta(hours=10), 200,
                  trunk_id=carrier.trunks["BAN4301"], to_raw=None, duration_s=10, customer_price=Decimal("0.01")),
        CdrRecord(uuid.uuid4(), "bad-lrn", "test-node", YESTERDAY + timedelta(hours=11), 200,
                  trunk_id=carrier.trunks["BAN4301"], to_raw="12125550100", lrn="+12x", duration_s=10,
                  customer_price=Decimal("0.01")),
        CdrRecord(uuid.uuid4(), "scanner", "test-node", YESTERDAY + timedelta(hours=12), 403, "Forbidden",
                  to_raw="100"),  # refused before any trunk was known: counted, nothing to decide again
        CdrRecord(uuid.uuid4(), "today", "test-node", TODAY + timedelta(minutes=1), 200,
                  trunk_id=carrier.trunks["BAN4301"], to_raw="12125550100"),  # outside the period
    ]
    postgres.insert_cdrs(db, bad)
    raise_carrier_a(db, settings)
    name, snapshot = whatif.candidate(settings, db, datetime.now(UTC), draft="dearer-a")
    report = whatif.replay(settings, db, name, snapshot, YESTERDAY, TODAY)

    reasons = {s.call_id: s.reason for s in report.skipped}
    assert set(reasons) == {"unknown-trunk", "no-number", "bad-lrn"}
    assert reasons["unknown-trunk"] == f"unknown trunk: {stranger} is not in the candidate"
    assert reasons["no-number"] == "no dialed number recorded"
    assert reasons["bad-lrn"] == "bad LRN '+12x'"
    assert report.unreplayable == 3 and report.total.calls == len(records) and report.unidentified == 1


def test_a_draft_is_invisible_to_live_routing_until_published_and_publishing_is_audited(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    realm = settings.auth.realm
    live = postgres.load_snapshot(db, datetime.now(UTC), realm)
    with psycopg.connect(settings.database_url, autocommit=True) as listener:
        listener.execute("LISTEN warp_config")
        raise_carrier_a(db, settings)
        candidate = drafts.candidate(db, drafts.get(db, "dearer-a").edits, datetime.now(UTC), realm)
        assert candidate.version != live.version
        assert candidate.vendors[carrier.a].rates["1"][0].rate == RAISED_A
        # nothing reached the live tables, nor the publisher
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []
        again = postgres.load_snapshot(db, datetime.now(UTC), realm)
        assert again.version == live.version and again.vendors[carrier.a].rates["1"][0].rate == RATE_A
        with psycopg.connect(settings.database_url, autocommit=True) as other:  # another session
            assert other.execute("SELECT rate FROM routing.rates WHERE provider_id = %s",
                                 (carrier.a,)).fetchone() == (RATE_A,)
        assert db.execute("SELECT count(*) FROM audit.audit_log").fetchone() == (0,)

        done = publish_draft(db, "dearer-a", "cli:ops", realm, destinations.from_settings(settings), "req-43")
        assert list(listener.notifies(timeout=5, stop_after=1))  # the publisher is told on commit
    published = postgres.load_snapshot(db, datetime.now(UTC), realm)
    assert published.version == done.version == candidate.version
    assert published.vendors[carrier.a].rates["1"][0].rate == RAISED_A
    rows = db.execute("SELECT actor, action, entity, after, request_id FROM audit.audit_log").fetchall()
    assert len(rows) == 1
    actor, action, entity, after, request_id = rows[0]
    assert (actor, action, entity, request_id) == ("cli:ops", "publish", "draft", "req-43")
    assert after["name"] == "dearer-a" and after["version"] == done.version
    assert after["edits"] == [{"seq": 1, "target": "vendor_rate", "key": {"vendor": "carrier-a", "prefix": "1"},
                               "values": {"rate": "0.030"}, "remove": False}]
    with pytest.raises(drafts.DraftNotFound):  # published once; no longer open
        publish_draft(db, "dearer-a", "cli:ops", realm, destinations.from_settings(settings))
    assert [d.published_version for d in drafts.listing(db, published=True)] == [done.version]


def test_a_draft_that_would_not_validate_is_refused_whole_and_nothing_changes(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    realm, now = settings.auth.realm, datetime.now(UTC)
    live = postgres.load_snapshot(db, now, realm)
    drafts.create(db, "empty-plan", "test")
    drafts.add_edit(db, "empty-plan", drafts.Edit("vendor_rate", {"vendor": "carrier-b", "prefix": "1212"},
                                                  {"rate": "0.001"}), now, realm)
    for vendor in ("carrier-a", "carrier-b"):  # a plan with no vendors is refused by validation
        drafts.add_edit(db, "empty-plan", drafts.Edit("plan_vendor", {"plan": "wholesale", "vendor": vendor}, None),
                        now, realm)
    with pytest.raises(drafts.InvalidDraft, match="routing plan wholesale: has no vendors"):
        publish_draft(db, "empty-plan", "cli:ops", realm, destinations.from_settings(settings))
    assert postgres.load_snapshot(db, now, realm).version == live.version
    assert db.execute("SELECT count(*) FROM audit.audit_log").fetchone() == (0,)
    assert drafts.get(db, "empty-plan").published_at is None


@pytest.mark.parametrize(("edit", "why"), [
    (drafts.Edit("vendor_rate", {"vendor": "nobody", "prefix": "1"}, {"rate": "0.1"}), "no vendor 'nobody'"),
    (drafts.Edit("vendor_rate", {"vendor": "carrier-a", "prefix": "1"}, {"rate": "-1"}), "rates_rate_check"),
    (drafts.Edit("vendor_rate", {"vendor": "carrier-a", "prefix": "1"}, {"colour": "red"}), "no column colour"),
    (drafts.Edit("vendor_rate", {"vendor": "carrier-a", "prefix": "1"}, {"rate": "cheap"}), "invalid input"),
    (drafts.Edit("plan", {"plan": "wholesale"}, None), "never removed"),
    (drafts.Edit("trunk", {"trunk": "main"}, {"enabled": False}), "unknown target"),
])
def test_an_edit_that_does_not_apply_is_refused_with_its_reason(
        db: psycopg.Connection, settings: Settings, carrier: Carrier, edit: drafts.Edit, why: str) -> None:
    drafts.create(db, "bad", "test")
    with pytest.raises(drafts.DraftError, match=why):
        drafts.add_edit(db, "bad", edit, datetime.now(UTC), settings.auth.realm)
    assert drafts.get(db, "bad").edits == ()


def test_warp_replay_reports_the_draft_as_json_on_the_command_line(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    calls, records = store_yesterday(db, settings, carrier)
    env = {**test_environ(), "PYTHONPATH": str(ROOT)}
    edit = subprocess.run(
        [sys.executable, "-m", "routing_engine.entrypoints.cli", "draft", "create", "cli-draft"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert edit.returncode == 0, edit.stderr
    edit = subprocess.run(
        [sys.executable, "-m", "routing_engine.entrypoints.cli", "draft", "edit", "cli-draft", "vendor_rate",
         "vendor=carrier-a", "prefix=1", "--set", f"rate={RAISED_A}"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert edit.returncode == 0, edit.stderr
    done = subprocess.run(
        [sys.executable, "-m", "routing_engine.entrypoints.cli", "replay", "--from", YESTERDAY.isoformat(),
         "--to", TODAY.isoformat(), "--draft", "cli-draft", "--json"],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "calls" not in done.stderr  # no progress bar off a terminal
    report = json.loads(done.stdout)
    rerouted = sum(1 for c in calls if (c.lrn or c.dialed).startswith("1212"))
    assert report["candidate"] == "draft cli-draft"
    assert (report["total"]["calls"], report["total"]["rerouted"]) == (len(records), rerouted)
    assert report["total"]["refused"] == len(records) - rerouted
    assert report["unreplayable"] == 0


def test_a_replay_on_a_published_version_decides_on_that_version_not_on_what_is_live_now(
        db: psycopg.Connection, settings: Settings, carrier: Carrier) -> None:
    node = dataclasses.replace(settings.node, name=f"replay-{uuid.uuid4()}")  # a store of its own
    node_settings = dataclasses.replace(settings, node=node)
    store = snapshot_store(node_settings)
    try:
        calls, records = store_yesterday(db, settings, carrier)
        before = postgres.load_snapshot(db, datetime.now(UTC), settings.auth.realm)
        store.publish(before)
        raise_carrier_a(db, settings)
        publish_draft(db, "dearer-a", "test", settings.auth.realm, destinations.from_settings(settings))

        name, old = whatif.candidate(node_settings, db, datetime.now(UTC), version=before.version)
        on_old = whatif.replay(node_settings, db, name, old, YESTERDAY, TODAY)
        assert (name, on_old.snapshot, on_old.changed, on_old.total.calls) == (
            f"version {before.version}", before.version, 0, len(records))
        name, now = whatif.candidate(node_settings, db, datetime.now(UTC))
        on_now = whatif.replay(node_settings, db, name, now, YESTERDAY, TODAY)
        assert on_now.total.rerouted + on_now.total.refused == len(records)
        with pytest.raises(whatif.CandidateError, match="not kept"):
            whatif.candidate(node_settings, db, datetime.now(UTC), version="0123456789ab")
    finally:
        shutil.rmtree(store.directory, ignore_errors=True)
