"""The ledger check's metrics: how many accounts differ, by how much each, and when it ran."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest

from routing_engine import metrics
from routing_engine.adapters import metric_sources
from routing_engine.adapters.ledger import Difference, Report


def scrape(report: Report | None) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.SourcesCollector({"ledger": metric_sources.ledger_source(lambda: report)}))
    return generate_latest(registry).decode()


def test_a_differing_account_is_named_with_its_difference() -> None:
    report = Report(accounts=3, checked_at=1_800_000_000.0,
                    differences=[Difference(uuid.uuid4(), "BAN7", 5_001_234, 5_000_000, 0)])
    text = scrape(report)
    assert "warp_ledger_accounts_differing 1.0" in text
    assert 'warp_ledger_difference_micros{account="BAN7"} 1234.0' in text
    assert "warp_ledger_checked_timestamp_seconds 1.8e+09" in text


def test_all_matching_is_zero_and_before_the_first_check_nothing_is_claimed() -> None:
    assert "warp_ledger_accounts_differing 0.0" in scrape(Report(accounts=3, checked_at=1.0))
    assert "warp_ledger_accounts_differing" not in scrape(None)
