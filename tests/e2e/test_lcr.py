"""LCR end to end: LRN, jurisdiction, failover, blocks, future-dated rates and translation, each
checked against what `warp route explain` says about the same call."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import redis

from tests.e2e import provision
from tests.e2e.harness import (
    Node,
    RawUA,
    call_id_of,
    cdr,
    explain,
    header,
    kamailio_node,
    request_uri,
    scenario_expecting,
    sipp,
    vendor,
    wait_for,
)

pytestmark = pytest.mark.e2e

PROXY = "127.0.0.4"
LRN_CUSTOMER, JUR_CUSTOMER, FO_CUSTOMER, BLOCK_CUSTOMER, FUTURE_CUSTOMER = (
    "127.0.0.31", "127.0.0.32", "127.0.0.33", "127.0.0.34", "127.0.0.35")
NY_VENDOR, FL_VENDOR = "127.0.0.41", "127.0.0.42"
INTER_VENDOR, INTRA_VENDOR = "127.0.0.43", "127.0.0.44"
FIRST_VENDOR, SECOND_VENDOR = "127.0.0.45", "127.0.0.46"
STEADY_VENDOR, FUTURE_VENDOR = "127.0.0.47", "127.0.0.48"
PORTED, PORTED_LRN = "12125551234", "13055559999"
FL_CALLER, NY_CALLER = "13055550100", "15185550100"
SWITCH_AFTER_S = 8


@pytest.fixture(scope="module")
def switch_at() -> datetime:
    return datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=SWITCH_AFTER_S)


@pytest.fixture(scope="module")
def world(module_db: psycopg.Connection, switch_at: datetime) -> dict[str, uuid.UUID]:
    db = module_db
    provision.reset(db)
    db.execute("INSERT INTO routing.npanxx (npanxx, state, lata, rate_center) VALUES"
               " ('212555', 'NY', '132', 'NYC'), ('518555', 'NY', '134', 'ALBANY'),"
               " ('305555', 'FL', '460', 'MIAMI')")
    db.execute("INSERT INTO routing.lnp (tn, lrn) VALUES (%s, %s)", (PORTED, PORTED_LRN))

    ny = provision.vendor(db, "ny-direct", NY_VENDOR, {"1212555": "0.0010", "1": "0.0500"})
    fl = provision.vendor(db, "fl-direct", FL_VENDOR, {"1305555": "0.0020", "1": "0.0600"})
    db.execute("UPDATE routing.providers SET number_format = 'national', tech_prefix = '7788#',"
               " translate_caller = true, send_lrn = true WHERE id = %s", (fl,))
    provision.customer(db, "BAN-LRN", f"{LRN_CUSTOMER}/32", provision.plan(db, "lrn", [ny, fl]))

    inter = provision.vendor(db, "inter-cheap", INTER_VENDOR, {})
    intra = provision.vendor(db, "intra-cheap", INTRA_VENDOR, {})
    for vid, i_rate, a_rate in ((inter, "0.010", "0.030"), (intra, "0.020", "0.015")):
        db.execute("INSERT INTO routing.rates (provider_id, prefix, rate, interstate_rate, intrastate_rate)"
                   " VALUES (%s, '1212555', 0.030, %s, %s)", (vid, i_rate, a_rate))
    provision.customer(db, "BAN-JUR", f"{JUR_CUSTOMER}/32", provision.plan(db, "jurisdiction", [inter, intra]))

    first = provision.vendor(db, "first", FIRST_VENDOR, {"1": "0.0010"})
    second = provision.vendor(db, "second", SECOND_VENDOR, {"1": "0.0020"})
    fo_plan = provision.plan(db, "failover", [first, second])
    db.execute("UPDATE routing.routing_plans SET attempt_timeout_ms = 1000 WHERE id = %s", (fo_plan,))
    provision.customer(db, "BAN-FO", f"{FO_CUSTOMER}/32", fo_plan)

    blocking = provision.plan(db, "blocking", [second])
    db.execute("INSERT INTO routing.blocked_destinations (routing_plan_id, prefix, reason)"
               " VALUES (%s, '1900', 'premium rate')", (blocking,))
    provision.customer(db, "BAN-BLK", f"{BLOCK_CUSTOMER}/32", blocking)

    steady = provision.vendor(db, "steady", STEADY_VENDOR, {"1": "0.0100"})
    future = provision.vendor(db, "future", FUTURE_VENDOR, {})
    db.execute("INSERT INTO routing.rates (provider_id, prefix, rate, ends_at) VALUES (%s, '1', 0.0200, %s)",
               (future, switch_at))
    db.execute("INSERT INTO routing.rates (provider_id, prefix, rate, effective_at) VALUES (%s, '1', 0.0050, %s)",
               (future, switch_at))
    provision.customer(db, "BAN-FUT", f"{FUTURE_CUSTOMER}/32", provision.plan(db, "future", [steady, future]))
    return {"first": first, "second": second, "fl": fl, "ny": ny}


@pytest.fixture(scope="module")
def node(world: dict[str, uuid.UUID], clean_redis: redis.Redis, e2e_env: dict[str, str],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    with kamailio_node(e2e_env, PROXY, tmp_path_factory.mktemp("lcr-node")) as n:
        yield n




def answered_call(node: Node, tmp_path: Path, source: str, dialed: str, caller: str, gateway: str) -> tuple:
    with vendor("vendor_answer.xml", gateway, tmp_path) as uas:
        uac = sipp("customer_call.xml", source, tmp_path, remote=node.target, service=dialed,
                   keys={"caller": caller})
        assert uac.wait() == 0, uac.report()
        assert uas.wait() == 0, uas.report()
        return uac, uas.received("INVITE")[0]


def test_a_future_dated_rate_takes_effect_at_its_moment(node: Node, tmp_path: Path, switch_at: datetime,
                                                        e2e_env: dict[str, str]) -> None:
    assert datetime.now(UTC) < switch_at - timedelta(seconds=1), "set-up too slow for this test"
    answered_call(node, tmp_path, FUTURE_CUSTOMER, "12125550100", FL_CALLER, STEADY_VENDOR)
    before = explain(e2e_env, "--source", FUTURE_CUSTOMER, "--to", "12125550100",
                     "--at", (switch_at - timedelta(seconds=1)).isoformat())
    assert before["routes"][0]["vendor"] == "steady"
    wait_for(lambda: datetime.now(UTC) >= switch_at, SWITCH_AFTER_S + 5, "the rate change moment")
    answered_call(node, tmp_path, FUTURE_CUSTOMER, "12125550100", FL_CALLER, FUTURE_VENDOR)
    after = explain(e2e_env, "--source", FUTURE_CUSTOMER, "--to", "12125550100", "--at", switch_at.isoformat())
    assert (after["routes"][0]["vendor"], after["routes"][0]["rate"]) == ("future", "0.005000")


def test_ported_number_is_routed_on_its_lrn_with_the_vendors_translation(
        node: Node, tmp_path: Path, e2e_env: dict[str, str], module_db: psycopg.Connection) -> None:
    uac, invite = answered_call(node, tmp_path, LRN_CUSTOMER, PORTED, FL_CALLER, FL_VENDOR)
    assert request_uri(invite) == f"sip:7788#2125551234;rn=3055559999;npdi@{FL_VENDOR}:5060"
    assert header(invite.replace("\n", "\r\n"), "From")[0].startswith("<sip:3055550100@")
    row = cdr(module_db, call_id_of(uac))
    assert (row["lrn"], row["jurisdiction"], row["gateway"]) == ("+13055559999", "local", "fl-direct-gw")
    said = explain(e2e_env, "--source", LRN_CUSTOMER, "--to", PORTED, "--from", FL_CALLER)
    assert said["routes"][0]["ruri"] == request_uri(invite)
    assert said["trace"]["lrn"]["lrn"] == "+13055559999"


def test_number_that_is_not_ported_stays_on_its_own_npanxx(node: Node, tmp_path: Path,
                                                           e2e_env: dict[str, str]) -> None:
    _, invite = answered_call(node, tmp_path, LRN_CUSTOMER, "12125557777", FL_CALLER, NY_VENDOR)
    assert request_uri(invite) == f"sip:12125557777@{NY_VENDOR}:5060"
    said = explain(e2e_env, "--source", LRN_CUSTOMER, "--to", "12125557777", "--from", FL_CALLER)
    assert said["routes"][0]["ruri"] == request_uri(invite) and said["trace"]["lrn"]["ported"] is False


@pytest.mark.parametrize("caller, kind, gateway, vendor_name", [
    (FL_CALLER, "interstate", INTER_VENDOR, "inter-cheap"),
    (NY_CALLER, "intrastate", INTRA_VENDOR, "intra-cheap"),
])
def test_jurisdiction_decides_which_rate_applies(node: Node, tmp_path: Path, e2e_env: dict[str, str],
                                                 module_db: psycopg.Connection, caller: str, kind: str,
                                                 gateway: str, vendor_name: str) -> None:
    uac, _ = answered_call(node, tmp_path, JUR_CUSTOMER, "12125552000", caller, gateway)
    assert cdr(module_db, call_id_of(uac))["jurisdiction"] == kind
    said = explain(e2e_env, "--source", JUR_CUSTOMER, "--to", "12125552000", "--from", caller)
    assert said["trace"]["jurisdiction"]["kind"] == kind and said["routes"][0]["vendor"] == vendor_name


def attempts_of(row: dict[str, object]) -> list[tuple[str, int]]:
    data = row["attempts"] if isinstance(row["attempts"], list) else json.loads(str(row["attempts"]))
    return [(a["vendor"], a["code"]) for a in data]


def test_503_from_the_first_vendor_fails_over_to_the_second(
        node: Node, tmp_path: Path, module_db: psycopg.Connection, world: dict[str, uuid.UUID]) -> None:
    with vendor("vendor_reject.xml", FIRST_VENDOR, tmp_path) as first:
        uac, _ = answered_call(node, tmp_path, FO_CUSTOMER, "12125553000", FL_CALLER, SECOND_VENDOR)
        assert first.wait() == 0, first.report()
    row = cdr(module_db, call_id_of(uac))
    assert row["sip_code"] == 200 and row["provider_id"] == world["second"]
    assert attempts_of(row) == [("first", 503), ("second", 200)]


def test_silent_first_vendor_times_out_and_the_second_carries_the_call(
        node: Node, tmp_path: Path, module_db: psycopg.Connection) -> None:
    silent = RawUA(FIRST_VENDOR, 5060)
    try:
        uac, _ = answered_call(node, tmp_path, FO_CUSTOMER, "12125553001", FL_CALLER, SECOND_VENDOR)
    finally:
        silent.close()
    assert attempts_of(cdr(module_db, call_id_of(uac))) == [("first", 408), ("second", 200)]


def test_busy_is_final_and_never_tried_elsewhere(node: Node, tmp_path: Path,
                                                 module_db: psycopg.Connection) -> None:
    with vendor("vendor_reject.xml", FIRST_VENDOR, tmp_path,
                keys={"reject_code": "486", "reject_reason": "Busy Here"}) as first, \
            vendor("vendor_answer.xml", SECOND_VENDOR, tmp_path) as second:
        uac = sipp(scenario_expecting(486, tmp_path), FO_CUSTOMER, tmp_path, remote=node.target,
                   service="12125553002", keys={"caller": FL_CALLER})
        assert uac.wait() == 0, uac.report()
        assert first.wait() == 0, first.report()
        assert second.received("INVITE") == []
    assert attempts_of(cdr(module_db, call_id_of(uac))) == [("first", 486)]


def test_when_every_vendor_fails_the_customer_gets_503(node: Node, tmp_path: Path,
                                                      module_db: psycopg.Connection) -> None:
    with vendor("vendor_reject.xml", FIRST_VENDOR, tmp_path) as first, \
            vendor("vendor_reject.xml", SECOND_VENDOR, tmp_path,
                   keys={"reject_code": "502", "reject_reason": "Bad Gateway"}) as second:
        uac = sipp(scenario_expecting(503, tmp_path), FO_CUSTOMER, tmp_path, remote=node.target,
                   service="12125553003", keys={"caller": FL_CALLER})
        assert uac.wait() == 0, uac.report()
        assert first.wait() == 0 and second.wait() == 0
    row = cdr(module_db, call_id_of(uac))
    assert row["sip_code"] == 503 and attempts_of(row) == [("first", 503), ("second", 502)]


def test_blocked_destination_is_refused(node: Node, tmp_path: Path, module_db: psycopg.Connection,
                                        e2e_env: dict[str, str]) -> None:
    with vendor("vendor_answer.xml", SECOND_VENDOR, tmp_path) as second:
        uac = sipp(scenario_expecting(403, tmp_path), BLOCK_CUSTOMER, tmp_path, remote=node.target,
                   service="19005551234", keys={"caller": FL_CALLER})
        assert uac.wait() == 0, uac.report()
        assert second.received("INVITE") == []
    assert "403 Destination blocked" in uac.trace()
    assert cdr(module_db, call_id_of(uac))["sip_code"] == 403
    said = explain(e2e_env, "--source", BLOCK_CUSTOMER, "--to", "19005551234")
    assert (said["decision"], said["code"]) == ("reject", 403)


def test_no_python_exception_escaped(node: Node) -> None:
    log = node.log_text()
    assert "unhandled" not in log and "Traceback" not in log, log[-3000:]
