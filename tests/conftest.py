"""Shared fixtures. Integration and e2e tests use the embedded Postgres and Redis that
`make test` starts (warp exec), with their own database and Redis db so a running `make run`
keeps its data."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest
import redis

from routing_engine.adapters import migrate
from routing_engine.ops import stack
from routing_engine.settings import Settings, load_settings

# WARP_TEST_DB / WARP_TEST_REDIS_DB let two test runs share the embedded servers side by side.
TEST_ENV = {
    "WARP_DATABASE__NAME": os.environ.get("WARP_TEST_DB", "warp_test"),
    "WARP_REDIS__DB": os.environ.get("WARP_TEST_REDIS_DB", "15"),
    "WARP_NODE__NAME": "test-node",
    "WARP_CDR__STREAM": "warp:test:cdr",
    # no media relay unless a test starts its own rtpengine (tests/e2e/test_media.py)
    "WARP_MEDIA__ENABLED": "false",
    # no metrics endpoint unless a test asks for one on its own address (companions of parallel
    # tests would otherwise all bind the default port)
    "WARP_METRICS__LISTEN": "",
}
CONFIG_TABLES = [
    "cdr.cdrs", "numbers.number_assignments", "numbers.number_inventory",
    "trunks.trunk_features", "trunks.trunk_auth", "trunks.trunk_access_lists",
    "routing.routing_plan_providers", "routing.provider_performance", "routing.rates",
    "routing.blocked_destinations", "routing.lnp", "routing.npanxx",
    "routing.provider_gateways", "trunks.trunks", "routing.routing_plans", "routing.providers",
    "billing.balance_updates", "billing.rate_plan_rates", "billing.rate_plans",
    "accounts.accounts", "audit.audit_log",
]


def test_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if (not k.startswith("WARP_") or k.startswith("WARP_STACK__")) and k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(TEST_ENV)
    return env


test_environ.__test__ = False  # type: ignore[attr-defined]


def admin_url(settings: Settings) -> str:
    """The embedded cluster's maintenance database (to create and drop others), with the
    password the stack generated: the one place the tests build such a URL."""
    return settings.embedded_database_url("postgres")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(environ=test_environ())


@pytest.fixture(scope="session")
def database(settings: Settings) -> str:
    """A fresh, migrated test database for the session."""
    if not stack.postgres_running(settings):
        pytest.fail("the embedded Postgres is not running: run the tests with `make test`")
    with psycopg.connect(admin_url(settings), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.database.name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{settings.database.name}"')
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        migrate.apply(conn)
    return settings.database_url


@pytest.fixture
def db(database: str) -> Iterator[psycopg.Connection]:
    """A connection to an empty (migrated) test database."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(CONFIG_TABLES)} CASCADE")
        yield conn


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    if not stack.redis_running(settings):
        pytest.fail("the embedded Redis is not running: run the tests with `make test`")
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
