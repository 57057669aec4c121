"""Metric sources: what the companion's endpoint reads at each scrape from outside this process —
Kamailio's statistics (kamcmd), rtpengine's (ng protocol), Redis (the CDR stream's backlog,
blocks, quality), the snapshot in service and the local CDR spool. Each is registered with
``metrics.register_source`` by the companion."""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from routing_engine.adapters import media_failures, quality
from routing_engine.adapters.registrations import Defence
from routing_engine.adapters.rtpengine_ng import NgClient
from routing_engine.metrics import Source

log = logging.getLogger("warp.metrics")
_STAT_LINE = re.compile(r"^\s*([A-Za-z0-9_]+):([A-Za-z0-9_.\-]+)\s*=\s*(-?\d+(?:\.\d+)?)\s*$")


def parse_kamailio_stats(text: str) -> dict[tuple[str, str], float]:
    """``kamcmd stats.get_statistics all`` output (``group:name = value`` lines) as a map."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = _STAT_LINE.match(line)
        if match:
            out[(match.group(1), match.group(2))] = float(match.group(3))
    return out


def kamailio_families(stats: dict[tuple[str, str], float]) -> list[Metric]:
    """Kamailio's statistics (core, tm, sl, shmem, dialog, ...: a fixed set) and the calls in
    progress from the dialog module's counters."""
    family = GaugeMetricFamily("kamailio_statistic", "Kamailio's own statistics (stats.get_statistics all)",
                               labels=["group", "stat"])
    for (group, name), value in sorted(stats.items()):
        family.add_metric([group, name], value)
    active = GaugeMetricFamily("warp_active_calls", "Calls in progress on this node (dialog module)",
                               labels=["state"])
    active.add_metric(["answered"], stats.get(("dialog", "active_dialogs"), 0.0))
    active.add_metric(["early"], stats.get(("dialog", "early_dialogs"), 0.0))
    return [family, active]


def kamailio_source(kamcmd: str, ctl_socket: str, timeout_s: float = 2.0) -> Source:
    def read() -> list[Metric]:
        result = subprocess.run([kamcmd, "-s", ctl_socket, "stats.get_statistics", "all"], capture_output=True,
                                text=True, timeout=timeout_s)
        if result.returncode != 0:
            raise RuntimeError((result.stderr or result.stdout).strip()[:200])
        return kamailio_families(parse_kamailio_stats(result.stdout))

    return read


def rtpengine_families(statistics: dict[str, Any], failures: dict[str, int]) -> list[Metric]:
    """rtpengine's own ``statistics`` (the numeric values of its current and total groups: a fixed
    set of names; per-interface and per-proxy lists are left out to keep cardinality bounded) and
    our media failures by kind (shared by every node, in Redis)."""
    family = GaugeMetricFamily("rtpengine_statistic", "rtpengine's statistics (ng 'statistics')",
                               labels=["group", "stat"])
    for group in ("currentstatistics", "totalstatistics"):
        values = statistics.get(group)
        if not isinstance(values, dict):
            continue
        for name, value in sorted(values.items()):
            try:
                family.add_metric([group.removesuffix("statistics"), str(name)], float(value))
            except (TypeError, ValueError):
                continue  # a nested or textual value
    failed = CounterMetricFamily("warp_media_failures", "Calls whose media relay failed, by step or outcome",
                                 labels=["kind"])
    for kind, n in sorted(failures.items()):
        failed.add_metric([kind], float(n))
    return [family, failed]


def rtpengine_source(client: Any, ng_address: str, timeout_s: float = 1.0) -> Source:

    ng = NgClient(ng_address, timeout_s, retries=0)

    def read() -> list[Metric]:
        return rtpengine_families(ng.statistics(), media_failures.counts(client))

    return read


