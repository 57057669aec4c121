"""Writes docs/grafana/warp.json, the Grafana dashboard over the node's metrics (run it after
changing a panel: `.venv/bin/python scripts/grafana_dashboard.py`)."""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
OUT = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "warp.json"

ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("Calls", [
        ("Offered call rate (INVITEs/s)", "reqps", [("offered", "sum(rate(warp_initial_invites_total[1m]))")]),
        ("Finished calls by outcome (/s)", "reqps",
         [("{{outcome}}", "sum by (outcome) (rate(warp_calls_total[5m]))")]),
        ("Finished calls by SIP code class (/s)", "reqps",
         [("{{code_class}}", "sum by (code_class) (rate(warp_calls_total[5m]))")]),
        ("Active calls", "short", [("{{state}}", "sum by (state) (warp_active_calls)")]),
        ("Refusals by reason (/s)", "reqps",
         [("{{reason}}", "sum by (reason) (rate(warp_call_refusals_total[5m]))")]),
        ("Limit refusals (/s)", "reqps",
         [("{{limit}} {{scope}}", "sum by (limit, scope) (rate(warp_limit_refusals_total[5m]))")]),
    ]),
    ("Vendors", [
        ("ASR per vendor (quality window)", "percentunit", [("{{vendor}}", "warp_vendor_asr")]),
        ("ASR per vendor (15 min, from attempts)", "percentunit", [(
            "{{vendor}}", 'sum by (vendor) (rate(warp_vendor_attempts_total{code_class="2xx"}[15m]))'
                          " / sum by (vendor) (rate(warp_vendor_attempts_total[15m]))")]),
        ("ACD per vendor", "s", [("{{vendor}}", "warp_vendor_acd_seconds")]),
        ("PDD p95 per vendor", "s", [(
            "{{vendor}}", "histogram_quantile(0.95, sum by (vendor, le) (rate(warp_vendor_pdd_seconds_bucket[5m])))")]),
    ]),
    ("Routing", [
        ("Routing decision latency", "s", [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(warp_routing_decision_seconds_bucket[5m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(warp_routing_decision_seconds_bucket[5m])))")]),
        ("LRN lookups (/s)", "reqps", [("{{result}}", "sum by (result) (rate(warp_lrn_lookups_total[5m]))")]),
        ("LRN dip latency p99", "s", [(
            "{{source}}", "histogram_quantile(0.99, sum by (source, le) (rate(warp_lrn_dip_seconds_bucket[5m])))")]),
        ("Snapshot age", "s", [("age", "warp_snapshot_age_seconds")]),
        ("Snapshot reloads and publications (/min)", "short", [
            ("worker reloads", "sum(rate(warp_snapshot_reloads_total[5m])) * 60"),
            ("{{result}}", "sum by (result) (rate(warp_snapshot_publications_total[5m])) * 60")]),
        ("Snapshot in service", "short", [("{{version}}", "warp_snapshot_info")]),
    ]),
    ("Security", [
        ("Auth failures (/s)", "reqps", [("{{kind}}", "sum by (kind) (rate(warp_auth_failures_total[5m]))")]),
        ("Blocked source addresses", "short", [("blocked", "warp_blocked_ips"),
                                               ("new blocks /h", "sum(increase(warp_ip_blocks_total[1h]))")]),
    ]),
    ("CDR pipeline", [
        ("CDR stream backlog", "short", [
            ("length", "warp_cdr_stream_length"),
            ("pending {{group}}", "warp_cdr_stream_pending"),
            ("unread {{group}}", "warp_cdr_stream_lag"),
            ("spooled on disk", "warp_cdr_spool_pending")]),
        ("Emitter lag (append to commit)", "s", [
            ("p50 {{sink}}",
             "histogram_quantile(0.5, sum by (sink, le) (rate(warp_cdr_emitter_lag_seconds_bucket[5m])))"),
            ("p99 {{sink}}",
             "histogram_quantile(0.99, sum by (sink, le) (rate(warp_cdr_emitter_lag_seconds_bucket[5m])))"),
            ("last batch {{sink}}", "warp_cdr_emitter_lag_last_seconds")]),
        ("Rows written (/s) and failed batches", "short", [
            ("{{sink}}", "sum by (sink) (rate(warp_cdr_sink_rows_total[5m]))"),
            ("failed {{sink}}", 'sum by (sink) (rate(warp_cdr_sink_batches_total{result="failed"}[5m]))'),
            ("spooled", "sum(rate(warp_cdr_spooled_total[5m]))")]),
        ("Python errors in Kamailio callbacks (/s)", "short", [("errors", "sum(rate(warp_kemi_errors_total[5m]))")]),
    ]),
    ("Kamailio", [
        ("Shared memory", "bytes", [
            ("used", 'kamailio_statistic{group="shmem", stat="real_used_size"}'),
            ("free", 'kamailio_statistic{group="shmem", stat="free_size"}')]),
        ("Transactions (/s)", "reqps", [
            ("{{stat}}", 'rate(kamailio_statistic{group="tm", stat=~"UAS_transactions|UAC_transactions"}[5m])'),
            ("in progress", 'kamailio_statistic{group="tm", stat="inuse_transactions"}')]),
        ("Stateless replies (/s)", "reqps", [
            ("{{stat}}",
             'rate(kamailio_statistic{group="sl", stat=~"1xx_replies|2xx_replies|4xx_replies|5xx_replies"}[5m])')]),
        ("Requests and replies received (/s)", "reqps", [
            ("{{stat}}",
             'rate(kamailio_statistic{group="core", stat=~"rcv_requests|rcv_replies|drop_requests"}[5m])')]),
        ("Metric sources up", "short", [("{{source}}", "warp_metrics_source_up")]),
    ]),
]


def dashboard() -> dict[str, object]:
    panels: list[dict[str, object]] = []
    y, next_id = 0, 1
    for title, row_panels in ROWS:
        panels.append({"type": "row", "title": title, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        next_id += 1
        y += 1
        for i, (panel_title, unit, targets) in enumerate(row_panels):
            panels.append({
                "type": "timeseries", "title": panel_title, "id": next_id, "datasource": DS,
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [{"refId": chr(65 + n), "datasource": DS, "expr": expr, "legendFormat": legend}
                            for n, (legend, expr) in enumerate(targets)],
            })
            next_id += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "title": "WARP routing core", "uid": "warp-routing-core", "schemaVersion": 39, "version": 1,
        "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["warp", "sip"],
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus",
                                 "label": "Prometheus"}]},
        "panels": panels,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(f"written {OUT}")
