from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import redis

from routing_engine.settings import Settings
from tests.conftest import test_environ


@pytest.fixture(scope="module")
def e2e_env() -> dict[str, str]:
    return test_environ()


@pytest.fixture(scope="module")
def module_db(database: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def clean_redis(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
