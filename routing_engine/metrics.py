"""Metrics: every Prometheus metric of a node, defined here once, and the one endpoint serving them.

Kamailio's SIP workers (forked processes, each with its own Python) and the companion write their
samples to memory-mapped files (prometheus_client's multiprocess mode), one folder per process
family under ``<data_dir>/metrics/<node>/``. ``PROMETHEUS_MULTIPROC_DIR`` must name the family's
folder before this module is first imported: ``stack.kamailio_env`` sets it for Kamailio, the
companion sets its own. Without it (tests, the CLI) the values simply live in memory.

The companion serves one endpoint (``metrics.listen``): the files of every family merged, plus
values read at scrape time — the CDR stream backlog, vendor ASR/ACD and blocked IPs from Redis,
the snapshot in service, Kamailio's own statistics over its ctl socket, and any source added
with ``register_source`` (rtpengine's session statistics arrive that way).

Cardinality is bounded: label values come from small closed sets (direction, outcome, code
class, refusal reason, limit scope) or from configuration (vendor names), never from numbers,
Call-IDs or addresses. The call path pays one mmap write per sample, nothing more.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("warp.metrics")

_LATENCY = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_PDD = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
_LAG = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# ------------------------------------------------------------------ calls (SIP workers)
INITIAL_INVITES = Counter("warp_initial_invites", "Initial INVITEs taken up; rate() is the offered call rate "
                          "(a challenged call counts twice)", registry=None)
CALLS = Counter("warp_calls", "Finished call attempts, one per CDR", ["direction", "outcome", "code_class"],
                registry=None)
REFUSALS = Counter("warp_call_refusals", "Calls refused by the proxy, by reason", ["reason"], registry=None)
LIMIT_REFUSALS = Counter("warp_limit_refusals", "Calls refused by a CPS or concurrent-call limit",
                         ["limit", "scope"], registry=None)
AUTH_FAILURES = Counter("warp_auth_failures", "Digest failures and requests from blocked sources", ["kind"],
                        registry=None)
IP_BLOCKS = Counter("warp_ip_blocks", "Source addresses blocked for repeated digest failures", registry=None)
FLOOD_DROPS = Counter("warp_flood_drops", "Seconds in which a source address went over its flood limit "
                      "(its further requests that second dropped unanswered)", registry=None)
SIP_REFUSED = Counter("warp_sip_refused", "Requests not relayed: in-dialog requests that belong to no call "
                            "of ours or come from neither side (foreign), and relays to a forbidden "
                            "destination (destination)", ["kind"], registry=None)
DECISION_SECONDS = Histogram("warp_routing_decision_seconds", "Time to decide an INVITE (decide_invite)",
                             buckets=_LATENCY, registry=None)
LRN_LOOKUPS = Counter("warp_lrn_lookups", "LRN lookups of NANP numbers by result (cache_hit, dip, failed)",
                      ["result"], registry=None)
LRN_DIP_SECONDS = Histogram("warp_lrn_dip_seconds", "Time of an LRN dip to its source (cache misses)", ["source"],
                            buckets=_LATENCY, registry=None)
VENDOR_ATTEMPTS = Counter("warp_vendor_attempts", "Vendor attempts by final SIP code class", ["vendor", "code_class"],
                          registry=None)
VENDOR_ANSWERED_SECONDS = Counter("warp_vendor_answered_seconds", "Billable seconds of answered vendor attempts",
                                  ["vendor"], registry=None)
VENDOR_PDD = Histogram("warp_vendor_pdd_seconds", "Post-dial delay per vendor attempt (INVITE sent to first "
                       "ringing)", ["vendor"], buckets=_PDD, registry=None)
KEMI_ERRORS = Counter("warp_kemi_errors", "Python exceptions caught in a Kamailio callback", registry=None)
KEMI_CALLBACKS = Counter("warp_kemi_callbacks", "Python callbacks Kamailio made, by callback", ["callback"],
                         registry=None)
LRN_WORKER_MISSES = Counter("warp_lrn_worker_cache_misses",
                            "LRN lookups a SIP worker's own cache could not answer (read from Redis)", registry=None)
REDIS_ROUND_TRIPS = Counter("warp_redis_round_trips",
                            "Requests this process sent to Redis and waited for (a pipeline is one)", registry=None)
KEMI_CALLBACK_CPU = Counter("warp_kemi_callback_cpu_seconds",
                            "CPU time of the SIP workers in each Python callback, Kamailio functions it calls "
                            "included (tm relaying, topos, rtpengine, Redis client)", ["callback"], registry=None)
SNAPSHOT_RELOADS = Counter("warp_snapshot_reloads", "Snapshot swaps by SIP workers", registry=None)
CDR_SPOOLED = Counter("warp_cdr_spooled", "CDRs written to the local spool because Redis was unavailable",
                      registry=None)

# ------------------------------------------------------------------ companion
SNAPSHOT_PUBLICATIONS = Counter("warp_snapshot_publications", "Snapshots published by the companion", ["result"],
                                registry=None)
CDR_REPLAYED = Counter("warp_cdr_replayed", "Spooled CDRs moved into the stream", registry=None)
SINK_ROWS = Counter("warp_cdr_sink_rows", "Records written by a sink (new rows only)", ["sink"], registry=None)
SINK_BATCHES = Counter("warp_cdr_sink_batches", "Batches handed to a sink", ["sink", "result"], registry=None)
EMITTER_LAG = Histogram("warp_cdr_emitter_lag_seconds", "Stream append to committed in the sink, per record",
                        ["sink"], buckets=_LAG, registry=None)
# one companion per node writes it; "mostrecent" keeps the last value even across a companion restart
EMITTER_LAG_LAST = Gauge("warp_cdr_emitter_lag_last_seconds", "Lag of the oldest record of the last batch",
                         ["sink"], multiprocess_mode="mostrecent", registry=None)
DEAD_LETTERS = Counter("warp_dead_letters", "Stream entries moved to their dead-letter stream (<stream>:dead), by "
                       "sink and reason: unreadable (not a record) or refused (the sink cannot store what it holds)",
                       ["sink", "reason"], registry=None)
PARTITIONS_DROPPED = Counter("warp_cdr_partitions_dropped", "Daily CDR partitions dropped by retention",
                             registry=None)

# ------------------------------------------------------------------ what the call path calls

_REFUSAL_REASONS = {
    "Forbidden": "auth", "Trunk disabled": "account", "Account suspended": "account", "Account closed": "account",
    "Account missing": "account", "Address Incomplete": "number", "Destination blocked": "blocked",
    "No Route": "no_route", "No Route Available": "no_route", "No routing plan": "plan",
    "Routing plan misconfigured": "plan", "No customer rate": "rating", "Insufficient funds": "funds",
    "CPS limit exceeded": "limits", "Call limit reached": "limits", "Service Unavailable": "unavailable",
    "Bad From": "bad_request", "Server Internal Error": "error", "Not Found": "no_route",
    "Temporarily Unavailable": "offline",
}
REFUSAL_REASONS = frozenset(_REFUSAL_REASONS.values()) | {"other"}


def refusal_reason(reason_phrase: str) -> str:
    """The bounded refusal category of a proxy refusal's reason phrase."""
    return _REFUSAL_REASONS.get(reason_phrase, "other")


