from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from routing_engine import bootstrap
from routing_engine.adapters import postgres
from routing_engine.domain.decision import CallRequest, Reject, Relay, decide_invite
from routing_engine.ops import demo
from routing_engine.settings import load_settings
from tests.conftest import test_environ

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)


def counts(db: psycopg.Connection) -> tuple:
    return db.execute(
        "SELECT (SELECT count(*) FROM accounts.accounts), (SELECT count(*) FROM trunks.trunks),"
        " (SELECT count(*) FROM numbers.number_inventory), (SELECT count(*) FROM routing.rates),"
        " (SELECT count(*) FROM routing.providers)").fetchone()


def test_demo_data_has_the_seed_shape(db: psycopg.Connection) -> None:
    demo.load(db)
    statuses = dict(db.execute("SELECT status, count(*) FROM accounts.accounts GROUP BY 1").fetchall())
    assert statuses == {"active": 5, "suspended": 3, "testing": 2}
    per_account = [r[0] for r in db.execute(
        "SELECT count(*) FROM trunks.trunks GROUP BY account_id").fetchall()]
    assert len(per_account) == 10 and all(2 <= n <= 5 for n in per_account)
    dids = [r[0] for r in db.execute(
        "SELECT count(*) FROM numbers.number_assignments GROUP BY account_id").fetchall()]
    assert len(dids) == 10 and all(8 <= n <= 50 for n in dids)
    kinds = {r[0] for r in db.execute("SELECT DISTINCT number_type FROM numbers.number_inventory")}
    assert kinds == {"local", "tollfree"}
    # each customer trunk and each vendor gateway has its own loopback address
    hosts = [r[0] for r in db.execute("SELECT host(cidr) FROM trunks.trunk_access_lists")]
    gateways = [r[0] for r in db.execute("SELECT host FROM routing.provider_gateways")]
    assert len(set(hosts)) == len(hosts) and len(set(gateways)) == len(gateways)
    assert all(h.startswith("127.0.0.") for h in hosts + gateways)
    countries = {r[0] for r in db.execute(
        "SELECT DISTINCT prefix FROM routing.rates WHERE length(prefix) = 2")}
    assert countries == {"44", "49", "52", "63", "91"}


def test_loading_the_demo_again_changes_nothing_and_keeps_edits(db: psycopg.Connection) -> None:
    demo.load(db)
    before = counts(db)
    db.execute("UPDATE routing.rates SET rate = 0.5 WHERE prefix = '44'")
    demo.load(db)
    assert counts(db) == before
    edited = db.execute("SELECT DISTINCT rate FROM routing.rates WHERE prefix = '44'").fetchall()
    assert edited == [(0.5,)] or [float(r[0]) for r in edited] == [0.5]


def test_snapshot_from_demo_data_routes_an_active_customer_and_refuses_a_suspended_one(
        db: psycopg.Connection) -> None:
    demo.load(db)
    snapshot = postgres.load_snapshot(db, NOW)
    active = decide_invite(CallRequest("c", demo.customer_address(1, 1), 5060, "udp",
                                       "12125551234", "13055550100"), snapshot, NOW)
    assert isinstance(active, Relay)
    assert {r.gateway.host for r in active.routes} <= {demo.vendor_address(v) for v in range(1, 5)}
    prices = [r.rate for r in active.routes]
    assert prices == sorted(prices)
    suspended = decide_invite(CallRequest("c", demo.customer_address(6, 1), 5060, "udp",
                                          "12125551234", "13055550100"), snapshot, NOW)
    assert isinstance(suspended, Reject) and suspended.code == 403


def test_snapshot_version_changes_with_the_data_and_only_then(db: psycopg.Connection) -> None:
    demo.load(db)
    first = postgres.load_snapshot(db, NOW).version
    assert postgres.load_snapshot(db, NOW).version == first
    db.execute("UPDATE routing.rates SET rate = rate + 0.001 WHERE prefix = '49'")
    assert postgres.load_snapshot(db, NOW).version != first


def test_deleted_rows_are_not_in_the_snapshot(db: psycopg.Connection) -> None:
    demo.load(db)
    db.execute("UPDATE routing.providers SET deleted_at = now() WHERE name = 'vendor-alpha'")
    snapshot = postgres.load_snapshot(db, NOW)
    assert "vendor-alpha" not in {v.name for v in snapshot.vendors.values()}


def _old_format(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:24] = b"\x02" * 16  # the format id of some other code version
    path.write_bytes(bytes(data))


def test_a_published_file_of_another_code_version_is_rebuilt_from_postgres(db: psycopg.Connection,
                                                                          tmp_path: Path) -> None:
    demo.load(db)
    settings = load_settings(environ={**test_environ(), "WARP_NODE__NAME": f"format-{tmp_path.name}"})
    version = bootstrap.prepare_snapshot(settings)
    store = bootstrap.snapshot_store(settings)
    _old_format(store.path(version))
    assert store.readable(version) is not None
    assert bootstrap.prepare_snapshot(settings) == version  # same data: same version, rewritten
    assert store.readable(version) is None
    assert bootstrap.initial_snapshot(settings).version == version


def test_postgres_down_and_only_a_file_of_another_code_version_refuses_to_start(db: psycopg.Connection,
                                                                               tmp_path: Path) -> None:
    demo.load(db)
    node = f"format-{tmp_path.name}"
    settings = load_settings(environ={**test_environ(), "WARP_NODE__NAME": node})
    version = bootstrap.prepare_snapshot(settings)
    _old_format(bootstrap.snapshot_store(settings).path(version))
    unreachable = load_settings(environ={**test_environ(), "WARP_NODE__NAME": node,
                                         "WARP_DATABASE__URL": "postgresql://warp@127.0.0.1:1/none",
                                         "WARP_DATABASE__CONNECT_TIMEOUT_S": "1"})
    with pytest.raises(RuntimeError, match="cannot be used: written by another version of the code"):
        bootstrap.prepare_snapshot(unreachable)
