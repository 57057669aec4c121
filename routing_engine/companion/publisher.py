"""Publisher: the companion's loop that turns configuration changes into published snapshots.

It LISTENs for ``warp_config`` notifications (sent by triggers on every routing table), waits
100 ms for the rest of a burst of edits, builds a snapshot in one repeatable-read transaction,
validates it, and publishes it — or, if it is invalid, logs every problem and leaves the last
good snapshot in service. It also rebuilds every ``rebuild_every_s`` in case a notification was
missed (an unchanged configuration has the same version and is not published again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg

from routing_engine import metrics
from routing_engine.adapters import postgres
from routing_engine.adapters.snapshots import SnapshotStore
from routing_engine.domain import destinations, validation
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.settings import Settings

log = logging.getLogger("warp.publisher")


def build_and_publish(settings: Settings, conn: psycopg.Connection, store: SnapshotStore) -> RoutingSnapshot | None:
    """Build, validate, publish. Returns the snapshot if it is valid (published now or already)."""
    started = time.perf_counter()
    snapshot = postgres.load_snapshot(conn, datetime.now(UTC), settings.auth.realm)
    built_ms = (time.perf_counter() - started) * 1000
    found = validation.problems(snapshot, destinations.from_settings(settings))
    if found:
        in_service = store.current()
        log.error("snapshot %s refused, %d problem(s); %s stays in service:", snapshot.version, len(found),
                  in_service.version if in_service else "the configuration the workers started with")
        for problem in found[:50]:
            log.error("  %s", problem)
        metrics.SNAPSHOT_PUBLICATIONS.labels("refused").inc()
        return None
    if store.publish(snapshot):
        metrics.SNAPSHOT_PUBLICATIONS.labels("published").inc()
        log.info("snapshot %s published: %d vendors, %d plans, %d trunks (built in %.0f ms)", snapshot.version,
                 len(snapshot.vendors), len(snapshot.plans), len(snapshot.trunks), built_ms)
    return snapshot


def follow(settings: Settings, store: SnapshotStore, stop: threading.Event,
           on_snapshot: Callable[[RoutingSnapshot], None] = lambda s: None) -> None:
    backoff = 0.5
    while not stop.is_set():
        try:
            with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
                conn.execute("LISTEN warp_config")
                last_build = time.monotonic()
                snapshot = build_and_publish(settings, conn, store)
                if snapshot:
                    on_snapshot(snapshot)
                backoff = 0.5
                while not stop.is_set():
                    changed = any(True for _ in conn.notifies(timeout=0.5, stop_after=1))
                    due = time.monotonic() - last_build >= settings.snapshot.rebuild_every_s
                    if not changed and not due:
                        continue
                    if changed:
                        for _ in conn.notifies(timeout=0.1):  # the rest of a burst of edits
                            pass
                    last_build = time.monotonic()
                    snapshot = build_and_publish(settings, conn, store)
                    if snapshot:
                        on_snapshot(snapshot)
        except Exception as exc:  # Postgres down: the last good snapshot stays in service
            log.warning("configuration not followed (%s); retrying in %.1fs", exc, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30)
