"""Services: what the routes share — settings, the connection pool, Redis, the routing snapshot.

Built once by ``create_app`` and kept on ``app.state.services``; nothing here connects until it
is first used, so building the app (e.g. to write the OpenAPI document) needs no server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from fastapi import Request

from routing_engine import bootstrap
from routing_engine.adapters import postgres, redis_store
from routing_engine.domain import destinations
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.entrypoints.api.principals import Authenticator
from routing_engine.entrypoints.api.store import Pool
from routing_engine.settings import Settings


class SnapshotCache:
    """The routing snapshot for route explain. Any successful write through the API drops it;
    changes made elsewhere (SQL, the CLI) are seen within ``max_age_s``."""

    def __init__(self, pool: Pool, realm: str, max_age_s: float = 5.0) -> None:
        self.pool = pool
        self.realm = realm
        self.max_age_s = max_age_s
        self._snapshot: RoutingSnapshot | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self._snapshot = None

    def get(self) -> RoutingSnapshot:
        with self._lock:
            if self._snapshot is None or time.monotonic() - self._loaded_at > self.max_age_s:
                with self.pool.connection() as conn:
                    self._snapshot = postgres.load_snapshot(conn, datetime.now(UTC), self.realm)
                self._loaded_at = time.monotonic()
            return self._snapshot


class Services:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = Pool(settings.database_url, settings.database.connect_timeout_s)
        self.authenticator = Authenticator(settings.api, self.pool)
        self.snapshots = SnapshotCache(self.pool, settings.auth.realm)
        self.guard = destinations.from_settings(settings)  # where SIP may never go
        self._redis: Any = None
        self._decider: bootstrap.Decider | None = None
        self._lock = threading.Lock()

    def redis(self) -> Any:
        with self._lock:
            if self._redis is None:
                self._redis = redis_store.connect(self.settings.redis_url, 2000)
            return self._redis

    def decider(self) -> bootstrap.Decider:
        """Decides as the SIP workers do (the same LRN resolver, gateway health and vendor quality,
        read fresh for each explanation): bootstrap.decider, as `warp route explain` uses it."""
        client = self.redis()
        with self._lock:
            if self._decider is None:
                self._decider = bootstrap.decider(self.settings, client, fresh=True)
            return self._decider

    def close(self) -> None:
        self.pool.close()
        if self._redis is not None:
            self._redis.close()


def services(request: Request) -> Services:
    found = request.app.state.services
    assert isinstance(found, Services)
    return found


def connection(request: Request) -> Iterator[psycopg.Connection]:
    """Route dependency: a pooled connection for the request."""
    with services(request).pool.connection() as conn:
        yield conn
