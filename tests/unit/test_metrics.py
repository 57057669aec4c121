"""Metric helpers: outcomes and bounded labels, Kamailio's statistics, scrape-time sources."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from routing_engine import metrics
from routing_engine.adapters import metric_sources
from routing_engine.adapters.snapshots import Published

KAMCMD_OUTPUT = """core:bad_URIs_rcvd = 0
core:rcv_requests = 42
dialog:active_dialogs = 3
dialog:early_dialogs = 1
shmem:free_size = 60123456
sl:sent_replies = 17
tm:UAS_transactions = 40
not a statistic line
"""


def value(metric: Any, *labels: str) -> float:
    for family in metric.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and tuple(sample.labels.values()) == labels:
                return float(sample.value)
    return 0.0


def test_refusals_map_to_a_closed_set_of_reasons() -> None:
    assert metrics.refusal_reason("No customer rate") == "rating"
    assert metrics.refusal_reason("Call limit reached") == "limits"
    assert metrics.refusal_reason("No Route") == metrics.refusal_reason("No Route Available") == "no_route"
    assert metrics.refusal_reason("anything a peer could send") == "other"
    assert metrics.refusal_reason("Forbidden") in metrics.REFUSAL_REASONS


def test_a_call_is_counted_by_outcome_and_code_class_and_its_vendor_attempts_by_vendor() -> None:
    before = value(metrics.CALLS, "outbound", "answered", "2xx")
    attempts = json.dumps([{"vendor": "v-m1", "gateway": "g", "code": 503, "reason": "x"},
                           {"vendor": "v-m2", "gateway": "g", "code": 200, "reason": "OK", "pdd_ms": 800}])
    metrics.call_finished("outbound", 200, "OK", attempts, 30)
    assert value(metrics.CALLS, "outbound", "answered", "2xx") == before + 1
    assert value(metrics.VENDOR_ATTEMPTS, "v-m1", "5xx") == 1
    assert value(metrics.VENDOR_ANSWERED_SECONDS, "v-m2") == 30


def test_a_call_that_reached_no_vendor_was_refused() -> None:
    before = value(metrics.REFUSALS, "rating")
    metrics.call_finished("outbound", 403, "No customer rate", None, 0)
    assert value(metrics.REFUSALS, "rating") == before + 1
    assert metrics.outcome(487, refused=False) == "cancelled"
    assert metrics.outcome(486, refused=False) == "failed"


def test_kamailio_statistics_are_parsed_and_give_the_calls_in_progress() -> None:
    stats = metric_sources.parse_kamailio_stats(KAMCMD_OUTPUT)
    assert stats[("core", "rcv_requests")] == 42 and len(stats) == 7
    families = {f.name: f for f in metric_sources.kamailio_families(stats)}
    active = {s.labels["state"]: s.value for s in families["warp_active_calls"].samples}
    assert active == {"answered": 3, "early": 1}
    stat = {(s.labels["group"], s.labels["stat"]): s.value for s in families["kamailio_statistic"].samples}
    assert stat[("shmem", "free_size")] == 60123456


def test_a_failing_source_is_reported_down_and_the_others_still_answer() -> None:
    def good() -> list[Any]:
        family = GaugeMetricFamily("warp_test_good", "a source that works")
        family.add_metric([], 1)
        return [family]

    def bad() -> list[Any]:
        raise ConnectionError("ctl socket gone")

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.SourcesCollector({"good": good, "bad": bad}))
    text = generate_latest(registry).decode()
    assert "warp_test_good 1.0" in text
    assert 'warp_metrics_source_up{source="bad"} 0.0' in text
    assert 'warp_metrics_source_up{source="good"} 1.0' in text


def test_the_snapshot_source_reports_version_and_age() -> None:
    built = datetime(2026, 11, 22, 12, tzinfo=UTC)

    class Store:
        def current(self) -> Published:
            return Published("abc123", built, None, built)

    families = {f.name: f for f in metric_sources.snapshot_source(Store(), clock=lambda: built.timestamp() + 90)()}
    assert families["warp_snapshot_info"].samples[0].labels == {"version": "abc123"}
    assert families["warp_snapshot_age_seconds"].samples[0].value == 90


def test_the_spool_source_counts_waiting_cdrs(tmp_path: Path) -> None:
    (tmp_path / "cdr-1.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    (tmp_path / "cdr-2.replaying").write_text('{"a": 3}\n')
    (family,) = metric_sources.spool_source(tmp_path)()
    assert family.samples[0].value == 3


def test_lag_is_measured_from_the_stream_entry_time() -> None:
    metrics.batch_written("unit-sink", 2, 2, ["1000000-0", "1001500-3"], now=1002.0)
    (family,) = metrics.EMITTER_LAG_LAST.collect()
    assert {s.labels["sink"]: s.value for s in family.samples}["unit-sink"] == 2.0


def test_the_grafana_dashboard_only_uses_metrics_the_node_exports() -> None:
    import re

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "docs" / "grafana" / "warp.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 20
    sources = [root / "routing_engine" / "metrics.py", root / "routing_engine" / "adapters" / "metric_sources.py"]
    defined = {name for path in sources for name in re.findall(r'"((?:warp|kamailio)_[a-z_]+)"', path.read_text())}
    used = {re.sub(r"_(total|bucket|count|sum)$", "", name)
            for expr in exprs for name in re.findall(r"\b((?:warp|kamailio)_[a-z_]+)", expr)}
    assert used <= defined, used - defined