def code_class(code: int) -> str:
    return f"{code // 100}xx" if 100 <= code < 700 else "other"


def outcome(code: int, refused: bool) -> str:
    if 200 <= code < 300:
        return "answered"
    if refused:
        return "refused"
    return "cancelled" if code == 487 else "failed"


def call_finished(direction: str, code: int, reason: str, attempts_json: str | None, billable_s: int) -> None:
    """One finished call attempt (exactly when its CDR is emitted). A call that reached no vendor
    was refused by the proxy; its vendors' attempts feed the per-vendor series."""
    refused = not attempts_json and code >= 300
    CALLS.labels(direction if direction in ("inbound", "outbound") else "other", outcome(code, refused),
                 code_class(code)).inc()
    if refused:
        REFUSALS.labels(refusal_reason(reason)).inc()
    if not attempts_json:
        return
    for attempt in json.loads(attempts_json):
        vendor = str(attempt.get("vendor") or "unknown")
        code_of = int(attempt.get("code") or 0)
        VENDOR_ATTEMPTS.labels(vendor, code_class(code_of)).inc()
        if code_of == 200 and billable_s:
            VENDOR_ANSWERED_SECONDS.labels(vendor).inc(billable_s)
        pdd = attempt.get("pdd_ms")
        if pdd is not None:
            VENDOR_PDD.labels(vendor).observe(int(pdd) / 1000)


