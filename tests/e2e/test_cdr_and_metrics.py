"""A known mix of calls through a real node: the CDR table and the metrics endpoint (scraped over
HTTP from the companion) must both match the mix exactly."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from routing_engine.adapters.money import Limits
from routing_engine.domain.credentials import ha1_md5
from tests.e2e import provision
from tests.e2e.harness import (
    SCENARIOS,
    Node,
    call_id_of,
    kamailio_node,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.150"
METRICS = f"{PROXY}:9464"
MAIN, NORATE, LIMITED, DIGEST = "127.0.0.151", "127.0.0.152", "127.0.0.153", "127.0.0.154"
OK_VENDOR, BUSY_VENDOR = "127.0.0.161", "127.0.0.162"
TO_OK, TO_BUSY, TO_NOWHERE = "12125551234", "13055551234", "447911123456"
CALLER = "13055550100"


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection) -> dict[str, tuple[uuid.UUID, uuid.UUID]]:
    db = module_db
    provision.reset(db)
    ok = provision.vendor(db, "ok-vendor", OK_VENDOR, {"1212": "0.0050"})
    busy = provision.vendor(db, "busy-vendor", BUSY_VENDOR, {"1305": "0.0050"})
    plan = provision.plan(db, "mix", [ok, busy])
    (uk_only,) = db.execute("INSERT INTO billing.rate_plans (name) VALUES ('uk-only') RETURNING id").fetchone()
    db.execute("INSERT INTO billing.rate_plan_rates (rate_plan_id, prefix, rate) VALUES (%s, '44', 0.05)", (uk_only,))
    ids = {
        "main": provision.customer(db, "BAN-MIX", f"{MAIN}/32", plan),
        "norate": provision.customer(db, "BAN-NORATE", f"{NORATE}/32", plan, rate_plan=uk_only),
        "limited": provision.customer(db, "BAN-LIMITED", f"{LIMITED}/32", plan),
        "digest": provision.customer(db, "BAN-DIGEST", "127.0.0.254/32", plan),
    }
    db.execute("UPDATE trunks.trunks SET max_concurrent = 1 WHERE id = %s", (ids["limited"][1],))
    db.execute("UPDATE trunks.trunks SET auth_mode = 'digest' WHERE id = %s", (ids["digest"][1],))
    db.execute("INSERT INTO trunks.trunk_auth (account_id, trunk_id, username, realm, ha1) VALUES (%s, %s, %s, %s, %s)",
               (*ids["digest"], "mix-user", "warp.local", ha1_md5("mix-user", "warp.local", "the right one")))
    return ids


@pytest.fixture(scope="module")
def node(world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    workdir = tmp_path_factory.mktemp("metrics-node")
    with kamailio_node(e2e_env, PROXY, workdir, extra_env={
            "WARP_METRICS__LISTEN": METRICS,
            "WARP_METRICS__KAMAILIO_CTL": f"unix:{workdir / 'run' / 'kamailio_ctl'}",
            "WARP_NODE__NAME": "metrics-node"}) as n:
        wait_for(lambda: _scrape_or_none() is not None, 30, "the metrics endpoint")
        yield n


def _scrape_or_none() -> str | None:
    try:
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as response:
            return response.read().decode()  # type: ignore[no-any-return]
    except OSError:
        return None


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = _scrape_or_none()
    assert text is not None, "metrics endpoint not answering"
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture(scope="module")
def mix(node: Node, world: dict[str, tuple[uuid.UUID, uuid.UUID]], clean_redis: redis.Redis,
        tmp_path_factory: pytest.TempPathFactory, module_db: psycopg.Connection) -> dict[str, str]:
    """Seven call attempts: answered twice, vendor-rejected, no route, auth refused, rating refusal,
    limit refusal. Returns Call-ID by kind."""
    tmp = tmp_path_factory.mktemp("mix")
    calls: dict[str, str] = {}

    with vendor("vendor_answer.xml", OK_VENDOR, tmp) as ok:
        uac = sipp("customer_call.xml", MAIN, tmp, remote=node.target, service=TO_OK, keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        assert ok.wait() == 0
    calls["answered"] = call_id_of(uac)

    with vendor("vendor_reject.xml", BUSY_VENDOR, tmp, keys={"reject_code": "486", "reject_reason": "Busy Here"}):
        uac = sipp(scenario_expecting(486, tmp), MAIN, tmp, remote=node.target, service=TO_BUSY,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
    calls["rejected"] = call_id_of(uac)

    for kind, source, dialed, code in (("no_route", MAIN, TO_NOWHERE, 404), ("rating", NORATE, TO_OK, 403)):
        uac = sipp(scenario_expecting(code, tmp), source, tmp, remote=node.target, service=dialed,
                   keys={"caller": CALLER})
        assert uac.wait() == 0, uac.report()
        calls[kind] = call_id_of(uac)

    refused_auth = tmp / "auth_refused_403.xml"
    refused_auth.write_text((SCENARIOS / "customer_auth_refused.xml").read_text().replace("EXPECTED_CODE", "403"))
    uac = sipp(refused_auth, DIGEST, tmp, remote=node.target, service=TO_OK, keys={"caller": CALLER},
               extra=["-au", "mix-user", "-ap", "a wrong one"])
    assert uac.wait() == 0, uac.report()
    calls["auth"] = call_id_of(uac)

    account, trunk = world["limited"]
    limits = Limits(clean_redis)
    with vendor("vendor_answer.xml", OK_VENDOR, tmp) as ok:
        held = sipp("customer_call.xml", LIMITED, tmp, remote=node.target, service=TO_OK, keys={"caller": CALLER},
                    hold_ms=3000)
        wait_for(lambda: limits.active(trunk, account, time.time())[0] == 1, 10, "the held call in progress")
        refused = sipp(scenario_expecting(503, tmp), LIMITED, tmp, local_port=5070, remote=node.target,
                       service=TO_OK, keys={"caller": CALLER})
        assert refused.wait() == 0, refused.report()
        assert held.wait() == 0, held.report()
        assert ok.wait() == 0
    calls["held"], calls["limit"] = call_id_of(held), call_id_of(refused)

    count = lambda: module_db.execute("SELECT count(*) FROM cdr.cdrs").fetchone()[0]  # noqa: E731
    wait_for(lambda: count() >= len(calls), 20, "every CDR in Postgres")
    return calls


def test_every_attempt_of_the_mix_left_exactly_one_cdr(mix: dict[str, str], module_db: psycopg.Connection) -> None:
    rows = {r[0]: r[1:] for r in module_db.execute(
        "SELECT call_id, sip_code, sip_reason, hangup_side, q850_cause, ban FROM cdr.cdrs")}
    assert len(rows) == 7 and set(rows) == set(mix.values())
    by_kind = {kind: rows[call_id] for kind, call_id in mix.items()}
    assert by_kind == {
        "answered": (200, "OK", "caller", None, "BAN-MIX"),
        "held": (200, "OK", "caller", None, "BAN-LIMITED"),
        "rejected": (486, "Busy Here", "callee", None, "BAN-MIX"),
        "no_route": (404, "No Route", "proxy", 3, "BAN-MIX"),
        "rating": (403, "No customer rate", "proxy", 57, "BAN-NORATE"),
        "auth": (403, "Forbidden", "proxy", None, None),
        "limit": (503, "Call limit reached", "proxy", None, "BAN-LIMITED"),
    }


def test_an_answered_cdr_has_its_times_pdd_money_and_vendor_attempt(
        mix: dict[str, str], module_db: psycopg.Connection) -> None:
    cur = module_db.execute("SELECT * FROM cdr.cdrs WHERE call_id = %s", (mix["answered"],))
    row = dict(zip([c.name for c in cur.description], cur.fetchone(), strict=True))
    assert row["invite_at"] <= row["ringing_at"] <= row["answer_at"] <= row["end_at"]
    assert row["pdd_ms"] == round((row["ringing_at"] - row["invite_at"]).total_seconds() * 1000)
    assert row["lrn_source"] in ("local", "cache") and row["jurisdiction"] and row["to_e164"] == "+" + TO_OK
    assert (row["from_raw"], row["to_raw"]) == (CALLER, TO_OK)
    assert row["customer_rate"] is not None and row["vendor_cost"] is not None and row["margin"] is not None
    (attempt,) = row["attempts"]
    assert (attempt["vendor"], attempt["gateway"], attempt["code"]) == ("ok-vendor", "ok-vendor-gw", 200)
    assert attempt["started_at"] <= attempt["ringing_at"] <= attempt["ended_at"] and attempt["pdd_ms"] >= 0
    assert json.loads(json.dumps(row["trace"]))["routes"][0]["vendor"] == "ok-vendor"


def test_the_metrics_counters_match_the_mix(mix: dict[str, str]) -> None:
    m = scrape()
    calls = {(dict(labels)["outcome"], dict(labels)["code_class"]): v
             for (name, labels), v in m.items() if name == "warp_calls_total"}
    assert calls == {("answered", "2xx"): 2, ("failed", "4xx"): 1, ("refused", "4xx"): 3, ("refused", "5xx"): 1}
    refusals = {dict(labels)["reason"]: v for (name, labels), v in m.items() if name == "warp_call_refusals_total"}
    assert refusals == {"no_route": 1, "rating": 1, "auth": 1, "limits": 1}
    assert value(m, "warp_limit_refusals_total", limit="concurrent", scope="trunk") == 1
    assert value(m, "warp_auth_failures_total", kind="bad_credentials") == 1
    # every INVITE, the challenged one twice
    assert value(m, "warp_initial_invites_total") == 8
    # decided: both answered, rejected, no route, rating, limit (auth never reached the decision)
    assert value(m, "warp_routing_decision_seconds_count") == 6
    assert value(m, "warp_vendor_attempts_total", vendor="ok-vendor", code_class="2xx") == 2
    assert value(m, "warp_vendor_attempts_total", vendor="busy-vendor", code_class="4xx") == 1
    assert value(m, "warp_vendor_pdd_seconds_count", vendor="ok-vendor") == 2
    assert value(m, "warp_lrn_lookups_total", result="dip") >= 1
    assert value(m, "warp_lrn_lookups_total", result="cache_hit") >= 1  # the same number, dipped once
    assert value(m, "warp_cdr_sink_rows_total", sink="postgres") == 7


def test_scrape_time_sources_report_kamailio_redis_and_the_snapshot(mix: dict[str, str]) -> None:
    # vendor figures are the ones the companion publishes, every quality.refresh_s
    wait_for(lambda: value(scrape(), "warp_vendor_window_attempts", vendor="ok-vendor") == 2, 10,
             "the vendor figures of the mix published")
    m = scrape()
    for source in ("kamailio", "redis", "snapshot", "spool"):
        assert value(m, "warp_metrics_source_up", source=source) == 1, source
    assert value(m, "kamailio_statistic", group="core", stat="rcv_requests") > 0
    assert (("kamailio_statistic", frozenset({("group", "shmem"), ("stat", "free_size")})) in m)
    assert value(m, "warp_active_calls", state="answered") == 0
    assert value(m, "warp_cdr_stream_length") == 0
    assert value(m, "warp_vendor_asr", vendor="ok-vendor") == 1.0
    assert value(m, "warp_vendor_asr", vendor="busy-vendor") == 0.0
    assert value(m, "warp_vendor_window_attempts", vendor="ok-vendor") == 2
    assert any(name == "warp_snapshot_info" for name, _ in m)
    assert value(m, "warp_cdr_emitter_lag_seconds_count", sink="postgres") == 7