def redis_source(client: Any, stream: str, vendors: Callable[[], dict[Any, str]]) -> Source:
    """CDR stream backlog per consumer group, blocked IPs, vendor ASR/ACD over the quality window
    (as the companion last published them)."""

    def read() -> list[Metric]:
        length = GaugeMetricFamily("warp_cdr_stream_length", "Entries in the CDR stream")
        length.add_metric([], float(client.xlen(stream)))
        pending = GaugeMetricFamily("warp_cdr_stream_pending", "Entries read by a group, not yet committed",
                                    labels=["group"])
        waiting = GaugeMetricFamily("warp_cdr_stream_lag", "Entries a group has not read yet", labels=["group"])
        try:
            groups = client.xinfo_groups(stream)
        except Exception:  # no stream yet
            groups = []
        for g in groups:
            pending.add_metric([str(g["name"])], float(g.get("pending") or 0))
            waiting.add_metric([str(g["name"])], float(g.get("lag") or 0))
        blocked = GaugeMetricFamily("warp_blocked_ips", "Source addresses blocked for digest brute force now")
        blocked.add_metric([], float(Defence.count_blocked(client, time.time())))
        names = vendors()
        asr = GaugeMetricFamily("warp_vendor_asr", "Answer-seizure ratio per vendor over the quality window",
                                labels=["vendor"])
        acd = GaugeMetricFamily("warp_vendor_acd_seconds", "Average call duration per vendor over the quality window",
                                labels=["vendor"])
        tried = GaugeMetricFamily("warp_vendor_window_attempts", "Vendor attempts in the quality window",
                                  labels=["vendor"])
        published = quality.figures(client)
        for vendor_id in names:
            q = published.get(str(vendor_id), quality.Quality(0, 0, 0))
            asr.add_metric([names[vendor_id]], q.asr)
            acd.add_metric([names[vendor_id]], q.acd)
            tried.add_metric([names[vendor_id]], float(q.attempts))
        return [length, pending, waiting, blocked, asr, acd, tried]

    return read


def snapshot_source(store: Any, clock: Callable[[], float] = time.time) -> Source:
    """The routing snapshot in service: version, build time and age."""

    def read() -> list[Metric]:
        current = store.current()
        info = GaugeMetricFamily("warp_snapshot_info", "The snapshot version in service", labels=["version"])
        built = GaugeMetricFamily("warp_snapshot_built_timestamp_seconds", "When the snapshot in service was built")
        age = GaugeMetricFamily("warp_snapshot_age_seconds", "Seconds since the snapshot in service was built")
        if current is not None:
            info.add_metric([current.version], 1)
            built.add_metric([], current.built_at.timestamp())
            age.add_metric([], max(0.0, clock() - current.built_at.timestamp()))
        return [info, built, age]

    return read


def spool_source(directory: Path) -> Source:
    def read() -> list[Metric]:
        lines = 0
        for path in list(directory.glob("*.jsonl")) + list(directory.glob("*.replaying")):
            try:
                with path.open("rb") as fh:
                    lines += sum(1 for _ in fh)
            except FileNotFoundError:
                continue
        family = GaugeMetricFamily("warp_cdr_spool_pending", "CDRs in the local spool waiting for Redis")
        family.add_metric([], float(lines))
        return [family]

    return read


def ledger_source(latest: Callable[[], Any]) -> Source:
    """The companion's last `warp ledger check` (adapters/ledger.Report, or None before the first):
    how many accounts' live balance differs from their ledger, and by how much, per account."""
    def read() -> list[Metric]:
        report = latest()
        if report is None:
            return []
        differing = GaugeMetricFamily("warp_ledger_accounts_differing",
                                      "Accounts whose live balance differs from their ledger (last check)")
        differing.add_metric([], float(len(report.differences)))
        by = GaugeMetricFamily("warp_ledger_difference_micros",
                               "Live balance minus ledger (+ in flight), in millionths, per differing account",
                               labels=["account"])
        for d in report.differences:
            by.add_metric([d.ban], float(d.micros))
        checked = GaugeMetricFamily("warp_ledger_checked_timestamp_seconds", "When the ledger was last checked")
        checked.add_metric([], report.checked_at)
        return [differing, by, checked]

    return read