def lrn_looked_up(source: str) -> None:
    """After an LRN resolution: 'cache', a source's name (a dip), 'failed' or 'skipped'."""
    if source == "cache":
        LRN_LOOKUPS.labels("cache_hit").inc()
    elif source == "failed":
        LRN_LOOKUPS.labels("failed").inc()
    elif source != "skipped":
        LRN_LOOKUPS.labels("dip").inc()


def batch_written(sink: str, rows: int, added: int, entry_ids: Iterable[str], now: float) -> None:
    """After a batch committed: rows, and the lag of each record from its stream entry's time
    (a stream id starts with the milliseconds at which Redis appended the entry)."""
    SINK_BATCHES.labels(sink, "ok").inc()
    SINK_ROWS.labels(sink).inc(added)
    oldest = None
    for entry_id in entry_ids:
        try:
            appended = int(entry_id.split("-", 1)[0]) / 1000
        except ValueError:
            continue
        lag = max(0.0, now - appended)
        EMITTER_LAG.labels(sink).observe(lag)
        oldest = lag if oldest is None else max(oldest, lag)
    if oldest is not None:
        EMITTER_LAG_LAST.labels(sink).set(oldest)


# ------------------------------------------------------------------ scrape-time sources

Source = Callable[[], Iterable[Metric]]
_SOURCES: dict[str, Source] = {}


def register_source(name: str, source: Source) -> None:
    """Add values read at scrape time (e.g. rtpengine's session statistics, from its ng client:
    ``register_source("rtpengine", lambda: [GaugeMetricFamily(...)])``). A source that raises is
    reported as ``warp_metrics_source_up{source=name} 0`` and skipped."""
    _SOURCES[name] = source


class FilesCollector:
    """The multiprocess files of every process family of the node, merged."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterable[Metric]:
        files = glob.glob(str(self.root / "*" / "*.db"))
        return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


class SourcesCollector:
    """Every registered scrape-time source, each isolated from the others' failures."""

    def __init__(self, sources: dict[str, Source] | None = None) -> None:
        self.sources = _SOURCES if sources is None else sources

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("warp_metrics_source_up", "Whether a scrape-time source answered", labels=["source"])
        for name, source in list(self.sources.items()):
            try:
                found = list(source())
            except Exception as exc:
                log.warning("metrics source %s failed: %s", name, exc)
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from found
        yield up




def registry(files_root: Path, sources: dict[str, Source] | None = None) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(FilesCollector(files_root))
    reg.register(SourcesCollector(sources))
    return reg


def serve(listen: str, reg: CollectorRegistry) -> Any:
    """Start the endpoint (a daemon thread); returns the HTTP server, or None if it cannot bind
    (metrics are never worth stopping the CDR pipeline for)."""
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=reg)
    except OSError as exc:
        log.error("metrics endpoint not started on %s: %s", listen, exc)
        return None
    log.info("metrics on http://%s/metrics", listen)
    return server

