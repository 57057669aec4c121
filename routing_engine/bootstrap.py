"""Bootstrap: the one place that wires settings, adapters and the routing snapshot together.

A SIP worker calls ``build_app()`` once, in Kamailio's child_init (after the fork), so every
process opens its own connections. The snapshot is read from Postgres here, at start-up; the
call path only reads the in-memory value.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from routing_engine import metrics
from routing_engine.adapters import lrn_sources, media_failures, postgres, redis_store
from routing_engine.adapters.health import HealthView
from routing_engine.adapters.money import Limits, Wallet
from routing_engine.adapters.quality import Aggregator, Judge, Outcome, QualityView
from routing_engine.adapters.quality import record as record_outcomes
from routing_engine.adapters.registrations import BlockCache, Defence, RegistrationStore
from routing_engine.adapters.rtpengine_ng import NgClient
from routing_engine.adapters.snapshots import SnapshotFollower, SnapshotStore
from routing_engine.calls.ports import Sip
from routing_engine.calls.service import CallService
from routing_engine.domain import auth, destinations, lrn, validation
from routing_engine.domain.cdr import CdrRecord
from routing_engine.domain.decision import CallRequest, Decision, LrnLookup, decide_invite
from routing_engine.domain.lrn import LrnSource
from routing_engine.domain.numbers import E164
from routing_engine.domain.snapshot import RoutingSnapshot
from routing_engine.settings import Settings, load_settings

log = logging.getLogger("warp.bootstrap")


def load_snapshot(settings: Settings) -> RoutingSnapshot:
    with postgres.connect(settings.database_url, settings.database.connect_timeout_s) as conn:
        snapshot = postgres.load_snapshot(conn, datetime.now(UTC), settings.auth.realm)
    return snapshot


def spool_dir(settings: Settings) -> Path:
    return settings.data_dir / "spool" / settings.node.name


def snapshot_store(settings: Settings) -> SnapshotStore:
    return SnapshotStore(settings.data_dir / "snapshots" / settings.node.name, settings.snapshot.keep)


def prepare_snapshot(settings: Settings) -> str:
    """Once per node start, before the SIP workers fork (Kamailio's mod_init): put what Postgres
    holds now in service as a published file, which every worker then maps. If Postgres cannot
    be reached, or what it holds is invalid, the last published snapshot stays (routing continues
    on the last good configuration). Returns the version in service."""
    store = snapshot_store(settings)
    published = store.current()
    try:
        snapshot = load_snapshot(settings)
    except Exception as exc:
        if published is None:
            raise
        unreadable = store.readable(published.version)
        if unreadable is not None:
            # never misread: a file of another code version or schema cannot stand in for Postgres
            raise RuntimeError(f"Postgres unreachable ({exc}) and the published snapshot {published.version} "
                               f"cannot be used: {unreadable}") from exc
        log.warning("Postgres unreachable (%s): starting on published snapshot %s", exc, published.version)
        return published.version
    found = validation.problems(snapshot, destinations.from_settings(settings))
    if found:
        for problem in found[:50]:
            log.error("configuration problem: %s", problem)
        if published is not None and (unreadable := store.readable(published.version)) is None:
            log.error("configuration in Postgres is invalid: starting on published snapshot %s", published.version)
            return published.version
        if published is not None:
            log.error("published snapshot %s refused (%s): rebuilding it from Postgres", published.version, unreadable)
        log.error("configuration in Postgres is invalid and no usable snapshot was published before: starting on it")
    store.publish(snapshot)
    return snapshot.version


def initial_snapshot(settings: Settings) -> RoutingSnapshot:
    """The snapshot in service, mapped from its published file (see prepare_snapshot). A file
    this code cannot read (another code version or schema) is rebuilt from Postgres first."""
    store = snapshot_store(settings)
    published = store.current()
    if published is None or store.readable(published.version) is not None:
        if published is not None:
            log.warning("published snapshot %s refused (%s): rebuilding it", published.version,
                        store.readable(published.version))
        prepare_snapshot(settings)  # a process started without Kamailio's mod_init (tools, tests)
        published = store.current()
        assert published is not None
    return store.load(published.version)


def lrn_lookup(settings: Settings, client: Any, fresh: bool = False) -> LrnLookup:
    """The LRN resolver for these settings: Redis cache in front of the configured source, and
    (for a SIP worker, unless ``fresh``) the worker's own recent answers in front of Redis."""
    source: LrnSource | None
    if settings.lrn.source == "http":
        source = lrn_sources.HttpLnp(settings.lrn.http_url, settings.lrn.timeout_ms)
    elif settings.lrn.source == "local":
        source = lrn_sources.LocalLnp(settings.database_url, settings.lrn.timeout_ms)
    else:
        source = None
    cache: lrn.LrnCache | None = lrn_sources.RedisLrnCache(client) if client is not None else None
    if cache is not None and not fresh and settings.lrn.worker_cache_ttl_s > 0:
        cache = lrn_sources.WorkerLrnCache(cache, settings.lrn.worker_cache_size, settings.lrn.worker_cache_ttl_s)
    ttl = settings.lrn.cache_ttl_s
    timed = _TimedSource(source) if source is not None else None

    def lookup(number: E164) -> lrn.LrnResult:
        result = lrn.resolve(number, cache, timed, ttl)
        metrics.lrn_looked_up(result.source)
        return result

    return lookup


class _TimedSource:
    """An LRN source whose dips are timed for the metrics."""

    def __init__(self, inner: LrnSource) -> None:
        self.inner = inner
        self.name = inner.name
        self._seconds = metrics.LRN_DIP_SECONDS.labels(inner.name)

    def lookup(self, tn: str) -> str | None:
        started = time.perf_counter()
        try:
            return self.inner.lookup(tn)
        finally:
            self._seconds.observe(time.perf_counter() - started)


def quality_view(settings: Settings, client: Any, refresh_s: float | None = None) -> QualityView:
    """The vendor quality verdicts the companion publishes, as a worker (or explain) reads them."""
    q = settings.quality
    return QualityView(client, q.refresh_s if refresh_s is None else refresh_s, prefix_digits=q.prefix_digits)


def quality_aggregator(settings: Settings, client: Any) -> Aggregator:
    """The companion's vendor quality: the window of outcomes, judged and published."""
    q = settings.quality
    return Aggregator(client, Judge(q.min_samples, q.asr_min, q.hysteresis, q.pdd_max_ms), q.window_s,
                      q.prefix_digits, q.refresh_s)


@dataclass(frozen=True)
class Decider:
    """``decide_invite`` wired as a SIP worker wires it — the same LRN resolver, gateway health and
    vendor quality — so that a call, ``warp route explain`` and the API's explain are decided by
    one piece of code and cannot drift apart."""

    region: str
    lrn: LrnLookup | None = None
    health: HealthView | None = None
    quality: QualityView | None = None
    margin_duration_s: int = 60  # routing.margin_expected_duration_s

    def __call__(self, request: CallRequest, snapshot: RoutingSnapshot, now: datetime,
                 trunk_id: UUID | None = None, method: str = "given") -> Decision:
        quality = self.quality

        def demotion(vendor_id: UUID, destination: str) -> str | None:
            return quality.demotion(vendor_id, snapshot.vendors.keys(), destination) if quality else None

        return decide_invite(request, snapshot, now, self.region,
                             **({"lrn_lookup": self.lrn} if self.lrn is not None else {}),
                             trunk_id=trunk_id, method=method,
                             gateway_up=self.health.is_up if self.health is not None else lambda _: True,
                             demotion=demotion, margin_duration_s=self.margin_duration_s)


def decider(settings: Settings, client: Any, fresh: bool = False) -> Decider:
    """The decider of these settings, on this Redis client. A SIP worker keeps gateway health
    and vendor quality for a moment (``quality.refresh_s``); a tool that explains one call reads
    them fresh."""
    return Decider(settings.routing.default_region, lrn_lookup(settings, client, fresh),
                   HealthView(client, refresh_s=0) if fresh else HealthView(client),
                   quality_view(settings, client, 0 if fresh else None),
                   settings.routing.margin_expected_duration_s)


@dataclass
class App:
    settings: Settings
    cdr_stream: redis_store.CdrStream
    follower: SnapshotFollower
    decide: Decider
    registrations: Any = None
    defence: Any = None
    limits: Any = None
    wallet: Any = None
    blocks: BlockCache | None = None
    # checked against for unknown digest users, so they fail exactly like a wrong password
    unknown_user_ha1: str = field(default_factory=lambda: secrets.token_hex(16))
    _spool: Path = field(init=False)
    _guard: destinations.Guard = field(init=False)
    _peers: tuple[str, auth.Peers] | None = field(default=None, init=False)
    _resolved: dict[str, tuple[float, list[str]]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._spool = spool_dir(self.settings)
        self._guard = destinations.from_settings(self.settings)

    def is_peer(self, source_ip: str) -> bool:
        """Is this address a customer ACL entry or a vendor gateway of the snapshot in service?"""
        snapshot = self.snapshot()
        if self._peers is None or self._peers[0] != snapshot.version:
            self._peers = (snapshot.version, auth.peers(snapshot))
        return source_ip in self._peers[1]

    def destination_refusal(self, host: str, port: int) -> str | None:
        """Why SIP may not be sent to host:port (None: it may). A name is resolved here (as
        Kamailio would resolve it) and every address it has is checked; answers are kept a minute."""
        if destinations.parse_ip(host) is not None:
            return self._guard.refusal(host, port)
        now = time.monotonic()
        cached = self._resolved.get(host)
        if cached is None or cached[0] < now:
            try:
                addresses = sorted({str(a[4][0]) for a in socket.getaddrinfo(host, port, proto=socket.IPPROTO_UDP)})
            except (OSError, UnicodeError):
                addresses = []
            cached = (now + 60, addresses)
            self._resolved[host] = cached
        if not cached[1]:
            return f"{host[:60]!r} does not resolve"
        for address in cached[1]:
            if (why := self._guard.refusal(address, port)) is not None:
                return f"{host[:60]} is {address}: {why}"
        return None

    def snapshot(self) -> RoutingSnapshot:
        return self.follower.get()

    def end_call(self, record: CdrRecord, release: tuple[UUID, Any, Any] | None = None,
                 outcomes: list[Outcome] | None = None) -> None:
        """A call's end in one Redis round trip: its place in the limits freed (``release``: the
        call's identity, its CDR id, with its trunk and account), its vendor attempts
        added to the quality stream (one XADD), its CDR appended to the stream. If Redis cannot take them, the
        CDR goes to the local spool (the companion frees the call's place when it writes that CDR;
        an entry that did reach the stream as well is stored once, by CDR id) and the quality
        sample is lost."""
        client = self.cdr_stream.client
        pipe = client.pipeline(transaction=False)
        released = False
        try:
            if release is not None and self.limits is not None:
                self.limits.release(*release, pipe=pipe)
                released = True
            if outcomes:
                record_outcomes(client, outcomes, time.time(), pipe=pipe)
        except Exception as exc:  # never in the CDR's way
            log.warning("call %s: limits release or quality sample not queued: %s", record.call_id, exc)
            pipe, released = client.pipeline(transaction=False), False
        # the entry says the places were freed before it (same pipeline, in order), so the
        # companion does not free them again; a spooled CDR does not say so, and it does
        self.cdr_stream.append(replace(record, released=True) if released else record, pipe=pipe)
        try:
            pipe.execute()
        except Exception as exc:
            log.warning("CDR %s spooled locally, Redis unavailable: %s", record.call_id, exc)
            spool_write(self._spool, record)
            metrics.CDR_SPOOLED.inc()
        with contextlib.suppress(Exception):  # counted exactly when its CDR leaves; never in its way
            metrics.call_finished(record.direction, record.sip_code, record.sip_reason, record.attempts,
                                  record.billable_s)

    def emit_cdr(self, record: CdrRecord) -> None:
        """Append to the Redis stream; if Redis cannot take it, to the local spool file."""
        self.end_call(record)

    def count_media_failure(self, kind: str) -> None:
        media_failures.count(self.cdr_stream.client, kind)


def spool_write(directory: Path, record: CdrRecord) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"cdr-{os.getpid()}.jsonl"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # the emitter takes the same lock before reading
        fh.write(json.dumps(record.to_fields()) + "\n")


def build_app(environ: Mapping[str, str] | None = None) -> App:
    settings = load_settings(environ=environ)
    client = redis_store.connect(settings.redis_url, settings.redis.socket_timeout_ms)
    stream = redis_store.CdrStream(client, settings.cdr.stream, settings.cdr.group,
                                   settings.cdr.stream_maxlen)
    snapshot = initial_snapshot(settings)
    # A snapshot is millions of long-lived objects on big decks; the cyclic collector walking them
    # is what stretches the slowest decisions. Freezing moves them out of its way.
    gc.freeze()
    log.info("routing snapshot %s loaded: %d trunks, %d vendors, %d plans", snapshot.version,
             len(snapshot.trunks), len(snapshot.vendors), len(snapshot.plans))
    a = settings.auth
    defence = Defence(client, a.failures_before_block, a.failure_window_s, a.block_s)
    follower = SnapshotFollower(snapshot_store(settings), snapshot, settings.snapshot.check_interval_ms / 1000)
    return App(settings, stream, follower, decider(settings, client),
               registrations=RegistrationStore(client),
               defence=defence, blocks=BlockCache(defence, a.block_refresh_ms / 1000),
               limits=Limits(client), wallet=Wallet(client))


def build_worker(sip: Sip, environ: Mapping[str, str] | None = None) -> CallService:
    """A SIP worker's call service (in each Kamailio process, after the fork: its sockets are its
    own). ``sip`` is what only Kamailio does for the message at hand (kemi/)."""
    app = build_app(environ)
    m = app.settings.media
    return CallService(app, sip, NgClient(m.ng_address, m.timeout_ms / 1000, m.retries))


def prepare_kamailio(handler: logging.Handler) -> str:
    """Kamailio's main process, before its workers fork: logging through ``handler`` (Kamailio's
    own log), and what Postgres holds now published as the snapshot file each worker then maps.
    Without any configuration there is nothing to route with: the error stops Kamailio at
    start-up with the reason in its log."""
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    try:
        version = prepare_snapshot(load_settings())
    except Exception as exc:
        log.error("no routing configuration: %s", exc)
        raise
    log.info("routing snapshot %s in service", version)
    return version
